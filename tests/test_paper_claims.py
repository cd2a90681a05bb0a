"""The analyses behind docs/paper-claims.md: Crisis I/II (Eq. 1), Remark 3, Lemma B.1 /
Supp. C.5, Theorem 2 — each on signals where the answer is known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adjinv.core.cascade import AdjointCascade
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.errors import AdjinvError
from adjinv.paper.analysis.crisis import crisis_stats, diagnose_path, eq1_bound_deg, lattice_shares
from adjinv.paper.analysis.duality import (
    duality_study,
    inversion_log_volume,
    log_volume,
    pool_geometry,
    random_subsets,
)
from adjinv.paper.analysis.lac_stats import inversion_norm_spread, lac_parameter_report, pixel_median
from adjinv.paper.analysis.support import support_leak
from conftest import random_lacs, smooth_image


def _smooth(h: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, h // 8, h // 8, generator=g, dtype=torch.float64)
    return F.interpolate(x, size=(h, h), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- Crisis I / II
def test_nail_bed_is_detected_and_a_smooth_signal_is_not():
    smooth = _smooth()
    nail = torch.zeros_like(smooth)
    nail[..., ::2, ::2] = smooth[..., ::2, ::2]  # zero insertion (Eq. 20)
    s_nail = crisis_stats(nail, 2)
    s_smooth = crisis_stats(smooth, 2)
    assert s_nail.lattice_share == pytest.approx(1.0)
    assert s_nail.lattice_contrast > 1e6 > 10 > s_nail.lattice_contrast_shuffled
    assert s_smooth.lattice_share < 0.3
    # the nail bed is far from its low-passed direction, the smooth signal is not
    assert s_nail.angle_deg > 45 > 15 > s_smooth.angle_deg
    assert lattice_shares(nail, 2).sum(1).allclose(torch.ones(1, dtype=torch.float64))


def test_eq1_bound_holds_when_its_hypotheses_do():
    """Eq. 22–27: with |n_∥| ≤ ‖v‖, the angle of v + n from v is at least the bound."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        v = torch.randn(50, generator=g, dtype=torch.float64)
        vn = v / v.norm()
        n = torch.randn(50, generator=g, dtype=torch.float64) * float(torch.rand(1, generator=g) * 3)
        par = float(n @ vn)
        perp = float((n - par * vn).norm())
        if abs(par) > v.norm():
            continue
        ang = math.degrees(math.acos(float((v + n) @ v / ((v + n).norm() * v.norm()))))
        assert ang >= eq1_bound_deg(perp / float(v.norm())) - 1e-9
    assert eq1_bound_deg(1.0) == pytest.approx(math.degrees(math.asin(1 / math.sqrt(5))))


def test_diagnose_path_rows_and_first_boundary(tiny_enc):
    x = tiny_enc.normalize(smooth_image(32, seed=3)).double()
    rows = diagnose_path(AdjointCascade(tiny_enc, random_lacs(tiny_enc)), x, top_k=4)
    dec = [k for k, i in enumerate(tiny_enc.infos) if i.decimates]
    assert [r["stage"] for r in rows] == sorted(dec, reverse=True)
    # before any LAC the two chains carry the same signal; after one they differ
    assert rows[0]["raw"] == rows[0]["lac_in"]
    assert rows[-1]["raw"] != rows[-1]["lac_in"]
    assert rows[-1]["signal"] == "pixels" and "raw_source_period" in rows[-1]
    with pytest.raises(AdjinvError):
        crisis_stats(torch.zeros(2, 3, 8, 8), 2)


# ----------------------------------------------------------------------------- Remark 3
def _net(act: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1), act, nn.Conv2d(6, 6, 3, 1, 1)).double().eval()


def test_support_leak_zero_for_relu_positive_for_gelu():
    x = torch.zeros(1, 3, 24, 24, dtype=torch.float64)
    x[..., 8:14, 8:14] = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(1),
                                     dtype=torch.float64)
    relu = nn.Sequential(*_net(nn.ReLU()), nn.ReLU())
    gelu = nn.Sequential(*_net(nn.GELU()), nn.GELU())
    r = support_leak(relu, x, list(range(6)))
    g = support_leak(gelu, x, list(range(6)))
    assert r.energy_outside == 0.0 and r.negative_share == 0.0
    assert r.pixels_outside > 0.3  # not vacuous: the field leaves much of the image out
    assert 0.5 < r.field_covered <= 1.0  # Remark 2: v is non-zero on (nearly) all of its field
    assert g.energy_outside > 1e-3 and g.negative_share > 0
    with pytest.raises(AdjinvError):
        support_leak(relu, torch.cat([x, x]), [0])


def test_field_coverage_sees_a_cancellation():
    """Remark 2's statistic can fail: on a ramp, z(q) = x(q) − x(q+1) is the same at every
    position, so v(p) = A(p) − A(p−1) cancels exactly inside the field (the probe's random
    weights do not cancel)."""
    conv = nn.Conv2d(3, 1, (1, 2), bias=False).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0], conv.weight[0, 0, 0, 1] = 1.0, -1.0
    net = nn.Sequential(conv, nn.ReLU()).eval()
    x = torch.rand(1, 3, 6, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0, 0] = -torch.arange(12, dtype=torch.float64)  # integer steps: z = 1 exactly
    r = support_leak(net, x, [0])
    assert r.energy_outside == 0.0
    assert r.field_covered == pytest.approx(2 / 12)  # only the two border pixels per row
    x[0, 0] = torch.rand(6, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[0, 0, :, ::2] += 2.0  # alternating: every other position active, no cancellation
    assert support_leak(net, x, [0]).field_covered == 1.0


# ----------------------------------------------------------------------------- Lemma B.1, C.5
def test_lac_report_and_pixel_median(tiny_enc):
    lacs = random_lacs(tiny_enc)
    rep = lac_parameter_report(lacs)
    assert set(rep) == set(lacs.lacs)
    g = lacs.pix.gamma.detach()
    assert rep["pix"]["gamma_positive_share"] == pytest.approx(float((g > 0).double().mean()))
    assert rep["pix"]["gamma"] == pytest.approx(g.tolist())
    ident = lac_parameter_report(LACBank.for_encoder(tiny_enc))
    assert all(v["beta_all_zero"] and v["gamma_positive_share"] == 1 for v in ident.values())
    imgs = torch.full((2, 3, 4, 4), 0.25)
    imgs[:, 1] = -1
    assert pixel_median(imgs).tolist() == [0.25, -1, 0.25]


def test_inversion_norm_is_predicted_by_lac_pix(tiny_enc):
    """Every φ_c = s_c + β_pix, so ‖φ_c‖ ≈ sqrt(P Σ(γ² + β²)) up to the LAC's ε (Supp. C.5)."""
    lacs = random_lacs(tiny_enc, seed=5)
    x = tiny_enc.normalize(smooth_image(32, seed=2)).double()
    phi = AdjointInverter(tiny_enc, lacs).channel_inversions(x, 3, list(range(16)))[0]
    alive = phi.flatten(1).std(1) > 0
    s = inversion_norm_spread(phi[alive], lacs)
    assert s.max_rel_dev < 1e-3
    assert s.share_within_1e_6 > 0.5
    # a channel that pulls back nothing is φ = β_pix, of norm sqrt(P Σβ²)
    beta_only = lacs.pix.beta.detach().double().view(1, 3, 1, 1).expand(1, 3, 32, 32)
    s2 = inversion_norm_spread(torch.cat([phi[alive][:3], beta_only]), lacs)
    assert s2.share_beta_only == pytest.approx(0.25) and s2.share_within_1e_6 < 1
    # the statistic can fail: rescale one channel
    bad = phi[alive].clone()
    bad[0] *= 2
    assert inversion_norm_spread(bad, lacs).max_rel_dev > 0.5


# ----------------------------------------------------------------------------- Theorem 2
def test_log_volume_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(6, 3, 5, 5, generator=g, dtype=torch.float64)
    s = [0, 2, 3, 5]
    f = phi.flatten(1)
    u = torch.linalg.svd(f, full_matrices=False).Vh[0]
    a = f[s] @ u
    q = torch.linalg.qr(a[:, None], mode="complete").Q[:, 1:]
    want = 0.5 * torch.logdet(q.T @ f[s] @ f[s].T @ q)
    assert inversion_log_volume(phi, s) == pytest.approx(float(want), rel=1e-9)
    gm, av = pool_geometry(phi)
    assert log_volume(gm, av, s) == pytest.approx(float(want), rel=1e-9)
    # orthonormal-basis invariance: a permuted subset has the same volume
    assert log_volume(gm, av, [5, 3, 2, 0]) == pytest.approx(float(want), rel=1e-9)


def test_duality_study_agrees_when_phi_is_built_from_gap():
    """H1 built in: φ_c = a·u + σ_c r_c with orthonormal r_c and σ_c the GAP standard
    deviations of uncorrelated features. Volume and GAP log-det then differ only by the
    second factor of Eq. 104 and rank subsets nearly alike; with the GAP columns shuffled
    they do not."""
    gen = torch.Generator().manual_seed(0)
    k_pool, n_img, p = 8, 2, 400
    z = torch.randn(40, k_pool, generator=gen, dtype=torch.float64)
    q = torch.linalg.qr(z - z.mean(0)).Q  # centred, orthonormal columns: Σ diagonal
    gap = q * torch.linspace(0.2, 3, k_pool)
    sd = gap.std(0)
    basis = torch.linalg.qr(torch.randn(p, k_pool + 1, generator=gen, dtype=torch.float64)).Q
    u, r = basis[:, 0], basis[:, 1:]
    phi = torch.stack([3 * u + sd[:, None] * r.T for _ in range(n_img)]).reshape(n_img, k_pool, 1, 20, 20)
    subsets = random_subsets(k_pool, 3, 56)
    res, _, _ = duality_study(phi, gap, subsets)
    assert res.spearman > 0.85 and res.same_maximiser
    perm = torch.tensor([3, 7, 0, 5, 1, 6, 2, 4])
    res2, _, _ = duality_study(phi, gap[:, perm], subsets)
    assert res2.spearman < 0.5 and not res2.same_maximiser
    assert len({tuple(s) for s in subsets}) == len(subsets) == 56


# ----------------------------------------------------------------------------- source depth
def test_depth_profile_one_value_per_stage(tiny_enc):
    from adjinv.metrics.likeness import pearson_rgb
    from adjinv.paper.analysis.depth import depth_increases, depth_profile

    x = tiny_enc.normalize(smooth_image(32, batch=2, seed=4)).double()
    inv = AdjointInverter(tiny_enc, random_lacs(tiny_enc), chunk_size=8)
    prof = depth_profile(inv, x)
    assert len(prof) == tiny_enc.num_stages and all(p.shape == (2,) for p in prof)
    want = pearson_rgb(inv.invert(x, stages=[1]).x_hat[1], x)
    assert torch.allclose(prof[1], want)
    assert depth_increases([0.6, 0.3, 0.3, 0.1]) == 0
    assert depth_increases([0.6, 0.7, 0.2, 0.3]) == 2
