"""What the experiment runners share: configs from JSON + flags, cached features with a
progress bar, figures saved atomically."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError, captured_warnings
from ..features import FeatureSet, extract_gap_features

Log = Callable[[str], None]


def quiet_log(msg: str) -> None:
    """Discard progress lines (library use, tests; the CLI logs them instead)."""


def _json_fits(v: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for a config field of type ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_json_fits(v, a) for a in typing.get_args(hint))
    if hint is type(None):
        return v is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if hint is str:
        return isinstance(v, str)
    if origin in (list, tuple) or hint in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(v, list) and (not args or all(_json_fits(x, args[0]) for x in v))
    if origin is dict or hint is dict:
        return isinstance(v, dict)
    return True  # a type JSON cannot spell: the field's own checks decide


def _type_name(hint: Any) -> str:
    text = str(hint).replace("typing.", "")
    return {"<class 'int'>": "an integer", "<class 'float'>": "a finite number",
            "<class 'str'>": "a string", "<class 'bool'>": "true or false"}.get(text, text)


def load_config(cls: type, path: str | os.PathLike | None, overrides: dict[str, Any]) -> Any:
    """A config dataclass from defaults, then the JSON file ``path``, then the non-None
    ``overrides`` (command-line flags). Unknown keys are an error, not silently ignored.
    A dict override updates the keys it names; any other override replaces the value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise AdjinvError(f"config file {p} does not exist")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise AdjinvError(f"config file {p} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise AdjinvError(f"config file {p} must hold a JSON object")
        unknown = sorted(set(data) - names)
        if unknown:
            raise AdjinvError(f"unknown key(s) in {p}: {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(names))}")
        hints = typing.get_type_hints(cls)
        for k, v in data.items():
            if not _json_fits(v, hints[k]):
                raise AdjinvError(f"config file {p}: {k!r} is {json.dumps(v)}, which is not "
                                  f"{_type_name(hints[k])}; fix that value in the file")
        values.update(data)
    for k, v in overrides.items():
        if v is None or k not in names:
            continue
        if isinstance(v, dict):
            f = fields[k]
            base = values.get(k, f.default_factory() if f.default_factory is not dataclasses.MISSING
                              else f.default)
            v = {**base, **v} if isinstance(base, dict) else v
        values[k] = v
    return cls(**values)


@contextmanager
def warnings_to_log(log: Log) -> Iterator[None]:
    """Warnings raised inside the block (identity LACs, random weights, …) become
    ``"warning: …"`` log lines when it ends, each one, instead of going to stderr."""
    with captured_warnings(lambda msg: log(f"warning: {msg}")):
        yield


def load_named_encoder(name: str, weights: str | None, random_init: bool, log: Log) -> StagedEncoder:
    """``load_encoder`` with warnings turned into log lines."""
    from ...encoders import load_encoder

    with warnings_to_log(log):
        return load_encoder(name, weights, random_init=random_init)


def features(encoder: StagedEncoder, dataset: Any, label: str, cache_dir: Path | None,
             batch_size: int, log: Log) -> FeatureSet:
    """[`extract_gap_features()`][extract_gap_features] with a tqdm bar (only on a terminal) and a log
    line."""
    from tqdm import tqdm

    bar = tqdm(total=len(dataset), desc=label, unit="img", leave=False, file=sys.stderr,
               disable=None)

    def tick(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        fs = extract_gap_features(encoder, dataset, batch_size=batch_size, cache_dir=cache_dir,
                                  progress=tick)
    finally:
        bar.close()
    src = "cache" if fs.computed == 0 and cache_dir is not None else f"{fs.computed} computed"
    log(f"  features {label}: {tuple(fs.features.shape)} ({src}, {fs.seconds:.1f} s)")
    return fs


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    from ...viz.figures import save_figure as save

    return save(fig, path, dpi=120)


def pyplot() -> Any:
    """A pyplot stand-in whose ``subplots`` builds figures with the object-oriented API
    ([`adjinv.viz.figures.subplots()`][adjinv.viz.figures.subplots]): no global backend switch, no pyplot
    state."""
    from ...viz.figures import subplots

    return types.SimpleNamespace(subplots=subplots)


@contextmanager
def timer(store: dict[str, float], key: str) -> Iterator[None]:
    """Record the wall time of a block in ``store[key]`` (seconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        store[key] = round(time.perf_counter() - t0, 3)


def relative_ridge(cov: torch.Tensor, ridge_rel: float) -> float:
    """``λ = ridge_rel · tr(Σ)/C``: a ridge on the scale of the mean channel variance."""
    return float(ridge_rel * torch.trace(cov) / cov.shape[0])


def environment() -> dict:
    """Where the numbers were measured."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()}
