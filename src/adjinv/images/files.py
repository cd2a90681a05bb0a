"""Images at the edges: files and arrays in, float tensors in [0, 1] out."""

from __future__ import annotations

import numbers
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AdjinvError

if TYPE_CHECKING:
    from PIL import Image

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


DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (0.25 GiB RGBA)
MAX_ASPECT = 50  # longer side / shorter side of an image file; beyond, a strip, not a photo
_CROP_FIRST = 4  # resize_center_crop crops first when the resized image would be this many squares
_OPEN_LOCK = threading.Lock()


def _open(p: Path, max_pixels: int):
    """``Image.open`` with our own pixel limit in place of Pillow's global one."""
    from PIL import Image

    with _OPEN_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # checked below against max_pixels instead
        try:
            im = Image.open(p)
        finally:
            Image.MAX_IMAGE_PIXELS = old
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise AdjinvError(f"image {str(p)!r} has {w}x{h} = {w * h:,} pixels, over the limit of "
                          f"{max_pixels:,} (a guard against decompression bombs); if you trust "
                          f"the file, raise the limit with --max-pixels {w * h} (max_pixels=)")
    if w == 0 or h == 0:
        im.close()
        raise AdjinvError(f"image {str(p)!r} is empty ({w}x{h} px)")
    if max(w, h) > MAX_ASPECT * min(w, h):
        im.close()
        raise AdjinvError(f"image {str(p)!r} is {w}x{h} px, an extreme aspect ratio "
                          f"({max(w, h) / min(w, h):,.0f}:1, over {MAX_ASPECT}:1); only its "
                          "central square would be inverted: crop it to the part you want "
                          "and pass that")
    return im


def _high_depth_gray(im: Image.Image, src: str) -> np.ndarray:
    """An ``I;16*`` / ``I`` / ``F`` single-channel image as H x W float32 in [0, 1]."""
    arr = np.array(im)
    if im.mode.startswith("I;16"):
        return arr.astype(np.float32) / 65535.0
    if im.mode == "I":  # 16-bit PNG/TIFF data in a 32-bit container, as Pillow reads it
        imin, imax = int(arr.min()), int(arr.max())
        if imin >= 0 and imax <= 65535:
            return arr.astype(np.float32) / 65535.0
        raise AdjinvError(f"{src} is a 32-bit integer image with values {imin}..{imax}, outside the "
                          "16-bit range [0, 65535]; scale it to 8 or 16 bits and save it as PNG")
    arr = arr.astype(np.float32)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if np.isfinite(arr).all() and lo >= 0.0 and hi <= 1.0:
        return arr
    raise AdjinvError(f"{src} is a floating-point image with values {lo:.4g}..{hi:.4g}; only "
                      "[0, 1] is unambiguous: scale it to [0, 1] or save it as 8/16-bit PNG")


def _to_rgb_array(im: Image.Image, src: str, mode: str) -> np.ndarray:
    """Every Pillow mode → H x W x 3 (uint8 or float32 in [0, 1]), or a refusal."""
    if im.mode == "RGB":
        return np.array(im)
    if mode != "convert":
        kind = _MODE_NAMES.get(im.mode, "not RGB")
        raise AdjinvError(
            f"{src} has colour mode {im.mode!r} ({kind}), "
            "but the encoder needs RGB: convert it (e.g. PIL .convert('RGB'), which drops "
            "an alpha channel) or use load_image(..., mode='convert')")
    from PIL import Image

    if im.mode.startswith("I") or im.mode == "F":
        gray = _high_depth_gray(im, src)
        warnings.warn(f"{src}: converted colour mode {im.mode!r} (grayscale, full bit depth) "
                      "to RGB", stacklevel=3)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB", "1") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, rgba).convert("RGB")
        warnings.warn(f"{src}: converted colour mode {im.mode!r} to RGB, transparent parts "
                      "composited onto white", stacklevel=3)
        return np.array(out)
    try:
        out = im.convert("RGB")
    except ValueError:
        raise AdjinvError(f"{src} has colour mode {im.mode!r}, which cannot be converted to "
                          "RGB here; re-export it as RGB PNG or JPEG") from None
    warnings.warn(f"{src}: converted colour mode {im.mode!r} to RGB", stacklevel=3)
    return np.array(out)


def load_image(path: str | os.PathLike, mode: str = "strict",
               max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read an image file as (3, H, W) in [0, 1].

    ``mode="strict"`` refuses non-RGB files; ``mode="convert"`` converts them (the CLI
    uses this, and says so): 16-bit and 32-bit grayscale at their full depth, alpha
    composited onto white, palette/CMYK/YCbCr through Pillow. The EXIF orientation is
    applied; an animated file gives its first frame, with a warning. Files of more
    than ``max_pixels`` pixels are refused before decoding (decompression bombs).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not isinstance(path, (str, os.PathLike)):
        raise AdjinvError(f"load_image takes a file path, got {type(path).__name__}; for an "
                          "array use array_to_tensor")
    p = Path(path)
    src = f"image {str(p)!r}"
    if p.is_dir():
        raise AdjinvError(f"{src} is a folder, not an image; pass image files (or use "
                          "--images FOLDER where a command takes a folder)")
    if not p.is_file():
        raise AdjinvError(f"{src} does not exist")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise AdjinvError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    try:
        with _open(p, max_pixels) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                warnings.warn(f"{src} is animated ({frames} frames): using the first frame",
                              stacklevel=2)
                im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = _to_rgb_array(im, src, mode)
    except AdjinvError:
        raise
    except Image.DecompressionBombError as e:
        raise AdjinvError(f"{src}: {e}; raise the limit with --max-pixels if you trust the "
                          "file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise AdjinvError(f"cannot read {src} ({type(e).__name__}): not an image "
                          "or a damaged file; re-export it as PNG or JPEG") from None
    return array_to_tensor(arr, source=src)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by suffix) directly or recursively under ``folder``, sorted."""
    d = Path(folder)
    if not d.is_dir():
        kind = "is a file, not a folder" if d.is_file() else "does not exist"
        raise AdjinvError(f"image folder {str(d)!r} {kind}")
    files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise AdjinvError(f"image folder {str(d)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def resize_center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased) and centre-crop a square (an image
    more than 4 times longer than wide is cropped to its central square first)."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise AdjinvError(f"size must be a positive integer (pixels), got {size!r}")
    if not isinstance(img, torch.Tensor) or img.dim() != 3 or min(img.shape[1:]) < 1:
        got = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise AdjinvError(f"expected an image tensor of shape (C, H, W), got {got}")
    _, h, w = img.shape
    side = min(h, w)
    if max(h, w) > _CROP_FIRST * side:
        # a long strip: crop its central square before resizing, so that memory stays
        # bounded by size² whatever the aspect ratio (a 1 x 400000 PNG would ask 20 GB)
        top, left = (h - side) // 2, (w - side) // 2
        img, h, w = img[:, top:top + side, left:left + side], side, side
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
