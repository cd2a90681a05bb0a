"""Support containment beyond ReLU (Theorem 1, Eq. 10; Remark 3; docs/method.md §5).

Theorem 1 puts the support of ``v_{l,c} = ∇_x ½‖A_{l,c}‖²`` (Eq. 4) inside the pixels
that reach an *active* position of channel ``c``. For ReLU, "active" means non-zero and
most positions are exactly zero. GELU and SiLU outputs are non-zero almost everywhere
(small negative values), so with "non-zero" the statement becomes vacuous; Remark 3
says it holds *approximately* when those negative values are small. [choice] We take
the active positions to be those with ``A_{l,c} > 0`` (for ReLU the same set) and
measure the share of ``‖v_{l,c}‖²`` that falls outside their receptive field.

The receptive field of a set ``M`` of positions is found by differentiation, without
knowing the architecture: the pixels where ``∇_x Σ_{p∈M} r_p A_{l,c}(p)`` is non-zero,
with random positive ``r_p`` so that exact cancellations have probability zero. GELU and
SiLU have non-zero derivatives almost everywhere, so this is the structural reach; for
ReLU networks it is the reach through the image's own active units, which is the set
Theorem 1 bounds the support by.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import vjp, vmap

from ...errors import AdjinvError
from ...records import Record

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SupportLeak(Record):
    """Support containment of ``v_{l,c}`` for some channels of one image.

    ``energy_outside``: mean over channels of the share of ``‖v_{l,c}‖²`` outside the
    receptive field of the channel's positive positions; ``energy_outside_max``: the
    largest channel's share; ``pixels_outside``: mean share of the image's pixels outside
    that field (0 makes the test vacuous); ``negative_share``: mean share of the channel's
    activation energy ``Σ A²`` carried by negative values; ``field_covered``: mean share of
    the field's pixels where ``v_{l,c} ≠ 0`` (Remark 2: the inclusion is tight, i.e. 1,
    except for measure-zero cancellations); ``channels``: how many were measured
    (channels with no positive position are skipped)."""

    energy_outside: float
    energy_outside_max: float
    pixels_outside: float
    negative_share: float
    channels: int
    field_covered: float = float("nan")


def support_leak(features: FeatureFn, x: torch.Tensor, channels: torch.Tensor | list[int], *,
                 seed: int = 0) -> SupportLeak:
    """Remark 3 measured on one image.

    Args:
        features: ``x ↦ A_l`` (1, C, h, w) — the encoder cut at stage ``l``, in eval mode.
        x: one normalised image (1, 3, H, W).
        channels: the channels ``c`` to measure.
        seed: for the random positive weights ``r_p`` of the receptive-field probe.

    Returns:
        A [`SupportLeak`][SupportLeak].
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise AdjinvError(f"support_leak takes one image (1, 3, H, W), got {tuple(x.shape)}")
    idx = torch.as_tensor(channels, dtype=torch.long)
    a, pull = vjp(features, x)[:2]
    a = a.detach()
    gen = torch.Generator().manual_seed(seed)
    r = 0.5 + torch.rand(a.shape[1:], generator=gen, dtype=a.dtype)  # (C, h, w), positive
    onehot = torch.zeros(idx.numel(), a.shape[1], 1, 1, dtype=a.dtype)
    onehot[torch.arange(idx.numel()), idx] = 1
    seeds = (onehot * a).unsqueeze(1)  # S_{l,c} = E_c ⊙ A_l: (K, 1, C, h, w)
    probes = (onehot * (a > 0).to(a.dtype) * r).unsqueeze(1)
    (v,) = vmap(pull)(seeds)  # (K, 1, 3, H, W)
    (g,) = vmap(pull)(probes)
    e = v.detach().double().pow(2).sum(2)[:, 0]  # (K, H, W)
    field = g.detach().abs().sum(2)[:, 0] > 0
    ac = a[0, idx].double()
    pos = (ac > 0).flatten(1).any(1)
    keep = pos & (e.flatten(1).sum(1) > 0)
    if not bool(keep.any()):
        raise AdjinvError("no measured channel has a positive position and a non-zero pull-back")
    tot = e.flatten(1).sum(1)
    out = (e * (~field)).flatten(1).sum(1) / tot.clamp_min(1e-300)
    neg = (ac.clamp(max=0).pow(2).flatten(1).sum(1)
           / ac.pow(2).flatten(1).sum(1).clamp_min(1e-300))
    pix_out = (~field).flatten(1).double().mean(1)
    covered = ((e > 0) & field).flatten(1).sum(1).double() / field.flatten(1).sum(1).clamp_min(1)
    return SupportLeak(energy_outside=float(out[keep].mean()),
                       energy_outside_max=float(out[keep].max()),
                       pixels_outside=float(pix_out[keep].mean()),
                       negative_share=float(neg[keep].mean()), channels=int(keep.sum()),
                       field_covered=float(covered[keep].mean()))
