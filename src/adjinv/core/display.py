"""Tensors → displayable images in [0, 1]: the one display mapping of reconstructions
(docs/method.md §4, display convention), shared by ``Inversion.image`` and the HTML report."""

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


def centred_display(img: torch.Tensor, q: float = 0.01) -> torch.Tensor:
    """The shared display mapping of a reconstruction: each RGB channel centred on its
    spatial mean, then the image's ``q`` … ``1-q`` quantiles stretched to [0, 1]
    ([`robust_minmax()`][robust_minmax]). Structure is shown at any scale, whether or not it resembles
    the photo; an image constant up to rounding is plain grey (0.5).

    Args:
        img: one image (3, H, W) or a batch (B, 3, H, W), in any space (the mapping is
            invariant to a per-channel offset and to a common positive scale).
        q: the quantile clipped at each end.

    Returns:
        The displayable image(s) in [0, 1], shaped like ``img``, each image mapped on its own.
    """
    if img.dim() == 4:
        return torch.stack([centred_display(i, q) for i in img])
    centred = img - img.mean(dim=(-2, -1), keepdim=True)
    if float(centred.abs().max()) <= 1e-5 * float(img.abs().max()):
        return torch.full_like(img, 0.5)  # constant up to rounding: plain grey
    return robust_minmax(centred, q)
