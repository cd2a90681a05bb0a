"""Non-finite values are refused where they enter (a file, a model, a LAC bank): a NaN
γ or weight would otherwise give a black report with "SSIM nan" and exit 0."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .errors import AdjinvError


def non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point (or complex) tensors that hold a NaN or an infinity."""
    return [k for k, v in named
            if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]


def check_finite(named: Iterable[tuple[str, torch.Tensor]], what: str, fix: str) -> None:
    """Raise [`AdjinvError`][AdjinvError] naming the first tensors of ``what`` that are not finite.

    Args:
        named: ``(name, tensor)`` pairs (``state_dict().items()``, ``named_parameters()``).
        what: the object, e.g. ``"LAC checkpoint 'x.safetensors'"``.
        fix: what to do instead, appended to the message.
    """
    bad = non_finite(named)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise AdjinvError(f"{what} holds NaN or infinite values (in {', '.join(bad[:3])}{more}); "
                          f"{fix}")


def finite_number(v: object) -> bool:
    """True for a real int or float (not a bool) that is finite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
