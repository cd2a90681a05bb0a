"""LPIPS (Zhang et al. 2018) with weights the user supplies (Sec. 3.1, Table 1; docs/method.md §13).

LPIPS needs two files that adjinv cannot ship or download: the ImageNet weights of
the backbone (a torchvision ``alexnet`` or ``vgg16`` state dict, e.g. the files
torchvision caches as ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``) and the
learned per-channel linear layers (``v0.1/alex.pth`` / ``vgg.pth`` of the official
``lpips`` package, keys ``lin{l}.model.1.weight``; a safetensors file with the same keys
works too). Without either file [`load_lpips()`][load_lpips] returns ``None`` and a reason, and
callers report LPIPS as *unavailable*: a distance from random backbone weights would be
a number without meaning, so it is never computed.

The distance is the official one: inputs in [0, 1] → [−1, 1] → the LPIPS scaling layer;
features at the five ReLU taps; each unit-normalised over channels; squared difference
weighted by the linear layer, averaged over space, summed over taps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import torch
from torch import nn

from ..encoders.weights import read_state_dict
from ..errors import AdjinvError

# (torchvision builder, indices of the ReLUs tapped in .features, channels per tap)
NETS = {
    "alex": ("alexnet", (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
    "vgg": ("vgg16", (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),
}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _read_linear(path: Path, channels: tuple[int, ...]) -> list[torch.Tensor]:
    sd = read_state_dict(path)
    out = []
    for i, c in enumerate(channels):
        w = next((sd[k] for k in (f"lin{i}.model.1.weight", f"lin{i}.weight") if k in sd), None)
        if w is None or w.numel() != c:
            raise AdjinvError(f"{str(path)!r} has no LPIPS linear layer lin{i} with {c} channels: "
                              "it does not belong to this backbone (alex or vgg)")
        out.append(w.reshape(c).float())
    return out


class LPIPS(nn.Module):
    """The LPIPS distance for images in [0, 1]: ``forward(a, b) -> (B,)``."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, net: str, backbone: nn.Module, linear: list[torch.Tensor]) -> None:
        super().__init__()
        if net not in NETS:
            raise AdjinvError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
        self.net = net
        taps = NETS[net][1]
        self.features = cast(nn.Sequential, backbone.features)[: taps[-1] + 1].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        for m in self.features.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.taps = set(taps)
        for i, w in enumerate(linear):
            self.register_buffer(f"lin{i}", w.view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((2 * x - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS between image batches in [0, 1] (B, 3, H, W) → (B,)."""
        if a.shape != b.shape or a.dim() != 4:
            raise AdjinvError(f"LPIPS needs two (B, 3, H, W) batches of one shape, got "
                              f"{tuple(a.shape)} and {tuple(b.shape)}")
        p = self.shift
        fa, fb = self._feats(a.to(p)), self._feats(b.to(p))
        d = a.new_zeros(a.shape[0], dtype=p.dtype, device=p.device)
        for i, (x, y) in enumerate(zip(fa, fb, strict=True)):
            d = d + ((x - y).pow(2) * getattr(self, f"lin{i}")).sum(1).mean((-2, -1))
        return d


def load_lpips(net: str = "alex", backbone: str | os.PathLike | None = None,
               linear: str | os.PathLike | None = None,
               device: str | torch.device | None = None) -> tuple[LPIPS | None, str]:
    """``(metric, "")`` when both weight files are given and valid, else ``(None, reason)``.

    Bad files (wrong backbone, corrupt) raise [`AdjinvError`][AdjinvError]: a user who passed a
    file wants to know it is wrong, not to get "unavailable"."""
    import torchvision

    if net not in NETS:
        raise AdjinvError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
    missing = [what for what, p in (("backbone", backbone), ("linear-layer", linear)) if p is None]
    if missing:
        return None, (f"unavailable: no LPIPS {' and '.join(missing)} weights given (pass the "
                      f"torchvision {NETS[net][0]} state dict and the lpips v0.1 {net}.pth); "
                      "never computed from random weights")
    assert backbone is not None and linear is not None  # `missing` is empty
    for p in (backbone, linear):
        if not Path(p).is_file():
            raise AdjinvError(f"LPIPS weights file {str(p)!r} does not exist")
    builder, _, channels = NETS[net]
    model = getattr(torchvision.models, builder)()
    sd = read_state_dict(backbone)
    feats = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    try:
        model.features.load_state_dict(feats, strict=True)
    except RuntimeError as e:
        raise AdjinvError(f"{str(backbone)!r} is not a torchvision {builder} state dict: "
                          f"{str(e).splitlines()[0]}") from None
    metric = LPIPS(net, model, _read_linear(Path(linear), channels))
    if device is not None:
        metric = metric.to(device)
    return metric, ""
