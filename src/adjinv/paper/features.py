"""GAP features of the deepest stage over a dataset, cached on disk (Sec. 3.2.4–3.2.5).

``g = GAP(A_L)`` (docs/method.md §0) for every image of a dataset, batched on the
encoder's device. With ``cache_dir`` the features are written in shards of
``shard_size`` images as safetensors files (each written atomically), next to a
``meta.json`` that records the encoder (name, weights hash, layout), the
dataset's description (``dataset.describe()``: root, split, size, transform,
corruption …) and the input normalisation. The folder name is a hash of that
metadata, so a changed encoder or transform never reuses stale features, and a
run that was interrupted resumes from the shards already on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..encoders.staged import StagedEncoder
from ..errors import AdjinvError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..state import to_module

logger = logging.getLogger(__name__)

FORMAT = "adjinv-gap-features/1"

Progress = Callable[[int, int], None]


@dataclass
class FeatureSet:
    """``features`` (N, C) float32 on the CPU, ``labels`` (N,) int64, and how they were
    obtained: ``meta`` (the cache metadata), ``computed`` (images run through the
    encoder in this call; 0 when everything came from the cache), ``seconds``."""

    features: torch.Tensor
    labels: torch.Tensor
    meta: dict = field(default_factory=dict)
    computed: int = 0
    seconds: float = 0.0
    cache: Path | None = None


def cache_key(encoder: StagedEncoder, description: dict) -> dict:
    """Everything that determines the features of a dataset under an encoder."""
    return {"format": FORMAT, "encoder": encoder.name, "encoder_hash": encoder.weights_hash(),
            "layout": encoder.layout(), "dataset": description,
            "normalize": {"mean": encoder.mean.tolist(), "std": encoder.std.tolist()},
            "feature": "GAP of the deepest stage A_L"}


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


@torch.no_grad()
def gap_features(encoder: StagedEncoder, images: torch.Tensor) -> torch.Tensor:
    """``GAP(A_L)`` (B, C) of images (B, 3, H, W) in [0, 1] (normalised here)."""
    x = encoder.normalize(to_module(images, encoder))
    with encoder.frozen():
        return encoder.forward_stages(x)[-1].mean(dim=(-2, -1))


def extract_gap_features(encoder: StagedEncoder, dataset: object, *, batch_size: int = 64,
                         cache_dir: str | os.PathLike | None = None, shard_size: int = 512,
                         progress: Progress | None = None) -> FeatureSet:
    """GAP features of every image of ``dataset`` (``len`` and ``ds[i] -> (image, label)``).

    ``cache_dir``: folder for the on-disk cache (None: no cache). Complete shards found
    there are loaded instead of recomputed, so an interrupted run resumes.
    ``progress(done, total)`` is called after every batch and every loaded shard.
    """
    if batch_size < 1 or shard_size < 1:
        raise AdjinvError("batch_size and shard_size must be positive")
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise AdjinvError("the dataset is empty")
    describe = getattr(dataset, "describe", None)
    description = describe() if callable(describe) else {"dataset": type(dataset).__name__, "n": n}
    key = cache_key(encoder, description)
    folder: Path | None = None
    if cache_dir is not None:
        folder = Path(cache_dir) / _digest(key)
        meta_file = folder / "meta.json"
        if meta_file.is_file():
            old = json.loads(meta_file.read_text())
            if old.get("key") != json.loads(json.dumps(key, default=str)):
                raise AdjinvError(f"{folder} holds features for something else (hash collision); "
                                  "delete it")
            shard_size = int(old["shard_size"])
        else:
            atomic_write_json(meta_file, {"key": key, "shard_size": shard_size, "n": n})
    t0 = time.perf_counter()
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    computed, done = 0, 0
    for start in range(0, n, shard_size):
        stop = min(n, start + shard_size)
        shard = folder / f"shard-{start:08d}-{stop:08d}.safetensors" if folder else None
        if shard is not None and shard.is_file():
            logger.debug("features %d-%d from the cache %s", start, stop, shard)
            f, y = _read_shard(shard, stop - start)
        else:
            fs, ys = [], []
            for b in range(start, stop, batch_size):
                items = [dataset[i] for i in range(b, min(stop, b + batch_size))]  # type: ignore[index]
                imgs = torch.stack([im for im, _ in items])
                fs.append(gap_features(encoder, imgs).float().cpu())
                ys.append(torch.tensor([int(lab) for _, lab in items], dtype=torch.long))
                computed += len(items)
                if progress is not None:
                    progress(done + sum(len(v) for v in ys), n)
            f, y = torch.cat(fs), torch.cat(ys)
            if shard is not None:
                from safetensors.torch import save

                atomic_write_bytes(shard, save({"features": f.contiguous(), "labels": y}))
        feats.append(f)
        labels.append(y)
        done = stop
        if progress is not None:
            progress(done, n)
    return FeatureSet(torch.cat(feats), torch.cat(labels), meta=key, computed=computed,
                      seconds=time.perf_counter() - t0, cache=folder)


def _read_shard(path: Path, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
        f, y = t["features"], t["labels"]
    except Exception as e:  # a damaged file: the atomic write makes this unlikely
        raise AdjinvError(f"cannot read cached features {path} ({e}); delete the file") from None
    if f.shape[0] != rows or y.shape[0] != rows:
        raise AdjinvError(f"cached shard {path} has {f.shape[0]} rows, expected {rows}; delete it")
    return f, y
