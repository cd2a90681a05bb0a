"""Linear probe (determinism, accuracy, exact linear form) and OOD geometry (docs/method.md §9)."""

from __future__ import annotations

import math

import pytest
import torch

from adjinv.errors import AdjinvError
from adjinv.paper.analysis.geometry import (
    covariance,
    effective_rank,
    geometry_indicators,
    median_bandwidth,
    mmd2_unbiased,
    normalised_volume,
)
from adjinv.paper.heads.probe import LinearProbe, ProbeConfig, probe_accuracy


def blobs(n: int = 60, c: int = 12, k: int = 3, seed: int = 0, sep: float = 2.0):
    centres = sep * torch.randn(k, c, generator=torch.Generator().manual_seed(100))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = centres[y] + torch.randn(n, c, generator=g)
    x[:, -1] = 5.0  # a constant (dead) channel must not break standardisation
    return x, y


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_probe_is_deterministic_and_learns(optimizer):
    x, y = blobs()
    xt, yt = blobs(seed=1)
    cfg = ProbeConfig(optimizer=optimizer, seed=3, max_iter=60 if optimizer == "adam" else 100,
                      lr=0.05, batch_size=16)
    a = LinearProbe(3, cfg).fit(x, y)
    b = LinearProbe(3, cfg).fit(x, y)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.accuracy(x, y) == 1.0
    assert a.accuracy(xt, yt) > 0.8
    assert math.isfinite(a.final_loss)


def test_probe_effective_weights_reproduce_logits():
    x, y = blobs()
    p = LinearProbe(3, ProbeConfig(weight_decay=1e-2)).fit(x, y)
    w, b = p.effective_weights()
    assert torch.allclose(x.double() @ w.T + b, p.logits(x), atol=1e-9)


def test_probe_weight_decay_shrinks_weights():
    x, y = blobs(sep=4.0)
    small = LinearProbe(3, ProbeConfig(weight_decay=1e-4)).fit(x, y)
    big = LinearProbe(3, ProbeConfig(weight_decay=1.0)).fit(x, y)
    assert big.weight.norm() < small.weight.norm()


def test_probe_accuracy_on_channel_subsets_and_errors():
    x, y = blobs()
    xt, yt = blobs(seed=1)
    acc = probe_accuracy((x, y), {"test": (xt, yt), "train": (x, y)}, torch.tensor([0, 1, 2]), 3)
    assert set(acc) == {"test", "train"} and 0 <= acc["test"] <= 1
    with pytest.raises(AdjinvError, match="labels"):
        LinearProbe(2).fit(x, y)
    with pytest.raises(AdjinvError, match="not trained"):
        LinearProbe(3).predict(x)
    with pytest.raises(AdjinvError, match="optimizer"):
        LinearProbe(3, ProbeConfig(optimizer="sgd"))


def test_covariance_and_trace():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(40, 5, generator=g)
    cov = covariance(f)
    ref = torch.cov(f.double().T)
    assert torch.allclose(cov, ref, atol=1e-12)
    ind = geometry_indicators(f, f, torch.tensor([0, 2]), bandwidth=1.0)
    assert ind.trace == pytest.approx(float(torch.trace(ref)))
    assert ind.logdet_subset == pytest.approx(float(torch.logdet(ref[[0, 2]][:, [0, 2]])))


def test_effective_rank():
    assert effective_rank(torch.eye(7)) == pytest.approx(7.0)
    assert effective_rank(3.5 * torch.eye(4)) == pytest.approx(4.0)
    assert effective_rank(torch.diag(torch.tensor([1.0, 0, 0]))) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(3, 3)) == 0.0
    r = effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.01])))
    assert 2.0 < r < 2.2


def test_mmd2_identical_samples_and_sign():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    # the same sample twice: the unbiased estimator is ≈ 0 (exactly 2(S - m)/(m(m-1)) - 2S/m²)
    v, h = mmd2_unbiased(x, x.clone())
    assert abs(v) < 0.05 and h > 0
    # two draws from one distribution: ≈ 0 and can be negative (unbiased)
    vals = [mmd2_unbiased(torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g))[0]
            for _ in range(12)]
    assert min(vals) < 0
    assert all(abs(v) < 0.1 for v in vals)
    # a shifted distribution gives a clearly positive value, growing with the shift
    y1, y3 = torch.randn(50, 8, generator=g) + 1.0, torch.randn(50, 8, generator=g) + 3.0
    h0 = median_bandwidth(x, x)
    m1, _ = mmd2_unbiased(x, y1, bandwidth=h0)
    m3, _ = mmd2_unbiased(x, y3, bandwidth=h0)
    assert 0.05 < m1 < m3


def test_mmd2_matches_explicit_formula():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, generator=g).double(), torch.randn(5, 3, generator=g).double()
    h = 1.3

    def k(a, b):
        return math.exp(-float((a - b).pow(2).sum()) / (2 * h * h))

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    v, used = mmd2_unbiased(x, y, bandwidth=h)
    assert used == h
    assert v == pytest.approx(sxx + syy - 2 * sxy, abs=1e-12)


def test_median_bandwidth_convention():
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([[10.0], [11.0], [12.0]])
    # 15 pooled pairwise distances 1,1,1,1,2,2,8,9,9,10,10,10,11,11,12 -> median 9
    assert median_bandwidth(x, y) == pytest.approx(9.0)


def test_normalised_volume():
    assert normalised_volume(-3.0, -3.0, 10) == 1.0
    assert normalised_volume(-3.0 + 10 * math.log(0.5), -3.0, 10) == pytest.approx(0.5)
    assert math.isnan(normalised_volume(-math.inf, 1.0, 3))


def test_mmd_subsampling_bounds_memory():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(500, 4, generator=g), torch.randn(400, 4, generator=g) + 2
    full, h = mmd2_unbiased(x, y, max_samples=None)
    sub, _ = mmd2_unbiased(x, y, bandwidth=h, max_samples=100)
    assert sub == pytest.approx(full, rel=0.3)
    assert mmd2_unbiased(x, y, max_samples=100) == mmd2_unbiased(x, y, max_samples=100)


def test_ood_controls_are_scale_free_where_they_should_be():
    from adjinv.paper.analysis.covvol import subset_logdet
    from adjinv.paper.analysis.geometry import correlation_logdet, random_subsets, shift_controls

    g = torch.Generator().manual_seed(0)
    f = torch.randn(60, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g,
                                                                           dtype=torch.float64)
    sub = torch.tensor([0, 3, 5, 7])
    rand = random_subsets(12, 4, 5, seed=1)
    assert all(len(set(r.tolist())) == 4 for r in rand)
    a, b = shift_controls(f, sub, rand), shift_controls(0.1 * f, sub, rand)
    # shrinking the activations lowers the log det by 2 k log 10 and the norm tenfold ...
    assert subset_logdet(torch.cov(f.T), sub) - subset_logdet(torch.cov((0.1 * f).T), sub) == \
        pytest.approx(2 * 4 * math.log(10))
    assert b["mean_norm"] == pytest.approx(0.1 * a["mean_norm"])
    assert b["logdet_random_subset"] == pytest.approx(a["logdet_random_subset"] - 8 * math.log(10))
    # ... but leaves the correlation log det unchanged
    assert b["logdet_corr_subset"] == pytest.approx(a["logdet_corr_subset"], abs=1e-9)
    assert b["logdet_corr_random_subset"] == pytest.approx(a["logdet_corr_random_subset"], abs=1e-9)
    eye = torch.eye(4, dtype=torch.float64) * 7.0
    assert correlation_logdet(eye, [0, 1, 2]) == pytest.approx(0.0, abs=1e-12)
