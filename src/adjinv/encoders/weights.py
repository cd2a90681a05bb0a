"""Reading encoder weight files without executing code from them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import AdjinvError
from ..finite import check_finite


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` or a torch ``.pth``.

    ``.pth`` files are read with ``torch.load(weights_only=True)``, the restricted
    unpickler that refuses anything but tensors and plain containers.
    A wrapping ``{"state_dict": …}`` or ``{"model": …}`` is unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise AdjinvError(f"weights file {str(p)!r} does not exist; pass the path of a local file")
    sd: Any
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p), device="cpu")
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or not a tensor file
        raise AdjinvError(
            f"could not read weights file {str(p)!r} ({type(e).__name__}): it is truncated, "
            "corrupt or not a state dict; re-download or re-export it"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise AdjinvError(f"{str(p)!r} holds no state dict of tensors; pass a model state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def fix_legacy_densenet_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision DenseNet files name ``norm.1`` what the module calls ``norm1``."""
    out = {}
    for k, v in sd.items():
        m = _DENSENET_LEGACY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], arch: str, source: str) -> None:
    """``load_state_dict`` with an error that says the file belongs to another model."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if shape:
            k = shape[0]
            detail.append(f"{len(shape)} of other shape (e.g. {k!r}: "
                          f"{tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise AdjinvError(
            f"weights {source!r} do not fit {arch}: " + ", ".join(detail)
            + f". They belong to another architecture; pass weights saved from {arch}"
        )
    check_finite(sd.items(), f"weights {source!r}",
                 "re-download or re-export them from a model that trained without diverging")
    model.load_state_dict(sd, strict=True)
