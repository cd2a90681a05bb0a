"""Mahendran & Vedaldi (2015) inversion and Robust inversion (Sec. 3.1, C.1; docs/method.md §13).

Optimise an image ``x`` so that the deepest features of the frozen encoder match the
target's, ``Φ₀ = A_L(x₀)``, under the natural-image priors of M&V 2015 (Eq. 1–5 there):

    E(x) = C · ‖Φ(x) − Φ₀‖² / ‖Φ₀‖²  +  λ_α · ‖x‖_α^α  +  λ_TV · TV^β(x)
    TV^β(x) = Σ_{i,j,c} ((x_{i,j+1,c} − x_{ijc})² + (x_{i+1,j,c} − x_{ijc})²)^{β/2}

``x`` is the mean-subtracted image in [0, 1] units (the encoder sees
``normalize(x + mean_rgb)``). Defaults, from M&V 2015 §3 as we read it: ``α = 6``,
``β = 2``, the normalisation of the priors by the image size and the typical pixel range
``B = 80/255`` and ``V = B/6.5``, i.e. ``λ_α = 1/(H·W·B^α)`` and ``λ_TV = 1/(H·W·V^β)``,
gradient descent with momentum 0.9 from a small random start, the learning rate held and
then divided by 10 for the last quarter of the steps. [choice] The step count (200),
base learning rate and data weight ``C`` (1) are ours: M&V tuned them per layer, and the
paper under reproduction does not give them. Every weight is a field of [`MVConfig`][MVConfig].

Robust inversion (Engstrom et al. 2019) is the *same optimisation* on an adversarially
robust encoder whose weights the user supplies (``load_encoder(name, weights=...)``):
[`robust_inversion()`][robust_inversion] only checks that a weights file was given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError


@dataclass
class MVConfig:
    """Weights and schedule of the M&V objective (JSON-ready)."""

    steps: int = 200
    lr: float = 0.05
    momentum: float = 0.9
    lr_drop_at: float = 0.75
    data_weight: float = 1.0
    alpha: float = 6.0
    beta: float = 2.0
    pixel_range: float = 80 / 255
    tv_range_ratio: float = 6.5
    lambda_alpha: float | None = None
    lambda_tv: float | None = None
    init_std: float = 1e-3
    seed: int = 0
    history: list[float] = field(default_factory=list, repr=False)

    def validate(self) -> None:
        """Reject impossible settings."""
        if self.steps < 1 or self.lr <= 0 or not 0 <= self.momentum < 1:
            raise AdjinvError("M&V needs steps >= 1, lr > 0 and momentum in [0, 1)")
        if self.alpha <= 0 or self.beta <= 0 or self.pixel_range <= 0 or self.tv_range_ratio <= 0:
            raise AdjinvError("M&V needs alpha, beta, pixel_range and tv_range_ratio > 0")

    def weights(self, h: int, w: int) -> tuple[float, float]:
        """``(λ_α, λ_TV)``: the given values, else M&V's size/range normalisation."""
        b = self.pixel_range
        v = b / self.tv_range_ratio
        la = self.lambda_alpha if self.lambda_alpha is not None else 1.0 / (h * w * b**self.alpha)
        lt = self.lambda_tv if self.lambda_tv is not None else 1.0 / (h * w * v**self.beta)
        return la, lt

    def to_dict(self) -> dict:
        """Settings without the run's history."""
        d = asdict(self)
        d.pop("history")
        return d


def total_variation(x: torch.Tensor, beta: float) -> torch.Tensor:
    """``TV^β`` per image (M&V Eq. 5; replicate border): (B, C, H, W) → (B,)."""
    dx = torch.diff(x, dim=-1, append=x[..., -1:])
    dy = torch.diff(x, dim=-2, append=x[..., -1:, :])
    sq = dx.pow(2) + dy.pow(2)
    # (·)^{β/2} has an infinite derivative at 0 for β < 2: keep the gradient finite
    p = sq if beta == 2 else (sq + 1e-12).pow(beta / 2)
    return p.flatten(1).sum(1)


def mv_objective(encoder: StagedEncoder, z: torch.Tensor, phi0: torch.Tensor, cfg: MVConfig
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-image energy ``E`` (B,) of the mean-subtracted images ``z`` and its three terms."""
    mean = encoder.mean.view(1, 3, 1, 1).to(z)
    x = encoder.normalize(z + mean)
    phi = encoder.forward_stages(x)[-1]
    h, w = z.shape[-2:]
    la, lt = cfg.weights(h, w)
    data = (phi - phi0).pow(2).flatten(1).sum(1) / phi0.pow(2).flatten(1).sum(1).clamp_min(1e-30)
    norm = z.abs().pow(cfg.alpha).flatten(1).sum(1)
    tv = total_variation(z, cfg.beta)
    terms = {"data": cfg.data_weight * data, "alpha": la * norm, "tv": lt * tv}
    return terms["data"] + terms["alpha"] + terms["tv"], terms


def mahendran_vedaldi(encoder: StagedEncoder, x0: torch.Tensor, cfg: MVConfig | None = None, *,
                      progress: Callable[[int, int, float], None] | None = None) -> torch.Tensor:
    """Invert ``A_L(x0)`` of the normalised batch ``x0`` (B, 3, H, W); return the
    reconstruction in the encoder's normalised space (B, 3, H, W). The energy per step
    (mean over the batch) is kept in ``cfg.history``."""
    cfg = cfg or MVConfig()
    cfg.validate()
    cfg.history = []
    with encoder.frozen():
        with torch.no_grad():
            phi0 = encoder.forward_stages(x0)[-1]
        g = torch.Generator().manual_seed(cfg.seed)
        z = (cfg.init_std * torch.randn(x0.shape, generator=g, dtype=torch.float32)).to(x0)
        z.requires_grad_(True)
        opt = torch.optim.SGD([z], lr=cfg.lr, momentum=cfg.momentum)
        drop = max(1, math.ceil(cfg.lr_drop_at * cfg.steps))
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [drop], gamma=0.1)
        for step in range(cfg.steps):
            opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                energy, _ = mv_objective(encoder, z, phi0, cfg)
                loss = energy.sum()
                loss.backward()
            opt.step()
            sched.step()
            cfg.history.append(loss.item() / x0.shape[0])
            if progress is not None:
                progress(step + 1, cfg.steps, cfg.history[-1])
        mean = encoder.mean.view(1, 3, 1, 1).to(z)
        return encoder.normalize(z.detach() + mean)


def robust_inversion(robust_encoder: StagedEncoder, x0: torch.Tensor, cfg: MVConfig | None = None,
                     *, weights: str | os.PathLike | None) -> torch.Tensor:
    """The M&V optimisation on an adversarially robust encoder (Engstrom et al. 2019).

    ``weights`` names the robust weights file ``robust_encoder`` was loaded from; it is
    required so that a run never silently inverts a standard encoder under this name."""
    if weights is None:
        raise AdjinvError("robust inversion needs adversarially robust encoder weights: load them "
                          "with adjinv.load_encoder(name, weights=PATH) and pass weights=PATH "
                          "(--robust NAME=PATH)")
    return mahendran_vedaldi(robust_encoder, x0, cfg)
