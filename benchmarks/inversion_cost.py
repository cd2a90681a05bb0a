"""Wall time and peak memory of one full inversion (every live channel of the
deepest stage, x̂_L) per encoder, each in a fresh subprocess so that peak RSS
belongs to that run alone.

    python benchmarks/inversion_cost.py --encoders efficientnet_lite0 resnet50 --size 224
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from adjinv import load_encoder, AdjointInverter
from adjinv.images import sample_image, resize_center_crop
name, size = sys.argv[1], int(sys.argv[2])
enc = load_encoder(name, random_init=(name != "efficientnet_lite0"))
x = enc.normalize(resize_center_crop(sample_image("chelsea"), size))[None]
inv = AdjointInverter(enc)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
res = inv.invert(x, stages=[-1])
dt = time.perf_counter() - t
L = enc.num_stages - 1
print(json.dumps({"encoder": name, "size": size, "seconds": dt,
                  "live_channels": int((res.weights[L] > 0).sum()),
                  "channels": enc.infos[L].channels,
                  "rss_before_mb": base / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "threads": torch.get_num_threads(),
                  "weights": "pretrained" if name == "efficientnet_lite0" else "random init"}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", nargs="+", default=["efficientnet_lite0", "resnet50"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.encoders:
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", CHILD, name, str(args.size)],
                           capture_output=True, text=True, check=True)
        row = json.loads(p.stdout.strip().splitlines()[-1])
        row["process_seconds"] = time.perf_counter() - t
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        from adjinv.fileio import atomic_write_json

        atomic_write_json(args.out, {"device": "cpu", "rows": rows})


if __name__ == "__main__":
    main()
