"""Check the Triton kernels against the PyTorch path on a CUDA device (compiled, not
interpreted) before timing them: bit-exact masks with residual sums, the LAC within
``LAC_RTOL``, and every ResNet-50 stage transpose at 224 px bit-identical with the kernels
on. Exits non-zero on any mismatch. Used by benchmarks/triton_gpu.sh.

    python benchmarks/triton_check.py
    TRITON_INTERPRET=1 python benchmarks/triton_check.py --device cpu --size 64 --precision float32
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from adjinv.core import triton_kernels as tk
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LocalAdjointCorrector
from adjinv.encoders import load_encoder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--precision", nargs="+", default=["tf32", "fp16"])
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    torch.backends.cudnn.deterministic = True  # equal inputs, equal convolution results
    g0 = torch.Generator(device=dev).manual_seed(0)
    bad = 0
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        for dtype in (torch.float32, torch.float16):
            mask = torch.rand(2, 64, 28, 28, device=dev, generator=g0) > 0.5
            g = torch.randn(16, 64, 28, 28, device=dev, generator=g0).to(dtype)
            g = g.contiguous(memory_format=fmt)
            acc = torch.randn_like(g).contiguous(memory_format=fmt)
            ref = acc + g * mask.to(dtype).repeat(8, 1, 1, 1)
            out = tk.mask_add(g, tk.pack_mask(mask.contiguous(memory_format=fmt), cl), mask.shape,
                              cl, acc, None)
            ok = out is not None and torch.equal(out, ref)
            bad += not ok
            print(f"mask_add channels_last={cl} {dtype}: {'exact' if ok else 'MISMATCH'}")
        lac = LocalAdjointCorrector(64).to(dev)
        with torch.no_grad():
            lac.gamma.normal_()
            lac.beta.normal_()
            u = torch.randn(16, 64, 56, 56, device=dev, generator=g0).contiguous(memory_format=fmt)
            ref, out = lac(u), tk.lac_apply(lac, u)
        err = float((out - ref).abs().max() / ref.abs().max()) if out is not None else float("inf")
        bad += err > tk.LAC_RTOL[torch.float32]
        print(f"lac channels_last={cl}: max rel diff {err:.2e} "
              f"(tolerance {tk.LAC_RTOL[torch.float32]:g})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        enc = load_encoder("resnet50", random_init=True).to(dev)
    x = torch.randn(1, 3, args.size, args.size, device=dev, generator=g0)
    for precision in args.precision:
        ref = AdjointInverter(enc, precision=precision).cascade
        tri = AdjointInverter(enc, precision=precision, kernels="triton").cascade
        with torch.no_grad(), enc.frozen():
            last = enc.num_stages - 1
            lin, lin_t = ref.linearize(x, last), tri.linearize(x, last)
            u = torch.randn(8, *lin.acts[last].shape, device=dev, generator=g0)
            for k in range(last, -1, -1):
                with ref.precision_context():
                    a, b = lin.pullbacks[k](u), lin_t.pullbacks[k](u)
                ok = torch.equal(a, b)
                bad += not ok
                print(f"resnet50 {precision} stage {k} transpose: {'exact' if ok else 'MISMATCH'}")
                u = a
    print("all checks passed" if not bad else f"{bad} check(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
