"""Guided Backprop (Springenberg et al. 2015) and DeconvNet (Zeiler & Fergus 2014): the
mask-using comparators of the vanilla gradient ``J_{A_L}ᵀ A_L``.

Both pull the same cotangent ``A_L`` back to the pixels and differ from the vanilla
gradient only in the backward rule of every rectifier ``y = clamp(x, 0, t)`` (ReLU:
``t = ∞``; ReLU6: ``t = 6``):

- vanilla: ``g_in = g · 1[0 < x < t]`` (the forward mask);
- Guided Backprop: ``g_in = g · 1[0 < x < t] · 1[g > 0]``;
- DeconvNet: ``g_in = max(g, 0)`` (the forward mask is not used).

The rule is swapped in for the duration of one call by a ``TorchFunctionMode`` that
routes ``relu``, ``relu6`` and ``hardtanh(·, 0, t)`` (what ``nn.ReLU``/``nn.ReLU6`` and
functional code call) through an ``autograd.Function`` with the modified backward;
the model itself is never edited, and leaving the mode restores the ordinary rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError

RULES = ("guided", "deconvnet")


class _Rectify(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, top: float, rule: str) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.top, ctx.rule = top, rule
        return x.clamp(0, top) if math.isfinite(top) else x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return g.clamp_min(0), None, None
        mask = (x > 0) & (x < ctx.top)
        return g * (mask & (g > 0)).to(g.dtype), None, None


class _RuleMode(TorchFunctionMode):
    """Routes the rectifiers through [`_Rectify`][_Rectify] while active."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule
        self.hits = 0

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        top = self._top(func, args, kwargs)
        if top is None:
            return func(*args, **kwargs)
        if kwargs.get("inplace") or (args[1:2] == (True,) and func in (F.relu, F.relu6)):
            raise AdjinvError(f"{self.rule}: in-place rectifiers are not supported; build the "
                              "model with inplace=False")
        self.hits += 1
        return _Rectify.apply(args[0], top, self.rule)

    @staticmethod
    def _top(func: Callable, args: tuple, kwargs: dict) -> float | None:
        if func in (F.relu, torch.relu, torch.Tensor.relu):
            return math.inf
        if func is F.relu6:
            return 6.0
        if func is F.hardtanh:
            lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            return float(hi) if lo == 0 else None
        return None


@contextmanager
def backward_rule(rule: str) -> Iterator[_RuleMode]:
    """Within the block, every ReLU/ReLU6 back-propagates by ``rule`` (one of
    [`RULES`][RULES]); the ordinary rule is back on exit, even after an error."""
    if rule not in RULES:
        raise AdjinvError(f"unknown backward rule {rule!r}; choose one of {', '.join(RULES)}")
    mode = _RuleMode(rule)
    with mode:
        yield mode


def modified_gradient(encoder: StagedEncoder, x: torch.Tensor, rule: str,
                      stage: int = -1) -> torch.Tensor:
    """``J_{A_stage}ᵀ A_stage`` of the normalised batch ``x`` (B, 3, H, W) with the
    rectifiers' backward rule replaced by ``rule`` (``"guided"`` or ``"deconvnet"``):
    the raw Guided Backprop / DeconvNet image (B, 3, H, W) in the encoder's input space.
    Raises if the encoder has no rectifier the rule could act on."""
    n = encoder.num_stages
    s = stage + n if stage < 0 else stage
    with encoder.frozen():
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad(), backward_rule(rule) as mode:
            a = encoder.forward_stages(xg, s)[s]
            (g,) = torch.autograd.grad(a, xg, a.detach())
        if mode.hits == 0:
            raise AdjinvError(f"{rule}: the encoder {encoder.name!r} has no ReLU/ReLU6 for the "
                              "rule to act on, so it would equal the vanilla gradient")
    return g.detach()
