"""Where the GPU time of one ResNet-50 cascade chunk goes (profiler), and cuDNN autotuning's effect.

    python benchmarks/gpu_profile.py   # on a CUDA machine
"""

from __future__ import annotations

import time
import warnings

import torch

from adjinv import AdjointInverter, load_encoder
from adjinv.core.cascade import channel_seeds
from adjinv.data import resize_center_crop, sample_image


def timed(fn, n: int = 2) -> float:
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> None:
    warnings.simplefilter("ignore")
    enc = load_encoder("resnet50", random_init=True).cuda()
    x = enc.normalize(resize_center_crop(sample_image("chelsea"), 224))[None].cuda()
    inv = AdjointInverter(enc, precision="tf32")
    last = enc.num_stages - 1
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        t = timed(lambda: inv.invert(x, stages=[last]))
        print(f"cudnn.benchmark={bench}: full tf32 inversion {t:.3f} s", flush=True)
    torch.backends.cudnn.benchmark = False
    with enc.frozen(), torch.no_grad():
        lin = inv.cascade.linearize(x, last)
        seeds = channel_seeds(lin.acts[last], torch.arange(512, device=x.device))
        inv.cascade.pull_back(lin, last, seeds)
        torch.cuda.synchronize()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            inv.cascade.pull_back(lin, last, seeds)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=60))


if __name__ == "__main__":
    main()
