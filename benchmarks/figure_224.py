"""A held-out grid at 224 px: rows are held-out photos, columns the photo, x̂_L of LAC
variants and the seed-zero control of the first variant, each through the report's display
mapping (adjinv.core.display.centred_display) with its Pearson r. Writes PNG and JSON.

    python benchmarks/figure_224.py \\
        paper-224=src/adjinv/lacs/weights/efficientnet_lite0.lac.safetensors \\
        paper-colour=benchmarks/lacs-history/efficientnet_lite0-paper-colour-step15-96px.lac.safetensors \\
        --photos china coffee colorfulcups friends --out benchmarks/results/heldout-224/figure
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

from adjinv import load_encoder
from adjinv.core.display import centred_display
from adjinv.core.inverter import AdjointInverter
from adjinv.core.simplex import simplex_measure
from adjinv.fileio import atomic_write_bytes, atomic_write_json
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import split_photos
from adjinv.lacs.bundled import load_lacs
from adjinv.metrics.likeness import pearson_rgb
from adjinv.paper.data.corpus import load_corpus_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="name=checkpoint (the first also gives seed-zero)")
    ap.add_argument("--photos", nargs="+", required=True, help="held-out photo names")
    ap.add_argument("--out", required=True, help="path without suffix: writes .png and .json")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--corpus", default="corpus")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    enc = load_encoder("efficientnet_lite0")
    held = {**split_photos("heldout"), **load_corpus_split(args.corpus, "heldout")}
    missing = [p for p in args.photos if p not in held]
    if missing:
        raise SystemExit(f"not held-out photos: {missing}; choose from {sorted(held)}")
    variants = dict(v.split("=", 1) for v in args.variants)
    invs = {n: AdjointInverter(enc, load_lacs(enc, p)[0]) for n, p in variants.items()}
    first = next(iter(variants))
    cols = ["photo", *(f"x̂_L, {n}" for n in variants), f"seed-zero, {first}"]
    data: dict = {"size": args.size, "variants": variants, "columns": cols, "pearson": {}}
    fig = Figure(figsize=(2.0 * len(cols), 2.1 * len(args.photos)))
    FigureCanvasAgg(fig)
    last = enc.num_stages - 1
    for i, name in enumerate(args.photos):
        x01 = resize_center_crop(held[name], args.size)[None]
        x = enc.normalize(x01)
        panels, rs = [x01[0]], [1.0]
        with enc.frozen(), torch.no_grad():
            for inv in invs.values():
                lin = inv.cascade.linearize(x, last)
                xh = inv.synthesize(lin, last, {"x": simplex_measure(lin.acts[last])})[0]["x"]
                panels.append(centred_display(xh[0]))
                rs.append(float(pearson_rgb(xh, x)[0]))
            z = invs[first].seed_zero_control(x)
            panels.append(centred_display(z[0]))
            rs.append(float(pearson_rgb(z, x)[0]))
        data["pearson"][name] = dict(zip(cols, rs, strict=True))
        for j, (img, r) in enumerate(zip(panels, rs, strict=True)):
            ax = fig.add_subplot(len(args.photos), len(cols), i * len(cols) + j + 1)
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{cols[j]}\nr = {r:.2f}" if i == 0 else f"r = {r:.2f}", fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    out = Path(args.out)
    atomic_write_bytes(out.with_suffix(".png"), buf.getvalue())
    atomic_write_json(out.with_suffix(".json"), data)
    print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
