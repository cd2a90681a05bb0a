"""Anytime inversion: actual relative error of x̂_L against channels and time, and its bound.

For each encoder (``name:size``) and each held-out photo, one call
``AdjointInverter(enc, lacs).invert(x, stages=[L], preview=record)`` synthesises the deepest
stage's live channels in descending simplex weight; ``record`` keeps, after every chunk,
the wall and CPU time since the call began (the shared forward included; one thread, so
CPU time is robust to other jobs on the machine and is what the speed-ups use), the
channels added, the
partial x̂ and the proven bound (:mod:`adjinv.core.anytime`). The last partial sum is the
full x̂_L, against which every earlier one is measured. Written to ``--out`` (JSON); the
table in docs/speed.md is generated from it with ``--table``.

    nice -n 10 python benchmarks/anytime.py --threads 1 --encoders efficientnet_lite0:224 resnet18:224 \\
        resnet50:128 --photos 3 --out benchmarks/results/anytime_cpu.json
    python benchmarks/anytime.py --table benchmarks/results/anytime_cpu.json --doc docs/speed.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from adjinv.core.anytime import Preview
from adjinv.core.inverter import AdjointInverter
from adjinv.encoders import load_encoder
from adjinv.fileio import atomic_write_json, atomic_write_text
from adjinv.images import resize_center_crop
from adjinv.images.photos import split_photos
from adjinv.lacs.bundled import load_lacs

REPO = Path(__file__).resolve().parent.parent
PRETRAINED = ("efficientnet_lite0",)
TARGETS = (1e-1, 1e-2, 1e-3)
START, END = "<!-- anytime tables: start -->", "<!-- anytime tables: end -->"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_image(inv: AdjointInverter, x: torch.Tensor) -> dict:
    """One anytime run over every live channel of the deepest stage, with its curve."""
    recs: list[tuple[float, float, int, float, float, torch.Tensor]] = []
    t0, c0 = time.perf_counter(), time.process_time()

    def record(p: Preview) -> None:
        recs.append((time.perf_counter() - t0, time.process_time() - c0, int(p.done[0]),
                     float(p.bound_abs[0]), float(p.bound[0]), p.x_hat[0].clone()))

    res = inv.invert(x, stages=[-1], preview=record)
    total = time.perf_counter() - t0
    full = res.x_hat[inv.encoder.num_stages - 1][0]
    if not torch.equal(recs[-1][-1], full):
        raise AssertionError("the last preview differs from the returned x̂")
    norm = float(full.double().norm())
    w = res.weights[inv.encoder.num_stages - 1][0]
    wsorted = w.sort(descending=True).values
    curve = []
    for t, cpu, k, b_abs, b_rel, xk in recs:
        err = float((full.double() - xk.double()).norm())
        curve.append({"seconds": t, "cpu_seconds": cpu, "channels": k, "mass": float(wsorted[:k].sum()),
                      "error_abs": err, "error_rel": err / norm, "bound_abs": b_abs,
                      "bound_rel": b_rel})
    return {"live_channels": int((w > 0).sum()), "seconds_total": total, "norm": norm,
            "curve": curve}


def summarize(row: dict) -> dict:
    """Speed-ups at the target errors (actual, and as guaranteed by the bound), and the
    bound's tightness (bound / actual on every partial sum with a nonzero error)."""
    curve, live, total = row["curve"], row["live_channels"], row["curve"][-1]["cpu_seconds"]
    out = {}
    for e in TARGETS:
        for key, field in (("actual", "error_rel"), ("bound", "bound_rel")):
            hit = next((c for c in curve if c[field] <= e), curve[-1])
            out[f"{key}@{e:g}"] = {"channels": hit["channels"], "mass": hit["mass"],
                                   "cpu_seconds": hit["cpu_seconds"],
                                   "speedup_channels": live / max(hit["channels"], 1),
                                   "speedup_time": total / hit["cpu_seconds"]}
    ratios = [c["bound_abs"] / c["error_abs"] for c in curve if c["error_abs"] > 0]
    out["bound_over_actual"] = {"median": statistics.median(ratios), "min": min(ratios),
                                "max": max(ratios)} if ratios else None
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=["efficientnet_lite0:224"],
                    help="name:size entries (random init for all but the bundled Lite0)")
    ap.add_argument("--photos", type=int, default=3, help="first N held-out photos")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/anytime_cpu.json")
    ap.add_argument("--table", help="print the markdown tables of this JSON file and exit")
    ap.add_argument("--doc", help="with --table: write them into this markdown file between "
                                  f"{START} and {END} instead")
    args = ap.parse_args(argv)
    if args.table:
        md = table(json.loads(Path(args.table).read_text()))
        if args.doc:
            write_doc(Path(args.doc), md)
        else:
            print(md)
        return
    torch.set_num_threads(args.threads)
    photos = dict(list(split_photos("heldout").items())[: args.photos])
    rows = []
    for spec in args.encoders:
        name, size = spec.split(":")
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enc = load_encoder(name, random_init=name not in PRETRAINED)
            lacs, _, source = load_lacs(enc)
        inv = AdjointInverter(enc, lacs, chunk_size=args.chunk_size)
        warm = enc.normalize(resize_center_crop(next(iter(photos.values())), 64))[None]
        inv.invert(warm, stages=[-1], max_channels=2)
        for pname, img in photos.items():
            x = enc.normalize(resize_center_crop(img, int(size)))[None]
            r = run_image(inv, x)
            row = {"encoder": name, "weights": "pretrained" if name in PRETRAINED else "random init",
                   "lacs": source, "size": int(size), "photo": pname, **r}
            row["summary"] = summarize(row)
            rows.append(row)
            print(f"{name} {size}px {pname}: {r['live_channels']} ch, {r['seconds_total']:.1f} s, "
                  f"{row['summary']}", flush=True)
            atomic_write_json(Path(args.out), {"environment": environment(args), "rows": rows})


def environment(args: argparse.Namespace) -> dict:
    return {"device": f"cpu ({platform.processor() or platform.machine()}, {args.threads} threads)",
            "torch": torch.__version__, "git_commit": _commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "note": "machine shared with other jobs (run under nice): wall times are inflated "
                    "by them; speed-ups in time use the process CPU time (one thread)",
            "settings": vars(args)}


def write_doc(doc: Path, md: str) -> None:
    """Replace the generated block of ``doc`` (between the markers) with ``md``."""
    text = doc.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{doc} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    atomic_write_text(doc, head + START + "\n" + md + "\n" + END + rest.split(END, 1)[1])


def _fmt_speed(s: dict) -> str:
    return f"{s['channels']} ch (mass {s['mass']:.3f}): {s['speedup_channels']:.1f}× / " \
           f"{s['speedup_time']:.1f}×"


def table(data: dict) -> str:
    """Markdown: per row, channels and time to each target error (actual / by the bound)."""
    head = ["encoder", "px", "photo", "live ch", "full (CPU s)"]
    for e in TARGETS:
        head += [f"actual ≤ {e:g}", f"bound ≤ {e:g}"]
    head.append("bound/actual (median, range)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in data["rows"]:
        s = r["summary"]
        cells = [f"{r['encoder']} ({r['weights']})", str(r["size"]), r["photo"],
                 str(r["live_channels"]), f"{r['curve'][-1]['cpu_seconds']:.1f}"]
        for e in TARGETS:
            cells += [_fmt_speed(s[f"actual@{e:g}"]), _fmt_speed(s[f"bound@{e:g}"])]
        b = s["bound_over_actual"]
        cells.append(f"{b['median']:.1f} ({b['min']:.1f}–{b['max']:.1f})" if b else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + curve_table(data)


FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75)


def curve_table(data: dict) -> str:
    """Markdown: actual relative error (and the bound) after the first fraction of the live
    channels, with the CPU time spent by then as a fraction of the full synthesis."""
    head = ["encoder", "photo"] + [f"{f:.0%} of channels" for f in FRACTIONS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in data["rows"]:
        curve, live = r["curve"], r["live_channels"]
        cells = [f"{r['encoder']} {r['size']} px", r["photo"]]
        for f in FRACTIONS:
            c = next(c for c in curve if c["channels"] >= f * live)
            t = c["cpu_seconds"] / curve[-1]["cpu_seconds"]
            cells.append(f"{c['error_rel']:.2g} (bound {c['bound_rel']:.2g}; {t:.0%} of time)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
