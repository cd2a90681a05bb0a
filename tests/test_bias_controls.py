"""The LAC_pix bias floor, the three variants, H2 terms and the fixed controls
(docs/method.md §15): exact identities that hold for any input."""

from __future__ import annotations

import pytest
import torch

from adjinv.core.inverter import AdjointInverter
from adjinv.methods.class_directional import class_directional_inversion
from adjinv.methods.controls import (
    partner_derangement,
    seed_zero,
    shuffled_head_row,
    shuffled_head_weights,
)
from adjinv.paper.analysis.superposition import (
    centre_rgb,
    interference_terms,
    lac_pix_floor,
    measured_floor,
    project_out,
    superposition_statistics,
)
from adjinv.paper.runners.interference_common import bootstrap_ci
from conftest import random_lacs, smooth_image


def _pixbias(enc, seed=1):
    """Random LACs with the inner biases zeroed: Ψ(0) is the constant image β_pix."""
    lacs = random_lacs(enc, seed).double()
    with torch.no_grad():
        for name, lac in lacs.lacs.items():
            if name != "pix":
                lac.beta.zero_()
    return lacs


def _phi(enc, lacs, seed=0):
    inv = AdjointInverter(enc, lacs)
    x = enc.normalize(smooth_image(32, 1, seed=seed, dtype=torch.float64))
    return inv, x, inv.channel_inversions(x, -1, list(range(16)))[0]


def test_lac_pix_bias_is_constant_and_orthogonal(tiny_enc):
    lacs = _pixbias(tiny_enc)
    inv, x, phi = _phi(tiny_enc, lacs)
    beta = lacs.pix.beta.detach().view(3, 1, 1)
    live = phi.flatten(1).std(1) > 0
    b = phi - centre_rgb(phi)
    assert torch.allclose(b[live], beta.expand_as(b[live]), atol=1e-9)
    z = seed_zero(inv, x)[0]
    assert torch.allclose(z, beta.expand_as(z), atol=1e-12)  # Ψ(0) = β_pix
    s = centre_rgb(phi)
    assert float((s * beta).flatten(1).sum(1).abs().max()) < 1e-9  # ⟨s_c, b⟩ = 0
    # with Ψ(0) constant, projecting it out is the same as per-RGB centring
    proj = project_out(phi, z)
    assert proj is not None and torch.allclose(proj, s, atol=1e-9)
    assert project_out(phi, torch.zeros_like(z)) is None


def test_energy_fraction_above_both_floors(tiny_enc):
    for seed in (1, 2, 3):
        lacs = _pixbias(tiny_enc, seed)
        _, _, phi = _phi(tiny_enc, lacs, seed)
        phi = phi[centre_rgb(phi).flatten(1).norm(dim=1) > 0]  # live: dead channels are exactly b
        ef = superposition_statistics(phi).energy_fraction
        exact = measured_floor(phi)
        analytic = lac_pix_floor(lacs.pix.gamma, lacs.pix.beta)
        assert ef >= exact - 1e-12
        # every live φ_c has ‖s_c‖² = P Σγ² up to the relative ε: the two floors agree
        assert exact == pytest.approx(analytic["bias_share"], rel=1e-3)
        assert superposition_statistics(phi).variance_before <= analytic["v_before_ceiling"] + 1e-3
        # zero-mean φ has no bias floor left
        assert measured_floor(centre_rgb(phi)) < 1e-20


def test_floor_formula_on_synthetic_rows():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(50, 3, 8, 8, generator=g, dtype=torch.float64)
    s = centre_rgb(s)
    s = s / s.flatten(1).norm(dim=1)[:, None, None, None]  # equal energy, zero mean per RGB
    beta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    b = beta.view(3, 1, 1).expand(3, 8, 8)
    phi = s + b
    share = float(b.pow(2).sum()) / (float(b.pow(2).sum()) + 1.0)
    assert measured_floor(phi) == pytest.approx(share, rel=1e-12)
    assert superposition_statistics(phi).energy_fraction >= share
    gamma = torch.full((3,), (1 / 64 / 3) ** 0.5, dtype=torch.float64)  # P Σγ² = ‖s‖² = 1
    assert lac_pix_floor(gamma, beta)["bias_share"] == pytest.approx(share, rel=1e-12)


def test_zero_mean_class_reconstruction_removes_sum_alpha_beta(tiny_enc):
    lacs = _pixbias(tiny_enc)
    inv = AdjointInverter(tiny_enc, lacs)
    x = tiny_enc.normalize(smooth_image(32, 1, seed=4, dtype=torch.float64))
    cd = class_directional_inversion(inv, x, target=2)
    beta = lacs.pix.beta.detach().view(1, 3, 1, 1)
    # x̂ = Σ α_c s_c + (Σ α_c) b: the per-RGB means are exactly (Σ α) β_pix, in each hemisphere too
    sign = tiny_enc.head.linear.weight[2]
    for rec, a in ((cd.x_class, cd.alpha.sum()), (cd.x_pos, cd.alpha[:, sign > 0].sum()),
                   (cd.x_neg, cd.alpha[:, sign < 0].sum())):
        assert torch.allclose(rec - centre_rgb(rec), float(a) * beta.expand_as(rec), atol=1e-9)


def test_interference_terms():
    g = torch.Generator().manual_seed(3)
    u = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    u = u / u.norm()
    r = torch.randn(6, 3, 6, 6, generator=g, dtype=torch.float64)
    r = r - (r.flatten(1) @ u.flatten())[:, None, None, None] * u
    a = torch.tensor([2.0, 1.0, 3.0, 1.5, 2.5, 2.0], dtype=torch.float64)
    phi = a[:, None, None, None] * u + 0.01 * r
    sign = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    alpha = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0], dtype=torch.float64)  # Σ_+ αa = 6 = −Σ_− αa
    t = interference_terms(phi, alpha, sign, u.flatten())
    assert t["B1"] == pytest.approx(0.0, abs=1e-12)
    assert t["shared_pos"] == pytest.approx(6.0) and t["shared_neg"] == pytest.approx(-6.0)
    assert 0.99 < t["B2"] <= 1.0  # hemispheres almost entirely along u
    t2 = interference_terms(phi, alpha.abs(), sign, u.flatten())  # no cancellation
    assert t2["B1"] == pytest.approx(1.0) and t2["sum_abs_ratio"] == pytest.approx(1.0)


def test_partner_derangement_by_photo():
    photos = ["cat", "cat", "cup", "cup", "man", "man", "rocket", "rocket", "bike", "bike"]
    p, rule = partner_derangement(photos)
    assert sorted(p) == list(range(10)) and rule.startswith("derangement")
    assert all(photos[i] != photos[j] for i, j in enumerate(p))
    skew = [0, 0, 0, 1]
    p, rule = partner_derangement(skew)
    assert all(skew[i] != skew[j] for i, j in enumerate(p)) and "another group" in rule
    p, rule = partner_derangement([5, 5, 5])
    assert p == [1, 2, 0] and rule.startswith("single group")


def test_shuffled_heads(tiny_enc):
    wk = torch.randn(2, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pm = shuffled_head_row(wk, "permuted", 7)
    assert torch.equal(pm.sort(-1).values, wk.sort(-1).values) and not torch.equal(pm, wk)
    assert torch.equal(pm, shuffled_head_row(wk, "permuted", 7))
    rd = shuffled_head_row(wk, "random", 7)
    assert torch.allclose(rd.norm(dim=-1), wk.norm(dim=-1))
    assert not torch.equal(rd, shuffled_head_row(wk, "random", 8))
    a = torch.rand(1, 16, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = torch.tensor([3])
    sets = shuffled_head_weights(tiny_enc, a, k, "permuted", seed=2)
    assert torch.allclose(sets["class"], sets["class+"] + sets["class-"])
    w_perm = shuffled_head_row(tiny_enc.head.linear.weight[3][None], "permuted", 2)
    assert torch.allclose(sets["class"], w_perm * a.mean(dim=(-2, -1)))


def test_bootstrap_by_group():
    v = [1.0, 1.0, 3.0, 3.0, None]
    groups = ["a", "a", "b", "b", "c"]
    r = bootstrap_ci(v, n_boot=500, groups=groups)
    assert r["mean"] == 2.0 and r["n"] == 4 and r["n_groups"] == 2
    assert r["lo"] == pytest.approx(1.0) and r["hi"] == pytest.approx(3.0)
    one = bootstrap_ci([1.0, 2.0], groups=["a", "a"])
    assert one["lo"] is None and one["n_groups"] == 1
    # images of one photo are not independent: the interval is wider than the per-image one
    vals = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    wide = bootstrap_ci(vals, groups=[0, 0, 0, 1, 1, 1])
    narrow = bootstrap_ci(vals)
    assert wide["hi"] - wide["lo"] > narrow["hi"] - narrow["lo"]


def test_variants_zero_a_dead_seeds_residue():
    from adjinv.paper.analysis.superposition import variants

    b = torch.tensor([0.1, -0.3, 0.7], dtype=torch.float32).view(3, 1, 1).expand(3, 8, 8)
    g = torch.Generator().manual_seed(0)
    live = centre_rgb(torch.randn(2, 3, 8, 8, generator=g)) + b
    phi = torch.stack([live[0], b.clone(), live[1], b.clone()])  # rows 1, 3: dead seeds, φ = Ψ(0)
    v = variants(phi, b)
    for name in ("zero_mean", "psi0_projected"):
        t = v[name]
        assert t is not None
        assert float(t[1].abs().max()) == 0 and float(t[3].abs().max()) == 0
        assert float(t[0].abs().max()) > 0.1
    assert torch.equal(v["raw"], phi)
