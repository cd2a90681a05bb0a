"""Atomic output: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import AdjinvError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` so that ``path`` is either the old file or the complete new one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
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


def to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] → H x W x 3 uint8 (the numpy edge)."""
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
MARKER = ".adjinv-output"  # written into every folder adjinv creates or is allowed to fill
LOCK = ".adjinv.lock"  # held (flock) by the one run writing into a folder
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
             *(f"lpt{i}" for i in range(10))}
# names adjinv itself writes at the top of an output folder
_TOP_LEVEL = {"index.html", "summary.json", MARKER, LOCK}
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


def staging_dir(final: str | os.PathLike) -> Path:
    """A fresh hidden sibling ``.NAME.partial`` of ``final`` to fill before :func:`publish_dir`."""
    f = Path(final)
    tmp = f.parent / f".{f.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a completed staging folder to ``final``, replacing an older one."""
    t, f = Path(tmp), Path(final)
    old = f.parent / f".{f.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if f.exists():
        os.replace(f, old)
    try:
        os.replace(t, f)
    except BaseException:
        if old.exists() and not f.exists():
            os.replace(old, f)  # put the previous result back
        raise
    if old.exists():
        shutil.rmtree(old)
    return f


def remove_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Delete what a killed run left in ``root``: hidden ``.*.tmp`` files of an atomic
    write and ``.*.partial`` / ``.*.old`` folders. Call only while holding the lock."""
    gone = []
    for p in sorted(Path(root).rglob(".*")):
        if p.is_file() and p.name.endswith(".tmp"):
            p.unlink()
            gone.append(p)
        elif p.is_dir() and (p.name.endswith(".partial") or p.name.endswith(".old")):
            shutil.rmtree(p)
            gone.append(p)
    return gone


class OutputFolder:
    """Claim an output folder for one run (a context manager).

    Before any work: ``path`` must be a folder or absent; an existing non-empty folder
    that adjinv did not create (no marker file) is refused unless ``overwrite``; a
    second run into the same folder is refused while the first holds its lock; the
    folder must be writable. Stale temporaries of a killed run are removed (only in a
    folder that carries the marker).
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self._lock_fd: int | None = None
        self._created = False
        self.removed: list[Path] = []

    def __enter__(self) -> OutputFolder:
        p = self.path
        if p.exists() and not p.is_dir():
            raise AdjinvError(f"--out {str(p)!r} is an existing file, not a folder; "
                              "choose a folder path")
        if p.is_dir() and not (p / MARKER).is_file() and any(p.iterdir()) and not self.overwrite:
            raise AdjinvError(f"--out {str(p)!r} is a non-empty folder that adjinv did not "
                              "create; choose a new or empty folder, or pass --overwrite to "
                              "write into it (files with the same names are replaced)")
        for up in p.parents:
            if up.exists():
                if not up.is_dir():
                    raise AdjinvError(f"--out {str(p)!r}: {str(up)!r} is a file, not a folder; "
                                      "choose a folder path")
                break
        self._created = not p.exists()
        p.mkdir(parents=True, exist_ok=True)  # OSError (permission, read-only): environment
        import fcntl

        fd = os.open(p / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AdjinvError(f"another adjinv run is writing into {str(p)!r}; wait for it "
                              "to finish or choose another --out") from None
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        if (p / MARKER).is_file():  # only ever clean up in a folder adjinv owns
            self.removed = remove_stale_temporaries(p)
        else:
            atomic_write_text(p / MARKER, "This folder was written by adjinv.\n")
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        p = self.path
        if exc_type is not None and self._created:
            # a failed run into a folder it created leaves no folder holding only our files
            with contextlib.suppress(OSError):
                if {q.name for q in p.iterdir()} <= {MARKER, LOCK}:
                    for name in (MARKER, LOCK):
                        (p / name).unlink(missing_ok=True)
                    p.rmdir()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None
