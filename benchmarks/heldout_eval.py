"""x̂_L of several LAC variants on the held-out photos, at several sizes: the figures the
corpus issue decides on (docs/evidence.md, "Trained at 224 px").

For every variant (``name=checkpoint``, ``name=bundled:VARIANT`` or ``name=identity``) and
size, on every held-out photo (the embedded held-out photos and the corpus's; none was
trained on or used to pick a checkpoint): Pearson r (RGB), affine SSIM and the ℓ1 of
Eq. 9 (normalised space) of x̂ from the deepest stage, and the *stride-lattice energy*:
the share of x̂'s non-constant spectral power at the aliasing frequencies of a stride
``p`` (the bins ``(kH/p, lW/p)``, ``(k, l) ≠ (0, 0)``), for ``p = 2`` (the stem) and the
encoder's total stride, beside the same share for the photo itself. Writes JSON.

    python benchmarks/heldout_eval.py --out benchmarks/results/heldout-224/eval.json \\
        new=benchmarks/results/training/lite0-224/paper.lac.safetensors \\
        shipped_step15=bundled:paper-colour identity=identity
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import torch

from adjinv import load_encoder
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.core.simplex import simplex_measure
from adjinv.fileio import atomic_write_json
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import split_photos
from adjinv.lacs.bundled import load_lacs
from adjinv.lacs.checkpoint import resolve_checkpoint
from adjinv.metrics.likeness import affine_ssim, bootstrap_ci, pearson_rgb
from adjinv.paper.data.corpus import load_corpus_split


def lattice_energy(img: torch.Tensor, period: int) -> float:
    """Share of the non-DC spectral power of ``img`` (C, H, W) at the aliasing frequencies
    of stride ``period`` (H and W multiples of ``period``)."""
    h, w = img.shape[-2:]
    if h % period or w % period:
        raise ValueError(f"size {h}x{w} is not a multiple of {period}")
    p = torch.fft.fft2(img.double() - img.double().mean((-2, -1), keepdim=True)).abs().pow(2).sum(0)
    total = float(p.sum())
    lat = float(p[:: h // period, :: w // period].sum())
    return lat / total if total > 0 else 0.0


def _lacs(enc, spec: str) -> LACBank:
    if spec == "identity":
        return LACBank.for_encoder(enc)
    return load_lacs(enc, spec.removeprefix("bundled:"))[0]


def _previous(out: Path, res: dict) -> dict[str, dict]:
    """Per size, the variants an earlier run into ``out`` measured on the same photos with
    the same spec (a bundled name counts only while its file is unchanged: the spec of a
    bundled variant includes its sha256), so that adding a variant re-measures only it."""
    if not out.is_file():
        return {}
    prev = json.loads(out.read_text())
    if prev.get("photos") != res["photos"] or prev.get("encoder") != res["encoder"]:
        return {}
    same = {n for n, s in res["variants"].items()
            if prev.get("variants", {}).get(n) == s and prev.get("hashes", {}).get(n) == res["hashes"][n]}
    return {size: {n: r for n, r in per.items() if n in same} for size, per in prev["sizes"].items()}


def _spec_hash(enc, spec: str) -> str:
    """sha256 of the checkpoint a spec names ("identity" for identity LACs)."""
    if spec == "identity":
        return "identity"
    path = resolve_checkpoint(enc.name, spec.removeprefix("bundled:"))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else "identity"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="name=checkpoint | name=bundled:VARIANT | name=identity")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="224,128")
    ap.add_argument("--corpus", default="corpus")
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--split", default="heldout", choices=("heldout", "validation"),
                    help="validation: the corpus's colour validation photos, on which a default "
                         "may be chosen (the training runs' val_l1 uses the same crops)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    enc = load_encoder(args.encoder)
    if args.split == "heldout":
        photos = {**split_photos("heldout"), **load_corpus_split(args.corpus, "heldout")}
    else:
        photos = load_corpus_split(args.corpus, "validation", colour_only=True)
    variants = dict(v.split("=", 1) for v in args.variants)
    last = enc.num_stages - 1
    res: dict = {"encoder": args.encoder, "split": args.split, "photos": list(photos), "variants": variants,
                 "total_stride": enc.total_stride, "sizes": {},
                 "hashes": {n: _spec_hash(enc, s) for n, s in variants.items()}}
    old = _previous(Path(args.out), res)
    for size in (int(s) for s in args.sizes.split(",")):
        x01 = torch.stack([resize_center_crop(p, size) for p in photos.values()])
        x = enc.normalize(x01)
        per: dict[str, dict[str, list[float]]] = {}
        photo_lat = [[lattice_energy(xi, 2), lattice_energy(xi, enc.total_stride)] for xi in x01]
        for name, spec in variants.items():
            if name in old.get(str(size), {}):  # measured before on the same photos and spec
                per[name] = old[str(size)][name]
                logging.info("%d px %s: kept from %s", size, name, args.out)
                continue
            inv = AdjointInverter(enc, _lacs(enc, spec))
            rows: dict[str, list[float]] = {"pearson": [], "ssim_affine": [], "l1": [],
                                            "lattice_2": [], "lattice_total": []}
            with enc.frozen(), torch.no_grad():
                for i in range(x.shape[0]):
                    xi = x[i:i + 1]
                    lin = inv.cascade.linearize(xi, last)
                    w = simplex_measure(lin.acts[last])
                    xh = inv.synthesize(lin, last, {"x": w})[0]["x"]
                    rows["pearson"].append(float(pearson_rgb(xh, xi)[0]))
                    rows["ssim_affine"].append(float(affine_ssim(xh, x01[i:i + 1])[0]))
                    rows["l1"].append(float((xh - xi).abs().mean()))
                    rows["lattice_2"].append(lattice_energy(xh[0], 2))
                    rows["lattice_total"].append(lattice_energy(xh[0], enc.total_stride))
            per[name] = dict(rows)
            per[name]["mean"] = {k: sum(v) / len(v) for k, v in rows.items()}  # type: ignore[assignment]
            per[name]["pearson_ci"] = list(bootstrap_ci(rows["pearson"]))  # type: ignore[assignment]
            logging.info("%d px %s: Pearson %.3f, l1 %.4f, lattice(2) %.4f", size, name,
                         per[name]["mean"]["pearson"], per[name]["mean"]["l1"],  # type: ignore[index]
                         per[name]["mean"]["lattice_2"])  # type: ignore[index]
        per["photo"] = {"lattice_2": [a for a, _ in photo_lat], "lattice_total": [b for _, b in photo_lat]}
        res["sizes"][str(size)] = per
        res["seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(Path(args.out), res)
    print(f"wrote {args.out} in {res['seconds']} s")


if __name__ == "__main__":
    main()
