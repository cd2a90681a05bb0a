"""The output contract of every command that writes a folder (docs/cli.md, "Outputs").

One place for what a run may do to its ``--out`` folder:

- **guard** (before any work): ``--out`` is a folder or absent, not a file-system root
  or the home folder, and neither an input nor inside one; an existing
  non-empty folder without the adjinv marker is refused unless ``--overwrite``;
- **marker**: ``.adjinv-output`` records the entries adjinv wrote there, so that a
  later run replaces only those;
- **lock**: one run per folder (``filelock``; a second run is refused at once);
- **atomic publish**: files through [`atomic_write_bytes()`][adjinv.fileio.atomic_write_bytes], folders
  staged as ``.NAME.adjinv-partial`` and moved into place by `publish_dir()`;
- **nothing of the user's touched**: a folder or file adjinv did not write is never
  deleted, renamed or replaced by a folder; with ``--overwrite`` a user *file* with the
  name of one of adjinv's files is replaced (what the flag says); clean-up removes only
  names that carry adjinv's own temporary tags.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import AdjinvError
from .fileio import OLD_TAG, PARTIAL_TAG, TMP_TAG, atomic_write_text, inside

MARKER = ".adjinv-output"  # written into every folder adjinv fills; lists what it wrote
LOCK = ".adjinv.lock"  # held by the one run writing into a folder
_MARKER_HEAD = "This folder was written by adjinv. The entries it wrote:"


# ----------------------------------------------------------------------------- marker
def read_marker(root: str | os.PathLike) -> set[str] | None:
    """The names adjinv recorded writing in ``root`` (None: no marker). A marker of an
    older version (free text) yields the images its ``summary.json`` lists."""
    p = Path(root) / MARKER
    if not p.is_file():
        return None
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    if lines and lines[0] == _MARKER_HEAD:
        return {ln for ln in lines[1:] if ln}
    names = {"index.html", "summary.json"}
    try:  # an older marker: the report's own index names its image folders
        for s in json.loads((Path(root) / "summary.json").read_text()):
            names.add(str(s["image"]))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return names


def _write_marker(root: Path, names: set[str]) -> None:
    atomic_write_text(root / MARKER, "\n".join([_MARKER_HEAD, *sorted(names)]) + "\n")


# ----------------------------------------------------------------------------- guard
def check_out(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an ``--out`` that no run should write into (before any work).

    Args:
        path: the output folder.
        inputs: files or folders the run reads; ``--out`` may be none of them, nor lie
            inside one.

    Returns:
        ``path`` resolved.
    """
    p = Path(path)
    r = p.resolve()
    if p.exists() and not p.is_dir():
        raise AdjinvError(f"--out {str(p)!r} is an existing file, not a folder; choose a "
                          "folder path")
    for up in p.parents:
        if up.exists():
            if not up.is_dir():
                raise AdjinvError(f"--out {str(p)!r}: {str(up)!r} is a file, not a folder; "
                                  "choose a folder path")
            break
    if r == Path(r.anchor) or r == Path.home().resolve():
        what = "a file-system root" if r == Path(r.anchor) else "your home folder"
        raise AdjinvError(f"--out {str(p)!r} is {what}; "
                          "choose a new folder for the outputs, e.g. --out runs/out")
    for src in inputs:
        s = Path(src).resolve()
        if r == s or s in r.parents:
            how = "is" if r == s else "is inside"
            raise AdjinvError(f"--out {str(p)!r} {how} the input {str(src)!r}; choose an "
                              "output folder apart from the data")
    return r


# ----------------------------------------------------------------------------- clean-up
def _is_ours(name: str) -> bool:
    return name.startswith(".") and name.endswith((TMP_TAG, PARTIAL_TAG, OLD_TAG))


def remove_stale_temporaries(root: str | os.PathLike, owned: Iterable[str] = ()) -> list[Path]:
    """Delete what a killed run left in ``root``: entries whose names carry adjinv's
    temporary tags, at any depth, and at the top the ``.NAME.partial`` / ``.NAME.old`` /
    ``.NAME.*.tmp`` of an older version for an ``owned`` NAME. Nothing else: a user's own
    hidden ``.x.tmp`` or ``.x.old`` stays. Call only while holding the lock."""
    r = Path(root)
    legacy = {f".{n}.partial" for n in owned} | {f".{n}.old" for n in owned}
    gone: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(r):
        here = Path(dirpath)
        top = here == r
        for d in list(dirnames):
            if _is_ours(d) or (top and d in legacy):
                shutil.rmtree(here / d, ignore_errors=True)
                gone.append(here / d)
                dirnames.remove(d)
            elif (here / d).is_symlink():
                dirnames.remove(d)
        for f in filenames:
            old_tmp = top and f.endswith(".tmp") and any(f.startswith(f".{n}.") for n in owned)
            if _is_ours(f) or old_tmp:
                (here / f).unlink(missing_ok=True)
                gone.append(here / f)
    return sorted(gone)


# ----------------------------------------------------------------------------- folders
def staging_dir(final: str | os.PathLike) -> Path:
    """A fresh hidden sibling ``.NAME.adjinv-partial`` of ``final`` to fill before
    `publish_dir()`."""
    f = Path(final)
    tmp = f.parent / f".{f.name}{PARTIAL_TAG}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a completed staging folder to ``final``, replacing an older one that adjinv
    wrote (the caller claimed ``final`` through `OutputFolder.claim()`)."""
    t, f = Path(tmp), Path(final)
    if f.exists() and (f.is_symlink() or not f.is_dir()):
        raise AdjinvError(f"{str(f)!r} is a file, not a folder adjinv wrote; move it away "
                          "or choose another --out")
    old = f.parent / f".{f.name}{OLD_TAG}"
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


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def lock_path(path: str | os.PathLike, what: str) -> FileLock:
    """Hold a lock on ``path`` (a lock file), refusing at once when another run holds it
    (or has just removed that file, see `OutputFile`)."""
    lock = FileLock(str(path))
    busy = AdjinvError(f"another adjinv run is writing {what}; wait for it to finish or "
                       "choose another --out")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise busy from None
    fd = getattr(lock._context, "lock_file_fd", None)
    try:
        same = fd is None or os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        same = False
    if not same:  # we locked a file that its previous holder has since removed
        lock.release()
        raise busy
    return lock


class OutputFolder:
    """Claim an output folder for one run (a context manager): the contract above.

    Args:
        path: the ``--out`` folder.
        overwrite: allow an existing non-empty folder that adjinv did not create; a user
            file with the name of one of adjinv's files is then replaced.
        inputs: what the run reads (``--out`` may not be one, nor lie inside one).
        files: top-level files the run will write (``results.json``…).
        folders: top-level folders the run will publish whole (one per image).

    Every check runs before the folder is touched. Under ``torchrun`` only rank 0 checks
    emptiness, locks, marks and cleans; the other ranks write into what rank 0 claimed.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, *,
                 inputs: Iterable[str | os.PathLike] = (), files: Iterable[str] = (),
                 folders: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.inputs = list(inputs)
        self.claims = {**dict.fromkeys(files, False), **dict.fromkeys(folders, True)}
        self._lock: FileLock | None = None
        self._created = False
        self.owned: set[str] = set()
        self.removed: list[Path] = []

    def _check_claims(self, known: set[str]) -> dict[str, Path]:
        """Each claimed name's path; refuse one that holds something of the user's."""
        targets = {n: inside(self.path, n) for n in self.claims}
        for n, t in targets.items():
            if n in known or not (t.exists() or t.is_symlink()):
                continue
            if not self.claims[n] and self.overwrite and t.is_file() and not t.is_symlink():
                continue  # --overwrite: a file of the same name is replaced, as it says
            kind = "folder" if t.is_dir() else "file"
            raise AdjinvError(f"{str(t)!r} is a {kind} that adjinv did not write and never "
                              "replaces; move it away or choose another --out")
        return targets

    def __enter__(self) -> OutputFolder:
        p = self.path
        check_out(p, self.inputs)
        main = _rank() == 0
        known = read_marker(p)
        if main and known is None and p.is_dir() and any(p.iterdir()) and not self.overwrite:
            raise AdjinvError(f"--out {str(p)!r} is a non-empty folder that adjinv did not "
                              "create; choose a new or empty folder, or pass --overwrite to "
                              "write into it (files with adjinv's output names are replaced; "
                              "nothing else of yours is touched)")
        if main:
            self._check_claims(known or set())
        self._created = not p.exists()
        p.mkdir(parents=True, exist_ok=True)  # OSError (permission, read-only): environment
        if not main:
            return self
        self._lock = lock_path(p / LOCK, f"into {str(p)!r}")
        try:
            (p / LOCK).write_text(f"{os.getpid()}\n")
            known = read_marker(p) or set()  # again, now that no other run can change it
            self._check_claims(known)
            if int(os.environ.get("WORLD_SIZE", "1") or 1) == 1 and (p / MARKER).is_file():
                self.removed = remove_stale_temporaries(p, known)
            self.owned = known | set(self.claims)
            _write_marker(p, self.owned)
        except BaseException:
            self._release()
            raise
        return self

    def target(self, name: str) -> Path:
        """The path of a claimed entry."""
        if name not in self.claims:
            raise KeyError(name)
        return inside(self.path, name)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        p = self.path
        if exc_type is not None and self._created and self._lock is not None:
            # a failed run into a folder it created leaves no folder holding only our files
            try:
                if {q.name for q in p.iterdir()} <= {MARKER, LOCK}:
                    self._release()
                    for name in (MARKER, LOCK):
                        (p / name).unlink(missing_ok=True)
                    p.rmdir()
            except OSError:
                pass
        self._release()


class OutputFile:
    """Claim a single output file (a checkpoint) for one run: the contract for commands
    whose ``--out`` is a file (``adjinv train``, ``adjinv train-head``).

    The path may not be a folder nor lie inside an input folder; its folder is created; a
    sibling lock ``.NAME.lock``, removed at the end, admits one run at a time.

    Args:
        path: the ``--out`` file.
        inputs: folders the run reads.
        option: the flag named in messages.
    """

    def __init__(self, path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
                 option: str = "--out") -> None:
        self.path = Path(path)
        self.inputs = list(inputs)
        self.option = option
        self._lock: FileLock | None = None

    def __enter__(self) -> OutputFile:
        p = self.path
        if p.is_dir():
            raise AdjinvError(f"{self.option} {str(p)!r} is a folder; give a checkpoint file "
                              f"path such as {str(p / 'lac.safetensors')!r}")
        for up in p.parents:
            if up.exists():
                if not up.is_dir():
                    raise AdjinvError(f"{self.option} {str(p)!r}: {str(up)!r} is a file, not "
                                      "a folder")
                break
        r = p.resolve()
        for src in self.inputs:
            s = Path(src).resolve()
            if s in r.parents:
                raise AdjinvError(f"{self.option} {str(p)!r} is inside the input {str(src)!r}; "
                                  "write it apart from the data")
        p.parent.mkdir(parents=True, exist_ok=True)  # OSError → an environment error
        if _rank() == 0:
            self._lock = lock_path(p.parent / f".{p.name}.lock", str(p))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            # the lock file goes with the run: nothing but the checkpoint (and its log)
            # stays beside it; lock_path refuses a lock on a file removed meanwhile
            Path(self._lock.lock_file).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None
