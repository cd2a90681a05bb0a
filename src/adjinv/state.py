"""Temporary module state, always restored (hooks and modes never leak, STYLE.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside; every submodule's previous mode outside, even on error."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield module
    finally:
        for m, t in modes:
            m.training = t


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
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
