"""Cost of the per-stage self-check (``AdjointCascade(verify=True)``) in % of one full
inversion (every live channel of the deepest stage, x̂_L) of the embedded
EfficientNet-Lite0, on the bundled sample image.

The check's own time is the difference of ``linearize`` with and without it (median of
``--repeats``, interleaved); the inversion is timed both ways too.

    python benchmarks/verify_cost.py --sizes 224 128 --out benchmarks/results/verify_cost_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(size: int, repeats: int) -> dict:
    from adjinv import AdjointInverter, load_encoder
    from adjinv.images import resize_center_crop, sample_image

    enc = load_encoder("efficientnet_lite0")
    x = enc.normalize(resize_center_crop(sample_image("chelsea"), size))[None]
    on, off = AdjointInverter(enc, verify=True), AdjointInverter(enc, verify=False)
    lin_on, lin_off, inv_on, inv_off = [], [], [], []
    with enc.frozen(), torch.no_grad():
        lin = on.cascade.linearize(x)  # warm-up (tracing caches)
        off.cascade.linearize(x)
        for _ in range(repeats):
            lin_on.append(timed(lambda: on.cascade.linearize(x)))
            lin_off.append(timed(lambda: off.cascade.linearize(x)))
    for _ in range(max(1, repeats // 2)):
        inv_on.append(timed(lambda: on.invert(x, stages=[-1])))
        inv_off.append(timed(lambda: off.invert(x, stages=[-1])))
    check = max(0.0, statistics.median(lin_on) - statistics.median(lin_off))
    inv = statistics.median(inv_off)
    return {"size": size, "stages": enc.num_stages, "explicit": lin.explicit,
            "check_errors": lin.check_errors,
            "linearize_seconds_verify": statistics.median(lin_on),
            "linearize_seconds_no_verify": statistics.median(lin_off),
            "check_seconds": check,
            "invert_seconds_verify": statistics.median(inv_on),
            "invert_seconds_no_verify": inv,
            "check_percent_of_inversion": 100.0 * check / inv,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    for size in args.sizes:
        row = measure(size, args.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        from adjinv.fileio import atomic_write_json

        atomic_write_json(args.out, {"device": "cpu", "encoder": "efficientnet_lite0 (embedded weights)",
                                     "image": "chelsea", "rows": rows})


if __name__ == "__main__":
    main()
