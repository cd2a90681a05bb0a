"""Covariance geometry of GAP features under shift (Sec. 3.2.5, Supp. C.6; docs/method.md §9).

All functions take feature matrices ``(N, C)`` (rows = images) or covariances
``(C, C)`` as tensors on any device and compute in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import AdjinvError
from ...records import Record
from .covvol import subset_logdet


def _features(x: torch.Tensor, name: str = "features") -> torch.Tensor:
    if x.dim() != 2:
        raise AdjinvError(f"{name} must be (N, C), got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise AdjinvError(f"{name} needs at least 2 rows (images), got {x.shape[0]}")
    return x.to(torch.float64)


def covariance(features: torch.Tensor) -> torch.Tensor:
    """Centred covariance ``Σ = (G − ḡ)ᵀ(G − ḡ)/(N − 1)`` of features ``G`` (N, C)."""
    g = _features(features)
    g = g - g.mean(0, keepdim=True)
    return g.T @ g / (g.shape[0] - 1)


def effective_rank(cov: torch.Tensor) -> float:
    """Roy & Vetterli (2007): ``exp(−Σ p_i log p_i)``, ``p_i = σ_i / Σ σ`` over the
    singular values ``σ_i`` of ``cov`` (its eigenvalues, as it is PSD). Between 1 and
    C; equals C for a multiple of the identity. An all-zero matrix has rank 0."""
    s = torch.linalg.svdvals(cov.to(torch.float64))
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def subsample(x: torch.Tensor, max_samples: int | None, seed: int = 0) -> torch.Tensor:
    """At most ``max_samples`` rows of ``x``, drawn without replacement from a private
    generator (all rows, in order, if there are not more)."""
    if max_samples is None or x.shape[0] <= max_samples:
        return x
    if max_samples < 2:
        raise AdjinvError(f"max_samples must be at least 2, got {max_samples}")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
    return x[idx.sort().values.to(x.device)]


def median_bandwidth(x: torch.Tensor, y: torch.Tensor, max_samples: int | None = 2000) -> float:
    """Median heuristic: the median Euclidean distance between distinct points of the
    pooled sample ``x ∪ y`` (Gretton et al. 2012; for an even count, the lower of the
    two middle values). A zero median falls back to the mean distance, then to 1.
    Each sample is first cut to ``max_samples`` rows ([`subsample()`][subsample]), since the
    distance matrix is quadratic in the number of images."""
    z = torch.cat([_features(subsample(x, max_samples), "x"),
                   _features(subsample(y, max_samples, 1), "y")])
    d = torch.cdist(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    dist = d[iu[0], iu[1]]
    h = float(dist.median())
    if h <= 0:
        h = float(dist.mean())
    return h if h > 0 else 1.0


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None,
                  max_samples: int | None = 2000) -> tuple[float, float]:
    """Unbiased ``MMD²_u`` (Gretton et al. 2012, Lemma 6) between samples ``x`` (m, C)
    and ``y`` (n, C), and the bandwidth used.

    [choice, docs/method.md §9] Gaussian kernel ``k(a, b) = exp(−‖a − b‖² / (2h²))`` with ``h``
    the median heuristic ([`median_bandwidth()`][median_bandwidth]: median pairwise distance of the
    pooled sample) unless ``bandwidth`` is given. The estimator drops the diagonal
    terms ``k(x_i, x_i)``, so it is unbiased and can be slightly **negative** when
    the two distributions are equal; it is 0 in expectation then. Samples larger
    than ``max_samples`` rows are subsampled (seeded) to keep the kernel matrices
    in memory; ``None`` uses every row.
    """
    x = _features(subsample(x, max_samples), "x")
    y = _features(subsample(y, max_samples, 1), "y")
    if x.shape[1] != y.shape[1]:
        raise AdjinvError(f"x and y have {x.shape[1]} and {y.shape[1]} channels")
    h = median_bandwidth(x, y, None) if bandwidth is None else float(bandwidth)
    if h <= 0:
        raise AdjinvError(f"bandwidth must be positive, got {h}")
    gamma = 1.0 / (2 * h * h)
    m, n = x.shape[0], y.shape[0]
    kxx = torch.exp(-gamma * torch.cdist(x, x).pow(2))
    kyy = torch.exp(-gamma * torch.cdist(y, y).pow(2))
    kxy = torch.exp(-gamma * torch.cdist(x, y).pow(2))
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean()), h


@dataclass
class GeometryIndicators(Record):
    """The four covariance indicators of Figure 4(d) for one feature set."""

    logdet_subset: float
    effective_rank: float
    trace: float
    mmd2: float
    bandwidth: float


def geometry_indicators(reference: torch.Tensor, features: torch.Tensor, subset: torch.Tensor, *,
                        ridge: float = 0.0, bandwidth: float | None = None,
                        max_samples: int | None = 2000) -> GeometryIndicators:
    """Indicators of ``features`` (N, C): ``log det(Σ_S + λI)`` on the fixed channel subset
    ``S`` (chosen on clean data), effective rank and trace of the full ``Σ``, and
    ``MMD²_u`` between ``reference`` (clean features) and ``features`` (docs/method.md §9)."""
    cov = covariance(features)
    mmd, h = mmd2_unbiased(reference, features, bandwidth, max_samples)
    ld = subset_logdet(cov, subset, ridge=ridge)
    return GeometryIndicators(logdet_subset=ld, effective_rank=effective_rank(cov),
                              trace=float(torch.trace(cov)), mmd2=mmd, bandwidth=h)


def normalised_volume(logdet: float, logdet_ref: float, k: int) -> float:
    """``exp((log det Σ_S − log det Σ_S^ref)/k)``: the geometric-mean ratio of the
    subset's ellipsoid axes to the reference's. 1 at the reference; how Figure 4(d)
    can show a log-det "normalised to severity 0" when the log-det itself may be
    negative (a plain ratio of log-dets would be meaningless)."""
    if not (math.isfinite(logdet) and math.isfinite(logdet_ref)):
        return math.nan
    return math.exp((logdet - logdet_ref) / k)


def correlation_logdet(cov: torch.Tensor, subset: torch.Tensor | list[int], *, ridge: float = 0.0) -> float:
    """``log det`` of the correlation matrix of ``Σ_S + λI``: scale-free, so it does not
    fall merely because the activations shrink (docs/method.md §9, controls). ``≤ 0``;
    0 for uncorrelated channels."""
    idx = torch.as_tensor(subset, dtype=torch.long, device=cov.device)
    sub = cov.to(torch.float64)[idx][:, idx] + ridge * torch.eye(idx.numel(), dtype=torch.float64,
                                                                  device=cov.device)
    d = sub.diagonal().clamp_min(1e-300).rsqrt()
    sign, val = torch.linalg.slogdet(d[:, None] * sub * d[None, :])
    if sign == 0:
        return -math.inf
    return float(val) if sign > 0 else math.nan


def random_subsets(c: int, k: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` random ``k``-subsets of ``C`` channels from a private generator (the random-subset
    control of docs/method.md §9)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(c, generator=g)[:k] for _ in range(n)]


def shift_controls(features: torch.Tensor, subset: torch.Tensor, random: list[torch.Tensor], *,
                   ridge: float = 0.0) -> dict[str, float]:
    """The controls beside the OOD indicators (docs/method.md §9): ``logdet_corr_subset``
    (scale-free log det on the CovVol subset), ``mean_norm`` (mean ‖g‖ of the features:
    log det and trace fall when activations shrink), and the mean over ``random`` subsets
    of the same size of ``log det(Σ_R + λI)`` and of its correlation form (the CovVol
    subset maximises the *clean* log det, so any shift lowers it; a random subset has no
    such selection effect)."""
    cov = covariance(features)
    g = _features(features)
    rl = [subset_logdet(cov, r, ridge=ridge) for r in random]
    rc = [correlation_logdet(cov, r, ridge=ridge) for r in random]
    return {"logdet_corr_subset": correlation_logdet(cov, subset, ridge=ridge),
            "mean_norm": float(g.norm(dim=1).mean()),
            "logdet_random_subset": sum(rl) / len(rl) if rl else math.nan,
            "logdet_corr_random_subset": sum(rc) / len(rc) if rc else math.nan}
