"""Theorem 2 (covariance-volume duality, Eq. 15–16; Supp. C.5, Eq. 100–109), tested.

For a channel subset ``S`` of size ``k`` and one image, the admissible interference
subspace is the image under ``Φ_Sᵀ`` of the constraint hyperplane ``{α : Σ_c α_c a_c = 0}``
(the cancellation of the shared direction ``u`` of H1, ``a_c = ⟨φ_c, u⟩``; docs/method.md §7).
Its volume (Eq. 100) is ``Vol(S) = sqrt(det(Qᵀ Φ_S Φ_Sᵀ Q))`` with ``Q`` an orthonormal
basis of the hyperplane. Theorem 2 says that ``E log Vol(S)`` and ``log det Σ_S`` (the
centred GAP covariance, docs/method.md §8) have the same maximisers. The proof only bounds
the difference; [`duality_study()`][duality_study] measures, over many subsets, their Spearman rank
correlation (SciPy's, ties at their average rank) and whether the maximisers coincide.

[choice] ``u`` is the leading right singular vector of the image's whole channel pool
(not of ``S``), so that the constraint is the same object for every subset. With
``centred=True`` every ``φ_c`` is first made zero-mean per RGB channel, which removes the
``β_pix`` constant that every ``φ_c`` shares (docs/method.md §15).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import AdjinvError
from ...records import Record
from .covvol import subset_logdet


def _centre(phi: torch.Tensor) -> torch.Tensor:
    """Per-RGB zero spatial mean: (..., 3, H, W)."""
    return phi - phi.mean(dim=(-2, -1), keepdim=True)


def pool_geometry(phi: torch.Tensor, *, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, a)`` of one image's channel pool: the Gram matrix ``G = ΦΦᵀ`` (K, K) and the
    projections ``a_c = ⟨φ_c, u⟩`` on the pool's leading right singular vector ``u`` (K,).

    Args:
        phi: the image's channel inversions over the pool, (K, 3, H, W) or (K, P).
        centred: make each ``φ_c`` zero-mean per RGB channel first (needs (K, 3, H, W)).
    """
    f = phi.detach().double()
    if centred:
        if f.dim() != 4:
            raise AdjinvError("centred=True needs phi as (K, 3, H, W)")
        f = _centre(f)
    f = f.flatten(1)
    g = f @ f.T
    evals, evecs = torch.linalg.eigh(g)
    # a = Φu with u = Φᵀe/‖Φᵀe‖ for the leading eigenvector e: a = G e / sqrt(λ₁)
    a = g @ evecs[:, -1] / evals[-1].clamp_min(1e-300).sqrt()
    return g, a


def log_volume(gram: torch.Tensor, a: torch.Tensor, subset: torch.Tensor | list[int]) -> float:
    """``log Vol(S) = ½ log det(Qᵀ G_S Q)`` (Eq. 100) from [`pool_geometry()`][pool_geometry], with ``Q``
    an orthonormal basis of ``{α : Σ_{c∈S} α_c a_c = 0}`` (``-inf`` if singular)."""
    idx = torch.as_tensor(subset, dtype=torch.long)
    if idx.numel() < 2:
        raise AdjinvError("the interference volume needs a subset of at least two channels")
    gs = gram[idx][:, idx]
    as_ = a[idx]
    if float(as_.norm()) == 0.0:
        q = torch.eye(idx.numel(), dtype=gram.dtype)[:, :-1]
    else:
        # orthonormal basis of a^⊥: the last k−1 columns of a complete QR of a
        q = torch.linalg.qr(as_[:, None], mode="complete").Q[:, 1:]
    sign, logdet = torch.linalg.slogdet(q.T @ gs @ q)
    return float(0.5 * logdet) if float(sign) > 0 else float("-inf")


def inversion_log_volume(phi: torch.Tensor, subset: torch.Tensor | list[int], *,
                         centred: bool = False) -> float:
    """``log Vol(S)`` (Eq. 100) of one image whose pool inversions are ``phi`` (K, 3, H, W)
    or (K, P); see [`pool_geometry()`][pool_geometry] and [`log_volume()`][log_volume]."""
    g, a = pool_geometry(phi, centred=centred)
    return log_volume(g, a, subset)


@dataclass
class DualityResult(Record):
    """Theorem 2 over ``n_subsets`` random subsets of size ``k`` from a pool of channels.

    ``spearman`` / ``p_value``: rank correlation of mean ``log Vol`` (over images) with
    ``log det Σ_S``; ``same_maximiser``: the two agree on the best subset;
    ``gap_best_volume_rank``: rank (1 = best) by volume of the subset that maximises the
    GAP log-det; ``volume_best_gap_rank``: the converse."""

    k: int
    pool: int
    n_subsets: int
    images: int
    centred: bool
    spearman: float
    p_value: float
    same_maximiser: bool
    gap_best_volume_rank: int
    volume_best_gap_rank: int


def random_subsets(pool: int, k: int, n: int, seed: int = 0) -> list[list[int]]:
    """``n`` distinct random ``k``-subsets of ``range(pool)`` (sorted), reproducible."""
    from math import comb

    if not 2 <= k <= pool:
        raise AdjinvError(f"need 2 <= k <= pool, got k={k}, pool={pool}")
    n = min(n, comb(pool, k))
    gen = torch.Generator().manual_seed(seed)
    seen: set[tuple[int, ...]] = set()
    out: list[list[int]] = []
    while len(out) < n:
        s = tuple(sorted(torch.randperm(pool, generator=gen)[:k].tolist()))
        if s not in seen:
            seen.add(s)
            out.append(list(s))
    return out


def duality_study(phi: torch.Tensor, gap: torch.Tensor, subsets: list[list[int]], *,
                  centred: bool = False) -> tuple[DualityResult, list[float], list[float]]:
    """Compare inversion-space volume with the GAP log-det over ``subsets``.

    Args:
        phi: channel inversions (N_images, K_pool, 3, H, W).
        gap: GAP features of the pool's channels over a data set (N, K_pool).
        subsets: index lists into the pool, all of one size.
        centred: see [`inversion_log_volume()`][inversion_log_volume].

    Returns:
        The [`DualityResult`][DualityResult], and the per-subset mean log-volumes and GAP log-dets.
    """
    from scipy.stats import spearmanr

    if phi.dim() != 5 or gap.dim() != 2 or phi.shape[1] != gap.shape[1]:
        raise AdjinvError(f"need phi (N, K, 3, H, W) and gap (N, K) over one pool, got "
                          f"{tuple(phi.shape)} and {tuple(gap.shape)}")
    g = gap.detach().double()
    g = g - g.mean(0, keepdim=True)
    cov = g.T @ g / max(1, g.shape[0] - 1)
    geo = [pool_geometry(p, centred=centred) for p in phi]
    vols = [sum(log_volume(gm, a, s) for gm, a in geo) / len(geo) for s in subsets]
    dets = [float(subset_logdet(cov, s)) for s in subsets]
    rho, pval = spearmanr(vols, dets)
    vt = torch.tensor(vols)
    dt = torch.tensor(dets)
    iv, ig = int(vt.argmax()), int(dt.argmax())
    vol_rank = int((vt > vt[ig]).sum()) + 1
    gap_rank = int((dt > dt[iv]).sum()) + 1
    res = DualityResult(k=len(subsets[0]), pool=phi.shape[1], n_subsets=len(subsets),
                        images=phi.shape[0], centred=centred, spearman=float(rho),
                        p_value=float(pval), same_maximiser=iv == ig,
                        gap_best_volume_rank=vol_rank, volume_best_gap_rank=gap_rank)
    return res, vols, dets
