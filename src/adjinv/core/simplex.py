"""Forward path: the layer-wise simplex measure (Eq. 2, docs/method.md §1)."""

from __future__ import annotations

import torch

from ..errors import AdjinvError


def simplex_measure(a: torch.Tensor) -> torch.Tensor:
    """``w_{l,c} = μ_{l,c} / Σ_c' μ_{l,c'}`` with ``μ_{l,c} = mean_{h,w} |A_{l,c}|`` (Eq. 2).

    ``a`` is (B, C, h, w); returns (B, C) rows that sum to one exactly up to
    rounding. An all-zero feature map has no measure and raises.
    """
    if a.dim() != 4:
        raise AdjinvError(f"simplex_measure expects (B, C, h, w), got shape {tuple(a.shape)}")
    mu = a.abs().mean(dim=(-2, -1))
    total = mu.sum(dim=1, keepdim=True)
    dead = (total == 0).flatten().nonzero().flatten().tolist()
    if dead:
        raise AdjinvError(
            f"the feature map is all zero for image(s) {dead} at this stage, so the simplex "
            "measure (Eq. 2) is undefined; the encoder does not respond to this input — "
            "check that the image is a normalised natural image"
        )
    return mu / total
