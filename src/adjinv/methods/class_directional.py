"""Class-directional inversion (Eq. 12, docs/method.md §6), the foreground energy proportion
(Eq. 95) and the mask's area ratio it is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.simplex import simplex_measure
from ..encoders.staged import LinearHead, StagedEncoder
from ..errors import AdjinvError
from .resolve import Target, class_target, resolve

MODES = ("contribution", "weight", "weight*simplex")


def logit_gradient(head: torch.nn.Module, a_last: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``G = ∂z_k/∂A_L`` (B, C, h, w) of each image's class-``target[b]`` logit through any
    differentiable head (the seed of docs/method.md §12's readouts)."""
    with torch.enable_grad():
        a = a_last.detach().requires_grad_(True)
        z = head(a)
        if ((target < 0) | (target >= z.shape[1])).any():
            raise AdjinvError(f"class index out of range for a head with {z.shape[1]} classes: "
                              f"{target.tolist()}")
        (g,) = torch.autograd.grad(z.gather(1, target[:, None]).sum(), a)
    return g


def class_directional_weights(encoder: StagedEncoder, a_last: torch.Tensor,
                              target: torch.Tensor, mode: str = "contribution"
                              ) -> dict[str, torch.Tensor]:
    """Importance ``α_{k,c}`` for class ``target[b]`` of each image, and its split by
    the sign of ``W_{k,c}`` into the two hemispheres.

    [choice, docs/method.md §6] ``mode="contribution"``: ``α = W_{k,c} g_c``, the channel's
    logit contribution (``Σ_c α = z_k − b_k``); ``"weight"``: ``α = W_{k,c}``;
    ``"weight*simplex"``: ``α = W_{k,c} w_{L,c}``. ``W`` is the head's exact
    per-image linear form (a ConvNeXt head LayerNorm is folded in).

    Any other head ([`ModuleHead`][adjinv.encoders.staged.ModuleHead]: MLP, convolutional
    classifier) uses the logit's gradient ``G = ∂z_k/∂A_L``: ``W_{k,c}`` becomes
    ``Σ_{h,w} G_{c,h,w}`` and the contribution ``W_{k,c} g_c`` becomes
    ``Σ_{h,w} G_{c,h,w} A_{c,h,w}``, the channel's first-order share of the logit at
    this image. For a linear head on GAP, ``G = W_{k,c}/(h·w)`` everywhere, so both
    coincide with the linear definitions ([`gradient_class_weights()`][gradient_class_weights]).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(encoder.head, LinearHead):
        return gradient_class_weights(encoder.head, a_last, target, mode)
    g = a_last.mean(dim=(-2, -1))
    w_eff, _ = encoder.head.effective_weights(g)
    wk = w_eff[torch.arange(g.shape[0], device=g.device), target]  # (B, C)
    return _alphas(wk, wk * g, a_last, mode)


def gradient_class_weights(head: torch.nn.Module, a_last: torch.Tensor, target: torch.Tensor,
                           mode: str = "contribution") -> dict[str, torch.Tensor]:
    """[`class_directional_weights()`][class_directional_weights] from the logit gradient, for any head."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    grad = logit_gradient(head, a_last, target)
    return _alphas(grad.sum(dim=(-2, -1)), (grad * a_last).sum(dim=(-2, -1)), a_last, mode)


def _alphas(wk: torch.Tensor, contribution: torch.Tensor, a_last: torch.Tensor,
            mode: str) -> dict[str, torch.Tensor]:
    if mode == "contribution":
        alpha = contribution
    elif mode == "weight":
        alpha = wk.clone()
    else:
        alpha = wk * simplex_measure(a_last)
    return {"class": alpha, "class+": alpha * (wk > 0), "class-": alpha * (wk < 0)}


@dataclass
class ClassDirectional:
    """``x̂^(k)`` and its hemispheres ``x̂^(k)_±`` (B, 3, H, W), with ``α`` (B, C_L)."""

    target: torch.Tensor
    x_class: torch.Tensor
    x_pos: torch.Tensor
    x_neg: torch.Tensor
    alpha: torch.Tensor


def class_directional_inversion(inverter: Any, x: torch.Tensor, target: Target = None,
                                mode: str = "contribution") -> ClassDirectional:
    """Eq. 12 for class ``target`` (docs/method.md §6).

    Args:
        inverter: ``adjinv.Inverter(model, …)`` (then ``x`` as it takes images), an
            [`AdjointInverter`][AdjointInverter], a [`StagedEncoder`][StagedEncoder] or a CNN ``nn.Module``
            ([`adjinv.methods.resolve.resolve()`][adjinv.methods.resolve.resolve]).
        x: images (B, 3, H, W).
        target: a class index, a class name (``"kite"``), one per image, or ``None`` for
            each image's top-1 prediction.
        mode: the class direction ``α`` ([choice] of docs/method.md §6).

    Returns:
        ``x̂^(k)``, its hemispheres and ``α``, in the encoder's input space.
    """
    r = resolve(inverter)
    inverter = r.inverter
    x = r.prepare(x)
    target = class_target(target, inverter.encoder)
    chosen: dict[str, torch.Tensor] = {}

    def weights(acts: list[torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if target is None:
            k = logits.argmax(1)
        else:
            k = torch.as_tensor(target, device=logits.device).long().expand(logits.shape[0])
        chosen["k"] = k
        return class_directional_weights(inverter.encoder, acts[-1], k, mode)

    res = inverter.invert(x, stages=[], extra_weights=weights)
    return ClassDirectional(chosen["k"], res.extra["class"], res.extra["class+"],
                            res.extra["class-"], res.extra_weights["class"])


def _check_mask(x_hat: torch.Tensor, mask: torch.Tensor) -> None:
    if x_hat.dim() != 4 or x_hat.shape[1] != 3:
        raise AdjinvError(f"expected a reconstruction (B, 3, H, W), got {tuple(x_hat.shape)}")
    if mask.shape[-2:] != x_hat.shape[-2:]:
        raise AdjinvError(f"the mask is {tuple(mask.shape[-2:])} but the reconstruction is "
                          f"{tuple(x_hat.shape[-2:])}: resize both with the same crop")


def foreground_energy(x_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``FG = Σ_{p∈M,rgb} x̂² / Σ_{p,rgb} x̂²`` on the raw reconstruction, no mean-centring
    (Eq. 95). ``x_hat`` (B, 3, H, W), ``mask`` (B, H, W) or (H, W) boolean → (B,).
    A reconstruction with no energy at all has FG 0 (check its energy when that matters)."""
    _check_mask(x_hat, mask)
    e = x_hat.pow(2).sum(1)
    m = mask.to(e.dtype).expand_as(e)
    return (e * m).flatten(1).sum(1) / e.flatten(1).sum(1).clamp_min(1e-30)


def mask_area_ratio(mask: torch.Tensor) -> torch.Tensor:
    """The fraction of pixels inside the mask, (B, H, W) or (H, W) → (B,) or scalar: what
    FG (Eq. 95) equals for a reconstruction of uniform energy, the baseline to compare with."""
    return mask.to(torch.float64).flatten(-2).mean(-1)
