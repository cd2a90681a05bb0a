"""One LAC training step (``lac_step``, Eq. 9, docs/method.md §4) with the explicit
transposes as before issue 27 and as now, interleaved in one process, with the
gradients of the two compared (they must agree to float32 rounding).

"before": 1×1 transposes through ``conv_transpose2d`` and in-place updates while autograd
records; "after": 1×1 transposes as matrix products and out-of-place updates under
autograd (``adjinv.core.adjoint.MATMUL_1X1`` / ``IN_PLACE_UNDER_AUTOGRAD``).

    python benchmarks/training_step_ab.py --threads 1 --out benchmarks/results/training_step_ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from adjinv import load_encoder
from adjinv.core import adjoint
from adjinv.core.inverter import AdjointInverter
from adjinv.fileio import atomic_write_json
from adjinv.images import resize_center_crop, sample_images
from adjinv.lacs.bundled import load_lacs
from adjinv.lacs.training import lac_step

CONFIGS = {"before": {"MATMUL_1X1": False, "IN_PLACE_UNDER_AUTOGRAD": True},
           "after": {"MATMUL_1X1": True, "IN_PLACE_UNDER_AUTOGRAD": False}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = load_encoder("efficientnet_lite0")
    x = enc.normalize(resize_center_crop(sample_images()["chelsea"], args.size))[None]
    inv = AdjointInverter(enc, load_lacs(enc, None).lacs)
    for p in inv.lacs.parameters():
        p.requires_grad_(True)
    res: dict = {"size": args.size, "threads": torch.get_num_threads(),
                 "load_average_start": os.getloadavg(), "rows": []}
    saved = {k: getattr(adjoint, k) for k in CONFIGS["after"]}
    try:
        for frac in args.fractions:
            times: dict[str, list[float]] = {k: [] for k in CONFIGS}
            grads: dict[str, torch.Tensor] = {}
            with enc.frozen():
                for _ in range(args.repeats):
                    for name, cfg in CONFIGS.items():
                        for k, v in cfg.items():
                            setattr(adjoint, k, v)
                        for p in inv.lacs.parameters():
                            p.grad = None
                        t = time.perf_counter()
                        lac_step(inv, x, channel_fraction=frac, gen=torch.Generator().manual_seed(0))
                        times[name].append(time.perf_counter() - t)
                        grads[name] = torch.cat([p.grad.flatten() for p in inv.lacs.parameters()])
            before, after = (statistics.median(times[k]) for k in ("before", "after"))
            diff = float((grads["after"] - grads["before"]).norm() / grads["before"].norm())
            row = {"channel_fraction": frac, "before_s": before, "after_s": after,
                   "speedup": before / after, "gradient_relative_difference": diff,
                   "times": times}
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        for k, v in saved.items():
            setattr(adjoint, k, v)
    res["load_average_end"] = os.getloadavg()
    if args.out:
        atomic_write_json(Path(args.out), res)


if __name__ == "__main__":
    main()
