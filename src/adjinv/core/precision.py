"""Arithmetic precision of the cascade's pull-back (the TF32/fp16/bf16 policy).

- ``"float32"`` (default): the cotangents keep the input's dtype and TF32 is
  switched **off** for convolutions and matrix products inside the cascade, even
  though PyTorch lets cuDNN use TF32 by default: the result is IEEE float32 (or
  float64 for a float64 input).
- ``"tf32"``: convolutions and matrix products may use TF32 tensor cores (CUDA
  on Ampere or newer; identical to ``"float32"`` elsewhere). Its error on ``x̂``
  against the float32 reference is measured in ``benchmarks/speed.py``.
- ``"fp16"``: the explicit stage transposes keep cotangents in float16 (half the
  memory traffic) and run convolutions on float16 tensor cores with float32
  accumulation. Each stage rescales every cotangent to a maximum of 1 on entry
  (exact: the pull-back is linear; the scale is put back on exit), so float16's
  range holds; each weight is split into two float16 terms ``W_hi + W_lo``
  (``W_hi = fp16(W)``; two convolutions, the small one added into the large one), so
  the weights carry ~21 bits and mainly the cotangents are rounded (11 bits, as TF32
  rounds them). Non-finite results raise an error naming the fix. Meant for CUDA: on
  the CPU float16 convolutions are slow.
- ``"bf16"``: the explicit stage transposes compute in bfloat16 (LACs and the
  synthesis stay float32). Rounding is amplified by the LAC normalisation
  (docs/method.md §14 saw 20–34 % relative error on ``x̂`` with autocast): an option with a
  measured error, never a default.

The forward linearisation always runs in the input's precision with TF32 off,
so the ReLU masks are the float32 ones whatever the pull-back precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

PRECISIONS = ("float32", "tf32", "fp16", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if known, else a clear error naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def compute_dtype(precision: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype the explicit stage transposes compute in, for inputs of ``dtype``."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, dtype)


@contextmanager
def fp32_mode(precision: str) -> Iterator[None]:
    """Allow TF32 for cuDNN convolutions and CUDA matmuls only for ``"tf32"``, and
    reduced-precision (float16) reductions in matmuls never; restore the previous
    global settings on exit."""
    mode = "tf32" if precision == "tf32" else "ieee"
    conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul  # type: ignore[attr-defined]
    saved = (conv.fp32_precision, mm.fp32_precision, mm.allow_fp16_reduced_precision_reduction)
    conv.fp32_precision = mm.fp32_precision = mode
    mm.allow_fp16_reduced_precision_reduction = False
    try:
        yield
    finally:
        conv.fp32_precision, mm.fp32_precision, mm.allow_fp16_reduced_precision_reduction = saved
