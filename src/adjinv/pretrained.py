"""Trained LACs for an encoder: a given checkpoint, the bundled one, or identity."""

from __future__ import annotations

import os
import warnings

from .baselines.vanilla import VanillaMap
from .checkpoint import bundled_checkpoint, load_checkpoint
from .core.inverter import AdjointInverter
from .core.lac import LACBank
from .encoders.registry import load_encoder
from .encoders.staged import StagedEncoder


def load_lacs(encoder: StagedEncoder, path: str | os.PathLike | None = None, *,
              allow_other_weights: bool = False) -> tuple[LACBank, VanillaMap | None, str]:
    """``(lacs, vanilla_map, source)``: from ``path``, else the checkpoint bundled
    for ``encoder.name``, else identity LACs (γ=1, β=0) with a warning."""
    if path is None:
        path = bundled_checkpoint(encoder.name)
        if path is None:
            warnings.warn(f"no trained LACs for {encoder.name}: using identity LACs (gamma=1, "
                          "beta=0); train some with `adjinv train`", stacklevel=2)
            return LACBank.for_encoder(encoder), None, "identity (untrained)"
    lacs, ck = load_checkpoint(path, encoder, allow_other_weights=allow_other_weights)
    return lacs, VanillaMap.from_tensors(ck.extras), str(path)


def load_inverter(name: str = "efficientnet_lite0", weights: str | os.PathLike | None = None,
                  lac: str | os.PathLike | None = None, **kw: object) -> AdjointInverter:
    """One call from a registry name to a ready :class:`AdjointInverter` with trained LACs."""
    enc = load_encoder(name, weights)
    lacs, _, _ = load_lacs(enc, lac)
    return AdjointInverter(enc, lacs, **kw)
