"""Images at the edges: files and arrays in, float tensors in [0, 1] out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AdjinvError

_MODE_NAMES = {"L": "grayscale", "1": "black and white", "I": "grayscale, 32-bit",
               "I;16": "grayscale, 16-bit", "F": "grayscale, float", "LA": "grayscale with alpha",
               "RGBA": "RGB with alpha", "P": "palette", "PA": "palette with alpha",
               "CMYK": "CMYK", "YCbCr": "YCbCr", "HSV": "HSV", "LAB": "Lab"}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def array_to_tensor(arr: np.ndarray, source: str = "array") -> torch.Tensor:
    """HxWx3 uint8/float array → (3, H, W) float32 in [0, 1]. Grayscale and RGBA
    are refused with the fix, since silently converting hides a user mistake."""
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        raise AdjinvError(f"{source} is grayscale; the encoder needs RGB: convert it "
                          "(e.g. PIL .convert('RGB')) or use load_image(..., mode='convert')")
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise AdjinvError(f"{source} has shape {arr.shape}; expected H x W x 3 (RGB)")
    if arr.shape[2] == 4:
        raise AdjinvError(f"{source} is RGBA; drop or composite the alpha channel to get RGB "
                          "(or use load_image(..., mode='convert'))")
    if np.issubdtype(arr.dtype, np.integer):
        t = torch.from_numpy(np.ascontiguousarray(arr)).float() / float(np.iinfo(arr.dtype).max)
    else:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return t.permute(2, 0, 1).contiguous()


def load_image(path: str | os.PathLike, mode: str = "strict") -> torch.Tensor:
    """Read an image file as (3, H, W) in [0, 1].

    ``mode="strict"`` refuses grayscale/RGBA files; ``mode="convert"`` converts
    them to RGB (the CLI uses this, and says so).
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise AdjinvError(f"image {str(p)!r} does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode != "RGB":
                if mode != "convert":
                    kind = _MODE_NAMES.get(im.mode, "not RGB")
                    raise AdjinvError(
                        f"image {str(p)!r} has colour mode {im.mode!r} ({kind}), "
                        "but the encoder needs RGB: convert it (e.g. PIL .convert('RGB'), which drops "
                        "an alpha channel) or use load_image(..., mode='convert')")
                warnings.warn(f"image {str(p)!r}: converted colour mode {im.mode!r} to RGB",
                              stacklevel=2)
                im = im.convert("RGB")
            arr = np.array(im)
    except AdjinvError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise AdjinvError(f"cannot read image {str(p)!r} ({type(e).__name__}): not an image "
                          "or a damaged file; re-export it as PNG or JPEG") from None
    return array_to_tensor(arr, source=f"image {str(p)!r}")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by suffix) directly or recursively under ``folder``, sorted."""
    d = Path(folder)
    if not d.is_dir():
        raise AdjinvError(f"image folder {str(d)!r} does not exist")
    files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise AdjinvError(f"image folder {str(d)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def resize_center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased) and centre-crop a square."""
    _, h, w = img.shape
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    out = F.interpolate(img[None], size=(nh, nw), mode="bilinear", antialias=True,
                        align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return out[:, top:top + size, left:left + size].clamp(0, 1)


def stack_images(imgs: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Resize/crop every image to ``size`` and stack to (B, 3, size, size)."""
    return torch.stack([resize_center_crop(i, size) for i in imgs])


def random_crop(img: torch.Tensor, size: int, min_crop: float, gen: torch.Generator) -> torch.Tensor:
    """A random square crop covering ``min_crop``–1 of the shorter side, flipped
    horizontally with probability 1/2, resized to ``size`` (antialiased)."""
    _, h, w = img.shape
    side = min(h, w)
    s = max(1, int(side * (min_crop + (1 - min_crop) * float(torch.rand((), generator=gen)))))
    top = int(torch.randint(0, h - s + 1, (), generator=gen))
    left = int(torch.randint(0, w - s + 1, (), generator=gen))
    crop = img[:, top:top + s, left:left + s]
    if float(torch.rand((), generator=gen)) < 0.5:
        crop = crop.flip(-1)
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)
