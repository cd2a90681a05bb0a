"""Anytime inversion: the proven bound against the full synthesis, exactness at mass 1,
monotone previews, argument checks (float64, tiny encoders)."""

from __future__ import annotations

import pytest
import torch

from adjinv.core.anytime import lac_pix_radius, select_channels
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.errors import AdjinvError
from conftest import random_lacs, smooth_image, staged_from_sequential, tiny_relu_cnn


def _lacs(enc, kind: str) -> LACBank:
    if kind == "identity":
        return LACBank.for_encoder(enc)
    if kind == "fixed_eps":
        lacs = random_lacs(enc, seed=4)
        bank = LACBank.for_encoder(enc, eps=1e-5, eps_mode="fixed")
        bank.load_state_dict(lacs.state_dict())
        return bank
    lacs = random_lacs(enc, seed=2)
    if kind == "negative_beta":  # a large, partly negative pixel bias, small γ: the bias dominates
        with torch.no_grad():
            lacs.pix.gamma.copy_(torch.tensor([0.2, -0.15, 0.3]))
            lacs.pix.beta.copy_(torch.tensor([-1.7, 0.4, -0.9]))
    if kind == "lite0_pix":  # LAC_pix as trained for the bundled EfficientNet-Lite0
        with torch.no_grad():
            lacs.pix.gamma.copy_(torch.tensor([0.6409, 0.4233, 0.5007]))
            lacs.pix.beta.copy_(torch.tensor([0.0406, -0.3567, -0.4614]))
    return lacs


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


LAC_KINDS = ("identity", "trained_like", "negative_beta", "lite0_pix", "fixed_eps")


@pytest.fixture(scope="module")
def enc():
    return staged_from_sequential(tiny_relu_cnn(seed=0).double())


@pytest.mark.parametrize("kind", LAC_KINDS)
def test_bound_holds_against_full_synthesis(enc, kind):
    inv = AdjointInverter(enc, _lacs(enc, kind), chunk_size=5)
    x = smooth_image(32, batch=3, dtype=torch.float64)
    full = inv.invert(x)
    for s in range(enc.num_stages):
        assert torch.equal(full.omitted_mass[s], torch.zeros(3, dtype=torch.float64))
        assert torch.equal(full.error_bound[s], torch.zeros(3, dtype=torch.float64))
    for mass, k in ((0.3, None), (0.7, None), (0.95, None), (None, 1), (None, 4), (0.9, 3)):
        part = inv.invert(x, mass=mass, max_channels=k)
        for s in range(enc.num_stages):
            err = _norms(full.x_hat[s] - part.x_hat[s])
            assert (err <= part.error_bound_abs[s]).all(), (kind, mass, k, s)
            rel = err / _norms(full.x_hat[s])
            assert (rel <= part.error_bound[s]).all(), (kind, mass, k, s)
            om = part.omitted_mass[s]
            assert (om > 0).any()  # something was left out: the check above is not vacuous
            live = full.weights[s] > 0
            assert (om <= full.weights[s].sum(1)).all()
            if k is not None:
                chosen = select_channels(full.weights[s], mass, k)
                assert (chosen.sum(1) <= k).all() and (chosen <= live).all()


def test_bound_premise_every_channel_within_radius(enc):
    """Each φ_c − β lies within R = sqrt(P·Σγ²), and an exactly-zero gradient gives β."""
    lacs = _lacs(enc, "negative_beta")
    inv = AdjointInverter(enc, lacs, chunk_size=8)
    x = smooth_image(32, batch=2, dtype=torch.float64)
    c = enc.infos[-1].channels
    phi = inv.channel_inversions(x, -1, list(range(c)))  # (B, C, 3, H, W)
    beta = lacs.pix.beta.detach().view(1, 1, 3, 1, 1).double()
    r = lac_pix_radius(lacs.pix, 32 * 32, torch.float64)
    assert ((phi - beta).flatten(2).norm(dim=2) <= r).all()
    zero = lacs.pix(torch.zeros(1, 3, 32, 32, dtype=torch.float64))  # a dead pixel gradient
    assert torch.equal(zero, beta[0].expand_as(zero).to(zero))


def test_bound_holds_for_signed_extra_weights(enc):
    inv = AdjointInverter(enc, _lacs(enc, "trained_like"), chunk_size=4)
    x = smooth_image(32, batch=2, seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)

    def signed(acts, logits):
        return {"signed": torch.randn(acts[-1].shape[:2], generator=g, dtype=acts[-1].dtype)}

    full = inv.invert(x, stages=[-1], extra_weights=signed)
    g.manual_seed(0)
    part = inv.invert(x, stages=[-1], extra_weights=signed, mass=0.6)
    err = _norms(full.extra["signed"] - part.extra["signed"])
    assert (part.omitted_mass["signed"] > 0).all()
    assert (err <= part.error_bound_abs["signed"]).all()


def test_mass_one_equals_full_exactly(enc):
    inv = AdjointInverter(enc, _lacs(enc, "trained_like"), chunk_size=3)
    x = smooth_image(32, batch=2, dtype=torch.float64)
    full = inv.invert(x, top_k=2)
    for kw in ({"mass": 1.0}, {"max_channels": 10_000}, {"mass": 1, "max_channels": 10_000}):
        part = inv.invert(x, top_k=2, **kw)
        for s in full.x_hat:
            assert torch.equal(part.x_hat[s], full.x_hat[s])
            assert torch.equal(part.phi[s], full.phi[s])
            assert torch.equal(part.error_bound[s], torch.zeros(2, dtype=torch.float64))


def test_per_image_selection_differs_within_a_batch(enc):
    inv = AdjointInverter(enc, _lacs(enc, "trained_like"), chunk_size=4)
    ramp = torch.linspace(0, 1, 32, dtype=torch.float64).expand(1, 3, 32, 32)
    x = torch.cat([smooth_image(32, seed=0, dtype=torch.float64), ramp])
    res = inv.invert(x, stages=[-1], max_channels=8)
    w = res.weights[3]
    chosen = select_channels(w, None, 8)
    assert not torch.equal(chosen[0], chosen[1])  # different images, different channels
    # each image's omitted mass is its own weight outside its own top 8
    expected = w.sum(1) - w.topk(8, dim=1).values.sum(1)
    torch.testing.assert_close(res.omitted_mass[3], expected)


@pytest.mark.parametrize("split", [False, True])
def test_preview_refines_monotonically_to_the_result(enc, split, monkeypatch):
    if split:  # force the image-by-image path
        monkeypatch.setattr(AdjointInverter, "SPLIT_RATIO", 0.0)
    inv = AdjointInverter(enc, _lacs(enc, "trained_like"), chunk_size=2)
    x = smooth_image(32, batch=2, seed=1, dtype=torch.float64)
    full = inv.invert(x, stages=[-1])
    seen = []
    res = inv.invert(x, stages=[-1], mass=0.9, preview=lambda p: seen.append(
        (p.stage, p.x_hat.clone(), p.done.clone(), p.bound_abs.clone(), p.bound.clone())))
    assert len(seen) >= 3
    last_done = torch.zeros(2, dtype=torch.long)
    last_bound = torch.full((2,), float("inf"), dtype=torch.float64)
    for stage, xk, done, b_abs, _ in seen:
        assert stage == 3 and xk.shape == x.shape
        assert (done >= last_done).all() and (b_abs <= last_bound).all()
        assert (_norms(full.x_hat[3] - xk) <= b_abs).all()
        last_done, last_bound = done, b_abs
    torch.testing.assert_close(seen[-1][1], res.x_hat[3], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(seen[-1][3], res.error_bound_abs[3])
    assert torch.equal(last_done, select_channels(res.weights[3], 0.9, None).sum(1))


def test_preview_adds_channels_in_descending_weight(enc):
    inv = AdjointInverter(enc, _lacs(enc, "identity"), chunk_size=1)
    x = smooth_image(32, seed=2, dtype=torch.float64)
    bounds = []
    res = inv.invert(x, stages=[-1], preview=lambda p: bounds.append(float(p.bound_abs[0])))
    w = res.weights[3][0]
    r = lac_pix_radius(inv.lacs.pix, 32 * 32, torch.float64)
    tail = w.sort(descending=True).values.flip(0).cumsum(0).flip(0)  # mass from rank i on
    expected = [float(tail[i + 1]) * r if i + 1 < tail.numel() else 0.0
                for i in range(int((w > 0).sum()))]
    assert bounds == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kw", [{"mass": 0}, {"mass": 1.5}, {"mass": -0.1}, {"mass": float("nan")},
                                {"mass": True}, {"mass": "0.9"}, {"max_channels": 0},
                                {"max_channels": 2.5}, {"max_channels": True}])
def test_bad_arguments_raise(enc, kw):
    inv = AdjointInverter(enc)
    with pytest.raises(AdjinvError, match="mass|max_channels"):
        inv.invert(smooth_image(32, dtype=torch.float64), **kw)


def test_cli_mass_rejects_out_of_range(tmp_path, capsys):
    from PIL import Image

    from adjinv.cli import main

    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (120, 30, 200)).save(img)
    assert main(["invert", str(img), "--out", str(tmp_path / "o"), "--size", "32",
                 "--mass", "1.5"]) == 2
    assert "--mass: 1.5 is out of range" in capsys.readouterr().err


def test_cli_mass_records_the_bound(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from adjinv.cli import main

    rng = np.random.default_rng(0)
    arr = np.kron(rng.random((6, 6, 3)), np.ones((8, 8, 1)))
    Image.fromarray((arr * 255).astype(np.uint8)).save(tmp_path / "cat.png")
    out = tmp_path / "o"
    assert main(["invert", str(tmp_path / "cat.png"), "--out", str(out), "--size", "32",
                 "--channels", "1", "--mass", "0.5"]) == 0
    s = json.loads((out / "cat" / "summary.json").read_text())["anytime"]
    assert s["mass"] == 0.5 and 0 < s["omitted_mass"] <= 0.5
    # strict JSON: an unbounded (infinite) bound is null with its reason, never a bare Infinity
    assert (s["error_bound"] is None and "inf" in s["error_bound_unavailable"]) or s["error_bound"] > 0
