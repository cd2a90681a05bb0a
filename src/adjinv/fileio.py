"""Atomic output: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import AdjinvError

# Tags of adjinv's own temporary names (``.NAME<tag>``): clean-up after a killed run
# removes only these, never a user's hidden ``.x.tmp`` (adjinv.outdir).
TMP_TAG = ".adjinv-tmp"
PARTIAL_TAG = ".adjinv-partial"
OLD_TAG = ".adjinv-old"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` so that ``path`` is either the old file or the complete new one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=TMP_TAG, dir=p.parent)
    try:
        # mkstemp creates 0600; give the file the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic UTF-8 text write."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    """Atomic JSON write (indented, keys in insertion order)."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def finite_json(obj: object) -> object:
    """``obj`` with every non-finite float made ``None`` and, beside it in a dict, a
    ``KEY_unavailable`` reason, so that strict JSON parsers read it (no bare ``NaN``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        out: dict = {}
        for k, v in obj.items():
            out[k] = finite_json(v)
            if isinstance(v, float) and not math.isfinite(v):
                out[f"{k}_unavailable"] = f"not a finite number ({v}): the score cannot be computed"
        return out
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] → H x W x 3 uint8 (the numpy edge)."""
    if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
        got = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise AdjinvError(f"an image to save must be a (3, H, W) tensor in [0, 1], got {got}")
    arr = img.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def save_png(path: str | os.PathLike, img: torch.Tensor) -> Path:
    """Save a (3, H, W) image in [0, 1] as PNG, atomically."""
    import io as _io

    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(to_uint8_hwc(img)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- output folders
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
             *(f"lpt{i}" for i in range(10))}
# names adjinv itself writes at the top of an output folder
_TOP_LEVEL = {"index.html", "summary.json", ".adjinv-output", ".adjinv.lock"}
_MAX_NAME = 100  # bytes, leaving room below the usual 255 for suffixes and staging names


def safe_name(name: str, taken: set[str] | None = None) -> str:
    """A file-name stem made safe as one folder name inside an output folder.

    Path separators, NUL and control characters become ``_``; leading dots and
    spaces, trailing dots and spaces go (so ``..`` or ``.hidden`` cannot escape or
    hide); Windows device names (``CON``, ``NUL``, ``COM1``…) and the names adjinv
    writes itself get a ``_`` prefix; an empty result becomes ``image``. With
    ``taken`` (lower-cased names already used), a ``-2``, ``-3``… suffix keeps it
    unique, also on case-insensitive file systems.
    """
    s = "".join("_" if c in "/\\\0" or ord(c) < 32 or ord(c) == 127 else c for c in name)
    s = s.lstrip(". ").rstrip(". ")
    while len(s.encode("utf-8", "surrogateescape")) > _MAX_NAME:  # file systems count bytes
        s = s[:-1]
    s = s.rstrip(". ") or "image"
    if s.split(".")[0].lower() in _RESERVED or s.lower() in _TOP_LEVEL:
        s = "_" + s
    if taken is None:
        return s
    base, n = s, 1
    while s.lower() in taken:
        n += 1
        s = f"{base}-{n}"
    taken.add(s.lower())
    return s


def inside(root: str | os.PathLike, name: str) -> Path:
    """``root / name``, checked to resolve to a direct child of ``root``."""
    r = Path(root).resolve()
    p = (r / name).resolve()
    if p.parent != r:
        raise AdjinvError(f"output name {name!r} would leave the output folder {str(root)!r}")
    return Path(root) / name
