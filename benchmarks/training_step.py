"""Cost of one LAC training step, exact vs channel-subsampled, against one
inversion of the same image (the issue's "≈ 4x one inversion" budget), and the
quality each reaches after the same number of steps.

    python benchmarks/training_step.py --size 96 --steps 10 --fraction 0.25
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adjinv import AdjointInverter, load_encoder
from adjinv.core.lac import LACBank
from adjinv.fileio import atomic_write_json
from adjinv.images import resize_center_crop, sample_images
from adjinv.lacs.training import TrainConfig, lac_step, train_lacs
from adjinv.metrics.reconstruction import ssim


def xhat_ssim(enc, lacs, imgs, size):
    out = {}
    last = enc.num_stages - 1
    for n, im in imgs.items():
        img = resize_center_crop(im, size)[None]
        x = enc.normalize(img[0])[None]
        xh = AdjointInverter(enc, lacs).invert(x, stages=[last]).x_hat[last]
        out[n] = float(ssim(enc.to_display(xh), img))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--out", default=None)
    ap.add_argument("--reuse-exact", default=None,
                    help="checkpoint of an exact run at --steps with the same seed (skips retraining it)")
    args = ap.parse_args()
    enc = load_encoder("efficientnet_lite0")
    imgs = sample_images()
    x = enc.normalize(resize_center_crop(imgs["chelsea"], args.size))[None]
    timing = {}
    inv = AdjointInverter(enc, LACBank.for_encoder(enc))
    t = time.perf_counter()
    inv.invert(x, stages=[-1])
    timing["inversion_s"] = time.perf_counter() - t
    for frac in (1.0, args.fraction):
        with enc.frozen():
            t = time.perf_counter()
            lac_step(inv, x, channel_fraction=frac, gen=torch.Generator().manual_seed(0))
            timing[f"step_fraction_{frac}_s"] = time.perf_counter() - t
    print(json.dumps(timing), flush=True)
    quality = {}
    if args.reuse_exact:
        from adjinv.lacs.checkpoint import load_checkpoint

        lacs, ck = load_checkpoint(args.reuse_exact, enc)
        assert ck.meta["step"] == args.steps and ck.meta["training"]["channel_fraction"] == 1.0
        quality["1.0"] = {"checkpoint": args.reuse_exact,
                          "ssim_xhat": xhat_ssim(enc, lacs, imgs, args.size)}
    for frac in ((args.fraction,) if args.reuse_exact else (1.0, args.fraction)):
        cfg = TrainConfig(steps=args.steps, size=args.size, channel_fraction=frac)
        t = time.perf_counter()
        lacs, _, losses = train_lacs(enc, list(imgs.values()), cfg)
        quality[str(frac)] = {"train_s": time.perf_counter() - t,
                              "ssim_xhat": xhat_ssim(enc, lacs, imgs, args.size)}
        print(json.dumps({frac: quality[str(frac)]}), flush=True)
    quality["identity"] = {"ssim_xhat": xhat_ssim(enc, LACBank.for_encoder(enc), imgs, args.size)}
    res = {"size": args.size, "steps": args.steps, "timing": timing, "quality": quality,
           "threads": torch.get_num_threads(), "device": "cpu"}
    print(json.dumps(res))
    if args.out:
        atomic_write_json(Path(args.out), res)


if __name__ == "__main__":
    main()
