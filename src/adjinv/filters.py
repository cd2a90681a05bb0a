"""The one Gaussian blur of the package (image corruptions, the insertion metric's
blurred substrate, the attention maps' smoothing all use it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import AdjinvError

BORDERS = ("replicate", "reflect", "renormalize")


def gaussian_kernel1d(sigma: float, radius: int, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """The sampled Gaussian ``exp(−t²/2σ²)`` on ``t = −radius … radius``, summing to 1
    (computed in float64, then cast)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    return (k / k.sum()).to(device=device, dtype=dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int, border: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of every channel of ``x`` (..., H, W).

    Args:
        x: tensor whose last two dimensions are spatial (e.g. (B, C, H, W)).
        sigma: standard deviation in pixels; ``sigma <= 0`` returns ``x`` unchanged.
        radius: half-width of the kernel (``2·radius + 1`` taps).
        border: ``"replicate"`` (edge pixels repeat, scikit-image's ``"nearest"``),
            ``"reflect"`` (mirror without repeating the edge; falls back to replicate
            when the image is not larger than the radius) or ``"renormalize"`` (zeros
            outside, divided by the kernel mass inside, so borders are not darkened).

    Returns:
        The blurred tensor, same shape and dtype.
    """
    if border not in BORDERS:
        raise AdjinvError(f"border must be one of {BORDERS}, got {border!r}")
    if sigma <= 0:
        return x
    shape = x.shape
    h, w = shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    k = gaussian_kernel1d(sigma, radius, dtype=x.dtype, device=x.device)
    kh, kw = k.view(1, 1, -1, 1), k.view(1, 1, 1, -1)
    if border == "renormalize":
        def blur(t: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.conv2d(t, kw, padding=(0, radius)), kh, padding=(radius, 0))

        out = blur(flat) / blur(torch.ones_like(flat[:1]))
    else:
        mode = "replicate" if border == "reflect" and radius >= min(h, w) else border
        y = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode=mode), kw)
        out = F.conv2d(F.pad(y, (0, 0, radius, radius), mode=mode), kh)
    return out.reshape(shape)
