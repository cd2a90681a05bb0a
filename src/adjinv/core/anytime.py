"""Anytime synthesis: the channels of largest simplex weight first, with a proven error bound.

Every per-channel inversion ends with ``LAC_pix`` (Eq. 6): per colour channel
``φ_c = γ·n_c + β`` where ``n_c = (u − mean u)·a`` has second moment
``var/(var + ε) ≤ 1`` (an exactly-zero signal gives ``n_c = 0``). So the omitted part of
Eq. 8 splits into a part known without computing anything and a bounded rest:

    Σ_{c∉K} w_c φ_c = (Σ_{c∉K} w_c)·β + γ·Σ_{c∉K} w_c n_c,
    ‖γ·n_c‖ ≤ R = sqrt(P · Σ_rgb γ²)      (P pixels, every c, computed or not).

An anytime synthesis of the channel set ``K`` returns
``x̂_K = Σ_{c∈K} w_c φ_c + (Σ_{c∉K} w_c)·β`` (the omitted channels' exact bias), whose
distance to the full ``x̂`` is at most ``(Σ_{c∉K} |w_c|)·R`` — known before any omitted
channel is computed — and, since ``‖x̂‖ ≥ ‖x̂_K‖ − that``, a relative bound
``‖x̂ − x̂_K‖/‖x̂‖ ≤ abs / (‖x̂_K‖ − abs)`` (``inf`` when the denominator is not positive).
Without the bias term the bound would need ``R² = P·Σ(γ² + β²)`` and the zero mean of
``n_c``, and the error would carry the whole omitted bias. See docs/speed.md,
"Anytime inversion".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import AdjinvError
from .lac import LocalAdjointCorrector

# Relative slack on R for floating-point rounding: the computed second moment of n may
# exceed 1 by a few ulps, and the sums of Eq. 8 are rounded too; 1e-3 is far above both
# in float32 (and bfloat16/float16 pull-backs hand back float32 before LAC_pix).
ROUNDING_SLACK = {torch.float64: 1e-9}
DEFAULT_SLACK = 1e-3


@dataclass
class Preview:
    """A partial reconstruction handed to an anytime ``preview`` callback after each chunk.

    ``x_hat`` (B, 3, H, W): the sum over the channels synthesised so far, largest weight
    first, plus the others' ``LAC_pix`` bias; ``done`` (B,): channels added per image;
    ``bound`` / ``bound_abs`` (B,): the relative / absolute bound on the distance to the
    *full* reconstruction ``x̂_stage`` (all live channels), see [`error_bounds()`][error_bounds].
    """

    stage: int
    x_hat: torch.Tensor
    done: torch.Tensor
    bound_abs: torch.Tensor
    bound: torch.Tensor


PreviewFn = Callable[[Preview], None]


def check_anytime_args(mass: float | None, max_channels: int | None) -> None:
    """Refuse a ``mass`` outside (0, 1] or a ``max_channels`` below 1."""
    bad_mass = mass is not None and (isinstance(mass, bool) or not isinstance(mass, (int, float))
                                     or not 0 < mass <= 1)
    if bad_mass:
        raise AdjinvError(f"mass must be a number in (0, 1] (the simplex weight to "
                          f"synthesise, e.g. 0.9), got {mass!r}")
    bad_k = max_channels is not None and (isinstance(max_channels, bool)
                                          or not isinstance(max_channels, int) or max_channels < 1)
    if bad_k:
        raise AdjinvError(f"max_channels must be a positive int (channels per image), "
                          f"got {max_channels!r}")


def lac_pix_radius(lac_pix: LocalAdjointCorrector, pixels: int,
                   dtype: torch.dtype = torch.float32) -> float:
    """``R = sqrt(P · Σ_rgb γ²)``: a bound on ``‖φ_c − β‖`` for every channel ``c``, with
    the rounding slack of ``dtype`` (the dtype the synthesis runs in)."""
    g = lac_pix.gamma.detach().double()
    r = float((pixels * (g * g).sum()).sqrt())
    return r * (1 + ROUNDING_SLACK.get(dtype, DEFAULT_SLACK))


def add_omitted_bias(x_k: torch.Tensor, omitted: torch.Tensor,
                     lac_pix: LocalAdjointCorrector) -> torch.Tensor:
    """``x_k + (Σ_{c∉K} w_c)·β`` (B, 3, H, W): the omitted channels' exact ``LAC_pix`` bias."""
    beta = lac_pix.beta.detach().to(x_k).view(1, -1, 1, 1)
    return x_k + omitted.to(x_k).view(-1, 1, 1, 1) * beta


def select_channels(w: torch.Tensor, mass: float | None, max_channels: int | None) -> torch.Tensor:
    """Per image, the channels of largest weight ``w`` (B, C) until their cumulative weight
    reaches ``mass``, at most ``max_channels`` of them: a (B, C) bool mask. ``mass=1`` (or
    ``None``) keeps every live channel, whatever the rounding of the cumulative sum."""
    vals, order = w.sort(dim=1, descending=True)
    keep_sorted = vals != 0
    if mass is not None and mass < 1:
        before = vals.cumsum(1) - vals  # weight already taken before each channel
        keep_sorted &= before < mass
    if max_channels is not None:
        keep_sorted[:, max_channels:] = False
    return torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)


def omitted_weight(w: torch.Tensor, kept: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """``Σ_{c∉K} |w_c|`` (or ``Σ_{c∉K} w_c`` if ``signed``) per image (B,), summed
    directly (not as ``1 − Σ_K``)."""
    return torch.where(kept, torch.zeros_like(w), w if signed else w.abs()).sum(1)


def error_bounds(x_k: torch.Tensor, omitted: torch.Tensor,
                 radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(absolute, relative)`` bounds (B,) on ``‖x̂ − x̂_K‖`` and ``‖x̂ − x̂_K‖/‖x̂‖`` from the
    partial sum ``x_k`` (B, 3, H, W) and the omitted weight (B,)."""
    absolute = omitted.double() * radius
    norm_k = x_k.double().flatten(1).norm(dim=1)
    denom = norm_k - absolute
    rel = torch.where(absolute == 0, torch.zeros_like(absolute),
                      torch.where(denom > 0, absolute / denom.clamp_min(1e-300),
                                  torch.full_like(absolute, float("inf"))))
    return absolute, rel
