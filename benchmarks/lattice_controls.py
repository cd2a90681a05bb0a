"""Stride-lattice energy of x̂_L and of each control (docs/method.md §3), from the images
that ``benchmarks/leakage.py`` cached for a variant: the trained x̂_L, identity LACs, the
seed-zero cascade, swapped seeds (another photo's features), random Gaussian seeds and the
feature-specific view x̂ − mean of the K swapped, beside the photo's own share. Nothing is
recomputed, so the numbers are those of the very images the leakage table scores.

    python benchmarks/lattice_controls.py benchmarks/results/leakage-224 paper-224
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import load_file

from adjinv import load_encoder
from adjinv.fileio import atomic_write_json
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import split_photos

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout_eval import lattice_energy

CONTROLS = ("trained", "identity", "seed_zero", "swapped", "random_seed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="the leakage run's --out folder")
    ap.add_argument("variant")
    args = ap.parse_args()
    folder = Path(args.folder)
    root = folder / "cache" / args.variant / "cache" / "main"
    if not root.is_dir():
        raise SystemExit(f"no cached images at {root}: run benchmarks/leakage.py for {args.variant} first")
    enc = load_encoder("efficientnet_lite0")
    photos = split_photos("heldout")
    strides = (2, enc.total_stride)
    per: dict[str, dict[str, list[float]]] = {}
    size = None
    for name in sorted(p.name for p in root.iterdir()):
        crop = root / name / "crop0"
        imgs = {m: load_file(str(crop / f"{m}.safetensors"))["out"][0] for m in CONTROLS}
        swaps = sorted(crop.glob("swap[0-9]*.safetensors"))
        k = 1 + len(swaps)
        mean_swap = (imgs["swapped"] + sum(load_file(str(p))["out"][0] for p in swaps)) / k
        imgs[f"feature_k{k}"] = imgs["trained"] - mean_swap
        size = imgs["trained"].shape[-1]
        imgs["photo"] = enc.normalize(resize_center_crop(photos[name], size)[None])[0]
        for m, img in imgs.items():
            row = per.setdefault(m, {f"stride_{s}": [] for s in strides})
            for s in strides:
                row[f"stride_{s}"].append(lattice_energy(img, s))
    res = {"variant": args.variant, "size": size, "photos": sorted(p.name for p in root.iterdir()),
           "methods": {m: {**rows, "mean": {k: sum(v) / len(v) for k, v in rows.items()}}
                       for m, rows in per.items()}}
    out = folder / f"lattice-{args.variant}.json"
    atomic_write_json(out, res)
    for m, r in res["methods"].items():
        print(m, {k: round(v, 4) for k, v in r["mean"].items()})


if __name__ == "__main__":
    main()
