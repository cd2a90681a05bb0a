"""Faithfulness of a saliency map: Insertion and Deletion AUC (Sec. 3.3, Table 3; docs/method.md §11).

Protocol (Petsiuk et al. 2018, "RISE"), as docs/method.md §11 fixes it:

- pixels are ranked by the saliency at input resolution (descending; ties in raster
  order, so the ranking is deterministic);
- Deletion starts from the image ``x`` and replaces the top-ranked fraction ``t`` of
  pixels by **zero in the encoder's normalised space** (all RGB channels of a pixel at once);
- Insertion starts from a **blurred** copy of ``x`` and puts back the top-ranked fraction
  ``t`` of the original pixels. [choice] The blur is Gaussian, kernel 11, σ = 5 (RISE's
  settings), applied in normalised space with reflect padding;
- the score is the softmax probability of the class **predicted on the clean image**;
- the curve is sampled at ``t = 0, 1/n, …, 1`` (``n = steps``, [choice] 100; the pixel
  count at step ``i`` is ``round(i·HW/n)``) and its area is the trapezoid rule on [0, 1].

All ``n + 1`` perturbed images of a batch are built on the model's device and
evaluated in batches of ``internal_batch_size`` (Captum's name for the same knob);
the result does not depend on that size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import filters
from ..errors import AdjinvError
from ..state import eval_mode


def gaussian_blur(x: torch.Tensor, kernel: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Separable Gaussian blur (odd ``kernel`` taps) with reflect padding: (B, C, H, W) → same."""
    if kernel < 1 or kernel % 2 == 0:
        raise AdjinvError(f"the blur kernel needs an odd number of taps, got {kernel}")
    pad = kernel // 2
    if min(x.shape[-2:]) <= pad:
        raise AdjinvError(f"image of {tuple(x.shape[-2:])} px is too small for a blur kernel of {kernel}")
    return filters.gaussian_blur(x, sigma, pad, "reflect")


def step_counts(num_pixels: int, steps: int) -> torch.Tensor:
    """Number of pixels changed at each of the ``steps + 1`` points: ``round(i·HW/n)``."""
    return torch.round(torch.arange(steps + 1, dtype=torch.float64) * num_pixels / steps).long()


def trapezoid_auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of ``curve`` (B, n+1) sampled uniformly on [0, 1]: (B,)."""
    n = curve.shape[1] - 1
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * n)


@dataclass
class FaithfulnessResult:
    """Per-image AUCs (B,), the curves (B, steps+1) and the class scored (B,)."""

    insertion: torch.Tensor
    deletion: torch.Tensor
    insertion_curve: torch.Tensor
    deletion_curve: torch.Tensor
    target: torch.Tensor
    deletion_blur: torch.Tensor | None = None
    deletion_blur_curve: torch.Tensor | None = None


def _curve(model: nn.Module, start: torch.Tensor, end: torch.Tensor, rank: torch.Tensor,
           counts: torch.Tensor, target: torch.Tensor, batch: int) -> torch.Tensor:
    """Probability of ``target`` along the path from ``start`` to ``end``: at step ``i``
    the ``counts[i]`` top-ranked pixels come from ``end``, the rest from ``start``."""
    bsz, c, h, w = start.shape
    # position of each pixel in the ranking; pixel p is switched once count > position
    position = torch.empty_like(rank)
    position.scatter_(1, rank, torch.arange(h * w, device=rank.device).expand_as(rank))
    position = position.view(bsz, 1, h, w)
    counts = counts.to(start.device)
    out = torch.empty(bsz, counts.numel(), dtype=torch.float64, device=start.device)
    # all (image, step) pairs, evaluated ``batch`` at a time
    pairs = [(b, i) for b in range(bsz) for i in range(counts.numel())]
    for s in range(0, len(pairs), batch):
        part = pairs[s: s + batch]
        bi = torch.tensor([p[0] for p in part], device=start.device)
        si = torch.tensor([p[1] for p in part], device=start.device)
        switch = position[bi] < counts[si].view(-1, 1, 1, 1)
        imgs = torch.where(switch, end[bi], start[bi])
        probs = model(imgs).double().softmax(1)
        out[bi, si] = probs.gather(1, target[bi].view(-1, 1))[:, 0]
    return out


@torch.no_grad()
def insertion_deletion(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, *,
                       target: torch.Tensor | None = None, steps: int = 100,
                       internal_batch_size: int = 64, blur_kernel: int = 11,
                       blur_sigma: float = 5.0, blurred_deletion: bool = False) -> FaithfulnessResult:
    """Insertion and Deletion AUC of ``saliency`` (B, H, W) for the normalised batch ``x``
    (B, 3, H, W) under ``model`` (logits). ``target`` defaults to the clean prediction.

    ``blurred_deletion``: also delete onto the blurred copy instead of zero
    (``deletion_blur``; docs/method.md §11): deleting scattered pixels onto a zero
    substrate leaves high-frequency holes that themselves push the class down, which
    favours high-frequency maps; a blurred substrate does not."""
    if x.dim() != 4 or saliency.shape != (x.shape[0], *x.shape[-2:]):
        raise AdjinvError(f"saliency {tuple(saliency.shape)} must be (B, H, W) at the input "
                          f"resolution of x {tuple(x.shape)}")
    if steps < 1 or internal_batch_size < 1:
        raise AdjinvError("steps and internal_batch_size must be at least 1")
    with eval_mode(model):
        return _insertion_deletion(model, x, saliency, target, steps, internal_batch_size,
                                   blur_kernel, blur_sigma, blurred_deletion)


def _insertion_deletion(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor,
                        target: torch.Tensor | None, steps: int, internal_batch_size: int,
                        blur_kernel: int, blur_sigma: float,
                        blurred_deletion: bool = False) -> FaithfulnessResult:
    if target is None:
        target = model(x).argmax(1)
    target = torch.as_tensor(target, device=x.device).long().expand(x.shape[0])
    bsz, _, h, w = x.shape
    rank = saliency.to(x.device).float().flatten(1).argsort(dim=1, descending=True, stable=True)
    counts = step_counts(h * w, steps)
    blurred = gaussian_blur(x, blur_kernel, blur_sigma)
    ins = _curve(model, blurred, x, rank, counts, target, internal_batch_size)
    dele = _curve(model, x, torch.zeros_like(x), rank, counts, target, internal_batch_size)
    res = FaithfulnessResult(trapezoid_auc(ins), trapezoid_auc(dele), ins, dele, target)
    if blurred_deletion:
        db = _curve(model, x, blurred, rank, counts, target, internal_batch_size)
        res.deletion_blur, res.deletion_blur_curve = trapezoid_auc(db), db
    return res


class FaithfulnessMetric:
    """Dataset-level mean Insertion / Deletion AUC (``update`` / ``compute`` / ``reset``).

    ``update(x, saliency)`` runs [`insertion_deletion()`][insertion_deletion] with this object's settings
    on the model's device and adds the batch to the running sums."""

    def __init__(self, model: nn.Module, *, steps: int = 100, internal_batch_size: int = 64,
                 blur_kernel: int = 11, blur_sigma: float = 5.0) -> None:
        self.model = model
        self.kw: dict[str, Any] = {"steps": steps, "internal_batch_size": internal_batch_size,
                   "blur_kernel": blur_kernel, "blur_sigma": blur_sigma}
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._sum: torch.Tensor | None = None
        self._n = 0

    def update(self, x: torch.Tensor, saliency: torch.Tensor,
               target: torch.Tensor | None = None) -> FaithfulnessResult:
        """Score one batch; returns its per-image result."""
        r = insertion_deletion(self.model, x, saliency, target=target, **self.kw)
        s = torch.stack([r.insertion, r.deletion]).sum(1)
        self._sum = s if self._sum is None else self._sum + s
        self._n += x.shape[0]
        return r

    def compute(self) -> dict[str, float]:
        """Mean AUCs over every image seen (NaN before the first update)."""
        if self._sum is None:
            return {"insertion": math.nan, "deletion": math.nan, "n": 0}
        m = (self._sum / self._n).tolist()
        return {"insertion": m[0], "deletion": m[1], "n": self._n}
