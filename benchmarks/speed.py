"""Speed of the adjoint cascade against its alternatives, side by side in one process.

For each encoder and batch size, on one device, with the same model, deepest stage L and
images (the bundled photos), time

- ``cascade``: ``AdjointInverter(enc, **variant).invert(x, stages=[L])`` — x̂_L over every
  live channel (one row per ``--engine`` × ``--precision`` variant; the inverter's
  defaults when neither flag is given);
- ``naive``: one shared forward with the graph retained, then per live channel one
  ``torch.autograd.grad`` per stage with the same LACs (the loop the cascade batches);
- ``scorecam``: Score-CAM (pytorch-grad-cam) on the same layer, top-1 class;

and report time per image, effective TFLOP/s from counted FLOPs, peak memory and the
relative error of x̂ against a high-precision reference. JSON goes to ``--out``, and
``BENCHMARKS.md`` is regenerated from every ``speed_*.json`` beside it.

    python benchmarks/speed.py --encoders efficientnet_lite0 resnet18 resnet50 --size 224 \\
        --batch 1 4 --device cpu --out benchmarks/results/speed_cpu.json
    python benchmarks/speed.py --encoders efficientnet_lite0 --size 64 --channels-limit 4  # smoke
"""

from __future__ import annotations

import argparse
import copy
import gc
import inspect
import itertools
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from adjinv.core import adjoint
from adjinv.core.cascade import channel_seeds
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.core.precision import fp32_mode
from adjinv.core.simplex import simplex_measure
from adjinv.encoders import load_encoder
from adjinv.encoders.staged import StagedEncoder
from adjinv.fileio import atomic_write_json, atomic_write_text
from adjinv.images import SAMPLE_NAMES, resize_center_crop, sample_image
from adjinv.paper.baselines.cam import CAMSaliency

REPO = Path(__file__).resolve().parent.parent
PRETRAINED = ("efficientnet_lite0",)



def _flag_bool(s: str) -> bool:
    if s.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")
    return s.lower() in ("true", "1")


# Keyword arguments of AdjointInverter that become command-line flags (--engine, --precision,
# each taking several values), with the parser of one value; every combination of the given
# values is one "cascade" row. To benchmark another inverter option, add it here
# (e.g. "channels_last": _flag_bool).
VARIANT_FLAGS: dict[str, Callable[[str], object]] = {"engine": str, "precision": str,
                                                    "channels_last": _flag_bool, "chunk_size": int,
                                                    "kernels": str}

FLOP_CONVENTION = (
    "FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (convolutions and matrix "
    "products only; elementwise ops, norms and the LACs are not counted) on forward passes of one "
    "image. cascade/naive: one input-gradient pass through stages 0..L is taken as one forward "
    "of stages 0..L, so FLOPs = (live channels per image, summed over the batch) x forward "
    "FLOPs of stages 0..L; the shared forward is not counted. Score-CAM: C_L x B full-model "
    "forwards (incl. head). TFLOP/s = counted FLOPs / median wall time."
)
MEMORY_CONVENTION = (
    "CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus the memory "
    "allocated before the call. CPU: peak resident set size above the RSS just before the call, "
    "sampled from /proc/self/statm by a background thread every 5 ms (allocator caching and "
    "short spikes between samples make it approximate; freed heap is returned to the OS with "
    "glibc malloc_trim before each call). Max over the timed runs."
)


# ----------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """One row kind: ``kind`` is cascade, naive or scorecam; ``kwargs`` go to AdjointInverter."""

    kind: str
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        if not self.kwargs:
            return self.kind
        short = {"channels_last": lambda v: "NHWC" if v else "NCHW", "chunk_size": lambda v: f"chunk={v}"}
        vals = [short.get(k, str)(v) for k, v in self.kwargs.items()]
        return f"{self.kind}[{','.join(vals)}]"


def cascade_variants(options: dict[str, Sequence[str] | None]) -> list[Method]:
    """One cascade method per combination of the given option values (flags left out are not
    passed, so the inverter's own defaults apply)."""
    given = {k: list(v) for k, v in options.items() if v}
    if not given:
        return [Method("cascade")]
    return [Method("cascade", dict(zip(given, combo, strict=True)))
            for combo in itertools.product(*given.values())]


def naive_synthesis(enc: StagedEncoder, lacs: LACBank, x: torch.Tensor, stage: int,
                    channels: torch.Tensor | None = None) -> torch.Tensor:
    """x̂_stage = Σ_c w_c φ_c (Eq. 8) the straightforward way: one forward with the graph
    retained, then for each live channel (w ≠ 0 for some image; or ``channels``) the seed
    ``E_c ⊙ A_stage`` pulled back one ``torch.autograd.grad`` per stage, with the LACs at the
    places :meth:`AdjointCascade.pull_back` puts them. ``x`` is a prepared batch (B, 3, H, W)."""
    with enc.frozen():
        ins, outs = [], []
        a = x.detach()
        with torch.enable_grad():
            for st in enc.stages[: stage + 1]:
                a_in = a.detach().requires_grad_(True)
                a = st(a_in)
                ins.append(a_in)
                outs.append(a)
        act = outs[stage].detach()
        w = simplex_measure(act)
        idx = (w != 0).any(0).nonzero().flatten() if channels is None else channels
        x_hat = torch.zeros_like(x)
        for c in idx.tolist():
            u = channel_seeds(act, torch.tensor([c], device=act.device))[0]
            for k in range(stage, -1, -1):
                (u,) = torch.autograd.grad(outs[k], ins[k], u, retain_graph=True)
                if k == 0:
                    u = lacs.pix(u)
                elif enc.infos[k].decimates:
                    lac = lacs.at(k - 1)
                    if lac is not None:
                        u = lac(u)
            x_hat += w[:, c, None, None, None].to(u.dtype) * u.detach()
    return x_hat


def restricted(w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The simplex weights ``w`` (B, C) with every channel outside ``idx`` set to zero."""
    out = torch.zeros_like(w)
    out[:, idx] = w[:, idx]
    return out


def cascade_partial(inv: AdjointInverter, x: torch.Tensor, stage: int,
                    idx: torch.Tensor | None) -> torch.Tensor:
    """x̂_stage through the inverter's own synthesis, over the channels ``idx`` only
    (all live ones if ``None``): what ``invert`` does, without the logits."""
    x = inv.prepare(x)
    with inv.encoder.frozen(), torch.no_grad():
        lin = inv.cascade.linearize(x, stage)
        w = simplex_measure(lin.acts[stage])
        if idx is not None:
            w = restricted(w, idx)
        sums, _ = inv.synthesize(lin, stage, {"x_hat": w})
    return sums["x_hat"]


def score_cam(enc: StagedEncoder, stage: int, batch_size: int, limit: int | None) -> CAMSaliency:
    """Score-CAM through our wrapper; with ``limit`` only the first ``limit`` channels of A_L get
    a score forward (the others weight 0), for smoke runs."""
    cam = CAMSaliency(enc, "scorecam", target_layer=enc.stages[stage], score_batch_size=batch_size)
    if limit is None:
        return cam
    from pytorch_grad_cam import ScoreCAM

    class FirstChannelsScoreCAM(ScoreCAM):
        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            import numpy as np

            part = super().get_cam_weights(input_tensor, target_layer, targets,
                                           activations[:, :limit], grads)
            w = np.zeros(activations.shape[:2], dtype=part.dtype)
            w[:, :limit] = part
            return w

    cam._cam_class = lambda: FirstChannelsScoreCAM
    return cam


# ----------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so that memory a previous run freed but
    kept mapped does not hide this run's peak RSS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """``{"bytes": peak above the level before}`` once the block has run (see MEMORY_CONVENTION)."""
    out: dict = {}
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        sync(device)
        out["bytes"] = torch.cuda.max_memory_allocated(device) - before
        return
    gc.collect()
    _trim_heap()
    before = _rss()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            stop.wait(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        yield out
    finally:
        stop.set()
        th.join()
        out["bytes"] = max(peak[0], _rss()) - before


def time_runs(fn: Callable[[], object], device: torch.device, warmup: int,
              repeats: int) -> tuple[list[float], int]:
    """Wall times of ``repeats`` calls after ``warmup`` untimed ones, and the peak memory."""
    for _ in range(warmup):
        fn()
    times, peak = [], 0
    for _ in range(repeats):
        with peak_memory(device) as mem:
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
        peak = max(peak, mem["bytes"])
    return times, peak


def forward_flops(enc: StagedEncoder, x1: torch.Tensor, upto: int | None) -> int:
    """Counted FLOPs of one forward of stages 0..``upto`` (``None``: the whole model with its
    head) for one image ``x1`` (1, 3, H, W), under no_grad."""
    with enc.frozen(), torch.no_grad(), FlopCounterMode(display=False) as fc:
        if upto is None:
            enc(x1)
        else:
            enc.forward_stages(x1, upto)
    return int(fc.get_total_flops())


def inverter_accepts(name: str) -> bool:
    return name in inspect.signature(AdjointInverter.__init__).parameters


class Reference:
    """x̂_L over a fixed channel subset in high precision: float64 copies on CPU, float32
    without TF32 on CUDA; the autograd engine when the inverter has one."""

    def __init__(self, enc: StagedEncoder, lacs: LACBank, x: torch.Tensor, stage: int,
                 channels: int) -> None:
        self.device = x.device
        kw = {"engine": "autograd"} if inverter_accepts("engine") else {}
        if self.device.type == "cpu":
            r_enc = copy.deepcopy(enc).double()
            r_lacs = copy.deepcopy(lacs).double()
            r_x = x.double()
        else:
            r_enc, r_lacs, r_x = enc, copy.deepcopy(lacs), x
        self.describe = ("float64 copy, " if self.device.type == "cpu" else "float32, TF32 off, ") + (
            "engine=autograd" if kw else "default engine")
        inv = AdjointInverter(r_enc, r_lacs, **kw)
        with fp32_mode("float32"):  # the CUDA reference: TF32 off
            with r_enc.frozen(), torch.no_grad():
                w = simplex_measure(r_enc.forward_stages(inv.prepare(r_x), stage)[-1])
            live = (w != 0).any(0).nonzero().flatten()
            self.channels = live if channels <= 0 else live[:channels]
            self.x_hat = cascade_partial(inv, r_x, stage, self.channels)

    def error(self, cand: torch.Tensor) -> float:
        ref = self.x_hat
        return float((cand.to(ref) - ref).norm() / ref.norm())


# ----------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_string(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                                capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    # a copy of the tree without its own history (the GPU machine's) names it explicitly
    commit = os.environ.get("ADJINV_COMMIT") or commit
    return {"device": device_string(device), "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "grad_cam": version("grad-cam"), "git_commit": commit,
            "inverter_options": [k for k in VARIANT_FLAGS if inverter_accepts(k)],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


# ----------------------------------------------------------------------------- one config
def images(enc: StagedEncoder, size: int, batch: int, device: torch.device) -> torch.Tensor:
    """The first ``batch`` bundled photos (cycling), resized and normalised: (B, 3, size, size)."""
    names = [SAMPLE_NAMES[i % len(SAMPLE_NAMES)] for i in range(batch)]
    return torch.stack([enc.normalize(resize_center_crop(sample_image(n), size)) for n in names]).to(device)


def load(name: str, device: torch.device) -> tuple[StagedEncoder, str]:
    """The encoder on ``device`` and what its weights are (random init is seeded)."""
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = load_encoder(name, random_init=name not in PRETRAINED)
    rand = any("randomly initialised" in str(w.message) for w in caught)
    return enc.to(device), "random init" if rand else "pretrained"


def bench_config(enc: StagedEncoder, weights: str, size: int, batch: int, methods: list[Method],
                 args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    """All rows for one (encoder, batch size)."""
    stage = enc.num_stages - 1
    x = images(enc, size, batch, device)
    base = AdjointInverter(enc)
    with enc.frozen(), torch.no_grad():
        w = simplex_measure(enc.forward_stages(base.prepare(x), stage)[-1])
    live_mask = w != 0
    union = live_mask.any(0).nonzero().flatten()
    limit = args.channels_limit
    timed = union if limit is None else union[:limit]
    per_image = [int(n) for n in live_mask[:, timed].sum(1)]
    f_stages = forward_flops(enc, x[:1], stage)
    f_full = forward_flops(enc, x[:1], None)
    c_last = enc.infos[stage].channels
    log(f"{enc.name} B={batch}: {union.numel()} of {c_last} channels live, reference …")
    ref = Reference(enc, base.lacs, x, stage, args.ref_channels)
    common = {"device": device_string(device), "torch": torch.__version__, "encoder": enc.name,
              "weights": weights, "size": size, "batch": batch, "stage": stage,
              "stage_channels": c_last, "partial": limit is not None,
              "forward_flops_stages_per_image": f_stages, "forward_flops_full_per_image": f_full}
    rows = []
    for m in methods:
        row = {**common, "method": m.name, "options": m.kwargs}
        if m.kind == "cascade" and args.fp16_weight_terms is not None:
            row["method"] += f"[fp16 weight terms={args.fp16_weight_terms}]"
            row["options"] = {**row["options"], "fp16_weight_terms": args.fp16_weight_terms}
        if m.kind == "cascade" and args.mask_product:
            row["method"] += "[masks by product]"
            row["options"] = {**row["options"], "mask_product": True}
        if m.kind in ("cascade", "naive"):
            inv = AdjointInverter(enc, **m.kwargs) if m.kind == "cascade" else base
            if m.kind == "cascade" and limit is None:
                def fn(inv: AdjointInverter = inv) -> object:
                    return inv.invert(x, stages=[stage])
            elif m.kind == "cascade":
                def fn(inv: AdjointInverter = inv) -> object:
                    return cascade_partial(inv, x, stage, timed)
            else:
                naive_timed = timed if args.naive_channels is None else timed[:args.naive_channels]

                def fn(chans: torch.Tensor = naive_timed) -> object:
                    return naive_synthesis(enc, base.lacs, base.prepare(x), stage, chans)
            flops = sum(per_image) * f_stages
            row.update(live_channels_per_image=[int(n) for n in live_mask.sum(1)],
                       live_channels=int(union.numel()), channels_timed=int(timed.numel()),
                       live_timed_per_image=per_image)
        else:
            cam = score_cam(enc, stage, args.scorecam_batch, limit)

            def fn(cam: CAMSaliency = cam) -> object:
                return cam.attribute(x)
            n = c_last if limit is None else min(limit, c_last)
            flops = n * batch * f_full
            row.update(live_channels=c_last, channels_timed=n, score_batch_size=args.scorecam_batch)
        times, peak = time_runs(fn, device, args.warmup, args.repeats)
        med = statistics.median(times)
        if m.kind == "naive" and args.naive_channels is not None and naive_timed.numel() < timed.numel():
            # the loop's cost is linear in the channels it visits: scale to all of them
            done = int(live_mask[:, naive_timed].sum())
            scale = sum(per_image) / max(1, done)
            row.update(extrapolated_from_channels=int(naive_timed.numel()), measured_times_s=times)
            times = [t * scale for t in times]
            med = med * scale
        row.update(times_s=times, seconds_per_image=med / batch, flops=flops,
                   tflops=flops / med / 1e12, peak_memory_bytes=peak)
        if m.kind == "cascade":
            cand = cascade_partial(AdjointInverter(enc, **m.kwargs), x, stage, ref.channels)
        elif m.kind == "naive":
            cand = naive_synthesis(enc, base.lacs, base.prepare(x), stage, ref.channels)
        else:
            cand = None
        row["rel_error"] = ref.error(cand) if cand is not None else None
        row["rel_error_channels"] = int(ref.channels.numel()) if cand is not None else None
        row["reference"] = ref.describe if cand is not None else None
        log(f"  {m.name}: {med / batch:.4g} s/image, {row['tflops']:.3g} TFLOP/s, "
            f"{peak / 2**20:.0f} MiB, rel. error {_fmt_err(row['rel_error'])}")
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- report
def _fmt_err(e: float | None) -> str:
    return "n/a" if e is None else f"{e:.1e}"


def _fmt_time(s: float) -> str:
    return f"{s:.3g}"


def markdown_rows(rows: list[dict]) -> list[str]:
    head = ["device", "torch", "encoder", "weights", "size", "batch", "method", "channels",
            "time / image (s)", "TFLOP/s", "peak mem (MiB)", "rel. err x̂"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ch = f"{r['channels_timed']} of {r['live_channels']}" if r["partial"] else str(r["live_channels"])
        method = r["method"] + (" (partial)" if r["partial"] else "")
        if r.get("extrapolated_from_channels"):
            method += f" (timed on {r['extrapolated_from_channels']} channels, scaled)"
        cells = [r["device"], r["torch"], r["encoder"], r["weights"], str(r["size"]), str(r["batch"]),
                 method, ch, _fmt_time(r["seconds_per_image"]), f"{r['tflops']:.3g}",
                 f"{r['peak_memory_bytes'] / 2**20:.0f}", _fmt_err(r["rel_error"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def speedups(rows: list[dict]) -> list[str]:
    """Cascade rows against naive and Score-CAM of the same (device, encoder, size, batch)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["encoder"], r["size"], r["batch"], r["partial"]), []).append(r)
    lines = ["| device | encoder | size | batch | cascade | vs naive | vs Score-CAM |",
             "|---|---|---|---|---|---|---|"]
    for (dev, encn, size, batch, partial), g in groups.items():
        by = {r["method"]: r for r in g}
        for r in g:
            if not r["method"].startswith("cascade"):
                continue
            t = r["seconds_per_image"]
            vs = [f"{by[o]['seconds_per_image'] / t:.1f}x" if o in by else "n/a"
                  for o in ("naive", "scorecam")]
            name = r["method"] + (" (partial)" if partial else "")
            lines.append(f"| {dev} | {encn} | {size} | {batch} | {name} | {vs[0]} | {vs[1]} |")
    return lines


def tables(rows: list[dict]) -> str:
    return "\n".join([*markdown_rows(rows), "", "Speedup of the cascade (time per image of the "
                      "other method / the cascade's):", "", *speedups(rows)]) + "\n"


def write_markdown(path: Path, result_files: Sequence[Path]) -> Path:
    """``BENCHMARKS.md`` from every speed result file (one section per file)."""
    import json

    parts = [
        "# Speed benchmarks",
        "",
        "Generated by `benchmarks/speed.py` from `benchmarks/results/speed_*.json`; do not edit. "
        "What the numbers mean, the FLOP floor and what each optimisation changed: "
        "[docs/speed.md](docs/speed.md). GPU rows: `bash benchmarks/gpu_run.sh` on a CUDA machine. "
        "Reproduce with",
        "",
        "```bash",
        "python benchmarks/speed.py --encoders efficientnet_lite0 resnet18 resnet50 --size 224 \\",
        "    --batch 1 4 --device cpu --out benchmarks/results/speed_cpu.json     # or --device cuda",
        "```",
        "",
        "Every method runs in one process on the same model, deepest stage L, and images (the "
        "first B bundled photos, normalised). **cascade**: `AdjointInverter(enc).invert(x, "
        "stages=[L])` with identity LACs (x̂_L over every live channel, w ≠ 0); bracketed options "
        "are inverter keyword arguments. **naive**: one forward with the graph retained, then per "
        "live channel one `torch.autograd.grad` per stage with the same LACs. **scorecam**: "
        "Score-CAM from pytorch-grad-cam on the same layer, top-1 class, through "
        "`adjinv.paper.baselines.cam.CAMSaliency`. Time per image: median over the timed runs (after "
        "warm-up runs, CUDA synchronised) divided by the batch size. \"partial\" rows timed "
        "only the first K live channels (`--channels-limit`, smoke runs).",
        "",
        f"- FLOPs: {FLOP_CONVENTION}",
        f"- Peak memory: {MEMORY_CONVENTION}",
        "- rel. err x̂: ‖x̂ − x̂_ref‖/‖x̂_ref‖ on the partial synthesis over the first `--ref-channels` "
        "live channels (an untimed call); the reference is a float64 copy on CPU, float32 with "
        "TF32 off on CUDA.",
        "",
    ]
    for f in result_files:
        res = json.loads(Path(f).read_text())
        env = res["environment"]
        parts += [f"## {Path(f).name}: {env['device']}", "",
                  f"torch {env['torch']}, grad-cam {env['grad_cam']}, commit {env['git_commit']}, "
                  f"{env['date']}; `{env['command']}`", ""]
        if env.get("note"):
            parts += [f"_{env['note']}_", ""]
        parts += [tables(res["rows"])]
    parts += breakdown_section(Path(path).parent / "benchmarks" / "results" / "breakdown")
    parts += commands_section(Path(path).parent / "benchmarks" / "results")
    return atomic_write_text(path, "\n".join(parts))


def commands_section(folder: Path) -> list[str]:
    """What a user waits for (``cli_times.json``) and a LAC training step of the 224 px
    recipe before and after each change (``training_step_ab_224.json``)."""
    import json

    cli, ab = folder / "cli_times.json", folder / "training_step_ab_224.json"
    if not (cli.is_file() and ab.is_file()):
        return []
    c, t = json.loads(cli.read_text()), json.loads(ab.read_text())
    out = ["", "## What a user waits for, and a LAC training step: "
           "benchmarks/results/{cli_times,training_step_ab_224}.json", "",
           f"`python benchmarks/cli_times.py` (commit {c['commit']}, {c['cpus']} cores, "
           f"{c['torch_threads']} torch threads; {c.get('note') or 'no note'}): wall seconds of "
           "each command in a fresh process, and the seconds its report recorded per panel.", "",
           "| command | wall (s) | CPU (s) | x̂_L, class-directional, top channels (s) | "
           "shallower stages (s) | partners (s) |", "|---|---|---|---|---|---|"]
    deep, shallow, part = ("x̂_L, class-directional, top channels", "spectrum (shallower stages)",
                           "swapped-seed partners")
    for i, r in enumerate(c["invert"]):
        p = r["panels"]
        out.append(f"| `adjinv invert photo.jpg` (run {i + 1}) | {r['wall_s']:.1f} | "
                   f"{r['cpu_s']:.1f} | {p[deep]:.1f} | {p[shallow]:.1f} | {p[part]:.1f} |")
    if c.get("demo"):
        d = c["demo"]
        tot = {k: sum(p[k] for p in d["panels"].values()) for k in (deep, shallow, part)}
        out.append(f"| `adjinv demo` ({len(d['panels'])} photos, summed) | {d['wall_s']:.1f} | "
                   f"{d['cpu_s']:.1f} | {tot[deep]:.1f} | {tot[shallow]:.1f} | {tot[part]:.1f} |")
    out += ["", f"`python benchmarks/training_step_ab.py --size {t['size']} --xhat {t['xhat']} "
            f"--top {t['top']:g} ...` (EfficientNet-Lite0, bundled LACs, {t['threads']} thread, "
            "the four forms interleaved in one process; load average "
            f"{t['load_average_start'][0]:.1f} at the start): seconds per step, median.", "",
            "| channel fraction | before issue 27 | new 1×1 kernels | + one pass | "
            "+ Jacobian backward | speed-up | gradients vs before |", "|---|---|---|---|---|---|---|"]
    for r in t["rows"]:
        out.append(f"| {r['channel_fraction']:g} | {r['before_s']:.2f} | {r['kernels_s']:.2f} | "
                   f"{r['one_pass_s']:.2f} | {r['after_s']:.2f} | {r['speedup']:.2f}× | "
                   f"{r['gradient_relative_difference']:.0e} |")
    return out + [""]


def breakdown_section(folder: Path) -> list[str]:
    """"Where the time goes": the before/after tables of ``benchmarks/breakdown.py``."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from breakdown import table

    files = [folder / "before.json", folder / "after.json"]
    if not all(f.is_file() for f in files):
        return []
    runs = [json.loads(f.read_text()) | {"file": f.name} for f in files]
    return ["", "## Where the time goes: benchmarks/results/breakdown/{before,after}.json", "",
            "`python benchmarks/breakdown.py --threads 1 ...` (EfficientNet-Lite0, bundled LACs, "
            "224 px, one thread: the machine's other core ran a LAC training job, and the load "
            "average was "
            + ", ".join(f"{r['load_average_start'][0]:.1f}–{r['load_average_end'][0]:.1f} ({r['label']})"
                        for r in runs)
            + ", so seconds are inflated and noisy; compare within a column). before: "
            f"{', '.join(runs[0]['photos'])} with one partner each; after: "
            f"{', '.join(runs[1]['photos'])} with two partners each (the demo). Kernel classes: "
            "the first 64 live channels of the deepest-stage synthesis under the PyTorch profiler "
            "(top-level ATen calls attributed to the code that issued them; Python overhead = wall "
            "time no ATen call covers). Yardstick: the convolutions of one chunk re-run alone (same "
            "shapes and weights); the achieved fraction is the synthesis's convolution GFLOP/s "
            "over it. The CPU has AVX2 only (no AVX-512, no bf16 units): bfloat16 convolutions run "
            "emulated.", "", table(runs), ""]


# ----------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Time the adjoint cascade against a naive per-channel loop and Score-CAM.",
        epilog="example: python benchmarks/speed.py --encoders efficientnet_lite0 --size 64 "
               "--channels-limit 4 --repeats 1 --warmup 0")
    ap.add_argument("--encoders", nargs="+", default=["efficientnet_lite0"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", nargs="+", default=["cascade", "naive", "scorecam"],
                    choices=["cascade", "naive", "scorecam"])
    for k, parse in VARIANT_FLAGS.items():
        ap.add_argument(f"--{k.replace('_', '-')}", nargs="+", default=None, type=parse,
                        help=f"AdjointInverter {k}= value(s), one cascade row each (default: not passed)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--scorecam-batch", type=int, default=None,
                    help="Score-CAM forward batch size (default 32 on CPU, 128 on CUDA)")
    ap.add_argument("--ref-channels", type=int, default=64,
                    help="channels of the partial synthesis the error is measured on (0 = all)")
    ap.add_argument("--channels-limit", type=int, default=None,
                    help="time only the first K live channels (rows marked partial)")
    ap.add_argument("--naive-channels", type=int, default=None,
                    help="time the naive loop on the first K live channels only and scale its time "
                         "linearly to all of them (rows marked extrapolated)")
    ap.add_argument("--fp16-weight-terms", type=int, choices=(1, 2), default=None,
                    help="ablation: float16 weights as 1 or 2 (default) float16 terms "
                         "(adjinv.core.adjoint.FP16_WEIGHT_TERMS)")
    ap.add_argument("--mask-product", action="store_true",
                    help="ablation: apply ReLU masks by multiplication instead of a bitwise AND "
                         "(adjinv.core.adjoint.MASK_AS_BITS = False)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    ap.add_argument("--out", default=None, help="JSON result file, e.g. benchmarks/results/speed_cpu.json")
    ap.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"),
                    help="regenerated from every speed_*.json beside --out (only with --out)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    if args.channels_limit is not None and args.channels_limit < 1:
        ap.error("--channels-limit must be >= 1")
    return args


@contextmanager
def ablations(args: argparse.Namespace) -> Iterator[None]:
    """Set the switches of :mod:`adjinv.core.adjoint` that ablation flags name; restore them."""
    saved = adjoint.FP16_WEIGHT_TERMS, adjoint.MASK_AS_BITS
    if args.fp16_weight_terms is not None:
        adjoint.FP16_WEIGHT_TERMS = args.fp16_weight_terms
    if args.mask_product:
        adjoint.MASK_AS_BITS = False
    try:
        yield
    finally:
        adjoint.FP16_WEIGHT_TERMS, adjoint.MASK_AS_BITS = saved


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    with ablations(args):
        return run(args)


def run(args: argparse.Namespace) -> dict:
    """Every configuration of ``args``; JSON and BENCHMARKS.md as asked."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.scorecam_batch is None:
        args.scorecam_batch = 128 if device.type == "cuda" else 32
    missing = [k for k in VARIANT_FLAGS if getattr(args, k) and not inverter_accepts(k)]
    if missing:
        sys.exit(f"speed.py: this AdjointInverter has no {', '.join(missing)} argument; "
                 "drop the flag or update adjinv")
    methods = []
    for kind in args.methods:
        methods += (cascade_variants({k: getattr(args, k) for k in VARIANT_FLAGS})
                    if kind == "cascade" else [Method(kind)])

    def log(msg: str) -> None:
        print(msg, flush=True)

    rows = []
    env = environment(device)  # at the start: the commit that was measured
    for name in args.encoders:
        enc, weights = load(name, device)
        for b in args.batch:
            rows += bench_config(enc, weights, args.size, b, methods, args, device, log)
            result = {"environment": env, "flop_convention": FLOP_CONVENTION,
                      "memory_convention": MEMORY_CONVENTION,
                      "settings": {k: v for k, v in vars(args).items() if k != "markdown"},
                      "rows": rows}
            if args.out:  # after every configuration: a run cut short keeps what it measured
                atomic_write_json(args.out, result)
        del enc
    if args.out:
        out = atomic_write_json(args.out, result)
        files = sorted(set(out.parent.glob("speed_*.json")) | {out})
        md = write_markdown(Path(args.markdown), files)
        log(f"wrote {out} and {md}")
    print()
    print(tables(rows), end="", flush=True)
    return result


if __name__ == "__main__":
    main()
