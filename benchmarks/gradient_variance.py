"""Variance (and bias) of the channel-sampled LAC gradient against the exact step.

Compares, on EfficientNet-Lite0 and two training photos: the importance-sampled estimator
of ``adjinv.lacs.training.sample_weights`` (channels drawn in proportion to their simplex
weight, reweighted by counts: unbiased) with the previous scheme (a uniform random
subset, weights renormalised: biased) and, with ``--sampled-xhat``, the one-pass step of
the corpus recipe (``xhat="sampled"``: x̂ itself estimated from the same stratified
sample, so no pass covers every live channel; the gradient is then that of
``ℓ1(Σ ŵ φ, x)``, biased for Eq. 9 through the sign of the residual). Writes JSON.

    python benchmarks/gradient_variance.py --out benchmarks/results/gradient_variance.json
    python benchmarks/gradient_variance.py --size 224 --fraction 0.15 --top 0.5 --sampled-xhat \
        --schemes importance,sampled_xhat --out benchmarks/results/gradient_variance_224.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from adjinv import load_encoder
from adjinv.core.inverter import AdjointInverter
from adjinv.core.simplex import simplex_measure
from adjinv.fileio import atomic_write_json
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import split_photos
from adjinv.lacs.bundled import load_lacs
from adjinv.lacs.training import _backward, lac_step


def grads(lacs) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in lacs.parameters()])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--top", type=float, default=0.0, help="stratified share (sample_weights)")
    ap.add_argument("--schemes", default="importance,uniform_renormalised",
                    help="comma-separated: importance, uniform_renormalised, sampled_xhat")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = load_encoder("efficientnet_lite0")
    photos = split_photos("train")
    x = enc.normalize(torch.stack([resize_center_crop(photos[n], args.size) for n in ("chelsea", "brick")]))
    lacs = load_lacs(enc)[0]  # the bundled (paper-objective) LACs: a trained operating point
    inv = AdjointInverter(enc, lacs)
    res: dict = {"size": args.size, "fraction": args.fraction, "draws": args.draws, "top": args.top,
                 "threads": torch.get_num_threads()}
    with enc.frozen():
        t = time.perf_counter()
        lacs.zero_grad(set_to_none=True)
        lac_step(inv, x)
        exact = grads(lacs)
        res["exact_step_s"] = time.perf_counter() - t
        norm2 = float(exact.pow(2).sum())
        gen = torch.Generator().manual_seed(0)
        for scheme in args.schemes.split(","):
            est, t = [], time.perf_counter()
            for _ in range(args.draws):
                lacs.zero_grad(set_to_none=True)
                if scheme == "importance":
                    lac_step(inv, x, channel_fraction=args.fraction, gen=gen, top=args.top)
                elif scheme == "sampled_xhat":
                    lac_step(inv, x, channel_fraction=args.fraction, gen=gen, top=args.top,
                             xhat="sampled")
                elif scheme == "uniform_renormalised":  # the previous, biased scheme
                    last = enc.num_stages - 1
                    lin = inv.cascade.linearize(x, last)
                    a = lin.acts[last].detach()
                    w = simplex_measure(a)
                    with torch.no_grad():
                        xh = inv.synthesize(lin, last, {"x_hat": w})[0]["x_hat"]
                    cot = torch.sign(xh - x) / x.numel()
                    keep = (torch.rand(w.shape[1], generator=gen) < args.fraction).to(w)
                    ws = w * keep[None]
                    ws = ws / ws.sum(1, keepdim=True).clamp_min(1e-30)
                    _backward(inv, lin, last, [(a, ws, cot)])
                else:
                    ap.error(f"unknown scheme {scheme!r}")
                est.append(grads(lacs))
            e = torch.stack(est)
            res[scheme] = {
                "step_s": (time.perf_counter() - t) / args.draws,
                "relative_mse_one_draw": float((e - exact).pow(2).sum(1).mean()) / norm2,
                "relative_variance": float((e - e.mean(0)).pow(2).sum(1).mean()) / norm2,
                "relative_sq_bias_of_mean": float((e.mean(0) - exact).pow(2).sum()) / norm2,
                "cosine_to_exact_mean": float(torch.nn.functional.cosine_similarity(e, exact[None]).mean()),
            }
            print(json.dumps({scheme: res[scheme]}), flush=True)
    atomic_write_json(args.out, res)


if __name__ == "__main__":
    main()
