"""Theorem B.5, Corollary B.6 and Remarks 4-5 measured (docs/method.md §17).

Every channel inversion ends with ``LAC_pix``: ``φ_c = γ ⊙ n(u_c) + β`` where ``u_c`` is the
signal that enters the pixel LAC and ``n`` its normalisation (zero mean, unit second moment
per RGB channel, up to ε). Theorem B.5 compares the realised direction
``û_c = P u_c / ‖P u_c‖`` with the *ideal* feature-visualisation direction
``e_c = P g_c / ‖P g_c‖`` of the exact single-step gradient ``g_c = J_{A_l}ᵀ S_{l,c}``
(Eq. 4: the raw pull-back of the channel seed, no intermediate LAC), per RGB channel
(``P``: removal of the spatial mean). With ``s_c = ‖n(u_c)‖`` (≈ √P):

    x̂ = Σ w_c γ s_c e_c  +  Σ w_c γ s_c (û_c − e_c)  +  Σ w_c β
         principal           R_dir (Thm B.5)            R_bias (Cor. B.6)

``δ_c = ‖û_c − e_c‖`` is the cascade direction error of Eq. 60; Remark 5 says it is small in
practice, Remark 4 that ``R_dir`` persists when every β is zero. The decomposition is exact
algebra; what is measured is the size of ``δ_c`` and of the two residuals.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ...core.cascade import channel_seeds
from ...core.inverter import AdjointInverter
from ...core.simplex import simplex_measure
from ...errors import AdjinvError


@dataclass
class FVDecomposition:
    """Per image and chosen channel (B, K, 3): δ_c; per image (B, 3, H, W): the terms."""

    channels: torch.Tensor      # (B, K) channel indices
    weights: torch.Tensor       # (B, K) their simplex weights w_c
    delta: torch.Tensor         # (B, K, 3) ‖û_c − e_c‖ per RGB channel, in [0, 2]
    principal: torch.Tensor     # Σ w γ s e
    r_dir: torch.Tensor         # Σ w γ s (û − e)
    r_bias: torch.Tensor        # Σ w β (spatially constant)
    bound_dir: torch.Tensor     # (B, 3) Σ w |γ| s δ: Eq. 65-66's bound on ‖R_dir‖ per RGB channel

    def relative(self) -> dict[str, torch.Tensor]:
        """‖R_dir‖ and ‖R_bias‖ over ‖principal‖, per image (RGB channels together)."""
        p = self.principal.flatten(1).norm(dim=1)
        return {"r_dir": self.r_dir.flatten(1).norm(dim=1) / p,
                "r_bias": self.r_bias.flatten(1).norm(dim=1) / p}


def _unit_centred(v: torch.Tensor) -> torch.Tensor:
    """``P v / ‖P v‖`` per RGB channel of (..., 3, H, W); zero where ``P v`` is zero."""
    c = v - v.mean(dim=(-2, -1), keepdim=True)
    n = c.flatten(-2).norm(dim=-1)[..., None, None]
    return torch.where(n > 0, c / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(c))


@torch.no_grad()
def fv_decomposition(inverter: AdjointInverter, x: torch.Tensor, stage: int,
                     channels: torch.Tensor) -> FVDecomposition:
    """Theorem B.5's decomposition of ``Σ_{c ∈ channels} w_c φ_{l,c}`` for images ``x``
    (B, 3, H, W, in the encoder's input space) and channels (B, K) of stage ``stage``.

    Refuses LACs linearised at a reference input: there ``û_c`` and ``e_c`` come from
    different Jacobians, which is not the theorem's setting."""
    if inverter.at_reference:
        raise AdjinvError("Theorem B.5 compares pull-backs at the image's own Jacobians; these "
                          "LACs are linearised at a reference input (docs/method.md §16): use LACs "
                          "trained with linearize_at='input'")
    x = inverter.prepare(x)
    s = inverter.stage_index(stage)
    pix = inverter.cascade.lacs.pix
    gamma = pix.gamma.detach().to(x).view(3, 1, 1)
    beta = pix.beta.detach().to(x).view(3, 1, 1)
    # the same cascade with an identity-affine pixel LAC returns n(u_c)
    bank = copy.deepcopy(inverter.cascade.lacs)
    bank.pix.gamma.fill_(1.0)
    bank.pix.beta.fill_(0.0)
    normed = AdjointInverter(inverter.encoder, bank, precision=inverter.cascade.precision)
    deltas, ws, prin, rdir, bounds = [], [], [], [], []
    with inverter.encoder.frozen():
        for b in range(x.shape[0]):
            xb = x[b:b + 1]
            idx = channels[b].to(x.device)
            lin, _ = normed.linearize(xb, s)
            w = simplex_measure(lin.acts[s])[0, idx]
            seeds = channel_seeds(lin.acts[s], idx)                 # (K, 1, C, h, w)
            n_u = normed.cascade.pull_back(lin, s, seeds)[:, 0]     # (K, 3, H, W)
            g = normed.cascade.raw_pull_back(lin, s, seeds)[:, 0]
            s_c = n_u.flatten(-2).norm(dim=-1)[..., None, None]     # (K, 3, 1, 1)
            u_hat, e = _unit_centred(n_u), _unit_centred(g)
            d = (u_hat - e).flatten(-2).norm(dim=-1)                # (K, 3)
            wv = w.view(-1, 1, 1, 1)
            prin.append((wv * gamma * s_c * e).sum(0))
            rdir.append((wv * gamma * s_c * (u_hat - e)).sum(0))
            bounds.append((w.view(-1, 1) * gamma.abs().view(1, 3) * s_c.view(-1, 3) * d).sum(0))
            deltas.append(d)
            ws.append(w)
    r_bias = (torch.stack(ws).sum(1).view(-1, 1, 1, 1) * beta).expand_as(torch.stack(prin))
    return FVDecomposition(channels=channels, weights=torch.stack(ws), delta=torch.stack(deltas),
                           principal=torch.stack(prin), r_dir=torch.stack(rdir), r_bias=r_bias,
                           bound_dir=torch.stack(bounds))
