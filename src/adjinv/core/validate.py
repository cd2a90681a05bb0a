"""One place for input checks (torch-cam's ``_precheck``): every public entry
point that takes an image batch passes it through [`check_input()`][check_input]."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import AdjinvError
from ..state import to_module

if TYPE_CHECKING:
    from ..encoders.staged import StagedEncoder

CONSTANT_TOL = 1e-3  # spread / magnitude below which an image counts as constant


def near_constant(x: torch.Tensor, tol: float = CONSTANT_TOL) -> list[int]:
    """Indices of the images in ``x`` (B, C, H, W) whose every channel spreads over at most
    ``tol`` times the image's largest magnitude, or ``tol`` if that is below 1 (the scale
    of a normalised image). Relative, so that an all-white image that resizing left with
    a 1e-7 ripple still counts as constant, whatever the units."""
    flat = x.detach().flatten(2).double()
    spread = flat.amax(2) - flat.amin(2)  # (B, C)
    scale = flat.abs().flatten(1).amax(1, keepdim=True).clamp_min(1.0)  # (B, 1)
    return (spread <= tol * scale).all(1).nonzero().flatten().tolist()


def check_input(x: object, encoder: StagedEncoder, *, allow_constant: bool = False) -> torch.Tensor:
    """Validate a *normalised* image batch for ``encoder``; return it as (B, 3, H, W)
    on the encoder's device and dtype."""
    if not isinstance(x, torch.Tensor):
        raise AdjinvError(f"expected a torch.Tensor image batch, got {type(x).__name__}; "
                          "load files with adjinv.images.load_image")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise AdjinvError(f"expected an image of shape (3, H, W) or a batch (B, 3, H, W), "
                          f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise AdjinvError("the image batch is empty (B = 0); pass at least one image")
    if not x.is_floating_point():
        raise AdjinvError(f"expected a floating-point image, got dtype {x.dtype}; convert with "
                          "x.float() / 255 and normalise with encoder.normalize")
    c = x.shape[1]
    if c != 3:
        hint = {1: "grayscale: repeat it to 3 channels", 4: "RGBA: drop the alpha channel"}
        raise AdjinvError(f"expected 3 (RGB) channels, got {c}"
                          + (f" ({hint[c]})" if c in hint else "")
                          + "; images must be (B, 3, H, W)")
    if not torch.isfinite(x).all():
        raise AdjinvError("the image contains NaN or Inf values; clean or re-load it")
    h, w = x.shape[-2:]
    stride = encoder.total_stride
    if h < stride or w < stride:
        raise AdjinvError(f"image of {h}x{w} px is smaller than the encoder's total stride "
                          f"{stride}; resize it to at least {stride}x{stride} (e.g. --size 224)")
    if not allow_constant:
        const = near_constant(x)
        if const:
            raise AdjinvError(f"image(s) {const} are constant or nearly so (every pixel the same "
                              "colour to within 0.1 % of the image's range): there is no spatial "
                              "structure to invert; pass a natural image (a 16-bit or unusual file "
                              "may have been misread: re-export it as 8-bit RGB PNG)")
    return to_module(x, encoder)
