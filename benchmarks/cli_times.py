"""Wall time of the commands a new user runs first, as a user runs them (issue 27):
``adjinv invert photo.jpg`` with its defaults (one photo, so no partners) and
``adjinv demo`` (the five embedded held-out photos, two partners each), each in a fresh
process, with the per-panel seconds every report records in its ``summary.json``.

    python benchmarks/cli_times.py --runs 2 --out benchmarks/results/cli_times.json

Run it with nothing else on the machine (the JSON keeps the load averages before and
after, and the number of CPUs, so a loaded run shows as one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from adjinv.fileio import atomic_write_json
from adjinv.images.photos import photo as embedded_photo


def _cpu() -> dict:
    """The CPU's model name and its vector extensions that matter here (Linux /proc/cpuinfo)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name":
                model = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
    except OSError:
        pass
    return {"model": model, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def _run(cmd: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def _timings(out: Path) -> dict[str, dict[str, float]]:
    """Per photo: the report's seconds per panel, and its live channels at the deepest stage."""
    got = {}
    for f in sorted(out.glob("*/summary.json")):
        d = json.loads(f.read_text())
        got[f.parent.name] = {**d.get("timing", {}), "live_channels": d["live_channels_deepest"]}
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="runs of `adjinv invert`")
    ap.add_argument("--photo", default="china", help="embedded photo for `adjinv invert`")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--note", default="", help="how the machine was, e.g. what was paused")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "adjinv"]
    res: dict = {"cpus": os.cpu_count(), "cpu": _cpu(), "torch": torch.__version__,
                 "torch_threads": torch.get_num_threads(),
                 "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True).stdout.strip(),
                 "note": args.note, "load_average_start": os.getloadavg(), "invert": [],
                 "demo": None}
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / f"{args.photo}.png"
        Image.fromarray((embedded_photo(args.photo).permute(1, 2, 0) * 255).round()
                        .byte().numpy()).save(photo)
        for i in range(args.runs):
            out = Path(tmp) / f"invert{i}"
            row = _run([*exe, "invert", str(photo), "--out", str(out)])
            row["panels"] = _timings(out)[args.photo]
            res["invert"].append(row)
            print(json.dumps(row), flush=True)
        if not args.skip_demo:
            out = Path(tmp) / "demo"
            row = _run([*exe, "demo", "--out", str(out)])
            row["panels"] = _timings(out)
            res["demo"] = row
            print(json.dumps({k: v for k, v in row.items() if k != "panels"}), flush=True)
    res["load_average_end"] = os.getloadavg()
    atomic_write_json(Path(args.out), res)


if __name__ == "__main__":
    main()
