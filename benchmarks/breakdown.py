"""Where the time of ``adjinv invert`` / ``adjinv demo`` goes (issue 27), and how far the
cascade is from this machine's own convolution throughput.

Three measurements, one JSON file:

- **Panels**: ``invert_one`` (the per-photo report behind ``adjinv invert`` and
  ``adjinv demo``) on each photo, with the seconds of each panel it records.
- **Kernel classes**: the deepest stage's synthesis (Eq. 8, docs/method.md §2–§4) over the
  first ``--profile-channels`` live channels under the PyTorch profiler, every top-level
  ATen call attributed to the transpose op, LAC, seed or synthesis code that issued it;
  "Python overhead" is the wall time no top-level ATen call covers.
- **Yardstick**: every convolution one chunk of the cascade runs, re-run alone (same
  shapes, same weights) in float32 and bfloat16 — the machine's sustained GFLOP/s on the
  cascade's own convolutions — and a dense float32 matrix product for reference. The
  cascade's achieved fraction is its convolution FLOPs per second of synthesis wall time
  over the float32 yardstick.

    python benchmarks/breakdown.py --threads 1 --photos china --out benchmarks/results/breakdown/before.json
    python benchmarks/breakdown.py --table benchmarks/results/breakdown/{before,after}.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from adjinv import load_encoder
from adjinv.core import adjoint, cascade, inverter
from adjinv.core.inverter import AdjointInverter
from adjinv.core.simplex import simplex_measure
from adjinv.fileio import atomic_write_json
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import HELDOUT, photo
from adjinv.lacs.bundled import load_lacs
from adjinv.viz.report import ReportConfig, deepest_acts, invert_one

CLASSES = {"conv": "convolutions", "polyphase": "convolutions", "mask": "masks",
           "scale": "scales", "maxpool": "routing", "fanout": "routing", "split": "routing",
           "lac": "LAC normalisations", "layout": "layout copies", "seeds": "seeds",
           "stage": "residual sums", "rankone": "convolutions"}
LABELS = {f"bk:{k}" for k in CLASSES}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _labelled(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    def run(*a: Any, **k: Any) -> Any:
        with record_function(f"bk:{label}"):
            return fn(*a, **k)
    return run


class _Instrument:
    """Labels the cascade's code regions for the profiler (reverted on exit)."""

    def __enter__(self) -> _Instrument:
        sa = adjoint.StageAdjoint
        self.saved = [(sa, "_transpose", sa.__dict__["_transpose"]), (sa, "__call__", sa.__call__),
                      (cascade.AdjointCascade, "_lac", cascade.AdjointCascade._lac),
                      (adjoint, "_into_compute", adjoint._into_compute),
                      (adjoint, "_out_of_compute", adjoint._out_of_compute),
                      (inverter, "channel_seeds", inverter.channel_seeds)]
        orig_t = sa.__dict__["_transpose"].__func__

        def transpose(op: Any, *a: Any) -> Any:
            with record_function(f"bk:{op.kind}"):
                return orig_t(op, *a)
        sa._transpose = staticmethod(transpose)  # type: ignore[method-assign]
        sa.__call__ = _labelled(sa.__call__, "stage")  # type: ignore[method-assign]
        cascade.AdjointCascade._lac = _labelled(cascade.AdjointCascade._lac, "lac")  # type: ignore[method-assign]
        adjoint._into_compute = _labelled(adjoint._into_compute, "layout")  # type: ignore[assignment]
        adjoint._out_of_compute = _labelled(adjoint._out_of_compute, "layout")  # type: ignore[assignment]
        inverter.channel_seeds = _labelled(inverter.channel_seeds, "seeds")  # type: ignore[assignment]
        extra = getattr(adjoint, "_rank_one_head", None)
        if extra is not None:
            self.saved.append((adjoint, "_rank_one_head", extra))
            adjoint._rank_one_head = _labelled(extra, "rankone")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, val in self.saved:
            setattr(owner, name, val)


def _classify(events: Any) -> dict[str, float]:
    """Seconds per kernel class from the profiler's events (top-level ATen calls)."""
    out: dict[str, float] = defaultdict(float)
    for e in events:
        if e.name in LABELS or not e.name.startswith("aten::"):
            continue
        p, label = e.cpu_parent, None
        nested = False
        while p is not None:
            if p.name.startswith("aten::"):
                nested = True
                break
            if label is None and p.name in LABELS:
                label = p.name[3:]
            p = p.cpu_parent
        if nested:
            continue
        cls = CLASSES[label] if label is not None else "synthesis sums and other"
        out[cls] += e.cpu_time_total / 1e6
    return dict(out)


def _setup(name: str, size: int) -> tuple[Any, Any, torch.Tensor]:
    enc = load_encoder("efficientnet_lite0")
    lacs = load_lacs(enc, None).lacs
    x = enc.normalize(resize_center_crop(photo(name), size))[None]
    return enc, lacs, x


def kernel_classes(enc: Any, lacs: Any, x: torch.Tensor, n_channels: int,
                   chunk: int | None) -> dict[str, Any]:
    """Profile the deepest synthesis over the first ``n_channels`` live channels."""
    inv = AdjointInverter(enc, lacs, chunk_size=chunk)
    last = enc.num_stages - 1
    with torch.no_grad(), enc.frozen():
        lin = inv.cascade.linearize(x, last)
        w = simplex_measure(lin.acts[last])
        live = (w[0] > 0).nonzero().flatten()[:n_channels]
        w_sub = torch.zeros_like(w)
        w_sub[0, live] = w[0, live]
        inv.synthesize(lin, last, {"x_hat": w_sub})  # warm-up
        t = time.perf_counter()
        inv.synthesize(lin, last, {"x_hat": w_sub})
        plain = time.perf_counter() - t
        with _Instrument(), profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            inv.synthesize(lin, last, {"x_hat": w_sub})
            wall = time.perf_counter() - t
        classes = _classify(prof.events())
        classes["Python overhead"] = max(0.0, wall - sum(classes.values()))
        with FlopCounterMode(display=False) as fc:
            inv.synthesize(lin, last, {"x_hat": w_sub})
        flops = fc.get_total_flops()
    return {"channels": int(live.numel()), "chunk": inv._chunk(lin, last), "wall_s": plain,
            "profiled_wall_s": wall, "classes_s": classes, "flops": flops,
            "gflops_per_s": flops / plain / 1e9}


def _conv_class(name: str, a: tuple[Any, ...], first: bool) -> str:
    if first:
        return "head 1x1 (first of the deepest stage)"
    if name == "mm" or a[1].shape[-2:] == (1, 1):
        return "1x1"
    if name == "conv_transpose2d" and len(a) > 6 and a[6] > 1:
        return "depthwise"
    return "stem and other"


def yardstick(enc: Any, lacs: Any, x: torch.Tensor, chunk: int, repeats: int = 3) -> dict[str, Any]:
    """The cascade's own convolutions (one chunk; 1×1 ones may run as matrix products),
    re-run alone in float32 and bfloat16, in total and per class."""
    inv = AdjointInverter(enc, lacs, chunk_size=chunk)
    last = enc.num_stages - 1
    calls: list[tuple[str, tuple[Any, ...]]] = []
    originals = {"conv2d": F.conv2d, "conv_transpose2d": F.conv_transpose2d, "mm": torch.mm}
    run = {"conv2d": F.conv2d, "conv_transpose2d": F.conv_transpose2d, "mm": torch.mm}

    def recorder(name: str) -> Callable[..., torch.Tensor]:
        def rec(*a: Any) -> torch.Tensor:
            calls.append((name, tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in a)))
            return originals[name](*a)
        return rec

    with torch.no_grad(), enc.frozen():
        lin = inv.cascade.linearize(x, last)
        live = (lin.acts[last][0].abs().amax((-2, -1)) > 0).nonzero().flatten()[:chunk]
        seeds = cascade.channel_seeds(lin.acts[last], live)
        F.conv2d, F.conv_transpose2d = recorder("conv2d"), recorder("conv_transpose2d")  # type: ignore[assignment]
        torch.mm = recorder("mm")  # type: ignore[assignment]
        try:
            inv.cascade.pull_back(lin, last, seeds)
        finally:
            F.conv2d, F.conv_transpose2d = originals["conv2d"], originals["conv_transpose2d"]  # type: ignore[assignment]
            torch.mm = originals["mm"]  # type: ignore[assignment]
        flops: dict[str, float] = defaultdict(float)
        for i, (name, a) in enumerate(calls):
            with FlopCounterMode(display=False) as fc:
                run[name](*a)
            flops[_conv_class(name, a, i == 0)] += fc.get_total_flops()
        total = sum(flops.values())
        res: dict[str, Any] = {"chunk": chunk, "convolutions": len(calls), "flops": total,
                               "flops_by_class": dict(flops)}
        for dt in (torch.float32, torch.bfloat16):
            cast = [(name, tuple(t.to(dt) if isinstance(t, torch.Tensor) else t for t in a))
                    for name, a in calls]
            for name, a in cast:
                run[name](*a)
            best = float("inf")
            per: dict[str, float] = {}
            for _ in range(repeats):
                this: dict[str, float] = defaultdict(float)
                t0 = time.perf_counter()
                for i, (name, a) in enumerate(cast):
                    t = time.perf_counter()
                    run[name](*a)
                    this[_conv_class(name, a, i == 0)] += time.perf_counter() - t
                took = time.perf_counter() - t0
                if took < best:
                    best, per = took, dict(this)
            res[str(dt).split(".")[-1]] = {"seconds": best, "gflops_per_s": total / best / 1e9,
                                           "seconds_by_class": per}
        m = torch.randn(1024, 1024)
        m @ m
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            m @ m
            best = min(best, time.perf_counter() - t)
        res["matmul_1024_float32_gflops_per_s"] = 2 * 1024 ** 3 / best / 1e9
    return res


def compile_trial(enc: Any, lacs: Any, x: torch.Tensor, stage: int, chunk: int,
                  repeats: int = 5) -> dict[str, Any]:
    """``torch.compile`` (inductor, C++ backend) of one stage transpose: compile seconds,
    eager vs compiled milliseconds per call (medians, interleaved) and their difference."""
    inv = AdjointInverter(enc, lacs, chunk_size=chunk)
    with torch.no_grad(), enc.frozen():
        lin = inv.cascade.linearize(x, stage)
        pb = lin.pullbacks[stage]
        u = torch.randn(chunk, *lin.acts[stage].shape, generator=torch.Generator().manual_seed(0))
        comp = torch.compile(pb, dynamic=False)
        t = time.perf_counter()
        y1 = comp(u)
        compile_s = time.perf_counter() - t
        y0 = pb(u)
        eager, compiled = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            pb(u)
            eager.append(time.perf_counter() - t)
            t = time.perf_counter()
            comp(u)
            compiled.append(time.perf_counter() - t)
    return {"stage": stage, "chunk": chunk, "compile_s": compile_s,
            "eager_ms": 1000 * sorted(eager)[repeats // 2],
            "compiled_ms": 1000 * sorted(compiled)[repeats // 2],
            "relative_difference": float((y1 - y0).norm() / y0.norm())}


def panels(enc: Any, lacs: Any, names: list[str], size: int, partners: int) -> list[dict[str, Any]]:
    """``invert_one`` per photo (the CLI's report), with its own per-panel seconds."""
    out = []
    acts = {n: deepest_acts(enc, photo(n), size) for n in names} if partners else {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, n in enumerate(names):
            ps = [acts[names[(i + j) % len(names)]] for j in range(1, partners + 1)] if partners else []
            s = invert_one(enc, lacs, None, n, photo(n), Path(tmp) / n, ReportConfig(size=size),
                           partners=ps)
            out.append({"image": n, "seconds": s["seconds"], "panels_s": s.get("timing", {}),
                        "partner_error_bounds": [b["error_bound"] for b in
                                                 s.get("partners_anytime", {}).get("per_partner", [])],
                        "ssim_x_hat": s["reconstruction"]["ssim"]})
    return out


def legacy_report_compute(enc: Any, lacs: Any, image: torch.Tensor, size: int,
                          partners: list[torch.Tensor], top_k: int = 8) -> None:
    """The pull-backs of ``invert_one`` before issue 27 (commit 84c4063), without the files:
    every stage in one call, a linearisation each for the seed-zero control, the vanilla
    gradient and the partners, and the partners over every live channel."""
    x = enc.normalize(resize_center_crop(image, size))[None]
    inv = AdjointInverter(enc, lacs)
    from adjinv.methods.class_directional import class_directional_weights

    def cd(acts: list[torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
        return class_directional_weights(enc, acts[-1], logits.argmax(1), "contribution")

    with torch.no_grad(), enc.frozen():
        enc.forward_stages(x)
    inv.invert(x, top_k=top_k, extra_weights=cd)
    inv.seed_zero_control(x)
    inv.vanilla_gradient(x)
    last = enc.num_stages - 1
    with torch.no_grad(), enc.frozen():
        lin = inv.linearize(x, last)[0]
        for a_p in partners:
            inv.synthesize(lin, last, {"s": simplex_measure(a_p)}, source=a_p)


def ab(enc: Any, lacs: Any, names: list[str], size: int, partners: int,
       repeats: int, limit: int) -> dict[str, Any]:
    """The report's compute before (:func:`legacy_report_compute`) and after
    (``invert_one``), interleaved in one process, per photo; medians of ``repeats``."""
    acts = {n: deepest_acts(enc, photo(n), size) for n in names}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, n in enumerate(names[:limit]):
            ps = [acts[names[(i + j) % len(names)]] for j in range(1, partners + 1)]
            old, new = [], []
            for r in range(repeats):
                t = time.perf_counter()
                legacy_report_compute(enc, lacs, photo(n), size, ps)
                old.append(time.perf_counter() - t)
                t = time.perf_counter()
                invert_one(enc, lacs, None, n, photo(n), Path(tmp) / f"{n}{r}",
                           ReportConfig(size=size), partners=ps)
                new.append(time.perf_counter() - t)
            rows.append({"image": n, "before_s": sorted(old)[len(old) // 2],
                         "after_s": sorted(new)[len(new) // 2], "before_all_s": old,
                         "after_all_s": new})
            print(json.dumps(rows[-1]), flush=True)
    return {"partners": partners, "repeats": repeats, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--photos", nargs="*", default=list(HELDOUT[:1]))
    ap.add_argument("--partners", type=int, default=0)
    ap.add_argument("--profile-channels", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["panels", "kernels", "yardstick"])
    ap.add_argument("--label", default="")
    ap.add_argument("--ab-photos", type=int, default=2, help="photos in the A/B timing")
    ap.add_argument("--compile-stage", type=int, default=None,
                    help="also try torch.compile on this stage's transpose")
    ap.add_argument("--ab", type=int, default=0,
                    help="also time the report before/after issue 27, interleaved, N repeats")
    ap.add_argument("--out", default=None)
    ap.add_argument("--table", nargs="*", default=None, help="print markdown for these JSON files")
    args = ap.parse_args()
    if args.table is not None:
        print(table([json.loads(Path(p).read_text()) | {"file": p} for p in args.table]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    enc, lacs, x = _setup(args.photos[0], args.size)
    res: dict[str, Any] = {
        "label": args.label, "commit": _commit(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "size": args.size,
        "load_average_start": os.getloadavg(), "photos": args.photos,
    }
    if "kernels" not in args.skip:
        res["kernels"] = kernel_classes(enc, lacs, x, args.profile_channels, args.chunk)
        print(json.dumps(res["kernels"]), flush=True)
    if "yardstick" not in args.skip:
        chunk = args.chunk or res.get("kernels", {}).get("chunk", 8)
        res["yardstick"] = yardstick(enc, lacs, x, chunk)
        print(json.dumps(res["yardstick"]), flush=True)
        if "kernels" in res:
            res["achieved_fraction"] = (res["kernels"]["gflops_per_s"]
                                        / res["yardstick"]["float32"]["gflops_per_s"])
    if "panels" not in args.skip:
        res["panels"] = panels(enc, lacs, args.photos, args.size, args.partners)
        print(json.dumps(res["panels"]), flush=True)
    if args.compile_stage is not None:
        res["compile"] = compile_trial(enc, lacs, x, args.compile_stage, args.chunk or 4)
        print(json.dumps(res["compile"]), flush=True)
    if args.ab:
        res["ab"] = ab(enc, lacs, args.photos, args.size, args.partners, args.ab, args.ab_photos)
    res["load_average_end"] = os.getloadavg()
    if args.out:
        atomic_write_json(Path(args.out), res)


def table(runs: list[dict[str, Any]]) -> str:
    """Before/after tables (markdown) from breakdown JSON files."""
    head = "| | " + " | ".join(f"{r.get('label') or r['file']} ({r['commit']})" for r in runs) + " |"
    sep = "|---" * (len(runs) + 1) + "|"
    lines = ["Kernel classes, deepest-stage synthesis (profiled seconds, share):", "", head, sep]
    classes = sorted({c for r in runs for c in r.get("kernels", {}).get("classes_s", {})})
    for c in classes:
        cells = []
        for r in runs:
            k = r.get("kernels", {})
            v = k.get("classes_s", {}).get(c)
            cells.append("—" if v is None else f"{v:.2f} s ({100 * v / k['profiled_wall_s']:.0f} %)")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    rows = [("channels × chunk", lambda k, r: f"{k['channels']} × {k['chunk']}"),
            ("wall, unprofiled", lambda k, r: (
                f"{k['wall_s']:.2f} s ({1000 * k['wall_s'] / k['channels']:.1f} ms/ch)")),
            ("convolution GFLOP/s achieved", lambda k, r: f"{k['gflops_per_s']:.1f}"),
            ("yardstick float32 / bfloat16 GFLOP/s", lambda k, r: (
                f"{r['yardstick']['float32']['gflops_per_s']:.1f} / "
                f"{r['yardstick']['bfloat16']['gflops_per_s']:.1f}") if "yardstick" in r else "—"),
            ("achieved fraction of float32 yardstick", lambda k, r: (
                f"{100 * r['achieved_fraction']:.0f} %") if "achieved_fraction" in r else "—"),
            ("threads, CPU", lambda k, r: f"{r['threads']}, {r['cpu_capability']}")]
    for name, fn in rows:
        lines.append(f"| {name} | " + " | ".join(fn(r["kernels"], r) if "kernels" in r else "—"
                                                  for r in runs) + " |")
    lines += ["", "Panels of the per-photo report (seconds, mean over the photos of each run; "
              "the runs differ in load and in partners per photo, so compare rows within a "
              "column, and before with after in the interleaved table below):", "", head, sep]
    keys: list[str] = []
    for r in runs:
        for p in r.get("panels", []):
            keys += [k for k in p["panels_s"] if k not in keys]
    for key in [*keys, "total"]:
        cells = []
        for r in runs:
            ps = r.get("panels", [])
            vals = [p["seconds"] if key == "total" else p["panels_s"].get(key) for p in ps]
            vals = [v for v in vals if v is not None]
            cells.append(f"{sum(vals) / len(vals):.1f}" if vals else "—")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for r in runs:
        if "ab" not in r:
            continue
        lines += ["", f"The report's compute before issue 27 and now, interleaved in one process "
                  f"({r['file']}, {r['ab']['partners']} partners, seconds):", "",
                  "| photo | before | after | ratio |", "|---|---|---|---|"]
        lines += [f"| {a['image']} | {a['before_s']:.1f} | {a['after_s']:.1f} | "
                  f"{a['before_s'] / a['after_s']:.2f}× |" for a in r["ab"]["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
