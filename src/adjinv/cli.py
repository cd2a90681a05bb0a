"""``adjinv`` command line: parses, calls the library, prints where outputs went."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._optional import require
from .errors import AdjinvError, captured_warnings

if TYPE_CHECKING:
    from .encoders.staged import StagedEncoder

# adjinv.core.precision.PRECISIONS, spelled out so that parsing does not import torch
PRECISION_CHOICES = ("float32", "tf32", "fp16", "bf16")
MIN_SIZE, MAX_SIZE = 16, 4096  # --size bounds; the encoder's total stride is checked on load
DEFAULT_MAX_PIXELS = 89_478_485  # adjinv.images.files.DEFAULT_MAX_PIXELS (Pillow's threshold)


class RunFailed(Exception):
    """An environment failure (disk full, permission…) during a run: exit code 1."""


# ----------------------------------------------------------------------------- parsing
class _Parser(argparse.ArgumentParser):
    """One-line usage errors (exit 2), and ``--debug`` accepted on every (sub)command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show tracebacks on errors (accepted anywhere)")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"adjinv: error: {message} (see `{self.prog} --help`)\n")


def _int_in(lo: int, hi: int | None = None, note: str = "") -> Callable[[str], int]:
    """argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo or (hi is not None and v > hi):
            rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"{v} is out of range: it must be {rng}{note}")
        return v

    return parse


def _float_in(lo: float, hi: float | None = None,
              lo_open: bool = True) -> Callable[[str], float]:
    """argparse type: a finite float in (lo, hi] (or [lo, hi] with ``lo_open=False``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        bad_lo = v <= lo if lo_open else v < lo
        if not math.isfinite(v) or bad_lo or (hi is not None and v > hi):
            left = "(" if lo_open else "["
            rng = f"in {left}{lo}, {hi}]" if hi is not None else f"{'>' if lo_open else '>='} {lo}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: it must be a finite "
                                             f"number {rng}")
        return v

    return parse


_SIZE = _int_in(MIN_SIZE, MAX_SIZE, " px")
_POSITIVE = _int_in(1)
_mass = _float_in(0.0, 1.0)

EPILOG_INVERT = """example:
  adjinv invert photo.jpg other.png --out runs/inv --channels 8
  adjinv invert cat.jpg --encoder resnet50 --weights resnet50.pth --lac r50.lac.safetensors --out r50
"""
EPILOG_DEMO = """example:
  adjinv demo --out demo-out      # then open demo-out/index.html
"""
EPILOG_TRAIN = """example:
  adjinv train --out lite0.lac.safetensors          # embedded photo split, default objective
  adjinv train --images my_photos/ --validation my_val/ --steps 300 --out my.lac.safetensors --resume
  adjinv train --nproc 2 --batch-size 4 --out lite0.lac.safetensors    # two local processes
"""


def _bar(desc: str, total: int):
    tqdm = require("tqdm", "the progress bar").tqdm

    # disable=None: no bar when stderr is not a terminal (logs stay readable)
    return tqdm(total=total, desc=desc, unit="ch", leave=False, file=sys.stderr, disable=None)


def _run_progress(total: int):
    """One bar over the whole run (every photo's pull-backs), fed by the per-synthesis
    ``(name, done, total)`` callbacks: each new synthesis restarts its own count."""
    bar = _bar("adjinv", total)
    state: dict = {"key": None, "done": 0}

    def cb(name: str, done: int, total: int) -> None:
        if state["key"] != (name, total) or done < state["done"]:
            state["key"], state["done"] = (name, total), 0
        bar.set_postfix_str(name, refresh=False)
        bar.update(done - state["done"])
        state["done"] = done

    return cb, bar.close


def _warn(message: object) -> None:
    print(f"adjinv: warning: {message}", file=sys.stderr)


def _load_encoder(args: argparse.Namespace):
    """The encoder, its warnings printed as one line each; says when --random-init is moot."""
    from .encoders import load_encoder

    with captured_warnings(_warn) as caught:
        enc = load_encoder(args.encoder, args.weights, random_init=args.random_init)
    if args.random_init and not any("randomly initialised" in str(w.message) for w in caught):
        _warn(f"--random-init ignored: {args.encoder} has weights "
              f"({'--weights' if args.weights else 'bundled or cached'}), which are used")
    if args.size < enc.total_stride:
        raise AdjinvError(f"--size {args.size} is smaller than the total stride "
                          f"{enc.total_stride} of {enc.name}; use --size {enc.total_stride} "
                          "or more (224 is the usual size)")
    return enc


def _load(args: argparse.Namespace):
    from .lacs.bundled import load_lacs

    enc = _load_encoder(args)
    with captured_warnings(_warn):
        lacs, vanilla, source = load_lacs(enc, args.lac,
                                          allow_other_weights=args.allow_other_weights)
    return enc, lacs, vanilla, source


def _check_constant(enc: StagedEncoder, images: dict, size: int) -> None:
    """Refuse (near-)constant images after resizing, before any output is written."""
    from .core.validate import near_constant
    from .images.files import resize_center_crop

    for name, img in images.items():
        if near_constant(enc.normalize(resize_center_crop(img, size))[None]):
            raise AdjinvError(f"image {name!r} is constant or nearly so at {size} px (every "
                              "pixel the same colour to within 0.1 %): there is nothing to "
                              "invert; pass a natural image, or re-export an unusual file as "
                              "8-bit RGB PNG")


def _run_report(args: argparse.Namespace, images: dict, title: str) -> Path:
    import html

    from .outdir import OutputFolder
    from .viz.report import ReportConfig, deepest_acts, invert_one, planned_channels, write_index

    device = _device(args.device)
    enc, lacs, vanilla, source = _load(args)
    deepest = enc.infos[-1].channels
    top_k = args.channels
    if top_k > deepest:
        print(f"adjinv: note: --channels {top_k} is more than the {deepest} channels of "
              f"{enc.name}'s deepest stage; writing at most {deepest} (the live ones)",
              file=sys.stderr)
        top_k = deepest
    _check_constant(enc, images, args.size)
    enc = enc.to(device)
    out = Path(args.out)
    cfg = ReportConfig(size=args.size, top_k=top_k, chunk_size=args.chunk_size,
                       precision=args.precision, mass=args.mass,
                       partner_mass=None if args.partner_mass == 1 else args.partner_mass)
    _check_free_space(out, len(images) * (enc.num_stages + top_k + 6) * 3 * args.size ** 2)
    with OutputFolder(out, overwrite=args.overwrite, files=("index.html", "summary.json"),
                      folders=images) as claimed:
        targets = {name: claimed.target(name) for name in images}
        if claimed.removed:
            print(f"adjinv: note: removed {len(claimed.removed)} stale temporary file(s) of an "
                  f"interrupted run in {out}/", file=sys.stderr)
        earlier = _earlier_summaries(out, images)
        if earlier:
            print(f"adjinv: note: the index of {out}/ keeps {len(earlier)} image(s) of earlier "
                  f"runs ({', '.join(s['image'] for s in earlier)})", file=sys.stderr)
        print(f"encoder {enc.name} ({enc.num_stages} stages), LACs: {source}", file=sys.stderr)
        summaries: list[dict] = []
        t0 = time.perf_counter()
        names = list(images)
        k = min(args.partners, len(names) - 1)
        acts = {n: deepest_acts(enc, images[n], args.size) for n in names} if k > 0 else {}
        plan = {n: planned_channels(enc, images[n], cfg,
                                    [acts[names[(i + j) % len(names)]] for j in range(1, k + 1)])
                for i, n in enumerate(names)}
        cb, close = _run_progress(sum(plan.values()))
        if args.partners and k < args.partners:
            print(f"adjinv: note: {len(names)} image(s) give {k} swapped-seed partner(s) per image "
                  f"(--partners {args.partners}); pass more images for more", file=sys.stderr)

        def index() -> Path:
            intro = (f"<p>encoder <b>{html.escape(enc.name)}</b>, LACs: {html.escape(source)}, "
                     f"size {args.size} px, total {time.perf_counter() - t0:.1f} s</p>")
            return write_index(out, earlier + summaries, title, intro)

        def done_so_far() -> str:
            names = ", ".join(s["image"] for s in summaries) or "none"
            return f"{len(summaries)} of {len(images)} image(s) complete in {out}/ ({names})"

        try:
            for i, (name, img) in enumerate(images.items()):
                print(f"[{i + 1}/{len(images)}] {name}", file=sys.stderr)
                partners = [acts[names[(i + j) % len(names)]] for j in range(1, k + 1)]
                s = invert_one(enc, lacs, vanilla, name, img, targets[name], cfg, progress=cb,
                               partners=partners)
                summaries.append(s)
                r = s["reconstruction"]
                print(f"    top-1 {s['top1']['name']} (p={s['top1']['probability']:.3f})  "
                      f"SSIM x̂_L {r['ssim']:.3f}  control {s['seed_zero_control']['ssim']:.3f}  "
                      f"{s['seconds']:.1f} s", file=sys.stderr)
                if len(s["top_channels"]) < top_k:
                    print(f"    note: {len(s['top_channels'])} of the {top_k} requested channels "
                          "are live (the rest have zero weight and are not written)",
                          file=sys.stderr)
        except KeyboardInterrupt:
            close()
            if summaries:
                with contextlib.suppress(OSError):
                    index()
            print(f"adjinv: interrupted: {done_so_far()}", file=sys.stderr)
            raise
        except OSError as e:
            close()
            if summaries:
                with contextlib.suppress(OSError):
                    index()
            raise RunFailed(f"{_os_message(e)}; {done_so_far()}") from e
        finally:
            close()
        try:
            page = index()
        except OSError as e:
            raise RunFailed(f"{_os_message(e)} while writing the index; {done_so_far()}, "
                            "index.html and summary.json not updated") from e
    print(f"wrote {len(summaries)} image report(s) to {out}/ — open {page}")
    return page


def _earlier_summaries(out: Path, images: dict) -> list[dict]:
    """The entries of an existing ``summary.json`` whose image is not re-run and whose
    folder is still there: a second run into a folder adds to its index."""
    import json

    try:
        old = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(old, list):
        return []
    from .fileio import safe_name

    return [s for s in old if isinstance(s, dict) and isinstance(s.get("image"), str)
            and s["image"] == safe_name(s["image"]) and s["image"] not in images
            and (out / s["image"] / "summary.json").is_file()]


def _check_free_space(out: Path, need: int) -> None:
    """Refuse before the work when the disk cannot hold the PNGs (uncompressed bound)."""
    import shutil

    where = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(where).free
    if free < need + (1 << 20):
        raise RunFailed(f"not enough free space for the report: about {need / 2**20:.1f} MiB "
                        f"needed, {free / 2**20:.1f} MiB free at {where}; nothing was written")


def _os_message(e: OSError) -> str:
    what = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        what = "the disk is full (no space left on device)"
    return f"{what}: {e.filename}" if e.filename else what


def _device(name: str):
    from .state import parse_device

    return parse_device(name)


def _unique_names(paths: list[str]) -> dict[str, Path]:
    """Output folder names from file names: made safe (no separators, no leading
    dots, no reserved names) and unique."""
    from .fileio import safe_name

    taken: set[str] = set()
    return {safe_name(p.stem if p.suffix else p.name, taken): p for p in map(Path, paths)}


def cmd_invert(args: argparse.Namespace) -> None:
    """``adjinv invert``."""
    from .images.files import load_image

    with captured_warnings(_warn):
        images = {n: load_image(p, mode="convert", max_pixels=args.max_pixels)
                  for n, p in _unique_names(args.images).items()}
    _run_report(args, images, "adjinv inversion report")


def cmd_demo(args: argparse.Namespace) -> None:
    """``adjinv demo``."""
    from .images.photos import HELDOUT, photo

    names = HELDOUT[: args.images] if args.images else HELDOUT
    _run_report(args, {n: photo(n) for n in names},
                "adjinv demo — embedded EfficientNet-Lite0 on held-out photos (never used to "
                "train its LACs or pick their checkpoint)")


def cmd_train(args: argparse.Namespace) -> None:
    """``adjinv train``."""
    from .distributed import init_from_env, launch
    from .images.files import list_images, load_image
    from .images.photos import split_photos
    from .lacs.training import TrainConfig

    if args.nproc > 1:  # relaunch this command as N local processes (torchrun --standalone)
        code = launch(args.nproc, _without_option(sys.argv[1:], "--nproc"))
        if code:
            raise RunFailed(f"the {args.nproc} training processes exited with status {code}")
        return
    distributed = init_from_env()
    out = _check_checkpoint_path(args.out, "--out")
    if args.export:
        if Path(args.export).resolve() == out.resolve():
            raise AdjinvError("--export must differ from --out (it is a second, smaller file)")
        _check_checkpoint_path(args.export, "--export")
        _check_replaceable(Path(args.export), "--export")
    def folder(d: str) -> tuple[list, list[str]]:
        files = list_images(d)
        with captured_warnings(_warn):
            imgs = [load_image(f, mode="convert", max_pixels=args.max_pixels) for f in files]
        return imgs, [str(f) for f in files]

    validation = None
    if args.images:
        images, names = folder(args.images)
        if args.validation:
            validation = folder(args.validation)[0]
    else:  # the embedded split: training photos; validation photos; held-out never touched
        named = split_photos("train")
        images, names = list(named.values()), [f"embedded:{n}" for n in named]
        validation = list(split_photos("validation").values())
    validate_every = args.validate_every if validation else 0
    enc = _load_encoder(args)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, size=args.size, batch_size=args.batch_size,
                      channel_fraction=args.channel_fraction, seed=args.seed,
                      checkpoint_every=args.checkpoint_every, images=names,
                      objective=args.objective, contrast_weight=args.contrast_weight,
                      contrast_margin=args.contrast_margin, schedule=args.schedule,
                      validate_every=validate_every, patience=args.patience if validate_every else 0,
                      keep_every=args.keep_every)
    cfg.check()
    if out.exists() and not args.resume and not distributed:
        raise AdjinvError(f"{out} exists; pass --resume to continue that run or choose another --out")
    from .outdir import OutputFile

    inputs = [d for d in (args.images, args.validation) if d]
    with OutputFile(out, inputs=inputs):
        _train_locked(args, enc, images, validation, cfg, out)


def _train_locked(args: argparse.Namespace, enc: StagedEncoder, images: list, validation: Any,
                  cfg: Any, out: Path) -> None:
    """``adjinv train`` once ``--out`` is claimed (adjinv.outdir.OutputFile)."""
    tqdm = require("tqdm", "the progress bar").tqdm

    from .distributed import is_main
    from .lacs.training import train_lacs

    bar = tqdm(total=cfg.steps, desc="train", unit="step", file=sys.stderr, disable=None)

    def prog(step: int, total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    try:
        _, _, losses = train_lacs(enc, images, cfg, checkpoint=out, resume=args.resume,
                                  progress=prog, chunk_size=args.chunk_size, validation=validation)
    except OSError as e:
        raise RunFailed(f"{_os_message(e)}; the last complete checkpoint (if one was written) "
                        f"is kept at {out}: free the space or fix the permission, then rerun "
                        "with --resume") from e
    finally:
        bar.close()
    if not is_main():
        return
    first = sum(losses[:5]) / max(1, len(losses[:5]))
    last = sum(losses[-5:]) / max(1, len(losses[-5:]))
    print(f"trained {enc.name} LACs ({cfg.objective} objective) for {len(losses)} steps: l1 loss "
          f"{first:.4f} (first 5) -> {last:.4f} (last 5); wrote {out} and its log beside it")
    if args.export:
        from .lacs.checkpoint import export_checkpoint

        print(f"exported γ/β and the vanilla map (no optimiser state) to "
              f"{export_checkpoint(out, args.export)}")


def _check_replaceable(p: Path, option: str) -> None:
    """Refuse to replace an existing file that is not an adjinv LAC checkpoint."""
    from .lacs.checkpoint import read_checkpoint

    if not p.exists():
        return
    try:
        read_checkpoint(p)
    except AdjinvError:
        raise AdjinvError(f"{option} {str(p)!r} exists and is not an adjinv LAC checkpoint; "
                          f"adjinv never replaces it: choose another {option} path") from None


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def _check_checkpoint_path(path: str, option: str) -> Path:
    """A checkpoint file path whose folder exists or can be made and is writable."""
    p = Path(path)
    if p.is_dir():
        raise AdjinvError(f"{option} {path!r} is a folder; give a checkpoint file path such as "
                          f"{str(p / 'lac.safetensors')!r}")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise AdjinvError(f"{option} {path!r}: {str(parent)!r} is a file, not a folder")
    parent.mkdir(parents=True, exist_ok=True)  # OSError → an environment error
    fd, probe = tempfile.mkstemp(prefix=".adjinv-probe.", suffix=".tmp", dir=parent)
    os.close(fd)
    os.unlink(probe)
    return p


def cmd_encoders(args: argparse.Namespace) -> None:
    """``adjinv encoders``."""
    from .encoders import list_encoders
    from .lacs.checkpoint import bundled_checkpoint

    for n in list_encoders():
        tag = "bundled weights + LACs" if bundled_checkpoint(n) else "weights: local file"
        print(f"{n:20s} {tag}")


def _model_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads an encoder."""
    p.add_argument("--encoder", default="efficientnet_lite0",
                   help="registry name (see `adjinv encoders`; default efficientnet_lite0)")
    p.add_argument("--weights", help="local encoder state dict (.pth or .safetensors)")
    p.add_argument("--random-init", action="store_true",
                   help="allow an encoder without pretrained weights (for testing only)")
    p.add_argument("--chunk-size", type=_POSITIVE, default=None,
                   help="channels per batched backward, >= 1 (default: from free memory)")
    p.add_argument("--max-pixels", type=_POSITIVE, default=DEFAULT_MAX_PIXELS,
                   help="refuse image files with more pixels than this, a guard against "
                        f"decompression bombs (default {DEFAULT_MAX_PIXELS:,})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    ap = _Parser(prog="adjinv", description="Hallucination-free adjoint "
                 "inversion of CNN classifiers (LAC cascade).")
    sub = ap.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    for name, fn, epi, hlp in (("invert", cmd_invert, EPILOG_INVERT, "invert image files"),
                               ("demo", cmd_demo, EPILOG_DEMO,
                                "the embedded default end to end on the bundled photos")):
        p = sub.add_parser(name, help=hlp, description=hlp, epilog=epi, formatter_class=fmt)
        if name == "invert":
            p.add_argument("images", nargs="+", help="image files (PNG, JPEG, …)")
            p.add_argument("--out", required=True, help="output folder")
        else:
            from .images.photos import HELDOUT

            p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
            p.add_argument("--images", type=_int_in(0, len(HELDOUT)), default=0,
                           help="use only the first N held-out photos")
        p.add_argument("--overwrite", action="store_true",
                       help="write into an existing non-empty folder that adjinv did not create")
        _model_args(p)
        p.add_argument("--lac", help="LAC checkpoint, or a bundled variant by name (for "
                                     "efficientnet_lite0: paper-224 = the default, paper-colour, "
                                     "paper, pixbias; a wrong name lists them; default: the "
                                     "bundled default for the encoder)")
        p.add_argument("--allow-other-weights", action="store_true",
                       help="accept a LAC checkpoint trained on other weights of this architecture")
        p.add_argument("--size", type=_SIZE, default=224,
                       help=f"image side in px, {MIN_SIZE}-{MAX_SIZE} (default 224)")
        p.add_argument("--partners", type=_int_in(0), default=2,
                       help="other input photos whose features are pulled back through each "
                            "image's Jacobians (swapped-seed control, feature-specific view; "
                            "default 2, 0: none)")
        p.add_argument("--channels", type=_int_in(0), default=8,
                       help="top-K per-channel inversions of the deepest stage, >= 0 (default 8)")
        p.add_argument("--mass", type=_mass, default=None, help="anytime: synthesise only the "
                       "channels of largest weight up to this simplex mass in (0, 1], e.g. 0.95 "
                       "(default: all)")
        p.add_argument("--partner-mass", type=_mass, default=0.9,
                       help="anytime mass of each swapped-seed partner, in (0, 1]; its proven "
                            "error bound is printed on the page (default 0.9; 1: exact)")
        p.add_argument("--device", default="cpu",
                       help="torch device to run on, e.g. cuda or cuda:1 (default cpu)")
        p.add_argument("--precision", choices=PRECISION_CHOICES, default="float32",
                       help="pull-back arithmetic: float32 (default, exact), tf32 (CUDA tensor "
                            "cores, ~1e-3 relative error on x̂), fp16 (CUDA, ~6e-4), bf16 (~1e-2); "
                            "see docs/speed.md")
        p.set_defaults(func=fn)

    p = sub.add_parser("train", help="train LACs (Eq. 9)", description="Train the LAC γ/β on a "
                       "folder of images with the l1 deepest-stage objective (Eq. 9).",
                       epilog=EPILOG_TRAIN, formatter_class=fmt)
    p.add_argument("--images", help="image folder (default: the embedded training photos, with the "
                   "embedded validation photos; the held-out photos are never used)")
    p.add_argument("--validation", help="folder of validation photos (with --images): loss logged, "
                   "cosine schedule, early stopping and the best checkpoint chosen on them")
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    _model_args(p)
    p.add_argument("--steps", type=_POSITIVE, default=150)
    p.add_argument("--lr", type=_float_in(0.0), default=0.02)
    p.add_argument("--size", type=_SIZE, default=96, help="training crop side in px (default 96)")
    p.add_argument("--batch-size", type=_POSITIVE, default=1)
    p.add_argument("--channel-fraction", type=_float_in(0.0, 1.0), default=1.0,
                   help="train on this random fraction of live channels (default 1 = exact)")
    p.add_argument("--seed", type=_int_in(0, 2**63 - 1), default=0)
    p.add_argument("--checkpoint-every", type=_POSITIVE, default=10)
    p.add_argument("--objective", default="paper",
                   choices=("paper", "pixbias", "contrastive", "reference", "multipath"),
                   help="paper (default, as the bundled LACs): Eq. 9 with every beta trained; "
                        "pixbias: inner LACs are pure normalisations, beta only at the pixels; "
                        "contrastive: pixbias plus a hinge against another photo's features "
                        "(batch size >= 2); reference: Jacobians of a fixed reference input "
                        "(docs/method.md §16); multipath: Eq. 31, the l1 of every stage's "
                        "reconstruction summed; see docs/evidence.md")
    p.add_argument("--contrast-weight", type=_float_in(0.0), default=1.0)
    p.add_argument("--contrast-margin", type=_float_in(0.0, lo_open=False), default=0.02)
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    p.add_argument("--validate-every", type=_int_in(0), default=15,
                   help="validation loss every N steps (0: never; default 15)")
    p.add_argument("--patience", type=_int_in(0), default=3,
                   help="stop after N validations without gain (0: never; default 3)")
    p.add_argument("--keep-every", type=_int_in(0), default=15,
                   help="keep a copy of the LACs every N steps in <out stem>.steps/ (0: none)")
    p.add_argument("--nproc", type=_POSITIVE, default=1,
                   help="train data-parallel in N local processes (torchrun; batch size must be "
                        "a multiple of N)")
    p.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    p.add_argument("--export", help="also write a small copy without optimiser state (for shipping)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("encoders", help="list the registered encoders")
    p.set_defaults(func=cmd_encoders)

    from .paper.runners.commands import register_commands

    register_commands(sub)
    return ap


def _out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e)
                                         or "out of memory" in str(e).lower()))


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """While a command runs: adjinv's warnings, and the experiment runners' progress lines
    (INFO of ``adjinv.paper.runners``), go to stderr as bare lines. Outside ``main`` nothing
    is installed, so library use stays silent unless the application configures logging."""
    top, runners = logging.getLogger("adjinv"), logging.getLogger("adjinv.paper.runners")
    levels = top.level, runners.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    top.addHandler(handler)
    if top.level == logging.NOTSET:
        top.setLevel(logging.WARNING)
    runners.setLevel(logging.INFO)
    try:
        yield
    finally:
        top.removeHandler(handler)
        top.setLevel(levels[0])
        runners.setLevel(levels[1])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``adjinv`` console script.

    Exit codes: 0 done; 2 a user error (one line on stderr); 1 an environment error
    (disk, permission, memory) or an internal error (one line; ``--debug`` anywhere
    on the command line shows the traceback); 130 interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else 2
    debug = getattr(args, "debug", False)
    try:
        with _log_to_stderr():
            args.func(args)
    except AdjinvError as e:
        if debug:
            raise
        print(f"adjinv: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adjinv: interrupted", file=sys.stderr)
        return 130
    except RunFailed as e:
        if debug:
            raise
        print(f"adjinv: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if debug:
            raise
        print(f"adjinv: error: {_os_message(e)} (nothing was written)", file=sys.stderr)
        return 1
    except Exception as e:  # the last line of defence: one line, no traceback
        if debug:
            raise
        if _out_of_memory(e):
            size = getattr(args, "size", None)
            hint = (f"; try a smaller size (e.g. --size {max(MIN_SIZE, size // 2)}) or a small "
                    "--chunk-size" if size else "")
            print(f"adjinv: error: out of memory{f' at --size {size}' if size else ''}{hint}",
                  file=sys.stderr)
        else:
            print(f"adjinv: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                  " (rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
