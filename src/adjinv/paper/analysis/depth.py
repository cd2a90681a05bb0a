"""Source-depth monotonicity (Supp. A.5, Prop. B.8): the quality of ``x̂_l`` against the
stage ``l`` it is synthesised from.

The paper argues that LACs trained on the deepest path serve every shallower source
stage "no worse" (Supp. A.5). :func:`depth_profile` measures ``x̂_l``'s per-RGB Pearson
correlation with the input (:func:`adjinv.metrics.likeness.pearson_rgb`, invariant to a
per-channel gain and offset, so ``LAC_pix``'s affine map does not change it) at every
stage, and :func:`depth_increases` counts where it rises with depth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core.inverter import AdjointInverter
from ...metrics.likeness import pearson_rgb


def depth_profile(inverter: AdjointInverter, x: torch.Tensor) -> list[torch.Tensor]:
    """Per stage, shallowest first: Pearson r of ``x̂_l`` (Eq. 8) with ``x`` per image, (B,).

    Args:
        inverter: the inverter (encoder and LACs).
        x: a normalised batch (B, 3, H, W).
    """
    res = inverter.invert(x)
    return [pearson_rgb(res.x_hat[s], x.to(res.x_hat[s])) for s in sorted(res.x_hat)]


def depth_increases(values: Sequence[float]) -> int:
    """How many steps from one stage to the next deeper one raise the quality."""
    return sum(b > a for a, b in zip(values, values[1:], strict=False))
