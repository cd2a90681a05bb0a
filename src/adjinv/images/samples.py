"""The bundled sample photos (scikit-image ships them; nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import torch

from .._optional import require
from ..errors import AdjinvError
from .files import array_to_tensor

SAMPLE_NAMES: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle")


def _load(name: str) -> np.ndarray:
    skdata = require("skimage.data", "the bundled sample photos")
    if name == "motorcycle":  # the left view of the stereo pair, shipped with scikit-image
        return skdata.stereo_motorcycle()[0]
    return getattr(skdata, name)()


def sample_image(name: str) -> torch.Tensor:
    """One bundled photo as (3, H, W) in [0, 1]."""
    if name not in SAMPLE_NAMES:
        raise AdjinvError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLE_NAMES)}")
    return array_to_tensor(_load(name), source=f"sample {name!r}")


def sample_images(names: tuple[str, ...] = SAMPLE_NAMES) -> dict[str, torch.Tensor]:
    """The bundled photos by name."""
    return {n: sample_image(n) for n in names}
