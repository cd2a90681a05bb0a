"""Localisation of a saliency map against a foreground mask (Sec. 3.3, Table 3; docs/method.md §11).

Every function takes saliency ``s`` (B, H, W) (any non-negative or signed scores, at
input resolution) and a mask ``m`` (B, H, W) (bool, True = foreground) on the same
device, and returns one value per image (B,). Nothing loops over pixels on the host.

- mIoU and pixel accuracy: the map is min-max normalised per image and binarised at
  its mean (docs/method.md §11). [choice] ``iou`` is the foreground IoU of each image, averaged
  over images; ``iou(..., classes=True)`` averages the foreground and background IoU
  (the semantic-segmentation convention) instead.
- mAP: average precision of the pixel scores against the mask (one ranking per image,
  ties handled as one threshold, as ``sklearn.metrics.average_precision_score``),
  averaged over images.
- Pointing game: a hit when the (first, in raster order) maximum of the map lies within
  ``tolerance`` = 15 px (Euclidean) of a mask pixel.

Images whose mask is empty have no foreground to find: they are skipped (NaN per image,
and [`LocalisationMetric`][LocalisationMetric] counts them).
"""

from __future__ import annotations

import math

import torch

from ..errors import AdjinvError


def _check(s: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if s.dim() == 2:
        s = s[None]
    if m.dim() == 2:
        m = m[None].expand_as(s)
    if s.dim() != 3 or s.shape != m.shape:
        raise AdjinvError(f"saliency {tuple(s.shape)} and mask {tuple(m.shape)} must both be "
                          "(B, H, W) of one shape (resize the mask to the input resolution)")
    return s.float(), m.to(device=s.device, dtype=torch.bool)


def minmax(s: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1] (a constant map becomes all zeros): (B, H, W) → same."""
    flat = s.flatten(1)
    lo = flat.amin(1)[:, None, None]
    hi = flat.amax(1)[:, None, None]
    span = hi - lo
    return torch.where(span > 0, (s - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(s))


def binarize(s: torch.Tensor) -> torch.Tensor:
    """The map's foreground: min-max, then ``>`` its mean (a constant map has none)."""
    n = minmax(s.float())
    return n > n.flatten(1).mean(1)[:, None, None]


def _empty_to_nan(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(m.flatten(1).any(1), v, torch.full_like(v, math.nan))


def iou(s: torch.Tensor, m: torch.Tensor, *, classes: bool = False) -> torch.Tensor:
    """Foreground IoU of the binarised map (or, ``classes=True``, mean of fg and bg IoU): (B,)."""
    s, m = _check(s, m)
    b = binarize(s)

    def one(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inter = (p & t).flatten(1).sum(1).float()
        union = (p | t).flatten(1).sum(1).float()
        return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))

    v = one(b, m)
    if classes:
        v = 0.5 * (v + one(~b, ~m))
    return _empty_to_nan(v, m)


def pixel_accuracy(s: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels where the binarised map equals the mask: (B,)."""
    s, m = _check(s, m)
    v = (binarize(s) == m).flatten(1).float().mean(1)
    return _empty_to_nan(v, m)


def average_precision(s: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """AP of the pixel scores ``s`` as a detector of mask pixels: ``Σ_n (R_n − R_{n−1}) P_n``
    over the distinct score thresholds (sklearn's definition), per image: (B,)."""
    s, m = _check(s, m)
    scores = s.flatten(1)
    labels = m.flatten(1).float()
    order = scores.argsort(dim=1, descending=True, stable=True)
    sc = scores.gather(1, order)
    lb = labels.gather(1, order)
    tp = lb.cumsum(1)
    rank = torch.arange(1, sc.shape[1] + 1, device=sc.device, dtype=tp.dtype).expand_as(tp)
    # only the last position of each run of equal scores is a threshold
    last = torch.ones_like(sc, dtype=torch.bool)
    last[:, :-1] = sc[:, 1:] != sc[:, :-1]
    pos = labels.sum(1, keepdim=True)
    precision = tp / rank
    recall = tp / pos.clamp_min(1)
    prev = torch.zeros_like(recall)
    # recall at the previous threshold: carry the last threshold's recall forward
    idx = torch.where(last, torch.arange(sc.shape[1], device=sc.device).expand_as(tp),
                      torch.full_like(tp, -1, dtype=torch.long))
    idx = torch.cummax(idx, 1).values
    shifted = torch.cat([torch.full_like(idx[:, :1], -1), idx[:, :-1]], 1)
    prev = torch.where(shifted >= 0, recall.gather(1, shifted.clamp_min(0)), prev)
    ap = ((recall - prev) * precision * last).sum(1)
    return _empty_to_nan(ap, m)


def pointing_game(s: torch.Tensor, m: torch.Tensor, *, tolerance: float = 15.0) -> torch.Tensor:
    """1.0 when the map's maximum lies within ``tolerance`` px of the mask, else 0.0: (B,)."""
    s, m = _check(s, m)
    bsz, h, w = s.shape
    flat = s.flatten(1).argmax(1)
    py, px = (flat // w).float(), (flat % w).float()
    yy = torch.arange(h, device=s.device, dtype=torch.float32)[None, :, None]
    xx = torch.arange(w, device=s.device, dtype=torch.float32)[None, None, :]
    d2 = (yy - py[:, None, None]) ** 2 + (xx - px[:, None, None]) ** 2
    d2 = torch.where(m, d2, torch.full_like(d2, math.inf))
    hit = (d2.flatten(1).amin(1) <= tolerance**2).float()
    return _empty_to_nan(hit, m)


class LocalisationMetric:
    """Dataset-level mIoU, pAcc, mAP and Pointing (torchmetrics-style ``update`` /
    ``compute`` / ``reset``); the running sums live on the device of the first batch."""

    names = ("miou", "pacc", "map", "pointing")

    def __init__(self, *, tolerance: float = 15.0, iou_classes: bool = False) -> None:
        self.tolerance = tolerance
        self.iou_classes = iou_classes
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._sum: torch.Tensor | None = None
        self._n: torch.Tensor | None = None
        self.skipped = 0

    @torch.no_grad()
    def update(self, saliency: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add one batch; returns its per-image values (NaN where the mask is empty)."""
        vals = {"miou": iou(saliency, mask, classes=self.iou_classes),
                "pacc": pixel_accuracy(saliency, mask),
                "map": average_precision(saliency, mask),
                "pointing": pointing_game(saliency, mask, tolerance=self.tolerance)}
        stack = torch.stack([vals[k] for k in self.names]).double()
        ok = ~stack[0].isnan()
        if self._sum is None or self._n is None:
            self._sum = torch.zeros(len(self.names), dtype=torch.float64, device=stack.device)
            self._n = torch.zeros((), dtype=torch.float64, device=stack.device)
        self._sum = self._sum + torch.where(ok, stack, torch.zeros_like(stack)).sum(1)
        self._n = self._n + ok.sum()
        self.skipped += int((~ok).sum())
        return vals

    def compute(self) -> dict[str, float]:
        """Means over every image with a non-empty mask (NaN before any such image)."""
        if self._sum is None or self._n is None or float(self._n) == 0:
            return dict.fromkeys(self.names, math.nan) | {"n": 0, "skipped": self.skipped}
        mean = (self._sum / self._n).tolist()
        return dict(zip(self.names, mean, strict=True)) | {"n": int(self._n), "skipped": self.skipped}
