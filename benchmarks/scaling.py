"""Processes × threads on one machine: ``adjinv invert-dataset`` on the same images as
1 process × T threads and as P processes (torchrun) × 1 thread. Writes JSON.

    python benchmarks/scaling.py --out benchmarks/results/scaling_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adjinv.fileio import atomic_write_json, save_png
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import split_photos


def run(data: Path, out: Path, procs: int, threads: int, size: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "adjinv", "invert-dataset", str(data), "--out", str(out),
           "--size", str(size), "--shard-size", "1"]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(procs), "-m", "adjinv", *cmd[3:]]
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--copies", type=int, default=2, help="crops per held-out photo")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for name, img in split_photos("heldout").items():
            for k in range(args.copies):  # two different square crops of each photo
                side = min(img.shape[-2:])
                crop = img[..., : side - 8 * k, 8 * k:] if k else img
                save_png(data / f"{name}-{k}.png", resize_center_crop(crop, args.size))
        n = len(list(data.iterdir()))
        rows = []
        for procs, threads in ((1, 1), (1, 2), (2, 1)):
            sec = run(data, Path(tmp) / f"out{procs}x{threads}", procs, threads, args.size)
            rows.append({"processes": procs, "threads": threads, "seconds": round(sec, 2),
                         "images_per_s": round(n / sec, 4)})
            print(json.dumps(rows[-1]), flush=True)
        res1 = json.loads((Path(tmp) / "out1x1" / "results.json").read_text())["images"]
        res2 = json.loads((Path(tmp) / "out2x1" / "results.json").read_text())["images"]
        same = all(res1[f]["stages"] == res2[f]["stages"] for f in res1)
    atomic_write_json(args.out, {"size": args.size, "images": n, "cpus": os.cpu_count(),
                                 "rows": rows, "one_vs_two_process_results_identical": same,
                                 "note": "wall time includes process start and model load"})


if __name__ == "__main__":
    main()
