"""Tensors → displayable images in [0, 1]."""

from __future__ import annotations

import torch


def robust_minmax(img: torch.Tensor, q: float = 0.01) -> torch.Tensor:
    """Map a (3, H, W) signal of arbitrary scale to [0, 1] by its ``q`` and ``1-q``
    quantiles over all values (used for dimensionless bases φ and for ``x̂^(k)``,
    whose scale is the logit's, not the image's)."""
    flat = img.detach().float().flatten()
    if flat.numel() > 1_000_000:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    lo, hi = torch.quantile(flat, q), torch.quantile(flat, 1 - q)
    if hi <= lo:
        return torch.full_like(img, 0.5)
    return ((img - lo) / (hi - lo)).clamp(0, 1)
