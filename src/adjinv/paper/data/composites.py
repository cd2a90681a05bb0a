"""The embedded mask-bearing sample set: composites whose masks are known by construction.

What it is, honestly: an elliptical cut-out of one of the bundled scikit-image photos
(the cat ``chelsea``, the ``coffee`` cup, the ``astronaut``, the ``rocket``, the
``motorcycle``) pasted with a hard edge onto a background texture that also ships with
scikit-image (``brick``, ``grass``, ``gravel`` tinted to colour, ``hubble_deep_field``,
``immunohistochemistry``). The mask is the pasted ellipse, exact by construction at
the canvas resolution. The ellipse is inscribed in a hand-chosen box around the
object, so the "foreground" also holds some of the photo's own background near the
object, and the objects' own outlines are not the mask's. Placements and scales are
drawn from a fixed seed: the set is identical on every machine and nothing is
downloaded or shipped as binary files. It is a smoke-scale stand-in for CUB / Pet,
not a benchmark: a handful of images, one object per photo, pasted edges the encoder
can see.

Subsets: ``"fg"`` (10 composites: 5 photos × 2 backgrounds) for ``fg-paradox`` and
``superposition``; ``"ecr"`` (10 composites of the cat on 5 backgrounds at 2
placements; the first is the reference, its mask the region) for ``ecr``; ``"probe"``
(60 composites: each photo on the 3 backgrounds it never has in ``"fg"``, 4 placements
each, from seeds no other subset uses) to train the per-dataset linear probe that
``fg-paradox`` and ``ecr`` take as their head with ``--head probe`` (never an image they
score).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..._optional import require
from ...errors import AdjinvError

COMPOSITE_VERSION = 1
CANVAS = 224

# box around the object in each photo, (top, left, bottom, right) as fractions
_BOXES = {"chelsea": (0.02, 0.18, 1.0, 0.78), "coffee": (0.05, 0.12, 0.95, 0.78),
          "astronaut": (0.0, 0.05, 1.0, 0.72), "rocket": (0.0, 0.3, 1.0, 0.72),
          "motorcycle": (0.12, 0.08, 0.98, 0.95)}
_TINTS = {"brick": (1.0, 0.55, 0.4), "grass": (0.45, 0.9, 0.35), "gravel": (0.85, 0.8, 0.7)}
BACKGROUNDS = ("brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry")
PHOTOS = tuple(_BOXES)


@dataclass
class Composite:
    """One composite: image (3, 224, 224) in [0, 1], boolean mask (224, 224)."""

    name: str
    photo: str
    background: str
    image: torch.Tensor
    mask: torch.Tensor


def _photo(name: str) -> np.ndarray:
    skdata = require("skimage.data", "the composite photos")

    if name == "motorcycle":
        return skdata.stereo_motorcycle()[0]
    return getattr(skdata, name)()


def _background(name: str, rng: np.random.Generator) -> np.ndarray:
    skdata = require("skimage.data", "the composite backgrounds")
    a = getattr(skdata, name)().astype(np.float64) / 255.0
    if a.ndim == 2:
        a = a[..., None] * np.asarray(_TINTS[name])[None, None, :]
    h, w = a.shape[:2]
    side = min(h, w, 2 * CANVAS)
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    crop = torch.from_numpy(np.ascontiguousarray(a[top:top + side, left:left + side, :3]))
    crop = crop.permute(2, 0, 1)[None].float()
    return torch.nn.functional.interpolate(crop, size=(CANVAS, CANVAS), mode="bilinear",
                                           antialias=True, align_corners=False)[0].numpy()


def _compose(photo: str, background: str, seed: int) -> Composite:
    img = _photo(photo).astype(np.float64) / 255.0
    return paste(img, _BOXES[photo], photo, background, seed)


def paste(img: np.ndarray, box: tuple[float, float, float, float], photo: str, background: str,
          seed: int) -> Composite:
    """An elliptical cut-out of ``img`` (H, W, 3) in [0, 1] inside ``box`` (top, left,
    bottom, right as fractions) pasted onto a crop of the texture ``background`` at a
    placement and scale drawn from ``seed``; the mask is the pasted ellipse."""
    rng = np.random.default_rng(seed)
    bg = _background(background, rng)
    h, w = img.shape[:2]
    t, lf, b, r = box
    cut = img[int(t * h):int(b * h), int(lf * w):int(r * w)]
    scale = float(rng.uniform(0.45, 0.65)) * CANVAS / max(cut.shape[:2])
    ch, cw = max(8, round(cut.shape[0] * scale)), max(8, round(cut.shape[1] * scale))
    patch = torch.from_numpy(np.ascontiguousarray(cut)).permute(2, 0, 1)[None].float()
    scaled = torch.nn.functional.interpolate(patch, size=(ch, cw), mode="bilinear", antialias=True,
                                             align_corners=False)[0].clamp(0, 1).numpy()
    y0 = int(rng.integers(0, CANVAS - ch + 1))
    x0 = int(rng.integers(0, CANVAS - cw + 1))
    yy, xx = np.mgrid[0:ch, 0:cw]
    ell = ((yy + 0.5 - ch / 2) / (ch / 2)) ** 2 + ((xx + 0.5 - cw / 2) / (cw / 2)) ** 2 <= 1.0
    out = bg.copy()
    region = out[:, y0:y0 + ch, x0:x0 + cw]
    region[:, ell] = scaled[:, ell]
    mask = np.zeros((CANVAS, CANVAS), dtype=bool)
    mask[y0:y0 + ch, x0:x0 + cw] = ell
    return Composite(f"{photo}@{background}-{seed}", photo, background,
                     torch.from_numpy(out).float().clamp(0, 1), torch.from_numpy(mask))


def background_crop(background: str, seed: int) -> torch.Tensor:
    """A crop of the texture ``background`` alone (3, 224, 224), from ``seed``."""
    return torch.from_numpy(_background(background, np.random.default_rng(seed))).float().clamp(0, 1)


@lru_cache(maxsize=4)
def _composite_set(subset: str) -> tuple[Composite, ...]:
    if subset == "fg":
        specs = [(p, BACKGROUNDS[(2 * i + j) % len(BACKGROUNDS)], 100 + 10 * i + j)
                 for i, p in enumerate(PHOTOS) for j in range(2)]
    elif subset == "ecr":
        specs = [("chelsea", bgd, 200 + 10 * j + i) for j in range(2)
                 for i, bgd in enumerate(BACKGROUNDS)]
    elif subset == "probe":
        used = {(p, BACKGROUNDS[(2 * i + j) % len(BACKGROUNDS)]) for i, p in enumerate(PHOTOS)
                for j in range(2)}
        specs = [(p, bgd, 400 + 100 * i + 10 * b + j) for i, p in enumerate(PHOTOS)
                 for b, bgd in enumerate(BACKGROUNDS) if (p, bgd) not in used for j in range(4)]
    else:
        raise AdjinvError(f"unknown composite subset {subset!r}; use 'fg', 'ecr' or 'probe'")
    return tuple(_compose(p, b, s) for p, b, s in specs)


def composite_set(subset: str = "fg") -> list[Composite]:
    """The composites of ``subset`` (``"fg"``, ``"ecr"`` or ``"probe"``), deterministic."""
    return list(_composite_set(subset))


# photos of the composites outside the held-out split (adjinv.images.photos): the labelled
# transfer set (adjinv.paper.data.datasets.CompositeObjects) uses only these
TRANSFER_PHOTOS: tuple[str, ...] = ("chelsea", "motorcycle", "rocket")


def composite(photo: str, background: str, seed: int) -> Composite:
    """One composite of ``photo`` on ``background`` with placement and scale drawn from
    ``seed`` (deterministic; the generator behind [`composite_set()`][composite_set])."""
    if photo not in _BOXES or background not in BACKGROUNDS:
        raise AdjinvError(f"unknown composite photo {photo!r} or background {background!r}")
    return _compose(photo, background, seed)
