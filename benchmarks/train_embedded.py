"""Train LACs for the embedded default on the embedded photo split (adjinv.images.photos)
or on the photo corpus (adjinv.paper.data.corpus, ``--photos corpus``): training photos
only, validation photos for the schedule/early stopping/best checkpoint, held-out photos
never touched. One run per objective; resumable (re-run the same command).

    python benchmarks/train_embedded.py --objective pixbias --out runs/pixbias.lac.safetensors
    python benchmarks/train_embedded.py --photos corpus --size 224 --batch-size 1 \
        --xhat sampled --out benchmarks/results/training/lite0-224/paper.lac.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from adjinv import load_encoder
from adjinv.images.photos import is_greyscale, split_photos
from adjinv.lacs.training import OBJECTIVES, SCHEDULES, XHAT_MODES, TrainConfig, train_lacs
from adjinv.paper.data.corpus import load_corpus_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objective", choices=OBJECTIVES, default="pixbias")
    ap.add_argument("--encoder", default="efficientnet_lite0",
                    help="registry name of the encoder (efficientnet_lite0/1/2 have offline weights)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--channel-fraction", type=float, default=0.25)
    ap.add_argument("--contrast-weight", type=float, default=1.0)
    ap.add_argument("--contrast-margin", type=float, default=0.02)
    ap.add_argument("--validate-every", type=int, default=25)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--keep-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", default="all",
                    help="which training photos: 'all' (the whole training split), 'colour' "
                         "(only its colour photos, the domain of the demo and most users' images) "
                         "or 'corpus' (the corpus's colour training and validation splits)")
    ap.add_argument("--corpus", default="corpus", help="the built corpus (make corpus)")
    ap.add_argument("--xhat", choices=XHAT_MODES, default="exact",
                    help="'sampled': x̂ and its gradient from one sampled channel set")
    ap.add_argument("--top", type=float, default=0.0,
                    help="share of the sampled channel budget given to the largest weights")
    ap.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    ap.add_argument("--min-crop", type=float, default=0.35)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = load_encoder(args.encoder)
    if args.photos == "corpus":
        train = load_corpus_split(args.corpus, "train", colour_only=True)
        val = load_corpus_split(args.corpus, "validation", colour_only=True)
    else:
        train, val = split_photos("train"), split_photos("validation")
    if args.photos == "colour":
        train = {n: im for n, im in train.items() if not is_greyscale(im)}
    elif args.photos not in ("all", "corpus"):
        ap.error("--photos must be 'all', 'colour' or 'corpus'")
    prefix = "corpus" if args.photos == "corpus" else "embedded"
    cfg = TrainConfig(steps=args.steps, lr=args.lr, size=args.size, batch_size=args.batch_size,
                      channel_fraction=args.channel_fraction, seed=args.seed, checkpoint_every=5,
                      images=[f"{prefix}:{n}" for n in train], objective=args.objective,
                      contrast_weight=args.contrast_weight, contrast_margin=args.contrast_margin,
                      schedule=args.schedule, validate_every=args.validate_every,
                      patience=args.patience, keep_every=args.keep_every, xhat=args.xhat,
                      top=args.top, min_crop=args.min_crop)
    t = time.perf_counter()

    def prog(step: int, total: int, loss: float) -> None:
        if step % 5 == 0:
            logging.info("step %d/%d loss %.4f (%.0f s)", step, total, loss, time.perf_counter() - t)

    _, _, losses = train_lacs(enc, list(train.values()), cfg, checkpoint=args.out, resume=True,
                              progress=prog, validation=list(val.values()))
    print(json.dumps({"encoder": args.encoder, "objective": args.objective, "steps_run": len(losses),
                      "seconds_this_call": round(time.perf_counter() - t, 1)}))


if __name__ == "__main__":
    main()
