"""Vanilla-gradient baseline (docs/method.md §13): the raw VJP ``J_{A_L}ᵀ A_L``, standardised
per RGB channel and mapped to image range by one per-RGB gain and offset that
are fitted once, on the LAC training images, with the same ℓ1 objective."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def standardize_rgb(v: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per image and RGB channel: (B, 3, H, W) → same."""
    m = v.mean(dim=(-2, -1), keepdim=True)
    s = v.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (v - m) / torch.where(s > 0, s, torch.ones_like(s))


@dataclass
class VanillaMap:
    """``x ≈ gain_c · standardize(v)_c + offset_c`` in the encoder's input space."""

    gain: torch.Tensor
    offset: torch.Tensor

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Map a raw vanilla gradient (B, 3, H, W) to encoder input space."""
        z = standardize_rgb(v)
        return z * self.gain.to(z).view(3, 1, 1) + self.offset.to(z).view(3, 1, 1)

    def tensors(self) -> dict[str, torch.Tensor]:
        """For storing in a LAC checkpoint's extras."""
        return {"vanilla.gain": self.gain, "vanilla.offset": self.offset}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> VanillaMap | None:
        """The map stored in a checkpoint, or None if it has none."""
        if "vanilla.gain" not in t and "vanilla.offset" not in t:
            return None
        if "vanilla.gain" not in t or "vanilla.offset" not in t:
            from ..errors import AdjinvError

            raise AdjinvError("the checkpoint's vanilla map has only one of 'vanilla.gain' and "
                              "'vanilla.offset'; re-create it with `adjinv train`")
        return cls(t["vanilla.gain"].float(), t["vanilla.offset"].float())


def fit_vanilla_map(v: torch.Tensor, x: torch.Tensor, iters: int = 100) -> VanillaMap:
    """ℓ1 fit of one gain and offset per RGB channel over the batch (IRLS).

    ``v``: raw vanilla gradients (B, 3, H, W); ``x``: the images in encoder space.
    """
    z = standardize_rgb(v).transpose(0, 1).reshape(3, -1).double()
    y = x.transpose(0, 1).reshape(3, -1).double()
    gains, offsets = [], []
    for c in range(3):
        a = torch.stack([z[c], torch.ones_like(z[c])], dim=1)
        w = torch.ones_like(y[c])
        coef = torch.zeros(2, dtype=torch.float64)
        for _ in range(iters):
            aw = a * w[:, None]
            coef = torch.linalg.solve(a.T @ aw + 1e-9 * torch.eye(2, dtype=torch.float64),
                                      aw.T @ y[c])
            r = (a @ coef - y[c]).abs()
            w = 1.0 / r.clamp_min(1e-6)
        gains.append(coef[0])
        offsets.append(coef[1])
    return VanillaMap(torch.stack(gains).float(), torch.stack(offsets).float())
