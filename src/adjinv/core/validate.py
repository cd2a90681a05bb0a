"""One place for input checks (torch-cam's ``_precheck``): every public entry
point that takes an image batch passes it through :func:`check_input`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import AdjinvError
from ..state import to_module

if TYPE_CHECKING:
    from ..encoders.staged import StagedEncoder


def check_input(x: object, encoder: StagedEncoder, *, allow_constant: bool = False) -> torch.Tensor:
    """Validate a *normalised* image batch for ``encoder``; return it as (B, 3, H, W)
    on the encoder's device and dtype."""
    if not isinstance(x, torch.Tensor):
        raise AdjinvError(f"expected a torch.Tensor image batch, got {type(x).__name__}; "
                          "load files with adjinv.data.load_image")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise AdjinvError(f"expected an image of shape (3, H, W) or a batch (B, 3, H, W), "
                          f"got shape {tuple(x.shape)}")
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
        flat = x.flatten(2)
        const = ((flat.amax(2) - flat.amin(2)) == 0).all(1).nonzero().flatten().tolist()
        if const:
            raise AdjinvError(f"image(s) {const} are constant (every pixel the same colour): there is no "
                              "spatial structure to invert; pass a natural image")
    return to_module(x, encoder)
