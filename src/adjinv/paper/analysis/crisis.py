"""Crisis I / II diagnosis of the raw VJP (Sec. 2.1, Eq. 1; Supp. A.1, Eq. 19–27).

Crisis I: the transpose of a stride-``s`` stage is zero insertion followed by a
convolution (Eq. 19–20), so the pulled-back signal may carry a "nail bed": energy
concentrated on one coset of the ``s×s`` stride lattice. Crisis II: the raw VJP keeps
the magnitude and the direction of the signal in one vector, so additive noise of
comparable size turns its direction (Eq. 1, proved in Eq. 22–27).

The quantities below make both measurable on one signal ``u`` (..., C, h, w) and a
period ``s``:

- **lattice share** (Crisis I): the energy of the ``s×s`` lattice coset that holds the
  most energy, over the total. A signal of uniform energy gives ``1/s²``; a pure nail
  bed gives 1. ``lattice_contrast`` is the mean energy per position on that coset over
  the mean energy per position elsewhere (1 for uniform energy).
- **angular deviation** (Eq. 1): [choice] the "true" direction ``v`` is the signal
  low-passed by an ``s×s`` box filter (stride 1, per channel), which removes the
  stride-periodic comb; the noise is ``n = u − v``, split into ``n_∥`` along ``v`` and
  ``n_⊥``. We report the angle between ``u`` and ``v`` and the two ratios
  ``|n_∥|/‖v‖`` and ``‖n_⊥‖/‖v‖`` on which Eq. 1's hypotheses are stated
  (``|n_∥| ≤ ‖v‖`` and ``‖n_⊥‖ ≥ ‖v‖``).

[`diagnose_path()`][diagnose_path] walks the deepest seed's pull-back (Eq. 5) stage by stage and
records these at every decimating boundary, for the raw chain (no LAC) and for the
chain through the LACs (the signal just before and just after each LAC; the LAC's β is
left out, being a constant that would count as "smooth" for free). docs/method.md §3
states the LAC placement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...core.cascade import AdjointCascade, channel_seeds
from ...core.lac import LocalAdjointCorrector
from ...core.simplex import simplex_measure
from ...errors import AdjinvError
from ...records import Record


@dataclass
class CrisisStats(Record):
    """Crisis I / II statistics of one signal, averaged over its leading items.

    ``lattice_share``: energy share of the most energetic ``s×s`` coset (uniform:
    ``1/s²``); ``lattice_contrast``: its energy per position over the rest's;
    ``lattice_contrast_shuffled``: the same for the signal's values at randomly permuted
    positions (the chance level of the largest coset);
    ``angle_deg``: angle between the signal and its box-filtered version ``v``;
    ``n_par_ratio`` = ``|n_∥|/‖v‖``, ``n_perp_ratio`` = ``‖n_⊥‖/‖v‖``;
    ``hypotheses_hold``: share of items with ``|n_∥| ≤ ‖v‖`` and ``‖n_⊥‖ ≥ ‖v‖`` (Eq. 1).
    """

    period: int
    lattice_share: float
    uniform_share: float
    lattice_contrast: float
    lattice_contrast_shuffled: float
    angle_deg: float
    n_par_ratio: float
    n_perp_ratio: float
    hypotheses_hold: float


def lattice_shares(u: torch.Tensor, period: int) -> torch.Tensor:
    """Energy share of each ``period×period`` coset of the last two dims, per leading
    item: (..., C, h, w) → (N, period²) with N the product of the leading dims except C
    (channels are summed)."""
    if period < 1:
        raise AdjinvError(f"period must be >= 1, got {period}")
    if u.dim() < 3:
        raise AdjinvError(f"expected a signal (..., C, h, w), got shape {tuple(u.shape)}")
    e = u.detach().double().pow(2).flatten(0, -4) if u.dim() > 3 else u.detach().double().pow(2)[None]
    e = e.sum(1)  # (N, h, w)
    cos = torch.stack([e[:, i::period, j::period].sum((-2, -1))
                       for i in range(period) for j in range(period)], 1)
    tot = cos.sum(1, keepdim=True)
    return torch.where(tot > 0, cos / tot.clamp_min(1e-300), torch.zeros_like(cos))


def box_lowpass(u: torch.Tensor, period: int) -> torch.Tensor:
    """Per-channel ``period×period`` box average with stride 1 (same size; positions near
    the border average over the taps inside the map): the smooth part ``v`` of Eq. 1."""
    x = u.detach().double().flatten(0, -3)[:, None]  # (N*C, 1, h, w)
    left, right = (period - 1) // 2, period // 2
    xp = F.pad(x, (left, right, left, right))
    ones = F.pad(torch.ones_like(x[:1]), (left, right, left, right))
    k = torch.ones(1, 1, period, period, dtype=x.dtype)
    v = F.conv2d(xp, k) / F.conv2d(ones, k)
    return v.reshape(u.shape)


def crisis_stats(u: torch.Tensor, period: int) -> CrisisStats:
    """[`CrisisStats`][CrisisStats] of ``u`` (..., C, h, w) at stride ``period``; the leading
    dims are items (channel seeds × images), each measured on its own and averaged."""
    if u.dim() < 3:
        raise AdjinvError(f"expected a signal (..., C, h, w), got shape {tuple(u.shape)}")
    u3 = u.detach().double().reshape(-1, *u.shape[-3:])
    alive = u3.flatten(1).abs().amax(1) > 0
    if not bool(alive.any()):
        raise AdjinvError("crisis statistics need a signal that is not identically zero")
    u3 = u3[alive]
    n_cos = period * period

    def contrast_of(sig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = lattice_shares(sig, period).amax(1)
        if n_cos == 1:
            return top, torch.ones_like(top)
        return top, (top / (1 / n_cos)) / ((1 - top) / (1 - 1 / n_cos)).clamp_min(1e-12)

    top, contrast = contrast_of(u3)
    # the same values at shuffled positions: the contrast that the largest of the s² cosets
    # shows by chance (it is not 1 when cosets hold few positions)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(u3.shape[-2] * u3.shape[-1], generator=gen)
    _, null = contrast_of(u3.flatten(-2)[..., perm].reshape(u3.shape))
    v = box_lowpass(u3, period).flatten(1)
    f = u3.flatten(1)
    vn = v.norm(dim=1).clamp_min(1e-300)
    n = f - v
    par = (n * v).sum(1) / vn
    perp = (n - par[:, None] * v / vn[:, None]).norm(dim=1)
    cos = ((f * v).sum(1) / (f.norm(dim=1) * vn).clamp_min(1e-300)).clamp(-1, 1)
    ang = torch.rad2deg(torch.arccos(cos))
    hold = (par.abs() <= vn) & (perp >= vn)
    return CrisisStats(period=period, lattice_share=float(top.mean()), uniform_share=1 / n_cos,
                       lattice_contrast=float(contrast.clamp(max=1e12).mean()),
                       lattice_contrast_shuffled=float(null.clamp(max=1e12).mean()),
                       angle_deg=float(ang.mean()), n_par_ratio=float((par.abs() / vn).mean()),
                       n_perp_ratio=float((perp / vn).mean()),
                       hypotheses_hold=float(hold.double().mean()))


def _lac_no_bias(lac: LocalAdjointCorrector, u: torch.Tensor) -> torch.Tensor:
    """``γ_c · normalize(u)_c``: the LAC without its constant shift β."""
    return lac.normalize(u) * lac.gamma.to(u.dtype).view(-1, 1, 1)


@torch.no_grad()
def diagnose_path(cascade: AdjointCascade, x: torch.Tensor, *, stage: int = -1,
                  top_k: int = 8) -> list[dict]:
    """Crisis I / II statistics at every decimating boundary of the pull-back of the
    ``top_k`` channel seeds (Eq. 3) of largest simplex weight at ``stage`` whose pull-back
    is not identically zero (a channel saturated everywhere, e.g. at ReLU6's 6, pulls back
    nothing and is skipped).

    Args:
        cascade: the cascade (encoder and LACs) to diagnose.
        x: a normalised batch (B, 3, H, W).
        stage: source stage (negative counts from the deepest).
        top_k: channel seeds (largest simplex weight of the first image).

    Returns:
        One dict per decimating stage ``k`` crossed (deepest first), with its name, the
        stride, the resolution of the signal, and [`CrisisStats`][CrisisStats] dicts ``raw`` (the
        raw VJP), ``lac_in`` (the LAC chain just before this boundary's LAC) and
        ``lac_out`` (just after it, without β). The pixel row also has the same for the
        period of the source stage's total stride (``raw_source_period``,
        ``lac_source_period``, after ``LAC_pix``).
    """
    enc = cascade.encoder
    n = enc.num_stages
    s = stage + n if stage < 0 else stage
    if not 0 <= s < n:
        raise AdjinvError(f"stage {stage} out of range for {n} stages")
    if cascade.lacs.linearize_at != "input":
        raise AdjinvError("the Crisis I/II diagnosis measures the adjoint at the image itself; "
                          "these LACs were trained for the reference linearisation "
                          "(docs/method.md §16): pass LACs trained with linearize_at='input'")
    rows: list[dict] = []
    with enc.frozen():
        lin = cascade.linearize(x, s)
        a = lin.acts[s]
        w = simplex_measure(a)
        # channels saturated everywhere (ReLU6 at 6) pull back exactly zero: among the
        # 4·top_k heaviest, keep the top_k whose pull-back through stage s is non-zero
        idx = w[0].topk(min(4 * top_k, a.shape[1])).indices
        with cascade.precision_context():
            first = lin.pullbacks[s](channel_seeds(a, idx))
            alive = first.flatten(1).abs().amax(1) > 0
            if not bool(alive.any()):
                raise AdjinvError(f"none of the {idx.numel()} heaviest channels of stage {s} "
                                  "pulls back a non-zero signal")
            raw = lac = first[alive][:top_k]
            for k in range(s, -1, -1):
                if k != s:
                    raw = lin.pullbacks[k](raw)
                    lac = lin.pullbacks[k](lac)
                info = enc.infos[k]
                if not info.decimates:
                    continue
                prev = 1 if k == 0 else enc.infos[k - 1].reduction
                stride = max(1, round(info.reduction / prev))
                corrector = cascade.lacs.pix if k == 0 else cascade.lacs.at(k - 1)
                row = {"stage": k, "name": info.name, "stride": stride,
                       "signal": "pixels" if k == 0 else f"output of {enc.infos[k - 1].name}",
                       "resolution": list(raw.shape[-2:]),
                       "raw": crisis_stats(raw, stride).to_dict(),
                       "lac_in": crisis_stats(lac, stride).to_dict()}
                if k == 0 and s > 0:
                    # the whole path's stride at the pixels: where the deepest zero insertion's
                    # comb would sit after every transposed stage has blurred it
                    total = enc.infos[s].reduction
                    row["source_period"] = total
                    row["raw_source_period"] = crisis_stats(raw, total).to_dict()
                    if corrector is not None:
                        row["lac_source_period"] = crisis_stats(_lac_no_bias(corrector, lac),
                                                                total).to_dict()
                if corrector is not None:
                    row["lac_out"] = crisis_stats(_lac_no_bias(corrector, lac), stride).to_dict()
                    lac = corrector(lac)
                rows.append(row)
    return rows


def eq1_bound_deg(n_perp_ratio: float) -> float:
    """The angle Eq. 22–27 guarantee when ``|n_∥| ≤ ‖v‖``: ``sin θ ≥ r/√(4 + r²)`` with
    ``r = ‖n_⊥‖/‖v‖`` (``≥ 1/√5`` once ``r ≥ 1``), in degrees."""
    r = max(0.0, n_perp_ratio)
    return math.degrees(math.asin(r / math.sqrt(4 + r * r)))
