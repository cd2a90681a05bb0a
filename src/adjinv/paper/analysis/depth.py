"""Source-depth monotonicity (Supp. A.5, Prop. B.8): the quality of ``x̂_l`` against the
stage ``l`` it is synthesised from.

The paper argues that LACs trained on the deepest path serve every shallower source
stage "no worse" (Supp. A.5). [`depth_profile()`][depth_profile] measures ``x̂_l``'s per-RGB Pearson
correlation with the input ([`adjinv.metrics.likeness.pearson_rgb()`][adjinv.metrics.likeness.pearson_rgb],
invariant to a
per-channel gain and offset, so ``LAC_pix``'s affine map does not change it) at every
stage ([`depth_profiles()`][depth_profiles] also any other metric, e.g. the ℓ1 error each stage's term
of Eq. 31 trains), and [`depth_increases()`][depth_increases] counts where it rises with depth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ...core.inverter import AdjointInverter
from ...metrics.likeness import pearson_rgb

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def l1_error(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image, in encoder space: each stage's term of Eq. 9 / Eq. 31
    (docs/method.md §4), (B, 3, H, W) → (B,)."""
    return (x_hat - x).abs().flatten(1).mean(1)


def depth_profiles(inverter: AdjointInverter, x: torch.Tensor,
                   metrics: Mapping[str, Metric]) -> dict[str, list[torch.Tensor]]:
    """Per metric and stage, shallowest first: ``metric(x̂_l, x)`` per image, (B,), from one
    inversion of every stage (Eq. 8).

    Args:
        inverter: the inverter (encoder and LACs).
        x: a normalised batch (B, 3, H, W).
        metrics: name → ``fn(x_hat, x) -> (B,)``, e.g. [`pearson_rgb()`][pearson_rgb],
            [`l1_error()`][l1_error].
    """
    res = inverter.invert(x)
    return {k: [fn(res.x_hat[s], x.to(res.x_hat[s])) for s in sorted(res.x_hat)]
            for k, fn in metrics.items()}


def depth_profile(inverter: AdjointInverter, x: torch.Tensor) -> list[torch.Tensor]:
    """Per stage, shallowest first: Pearson r of ``x̂_l`` (Eq. 8) with ``x`` per image, (B,).

    Args:
        inverter: the inverter (encoder and LACs).
        x: a normalised batch (B, 3, H, W).
    """
    return depth_profiles(inverter, x, {"pearson": pearson_rgb})["pearson"]


def depth_increases(values: Sequence[float]) -> int:
    """How many steps from one stage to the next deeper one raise the quality."""
    return sum(b > a for a, b in zip(values, values[1:], strict=False))
