"""The trained LAC parameters against Lemma B.1, and the inversion norm of Supp. C.5.

Lemma B.1 says that, trained with the ℓ1 loss of Eq. 9 on images of zero mean, every
LAC converges to ``β_c → 0`` and ``γ_c > 0`` for active channels.
[`lac_parameter_report()`][lac_parameter_report]
lists what the trained γ/β are. The premise "zero mean" depends on the encoder's
normalisation (docs/method.md §0), so [`pixel_median()`][pixel_median] gives what Lemma B.1's own
argument predicts for ``β_pix`` when it does not hold: the ℓ1 location of the targets.

Supp. C.5 states that the LAC makes the inversion norm ``‖φ_c‖`` the same for every
channel "to machine precision". Every ``φ_c`` ends with ``LAC_pix`` (docs/method.md §15):
``φ_c = s_c + β_pix`` with ``s_c`` per-RGB zero-mean of second moment
``γ_rgb² · var/(var + ε)``, so ``‖φ_c‖² = P Σ_rgb (γ_rgb² ρ_{c,rgb} + β_rgb²)`` with
``ρ ≤ 1`` and ``P`` pixels per channel. The spread comes only from ``ρ`` — the ε of
docs/method.md §3 — and from rounding. [`inversion_norm_spread()`][inversion_norm_spread] measures it against
that prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.lac import LACBank, LocalAdjointCorrector
from ...errors import AdjinvError
from ...records import Record


def lac_parameter_report(lacs: LACBank) -> dict[str, dict]:
    """Per LAC (``"pix"``, ``"s{k}"``): channel count, share of ``γ > 0``, γ's min / median /
    max, β's max |β| and median |β|, and whether every β is exactly zero."""
    out: dict[str, dict] = {}
    for name, lac in lacs.lacs.items():
        assert isinstance(lac, LocalAdjointCorrector)
        g = lac.gamma.detach().double()
        b = lac.beta.detach().double()
        out[name] = {"channels": int(g.numel()), "gamma_positive_share": float((g > 0).double().mean()),
                     "gamma_min": float(g.min()), "gamma_median": float(g.median()),
                     "gamma_max": float(g.max()), "beta_abs_max": float(b.abs().max()),
                     "beta_abs_median": float(b.abs().median()),
                     "beta_all_zero": bool((b == 0).all()),
                     "gamma": [float(v) for v in g] if g.numel() <= 3 else None,
                     "beta": [float(v) for v in b] if b.numel() <= 3 else None}
    return out


def pixel_median(images: torch.Tensor) -> torch.Tensor:
    """Per-RGB median over every pixel of ``images`` (B, 3, H, W) (encoder space): the ℓ1
    location Lemma B.1's argument puts ``β_pix`` at when the images are not zero-median."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise AdjinvError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
    return images.detach().double().transpose(0, 1).flatten(1).median(dim=1).values


@dataclass
class NormSpread(Record):
    """``‖φ_c‖`` over the channels of one image (Supp. C.5).

    ``predicted``: ``sqrt(P Σ_rgb (γ_rgb² + β_rgb²))``, the norm with ρ = 1;
    ``mean`` / ``cv`` (std/mean) / ``rel_range`` ((max − min)/mean) of the measured norms;
    ``max_rel_dev``: ``max_c |‖φ_c‖ − predicted| / predicted``; ``share_within_1e-6``:
    channels whose relative deviation from ``predicted`` is ≤ 1e-6 (machine precision
    of float32 is 1.2e-7); ``beta_only_norm``: ``sqrt(P Σ β_rgb²)``, the norm of
    ``φ_c = Ψ(0) = β_pix`` for a channel whose pull-back is exactly zero (a channel
    saturated everywhere, e.g. at ReLU6's 6); ``share_beta_only``: channels within 1e-6
    of it."""

    channels: int
    predicted: float
    mean: float
    cv: float
    rel_range: float
    max_rel_dev: float
    share_within_1e_6: float
    beta_only_norm: float
    share_beta_only: float


def inversion_norm_spread(phi: torch.Tensor, lacs: LACBank) -> NormSpread:
    """Measure the spread of ``‖φ_c‖`` for channel inversions ``phi`` (K, 3, H, W) of one
    image against the ``LAC_pix`` prediction."""
    if phi.dim() != 4 or phi.shape[1] != 3 or phi.shape[0] < 2:
        raise AdjinvError(f"expected at least two channel inversions (K, 3, H, W), got {tuple(phi.shape)}")
    n = phi.detach().double().flatten(1).norm(dim=1)
    p = phi.shape[-2] * phi.shape[-1]
    g = lacs.pix.gamma.detach().double()
    b = lacs.pix.beta.detach().double()
    pred = float((p * (g.pow(2) + b.pow(2)).sum()).sqrt())
    dev = (n - pred).abs() / pred
    bnorm = float((p * b.pow(2).sum()).sqrt())
    bdev = (n - bnorm).abs() / max(bnorm, 1e-300)
    return NormSpread(channels=int(n.numel()), predicted=pred, mean=float(n.mean()),
                      cv=float(n.std() / n.mean()), rel_range=float((n.max() - n.min()) / n.mean()),
                      max_rel_dev=float(dev.max()), share_within_1e_6=float((dev <= 1e-6).double().mean()),
                      beta_only_norm=bnorm, share_beta_only=float((bdev <= 1e-6).double().mean()))
