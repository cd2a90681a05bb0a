"""Temporary module state, always restored (hooks and modes never leak)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (else buffer), CPU if it has neither:
    adjinv never assumes a global device, it follows the model."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def to_module(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``x`` on ``module``'s device and, when ``x`` is floating point, in the dtype of
    ``module``'s first floating-point parameter (float32 if it has none)."""
    dt = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    return x.to(device=module_device(module), dtype=dt if x.is_floating_point() else x.dtype)


M = TypeVar("M", bound=nn.Module)


@contextmanager
def eval_mode(module: M) -> Iterator[M]:
    """``module`` in eval mode inside; every submodule's previous mode outside, even on error."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield module
    finally:
        for m, t in modes:
            m.training = t


@contextmanager
def frozen(module: M) -> Iterator[M]:
    """Eval mode and ``requires_grad=False`` inside; the previous modes and flags outside."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        with eval_mode(module):
            for p, _ in flags:
                p.requires_grad_(False)
            yield module
    finally:
        for p, r in flags:
            p.requires_grad_(r)
