"""LAC training (Eq. 9, docs/method.md §4): ℓ1 between ``x̂_L`` and ``x``, only γ/β trained.

A step is exact by default: every live channel of the deepest stage enters
``x̂_L``. Because the ℓ1 loss does not split over channels, a step runs the
cascade twice, chunked: a no-grad pass gives ``x̂_L`` and ``∂loss/∂x̂_L``; a
second pass back-propagates that fixed cotangent chunk by chunk, so memory stays
at one chunk's graph (cost ≈ 4 inversions). ``channel_fraction < 1`` trains on a
random subset of live channels with renormalised simplex weights (faster, approximate).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .baselines.vanilla import VanillaMap, fit_vanilla_map
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .core.cascade import channel_seeds, iter_chunks
from .core.inverter import AdjointInverter
from .core.lac import LACBank
from .core.simplex import simplex_measure
from .core.validate import check_input
from .data.images import random_crop, resize_center_crop
from .encoders.staged import StagedEncoder
from .errors import AdjinvError


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_lacs` (stored in checkpoints)."""

    steps: int = 150
    lr: float = 0.02
    size: int = 96
    batch_size: int = 1
    min_crop: float = 0.35
    channel_fraction: float = 1.0
    seed: int = 0
    checkpoint_every: int = 10
    images: list[str] = field(default_factory=list)


def lac_step(inverter: AdjointInverter, x: torch.Tensor, *, channel_fraction: float = 1.0,
             gen: torch.Generator | None = None) -> float:
    """Accumulate ``∂ ‖x̂_L − x‖₁ / ∂(γ, β)`` into the LAC gradients; return the loss."""
    enc, cascade = inverter.encoder, inverter.cascade
    last = enc.num_stages - 1
    lin = cascade.linearize(x, last)
    w = simplex_measure(lin.acts[last]).detach()
    if channel_fraction < 1.0:
        keep = torch.rand(w.shape[1], generator=gen) < channel_fraction
        w = w * keep.to(w)[None]
        w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    with torch.no_grad():
        sums, _ = inverter.synthesize(lin, last, {"x_hat": w})
        x_hat = sums["x_hat"]
        loss = (x_hat - x).abs().mean()
        cot = torch.sign(x_hat - x) / x.numel()
    a = lin.acts[last]
    idx = (w != 0).any(0).nonzero().flatten()
    for ch in iter_chunks(idx, inverter._chunk(lin, last)):
        phi = cascade.pull_back(lin, last, channel_seeds(a, ch))
        part = torch.einsum("bn,nbchw->bchw", w[:, ch].to(phi.dtype), phi)
        with cascade.precision_context():
            (part * cot).sum().backward()
    return float(loss)


def _adam_extras(opt: torch.optim.Adam, names: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    for i, n in enumerate(names):
        st = opt.state.get(opt.param_groups[0]["params"][i], {})
        for k in ("exp_avg", "exp_avg_sq", "step"):
            if k in st:
                out[f"adam.{n}.{k}"] = torch.as_tensor(st[k]).float()
    return out


def _restore_adam(opt: torch.optim.Adam, names: list[str], extras: dict[str, torch.Tensor]) -> None:
    for i, n in enumerate(names):
        if f"adam.{n}.exp_avg" not in extras:
            continue
        p = opt.param_groups[0]["params"][i]
        opt.state[p] = {
            "step": extras[f"adam.{n}.step"].reshape(()).clone(),
            "exp_avg": extras[f"adam.{n}.exp_avg"].to(p).clone(),
            "exp_avg_sq": extras[f"adam.{n}.exp_avg_sq"].to(p).clone(),
        }


def train_lacs(
    encoder: StagedEncoder,
    images: Sequence[torch.Tensor],
    config: TrainConfig,
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
    chunk_size: int | None = None,
) -> tuple[LACBank, VanillaMap, list[float]]:
    """Train LACs on ``images`` ((3, H, W) in [0, 1]); return LACs, the fitted
    vanilla-gradient map (docs/method.md §13) and the loss history.

    With ``checkpoint``, the state (LACs, Adam moments, step, losses) is saved
    atomically every ``config.checkpoint_every`` steps and at the end; with
    ``resume`` a run continues from that file exactly where it stopped (the
    augmentation of step ``t`` depends only on ``(seed, t)``).
    """
    if not images:
        raise AdjinvError("no training images; pass a folder with at least one image")
    if not 0 < config.channel_fraction <= 1:
        raise AdjinvError(f"channel_fraction must be in (0, 1], got {config.channel_fraction}")
    for im in images:
        if min(im.shape[-2:]) < encoder.total_stride:
            raise AdjinvError(f"a training image of {tuple(im.shape[-2:])} px is smaller than the "
                              f"encoder's total stride {encoder.total_stride}")
    lacs = LACBank.for_encoder(encoder)
    inverter = AdjointInverter(encoder, lacs, chunk_size=chunk_size)
    names = [n for n, _ in lacs.named_parameters()]
    opt = torch.optim.Adam(lacs.parameters(), lr=config.lr)
    start, losses = 0, []
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        meta, _ = read_checkpoint(checkpoint)
        saved = meta.get("training", {})
        mismatch = [k for k in ("lr", "size", "batch_size", "seed", "channel_fraction", "min_crop")
                    if saved.get(k) != asdict(config)[k]]
        if mismatch:
            raise AdjinvError(f"cannot resume from {str(checkpoint)!r}: its training config differs "
                              f"in {', '.join(mismatch)}; use the same options or a new --out")
        loaded, ck = load_checkpoint(checkpoint, encoder)
        lacs.load_state_dict(loaded.state_dict())
        _restore_adam(opt, names, ck.extras)
        start = int(ck.meta.get("step", 0))
        losses = list(ck.meta.get("losses", []))
    p = next(iter(encoder.parameters()))
    lacs.to(p.device)

    def save(step: int, vanilla: VanillaMap | None = None) -> None:
        if checkpoint is None:
            return
        extras = _adam_extras(opt, names)
        if vanilla is not None:
            extras.update(vanilla.tensors())
        save_checkpoint(checkpoint, lacs, encoder, extras=extras,
                        meta={"training": asdict(config), "step": step, "losses": losses,
                              "complete": vanilla is not None})

    with encoder.frozen():
        for step in range(start, config.steps):
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(
                config.seed * 7919 + step // max(1, math.ceil(len(images) / config.batch_size))))
            pick = [(step * config.batch_size + j) % len(images) for j in range(config.batch_size)]
            batch = torch.stack([random_crop(images[int(order[i])], config.size, config.min_crop, gen)
                                 for i in pick])
            x = check_input(encoder.normalize(batch), encoder)
            opt.zero_grad(set_to_none=True)
            loss = lac_step(inverter, x, channel_fraction=config.channel_fraction, gen=gen)
            opt.step()
            losses.append(loss)
            if progress is not None:
                progress(step + 1, config.steps, loss)
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
                save(step + 1)
        vanilla = fit_vanilla(encoder, inverter, images, config.size)
    save(config.steps, vanilla)
    return lacs, vanilla, losses


def fit_vanilla(encoder: StagedEncoder, inverter: AdjointInverter,
                images: Sequence[torch.Tensor], size: int) -> VanillaMap:
    """Fit the vanilla baseline's per-RGB gain/offset on centre crops of the training images."""
    x = torch.stack([resize_center_crop(im, size) for im in images])
    x = check_input(encoder.normalize(x), encoder)
    v = torch.cat([inverter.vanilla_gradient(x[i:i + 1]) for i in range(x.shape[0])])
    return fit_vanilla_map(v, x)
