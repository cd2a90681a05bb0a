"""Synthesis and the user-facing inverter (Eq. 8, docs/method.md §4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from ..encoders.staged import StagedEncoder
from ..errors import AdjinvError
from ..state import module_device
from .anytime import (
    Preview,
    PreviewFn,
    add_omitted_bias,
    check_anytime_args,
    error_bounds,
    lac_pix_radius,
    omitted_weight,
    select_channels,
)
from .cascade import AdjointCascade, Linearization, auto_chunk, channel_seeds, chunked
from .display import centred_display
from .lac import LACBank
from .simplex import simplex_measure
from .stagedict import StageDict
from .validate import check_input

Progress = Callable[[int, int], None]
WeightFn = Callable[[list[torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]
ChunkFn = Callable[[dict[str, torch.Tensor], torch.Tensor], None]
R = TypeVar("R")


@dataclass(repr=False)
class Inversion:
    """Everything one [`AdjointInverter.invert()`][AdjointInverter.invert] call computed (tensors in encoder
    space).

    ``x_hat[l]``: layer-wise reconstruction (B, 3, H, W) (Eq. 8);
    ``weights[l]``: simplex measure (B, C_l) (Eq. 2);
    ``channels[l]`` (B, K) and ``phi[l]`` (B, K, 3, H, W): per-channel inversions;
    ``extra``: further syntheses at the deepest stage (e.g. class-directional, Eq. 12);
    ``omitted_mass[l]`` (B,): simplex weight of the live channels left out by an anytime
    call (``mass``/``max_channels``; 0 otherwise), ``error_bound_abs[l]`` and
    ``error_bound[l]`` (B,): proven bounds on ``‖x̂_l − x̂_l^full‖`` and on that divided by
    ``‖x̂_l^full‖`` ([`adjinv.core.anytime`][adjinv.core.anytime]); the same keyed by name for ``extra``.

    Every per-stage field is a [`StageDict`][adjinv.core.stagedict.StageDict]: ``x_hat[-1]`` is
    the deepest stage, ``x_hat["stem"]`` looks a stage up by name (``stage_names``) and
    ``x_hat["layer4"]`` by the model's own module path (``stage_aliases``).

    To look at a result, [`image()`][image] maps any reconstruction to a displayable image
    through the one display mapping the HTML report uses
    ([`centred_display()`][adjinv.core.display.centred_display]), and [`to_input()`][to_input] takes it back
    to the input space of the images (de-normalised with the encoder's mean/std).
    """

    x: torch.Tensor
    logits: torch.Tensor
    x_hat: dict[Any, torch.Tensor] = field(default_factory=dict)
    weights: dict[int, torch.Tensor] = field(default_factory=dict)
    channels: dict[int, torch.Tensor] = field(default_factory=dict)
    phi: dict[int, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    extra_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    omitted_mass: dict[int | str, torch.Tensor] = field(default_factory=dict)
    error_bound_abs: dict[int | str, torch.Tensor] = field(default_factory=dict)
    error_bound: dict[int | str, torch.Tensor] = field(default_factory=dict)
    stage_names: tuple[str, ...] = ()
    stage_aliases: tuple[tuple[str, ...], ...] = ()
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        for f in ("x_hat", "weights", "channels", "phi"):
            setattr(self, f, StageDict(getattr(self, f), self.stage_names, self.stage_aliases))
        for f in ("omitted_mass", "error_bound_abs", "error_bound"):
            setattr(self, f, StageDict(getattr(self, f), self.stage_names, self.stage_aliases,
                                       extras=True))

    def _get(self, key: int | str) -> torch.Tensor:
        if isinstance(key, str) and key in self.extra:
            return self.extra[key]
        try:
            return self.x_hat[key]
        except KeyError as e:
            have = [*(self.stage_names[k] for k in self.x_hat if k < len(self.stage_names)),
                    *self.extra]
            raise AdjinvError(f"{e.args[0]}; this result holds {have} (pass stages=… or "
                              "target=… to invert() for the others)") from None

    def to_input(self, key: int | str = -1) -> torch.Tensor:
        """Reconstruction ``key`` (a stage as in ``x_hat``, or an ``extra`` name such as
        ``"class"``) in the images' own input space: ``x̂ · std + mean`` with the encoder's
        normalisation, not clipped (B, 3, H, W)."""
        x = self._get(key)
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return x * s + m

    def image(self, key: int | str = -1) -> torch.Tensor:
        """Reconstruction ``key`` as a displayable image (B, 3, H, W) in [0, 1], through the
        one display mapping of the HTML report (docs/method.md §4):
        [`centred_display()`][adjinv.core.display.centred_display] of [`to_input()`][to_input] — each RGB
        channel
        centred, then the 1–99 % quantiles stretched to [0, 1]. It shows structure at any
        scale; how much it resembles the photo is what the controls measure."""
        return centred_display(self.to_input(key))

    def _label(self, k: int) -> str:
        """Stage ``k``'s name, with the model's module path where it differs (``stage4=layer4``)."""
        name = self.stage_names[k] if k < len(self.stage_names) else str(k)
        alias = self.stage_aliases[k][0] if k < len(self.stage_aliases) and self.stage_aliases[k] else name
        return name if alias == name else f"{name}={alias}"

    def __repr__(self) -> str:
        shape = "×".join(str(d) for d in self.x.shape)
        stages = [self._label(k) for k in self.x_hat]
        parts = [f"x: {shape}", f"x_hat: {stages}"]
        if self.phi:
            parts.append(f"phi: top-{next(iter(self.phi.values())).shape[1]}")
        if self.extra:
            parts.append(f"extra: {list(self.extra)}")
        om = [float(v.max()) for k, v in self.omitted_mass.items() if isinstance(k, int)]
        if om and max(om) > 0:
            eb = max(float(v.max()) for k, v in self.error_bound.items() if isinstance(k, int))
            parts.append(f"anytime: omitted mass ≤ {max(om):.3g}, relative error ≤ {eb:.3g}")
        return f"Inversion({', '.join(parts)})"


@dataclass
class AnytimeSynthesis:
    """One weight set synthesised from its heaviest channels ([`adjinv.core.anytime`][adjinv.core.anytime]):
    ``x_hat`` (B, 3, H, W) with the omitted channels' ``LAC_pix`` bias added, and per
    image the ``omitted_mass``, the proven ``error_bound_abs`` on ``‖x̂ − x̂^full‖`` and
    ``error_bound`` on that relative to ``‖x̂^full‖``."""

    x_hat: torch.Tensor
    omitted_mass: torch.Tensor
    error_bound_abs: torch.Tensor
    error_bound: torch.Tensor


def reference_input(x: torch.Tensor) -> torch.Tensor:
    """The fixed reference point of docs/method.md §16, shaped like the normalised batch
    ``x``: zero after normalisation, i.e. the colour at the centre of the encoder's
    normalisation (its ``mean``: mid-grey for EfficientNet-Lite's [−1, 1] inputs)."""
    return torch.zeros_like(x)


class AdjointInverter:
    """Adjoint inversion of a frozen [`StagedEncoder`][StagedEncoder] through trained LACs.

    ``chunk_size`` fixes the number of channels per batched backward (default:
    chosen from free memory, see [`adjinv.core.memory`][adjinv.core.memory]); ``memory_budget``
    caps the bytes one chunk may use. ``lacs=None`` uses identity LACs (γ=1, β=0).
    Dead channels (``w = 0``) are skipped: they contribute exactly nothing to Eq. 8.
    ``engine``, ``precision``, ``channels_last``, ``verify`` (the per-stage self-check of
    the explicit transposes) and ``kernels`` choose how the cascade computes (see
    ``AdjointCascade`` and [`adjinv.core.precision`][adjinv.core.precision]).
    """

    def __init__(self, encoder: StagedEncoder, lacs: LACBank | None = None, *,
                 chunk_size: int | None = None, memory_budget: int | None = None,
                 engine: str = "auto", precision: str = "float32",
                 channels_last: bool | None = None, verify: bool = True,
                 kernels: str = "torch") -> None:
        for arg, v in (("chunk_size", chunk_size), ("memory_budget", memory_budget)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise AdjinvError(f"{arg} must be a positive integer or None (automatic), "
                                  f"got {v!r}")
        self.encoder = encoder
        self.lacs = lacs if lacs is not None else LACBank.for_encoder(encoder)
        self.lacs.to(module_device(encoder))
        self.cascade = AdjointCascade(encoder, self.lacs, engine=engine, precision=precision,
                                      channels_last=channels_last, verify=verify,
                                      kernels=kernels)
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget

    # ------------------------------------------------------------------ plumbing
    @property
    def at_reference(self) -> bool:
        """Whether the LACs were trained for the reference linearisation (docs/method.md §16)."""
        return self.lacs.linearize_at == "reference"

    def linearize(self, x: torch.Tensor, stage: int) -> tuple[Linearization, list[torch.Tensor]]:
        """The linearisation the LACs were trained for, and ``x``'s own activations
        ``[A_0 … A_stage]``. With LACs trained for the reference (docs/method.md §16) the
        Jacobians are those of [`reference_input()`][reference_input], never ``x``'s own; the seeds and
        simplex weights always come from ``x``."""
        if not self.at_reference:
            lin = self.cascade.linearize(x, stage)
            return lin, lin.acts
        return (self.cascade.linearize(reference_input(x), stage),
                self.encoder.forward_stages(x, upto=stage))

    def _source(self, acts: list[torch.Tensor], stage: int) -> torch.Tensor | None:
        """The seed tensor for [`synthesize()`][synthesize]: ``x``'s own ``A_stage`` at the reference."""
        return acts[stage] if self.at_reference else None

    def _chunk(self, lin: Linearization, stage: int) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return auto_chunk(self.cascade, lin, stage, self.memory_budget)

    def chunks(self, lin: Linearization, stage: int, idx: torch.Tensor,
               work: Callable[[torch.Tensor], R]) -> Iterator[tuple[torch.Tensor, R]]:
        """Run ``work`` on the chunks of ``idx`` this inverter's ``chunk_size`` or memory
        budget allows at ``stage``, halving them on CUDA out-of-memory (docs/method.md §3,
        [choice] batching; ``chunked()``). Every chunked pull-back —
        Eq. 8's synthesis, LAC training (Eq. 9, §4), readouts (§12) — goes through here.

        Args:
            lin: the linearisation ``work`` pulls back through.
            stage: the stage whose seeds are pulled back (sizes the chunks).
            idx: 1-D tensor of the channels (or seeds) to process.
            work: maps one slice of ``idx`` to its result, typically
                ``self.cascade.pull_back(lin, stage, seeds)``; it is retried after an
                out-of-memory error, so it must not change anything outside its result.

        Returns:
            An iterator of ``(slice, work(slice))`` pairs covering ``idx`` in order.
        """
        return chunked(idx, self._chunk(lin, stage), work)

    def stage_index(self, stage: int) -> int:
        """``stage`` as a non-negative index (negative counts from the deepest stage)."""
        n = self.encoder.num_stages
        s = stage + n if stage < 0 else stage
        if not 0 <= s < n:
            raise IndexError(f"stage {stage} out of range for an encoder with {n} stages")
        return s

    def synthesize(self, lin: Linearization, stage: int, weight_sets: dict[str, torch.Tensor], *,
                   keep: torch.Tensor | None = None,
                   progress: Progress | None = None,
                   source: torch.Tensor | None = None,
                   order: torch.Tensor | None = None,
                   on_chunk: ChunkFn | None = None) -> tuple[dict[str, torch.Tensor],
                                                            torch.Tensor | None]:
        """``Σ_c W_{b,c} φ_{stage,c}`` for every weight set ``W`` (B, C) (Eq. 8/12), from one
        cascade pass per live channel; optionally keep ``φ`` for the channels ``keep`` (B, K).

        ``source`` (B, C, h, w) replaces ``A_stage`` as the tensor whose channels seed the
        cascade, ``φ_c = Ψ_stage(E_c ⊙ source)``: the per-channel split of any cotangent
        (docs/method.md §12). Default: the activation-weighted seeds of Eq. 3.

        ``order`` (B, C): channels are pulled back in descending order of their largest
        entry over the batch (default: by index). ``on_chunk(sums, processed)`` is called
        after each chunk with the partial sums and a (B, C) mask of the channels pulled
        back so far for each image (anytime previews)."""
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
                                         own.sum(1).tolist(), order, on_chunk)
        if order is not None:
            idx = idx[order[:, idx].amax(0).argsort(descending=True, stable=True)]
        processed = torch.zeros(c, dtype=torch.bool, device=a.device)
        out = {k: torch.zeros_like(lin.x) for k in weight_sets}
        kept = None
        if keep is not None:
            kept = lin.x.new_zeros(bsz, keep.shape[1], *lin.x.shape[1:])

        def pull(ch: torch.Tensor) -> torch.Tensor:  # (n, B, 3, H, W)
            return self.cascade.pull_back(lin, stage, channel_seeds(a, ch))

        done = 0
        for ch, phi in self.chunks(lin, stage, idx, pull):
            for k, w in weight_sets.items():
                out[k] = out[k] + torch.einsum("bn,nbchw->bchw", w[:, ch].to(phi.dtype), phi)
            if keep is not None and kept is not None:
                match = keep[:, :, None] == ch[None, None, :]  # (B, K, n)
                has = match.any(-1)
                pos = match.to(torch.int8).argmax(-1)
                bi = torch.arange(bsz, device=a.device)[:, None].expand_as(pos)
                kept[has] = phi[pos[has], bi[has]]
            done += ch.numel()
            if progress is not None:
                progress(done, idx.numel())
            if on_chunk is not None:
                processed[ch] = True
                on_chunk(out, processed.expand(bsz, c))
        return out, kept

    SPLIT_RATIO = 1.25  # union of live channels / the images' own, above which images split

    def _synthesize_each(self, lin: Linearization, stage: int, weight_sets: dict[str, torch.Tensor],
                         keep: torch.Tensor | None, progress: Progress | None,
                         source: torch.Tensor | None, counts: list[int],
                         order: torch.Tensor | None = None,
                         on_chunk: ChunkFn | None = None,
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """[`synthesize()`][synthesize] image by image (one extra forward each); ``counts``: each
        image's own channels, so that ``progress`` counts on over the whole batch, and
        ``on_chunk`` sees the whole batch (finished images, the partial one, zeros)."""
        outs: dict[str, list[torch.Tensor]] = {k: [] for k in weight_sets}
        kept: list[torch.Tensor] = []
        bsz, c = lin.x.shape[0], lin.acts[stage].shape[1]
        for b in range(bsz):
            image_progress = image_chunk = None
            if progress is not None:
                def image_progress(done: int, _total: int, offset: int = sum(counts[:b])) -> None:
                    progress(offset + done, sum(counts))
            if on_chunk is not None:
                def image_chunk(sums: dict[str, torch.Tensor], proc: torch.Tensor,
                                b: int = b) -> None:
                    full = {k: torch.cat([*outs[k], v, v.new_zeros(bsz - b - 1, *v.shape[1:])])
                            for k, v in sums.items()}
                    mask = proc.new_zeros(bsz, c)
                    mask[:b] = True
                    mask[b] = proc[0]
                    on_chunk(full, mask)
            one = self.cascade.linearize(lin.x[b: b + 1], stage)
            sums, k_b = self.synthesize(
                one, stage, {k: w[b: b + 1] for k, w in weight_sets.items()},
                keep=None if keep is None else keep[b: b + 1], progress=image_progress,
                source=None if source is None else source[b: b + 1],
                order=None if order is None else order[b: b + 1], on_chunk=image_chunk)
            for k, v in sums.items():
                outs[k].append(v)
            if k_b is not None:
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
               progress: Progress | None = None, mass: float | None = None,
               max_channels: int | None = None, preview: PreviewFn | None = None) -> Inversion:
        """Layer-wise reconstructions ``x̂_l`` (Eq. 8) for ``stages`` (default: all),
        the top-``top_k`` per-channel inversions ``φ_{l,c}`` by simplex weight, and
        any ``extra_weights(acts, logits) -> {name: (B, C_L)}`` syntheses at the
        deepest stage, sharing the deepest stage's pass.

        Anytime inversion ([`adjinv.core.anytime`][adjinv.core.anytime]): ``mass`` in (0, 1] synthesises,
        per image and stage, the channels of largest simplex weight until their
        cumulative weight reaches ``mass``; ``max_channels`` caps their number, and the
        omitted channels' exact ``LAC_pix`` bias is added. The extra syntheses use the
        same channels. ``Inversion.error_bound`` holds the proven bound on the relative
        error against the full synthesis. ``preview(Preview)`` is called
        after every chunk with the partial ``x̂_l`` (channels in descending weight) and
        its bound, for a progressive display; without it the result is identical to the
        full synthesis restricted to the chosen channels."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise AdjinvError(f"top_k must be an integer >= 0 (0: no per-channel images), "
                              f"got {top_k!r}")
        check_anytime_args(mass, max_channels)
        x = self.prepare(x)
        last = self.encoder.num_stages - 1
        want = sorted({self.stage_index(s) for s in (stages if stages is not None else
                                                      range(last + 1))})
        with self.encoder.frozen():
            upto = last if extra_weights is not None or not want else want[-1]
            lin, acts = self.linearize(x, upto)
            a = acts[-1]
            for st in self.encoder.stages[upto + 1:]:  # finish the forward, don't redo it
                a = st(a)
            logits = self.encoder.head(a)
            res = self.new_result(x, logits)
            extra = extra_weights(acts, logits) if extra_weights is not None else {}
            res.extra_weights = extra
            todo = sorted(set(want) | ({last} if extra else set()))
            radius = lac_pix_radius(self.lacs.pix, x.shape[-2] * x.shape[-1], x.dtype)
            for s in todo:
                w = simplex_measure(acts[s])
                chosen = select_channels(w, mass, max_channels)
                sets: dict[str, torch.Tensor] = {}
                if s in want:
                    sets["x_hat"] = torch.where(chosen, w, torch.zeros_like(w))
                if s == last:
                    sets.update({k: torch.where(chosen, v, torch.zeros_like(v))
                                 for k, v in extra.items()})
                keep = None
                if top_k > 0 and s in want:
                    keep = w.topk(min(top_k, w.shape[1]), dim=1).indices
                on_chunk = None
                if preview is not None and s in want:
                    on_chunk = self._previewer(s, w, sets["x_hat"] != 0, radius, preview)
                sums, kept = self.synthesize(lin, s, sets, keep=keep, progress=progress,
                                             source=self._source(acts, s),
                                             order=None if on_chunk is None else w,
                                             on_chunk=on_chunk)
                if s in want:
                    res.weights[s] = w
                    res.x_hat[s] = self._bound(res, s, sums.pop("x_hat"), w, chosen, radius)
                for k, v in sums.items():
                    res.extra[k] = self._bound(res, k, v, extra[k], chosen, radius)
                if keep is not None and kept is not None:
                    res.channels[s], res.phi[s] = keep, kept
        return res

    def new_result(self, x: torch.Tensor, logits: torch.Tensor) -> Inversion:
        """An empty [`Inversion`][Inversion] for ``x`` that knows this encoder's stage names,
        module paths and normalisation."""
        enc = self.encoder
        return Inversion(x=x, logits=logits, stage_names=tuple(i.name for i in enc.infos),
                         stage_aliases=tuple(enc.stage_aliases),
                         mean=tuple(float(v) for v in enc.mean), std=tuple(float(v) for v in enc.std))

    def _bound(self, res: Inversion, key: int | str, x_k: torch.Tensor, w: torch.Tensor,
               chosen: torch.Tensor, radius: float) -> torch.Tensor:
        """Record the omitted mass and the bounds of one anytime synthesis; return ``x_k``
        with the omitted channels' bias added
        ([`add_omitted_bias()`][adjinv.core.anytime.add_omitted_bias])."""
        done = self._finish(x_k, w, chosen, radius)
        res.omitted_mass[key] = done.omitted_mass
        res.error_bound_abs[key], res.error_bound[key] = done.error_bound_abs, done.error_bound
        return done.x_hat

    def _finish(self, x_k: torch.Tensor, w: torch.Tensor, chosen: torch.Tensor,
                radius: float) -> AnytimeSynthesis:
        om = omitted_weight(w, chosen)
        if bool((om != 0).any()):
            x_k = add_omitted_bias(x_k, omitted_weight(w, chosen, signed=True), self.lacs.pix)
        return AnytimeSynthesis(x_k, om, *error_bounds(x_k, om, radius))

    def synthesize_anytime(self, lin: Linearization, stage: int, w: torch.Tensor, *,
                           mass: float | None = None, max_channels: int | None = None,
                           source: torch.Tensor | None = None,
                           progress: Progress | None = None) -> AnytimeSynthesis:
        """``Σ_c w_{b,c} φ_{stage,c}`` (Eq. 8) from the channels of largest ``|w|`` up to
        ``mass`` (and at most ``max_channels``), with the proven bound of
        [`adjinv.core.anytime`][adjinv.core.anytime] (docs/method.md §4; the bound: docs/speed.md, "Anytime
        inversion"); ``mass=None`` and ``max_channels=None``: every channel, bound 0.
        ``source`` as in `synthesize()` (e.g. another photo's ``A_L`` for the
        swapped-seed control)."""
        check_anytime_args(mass, max_channels)
        chosen = select_channels(w, mass, max_channels)
        radius = lac_pix_radius(self.lacs.pix, lin.x.shape[-2] * lin.x.shape[-1], lin.x.dtype)
        sums, _ = self.synthesize(lin, stage, {"w": torch.where(chosen, w, torch.zeros_like(w))},
                                  source=source, progress=progress)
        return self._finish(sums["w"], w, chosen, radius)

    def _previewer(self, stage: int, w: torch.Tensor, chosen: torch.Tensor, radius: float,
                   preview: PreviewFn) -> ChunkFn:
        """The chunk hook turning partial sums into [`Preview`][Preview] objects."""
        def hook(sums: dict[str, torch.Tensor], processed: torch.Tensor) -> None:
            added = processed & chosen
            x_k = add_omitted_bias(sums["x_hat"], omitted_weight(w, added, signed=True),
                                   self.lacs.pix)
            bound_abs, bound = error_bounds(x_k, omitted_weight(w, added), radius)
            preview(Preview(stage=stage, x_hat=x_k, done=added.sum(1), bound_abs=bound_abs,
                            bound=bound))
        return hook

    @torch.no_grad()
    def channel_inversions(self, x: torch.Tensor, stage: int,
                           channels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """``φ_{stage,c}`` for the given channels: (B, K, 3, H, W). ``channels`` is
        a list (same for every image) or a (B, K) tensor."""
        x = self.prepare(x)
        s = self.stage_index(stage)
        keep = torch.as_tensor(channels, device=x.device, dtype=torch.long)
        if keep.dim() == 1:
            keep = keep.expand(x.shape[0], -1)
        with self.encoder.frozen():
            lin, acts = self.linearize(x, s)
            _, kept = self.synthesize(lin, s, {}, keep=keep, source=self._source(acts, s))
        if kept is None:  # synthesize keeps φ whenever keep is given
            raise RuntimeError("no per-channel inversions were kept")
        return kept

    @torch.no_grad()
    def psi(self, x: torch.Tensor, stage: int, seed: torch.Tensor) -> torch.Tensor:
        """The single-seed cascade ``Ψ_stage(G)`` for any cotangent ``G`` (B, C, h, w)."""
        x = self.prepare(x)
        s = self.stage_index(stage)
        with self.encoder.frozen():
            lin = self.linearize(x, s)[0]
            return self.cascade.pull_back(lin, s, seed.to(x).unsqueeze(0))[0]

    @torch.no_grad()
    def seed_zero_control(self, x: torch.Tensor, stage: int = -1) -> torch.Tensor:
        """The control of docs/method.md §14: the cascade with the seed set to zero. Since
        ``Σ_c w = 1`` it equals ``x̂_l`` with every ``φ_{l,c}`` replaced by ``Ψ_l(0)``:
        whatever likeness it shows comes from the image's own activation masks and
        the LAC biases, not from the features."""
        x = self.prepare(x)
        s = self.stage_index(stage)
        with self.encoder.frozen():
            lin = self.linearize(x, s)[0]
            zero = torch.zeros_like(lin.acts[s]).unsqueeze(0)
            return self.cascade.pull_back(lin, s, zero)[0]

    @torch.no_grad()
    def vanilla_gradient(self, x: torch.Tensor, stage: int = -1) -> torch.Tensor:
        """Raw ``v = J_{A_l}ᵀ A_l = ∇_x ½‖A_l‖²`` (no LAC): the vanilla baseline's input."""
        x = self.prepare(x)
        s = self.stage_index(stage)
        with self.encoder.frozen():
            lin = self.cascade.linearize(x, s)
            return self.cascade.raw_pull_back(lin, s, lin.acts[s].unsqueeze(0))[0]
