"""``adjinv invert-dataset``: dataset-scale inversion, sharded over ``torchrun`` ranks.

Images are taken in sorted order and grouped into shards of ``--shard-size``; shard ``i``
belongs to rank ``i mod world``. A shard is written as ``shards/shard-NNNNN.safetensors``
(x̂ at the chosen stages, and the class-directional x̂ if asked) and then
``shards/shard-NNNNN.json`` (per-image metrics) — the JSON is written last, so its
presence marks a finished shard and a re-run skips it. Each image is inverted alone, so the
numbers do not depend on how many processes ran. Rank 0 then merges every shard's JSON into
``results.json`` (per image, by file name) beside ``manifest.json``. See docs/cluster.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core.inverter import AdjointInverter
from ...distributed import barrier, init_from_env, rank_world
from ...errors import AdjinvError
from ...fileio import atomic_write_bytes, atomic_write_json
from ...images.files import list_images, load_image, resize_center_crop
from ...methods.class_directional import class_directional_weights
from ...metrics.likeness import pearson_rgb
from ...metrics.reconstruction import psnr, ssim
from ...state import parse_device
from .common import Log, quiet_log, warnings_to_log
from .skeleton import Runner, option

log = logging.getLogger(__name__)

EPILOG = """example:
  adjinv invert-dataset photos/ --out inv-photos --stages -1 --size 224
  torchrun --nproc-per-node 4 -m adjinv invert-dataset photos/ --out inv-photos
"""


@dataclass
class DatasetConfig:
    """What ``invert-dataset`` computes (stored in ``manifest.json``; a resumed run must match)."""

    size: int = 224
    stages: tuple[int, ...] = (-1,)
    shard_size: int = 16
    class_directional: bool = False
    encoder: str = "efficientnet_lite0"
    lac: str = "bundled"


def stage_indices(stages: tuple[int, ...] | list[int], n: int) -> list[int]:
    """Stage numbers made non-negative (``-1`` the deepest); one outside ``-n … n-1`` is
    refused instead of wrapping around."""
    bad = [s for s in stages if isinstance(s, bool) or not isinstance(s, int) or not -n <= s < n]
    if bad or not stages:
        raise AdjinvError(f"--stages {' '.join(map(str, bad or stages))}: the encoder has {n} "
                          f"stages; pass numbers from {-n} to {n - 1} (-1: the deepest)")
    return sorted({s % n for s in stages})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _forget_changed(out: Path, shards: list[list[Path]], data: Path, old: object,
                    new: dict[str, str]) -> None:
    """Drop the finished marks (shard JSON) of shards whose images changed since they
    were inverted (content hash), so that the run inverts them again."""
    for i, part in enumerate(shards):
        names = [f.relative_to(data).as_posix() for f in part]
        if isinstance(old, dict) and all(old.get(n) == new[n] for n in names):
            continue
        done = out / "shards" / f"shard-{i:05d}.json"
        if done.is_file():
            done.unlink()
            log.info("shard %d: its images changed (or were not hashed) since they were "
                     "inverted; inverting them again", i)


def _shard_files(files: list[Path], size: int) -> list[list[Path]]:
    return [files[i: i + size] for i in range(0, len(files), size)]


def invert_shard(inv: AdjointInverter, root: Path, files: list[Path], cfg: DatasetConfig,
                 stages: list[int]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Invert every image of one shard, one at a time; return tensors and per-image rows."""
    enc = inv.encoder
    tensors: dict[str, list[torch.Tensor]] = {}
    rows = []
    for f in files:
        t0 = time.perf_counter()
        img = resize_center_crop(load_image(f, mode="convert"), cfg.size)
        x = enc.normalize(img)[None]
        extra = None
        if cfg.class_directional:
            def extra(acts: list[torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
                return class_directional_weights(enc, acts[-1], logits.argmax(1))
        res = inv.invert(x, stages=stages, extra_weights=extra)
        prob = res.logits.softmax(1)[0]
        scores: dict[str, dict[str, float]] = {}
        row = {"file": f.relative_to(root).as_posix(), "top1": int(prob.argmax()),
               "probability": float(prob.max()), "seconds": round(time.perf_counter() - t0, 3),
               "stages": scores}
        for s in stages:
            d = enc.to_display(res.x_hat[s])
            scores[str(s)] = {"ssim": float(ssim(d, img[None])), "psnr": float(psnr(d, img[None])),
                                     "pearson": float(pearson_rgb(d, img[None]))}
            tensors.setdefault(f"x_hat.{s}", []).append(res.x_hat[s][0].float().cpu())
        for k, v in res.extra.items():
            tensors.setdefault(k, []).append(v[0].float().cpu())
        rows.append(row)
    return {k: torch.stack(v) for k, v in tensors.items()}, rows


def run(inv: AdjointInverter, data: Path, out: Path, cfg: DatasetConfig) -> Path | None:
    """Invert this rank's shards of ``data`` into ``out``; rank 0 merges. Returns the
    path of ``results.json`` on rank 0, else None."""
    from safetensors.torch import save

    rank, world = rank_world()
    files = list_images(data)
    stages = stage_indices(cfg.stages, inv.encoder.num_stages)
    shards = _shard_files(files, cfg.shard_size)
    hashes = {f.relative_to(data).as_posix(): _sha256(f) for f in files}
    manifest = {"config": json.loads(json.dumps(asdict(cfg))), "data": str(data), "images": len(files),
                "shards": [[f.relative_to(data).as_posix() for f in s] for s in shards],
                "sha256": hashes}
    mpath = out / "manifest.json"
    if rank == 0:
        if mpath.is_file():
            old = json.loads(mpath.read_text())
            if old.get("config") != manifest["config"] or old.get("shards") != manifest["shards"]:
                raise AdjinvError(f"{out} holds a run with another configuration or image list; "
                                  "use the same options or a new --out")
            _forget_changed(out, shards, data, old.get("sha256"), hashes)
        atomic_write_json(mpath, manifest)
    barrier()
    done = skipped = 0
    for i, part in enumerate(shards):
        if i % world != rank:
            continue
        stem = out / "shards" / f"shard-{i:05d}"
        if stem.with_suffix(".json").is_file():
            skipped += 1
            continue
        tensors, rows = invert_shard(inv, data, part, cfg, stages)
        atomic_write_bytes(stem.with_suffix(".safetensors"),
                           save({k: v.contiguous() for k, v in tensors.items()},
                                metadata={"files": json.dumps([r["file"] for r in rows])}))
        atomic_write_json(stem.with_suffix(".json"), rows)
        done += 1
        log.info("rank %d: shard %d done (%d images)", rank, i, len(part))
    log.info("rank %d: %d shards inverted, %d already done", rank, done, skipped)
    barrier()
    if rank != 0:
        return None
    results: dict[str, dict] = {}
    for i in range(len(shards)):
        p = out / "shards" / f"shard-{i:05d}.json"
        if not p.is_file():
            raise AdjinvError(f"shard {i} is missing ({p}); re-run the same command to finish it")
        for row in json.loads(p.read_text()):
            results[row.pop("file")] = row
    return atomic_write_json(out / "results.json", {"config": asdict(cfg), "images": results})


@dataclass
class InvertDatasetArgs:
    """The command line of ``adjinv invert-dataset``; [`DatasetConfig`][DatasetConfig] is the part
    stored in ``manifest.json``."""

    data: str = option("", "folder of images (searched recursively)", positional=True, input=True)
    encoder: str = option("efficientnet_lite0", "registry name")
    weights: str | None = option(None, "local encoder state dict")
    random_init: bool = option(False, "untrained encoder (testing only)")
    lac: str | None = option(None, "LAC checkpoint or bundled variant name (default: the bundled one)")
    size: int = option(224, "image side in px")
    stages: list[int] = option([-1], "stages whose x̂ to store (negative counts from the deepest)")
    shard_size: int = option(16, "images per shard")
    class_directional: bool = option(False, "also store the class-directional x̂ of the top-1 class")
    chunk_size: int | None = option(None, "channels per batched cascade pass (default: from free memory)")
    device: str = option("cpu", "torch device (under torchrun, cuda: one GPU per rank)")


def invert_dataset_command(args: InvertDatasetArgs, out: Path, *, log: Log = quiet_log) -> dict:
    """``adjinv invert-dataset``: load, join the torchrun group, [`run()`][run]. On rank 0 the
    number of images, the LACs' source and the ``results.json`` path; elsewhere ``{}``."""
    from ...encoders import load_encoder
    from ...lacs.bundled import load_lacs

    if args.size < 1 or args.shard_size < 1:
        raise AdjinvError("--size and --shard-size must be at least 1")
    data = Path(args.data)
    if not data.is_dir():
        raise AdjinvError(f"{data} is not a folder of images; pass the dataset's folder")
    dev = parse_device(args.device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per rank
    init_from_env(dev)
    with warnings_to_log(log):
        enc = load_encoder(args.encoder, args.weights, random_init=args.random_init).to(dev)
        lacs, _, source = load_lacs(enc, args.lac)
    cfg = DatasetConfig(size=args.size, stages=tuple(args.stages), shard_size=args.shard_size,
                        class_directional=args.class_directional, encoder=args.encoder,
                        lac=args.lac or "bundled")
    inv = AdjointInverter(enc, lacs, chunk_size=args.chunk_size)
    res = run(inv, data, out, cfg)
    if res is None:
        return {}
    return {"images": len(json.loads(res.read_text())["images"]), "lacs": source,
            "results": str(res)}


RUNNERS = (Runner(
    "invert-dataset", InvertDatasetArgs, invert_dataset_command, command=True,
    help="invert a folder of images, sharded and resumable", description=__doc__.splitlines()[0],
    epilog=EPILOG, outputs=(), out_help="output folder (resumable: re-run to finish)",
    summary=lambda r, out: [f"inverted {r['images']} images with LACs {r['lacs']}; "
                            f"wrote {r['results']}"]),)
