"""``adjinv`` command line: parses, calls the library, prints where outputs went."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from ._optional import require
from .errors import AdjinvError

# adjinv.core.precision.PRECISIONS, spelled out so that parsing does not import torch
PRECISION_CHOICES = ("float32", "tf32", "fp16", "bf16")

EPILOG_INVERT = """example:
  adjinv invert photo.jpg other.png --out runs/inv --channels 8
  adjinv invert cat.jpg --encoder resnet50 --weights resnet50.pth --lac r50.lac.safetensors --out r50
"""
EPILOG_DEMO = """example:
  adjinv demo --out demo-out      # then open demo-out/index.html
"""
EPILOG_TRAIN = """example:
  adjinv train --out lite0.lac.safetensors                # bundled photos, exact objective
  adjinv train --images my_photos/ --steps 300 --out my.lac.safetensors --resume
"""


def _bar(desc: str, total: int):
    tqdm = require("tqdm", "the progress bar").tqdm

    # disable=None: no bar when stderr is not a terminal (logs stay readable)
    return tqdm(total=total, desc=desc, unit="ch", leave=False, file=sys.stderr, disable=None)


def _channel_progress():
    state: dict = {}

    def cb(name: str, done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None or state.get("key") != (name, total) or done < bar.n:
            if bar is not None:
                bar.close()
            state["bar"] = bar = _bar(f"{name}", total)
            state["key"] = (name, total)
        bar.update(done - bar.n)

    def close() -> None:
        if state.get("bar") is not None:
            state["bar"].close()

    return cb, close


def _load(args: argparse.Namespace):
    from .encoders import load_encoder
    from .pretrained import load_lacs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = load_encoder(args.encoder, args.weights, random_init=args.random_init)
        lacs, vanilla, source = load_lacs(enc, args.lac,
                                          allow_other_weights=args.allow_other_weights)
    for w in caught:
        print(f"adjinv: warning: {w.message}", file=sys.stderr)
    return enc, lacs, vanilla, source


def _run_report(args: argparse.Namespace, images: dict, title: str) -> Path:
    from .experiments.report import ReportConfig, invert_one, write_index

    enc, lacs, vanilla, source = _load(args)
    enc = enc.to(_device(args.device))
    out = Path(args.out)
    cfg = ReportConfig(size=args.size, top_k=args.channels, chunk_size=args.chunk_size,
                       precision=args.precision)
    print(f"encoder {enc.name} ({enc.num_stages} stages), LACs: {source}", file=sys.stderr)
    cb, close = _channel_progress()
    summaries = []
    t0 = time.perf_counter()
    try:
        for i, (name, img) in enumerate(images.items()):
            print(f"[{i + 1}/{len(images)}] {name}", file=sys.stderr)
            s = invert_one(enc, lacs, vanilla, name, img, out / name, cfg, progress=cb)
            summaries.append(s)
            r = s["reconstruction"]
            print(f"    top-1 {s['top1']['name']} (p={s['top1']['probability']:.3f})  "
                  f"SSIM x̂_L {r['ssim']:.3f}  control {s['seed_zero_control']['ssim']:.3f}  "
                  f"{s['seconds']:.1f} s", file=sys.stderr)
    finally:
        close()
    intro = (f"<p>encoder <b>{enc.name}</b>, LACs: {source}, size {args.size} px, "
             f"total {time.perf_counter() - t0:.1f} s</p>")
    index = write_index(out, summaries, title, intro)
    print(f"wrote {len(summaries)} image report(s) to {out}/ — open {index}")
    return index


def _device(name: str):
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise AdjinvError(f"--device {name!r} is not a torch device ({e}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AdjinvError(f"--device {name}: PyTorch sees no CUDA device here "
                          "(torch.cuda.is_available() is False); use --device cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise AdjinvError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


def _unique_names(paths: list[str]) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for p in map(Path, paths):
        stem, n = p.stem, 1
        while stem in names:
            n += 1
            stem = f"{p.stem}-{n}"
        names[stem] = p
    return names


def cmd_invert(args: argparse.Namespace) -> None:
    """``adjinv invert``."""
    from .data.images import load_image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = {n: load_image(p, mode="convert") for n, p in _unique_names(args.images).items()}
    for w in caught:
        print(f"adjinv: warning: {w.message}", file=sys.stderr)
    _run_report(args, images, "adjinv inversion report")


def cmd_demo(args: argparse.Namespace) -> None:
    """``adjinv demo``."""
    from .data.samples import SAMPLE_NAMES, sample_images

    names = SAMPLE_NAMES[: args.images] if args.images else SAMPLE_NAMES
    _run_report(args, sample_images(names), "adjinv demo — embedded EfficientNet-Lite0")


def cmd_train(args: argparse.Namespace) -> None:
    """``adjinv train``."""
    tqdm = require("tqdm", "the progress bar").tqdm

    from .data.images import list_images, load_image
    from .data.samples import sample_images
    from .encoders import load_encoder
    from .training import TrainConfig, train_lacs

    if args.images:
        files = list_images(args.images)
        images = [load_image(f, mode="convert") for f in files]
        names = [str(f) for f in files]
    else:
        named = sample_images()
        images, names = list(named.values()), [f"skimage:{n}" for n in named]
    enc = load_encoder(args.encoder, args.weights, random_init=args.random_init)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, size=args.size, batch_size=args.batch_size,
                      channel_fraction=args.channel_fraction, seed=args.seed,
                      checkpoint_every=args.checkpoint_every, images=names)
    out = Path(args.out)
    if out.exists() and not args.resume:
        raise AdjinvError(f"{out} exists; pass --resume to continue that run or choose another --out")
    bar = tqdm(total=cfg.steps, desc="train", unit="step", file=sys.stderr, disable=None)

    def prog(step: int, total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    try:
        _, _, losses = train_lacs(enc, images, cfg, checkpoint=out, resume=args.resume,
                                  progress=prog, chunk_size=args.chunk_size)
    finally:
        bar.close()
    first = sum(losses[:5]) / max(1, len(losses[:5]))
    last = sum(losses[-5:]) / max(1, len(losses[-5:]))
    print(f"trained {enc.name} LACs for {cfg.steps} steps: l1 loss {first:.4f} (first 5) -> "
          f"{last:.4f} (last 5); wrote {out}")
    if args.export:
        from .checkpoint import export_checkpoint

        print(f"exported γ/β and the vanilla map (no optimiser state) to "
              f"{export_checkpoint(out, args.export)}")


def cmd_encoders(args: argparse.Namespace) -> None:
    """``adjinv encoders``."""
    from .checkpoint import bundled_checkpoint
    from .encoders import list_encoders

    for n in list_encoders():
        tag = "bundled weights + LACs" if bundled_checkpoint(n) else "weights: local file"
        print(f"{n:20s} {tag}")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="efficientnet_lite0",
                   help="registry name (see `adjinv encoders`; default efficientnet_lite0)")
    p.add_argument("--weights", help="local encoder state dict (.pth or .safetensors)")
    p.add_argument("--random-init", action="store_true",
                   help="allow an encoder without pretrained weights (for testing only)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="channels per batched backward (default: from free memory)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    ap = argparse.ArgumentParser(prog="adjinv", description="Hallucination-free adjoint "
                                 "inversion of CNN classifiers (LAC cascade).")
    ap.add_argument("--debug", action="store_true", help="show tracebacks on errors")
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
            p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
            p.add_argument("--images", type=int, default=0,
                           help="use only the first N bundled photos")
        _model_args(p)
        p.add_argument("--lac", help="LAC checkpoint (default: the bundled one for the encoder)")
        p.add_argument("--allow-other-weights", action="store_true",
                       help="accept a LAC checkpoint trained on other weights of this architecture")
        p.add_argument("--size", type=int, default=224, help="image side in px (default 224)")
        p.add_argument("--channels", type=int, default=8,
                       help="top-K per-channel inversions of the deepest stage (default 8)")
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
    p.add_argument("--images", help="image folder (default: the bundled photos)")
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    _model_args(p)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--size", type=int, default=96, help="training crop side in px (default 96)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--channel-fraction", type=float, default=1.0,
                   help="train on this random fraction of live channels (default 1 = exact)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    p.add_argument("--export", help="also write a small copy without optimiser state (for shipping)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("encoders", help="list the registered encoders")
    p.set_defaults(func=cmd_encoders)

    from .experiments.commands import register_commands

    register_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``adjinv`` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AdjinvError as e:
        if args.debug:
            raise
        print(f"adjinv: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adjinv: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
