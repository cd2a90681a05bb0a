"""One LAC training step (``lac_step``, Eq. 9, docs/method.md §4) as before issue 27 and
as now, interleaved in one process, with the gradients compared (they must agree to
float32 rounding).

"before": 1×1 transposes through ``conv_transpose2d``, in-place updates while autograd
records, and two passes over the gradient's channels (no-grad for x̂, then recorded);
"kernels": 1×1 transposes as matrix products and out-of-place updates under autograd
(``adjinv.core.adjoint.MATMUL_1X1`` / ``IN_PLACE_UNDER_AUTOGRAD``), still two passes;
"one_pass": the same kernels, and the gradient's channels recorded during the one pass that
gives x̂ (``adjinv.lacs.training._one_pass``); "after": also each stage transpose
back-propagated through the stage's Jacobian instead of its recorded ops
(``adjinv.core.cascade.EXPLICIT_BACKWARD``, ``StageAdjoint.jacobian``).

    python benchmarks/training_step_ab.py --threads 1 --out benchmarks/results/training_step_ab.json
    # the corpus recipe (make lac-default): 224 px, sampled x̂, 15 % of the channels, top half
    python benchmarks/training_step_ab.py --threads 1 --size 224 --fractions 0.15 \
        --xhat sampled --top 0.5 --out benchmarks/results/training_step_ab_224.json
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
from adjinv.core import adjoint, cascade
from adjinv.core.inverter import AdjointInverter
from adjinv.fileio import atomic_write_json
from adjinv.images import resize_center_crop, sample_images
from adjinv.lacs import training
from adjinv.lacs.bundled import load_lacs
from adjinv.lacs.training import lac_step

CONFIGS = {"before": {"MATMUL_1X1": False, "IN_PLACE_UNDER_AUTOGRAD": True, "one_pass": False,
                      "explicit_backward": False},
           "kernels": {"MATMUL_1X1": True, "IN_PLACE_UNDER_AUTOGRAD": False, "one_pass": False,
                       "explicit_backward": False},
           "one_pass": {"MATMUL_1X1": True, "IN_PLACE_UNDER_AUTOGRAD": False, "one_pass": True,
                        "explicit_backward": False},
           "after": {"MATMUL_1X1": True, "IN_PLACE_UNDER_AUTOGRAD": False, "one_pass": True,
                     "explicit_backward": True}}
KERNEL_FLAGS = ("MATMUL_1X1", "IN_PLACE_UNDER_AUTOGRAD")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--xhat", choices=training.XHAT_MODES, default="exact")
    ap.add_argument("--top", type=float, default=0.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = load_encoder("efficientnet_lite0")
    x = enc.normalize(resize_center_crop(sample_images()["chelsea"], args.size))[None]
    inv = AdjointInverter(enc, load_lacs(enc, None).lacs)
    for p in inv.lacs.parameters():
        p.requires_grad_(True)
    res: dict = {"size": args.size, "threads": torch.get_num_threads(), "xhat": args.xhat,
                 "top": args.top, "load_average_start": os.getloadavg(), "rows": []}
    saved = {k: getattr(adjoint, k) for k in KERNEL_FLAGS}
    budget = training.graph_budget
    try:
        for frac in args.fractions:
            times: dict[str, list[float]] = {k: [] for k in CONFIGS}
            grads: dict[str, torch.Tensor] = {}
            with enc.frozen():
                for _ in range(args.repeats):
                    for name, cfg in CONFIGS.items():
                        for k in KERNEL_FLAGS:
                            setattr(adjoint, k, cfg[k])
                        training.graph_budget = budget if cfg["one_pass"] else (lambda d: 0)
                        cascade.EXPLICIT_BACKWARD = cfg["explicit_backward"]
                        for p in inv.lacs.parameters():
                            p.grad = None
                        t = time.perf_counter()
                        lac_step(inv, x, channel_fraction=frac, gen=torch.Generator().manual_seed(0),
                                 xhat=args.xhat, top=args.top)
                        times[name].append(time.perf_counter() - t)
                        grads[name] = torch.cat([p.grad.flatten() for p in inv.lacs.parameters()])
            med = {k: statistics.median(v) for k, v in times.items()}
            diff = float((grads["after"] - grads["before"]).norm() / grads["before"].norm())
            row = {"channel_fraction": frac, "before_s": med["before"],
                   "kernels_s": med["kernels"], "one_pass_s": med["one_pass"],
                   "after_s": med["after"], "speedup": med["before"] / med["after"],
                   "one_pass_speedup": med["kernels"] / med["one_pass"],
                   "explicit_backward_speedup": med["one_pass"] / med["after"],
                   "gradient_relative_difference": diff, "times": times}
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        for k, v in saved.items():
            setattr(adjoint, k, v)
        training.graph_budget = budget
        cascade.EXPLICIT_BACKWARD = True
    res["load_average_end"] = os.getloadavg()
    if args.out:
        atomic_write_json(Path(args.out), res)


if __name__ == "__main__":
    main()
