"""Trained LACs for an encoder: a given checkpoint, the bundled one, or identity."""

from __future__ import annotations

import os
import warnings
from typing import Any, NamedTuple

from ..core.inverter import AdjointInverter
from ..core.lac import LACBank
from ..encoders.registry import load_encoder
from ..encoders.staged import StagedEncoder
from .checkpoint import load_checkpoint, resolve_checkpoint
from .vanilla import VanillaMap

IDENTITY_SOURCE = "identity (untrained)"


class LoadedLACs(NamedTuple):
    """What `load_lacs()` found.

    Attributes:
        lacs: the LAC bank (γ/β of every corrector).
        vanilla_map: the vanilla-gradient baseline's fitted per-RGB map stored beside the
            LACs, or ``None`` when the checkpoint has none (identity LACs never do).
        source: the checkpoint path, or `IDENTITY_SOURCE` for the identity fallback.

    A named tuple, so it also unpacks as before: ``lacs, vanilla_map, source = load_lacs(enc)``.
    """

    lacs: LACBank
    vanilla_map: VanillaMap | None
    source: str

    @property
    def trained(self) -> bool:
        """False for the identity fallback (γ=1, β=0)."""
        return self.source != IDENTITY_SOURCE


def load_lacs(encoder: StagedEncoder, path: str | os.PathLike | None = None, *,
              allow_other_weights: bool = False) -> LoadedLACs:
    """Trained LACs for ``encoder``: from ``path``, else the checkpoint bundled for
    ``encoder.name``, else identity LACs (γ=1, β=0) with a warning.

    Args:
        encoder: the encoder the LACs must fit (checked against the checkpoint's layout
            and weights hash).
        path: a LAC checkpoint (``.safetensors``), the name of a bundled variant
            ([`bundled_variants()`][adjinv.lacs.checkpoint.bundled_variants]), or ``None`` for the bundled
            default.
        allow_other_weights: accept a checkpoint made for other weights of the same
            architecture.

    Returns:
        A `LoadedLACs` (``.lacs``, ``.vanilla_map``, ``.source``), which also
        unpacks as ``(lacs, vanilla_map, source)``.
    """
    path = resolve_checkpoint(encoder.name, path)
    if path is None:
        warnings.warn(f"no trained LACs for {encoder.name}: using identity LACs (gamma=1, "
                      "beta=0); train some with `adjinv train`", stacklevel=2)
        return LoadedLACs(LACBank.for_encoder(encoder), None, IDENTITY_SOURCE)
    lacs, ck = load_checkpoint(path, encoder, allow_other_weights=allow_other_weights)
    if ck.meta.get("complete") is False:
        warnings.warn(f"LAC checkpoint {str(path)!r} is an unfinished training run (step "
                      f"{ck.meta.get('step')}, complete=false), not final LACs; finish it with "
                      "`adjinv train --resume`, or pass an exported or bundled checkpoint",
                      stacklevel=2)
    return LoadedLACs(lacs, VanillaMap.from_tensors(ck.extras), str(path))


def load_inverter(name: str = "efficientnet_lite0", weights: str | os.PathLike | None = None,
                  lac: str | os.PathLike | None = None, **kw: Any) -> AdjointInverter:
    """One call from a registry name to a ready `AdjointInverter` with trained LACs."""
    enc = load_encoder(name, weights)
    return AdjointInverter(enc, load_lacs(enc, lac).lacs, **kw)
