"""The one-liner: ``adjinv.Inverter(model_or_name)``.

It builds the staged encoder (from a registry name, any CNN ``nn.Module`` or a
[`StagedEncoder`][adjinv.encoders.staged.StagedEncoder]), finds its LACs and delegates the
work to [`AdjointInverter`][adjinv.core.inverter.AdjointInverter]. Being an ``nn.Module``,
``.to(device)`` / ``.double()`` move the encoder and the LACs together.

    >>> inv = adjinv.Inverter(model, normalize=True)        # doctest: +SKIP
    >>> res = inv(images)                                   # images (B, 3, H, W) in [0, 1]
    >>> res.x_hat[-1]                                       # the deepest reconstruction x̂_L
    >>> res = inv.invert(images, target=281)                # + class-directional x̂^(k)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .core.inverter import AdjointInverter, Inversion, Progress
from .core.lac import LACBank
from .core.stagedict import stage_index
from .encoders.auto import encoder_from_module
from .encoders.registry import load_encoder
from .encoders.staged import StagedEncoder
from .errors import AdjinvError
from .lacs.bundled import IDENTITY_SOURCE, LoadedLACs, load_lacs
from .methods.class_directional import MODES, class_directional_weights
from .methods.readout import Readout, ReadoutInversion, invert_readout
from .methods.resolve import Target, class_target
from .state import to_module

logger = logging.getLogger(__name__)

LacsSpec = LACBank | LoadedLACs | str | os.PathLike | None


class Inverter(nn.Module):
    """Adjoint inversion of a classifier in one line (Eq. 7–8, Eq. 12).

    Args:
        model: a registry name ([`adjinv.load_encoder()`][adjinv.load_encoder], e.g.
            ``"efficientnet_lite0"``),
            a [`StagedEncoder`][StagedEncoder], or any torchvision/timm-style CNN ``nn.Module``,
            split into stages where its resolution drops
            ([`adjinv.encoder_from_module()`][adjinv.encoder_from_module]).
            Modules are shared, not copied; their mode and ``requires_grad`` flags are
            restored after every call.
        lacs: ``None`` (default): the checkpoint bundled for this encoder, else identity
            LACs with a warning; ``"identity"``: identity LACs (γ=1, β=0) without one;
            a path to a LAC checkpoint; the name of another checkpoint bundled for the
            encoder ([`adjinv.lacs.checkpoint.bundled_variants()`][adjinv.lacs.checkpoint.bundled_variants],
            e.g. ``"paper"``); a
            [`LACBank`][LACBank]; or what [`adjinv.load_lacs()`][adjinv.load_lacs] returned.
        normalize: if True, inputs are images in [0, 1] and are normalised with the
            encoder's mean/std inside the call; if False (default) they are already in the
            encoder's input space (``encoder.normalize(img)``).
        weights: local weights file for a registry name (never downloaded).
        allow_other_weights: accept a LAC checkpoint made for other weights of the same
            architecture.
        encoder_kw: further arguments of [`adjinv.encoder_from_module()`][adjinv.encoder_from_module]
            (``stages``,
            ``head``, ``mean``, ``std``, …), for a plain ``nn.Module`` only.
        **inverter_kw: ``chunk_size``, ``memory_budget``, ``engine``, ``precision``,
            ``channels_last`` of [`AdjointInverter`][AdjointInverter].
    """

    def __init__(self, model: nn.Module | str, lacs: LacsSpec = None, *, normalize: bool = False,
                 weights: str | os.PathLike | None = None, allow_other_weights: bool = False,
                 encoder_kw: dict[str, Any] | None = None, **inverter_kw: Any) -> None:
        super().__init__()
        self.encoder = _as_encoder(model, weights, encoder_kw)
        loaded = _as_lacs(self.encoder, lacs, allow_other_weights)
        self.lacs = loaded.lacs
        self.vanilla_map = loaded.vanilla_map
        self.lacs_source = loaded.source
        self.normalize = normalize
        self.inverter = AdjointInverter(self.encoder, self.lacs, **inverter_kw)
        logger.debug("Inverter over %s (%d stages), LACs from %s", self.encoder.name,
                     self.encoder.num_stages, self.lacs_source)

    # ------------------------------------------------------------------ inputs
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the encoder's normalised input (B, 3, H, W) on its device and dtype."""
        if not isinstance(x, torch.Tensor):
            raise AdjinvError(f"expected a torch.Tensor image batch, got {type(x).__name__}; "
                              "load files with adjinv.images.load_image")
        if self.normalize and x.is_floating_point() and x.dim() in (3, 4) and x.shape[-3] == 3:
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise AdjinvError(f"normalize=True expects images in [0, 1], got values in "
                                  f"[{lo:.3g}, {hi:.3g}]; scale the images to [0, 1], or build "
                                  "the Inverter with normalize=False for normalised inputs")
            x = self.encoder.normalize(to_module(x, self.encoder))
        return self.inverter.prepare(x)

    def to_display(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor in encoder space → image in [0, 1] (de-normalised, clipped): right for
        inputs; for reconstructions, whose contrast is small, use ``res.image(stage)``."""
        return self.encoder.to_display(x)

    # ------------------------------------------------------------------ inversion
    def forward(self, x: torch.Tensor, target: Target = None, *,
                stages: Sequence[int | str] | str | None = None, top_k: int = 0,
                mode: str = "contribution", progress: Progress | None = None,
                mass: float | None = None, max_channels: int | None = None) -> Inversion:
        """Same as [`invert()`][invert]."""
        return self.invert(x, target=target, stages=stages, top_k=top_k, mode=mode,
                           progress=progress, mass=mass, max_channels=max_channels)

    def invert(self, x: torch.Tensor, target: Target = None, *,
               stages: Sequence[int | str] | str | None = None, top_k: int = 0,
               mode: str = "contribution", progress: Progress | None = None,
               mass: float | None = None, max_channels: int | None = None) -> Inversion:
        """The layer-wise reconstructions ``x̂_l`` (Eq. 8) and, with ``target``, the
        class-directional reconstruction ``x̂^(k)`` and its hemispheres (Eq. 12).

        Args:
            x: images (B, 3, H, W) or (3, H, W); in [0, 1] if the inverter was built with
                ``normalize=True``, else in the encoder's input space.
            target: class ``k`` (an int, a class name such as ``"kite"``, or one per image);
                ``None`` skips
                the class-directional synthesis. It shares the deepest stage's pass.
            stages: stages to reconstruct, by index (negative counts from the deepest), by
                name or by the model's module path (``"layer4"``); ``"all"`` for every stage
                (the spectrum); default ``None``: the deepest stage only (each shallower
                stage adds its own pull-backs; BENCHMARKS.md, "Where the time goes").
            top_k: also keep the ``top_k`` per-channel inversions ``φ_{l,c}`` with the
                largest simplex weight (Eq. 2) at each stage.
            mode: the class direction ``α`` (``"contribution"``: ``W_{k,c} g_c``, the
                default; ``"weight"``; ``"weight*simplex"``).
            progress: ``callback(done, total)`` over channels.
            mass: anytime inversion ([`AdjointInverter.invert()`][AdjointInverter.invert]): synthesise the
                channels
                of largest weight up to this simplex mass; ``res.error_bound`` holds a proven
                bound on the relative error.
            max_channels: anytime inversion: at most this many channels per stage.

        Returns:
            An [`Inversion`][Inversion]; ``res.x_hat[-1]`` is the deepest reconstruction (encoder
            space), ``res.image(-1)`` the same as a displayable image in [0, 1], and with
            ``target`` ``res.extra["class"]``, ``["class+"]``, ``["class-"]`` hold ``x̂^(k)``,
            ``x̂^(k)_+``, ``x̂^(k)_-`` and ``res.extra_weights["class"]`` holds ``α``.
        """
        xs = self.prepare(x)
        target = class_target(target, self.encoder)
        want = _wanted_stages(stages, self.encoder.num_stages, self._stage)
        _check_target(target, xs.shape[0])
        if mode not in MODES:
            raise AdjinvError(f"mode must be one of {MODES}, got {mode!r}")

        def class_weights(acts: list[torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
            k = torch.as_tensor(target, device=logits.device).long().expand(logits.shape[0])
            if ((k < 0) | (k >= logits.shape[1])).any():
                raise AdjinvError(f"target {target} is not a class of this head "
                                  f"({logits.shape[1]} classes)")
            return class_directional_weights(self.encoder, acts[-1], k, mode)

        return self.inverter.invert(xs, stages=want, top_k=top_k, progress=progress,
                                    extra_weights=class_weights if target is not None else None,
                                    mass=mass, max_channels=max_channels)

    def seed_zero_control(self, x: torch.Tensor, stage: int | str = -1) -> torch.Tensor:
        """The cascade with the seed set to zero: the likeness that is not the features'."""
        return self.inverter.seed_zero_control(self.prepare(x), self._stage(stage))

    def channel_inversions(self, x: torch.Tensor, stage: int | str,
                           channels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """``φ_{stage,c}`` for the given channels: (B, K, 3, H, W)."""
        s = self._stage(stage)
        n = self.encoder.infos[s].channels
        try:
            idx = torch.as_tensor(channels).long()
        except (TypeError, ValueError, RuntimeError):
            raise AdjinvError(f"channels must be channel indices (ints), got {channels!r}") from None
        if idx.dim() != 1 or ((idx < -n) | (idx >= n)).any():
            raise AdjinvError(f"channels must be a list of indices in 0…{n - 1} (stage {s} has "
                              f"{n} channels), got {channels!r}")
        return self.inverter.channel_inversions(self.prepare(x), s, idx % n)

    def psi(self, x: torch.Tensor, stage: int | str, seed: torch.Tensor) -> torch.Tensor:
        """The cascade ``Ψ_stage(G)`` for any cotangent ``G`` (B, C, h, w) (Eq. 7)."""
        xs, s = self.prepare(x), self._stage(stage)
        with torch.no_grad(), self.encoder.frozen():
            want = tuple(self.encoder.forward_stages(xs, upto=s)[s].shape)
        if not isinstance(seed, torch.Tensor) or tuple(seed.shape) != want:
            got = tuple(seed.shape) if isinstance(seed, torch.Tensor) else type(seed).__name__
            raise AdjinvError(f"seed must be a tensor shaped like stage {s}'s features "
                              f"{want}, got {got}")
        return self.inverter.psi(xs, s, seed)

    def readout(self, x: torch.Tensor, readout: Readout, *, split: bool = False,
                top_k: int = 0) -> ReadoutInversion:
        """Any scalar readout of the deepest features, pulled back through this inverter's
        cascade (docs/method.md §12;
        [`adjinv.methods.readout.invert_readout()`][adjinv.methods.readout.invert_readout])."""
        if not callable(readout):
            raise AdjinvError(f"readout must be a function of the deepest features (a "
                              f"Readout), got {type(readout).__name__}")
        return invert_readout(self.inverter, None, self.prepare(x), readout, split=split,
                              top_k=top_k)

    def _stage(self, stage: int | str) -> int:
        if isinstance(stage, str):
            try:
                return stage_index(stage, [i.name for i in self.encoder.infos],
                                   self.encoder.stage_aliases)
            except KeyError as e:
                raise AdjinvError(e.args[0]) from None
        n = self.encoder.num_stages
        s = int(stage) + n if int(stage) < 0 else int(stage)
        if not 0 <= s < n:
            raise AdjinvError(f"stage {stage} out of range for an encoder with {n} stages")
        return s

    def extra_repr(self) -> str:
        return (f"encoder={self.encoder.name!r}, stages={self.encoder.num_stages}, "
                f"lacs={self.lacs_source!r}, normalize={self.normalize}")


def _wanted_stages(stages: Sequence[int | str] | str | None, n: int,
                   index: Callable[[int | str], int]) -> list[int]:
    """The stages `Inverter.invert()` reconstructs: ``None`` the deepest, ``"all"``
    every one, else each entry as an index or name (docs/method.md §4)."""
    if stages is None:
        return [n - 1]
    if isinstance(stages, str):
        if stages != "all":
            raise AdjinvError(f"stages={stages!r}: pass 'all', None (the deepest stage), or a "
                              "list of stage indices or names, e.g. stages=[-1, 'stem']")
        return list(range(n))
    return [index(s) for s in stages]


def _as_encoder(model: nn.Module | str, weights: str | os.PathLike | None,
                encoder_kw: dict[str, Any] | None) -> StagedEncoder:
    if encoder_kw and not (isinstance(model, nn.Module) and not isinstance(model, StagedEncoder)):
        raise AdjinvError("encoder_kw applies to a plain nn.Module only (it is passed to "
                          "adjinv.encoder_from_module); drop it for a name or a StagedEncoder")
    if isinstance(model, str):
        return load_encoder(model, weights)
    if weights is not None:
        raise AdjinvError("weights= applies to a registry name only; load your model's weights "
                          "into the module before wrapping it")
    if isinstance(model, StagedEncoder):
        return model
    if isinstance(model, nn.Module):
        return encoder_from_module(model, **(encoder_kw or {}))
    raise AdjinvError(f"expected a registry name, a StagedEncoder or an nn.Module, got "
                      f"{type(model).__name__}; see adjinv.list_encoders()")


def _as_lacs(encoder: StagedEncoder, lacs: LacsSpec, allow_other_weights: bool) -> LoadedLACs:
    if isinstance(lacs, LoadedLACs):
        return lacs
    if isinstance(lacs, LACBank):
        return LoadedLACs(lacs, None, "given LACBank")
    if isinstance(lacs, str) and lacs == "identity":
        return LoadedLACs(LACBank.for_encoder(encoder), None, IDENTITY_SOURCE)
    if lacs is None or isinstance(lacs, str | os.PathLike):
        return load_lacs(encoder, lacs, allow_other_weights=allow_other_weights)
    raise AdjinvError(f"lacs must be None, 'identity', a checkpoint path, a LACBank or the "
                      f"result of adjinv.load_lacs, got {type(lacs).__name__}")


def _check_target(target: object, batch: int) -> None:
    """A class index: an int, or an integer tensor of one or ``batch`` entries."""
    if target is None:
        return
    if isinstance(target, bool) or not isinstance(target, (int, torch.Tensor)) or (
            isinstance(target, torch.Tensor) and (target.is_floating_point() or target.is_complex()
                                                  or target.numel() not in (1, batch)
                                                  or target.dim() > 1)):
        raise AdjinvError(f"target must be a class index (an int, or a (B,) integer tensor "
                          f"with one per image), got {target!r}")

