"""What every method accepts: the ``adjinv.Inverter`` of the one-liner, an
[`AdjointInverter`][adjinv.core.inverter.AdjointInverter], a
[`StagedEncoder`][adjinv.encoders.staged.StagedEncoder]
or a plain CNN ``nn.Module``; and a class given by index or by name (docs/method.md §6)."""

from __future__ import annotations

import difflib
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.inverter import AdjointInverter
from ..encoders.auto import encoder_from_module
from ..encoders.staged import StagedEncoder
from ..errors import AdjinvError
from ..lacs.bundled import load_lacs

logger = logging.getLogger(__name__)

Target = int | str | Sequence[int] | Sequence[str] | torch.Tensor | None


@dataclass
class Resolved:
    """An inverter and the map from the caller's images to its normalised input.

    ``prepare`` is the ``Inverter``'s own (images in [0, 1] with ``normalize=True``),
    else the identity (inputs already in the encoder's input space)."""

    inverter: AdjointInverter
    prepare: Callable[[torch.Tensor], torch.Tensor]

    @property
    def encoder(self) -> StagedEncoder:
        """The staged encoder the inverter pulls back through."""
        return self.inverter.encoder


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# A plain model's inverter, built once: its staged encoder shares the model's modules, so
# it follows any change of the weights; a copy (Quantus's randomised models) is a new key.
_BUILT: weakref.WeakKeyDictionary[nn.Module, AdjointInverter] = weakref.WeakKeyDictionary()


def resolve(model: Any) -> Resolved:
    """The [`Resolved`][Resolved] inverter behind ``model``.

    Args:
        model: ``adjinv.Inverter(…)`` (its LACs and ``normalize`` are used), an
            [`AdjointInverter`][AdjointInverter], a [`StagedEncoder`][StagedEncoder] or a CNN ``nn.Module``.
            The
            last two get the LACs bundled for them, else identity LACs with a warning
            ([`adjinv.load_lacs()`][adjinv.load_lacs]); build ``adjinv.Inverter(model)`` once to reuse it.

    Returns:
        The inverter, with the ``prepare`` map of the caller's images.
    """
    inner = getattr(model, "inverter", None)
    if isinstance(inner, AdjointInverter) and callable(getattr(model, "prepare", None)):
        return Resolved(inner, model.prepare)
    if isinstance(model, AdjointInverter):
        return Resolved(model, _identity)
    if isinstance(model, StagedEncoder):  # cheap to wrap, and it would keep itself alive in _BUILT
        return Resolved(AdjointInverter(model, load_lacs(model).lacs), _identity)
    if isinstance(model, nn.Module):
        inv = _BUILT.get(model)
        if inv is None:
            logger.info("building the staged encoder of %s; pass adjinv.Inverter(model) to "
                        "choose its LACs and normalisation", type(model).__name__)
            enc = encoder_from_module(model)
            inv = _BUILT[model] = AdjointInverter(enc, load_lacs(enc).lacs)
        return Resolved(inv, _identity)
    raise AdjinvError(f"expected adjinv.Inverter(model), an AdjointInverter, a StagedEncoder or a "
                      f"CNN nn.Module, got {type(model).__name__}; build one with "
                      "adjinv.Inverter(model, normalize=True)")


def class_index(name: str, encoder: StagedEncoder) -> int:
    """The index of class ``name`` among the encoder's class names (close matches on a miss)."""
    cats = encoder.categories
    if cats is None:
        raise AdjinvError(f"target {name!r} is a class name, but {encoder.name} has no class "
                          "names; pass an index, or categories=[…] to adjinv.encoder_from_module")
    if name in cats:
        return cats.index(name)
    low = [c.lower() for c in cats]
    if name.lower() in low:
        return low.index(name.lower())
    close = difflib.get_close_matches(name, cats, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise AdjinvError(f"no class named {name!r} among the {len(cats)} classes of "
                      f"{encoder.name}{hint} (encoder.categories lists them)")


def class_target(target: Target, encoder: StagedEncoder) -> int | torch.Tensor | None:
    """``target`` as a class index or a (B,) tensor of them: ints and tensors pass as they
    are, class names (``"kite"``, or one per image) are looked up in ``encoder.categories``."""
    if target is None or isinstance(target, int | torch.Tensor):
        return target
    if isinstance(target, str):
        return class_index(target, encoder)
    if hasattr(target, "__index__"):  # numpy integers
        return int(target)
    if isinstance(target, Sequence):
        return torch.tensor([class_index(t, encoder) if isinstance(t, str) else int(t)
                             for t in target], dtype=torch.long)
    raise AdjinvError(f"target must be a class index, a class name, one per image, or None; got "
                      f"{type(target).__name__}")
