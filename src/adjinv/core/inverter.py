"""Synthesis and the user-facing inverter (Eq. 8, docs/method.md §4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..encoders.staged import StagedEncoder
from .cascade import AdjointCascade, Linearization, auto_chunk, channel_seeds
from .lac import LACBank
from .simplex import simplex_measure
from .stagedict import StageDict
from .validate import check_input

Progress = Callable[[int, int], None]
WeightFn = Callable[[list[torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class Inversion:
    """Everything one :meth:`AdjointInverter.invert` call computed (tensors in encoder space).

    ``x_hat[l]``: layer-wise reconstruction (B, 3, H, W) (Eq. 8);
    ``weights[l]``: simplex measure (B, C_l) (Eq. 2);
    ``channels[l]`` (B, K) and ``phi[l]`` (B, K, 3, H, W): per-channel inversions;
    ``extra``: further syntheses at the deepest stage (e.g. class-directional, Eq. 12).
    The per-stage fields are :class:`StageDict` s: ``x_hat[-1]`` is the deepest stage and
    ``x_hat["stem"]`` looks a stage up by name (``stage_names``).
    """

    x: torch.Tensor
    logits: torch.Tensor
    x_hat: dict[int, torch.Tensor] = field(default_factory=dict)
    weights: dict[int, torch.Tensor] = field(default_factory=dict)
    channels: dict[int, torch.Tensor] = field(default_factory=dict)
    phi: dict[int, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    extra_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    stage_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in ("x_hat", "weights", "channels", "phi"):
            setattr(self, f, StageDict(getattr(self, f), self.stage_names))


class AdjointInverter:
    """Adjoint inversion of a frozen :class:`StagedEncoder` through trained LACs.

    ``chunk_size`` fixes the number of channels per batched backward (default:
    chosen from free memory, see :mod:`adjinv.core.memory`); ``memory_budget``
    caps the bytes one chunk may use. ``lacs=None`` uses identity LACs (γ=1, β=0).
    Dead channels (``w = 0``) are skipped: they contribute exactly nothing to Eq. 8.
    ``engine``, ``precision`` and ``channels_last`` choose how the cascade computes
    (see :class:`~adjinv.core.cascade.AdjointCascade` and :mod:`adjinv.core.precision`).
    """

    def __init__(self, encoder: StagedEncoder, lacs: LACBank | None = None, *,
                 chunk_size: int | None = None, memory_budget: int | None = None,
                 engine: str = "auto", precision: str = "float32",
                 channels_last: bool | None = None) -> None:
        self.encoder = encoder
        self.lacs = lacs if lacs is not None else LACBank.for_encoder(encoder)
        p = next(iter(encoder.parameters()), None)
        if p is not None:
            self.lacs.to(p.device)
        self.cascade = AdjointCascade(encoder, self.lacs, engine=engine, precision=precision,
                                      channels_last=channels_last)
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget

    # ------------------------------------------------------------------ plumbing
    def _chunk(self, lin: Linearization, stage: int) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return auto_chunk(self.cascade, lin, stage, self.memory_budget)

    def _stage_index(self, stage: int) -> int:
        n = self.encoder.num_stages
        s = stage + n if stage < 0 else stage
        if not 0 <= s < n:
            raise IndexError(f"stage {stage} out of range for an encoder with {n} stages")
        return s

    def synthesize(self, lin: Linearization, stage: int, weight_sets: dict[str, torch.Tensor], *,
                   keep: torch.Tensor | None = None,
                   progress: Progress | None = None,
                   source: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor],
                                                                torch.Tensor | None]:
        """``Σ_c W_{b,c} φ_{stage,c}`` for every weight set ``W`` (B, C) (Eq. 8/12), from one
        cascade pass per live channel; optionally keep ``φ`` for the channels ``keep`` (B, K).

        ``source`` (B, C, h, w) replaces ``A_stage`` as the tensor whose channels seed the
        cascade, ``φ_c = Ψ_stage(E_c ⊙ source)``: the per-channel split of any cotangent
        (docs/method.md §12). Default: the activation-weighted seeds of Eq. 3."""
        a = lin.acts[stage] if source is None else source.to(lin.acts[stage])
        if a.shape != lin.acts[stage].shape:
            raise ValueError(f"source of shape {tuple(a.shape)} does not match A_{stage} "
                             f"{tuple(lin.acts[stage].shape)}")
        bsz, c = a.shape[:2]
        own = torch.zeros(bsz, c, dtype=torch.bool, device=a.device)  # channels each image needs
        for w in weight_sets.values():
            own |= w != 0
        if keep is not None:
            own.scatter_(1, keep, True)
        idx = own.any(0).nonzero().flatten()
        # A batch shares one pull-back per channel, so every image pays for the union of
        # the batch's live channels; when that is much more than each image's own (ReLU6
        # heads: a third live, different ones per image), one image at a time is cheaper.
        if bsz > 1 and idx.numel() * bsz > self.SPLIT_RATIO * int(own.sum()):
            return self._synthesize_each(lin, stage, weight_sets, keep, progress, source,
                                         own.sum(1).tolist())
        out = {k: torch.zeros_like(lin.x) for k in weight_sets}
        kept = None
        if keep is not None:
            kept = lin.x.new_zeros(bsz, keep.shape[1], *lin.x.shape[1:])
        chunk = self._chunk(lin, stage)
        done = 0
        while done < idx.numel():
            ch = idx[done: done + chunk]
            try:
                phi = self.cascade.pull_back(lin, stage, channel_seeds(a, ch))  # (n, B, 3, H, W)
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                chunk = max(1, chunk // 2)  # the estimate was too optimistic: halve, retry
                torch.cuda.empty_cache()
                continue
            for k, w in weight_sets.items():
                out[k] = out[k] + torch.einsum("bn,nbchw->bchw", w[:, ch].to(phi.dtype), phi)
            if kept is not None:
                match = keep[:, :, None] == ch[None, None, :]  # (B, K, n)
                has = match.any(-1)
                pos = match.to(torch.int8).argmax(-1)
                bi = torch.arange(bsz, device=a.device)[:, None].expand_as(pos)
                kept[has] = phi[pos[has], bi[has]]
            done += ch.numel()
            if progress is not None:
                progress(done, idx.numel())
        return out, kept

    SPLIT_RATIO = 1.25  # union of live channels / the images' own, above which images split

    def _synthesize_each(self, lin: Linearization, stage: int, weight_sets: dict[str, torch.Tensor],
                         keep: torch.Tensor | None, progress: Progress | None,
                         source: torch.Tensor | None,
                         counts: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """:meth:`synthesize` image by image (one extra forward each); ``counts``: each
        image's own channels, so that ``progress`` counts on over the whole batch."""
        outs: dict[str, list[torch.Tensor]] = {k: [] for k in weight_sets}
        kept = []
        for b in range(lin.x.shape[0]):
            image_progress = None
            if progress is not None:
                def image_progress(done: int, _total: int, offset: int = sum(counts[:b])) -> None:
                    progress(offset + done, sum(counts))
            one = self.cascade.linearize(lin.x[b: b + 1], stage)
            sums, k_b = self.synthesize(
                one, stage, {k: w[b: b + 1] for k, w in weight_sets.items()},
                keep=None if keep is None else keep[b: b + 1], progress=image_progress,
                source=None if source is None else source[b: b + 1])
            for k, v in sums.items():
                outs[k].append(v)
            kept.append(k_b)
        cat = {k: torch.cat(v) for k, v in outs.items()}
        return cat, (torch.cat(kept) if keep is not None else None)

    # ------------------------------------------------------------------ public API
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a normalised batch and move it to the encoder's device/dtype."""
        return check_input(x, self.encoder)

    @torch.no_grad()
    def invert(self, x: torch.Tensor, *, stages: Sequence[int] | None = None, top_k: int = 0,
               extra_weights: WeightFn | None = None,
               progress: Progress | None = None) -> Inversion:
        """Layer-wise reconstructions ``x̂_l`` (Eq. 8) for ``stages`` (default: all),
        the top-``top_k`` per-channel inversions ``φ_{l,c}`` by simplex weight, and
        any ``extra_weights(acts, logits) -> {name: (B, C_L)}`` syntheses at the
        deepest stage, sharing the deepest stage's pass."""
        x = self.prepare(x)
        last = self.encoder.num_stages - 1
        want = sorted({self._stage_index(s) for s in (stages if stages is not None else
                                                      range(last + 1))})
        with self.encoder.frozen():
            upto = last if extra_weights is not None or not want else want[-1]
            lin = self.cascade.linearize(x, upto)
            a = lin.acts[-1]
            for st in self.encoder.stages[upto + 1:]:  # finish the forward, don't redo it
                a = st(a)
            logits = self.encoder.head(a)
            res = Inversion(x=x, logits=logits, stage_names=tuple(i.name for i in self.encoder.infos))
            extra = extra_weights(lin.acts, logits) if extra_weights is not None else {}
            res.extra_weights = extra
            todo = sorted(set(want) | ({last} if extra else set()))
            for s in todo:
                w = simplex_measure(lin.acts[s])
                sets: dict[str, torch.Tensor] = {}
                if s in want:
                    sets["x_hat"] = w
                if s == last:
                    sets.update(extra)
                keep = None
                if top_k > 0 and s in want:
                    keep = w.topk(min(top_k, w.shape[1]), dim=1).indices
                sums, kept = self.synthesize(lin, s, sets, keep=keep, progress=progress)
                if s in want:
                    res.weights[s] = w
                    res.x_hat[s] = sums.pop("x_hat")
                res.extra.update(sums)
                if keep is not None:
                    res.channels[s], res.phi[s] = keep, kept
        return res

    @torch.no_grad()
    def channel_inversions(self, x: torch.Tensor, stage: int,
                           channels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """``φ_{stage,c}`` for the given channels: (B, K, 3, H, W). ``channels`` is
        a list (same for every image) or a (B, K) tensor."""
        x = self.prepare(x)
        s = self._stage_index(stage)
        keep = torch.as_tensor(channels, device=x.device, dtype=torch.long)
        if keep.dim() == 1:
            keep = keep.expand(x.shape[0], -1)
        with self.encoder.frozen():
            lin = self.cascade.linearize(x, s)
            _, kept = self.synthesize(lin, s, {}, keep=keep)
        return kept

    @torch.no_grad()
    def psi(self, x: torch.Tensor, stage: int, seed: torch.Tensor) -> torch.Tensor:
        """The single-seed cascade ``Ψ_stage(G)`` for any cotangent ``G`` (B, C, h, w)."""
        x = self.prepare(x)
        s = self._stage_index(stage)
        with self.encoder.frozen():
            lin = self.cascade.linearize(x, s)
            return self.cascade.pull_back(lin, s, seed.to(x).unsqueeze(0))[0]

    @torch.no_grad()
    def seed_zero_control(self, x: torch.Tensor, stage: int = -1) -> torch.Tensor:
        """The control of docs/method.md §14: the cascade with the seed set to zero. Since
        ``Σ_c w = 1`` it equals ``x̂_l`` with every ``φ_{l,c}`` replaced by ``Ψ_l(0)``:
        whatever likeness it shows comes from the image's own activation masks and
        the LAC biases, not from the features."""
        x = self.prepare(x)
        s = self._stage_index(stage)
        with self.encoder.frozen():
            lin = self.cascade.linearize(x, s)
            zero = torch.zeros_like(lin.acts[s]).unsqueeze(0)
            return self.cascade.pull_back(lin, s, zero)[0]

    @torch.no_grad()
    def vanilla_gradient(self, x: torch.Tensor, stage: int = -1) -> torch.Tensor:
        """Raw ``v = J_{A_l}ᵀ A_l = ∇_x ½‖A_l‖²`` (no LAC): the vanilla baseline's input."""
        x = self.prepare(x)
        s = self._stage_index(stage)
        with self.encoder.frozen():
            lin = self.cascade.linearize(x, s)
            return self.cascade.raw_pull_back(lin, s, lin.acts[s].unsqueeze(0))[0]
