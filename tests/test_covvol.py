"""Covariance-volume selection (docs/method.md §8): greedy vs brute force, the log-det trajectory,
the monotone surrogate, clean stops, and the baselines."""

from __future__ import annotations

import math

import pytest
import torch

from adjinv.errors import AdjinvError
from adjinv.paper.analysis.covvol import (
    covariance_volume_select,
    energy_select,
    exhaustive_select,
    keep_count,
    random_select,
    subset_logdet,
)
from adjinv.paper.analysis.geometry import covariance


def random_cov(c: int, rank: int, seed: int, scale_spread: float = 1.0) -> torch.Tensor:
    """A PSD C x C matrix of the given rank (+ a tiny ridge), with channel scales spread
    over ``scale_spread`` decades, so that some variances are below 1 (log det < 0)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(c, rank, generator=g, dtype=torch.float64)
    s = 10 ** (scale_spread * (torch.rand(c, 1, generator=g, dtype=torch.float64) - 0.5))
    a = a * s / math.sqrt(rank)
    if seed % 2:  # a shared direction in every channel (H1-like), which misleads greedy more
        a[:, 0] = a[:, 0].abs() * 3
    return a @ a.T + 1e-4 * torch.eye(c, dtype=torch.float64)


def test_greedy_vs_brute_force_worst_ratio(record_property):
    """Greedy log det stays within the proven 1/(k!)^2 in det (1/k! in volume); the surrogate
    greedy stays within 1 - 1/e of the optimum. Report the worst ratios seen."""
    worst_det, worst_sur, worst_gap = 1.0, 1.0, 0.0
    cases = 0
    for seed in range(40):
        c = 7 + seed % 4
        k = 2 + seed % 4
        cov = random_cov(c, rank=2 + seed % 6, seed=seed, scale_spread=1.0 + seed % 3)
        sel = covariance_volume_select(cov, k)
        _, best = exhaustive_select(cov, k)
        greedy = float(sel.logdet[-1])
        assert greedy <= best + 1e-9
        ratio = math.exp(greedy - best)
        assert ratio >= 1 / math.factorial(k) ** 2
        worst_det = min(worst_det, ratio)
        worst_gap = max(worst_gap, best - greedy)
        for sigma2 in (0.1, 1.0):
            sur = covariance_volume_select(cov, k, objective="surrogate", sigma2=sigma2)
            _, best_s = exhaustive_select(cov, k, objective="surrogate", sigma2=sigma2)
            r = float(sur.logdet[-1]) / best_s
            assert r >= 1 - 1 / math.e
            worst_sur = min(worst_sur, r)
        cases += 1
    record_property("worst_det_ratio_logdet_greedy", worst_det)
    record_property("worst_ratio_surrogate_greedy", worst_sur)
    print(f"\n{cases} random covariances: worst det(greedy)/det(opt) = {worst_det:.6f} "
          f"(log-det gap {worst_gap:.4f}); worst surrogate ratio = {worst_sur:.6f}")
    # greedy is not optimal in general: the comparison is not vacuous
    assert worst_det < 1.0


def test_logdet_objective_is_not_monotone():
    """Why the paper's (1 - 1/e) does not apply: adding a channel can lower log det."""
    cov = torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64))
    sel = covariance_volume_select(cov, 2)
    assert sel.logdet[1] < sel.logdet[0]
    assert float(sel.logdet[1]) == pytest.approx(0.0, abs=1e-12)
    assert subset_logdet(cov, [1]) < 0  # negative values too


@pytest.mark.parametrize("objective", ["logdet", "surrogate"])
def test_trajectory_equals_slogdet_of_chosen_submatrix(objective):
    cov = random_cov(24, rank=10, seed=3)
    sel = covariance_volume_select(cov, 10, objective=objective, sigma2=0.5, ridge=1e-3)
    for t in range(1, sel.k + 1):
        ref = subset_logdet(cov, sel.order[:t], objective=objective, sigma2=0.5, ridge=1e-3)
        assert float(sel.logdet[t - 1]) == pytest.approx(ref, rel=1e-9, abs=1e-9)
    # the greedy step is the argmax of the log-det gain among the remaining channels
    for t in range(3):
        chosen = sel.order[:t].tolist()
        gains = [subset_logdet(cov, [*chosen, j], objective=objective, sigma2=0.5, ridge=1e-3)
                 if j not in chosen else -math.inf for j in range(24)]
        assert int(torch.tensor(gains).argmax()) == int(sel.order[t])


def test_surrogate_is_monotone_and_nonnegative():
    cov = random_cov(30, rank=5, seed=7, scale_spread=3.0)
    sel = covariance_volume_select(cov, 30, objective="surrogate", sigma2=2.0)
    assert sel.k == 30
    assert (sel.pivots >= 1 - 1e-12).all()
    assert (torch.diff(sel.logdet) >= -1e-12).all()
    assert sel.logdet[0] >= 0


def test_stops_cleanly_on_non_positive_pivot():
    cov = random_cov(12, rank=3, seed=1) - 1e-4 * torch.eye(12, dtype=torch.float64)  # exact rank 3
    sel = covariance_volume_select(cov, 8)
    assert sel.k == 3
    assert sel.stopped is not None and "rank 3" in sel.stopped
    assert torch.isfinite(sel.logdet).all()
    with pytest.raises(AdjinvError, match="only 3"):
        sel.subset(5)
    # an indefinite matrix (negative diagonal) also stops without NaN
    bad = torch.diag(torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64))
    s2 = covariance_volume_select(bad, 3)
    assert s2.k == 1 and s2.order.tolist() == [0]
    # with a ridge every channel can be ranked
    full = covariance_volume_select(cov, 12, ridge=1e-3)
    assert full.k == 12 and sorted(full.order.tolist()) == list(range(12))


def test_greedy_prefers_independent_channels_over_energy():
    """Two copies of a loud channel and one quieter independent one: Energy takes both
    copies, CovVol takes the loud one and the independent one (Supp. C.5)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, generator=g, dtype=torch.float64)
    b = torch.randn(200, generator=g, dtype=torch.float64)
    feats = torch.stack([3 * a, 3 * a + 1e-3 * b, 0.5 * b], 1)
    assert sorted(energy_select(feats, 2).tolist()) == [0, 1]
    sel = covariance_volume_select(covariance(feats), 2)
    assert 2 in sel.order.tolist()


def test_energy_and_random_selectors():
    feats = torch.tensor([[1.0, 0.0, 3.0, 2.0], [1.0, 0.0, -3.0, 2.0]])
    assert energy_select(feats, 3).tolist() == [2, 3, 0]
    r1, r2 = random_select(100, 10, seed=5), random_select(100, 10, seed=5)
    assert torch.equal(r1, r2) and r1.unique().numel() == 10
    assert not torch.equal(r1, random_select(100, 10, seed=6))
    state = torch.get_rng_state()
    random_select(100, 10, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


def test_keep_count_and_validation():
    assert [keep_count(1280, p) for p in (0, 0.5, 0.8, 0.9, 0.95, 0.98)] == [1280, 640, 256, 128,
                                                                             64, 26]
    assert keep_count(10, 0.98) == 1
    with pytest.raises(AdjinvError):
        keep_count(10, 1.0)
    with pytest.raises(AdjinvError, match="square"):
        covariance_volume_select(torch.zeros(3, 4), 1)
    with pytest.raises(AdjinvError, match="k must be"):
        covariance_volume_select(torch.eye(3), 4)
    with pytest.raises(AdjinvError, match="max_subsets"):
        exhaustive_select(torch.eye(40), 20)


def test_float32_input_and_large_c_fast():
    """C = 1280 (EfficientNet-Lite0's GAP width), rank-deficient as with ~200 images."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(150, 1280, generator=g)
    cov = covariance(f).float()
    sel = covariance_volume_select(cov, 200, ridge=1e-3)
    assert sel.k == 200 and sel.order.unique().numel() == 200
    # pivoted Cholesky: the largest residual variance never grows, and never drops below λ
    assert (torch.diff(sel.pivots) <= 1e-9).all()
    assert float(sel.pivots[-1]) >= 1e-3 * (1 - 1e-4)
    assert float(sel.pivots[-1]) < 0.01 * float(sel.pivots[0])
