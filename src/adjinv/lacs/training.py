"""LAC training (Eq. 9; docs/method.md §4 and §15).

Only γ/β are trained. Three objectives:

- ``"paper"``: ``ℓ1(x̂_L, x)`` with every LAC's γ and β trained (Eq. 9 as published).
- ``"pixbias"``: the same loss, but the inner LACs are pure normalisations (β_k = 0 at
  every inner boundary, only γ_k trained); β is trained only at the pixels. Then the
  seed-zero cascade Ψ(0) is the constant image β_pix: no likeness can come from biases
  pulled back through the image's own Jacobians.
- ``"reference"``: ``ℓ1(x̂_ref, x)`` where ``x̂_ref`` pulls the photo's seeds and simplex
  weights back through the Jacobians of one fixed *reference* input (zero after
  normalisation: the centre colour of the encoder's normalisation) instead of the photo's
  own (docs/method.md §16).
  Every γ and β is trained: the biases then add the same image to every reconstruction,
  so whatever distinguishes one photo's x̂ from another's comes from its features.
- ``"contrastive"``: ``"pixbias"`` plus a hinge that asks the image's own features to
  beat another photo's features pulled back through the same Jacobians:
  ``ℓ1(x̂, x) + λ·max(0, ℓ1(x̂, x) − ℓ1(x̂_swap, x) + m)``; the partner is the next photo
  of the batch (a derangement, so never the photo itself).
- ``"multipath"``: Eq. 31, the multi-path alternative the paper argues against (Supp. A.4):
  ``Σ_l ℓ1(x̂_l, x)`` over every source stage ``l = 0 … L`` (stem included), unweighted,
  every γ and β trained (docs/method.md §4). Each stage's term is the ``"paper"`` term of
  that stage, with its own cascade passes.

A step computes ``x̂_L`` exactly (one pass over every live channel), then
back-propagates the fixed cotangent ``∂loss/∂x̂``. With ``channel_fraction < 1`` the
gradient covers channels *sampled in proportion to their simplex weight* (with
replacement) and reweighted by their counts, so it is an unbiased estimate of the
exact one (``x̂`` itself stays exact). Where the recorded pull-backs of the gradient's
channels fit in a quarter of the device's memory (`graph_budget()`), they are recorded
during the one pass that gives ``x̂`` and back-propagated once ``∂loss/∂x̂`` is known
(`_one_pass()`); otherwise they are pulled back a second time, chunk by chunk
(`_backward()`). Both give the same gradient up to float rounding.

``train_lacs`` adds a validation set (loss logged, never trained on), a cosine
learning-rate schedule, early stopping on the validation objective with the best
checkpoint kept, a JSON/CSV log, a loss-curve plot, and copies of the LACs at chosen
steps for learning curves. Checkpoints are atomic; ``resume`` continues bit-exactly.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core.cascade import Linearization, channel_seeds
from ..core.inverter import AdjointInverter
from ..core.lac import LACBank
from ..core.memory import total_bytes
from ..core.simplex import simplex_measure
from ..core.validate import check_input
from ..distributed import all_reduce_sum, rank_world
from ..encoders.staged import StagedEncoder
from ..errors import AdjinvError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..images.files import random_crop, resize_center_crop
from ..state import module_device
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .vanilla import VanillaMap, fit_vanilla_map

log = logging.getLogger(__name__)

OBJECTIVES = ("paper", "pixbias", "contrastive", "reference", "multipath")
SCHEDULES = ("cosine", "constant")
XHAT_MODES = ("exact", "sampled")
# the config fields a resumed run must share with the saved one: those that shape the
# trajectory of γ/β. How often validation runs and how many checks early stopping waits
# (validate_every, patience) may change on resume: they pick the checkpoint, not the steps.
_RESUME_KEYS = ("lr", "size", "batch_size", "seed", "channel_fraction", "min_crop", "objective",
                "contrast_weight", "contrast_margin", "schedule", "min_lr_ratio", "images",
                "xhat", "top")


@dataclass
class TrainConfig:
    """Hyper-parameters of `train_lacs()` (stored in checkpoints)."""

    steps: int = 150
    lr: float = 0.02
    size: int = 96
    batch_size: int = 1
    min_crop: float = 0.35
    channel_fraction: float = 1.0
    seed: int = 0
    checkpoint_every: int = 10
    images: list[str] = field(default_factory=list)
    objective: str = "paper"
    contrast_weight: float = 1.0
    contrast_margin: float = 0.02
    schedule: str = "constant"
    min_lr_ratio: float = 0.05
    validate_every: int = 0
    patience: int = 0
    keep_every: int = 0
    xhat: str = "exact"
    top: float = 0.0

    def check(self) -> None:
        """Refuse values that cannot train, naming the fix."""
        if self.steps < 1:
            raise AdjinvError(f"steps must be at least 1, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise AdjinvError(f"lr must be a positive number, got {self.lr}")
        if self.size < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise AdjinvError("size, batch_size and checkpoint_every must be at least 1 (got "
                              f"{self.size}, {self.batch_size}, {self.checkpoint_every})")
        if not 0 < self.channel_fraction <= 1:
            raise AdjinvError(f"channel_fraction must be in (0, 1], got {self.channel_fraction}")
        if not 0 < self.min_crop <= 1:
            raise AdjinvError(f"min_crop must be in (0, 1], got {self.min_crop}")
        if self.objective not in OBJECTIVES:
            raise AdjinvError(f"objective must be one of {', '.join(OBJECTIVES)}, "
                              f"got {self.objective!r}")
        if self.objective == "contrastive" and self.batch_size < 2:
            raise AdjinvError("the contrastive objective pairs the photos of a batch: use "
                              "batch_size >= 2")
        if self.xhat not in XHAT_MODES:
            raise AdjinvError(f"xhat must be one of {', '.join(XHAT_MODES)}, got {self.xhat!r}")
        if self.xhat == "sampled" and self.objective not in ("paper", "multipath"):
            raise AdjinvError("xhat='sampled' is implemented for the paper and multipath "
                              "objectives; use xhat='exact' with this objective")
        if not 0.0 <= self.top < 1.0:
            raise AdjinvError(f"top must be in [0, 1), got {self.top}")
        if self.schedule not in SCHEDULES:
            raise AdjinvError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                              f"got {self.schedule!r}")
        if self.validate_every < 0 or self.patience < 0 or self.keep_every < 0:
            raise AdjinvError("validate_every, patience and keep_every must be >= 0")
        if self.patience and not self.validate_every:
            raise AdjinvError("early stopping (patience) needs validation: set validate_every")

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""
        if self.schedule == "constant":
            return self.lr
        t = min(1.0, step / max(1, self.steps - 1))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def linearize_at(objective: str) -> str:
    """Where the LACs of ``objective`` take their Jacobians (docs/method.md §16)."""
    return "reference" if objective == "reference" else "input"


def freeze_for_objective(lacs: LACBank, objective: str) -> None:
    """``"pixbias"``/``"contrastive"``: inner β fixed at 0 (not trained); ``"paper"``,
    ``"reference"`` and ``"multipath"``: all trained."""
    inner = objective in ("pixbias", "contrastive")
    for name, lac in lacs.lacs.items():
        if name != "pix" and inner:
            beta: torch.nn.Parameter = lac.beta  # type: ignore[assignment]
            with torch.no_grad():
                beta.zero_()
            beta.requires_grad_(False)


def sample_weights(w: torch.Tensor, fraction: float, gen: torch.Generator | None,
                   top: float = 0.0) -> torch.Tensor:
    """Unbiased sparse stand-in for the simplex weights ``w`` (B, C): per image, a budget of
    ``n = ⌈fraction · live⌉`` channels. The ``⌊top · n⌋`` channels of largest weight keep
    their exact weight (stratified: no variance from them); the other draws are taken
    with replacement in proportion to the remaining weights, each weighted by its
    count / draws × the remaining mass. So ``E[ŵ] = w`` and every term of Eq. 8 keeps its
    expectation (docs/method.md §4)."""
    if fraction >= 1.0:
        return w
    if not 0.0 <= top < 1.0:
        raise AdjinvError(f"top must be in [0, 1), got {top}")
    out = torch.zeros_like(w)
    for b in range(w.shape[0]):
        wb = w[b].double().cpu()
        live = int((wb > 0).sum())
        n = max(1, math.ceil(fraction * live))
        k = min(int(top * n), live - 1) if live > 1 else 0
        rest = wb.clone()
        if k > 0:
            first = wb.topk(k).indices
            out[b, first.to(w.device)] = w[b, first.to(w.device)]
            rest[first] = 0
        mass = float(rest.sum())
        if mass <= 0:
            continue
        draws = torch.multinomial(rest, n - k, replacement=True, generator=gen)
        counts = torch.bincount(draws, minlength=w.shape[1])
        if k == 0:  # plain sampling, as in every run before stratification existed
            out[b] = counts.to(w) / n
        else:
            out[b] += (counts.double() / (n - k) * mass).to(w)
    return out


def _backward(inverter: AdjointInverter, lin: Linearization, stage: int,
              terms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """Accumulate ``∂/∂(γ,β) Σ_terms ⟨Σ_c W_{b,c} Ψ(E_c ⊙ source), cot⟩`` into the ``.grad``
    of the trainable LAC parameters: each term is ``(source (B,C,h,w), W (B,C), cot
    (B,3,H,W))``; chunked so memory stays at one chunk (`AdjointInverter.chunks()`,
    docs/method.md §3). A chunk's gradients are added only once all its terms are
    through, so a chunk retried after out-of-memory is never counted twice."""
    live = torch.zeros(terms[0][1].shape[1], dtype=torch.bool, device=lin.x.device)
    for _, w, _ in terms:
        live |= (w != 0).any(0)
    idx = live.nonzero().flatten()
    params = [p for p in inverter.lacs.parameters() if p.requires_grad]

    def grads(ch: torch.Tensor) -> list[tuple[torch.Tensor | None, ...]]:
        out: list[tuple[torch.Tensor | None, ...]] = []
        for src, w, cot in terms:
            wc = w[:, ch]
            if not bool((wc != 0).any()):
                continue
            phi = inverter.cascade.pull_back(lin, stage, channel_seeds(src, ch))
            part = torch.einsum("bn,nbchw->bchw", wc.to(phi.dtype), phi)
            with inverter.cascade.precision_context():
                out.append(torch.autograd.grad((part * cot).sum(), params, allow_unused=True))
        return out

    for _, per_term in inverter.chunks(lin, stage, idx, grads):
        for gs in per_term:  # in the order .backward() would have accumulated them
            _accumulate(params, gs)


def _accumulate(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    """Add ``grads`` into the ``.grad`` of ``params`` (as ``.backward()`` would)."""
    for p, g in zip(params, grads, strict=True):
        if g is not None:
            p.grad = torch.empty_like(p).copy_(g) if p.grad is None else p.grad.add_(g)


def graph_budget(device: torch.device) -> int:
    """Bytes the recorded pull-backs of one step may hold for `_one_pass()`: a quarter of
    ``device``'s memory. Its total, not what is free now, so that a run and its resumption
    choose the same path (a resumed run stays bit-identical); a CUDA out-of-memory error
    still falls back to the two passes."""
    return total_bytes(device) // 4


def _one_pass(inverter: AdjointInverter, lin: Linearization, stage: int, src: torch.Tensor,
              w: torch.Tensor, w_grad: torch.Tensor, x: torch.Tensor, norm: int,
              budget: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``x̂ = Σ_c w_c φ_c`` and ``ℓ1(x̂, x)`` per image from a single cascade pass, with the
    gradient of ``⟨Σ_c ŵ_c φ_c, ∂loss/∂x̂⟩`` (``ŵ = w_grad``) accumulated into the LAC
    parameters' ``.grad``: the channels of ``ŵ`` are pulled back with their autograd
    graph kept, the others without, and one backward runs once ``∂loss/∂x̂`` is known.
    The same numbers as a no-grad synthesis followed by `_backward()`, with one pass fewer
    over the gradient's channels (docs/method.md §4). ``None`` (nothing done) when the
    kept graphs would not fit ``budget`` bytes (default `graph_budget()`), or when the
    batch's images have such different live channels that `AdjointInverter.synthesize()`
    would pull them back image by image."""
    live = w != 0
    if w.shape[0] > 1 and int(live.any(0).sum()) * w.shape[0] > \
            inverter.SPLIT_RATIO * int(live.sum()):
        return None  # images whose live channels differ: x̂ image by image, as synthesize() does
    grad_on = (w_grad != 0).any(0)
    idx_grad = grad_on.nonzero().flatten()
    idx_rest = (live.any(0) & ~grad_on).nonzero().flatten()
    need = idx_grad.numel() * inverter.cascade.per_item_bytes(lin, stage) * 5 // 4
    if need > (graph_budget(lin.x.device) if budget is None else budget):
        return None
    params = [p for p in inverter.lacs.parameters() if p.requires_grad]

    def pull(ch: torch.Tensor) -> torch.Tensor:
        return inverter.cascade.pull_back(lin, stage, channel_seeds(src, ch))

    x_hat = torch.zeros_like(x)
    recorded: torch.Tensor | int = 0
    try:
        for ch, phi in inverter.chunks(lin, stage, idx_grad, pull):
            x_hat = x_hat + torch.einsum("bn,nbchw->bchw", w[:, ch].to(phi.dtype), phi.detach())
            recorded = recorded + torch.einsum("bn,nbchw->bchw", w_grad[:, ch].to(phi.dtype),
                                               phi)
    except torch.cuda.OutOfMemoryError:  # nothing accumulated yet: the caller's two passes
        log.info("the recorded pull-backs did not fit; pulling the gradient's channels "
                 "back a second time instead")
        del recorded, x_hat
        torch.cuda.empty_cache()
        return None
    with torch.no_grad():
        for ch, phi in inverter.chunks(lin, stage, idx_rest, pull):
            x_hat = x_hat + torch.einsum("bn,nbchw->bchw", w[:, ch].to(phi.dtype), phi)
        l1 = (x_hat - x).abs().flatten(1).mean(1)
        cot = torch.sign(x_hat - x) / norm
    if isinstance(recorded, torch.Tensor) and recorded.requires_grad and params:
        with inverter.cascade.precision_context():
            _accumulate(params, torch.autograd.grad((recorded * cot).sum(), params,
                                                    allow_unused=True))
    return x_hat, l1


@dataclass
class StepStats:
    """What one step measured: the ℓ1 of x̂_L and, for the contrastive objective, of x̂_swap;
    for the multipath objective ``stage_l1[l]`` is the ℓ1 of x̂_l (``objective`` their sum)."""

    l1: float
    swap_l1: float | None = None
    objective: float = 0.0
    n: int = 1
    stage_l1: list[float] | None = None


def lac_step(inverter: AdjointInverter, x: torch.Tensor, *, channel_fraction: float = 1.0,
             gen: torch.Generator | None = None, objective: str = "paper",
             contrast_weight: float = 1.0, contrast_margin: float = 0.02,
             backward: bool = True, total: int | None = None, xhat: str = "exact",
             top: float = 0.0) -> StepStats:
    """One step of the chosen objective on the batch ``x``: accumulate the gradient of the
    objective into the LAC γ/β (``backward=True``) and return what it measured.

    ``x̂_L`` (and ``x̂_swap``, and every ``x̂_l`` for ``"multipath"``) are exact; with
    ``channel_fraction < 1`` the gradient is importance-sampled (`sample_weights()`,
    the same fraction at every stage) and unbiased. ``total``: the number of images the
    loss averages over (the global batch when ranks split one; default ``B``).

    ``xhat="sampled"`` (``"paper"`` objective): one set of sampled weights ŵ
    (`sample_weights()` with ``top``) serves both passes: ``x̂`` is the unbiased
    estimate ``Σ ŵ_c φ_c`` and the gradient is that of ``ℓ1(Σ ŵ_c φ_c, x)``, so no pass
    covers every live channel. The reported ``l1`` is then that of the estimate
    (docs/method.md §4; its gradient against the exact step: benchmarks/gradient_variance.py)."""
    enc = inverter.encoder
    last = enc.num_stages - 1
    if (objective == "reference") != inverter.at_reference:
        raise AdjinvError("the reference objective needs LACs built with "
                          "linearize_at='reference', and only it")
    lin, acts = inverter.linearize(x, last)  # at the reference for "reference" (§16)
    a = acts[last].detach()
    ref = inverter.at_reference
    w = simplex_measure(a).detach()
    contrast = objective == "contrastive"
    b = x.shape[0]
    norm = (total or b) * x[0].numel()
    sampled = xhat == "sampled" and channel_fraction < 1
    if xhat == "sampled" and objective not in ("paper", "multipath"):
        raise AdjinvError("xhat='sampled' is implemented for the paper and multipath "
                          "objectives only")
    if objective == "multipath":
        return _multipath_step(inverter, lin, acts, x, norm, channel_fraction, gen, backward,
                               sampled, top)
    if sampled:
        w = sample_weights(w, channel_fraction, gen, top)
    if backward and not contrast:
        w_grad = w if sampled else sample_weights(w, channel_fraction, gen, top)
        done = _one_pass(inverter, lin, last, a, w, w_grad, x, norm)
        if done is not None:
            l1 = done[1]
            return StepStats(l1=float(l1.mean()), n=b, objective=float(l1.mean()))
    with torch.no_grad():
        sets = {"x_hat": w}
        x_hat = inverter.synthesize(lin, last, sets, source=a if ref else None)[0]["x_hat"]
        l1 = (x_hat - x).abs().flatten(1).mean(1)
        cot = torch.sign(x_hat - x) / norm
        stats = StepStats(l1=float(l1.mean()), n=b)
        terms = [(a, w, cot)]
        if contrast:
            if b < 2:
                raise AdjinvError("the contrastive objective needs at least 2 photos per batch")
            src, w_swap = a.roll(1, 0), w.roll(1, 0)
            x_swap = inverter.synthesize(lin, last, {"x_hat": w_swap}, source=src)[0]["x_hat"]
            l1_swap = (x_swap - x).abs().flatten(1).mean(1)
            hinge = (l1 - l1_swap + contrast_margin).clamp_min(0)
            on = (hinge > 0).to(x)[:, None, None, None]
            cot = cot * (1 + contrast_weight * on)
            cot_swap = -contrast_weight * on * torch.sign(x_swap - x) / norm
            terms = [(a, w, cot), (src, w_swap, cot_swap)]
            stats.swap_l1 = float(l1_swap.mean())
            stats.objective = float((l1 + contrast_weight * hinge).mean())
        else:
            stats.objective = stats.l1
    if backward:
        if contrast and not sampled:
            terms = [(s, sample_weights(wt, channel_fraction, gen, top), c) for s, wt, c in terms]
        elif not contrast:  # _one_pass() found no room: the same weights, a second pass
            terms = [(a, w_grad, cot)]
        _backward(inverter, lin, last, terms)
    return stats


def _multipath_step(inverter: AdjointInverter, lin: Linearization, acts: list[torch.Tensor],
                    x: torch.Tensor, norm: int, channel_fraction: float,
                    gen: torch.Generator | None, backward: bool, sampled: bool = False,
                    top: float = 0.0) -> StepStats:
    """Eq. 31 (docs/method.md §4): the ``"paper"`` term of every source stage, deepest
    first, each with its own exact ``x̂_l`` (``sampled``: its unbiased estimate from the
    same sampled weights as its gradient) and its own (sampled) backward pass."""
    per: list[float] = []
    for s in range(len(acts) - 1, -1, -1):
        a_s = acts[s].detach()
        w_s = simplex_measure(a_s).detach()
        if sampled:
            w_s = sample_weights(w_s, channel_fraction, gen, top)
        if backward:  # the gradient's weights, drawn in the same order as before _one_pass
            ws = w_s if sampled else sample_weights(w_s, channel_fraction, gen, top)
            done = _one_pass(inverter, lin, s, a_s, w_s, ws, x, norm)
            if done is not None:
                per.append(float(done[1].mean()))
                continue
        with torch.no_grad():
            x_s = inverter.synthesize(lin, s, {"x_hat": w_s})[0]["x_hat"]
            per.append(float((x_s - x).abs().flatten(1).mean(1).mean()))
        if backward:
            _backward(inverter, lin, s, [(a_s, ws, torch.sign(x_s - x) / norm)])
    stage_l1 = per[::-1]
    return StepStats(l1=stage_l1[-1], objective=sum(stage_l1), n=x.shape[0], stage_l1=stage_l1)


def _global_stats(st: StepStats) -> StepStats:
    """The batch means over all ranks of what each rank's step measured."""
    swap = st.swap_l1 if st.swap_l1 is not None else 0.0
    t = torch.tensor([st.l1 * st.n, st.objective * st.n, swap * st.n, float(st.n),
                      *(v * st.n for v in st.stage_l1 or [])], dtype=torch.float64)
    all_reduce_sum([t])
    n = float(t[3])
    return StepStats(l1=float(t[0]) / n, objective=float(t[1]) / n,
                     swap_l1=None if st.swap_l1 is None else float(t[2]) / n, n=int(n),
                     stage_l1=None if st.stage_l1 is None else [float(v) / n for v in t[4:]])


def _adam_extras(opt: torch.optim.Adam, names: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    params = opt.param_groups[0]["params"]
    for n, p in zip(names, params, strict=True):
        st = opt.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq", "step"):
            if k in st:
                out[f"adam.{n}.{k}"] = torch.as_tensor(st[k]).float()
    return out


def _restore_adam(opt: torch.optim.Adam, names: list[str], extras: dict[str, torch.Tensor]) -> None:
    for n, p in zip(names, opt.param_groups[0]["params"], strict=True):
        if f"adam.{n}.exp_avg" not in extras:
            continue
        opt.state[p] = {
            "step": extras[f"adam.{n}.step"].reshape(()).clone(),
            "exp_avg": extras[f"adam.{n}.exp_avg"].to(p).clone(),
            "exp_avg_sq": extras[f"adam.{n}.exp_avg_sq"].to(p).clone(),
        }


def _validation_batch(encoder: StagedEncoder, images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    return check_input(encoder.normalize(torch.stack([resize_center_crop(i, size) for i in images])),
                       encoder)


def validate(inverter: AdjointInverter, x: torch.Tensor, config: TrainConfig) -> StepStats:
    """The objective on fixed validation crops ``x`` (no gradient). For the contrastive
    objective the partners are the other validation photos (needs at least two).
    The multipath objective validates on itself (Eq. 31)."""
    contrast = config.objective == "contrastive" and x.shape[0] >= 2
    objective = ("contrastive" if contrast else config.objective
                 if config.objective in ("reference", "multipath") else "paper")
    with inverter.encoder.frozen(), torch.no_grad():
        return lac_step(inverter, x, objective=objective,
                        contrast_weight=config.contrast_weight,
                        contrast_margin=config.contrast_margin, backward=False)


def run_stem(checkpoint: str | os.PathLike) -> str:
    """The name a run's log, plot and kept steps share: the checkpoint's file name less
    ``.lac.safetensors`` / ``.safetensors`` (else its last suffix), so that ``run.a`` and
    ``run.b`` keep apart (``lite0.lac.safetensors`` still gives ``lite0``)."""
    name = Path(checkpoint).name
    for suffix in (".lac.safetensors", ".safetensors"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def _step_dir(checkpoint: str | os.PathLike) -> Path:
    return Path(checkpoint).with_name(run_stem(checkpoint) + ".steps")


def kept_checkpoints(checkpoint: str | os.PathLike) -> list[Path]:
    """The LAC copies that `train_lacs()` kept along training (``keep_every``), by step."""
    d = _step_dir(checkpoint)
    return sorted(d.glob("step-*.lac.safetensors")) if d.is_dir() else []


def write_log(path: str | os.PathLike, history: list[dict]) -> tuple[Path, Path]:
    """The training history as ``<stem>.log.json`` and ``<stem>.log.csv`` beside ``path``."""
    p = Path(path)
    stem = run_stem(p)
    js = atomic_write_json(p.with_name(stem + ".log.json"), history)
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=keys)
    wr.writeheader()
    wr.writerows(history)
    return js, atomic_write_bytes(p.with_name(stem + ".log.csv"), buf.getvalue().encode())


def plot_history(path: str | os.PathLike, history: list[dict]) -> Path:
    """Loss curve (training ℓ1, validation ℓ1 and, if any, validation swapped-seed ℓ1) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [r["step"] for r in history]
    ax.plot(steps, [r["loss"] for r in history], lw=0.6, alpha=0.5, label="train ℓ1 (crop)")
    k = max(1, len(history) // 20)
    smooth = [sum(r["loss"] for r in history[max(0, i - k): i + 1]) / len(history[max(0, i - k): i + 1])
              for i in range(len(history))]
    ax.plot(steps, smooth, lw=1.5, label=f"train ℓ1 (mean of {k + 1})")
    val = [r for r in history if "val_l1" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_l1"] for r in val], "o-", label="validation ℓ1")
        if any("val_swap_l1" in r for r in val):
            ax.plot([r["step"] for r in val], [r.get("val_swap_l1", float("nan")) for r in val], "s--",
                    label="validation ℓ1, swapped seeds")
    ax.set_xlabel("step")
    ax.set_ylabel("ℓ1(x̂_L, x)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write_bytes(p.with_name(run_stem(p) + ".loss.png"), buf.getvalue())


def train_lacs(
    encoder: StagedEncoder,
    images: Sequence[torch.Tensor],
    config: TrainConfig,
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
    chunk_size: int | None = None,
    validation: Sequence[torch.Tensor] | None = None,
) -> tuple[LACBank, VanillaMap, list[float]]:
    """Train LACs on ``images`` ((3, H, W) in [0, 1]); return LACs, the fitted
    vanilla-gradient map (docs/method.md §13) and the training losses.

    Args:
        encoder: the frozen encoder.
        images: training photos; random crops of ``config.size`` px.
        config: hyper-parameters; see `TrainConfig`.
        checkpoint: state file (LACs, Adam moments, step, history, best LACs), written
            atomically every ``config.checkpoint_every`` steps and at the end, with a
            JSON/CSV log and a loss plot beside it; ``config.keep_every`` also keeps
            ``<stem>.steps/step-NNNNN.lac.safetensors`` copies (step 0 = identity).
        resume: continue from ``checkpoint`` exactly where it stopped (the augmentation of
            step ``t`` depends only on ``(seed, t)``).
        progress: called as ``progress(step, total, loss)``.
        chunk_size: channels per batched pull-back (default from free memory).
        validation: photos never trained on; centre crops at ``config.size`` give the
            validation objective every ``config.validate_every`` steps. With validation,
            the LACs returned (and saved) are those of the best validation objective.
    """
    config.check()
    if not images:
        raise AdjinvError("no training images; pass a folder with at least one image")
    for im in [*images, *(validation or [])]:
        if min(im.shape[-2:]) < encoder.total_stride:
            raise AdjinvError(f"a training image of {tuple(im.shape[-2:])} px is smaller than the "
                              f"encoder's total stride {encoder.total_stride}")
    if config.validate_every and not validation:
        raise AdjinvError("validate_every is set but no validation photos were given")
    rank, world = rank_world()
    if config.batch_size % world:
        raise AdjinvError(f"batch_size {config.batch_size} does not split over {world} processes: "
                          "use a multiple of the process count")
    local = slice(rank * config.batch_size // world, (rank + 1) * config.batch_size // world)
    lacs = LACBank.for_encoder(encoder, linearize_at=linearize_at(config.objective))
    freeze_for_objective(lacs, config.objective)
    inverter = AdjointInverter(encoder, lacs, chunk_size=chunk_size)
    named = [(n, p) for n, p in lacs.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    opt = torch.optim.Adam([p for _, p in named], lr=config.lr)
    start, history = 0, []
    best: dict[str, torch.Tensor] | None = None
    best_val, best_step, bad = math.inf, 0, 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        meta, _ = read_checkpoint(checkpoint)
        saved = meta.get("training", {})
        mine = asdict(config)
        mismatch = [k for k in _RESUME_KEYS if saved.get(k, mine[k]) != mine[k]]
        if mismatch:
            raise AdjinvError(f"cannot resume from {str(checkpoint)!r}: its training config differs "
                              f"in {', '.join(mismatch)}; use the same options and images, "
                              "or a new --out")
        loaded, ck = load_checkpoint(checkpoint, encoder)
        lacs.load_state_dict(loaded.state_dict())
        _restore_adam(opt, names, ck.extras)
        start = int(ck.meta.get("step", 0))
        history = list(ck.meta.get("history", []))
        es = ck.meta.get("early_stopping", {})
        best_val, best_step, bad = float(es.get("best", math.inf)), int(es.get("best_step", 0)), \
            int(es.get("bad", 0))
        if any(k.startswith("best.") for k in ck.extras):
            best = {k[5:]: v for k, v in ck.extras.items() if k.startswith("best.")}
        if any(k.startswith("last.") for k in ck.extras):  # a finished run saved its best LACs
            lacs.load_state_dict({k[5:]: v for k, v in ck.extras.items() if k.startswith("last.")})
    lacs.to(module_device(encoder))
    x_val = _validation_batch(encoder, validation, config.size) if validation else None
    stopped = bool(resume and history and history[-1].get("stopped"))

    def keep(step: int) -> None:
        if rank == 0 and checkpoint is not None and config.keep_every and step % config.keep_every == 0:
            save_checkpoint(_step_dir(checkpoint) / f"step-{step:05d}.lac.safetensors", lacs, encoder,
                            meta={"training": asdict(config), "step": step, "complete": False})

    def save(step: int, vanilla: VanillaMap | None = None, final: LACBank | None = None) -> None:
        if checkpoint is None or rank != 0:
            return
        extras = _adam_extras(opt, names)
        if best is not None:
            extras.update({f"best.{k}": v for k, v in best.items()})
        if vanilla is not None:
            extras.update(vanilla.tensors())
        if final is not None:  # ship the best LACs; keep the last state for resuming
            extras.update({f"last.{k}": v for k, v in lacs.state_dict().items()})
        save_checkpoint(checkpoint, final if final is not None else lacs, encoder, extras=extras,
                        meta={"training": asdict(config), "step": step,
                              "losses": [r["loss"] for r in history], "history": history,
                              "early_stopping": {"best": best_val, "best_step": best_step,
                                                 "bad": bad},
                              "complete": vanilla is not None,
                              "weights_step": best_step if final is not None else step})
        if history:
            write_log(checkpoint, history)

    with encoder.frozen():
        if start == 0:
            keep(0)
        step = start
        while step < config.steps and not stopped:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            per_epoch = max(1, math.ceil(len(images) / config.batch_size))
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(
                config.seed * 7919 + step // per_epoch))
            pick = [(step * config.batch_size + j) % len(images) for j in range(config.batch_size)]
            batch = torch.stack([random_crop(images[int(order[i])], config.size, config.min_crop, gen)
                                 for i in pick])
            x = check_input(encoder.normalize(batch[local]), encoder)
            if world > 1:  # each rank samples its own channels (still unbiased per image)
                gen = torch.Generator().manual_seed((config.seed * 1_000_003 + step) * 1009 + rank)
            lr = config.lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            st = lac_step(inverter, x, channel_fraction=config.channel_fraction, gen=gen,
                          objective=config.objective, contrast_weight=config.contrast_weight,
                          contrast_margin=config.contrast_margin, total=config.batch_size,
                          xhat=config.xhat, top=config.top)
            if world > 1:  # data parallel: the ranks' gradients sum to the global batch's
                for q in opt.param_groups[0]["params"]:
                    if q.grad is None:
                        q.grad = torch.zeros_like(q)
                all_reduce_sum(q.grad for q in opt.param_groups[0]["params"])
                st = _global_stats(st)
            opt.step()
            step += 1
            row: dict = {"step": step, "loss": st.l1, "objective": st.objective, "lr": lr,
                         "seconds": round(time.perf_counter() - t0, 3)}
            if st.swap_l1 is not None:
                row["swap_l1"] = st.swap_l1
            row.update({f"l1_stage{i}": v for i, v in enumerate(st.stage_l1 or [])})
            if x_val is not None and config.validate_every and step % config.validate_every == 0:
                v = validate(inverter, x_val, config)
                row["val_l1"], row["val_objective"] = v.l1, v.objective
                if v.swap_l1 is not None:
                    row["val_swap_l1"] = v.swap_l1
                row.update({f"val_l1_stage{i}": u for i, u in enumerate(v.stage_l1 or [])})
                if v.objective < best_val * (1 - 1e-3):
                    best_val, best_step, bad = v.objective, step, 0
                    best = {k: t.detach().clone() for k, t in lacs.state_dict().items()}
                else:
                    bad += 1
                log.info("step %d: validation l1 %.4f, objective %.4f (best %.4f at step %d)",
                         step, v.l1, v.objective, best_val, best_step)
                if config.patience and bad >= config.patience:
                    row["stopped"] = True
                    stopped = True
                    log.info("early stop at step %d: no validation gain for %d checks", step, bad)
            history.append(row)
            keep(step)
            if progress is not None:
                progress(step, config.steps, st.l1)
            if step % config.checkpoint_every == 0 and step < config.steps and not stopped:
                save(step)
        final = lacs
        if best is not None:
            final = LACBank.for_encoder(encoder, eps=lacs.pix.eps, eps_mode=lacs.pix.eps_mode,
                                        linearize_at=lacs.linearize_at)
            final.load_state_dict(best)
            final.to(module_device(encoder))
        vanilla = fit_vanilla(encoder, AdjointInverter(encoder, final, chunk_size=chunk_size),
                              images, config.size)
    save(step, vanilla, final if final is not lacs else None)
    if rank == 0 and checkpoint is not None and history:
        plot_history(checkpoint, history)
    return final, vanilla, [r["loss"] for r in history]


def fit_vanilla(encoder: StagedEncoder, inverter: AdjointInverter,
                images: Sequence[torch.Tensor], size: int) -> VanillaMap:
    """Fit the vanilla baseline's per-RGB gain/offset on centre crops of the training images."""
    x = torch.stack([resize_center_crop(im, size) for im in images])
    x = check_input(encoder.normalize(x), encoder)
    v = torch.cat([inverter.vanilla_gradient(x[i:i + 1]) for i in range(x.shape[0])])
    return fit_vanilla_map(v, x)
