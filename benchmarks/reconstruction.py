"""SSIM/PSNR of x̂_L on the bundled photos: identity vs trained LACs, beside the
seed-zero control and the vanilla gradient (docs/method.md §13, §14).

    python benchmarks/reconstruction.py --size 224 --out benchmarks/results/reconstruction.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.encoders import load_encoder
from adjinv.fileio import atomic_write_json
from adjinv.images.files import resize_center_crop
from adjinv.images.samples import sample_images
from adjinv.lacs.checkpoint import bundled_checkpoint, load_checkpoint
from adjinv.lacs.vanilla import VanillaMap
from adjinv.metrics.reconstruction import psnr, ssim


def scores(enc, rec, img):
    d = enc.to_display(rec)
    return {"ssim": float(ssim(d, img)), "psnr": float(psnr(d, img))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--lac", default=None, help="trained checkpoint (default: bundled)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    enc = load_encoder(args.encoder)
    path = args.lac or bundled_checkpoint(enc.name)
    trained, ck = load_checkpoint(path, enc)
    vanilla = VanillaMap.from_tensors(ck.extras)
    variants = {"identity": LACBank.for_encoder(enc), "trained": trained}
    rows = []
    for name, img in sample_images().items():
        im = resize_center_crop(img, args.size)[None]
        x = enc.normalize(im[0])[None]
        row = {"image": name}
        for vname, lacs in variants.items():
            inv = AdjointInverter(enc, lacs)
            t = time.perf_counter()
            res = inv.invert(x, stages=[-1])
            row[f"{vname}_seconds"] = time.perf_counter() - t
            row[vname] = scores(enc, res.x_hat[enc.num_stages - 1], im)
            row[f"{vname}_control"] = scores(enc, inv.seed_zero_control(x), im)
        if vanilla is not None:
            v = AdjointInverter(enc, trained).vanilla_gradient(x)
            row["vanilla"] = scores(enc, vanilla(v), im)
        rows.append(row)
        print(json.dumps(row))
    result = {"encoder": enc.name, "lac": str(path), "size": args.size,
              "torch": torch.__version__, "device": "cpu", "threads": torch.get_num_threads(),
              "rows": rows}
    if args.out:
        atomic_write_json(Path(args.out), result)
    cols = ["identity", "identity_control", "trained", "trained_control", "vanilla"]
    print("| image | " + " | ".join(f"{c} SSIM / PSNR" for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        cells = [f"{r[c]['ssim']:.3f} / {r[c]['psnr']:.2f}" if c in r else "n/a" for c in cols]
        print(f"| {r['image']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
