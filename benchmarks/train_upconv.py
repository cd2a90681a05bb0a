"""Train the UpConvNet baseline (docs/method.md §13) on the photo corpus, with the crops
and size of the LAC runs, until its validation loss plateaus.

Training data: ``--crops`` fixed random crops per training photo of the corpus (by
default its colour photos, the 46 the 224 px LAC run trained on; ``--photos all`` adds
the greyscale ones), each a square covering ``--min-crop``–1 of the photo's shorter
side, flipped with probability 1/2, resized to ``--size`` (the LAC runs' crop, 0.5 at
224 px); the encoder's features of each crop are computed once. Validation: the centre
crop of each colour validation photo. Every ``--validate-every`` steps the validation
loss is measured; after ``--patience`` checks without a gain training stops, and the
best decoder is kept. Adam at ``--lr`` (default 1e-3; Dosovitskiy & Brox used 1e-4 for
runs of many epochs on ImageNet, the higher rate suits this small data set and early
stopping picks the step).

Resumable: run the same command again (the training checkpoint holds the decoder, Adam
state, best decoder and early-stopping state). Writes, under ``--out-dir``:

- ``NAME.train.safetensors``: the training checkpoint (not committed: Adam moments);
- ``NAME.safetensors``: the compact inference file (best weights in float16 + metadata;
  load it with ``adjinv.paper.baselines.upconv.load_upconv``);
- ``NAME.log.json``: steps, train and validation loss history, best step, seconds, steps/s
  (rewritten at each checkpoint while running, ``"status": "running"``).

    python benchmarks/train_upconv.py --corpus corpus --threads 2
    python benchmarks/train_upconv.py --corpus corpus --size 64 --steps 6 --validate-every 2 \\
        --crops 1 --out-dir /tmp/upconv-check        # a check of the mechanics
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from adjinv import load_encoder
from adjinv.fileio import atomic_write_json
from adjinv.images.files import resize_center_crop
from adjinv.paper.baselines.upconv import (
    MIN_GAIN,
    UpConvConfig,
    crop_bank,
    export_upconv,
    train_upconv,
)
from adjinv.paper.data.corpus import load_corpus_split
from adjinv.state import parse_device

log = logging.getLogger("train_upconv")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--corpus", default="corpus", help="the built corpus (make corpus)")
    ap.add_argument("--photos", choices=("colour", "all"), default="colour",
                    help="training photos: the colour ones (as the LAC runs) or all")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--crops", type=int, default=8, help="random crops per training photo")
    ap.add_argument("--min-crop", type=float, default=0.5,
                    help="smallest crop, as a fraction of the photo's shorter side")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's rate (D&B: 1e-4)")
    ap.add_argument("--steps", type=int, default=20000, help="step cap")
    ap.add_argument("--validate-every", type=int, default=200)
    ap.add_argument("--patience", type=int, default=5,
                    help="checks without a validation gain before stopping (0: never)")
    ap.add_argument("--checkpoint-every", type=int, default=0,
                    help="steps between checkpoints (default: --validate-every)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--min-width", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="crops, initialisation, minibatches")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--log-every", type=int, default=50, help="steps between progress lines")
    ap.add_argument("--out-dir", default="benchmarks/results/baselines")
    ap.add_argument("--name", default=None, help="file stem (default upconv-<lite0>-<size>)")
    ap.add_argument("--heldout", action="store_true",
                    help="no training: score the exported decoder on the held-out photos (the "
                         "embedded and the corpus's; centre crops at --size) and the validation "
                         "photos, writing NAME.heldout.json")
    return ap.parse_args(argv)


def score_heldout(args: argparse.Namespace, enc, export: Path, path: Path) -> dict:
    """Pearson r (RGB) and ℓ1 (normalised space) of the decoder's output against each
    held-out and validation photo, centre crops; the photos chose nothing."""
    from adjinv.images.photos import split_photos
    from adjinv.metrics.likeness import bootstrap_ci, pearson_rgb
    from adjinv.paper.baselines.upconv import load_upconv, upconv_reconstruct

    dec = load_upconv(export, enc)
    res: dict = {"export": str(export), "size": args.size, "splits": {}}
    splits = {"heldout": {**split_photos("heldout"), **load_corpus_split(args.corpus, "heldout")},
              "validation": load_corpus_split(args.corpus, "validation", colour_only=True)}
    for split, photos in splits.items():
        per = {}
        for name, img in photos.items():
            x = enc.normalize(resize_center_crop(img, args.size)[None])
            with torch.no_grad():
                out = upconv_reconstruct(enc, dec, x)
            per[name] = {"pearson": float(pearson_rgb(out, x)[0]), "l1": float((out - x).abs().mean())}
        r = [v["pearson"] for v in per.values()]
        res["splits"][split] = {"photos": per, "mean_pearson": sum(r) / len(r),
                                "pearson_ci": list(bootstrap_ci(r)),
                                "mean_l1": sum(v["l1"] for v in per.values()) / len(per)}
        log.info("UpConvNet on the %s photos: mean r %.3f, mean l1 %.4f", split,
                 res["splits"][split]["mean_pearson"], res["splits"][split]["mean_l1"])
    atomic_write_json(path, res)
    return res


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or f"upconv-{args.encoder.removeprefix('efficientnet_')}-{args.size}"
    out = Path(args.out_dir)
    ckpt, export, log_path = (out / f"{name}.train.safetensors", out / f"{name}.safetensors",
                              out / f"{name}.log.json")
    t_call = time.perf_counter()
    enc = load_encoder(args.encoder, device=parse_device(args.device))
    if args.heldout:
        return score_heldout(args, enc, export, out / f"{name}.heldout.json")
    train = load_corpus_split(args.corpus, "train", colour_only=args.photos == "colour")
    val = load_corpus_split(args.corpus, "validation", colour_only=True)
    images = crop_bank(train, args.size, args.crops, args.min_crop, args.seed)
    val_images = torch.stack([resize_center_crop(im, args.size) for im in val.values()])
    log.info("UpConvNet for %s at %d px: %d training photos x %d crops (min crop %.2f), "
             "%d validation photos; crops made in %.1f s", enc.name, args.size, len(train),
             args.crops, args.min_crop, len(val), time.perf_counter() - t_call)
    cfg = UpConvConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, width=args.width,
                       min_width=args.min_width, seed=args.seed,
                       checkpoint_every=args.checkpoint_every or args.validate_every or 100,
                       images=[f"corpus:{n}" for n in train], validate_every=args.validate_every,
                       patience=args.patience, validation=[f"corpus:{n}" for n in val],
                       data={"source": "corpus", "photos": args.photos, "crops_per_photo": args.crops,
                             "min_crop": args.min_crop, "crop_seed": args.seed,
                             "validation": "centre crops, colour photos"})
    prev = json.loads(log_path.read_text()) if log_path.is_file() else {}
    base_seconds = float(prev.get("seconds_total", 0.0))
    clock: dict[str, float] = {}
    window: list[float] = []

    def progress(step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        clock.setdefault("first_step", step)
        clock.setdefault("first", now)
        clock["last"], clock["last_step"] = now, step
        window.append(loss)
        if step % args.log_every == 0 or step == total:
            done = step - clock["first_step"]
            rate = done / (now - clock["first"]) if done else float("nan")
            log.info("step %d/%d train loss %.5f (mean of the last %d), %.2f steps/s",
                     step, total, sum(window) / len(window), len(window), rate)
            window.clear()
        if step % cfg.checkpoint_every == 0:
            atomic_write_json(log_path, {"status": "running", "step": step,
                                         "seconds_total": round(base_seconds + now - t_call, 1)})

    dec, hist = train_upconv(enc, images, cfg, checkpoint=ckpt, progress=progress,
                             val_images=val_images)
    meta = export_upconv(ckpt, export)
    seconds = time.perf_counter() - t_call
    ve = cfg.validate_every
    ran = "first" in clock  # False when the run was already finished: loaded, not trained
    rows = [{"step": r["step"], "val_loss": r["val_loss"],
             "train_loss": sum(hist[r["step"] - ve: r["step"]]) / ve} for r in hist.validation]
    trained = int(clock["last_step"] - clock["first_step"]) if ran else 0  # timed steps
    result = {
        "status": "complete", "encoder": enc.name, "encoder_hash": enc.weights_hash(),
        "size": args.size, "train_photos": sorted(train), "validation_photos": sorted(val),
        "crops_per_photo": args.crops, "min_crop": args.min_crop, "train_crops": len(images),
        "config": vars(args), "parameters": sum(p.numel() for p in dec.parameters()),
        "steps": len(hist), "stopped": hist.stopped, "best_step": hist.best_step,
        "best_val_loss": hist.best_val, "min_gain": MIN_GAIN,
        "final_train_loss": hist[-1] if hist else None, "validation": rows,
        "seconds_this_call": round(seconds, 1),
        "seconds_total": round(base_seconds + seconds, 1) if ran or prev.get("status") != "complete"
        else prev["seconds_total"],
        "steps_this_call": int(clock["last_step"] - clock["first_step"] + 1) if ran else 0,
        "steps_per_second": round(trained / (clock["last"] - clock["first"]), 3) if trained else None,
        "train_checkpoint": str(ckpt), "export": str(export), "export_bytes": export.stat().st_size,
        "export_weights_step": meta["weights_step"],
    }
    atomic_write_json(log_path, result)
    log.info("UpConvNet: %d steps (%s), best validation loss %s at step %d; export %s (%.2f MB)",
             len(hist), hist.stopped, hist.best_val, hist.best_step, export,
             export.stat().st_size / 1e6)
    return result


if __name__ == "__main__":
    main()
