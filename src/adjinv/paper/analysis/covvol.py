"""Covariance-volume channel selection (Sec. 3.2.4, Alg. 1, Supp. C.5; docs/method.md §8).

Given the centred covariance ``Σ`` (C×C) of the deepest stage's GAP features
``g``, [`covariance_volume_select()`][covariance_volume_select] picks channels greedily by the largest
diagonal of the running Schur complement. This is a partial Cholesky
factorisation with greedy diagonal pivoting: after picking ``j_1 … j_t`` the
residual diagonal is ``R_ii = Σ_ii − Σ_{i,S} Σ_S^{-1} Σ_{S,i}``, and

    log det Σ_{S_t} = Σ_{s ≤ t} log R_{j_s j_s}        (the log-det trajectory).

Implementation: the incremental form of Chen, Zhang & Zhou (2018, "Fast greedy
MAP inference for determinantal point processes"): one row of the Cholesky
factor per step, ``O(C·k²)`` time and ``O(C·k)`` memory; only the rows
``Σ_{j,:}`` of the chosen channels are read.

What the greedy rule guarantees — the paper is wrong here
---------------------------------------------------------
The paper claims a ``(1 − 1/e)`` approximation for maximising ``log det Σ_S``.
That is **not** valid: ``S ↦ log det Σ_S`` is submodular, but neither monotone
(adding a channel whose residual variance ``R_jj < 1`` *lowers* it) nor
non-negative (it is negative whenever the variances are below one), and
Nemhauser–Wolsey–Fisher needs both. The guarantee that does hold for the greedy
max-volume rule is Çivril & Magdon-Ismail (2009): the greedy parallelepiped
volume is within ``1/k!`` of the best ``k``-subset, i.e. since
``det Σ_S = vol²``, ``det Σ_{S_greedy} ≥ det Σ_{S*} / (k!)²``.

The monotone surrogate ``f(S) = log det(I + Σ_S/σ²)`` (``objective="surrogate"``)
*is* monotone, submodular and ``f(∅) = 0``, so greedy carries ``(1 − 1/e)``
there. It is the same algorithm run on ``I + Σ/σ²`` (every pivot is ``≥ 1``).
``tests/test_covvol.py`` compares both greedy rules with brute force.

[choice] ``ridge`` adds ``λ·I`` to ``Σ`` before selection (the log-det is then
that of ``Σ_S + λI``). With more channels than images (1280 GAP channels of
EfficientNet-Lite0 and a few hundred images), ``Σ`` has rank ``< N`` and a
ridge is the only way to rank channels past that rank. Without a ridge the
greedy stops cleanly at the first pivot ``≤ tol``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ...errors import AdjinvError

OBJECTIVES = ("logdet", "surrogate")


@dataclass
class CovVolSelection:
    """Result of [`covariance_volume_select()`][covariance_volume_select].

    ``order`` (k',) channels in the order picked (``k' ≤ k`` if a pivot ran out);
    ``pivots`` (k',) the Schur-complement diagonal ``R_jj`` at each pick (of the
    matrix the objective acts on: ``Σ + λI``, or ``I + (Σ + λI)/σ²``);
    ``logdet`` (k',) the objective after each pick (cumulative sum of ``log pivots``);
    ``stopped``: why the selection ended before ``k`` (``None`` if it did not).
    """

    order: torch.Tensor
    pivots: torch.Tensor
    logdet: torch.Tensor
    objective: str
    ridge: float
    sigma2: float | None
    stopped: str | None = None

    @property
    def k(self) -> int:
        """Number of channels selected."""
        return int(self.order.numel())

    def subset(self, k: int) -> torch.Tensor:
        """The greedy choice for budget ``k``: the first ``k`` picks (greedy is nested)."""
        if k > self.k:
            raise AdjinvError(f"only {self.k} channels were selected ({self.stopped}); asked for {k}")
        return self.order[:k]


def _check_cov(cov: torch.Tensor) -> None:
    if cov.dim() != 2 or cov.shape[0] != cov.shape[1]:
        raise AdjinvError(f"expected a square C x C covariance, got shape {tuple(cov.shape)}")
    if not torch.isfinite(cov).all():
        raise AdjinvError("the covariance holds NaN or inf")


def objective_matrix(cov: torch.Tensor, objective: str = "logdet", *, ridge: float = 0.0,
                     sigma2: float = 1.0) -> torch.Tensor:
    """The matrix ``M`` whose principal-minor log-det the objective is:
    ``Σ + λI`` (``"logdet"``) or ``I + (Σ + λI)/σ²`` (``"surrogate"``)."""
    if objective not in OBJECTIVES:
        raise AdjinvError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    m = cov + ridge * eye if ridge else cov
    if objective == "surrogate":
        if sigma2 <= 0:
            raise AdjinvError(f"sigma2 must be positive, got {sigma2}")
        m = eye + m / sigma2
    return m


def covariance_volume_select(cov: torch.Tensor, k: int, *, objective: str = "logdet",
                             ridge: float = 0.0, sigma2: float = 1.0,
                             tol: float | None = None,
                             dtype: torch.dtype = torch.float64) -> CovVolSelection:
    """Greedy covariance-volume selection of ``k`` channels (Alg. 1, docs/method.md §8).

    Args:
        cov: centred covariance ``Σ`` (C, C) of GAP features
            (``adjinv.paper.analysis.geometry.covariance()``).
        k: number of channels to select (``1 ≤ k ≤ C``).
        objective: ``"logdet"`` — maximise ``log det(Σ_S + λI)`` (the paper's rule; greedy
            is within ``1/k!`` in volume, *not* ``1 − 1/e``); ``"surrogate"`` — maximise
            the monotone ``log det(I + (Σ_S + λI)/σ²)`` (greedy within ``1 − 1/e``).
        ridge: ``λ ≥ 0`` added to the diagonal [choice, see module docstring].
        sigma2: ``σ²`` of the surrogate (ignored for ``"logdet"``).
        tol: a pivot ``≤ tol`` stops the selection cleanly (``stopped`` says so). Default:
            ``C · eps(dtype) · max diag`` — below that a pivot is rounding noise.
        dtype: working precision (float64 by default: pivots are differences of
            nearly equal numbers once the numerical rank is reached).
    """
    _check_cov(cov)
    c = cov.shape[0]
    if not 1 <= k <= c:
        raise AdjinvError(f"k must be between 1 and C={c}, got {k}")
    if ridge < 0:
        raise AdjinvError(f"ridge must be >= 0, got {ridge}")
    m = objective_matrix(cov.to(dtype), objective, ridge=ridge, sigma2=sigma2)
    d = torch.diagonal(m).clone()
    if tol is None:
        tol = c * torch.finfo(dtype).eps * max(float(d.abs().max()), 1e-300)
    factor = m.new_zeros(k, c)  # rows of the partial Cholesky factor (Chen et al. 2018)
    order, pivots = [], []
    taken = torch.zeros(c, dtype=torch.bool, device=m.device)
    stopped = None
    for t in range(k):
        j = int(torch.where(taken, torch.full_like(d, -torch.inf), d).argmax())
        piv = float(d[j])
        if not piv > tol:  # also catches NaN
            stopped = (f"pivot {piv:.3e} <= tol {tol:.3e} after {t} channels: the covariance "
                       f"has numerical rank {t}; pass ridge > 0 to rank further channels")
            break
        e = (m[j] - factor[:t, j] @ factor[:t]) / math.sqrt(piv)
        factor[t] = e
        d = d - e * e
        taken[j] = True
        order.append(j)
        pivots.append(piv)
    piv_t = torch.tensor(pivots, dtype=dtype, device=m.device)
    return CovVolSelection(order=torch.tensor(order, dtype=torch.long, device=m.device),
                           pivots=piv_t, logdet=torch.cumsum(torch.log(piv_t), 0),
                           objective=objective, ridge=ridge,
                           sigma2=sigma2 if objective == "surrogate" else None, stopped=stopped)


def subset_logdet(cov: torch.Tensor, idx: torch.Tensor | list[int], *, objective: str = "logdet",
                  ridge: float = 0.0, sigma2: float = 1.0) -> float:
    """``log det`` of the objective's principal submatrix on ``idx`` (``slogdet``;
    ``-inf`` if singular, ``nan`` if indefinite). The reference for the greedy trajectory."""
    _check_cov(cov)
    idx = torch.as_tensor(idx, dtype=torch.long, device=cov.device)
    if idx.numel() == 0:
        return 0.0
    sub = cov.to(torch.float64)[idx][:, idx]
    m = objective_matrix(sub, objective, ridge=ridge, sigma2=sigma2)
    sign, val = torch.linalg.slogdet(m)
    if sign == 0:
        return -math.inf
    return float(val) if sign > 0 else math.nan


def exhaustive_select(cov: torch.Tensor, k: int, *, objective: str = "logdet", ridge: float = 0.0,
                      sigma2: float = 1.0, max_subsets: int = 200_000) -> tuple[list[int], float]:
    """Brute force: the ``k``-subset with the largest objective and its value (small C only).
    Used to measure how far greedy is from the optimum."""
    _check_cov(cov)
    c = cov.shape[0]
    n = math.comb(c, k)
    if n > max_subsets:
        raise AdjinvError(f"C({c}, {k}) = {n} subsets exceeds max_subsets={max_subsets}")
    m = objective_matrix(cov.to(torch.float64), objective, ridge=ridge, sigma2=sigma2)
    subsets = torch.tensor(list(itertools.combinations(range(c), k)), dtype=torch.long)
    best_val: float = -math.inf
    best: list[int] | None = None
    for chunk in subsets.split(4096):
        sub = m[chunk[:, :, None], chunk[:, None, :]]  # (n, k, k)
        sign, val = torch.linalg.slogdet(sub)
        val = torch.where(sign > 0, val, torch.full_like(val, -math.inf))
        i = int(val.argmax())
        if float(val[i]) > best_val:
            best_val, best = float(val[i]), chunk[i].tolist()
    if best is None:
        raise AdjinvError(f"every {k}-subset of the {c} channels has a singular or indefinite "
                          "matrix (log det = -inf); add a ridge (ridge=...) or lower k")
    return best, best_val


def energy_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """The Energy baseline (docs/method.md §8): the ``k`` channels with the largest mean ``g_c²``
    over the dataset ``features`` (N, C); ties broken by the lower channel index."""
    if features.dim() != 2:
        raise AdjinvError(f"expected features (N, C), got shape {tuple(features.shape)}")
    c = features.shape[1]
    if not 1 <= k <= c:
        raise AdjinvError(f"k must be between 1 and C={c}, got {k}")
    energy = features.to(torch.float64).pow(2).mean(0)
    return torch.sort(energy, descending=True, stable=True).indices[:k]


def random_select(num_channels: int, k: int, seed: int) -> torch.Tensor:
    """The Random baseline: ``k`` distinct channels drawn uniformly, reproducible from ``seed``
    (a private generator, so the global RNG is untouched)."""
    if not 1 <= k <= num_channels:
        raise AdjinvError(f"k must be between 1 and C={num_channels}, got {k}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(num_channels, generator=g)[:k]


def keep_count(num_channels: int, prune_ratio: float) -> int:
    """``k = ⌈(1 − p)·C⌉`` channels kept at pruning ratio ``p`` ∈ [0, 1) (docs/method.md §8)."""
    if not 0 <= prune_ratio < 1:
        raise AdjinvError(f"pruning ratio must be in [0, 1), got {prune_ratio}")
    # round first: (1 - 0.9) * 1280 is 128.00000000000003 in floating point
    return max(1, math.ceil(round((1 - prune_ratio) * num_channels, 9)))
