"""What the interference runners (``fg-paradox``, ``superposition``, ``ecr``) share: the
encoder with its LACs, a resumable per-image cache, bootstrap intervals, progress."""

from __future__ import annotations

import hashlib
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ...core.lac import LACBank
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_bytes, atomic_write_json
from .common import Log, load_named_encoder, warnings_to_log

CONTROLS_NOTE = [
    "seed-zero: Psi_L(0), the cascade with the deepest seed set to zero; no feature information, "
    "only this image's Jacobians (ReLU masks) and the LAC biases. Every weighted reconstruction "
    "collapses to a multiple of it, so its FG is the number the features must beat. With identity "
    "LACs (beta = 0) it is exactly zero and the control is undefined (null).",
    "swapped-seed: the seeds E_c * A_L and the weights alpha of a different image pulled back "
    "through this image's Jacobians. fg-paradox and superposition pair images by a derangement by "
    "source photo (the composites) or class (labelled data), never the same photo on another "
    "background (partner_rule in results.json); ecr takes the first test image. A statistic that "
    "barely changes is a property of this image's Jacobians, not of its features.",
    "model randomisation (Adebayo et al. 2018): a copy of the encoder with its top n stages "
    "re-initialised (cascading down), same head, LACs and class index. A statistic that survives "
    "does not measure what those stages learned.",
]

BIAS_NOTE = [
    "LAC_pix bias (docs/method.md section 15): every phi_c = s_c + b with b the constant image beta_pix "
    "and <s_c, b> = 0, so lambda_1/tr G >= |b|^2/(|b|^2+|s|^2) for any input. Statistics are reported "
    "raw, per-RGB zero-mean (removes b exactly) and with the Psi(0) direction projected out.",
    "shuffled head (fg-paradox O1/O2, superposition B1/B2): the class row W_k permuted across "
    "channels, and a Gaussian row with W_k's norm; same features, same LACs. A statistic the "
    "control head reproduces does not depend on what the classifier learned.",
    "intervals: percentile bootstrap over source photos (composites) or classes (labelled data): "
    "whole groups are resampled, so composites of one photo are not counted as independent.",
]


def model_with_lacs(name: str, weights: str | None, random_init: bool, lac: str | None,
                    log: Log, encoder: StagedEncoder | None = None,
                    lacs: LACBank | None = None) -> tuple[StagedEncoder, LACBank, str]:
    """``(encoder, lacs, lac_source)``; warnings (identity LACs, random weights) as log lines."""
    from ...lacs.bundled import load_lacs

    enc = encoder if encoder is not None else load_named_encoder(name, weights, random_init, log)
    if lacs is not None:
        return enc, lacs, "given"
    with warnings_to_log(log):
        bank, _, source = load_lacs(enc, lac)
    return enc, bank, portable_path(source)


def portable_path(source: str) -> str:
    """A LAC source for results files without this machine's absolute paths: a file
    inside the installed package as ``package:adjinv/…``, a file under the working
    directory relative to it, anything else (``identity …``, a name) unchanged."""
    p = Path(source)
    if not p.is_absolute():
        return source
    pkg = Path(__file__).resolve().parent.parent
    try:
        return "package:adjinv/" + p.resolve().relative_to(pkg).as_posix()
    except ValueError:
        pass
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def tensor_digest(*ts: torch.Tensor) -> str:
    """Short SHA-256 over tensors' bytes (cache keys)."""
    h = hashlib.sha256()
    for t in ts:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def lac_digest(lacs: LACBank) -> str:
    """Short digest of the LAC parameters (cache keys)."""
    return tensor_digest(*[p for _, p in sorted(lacs.state_dict().items())])


class ImageCache:
    """One JSON (or torch) file per image and setting under ``folder``; a record is valid
    only for the exact key it was computed with, so a changed setting recomputes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: dict, suffix: str) -> Path:
        blob = json.dumps(key, sort_keys=True, default=str).encode()
        return self.folder / f"{hashlib.sha256(blob).hexdigest()[:24]}{suffix}"

    def get(self, key: dict) -> dict | None:
        """The cached record for ``key``, if any."""
        p = self._path(key, ".json")
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError:
            return None
        return rec.get("record") if rec.get("key") == json.loads(json.dumps(key, default=str)) else None

    def put(self, key: dict, record: dict) -> None:
        """Store ``record`` for ``key`` atomically."""
        atomic_write_json(self._path(key, ".json"), {"key": key, "record": record})

    def get_tensors(self, key: dict) -> dict[str, torch.Tensor] | None:
        """Cached tensors for ``key``, if any."""
        p = self._path(key, ".pt")
        if not p.is_file():
            return None
        try:
            return torch.load(p, weights_only=True)
        except Exception:
            return None

    def put_tensors(self, key: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Store tensors for ``key`` atomically."""
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
        atomic_write_bytes(self._path(key, ".pt"), buf.getvalue())


def bootstrap_ci(values: Iterable[float | None], n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95, groups: Sequence[Any] | None = None) -> dict[str, Any]:
    """Mean and percentile-bootstrap interval (``n_boot`` resamples, fixed ``seed``) of the
    finite values; ``None`` entries are left out and counted.

    ``groups`` (one per value, e.g. each composite's source photo): a cluster bootstrap
    that resamples whole groups with replacement and averages every value of the drawn
    groups, so that images of the same photo are not counted as independent
    (docs/method.md §15). ``n_groups`` is reported; with one group there is no interval."""
    vals = [None if x is None else float(x) for x in values]
    keep = [i for i, x in enumerate(vals) if x is not None and math.isfinite(x)]
    v = torch.tensor([vals[i] for i in keep], dtype=torch.float64)
    n = int(v.numel())
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    out: dict[str, Any] = {"mean": float(v.mean()), "lo": None, "hi": None, "n": n}
    g = torch.Generator().manual_seed(seed)
    a = (1 - level) / 2
    qs = torch.tensor([a, 1 - a], dtype=torch.float64)
    if groups is None:
        if n == 1:
            return out
        idx = torch.randint(0, n, (n_boot, n), generator=g)
        means = v[idx].mean(1)
    else:
        if len(groups) != len(vals):
            raise AdjinvError(f"{len(groups)} groups for {len(vals)} values")
        names = sorted({str(groups[i]) for i in keep})
        gid = torch.tensor([names.index(str(groups[i])) for i in keep])
        ng = len(names)
        out["n_groups"] = ng
        if ng == 1:
            return out
        sums = torch.zeros(ng, dtype=torch.float64).index_add_(0, gid, v)
        counts = torch.zeros(ng, dtype=torch.float64).index_add_(0, gid, torch.ones_like(v))
        draw = torch.randint(0, ng, (n_boot, ng), generator=g)
        means = sums[draw].sum(1) / counts[draw].sum(1)
    q = torch.quantile(means, qs)
    out["lo"], out["hi"] = float(q[0]), float(q[1])
    return out


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False)


def iter_with_bar(items: list, desc: str) -> Iterator:
    """Iterate with a progress bar."""
    bar = progress_bar(len(items), desc)
    try:
        for it in items:
            yield it
            bar.update(1)
    finally:
        bar.close()


def fmt(v: float | None, digits: int = 3) -> str:
    """A number for a Markdown table."""
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_ci(s: dict, digits: int = 3) -> str:
    """``mean [lo, hi]``."""
    if s.get("mean") is None:
        return "undefined"
    if s.get("lo") is None:
        return fmt(s["mean"], digits)
    return f"{s['mean']:.{digits}f} [{s['lo']:.{digits}f}, {s['hi']:.{digits}f}]"


def parse_levels(values: list[str]) -> list:
    """``["1", "3", "all"]`` → ``[1, 3, "all"]``."""
    out: list = []
    for v in values:
        if v == "all":
            out.append(v)
            continue
        try:
            out.append(int(v))
        except ValueError:
            raise AdjinvError(f"--randomize takes integers or 'all', got {v!r}") from None
    return out
