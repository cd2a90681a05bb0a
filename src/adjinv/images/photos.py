"""The embedded photo split: training, validation and held-out photos, disjoint by photo.

Every photo ships inside an installed package, so nothing is downloaded:

- **train** (LAC training only): scikit-image's natural photos and textures.
- **validation** (learning-rate schedule, early stopping, checkpoint choice): two more
  scikit-image photos, never trained on.
- **heldout** (evaluation only; never used to train, tune or pick a checkpoint): the
  two photos shipped with scikit-learn (``china.jpg``, ``flower.jpg``, CC BY 2.0,
  Flickr users danielbuechele and vultilion), matplotlib's ``grace_hopper.jpg``
  (a U.S. Navy photograph, public domain), and scikit-image's ``astronaut`` (NASA,
  public domain) and ``coffee`` (public domain), which are therefore kept out of
  training too.

Greyscale photos are replicated to three channels. The protocol that uses the split is in
docs/evidence.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from .._optional import require
from ..errors import AdjinvError
from .files import array_to_tensor

TRAIN: tuple[str, ...] = ("chelsea", "motorcycle", "hubble_deep_field", "immunohistochemistry",
                          "retina", "brick", "grass", "gravel", "moon", "coins")
VALIDATION: tuple[str, ...] = ("rocket", "camera")
HELDOUT: tuple[str, ...] = ("china", "flower", "grace_hopper", "astronaut", "coffee")
SPLITS: dict[str, tuple[str, ...]] = {"train": TRAIN, "validation": VALIDATION, "heldout": HELDOUT}


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        skdata = require("skimage.data", "the embedded photos")
        if name == "motorcycle":  # the left view of the stereo pair
            return skdata.stereo_motorcycle()[0]
        return getattr(skdata, name)()

    return load


def _package_file(package: str, *parts: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from PIL import Image

        mod = require(package, "the embedded held-out photos")
        if package == "matplotlib":
            root = os.path.join(mod.get_data_path(), *parts)
        else:
            root = os.path.join(os.path.dirname(mod.__file__ or ""), *parts)
        try:
            with Image.open(root) as im:
                return np.array(im.convert("RGB"))
        except FileNotFoundError:
            raise AdjinvError(f"photo {root!r} is missing: install {package} "
                              f"(`pip install {package}`) to use the embedded held-out set, "
                              "or pass your own folder") from None

    return load


_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    **{n: _skimage(n) for n in (*TRAIN, *VALIDATION, "astronaut", "coffee")},
    "china": _package_file("sklearn", "datasets", "images", "china.jpg"),
    "flower": _package_file("sklearn", "datasets", "images", "flower.jpg"),
    "grace_hopper": _package_file("matplotlib", "sample_data", "grace_hopper.jpg"),
}


def photo(name: str) -> torch.Tensor:
    """One embedded photo as (3, H, W) in [0, 1] (greyscale replicated to RGB)."""
    if name not in _SOURCES:
        raise AdjinvError(f"unknown photo {name!r}; choose one of {', '.join(sorted(_SOURCES))}")
    arr = _SOURCES[name]()
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return array_to_tensor(arr[..., :3], source=f"photo {name!r}")


def split_photos(split: str) -> dict[str, torch.Tensor]:
    """The photos of one split (``"train"``, ``"validation"`` or ``"heldout"``) by name."""
    if split not in SPLITS:
        raise AdjinvError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return {n: photo(n) for n in SPLITS[split]}


def is_greyscale(img: torch.Tensor, tol: float = 1e-3) -> bool:
    """Whether a (3, H, W) image has (numerically) equal RGB channels."""
    return bool((img - img.mean(0, keepdim=True)).abs().max() <= tol)
