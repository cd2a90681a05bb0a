"""Local Adjoint Corrector (Eq. 6, Prop. B.3, docs/method.md §3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..errors import AdjinvError

if TYPE_CHECKING:
    from ..encoders.staged import StagedEncoder

EPS_MODES = ("layer", "channel", "fixed")


class LocalAdjointCorrector(nn.Module):
    """Per-channel GroupNorm with affine parameters, applied to a gradient signal.

    ``LAC(u)_c = γ_c (u_c − mean u_c) / sqrt(var u_c + ε) + β_c`` (Eq. 6).

    [choice, docs/method.md §3] ε is scale-relative, because gradient signals have any
    scale (1e-12 is common) and a fixed ε silently turns the normalisation off:

    - ``eps_mode="layer"`` (default): ``ε = eps · mean_{c,h,w}(u²)`` over all
      channels of the same signal. A channel far weaker than its layer (below
      ``eps`` of the mean energy) is damped instead of blown up to unit
      variance, and an all-zero channel (dead ReLU) has a bounded derivative.
    - ``eps_mode="channel"``: ``ε_c = eps · mean_{h,w}(u_c²)`` (docs/method.md §3's example,
      use ``eps=1e-12``): every non-zero channel is normalised, however weak.
    - ``eps_mode="fixed"``: plain GroupNorm ``ε = eps`` (e.g. ``1e-5``).

    Each mode maps an all-zero or constant map to the finite output ``β_c``.
    Accepts ``u`` of shape (..., C, h, w): any leading batch dimensions.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, eps_mode: str = "layer") -> None:
        super().__init__()
        if eps_mode not in EPS_MODES:
            raise AdjinvError(f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise AdjinvError(f"a LAC needs a positive number of channels, got {num_channels!r}")
        self.num_channels = num_channels
        self.eps = eps
        self.eps_mode = eps_mode
        self.gamma = nn.Parameter(torch.ones(num_channels))
        self.beta = nn.Parameter(torch.zeros(num_channels))

    def normalize(self, u: torch.Tensor) -> torch.Tensor:
        """The LAC before its affine map: zero spatial mean, unit second moment (Prop. B.3)."""
        centred, a, grad = self._centred(u)
        return centred * a if grad else centred.mul_(a)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        centred, a, grad = self._centred(u)
        g = self.gamma.to(u.dtype).view(-1, 1, 1)
        b = self.beta.to(u.dtype).view(-1, 1, 1)
        if grad or self.gamma.requires_grad and torch.is_grad_enabled():
            return torch.addcmul(b, centred, a * g)
        return torch.addcmul(b, centred, a * g, out=centred)

    def _centred(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``(u − mean, a, grad)`` with ``normalize(u) = (u − mean)·a`` per (item, channel)
        (the centred map is a fresh tensor), and whether autograd records ``u``.

        On large chunks the LAC is bound by memory traffic, so it makes few passes:
        two max/min reductions for the scale, the mean, the centring, the squares, and
        the product in place."""
        if u.shape[-3] != self.num_channels:
            raise ValueError(f"LAC for {self.num_channels} channels got {u.shape[-3]}")
        dims = (-3, -2, -1) if self.eps_mode == "layer" else (-2, -1)
        fi = torch.finfo(u.dtype)
        grad = torch.is_grad_enabled() and u.requires_grad
        with torch.no_grad():
            scale = torch.maximum(u.amax(dim=dims, keepdim=True), -u.amin(dim=dims, keepdim=True))
        zero = scale == 0
        scale = torch.where(zero, torch.ones_like(scale), scale)
        # Divide by the (detached; exact by scale invariance) scale first when autograd
        # differentiates through the statistics — derivatives of 1/sqrt(var + ε) at
        # 1e-12-sized gradients overflow float32 — or when the squares would leave the
        # dtype's range; otherwise skip that pass.
        lo, hi = fi.tiny ** 0.5 * 1e4, fi.max ** 0.5 * 1e-4
        if self.eps_mode != "fixed" and (grad or bool(((scale < lo) | (scale > hi)).any())):
            u = u / scale
            scale = torch.ones_like(scale)
        mean = u.mean(dim=(-2, -1), keepdim=True)
        centred = u - mean
        var = centred.pow(2).mean(dim=(-2, -1), keepdim=True)
        if self.eps_mode == "fixed":
            eps = self.eps
        else:
            second = var + mean * mean  # mean of u² per channel
            if self.eps_mode == "layer":
                second = second.mean(dim=-3, keepdim=True)
            # the floor (relative to the scale) keeps d/dvar of 1/sqrt finite in this dtype
            eps = self.eps * second + fi.tiny ** 0.5 * scale * scale
        # An exactly-zero signal (a ReLU6-saturated channel pulls back nothing)
        # normalises to 0, with zero derivative: the map is discontinuous there and
        # its one-sided derivative (1/sqrt(eps)) compounds over LACs to 1e36.
        a = torch.where(zero, torch.zeros_like(var), torch.rsqrt(var + eps))
        return centred, a, grad

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, eps_mode={self.eps_mode}"


class LACBank(nn.Module):
    """All LACs of one encoder: ``lacs["pix"]`` after the stem, ``lacs["s{k}"]`` on
    the gradient w.r.t. the output of stage ``k`` when stage ``k+1`` decimates."""

    LINEARIZE_AT = ("input", "reference")

    def __init__(self, boundaries: dict[int, int], eps: float = 1e-6,
                 eps_mode: str = "layer", linearize_at: str = "input") -> None:
        super().__init__()
        if linearize_at not in self.LINEARIZE_AT:
            raise AdjinvError(f"linearize_at must be one of {', '.join(self.LINEARIZE_AT)}, "
                              f"got {linearize_at!r}")
        # where the Jacobians the LACs were trained for are taken: at the image itself
        # (Eq. 9 as published) or at the fixed reference input (docs/method.md §16)
        self.linearize_at = linearize_at
        self.boundaries = dict(sorted(boundaries.items()))
        mods = {"pix": LocalAdjointCorrector(3, eps, eps_mode)}
        for k, c in self.boundaries.items():
            mods[f"s{k}"] = LocalAdjointCorrector(c, eps, eps_mode)
        self.lacs = nn.ModuleDict(mods)

    @classmethod
    def for_encoder(cls, encoder: StagedEncoder, **kw: Any) -> LACBank:
        """Identity-initialised LACs (γ=1, β=0) at the boundaries docs/method.md §3 names."""
        return cls({k: encoder.infos[k].channels for k in encoder.lac_boundaries}, **kw)

    def at(self, k: int) -> LocalAdjointCorrector | None:
        """The LAC acting on the gradient w.r.t. stage ``k``'s output, if any."""
        return cast(LocalAdjointCorrector, self.lacs[f"s{k}"]) if k in self.boundaries else None

    @property
    def pix(self) -> LocalAdjointCorrector:
        """``LAC_pix``, on the pixel-space gradient."""
        return cast(LocalAdjointCorrector, self.lacs["pix"])
