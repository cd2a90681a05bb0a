"""Train LACs for the embedded default on the embedded photo split (adjinv.images.photos):
training photos only, validation photos for the schedule/early stopping/best checkpoint,
held-out photos never touched. One run per objective; resumable (re-run the same command).

    python benchmarks/train_embedded.py --objective pixbias --out runs/pixbias.lac.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from adjinv import load_encoder
from adjinv.images.photos import is_greyscale, split_photos
from adjinv.lacs.training import OBJECTIVES, TrainConfig, train_lacs


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
                    help="which training photos: 'all' (the whole training split) or 'colour' "
                         "(only its colour photos, the domain of the demo and most users' images)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = load_encoder(args.encoder)
    train, val = split_photos("train"), split_photos("validation")
    if args.photos == "colour":
        train = {n: im for n, im in train.items() if not is_greyscale(im)}
    elif args.photos != "all":
        ap.error("--photos must be 'all' or 'colour'")
    cfg = TrainConfig(steps=args.steps, lr=args.lr, size=args.size, batch_size=args.batch_size,
                      channel_fraction=args.channel_fraction, seed=args.seed, checkpoint_every=5,
                      images=[f"embedded:{n}" for n in train], objective=args.objective,
                      contrast_weight=args.contrast_weight, contrast_margin=args.contrast_margin,
                      schedule="cosine", validate_every=args.validate_every, patience=args.patience,
                      keep_every=args.keep_every)
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
