"""UpConvNet (Dosovitskiy & Brox 2016): a feed-forward up-convolutional decoder from the
deepest features ``A_L`` back to the image (Sec. 3.1, C.1; docs/method.md §13).

Architecture, after D&B's decoders for conv features: two 3×3 convolutions at width
``width``, then one ``ConvTranspose2d(4, stride 2)`` per factor 2 of the encoder's total
stride (halving the width, down to ``min_width``), each followed by LeakyReLU(0.2), and a
final 3×3 convolution to RGB in the encoder's normalised space. Loss: mean squared error
to the image in normalised space (D&B's Euclidean pixel loss); Adam (D&B: lr 1e-4,
β = (0.9, 0.999); [choice] default lr 1e-3, for short runs).

**Data.** ``train_upconv`` takes a fixed tensor of training images; their features are
computed once, with the encoder frozen. Random crops, as the LACs are trained on, come
from [`crop_bank()`][crop_bank]: a fixed set of ``K`` random crops per photo, each from its
own generator seeded by (seed, photo name, crop index), so the bank — and the run — is
reproducible and the encoder runs once per crop, not once per step.

**Validation and early stopping** (optional: ``val_images`` with ``validate_every``): every
``validate_every`` steps the same loss is measured on the validation images' features
(computed once, no gradient). A check that lowers the best validation loss by more than
0.1 % (relative, as the LAC training does) makes the current weights the best ones; after
``patience`` checks without such a gain training stops (``stopped: "plateau"``; at the
step cap ``stopped: "steps"``). With validation the decoder returned is the best one.

**Files.** Training is checkpointed atomically to one safetensors file (decoder, Adam
moments, the best decoder, JSON metadata: config, step, losses, validation history, best
step, the early-stopping counter, encoder layout and weight hash) and resumes exactly:
the minibatch of step ``t`` depends only on ``(seed, t)``, so a resumed run — early
stopping included — is bit-identical to an uninterrupted one.
[`export_upconv()`][export_upconv] writes the compact inference file (the best weights in
float16 and the metadata, no Adam moments); [`load_upconv()`][load_upconv] reads either
kind for inference, refusing a decoder trained for another encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_bytes
from ...images.files import random_crop
from ...lacs.checkpoint import read_tagged
from ...state import module_device, to_module

FORMAT = "adjinv-upconv/1"
MIN_GAIN = 1e-3
"""A validation check counts as a gain when it lowers the best loss by more than this
fraction (the LAC training's rule)."""
_REMAKE = "benchmarks/train_upconv.py or adjinv experiment fidelity"

log = logging.getLogger(__name__)


class UpConvDecoder(nn.Module):
    """``A_L`` (B, C_L, h, w) → image (B, 3, h·stride, w·stride) in normalised space."""

    def __init__(self, in_channels: int, total_stride: int, width: int = 256, min_width: int = 32) -> None:
        super().__init__()
        ups = int(round(math.log2(total_stride)))
        if 2**ups != total_stride:
            raise AdjinvError(f"UpConvNet needs a power-of-two total stride, got {total_stride}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        w = width
        for _ in range(ups):
            nxt = max(min_width, w // 2)
            layers += [nn.ConvTranspose2d(w, nxt, 4, 2, 1), nn.LeakyReLU(0.2)]
            w = nxt
        layers.append(nn.Conv2d(w, 3, 3, 1, 1))
        self.net = nn.Sequential(*layers)
        self.in_channels, self.total_stride = in_channels, total_stride
        self.width, self.min_width = width, min_width

    def forward(self, a: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Decode; ``size`` resizes the output (bilinear) when the image side is not a
        multiple of the stride."""
        y = self.net(a)
        if size is not None and tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


@dataclass
class UpConvConfig:
    """Training settings (stored in the checkpoint; a resume must match them, except
    ``steps``, ``checkpoint_every`` and ``patience``)."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    width: int = 256
    min_width: int = 32
    seed: int = 0
    checkpoint_every: int = 50
    images: list[str] = field(default_factory=list)
    validate_every: int = 0
    """Steps between validation checks (0: no validation)."""
    patience: int = 0
    """Checks without a validation gain before training stops (0: never stop early)."""
    validation: list[str] = field(default_factory=list)
    """Names of the validation images (a record; compared on resume)."""
    data: dict = field(default_factory=dict)
    """How the training images were made (e.g. crops per photo, min crop; compared on resume)."""


_RESUME_KEYS = ("batch_size", "lr", "width", "min_width", "seed", "images", "validate_every",
                "validation", "data")


class UpConvHistory(list):
    """The training loss of every step (a ``list[float]``), plus the validation record:
    ``validation`` (``[{"step", "val_loss"}]``), ``best_step`` and ``best_val`` (0 and
    ``None`` before the first check), ``bad`` (checks since the last gain) and
    ``stopped`` (``"plateau"``, ``"steps"``, or ``""`` while unfinished)."""

    def __init__(self, losses: list[float] | None = None, validation: list[dict] | None = None,
                 best_step: int = 0, best_val: float | None = None, bad: int = 0,
                 stopped: str = "") -> None:
        super().__init__(losses or [])
        self.validation: list[dict] = list(validation or [])
        self.best_step, self.best_val, self.bad, self.stopped = best_step, best_val, bad, stopped

    def record(self) -> dict[str, Any]:
        """The validation record as JSON-ready data."""
        return {"validation": self.validation, "best_step": self.best_step,
                "best_val": self.best_val, "bad": self.bad, "stopped": self.stopped}


@torch.no_grad()
def deepest_features(encoder: StagedEncoder, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``A_L`` of images in [0, 1] (N, 3, S, S), computed with the encoder frozen."""
    out = []
    with encoder.frozen():
        for s in range(0, images.shape[0], batch_size):
            x = encoder.normalize(to_module(images[s: s + batch_size], encoder))
            out.append(encoder.forward_stages(x)[-1])
    return torch.cat(out)


def crop_seed(seed: int, name: str, k: int) -> int:
    """The generator seed of crop ``k`` of photo ``name`` (63 bits of a SHA-256)."""
    digest = hashlib.sha256(f"upconv/{seed}/{name}/{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def crop_bank(photos: Mapping[str, torch.Tensor], size: int, crops_per_photo: int,
              min_crop: float, seed: int = 0) -> torch.Tensor:
    """(N·K, 3, size, size): ``K = crops_per_photo`` random crops of each photo (3, H, W)
    in [0, 1], in the photos' order, from
    [`random_crop()`][adjinv.images.files.random_crop] (a square covering ``min_crop``–1
    of the shorter side, flipped with probability 1/2, resized to ``size``); crop ``k``
    of photo ``name`` has its own generator, seeded by [`crop_seed()`][crop_seed]."""
    if not photos or crops_per_photo < 1 or size < 1 or not 0 < min_crop <= 1:
        raise AdjinvError("crop_bank needs photos, crops_per_photo >= 1, size >= 1 and "
                          "0 < min_crop <= 1")
    out = []
    for name, img in photos.items():
        if img.dim() != 3 or img.shape[0] != 3:
            raise AdjinvError(f"photo {name!r} has shape {tuple(img.shape)}; expected (3, H, W)")
        for k in range(crops_per_photo):
            g = torch.Generator().manual_seed(crop_seed(seed, name, k))
            out.append(random_crop(img, size, min_crop, g))
    return torch.stack(out)


def _decoder_tensors(dec: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in dec.state_dict().items()}


def _save(path: Path, dec: UpConvDecoder, opt: torch.optim.Adam, encoder: StagedEncoder,
          cfg: UpConvConfig, step: int, hist: UpConvHistory, size: int, train_count: int,
          best: dict[str, torch.Tensor] | None) -> None:
    from safetensors.torch import save

    tensors = _decoder_tensors(dec, "decoder")
    if best is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best.items()})
    for i, p in enumerate(dec.parameters()):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"adam.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    meta = {"format": FORMAT, "kind": "training", "encoder": encoder.layout(),
            "encoder_hash": encoder.weights_hash(), "config": asdict(cfg), "step": step,
            "losses": list(hist), **hist.record(), "size": size, "train_count": train_count,
            "in_channels": dec.in_channels, "total_stride": dec.total_stride,
            "complete": bool(hist.stopped)}
    atomic_write_bytes(path, save(tensors, metadata={"adjinv": json.dumps(meta)}))


def _check_encoder(meta: dict, encoder: StagedEncoder, path: Path) -> None:
    if meta["encoder"] != encoder.layout() or meta["encoder_hash"] != encoder.weights_hash():
        raise AdjinvError(f"UpConvNet checkpoint {str(path)!r} was trained for another encoder "
                          f"({meta['encoder']['name']}, hash {meta['encoder_hash']}); train one for "
                          "this encoder (a new output folder)")


def _prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(f"{prefix}."): v for k, v in tensors.items() if k.startswith(f"{prefix}.")}


@torch.no_grad()
def _val_loss(dec: UpConvDecoder, feats: torch.Tensor, targets: torch.Tensor,
              batch_size: int = 16) -> float:
    """Mean squared error over all validation images (batched; the same every call)."""
    total = 0.0
    for s in range(0, feats.shape[0], batch_size):
        t = targets[s: s + batch_size]
        total += float(F.mse_loss(dec(feats[s: s + batch_size], tuple(t.shape[-2:])), t,
                                  reduction="sum"))
    return total / targets.numel()


def train_upconv(encoder: StagedEncoder, images: torch.Tensor, cfg: UpConvConfig | None = None, *,
                 checkpoint: str | os.PathLike | None = None, resume: bool = True,
                 progress: Callable[[int, int, float], None] | None = None,
                 val_images: torch.Tensor | None = None
                 ) -> tuple[UpConvDecoder, UpConvHistory]:
    """Train a decoder on ``images`` (N, 3, S, S) in [0, 1]; return it (in eval mode) and
    the history (the per-step losses, with the validation record).

    With ``val_images`` (M, 3, S', S') in [0, 1] and ``cfg.validate_every``, the loss on
    them is checked every ``validate_every`` steps, training stops after ``cfg.patience``
    checks without a gain (0: runs to ``cfg.steps``), and the decoder returned is the
    best one. With ``checkpoint``, state is saved every ``cfg.checkpoint_every`` steps and
    at the end; with ``resume`` an existing file is continued (a finished one is just
    loaded; one stopped at the step cap continues when ``cfg.steps`` is raised)."""
    cfg = cfg or UpConvConfig()
    if images.dim() != 4 or images.shape[0] == 0:
        raise AdjinvError("UpConvNet needs a non-empty (N, 3, S, S) batch of training images")
    if cfg.steps < 0 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.checkpoint_every < 1:
        raise AdjinvError("UpConvNet needs steps >= 0, batch_size >= 1, lr > 0 and "
                          "checkpoint_every >= 1")
    if cfg.validate_every < 0 or cfg.patience < 0:
        raise AdjinvError("UpConvNet needs validate_every >= 0 and patience >= 0")
    if cfg.patience and not cfg.validate_every:
        raise AdjinvError("early stopping (patience) needs validation: set validate_every")
    if (val_images is None) != (cfg.validate_every == 0):
        raise AdjinvError("UpConvNet validation needs both val_images and validate_every > 0")
    if val_images is not None and (val_images.dim() != 4 or val_images.shape[0] == 0):
        raise AdjinvError("UpConvNet needs a non-empty (M, 3, S, S) batch of validation images")
    feats = deepest_features(encoder, images)
    targets = encoder.normalize(to_module(images, encoder))
    if val_images is not None:
        val_feats = deepest_features(encoder, val_images)
        val_targets = encoder.normalize(to_module(val_images, encoder))
    torch.manual_seed(cfg.seed)
    dec = UpConvDecoder(feats.shape[1], encoder.total_stride, cfg.width, cfg.min_width)
    dec = dec.to(device=module_device(encoder), dtype=targets.dtype)
    opt = torch.optim.Adam(dec.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    start, hist = 0, UpConvHistory()
    best: dict[str, torch.Tensor] | None = None
    path = Path(checkpoint) if checkpoint is not None else None
    if resume and path is not None and path.is_file():
        meta, tensors = read_tagged(path, FORMAT, "UpConvNet checkpoint", _REMAKE)
        _check_encoder(meta, encoder, path)
        if meta.get("kind", "training") != "training":
            raise AdjinvError(f"{str(path)!r} is an inference-only UpConvNet export (no optimiser "
                              "state); it cannot be resumed: train into another file")
        saved, mine = meta["config"], asdict(cfg)
        defaults = {f.name: getattr(UpConvConfig(), f.name) for f in fields(UpConvConfig)}
        differ = [k for k in _RESUME_KEYS if saved.get(k, defaults[k]) != mine[k]]
        if meta["size"] != images.shape[-1] or meta.get("train_count", len(images)) != len(images):
            differ.append("training images")
        if differ:
            raise AdjinvError(f"cannot resume {str(path)!r}: its settings differ in "
                              f"{', '.join(differ)}; use a new output folder")
        dec.load_state_dict(_prefixed(tensors, "decoder"))
        params = list(dec.parameters())
        for i, q in enumerate(params):
            st = {k.split(".", 2)[2]: v.to(q.device) for k, v in tensors.items()
                  if k.startswith(f"adam.{i}.")}
            if st:
                st["step"] = st["step"].cpu()
                opt.state[q] = st
        start = int(meta["step"])
        hist = UpConvHistory(meta["losses"], meta.get("validation"), int(meta.get("best_step", 0)),
                             meta.get("best_val"), int(meta.get("bad", 0)),
                             meta.get("stopped", "steps" if meta.get("complete") else ""))
        if any(k.startswith("best.") for k in tensors):
            best = {k: v.to(module_device(encoder)) for k, v in _prefixed(tensors, "best").items()}
    size = tuple(targets.shape[-2:])
    stopped = hist.stopped == "plateau"
    ran = False
    dec.train()
    step = start
    while step < cfg.steps and not stopped:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, feats.shape[0], (cfg.batch_size,), generator=g).to(feats.device)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(dec(feats[idx], size), targets[idx])
        loss.backward()
        opt.step()
        step, ran = step + 1, True
        hist.stopped = ""
        hist.append(loss.item())
        if val_images is not None and step % cfg.validate_every == 0:
            v = _val_loss(dec, val_feats, val_targets)
            hist.validation.append({"step": step, "val_loss": v})
            if hist.best_val is None or v < hist.best_val * (1 - MIN_GAIN):
                hist.best_val, hist.best_step, hist.bad = v, step, 0
                best = {k: t.detach().clone() for k, t in dec.state_dict().items()}
            else:
                hist.bad += 1
            log.info("UpConvNet step %d: validation loss %.5f (best %.5f at step %d)",
                     step, v, hist.best_val, hist.best_step)
            if cfg.patience and hist.bad >= cfg.patience:
                stopped, hist.stopped = True, "plateau"
                log.info("UpConvNet: early stop at step %d, no validation gain for %d checks",
                         step, hist.bad)
        if progress is not None:
            progress(step, cfg.steps, hist[-1])
        if path is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps and not stopped:
            _save(path, dec, opt, encoder, cfg, step, hist, images.shape[-1], len(images), best)
    if not hist.stopped and step >= cfg.steps:
        hist.stopped = "steps"
    if path is not None and (ran or not path.is_file()):
        _save(path, dec, opt, encoder, cfg, step, hist, images.shape[-1], len(images), best)
    if best is not None:
        dec.load_state_dict(best)
    dec.eval()
    return dec, hist


def _build(meta: dict, tensors: Mapping[str, torch.Tensor], prefix: str, path: Path,
           encoder: StagedEncoder) -> UpConvDecoder:
    cfg = meta["config"]
    state = _prefixed(tensors, prefix)
    bad = [k for k, v in state.items() if not v.is_floating_point() or not torch.isfinite(v).all()]
    if bad:
        raise AdjinvError(f"UpConvNet file {str(path)!r} has non-finite or non-float weights "
                          f"({', '.join(bad[:3])}); re-create it with {_REMAKE}")
    dec = UpConvDecoder(int(meta["in_channels"]), int(meta["total_stride"]), int(cfg["width"]),
                        int(cfg["min_width"]))
    try:
        dec.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise AdjinvError(f"UpConvNet file {str(path)!r} does not match its own metadata "
                          f"({str(e).splitlines()[0]}); re-create it with {_REMAKE}") from None
    return dec.to(device=module_device(encoder)).eval()


def load_upconv(path: str | os.PathLike, encoder: StagedEncoder) -> UpConvDecoder:
    """The decoder of an UpConvNet file — a training checkpoint (its best weights when it
    validated, else its last) or an [`export_upconv()`][export_upconv] file — in eval mode,
    float32, on the encoder's device. Refuses a file trained for another encoder (layout
    or weights)."""
    p = Path(path)
    meta, tensors = read_tagged(p, FORMAT, "UpConvNet checkpoint", _REMAKE)
    _check_encoder(meta, encoder, p)
    if meta.get("kind", "training") == "training" and not meta.get("complete"):
        log.warning("UpConvNet checkpoint %s is unfinished (step %s); using its %s weights",
                    p, meta.get("step"), "best" if meta.get("best_val") is not None else "last")
    prefix = "best" if any(k.startswith("best.") for k in tensors) else "decoder"
    return _build(meta, tensors, prefix, p, encoder)


def export_upconv(src: str | os.PathLike, dst: str | os.PathLike,
                  dtype: torch.dtype = torch.float16) -> dict:
    """Write the inference-only file of the training checkpoint ``src`` to ``dst``
    (atomically): the best weights (the last without validation) stored as ``dtype``
    (float16 by default; [`load_upconv()`][load_upconv] upcasts), and the metadata without
    the per-step losses or Adam moments. Returns the metadata written."""
    from safetensors.torch import save

    p = Path(src)
    meta, tensors = read_tagged(p, FORMAT, "UpConvNet checkpoint", _REMAKE)
    if meta.get("kind", "training") != "training":
        raise AdjinvError(f"{str(p)!r} is already an UpConvNet export")
    has_best = any(k.startswith("best.") for k in tensors)
    state = _prefixed(tensors, "best" if has_best else "decoder")
    out = {f"decoder.{k}": v.to(dtype).contiguous() for k, v in state.items()}
    if not all(torch.isfinite(v).all() for v in out.values()):
        raise AdjinvError(f"the weights of {str(p)!r} overflow {dtype}; export with "
                          "dtype=torch.float32")
    losses = meta.get("losses", [])
    keep = ("encoder", "encoder_hash", "config", "size", "train_count", "in_channels",
            "total_stride", "step", "validation", "best_step", "best_val", "stopped", "complete")
    new = {"format": FORMAT, "kind": "inference", **{k: meta.get(k) for k in keep},
           "weights_step": meta.get("best_step") if has_best else meta.get("step"),
           "final_loss": losses[-1] if losses else None, "storage_dtype": str(dtype).split(".")[-1]}
    atomic_write_bytes(dst, save(out, metadata={"adjinv": json.dumps(new)}))
    return new


@torch.no_grad()
def upconv_reconstruct(encoder: StagedEncoder, decoder: UpConvDecoder, x: torch.Tensor) -> torch.Tensor:
    """Decoder output (normalised space) for the normalised batch ``x``."""
    with encoder.frozen():
        a = encoder.forward_stages(x)[-1]
    decoder.eval()
    return decoder(a, tuple(x.shape[-2:]))
