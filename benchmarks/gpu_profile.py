"""Where the GPU time of one ResNet-50 cascade chunk goes (PyTorch profiler, CUDA kernels).

    python benchmarks/gpu_profile.py --precision fp16 tf32   # on a CUDA machine
"""

from __future__ import annotations

import argparse
import warnings

import torch

from adjinv import AdjointInverter, load_encoder
from adjinv.core.cascade import channel_seeds
from adjinv.images import resize_center_crop, sample_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", nargs="+", default=["tf32"])
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--rows", type=int, default=20)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    enc = load_encoder("resnet50", random_init=True).cuda()
    x = enc.normalize(resize_center_crop(sample_image("chelsea"), 224))[None].cuda()
    last = enc.num_stages - 1
    for precision in args.precision:
        inv = AdjointInverter(enc, precision=precision)
        with enc.frozen(), torch.no_grad():
            lin = inv.cascade.linearize(x, last)
            seeds = channel_seeds(lin.acts[last], torch.arange(args.chunk, device=x.device))
            inv.cascade.pull_back(lin, last, seeds)
            torch.cuda.synchronize()
            acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with torch.profiler.profile(activities=acts) as prof:
                inv.cascade.pull_back(lin, last, seeds)
                torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        total = sum(e.self_device_time_total for e in events)
        print(f"\n{precision}: one {args.chunk}-channel chunk, {total / 1e3:.1f} ms of CUDA kernels")
        for e in sorted(events, key=lambda e: -e.self_device_time_total)[: args.rows]:
            print(f"  {e.self_device_time_total / 1e3:8.2f} ms {e.count:5d}x  {e.key[:110]}")
        ops = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CPU
               and e.key.startswith("aten::")]
        print("  operators (CUDA time of their kernels):")
        for e in sorted(ops, key=lambda e: -e.device_time_total)[: args.rows // 2]:
            print(f"  {e.device_time_total / 1e3:8.2f} ms {e.count:5d}x  {e.key}")


if __name__ == "__main__":
    main()
