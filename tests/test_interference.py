"""The interference analyses (Sec. 3.2, 3.4): exact identities and the controls."""

from __future__ import annotations

import torch

from adjinv.core.inverter import AdjointInverter
from adjinv.methods.class_directional import (
    class_directional_inversion,
    foreground_energy,
    mask_area_ratio,
)
from adjinv.methods.controls import (
    randomized_encoder,
    seed_zero,
    swapped_channel_inversions,
    swapped_class_directional,
)
from adjinv.paper.analysis.ecr import (
    ablate_gap,
    ablation_curve,
    ablation_order,
    ecr_ablation,
    energy_concentration_ratio,
)
from adjinv.paper.analysis.superposition import (
    inter_channel_variance,
    rank_one_subtract,
    superposition_statistics,
)
from conftest import random_lacs, smooth_image


def _x(enc, seed=0, size=32):
    return enc.normalize(smooth_image(size, 1, seed=seed, dtype=torch.float64))


def test_hemispheres_sum_exactly(tiny_enc):
    inv = AdjointInverter(tiny_enc, random_lacs(tiny_enc).double())
    x = _x(tiny_enc)
    for mode in ("contribution", "weight", "weight*simplex"):
        for k in (None, 3):
            cd = class_directional_inversion(inv, x, target=k, mode=mode)
            assert torch.allclose(cd.x_class, cd.x_pos + cd.x_neg, atol=1e-12, rtol=0)
            if k is not None:
                assert int(cd.target[0]) == k


def test_foreground_energy_identities():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:10, 3:12] = True
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    inside = x * mask
    assert torch.equal(foreground_energy(inside, mask), torch.ones(2, dtype=torch.float64))
    assert torch.equal(foreground_energy(x * ~mask, mask), torch.zeros(2, dtype=torch.float64))
    flat = torch.ones(1, 3, 16, 16)
    assert torch.allclose(foreground_energy(flat, mask).double(), mask_area_ratio(mask))
    assert float(mask_area_ratio(mask)) == 54 / 256


def test_rank_one_subtraction_orthogonal_and_stats():
    g = torch.Generator().manual_seed(1)
    common = torch.randn(300, generator=g, dtype=torch.float64)
    phi = 3 * common + 0.3 * torch.randn(20, 300, generator=g, dtype=torch.float64)
    r, u, a = rank_one_subtract(phi)
    assert torch.allclose(r @ u, torch.zeros(20, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(r + a[:, None] * u, phi)
    s = superposition_statistics(phi)
    assert 0.9 < s.energy_fraction <= 1
    assert s.variance_after > s.variance_before and s.expansion > 1
    assert s.cos_before["min"] > s.cos_after["min"]
    assert inter_channel_variance(common.expand(5, -1)) < 1e-30


def test_ecr_and_ablation_identities(tiny_enc):
    g = torch.Generator().manual_seed(2)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[:4] = True
    phi = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64)
    phi[1] = phi[1] * region  # all energy inside
    phi[2] = 0  # dead: no ECR
    e = energy_concentration_ratio(phi, region)
    assert e[1] == 1 and torch.isnan(e[2])
    desc, asc = ablation_order(e, "descending"), ablation_order(e, "ascending")
    assert desc[0] == 1 and desc[-1] == 2 and asc[-1] == 2
    head = tiny_enc.head
    feats = torch.rand(4, 16, generator=g, dtype=torch.float64)
    ecr16 = torch.rand(16, generator=g, dtype=torch.float64)
    order = ablation_order(ecr16, "descending")
    assert torch.equal(ablate_gap(feats, order, 0.0), feats)
    assert torch.equal(ablate_gap(feats, order, 1.0), torch.zeros_like(feats))
    curve = ablation_curve(head, feats, 2, order, [0.0, 1.0])
    assert torch.equal(curve[0], head.from_gap(feats).softmax(1)[:, 2])
    only_bias = head.linear.bias.softmax(0)[2].expand(4)
    assert torch.allclose(curve[1], only_bias, atol=0, rtol=0)
    r1, r2 = ablation_order(ecr16, "random", 7), ablation_order(ecr16, "random", 7)
    assert torch.equal(r1, r2) and not torch.equal(r1, ablation_order(ecr16, "random", 8))
    a = ecr_ablation(head, feats, 2, ecr16, [0.0, 0.5, 1.0], seeds=5, seed=3)
    b = ecr_ablation(head, feats, 2, ecr16, [0.0, 0.5, 1.0], seeds=5, seed=3)
    assert torch.equal(a.random_all, b.random_all) and a.random_std[0] == 0


def test_model_randomisation_leaves_user_model_bit_identical(tiny_enc):
    before = {k: v.clone() for k, v in tiny_enc.state_dict().items()}
    h = tiny_enc.weights_hash()
    r1 = randomized_encoder(tiny_enc, 1, seed=0)
    r2 = randomized_encoder(tiny_enc, 2, seed=0)
    for k, v in tiny_enc.state_dict().items():
        assert torch.equal(v, before[k])
    assert tiny_enc.weights_hash() == h
    s0, s1, s2 = tiny_enc.state_dict(), r1.state_dict(), r2.state_dict()
    top = [k for k in s0 if k.startswith("stages.3.")]
    below = [k for k in s0 if k.startswith(("stages.0.", "stages.1.", "stages.2."))]
    assert all(not torch.equal(s0[k], s1[k]) for k in top if s0[k].dim() > 1)
    assert all(torch.equal(s0[k], s1[k]) for k in below)
    assert all(torch.equal(s1[k], s2[k]) for k in top)  # cascading: level 2 extends level 1
    assert any(not torch.equal(s0[k], s2[k]) for k in s0 if k.startswith("stages.2."))
    assert torch.equal(s0["head.linear.weight"], s2["head.linear.weight"])


def test_seed_zero_and_swapped_controls(tiny_enc):
    lacs = random_lacs(tiny_enc).double()
    inv = AdjointInverter(tiny_enc, lacs)
    x, y = _x(tiny_enc, 0), _x(tiny_enc, 1)
    z = seed_zero(inv, x)
    assert z.shape == x.shape and float(z.abs().sum()) > 0
    ident = AdjointInverter(tiny_enc)  # identity LACs: Ψ(0) is exactly zero
    assert float(seed_zero(ident, x).abs().sum()) == 0
    cd = class_directional_inversion(inv, x, target=1)
    same = swapped_class_directional(inv, x, x, 1)  # swapping with itself changes nothing
    assert torch.allclose(same.x_class, cd.x_class, atol=1e-10)
    sw = swapped_class_directional(inv, x, y, 1)
    assert torch.allclose(sw.x_class, sw.x_pos + sw.x_neg, atol=1e-12)
    assert not torch.allclose(sw.x_class, cd.x_class)
    ch = torch.tensor([0, 3, 5])
    own = inv.channel_inversions(x, -1, ch)
    assert torch.allclose(swapped_channel_inversions(inv, x, x, ch), own, atol=1e-10)
