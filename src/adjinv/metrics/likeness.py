"""Likeness scores that no pixel mapping can win: per-RGB Pearson r, the per-image
least-squares affine display mapping (and SSIM/PSNR after it), weight-free perceptual
metrics (GMSD, HaarPSI from ``piq``), re-encoding agreement under an independent
network, and a percentile bootstrap over photos.

All images are (B, 3, H, W) in [0, 1] pixel units unless stated otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..encoders.staged import StagedEncoder
from ..state import to_module
from .reconstruction import psnr, ssim


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"need two (B, C, H, W) tensors of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")


def pearson_rgb(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r between ``a`` and ``b`` per image and RGB channel, averaged over the
    channels: (B, 3, H, W) → (B,). A constant channel has no correlation: r = 0."""
    _check(a, b)
    a = a.double().flatten(2)
    b = b.double().flatten(2)
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()
    r = torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-300), torch.zeros_like(den))
    return r.mean(1)


def affine_fit(pred: torch.Tensor, target: torch.Tensor, *, clip: bool = True) -> torch.Tensor:
    """The display mapping: ``gain·pred + offset`` per image and RGB channel, fitted to
    ``target`` by least squares, then clipped to [0, 1]. A constant channel maps to the
    target's mean. Invariant to any per-channel affine map of ``pred`` with positive or
    negative gain, so every method is shown (and scored) through the same mapping."""
    _check(pred, target)
    p = pred.double().flatten(2)
    t = target.double().flatten(2)
    pc = p - p.mean(-1, keepdim=True)
    tc = t - t.mean(-1, keepdim=True)
    var = pc.pow(2).sum(-1, keepdim=True)
    gain = torch.where(var > 0, (pc * tc).sum(-1, keepdim=True) / var.clamp_min(1e-300),
                       torch.zeros_like(var))
    out = (gain * pc + t.mean(-1, keepdim=True)).view(pred.shape)
    return (out.clamp(0, 1) if clip else out).to(pred.dtype)


def affine_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM after [`affine_fit()`][affine_fit]: (B,)."""
    return ssim(affine_fit(pred, target), target)


def affine_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR after [`affine_fit()`][affine_fit]: (B,)."""
    return psnr(affine_fit(pred, target), target)


def gmsd(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gradient Magnitude Similarity Deviation (Xue et al. 2014; ``piq``), lower is better:
    (B,). Inputs in [0, 1]."""
    import piq

    _check(pred, target)
    return piq.gmsd(pred.clamp(0, 1).float(), target.clamp(0, 1).float(), data_range=1.0,
                    reduction="none")


def haarpsi(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """HaarPSI (Reisenhofer et al. 2018; ``piq``), higher is better: (B,). Inputs in [0, 1]."""
    import piq

    _check(pred, target)
    return piq.haarpsi(pred.clamp(0, 1).float(), target.clamp(0, 1).float(), data_range=1.0,
                       reduction="none")


@torch.no_grad()
def reencoding_agreement(encoder: StagedEncoder, pred: torch.Tensor, target: torch.Tensor, *,
                         size: int | None = None, k: int = 5) -> dict[str, torch.Tensor]:
    """How an independent classifier sees ``pred`` next to ``target``: the overlap of
    their top-``k`` classes (fraction of ``k``) and the cosine of their GAP features of
    the deepest stage. Both images are resized (bilinear, antialiased) to ``size``
    (default: unchanged). Returns ``{"top5": (B,), "cosine": (B,)}`` (key ``top{k}``)."""
    _check(pred, target)
    both = to_module(torch.cat([pred, target]).clamp(0, 1), encoder)
    if size is not None and both.shape[-1] != size:
        both = F.interpolate(both, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)
    with encoder.frozen():
        a = encoder.forward_stages(encoder.normalize(both))[-1]
        gap = a.mean(dim=(-2, -1))
        logits = encoder.head(a)
    n = pred.shape[0]
    top = logits.topk(k, dim=1).indices
    hit = (top[:n, :, None] == top[n:, None, :]).any(-1).sum(1).double() / k
    cos = F.cosine_similarity(gap[:n].double(), gap[n:].double(), dim=1)
    return {f"top{k}": hit.cpu(), "cosine": cos.cpu()}


def bootstrap_ci(values: Sequence[float], *, n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval ``(mean, lo, hi)`` of per-photo
    values (the photo is the unit of replication). One value gives ``lo = hi = mean``."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if v.numel() == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    mean = float(v.mean())
    if v.numel() == 1:
        return mean, mean, mean
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (n_resamples, v.numel()), generator=g)
    means = v[idx].mean(1)
    a = (1 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([a, 1 - a], dtype=torch.float64)).tolist()
    return mean, lo, hi
