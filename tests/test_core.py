"""Core maths: simplex measure, LAC (Prop. B.3), VJP (Prop. B.2), batching, dead channels."""

from __future__ import annotations

import pytest
import torch

from adjinv.core.cascade import AdjointCascade, channel_seeds
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank, LocalAdjointCorrector
from adjinv.core.simplex import simplex_measure
from adjinv.errors import AdjinvError
from conftest import random_lacs, reference_psi, smooth_image


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# ----------------------------------------------------------------------------- simplex (Eq. 2)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simplex_sums_to_one(dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 50, 7, 5, generator=g, dtype=dtype) * torch.logspace(-6, 3, 50,
                                                                            dtype=dtype)[:, None, None]
    a[:, 4] = 0  # a dead channel
    w = simplex_measure(a)
    assert w.shape == (3, 50)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(w.sum(1), torch.ones(3, dtype=dtype), rtol=0, atol=tol)
    assert (w >= 0).all()
    assert (w[:, 4] == 0).all()
    mu = a.abs().mean(dim=(-2, -1))
    torch.testing.assert_close(w, mu / mu.sum(1, keepdim=True))


def test_simplex_all_zero_raises():
    a = torch.randn(2, 4, 3, 3)
    a[1] = 0
    with pytest.raises(AdjinvError, match="all zero"):
        simplex_measure(a)


# ----------------------------------------------------------------------------- LAC (Prop. B.3)
MODES = [("layer", 1e-6), ("channel", 1e-12)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-12, 1e3])
@pytest.mark.parametrize(("mode", "eps"), MODES)
def test_lac_normalize_zero_mean_unit_second_moment(dtype, scale, mode, eps):
    """Prop. B.3: before the affine, zero spatial mean and unit second moment (up to ε)."""
    g = torch.Generator().manual_seed(1)
    # leading (N, B) dims as the cascade uses them; one channel with an offset
    u = (torch.randn(2, 3, 4, 9, 7, generator=g, dtype=torch.float64) * scale).to(dtype)
    u[:, :, 2] += 2 * scale
    lac = LocalAdjointCorrector(4, eps=eps, eps_mode=mode)
    y = lac.normalize(u)
    assert y.shape == u.shape and y.dtype == dtype and torch.isfinite(y).all()
    mean = y.mean(dim=(-2, -1))
    msq = y.pow(2).mean(dim=(-2, -1))
    fp = 1e-5 if dtype == torch.float32 else 1e-10
    assert mean.abs().max() < fp
    # ε is relative: 1e-6 of the layer's mean energy (layer) or 1e-12 of the channel's
    assert (msq - 1).abs().max() < max(fp, 100 * eps)
    assert (msq <= 1 + fp).all()
    # affine on top: γ·y + β
    with torch.no_grad():
        lac.gamma.copy_(torch.arange(1.0, 5.0))
        lac.beta.copy_(torch.arange(-2.0, 2.0))
    torch.testing.assert_close(lac(u), y * torch.arange(1.0, 5.0).to(dtype).view(4, 1, 1)
                               + torch.arange(-2.0, 2.0).to(dtype).view(4, 1, 1))


def test_lac_channel_mode_normalises_every_channel_whatever_its_scale():
    g = torch.Generator().manual_seed(2)
    u = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    u = u * torch.tensor([1e-12, 1.0, 1e3], dtype=torch.float64)[:, None, None]
    y = LocalAdjointCorrector(3, eps=1e-12, eps_mode="channel").normalize(u)
    torch.testing.assert_close(y.pow(2).mean(dim=(-2, -1)), torch.ones(3, dtype=torch.float64))


def test_lac_layer_mode_damps_channels_far_below_the_layer():
    """Documented ``layer`` behaviour: a channel below ε of the layer's energy is damped."""
    g = torch.Generator().manual_seed(2)
    u = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    u = u * torch.tensor([1e-12, 1.0, 2.0], dtype=torch.float64)[:, None, None]
    msq = LocalAdjointCorrector(3).normalize(u).pow(2).mean(dim=(-2, -1))
    assert msq[0] < 1e-6
    torch.testing.assert_close(msq[1:], torch.ones(2, dtype=torch.float64), rtol=1e-4, atol=0)


def test_lac_fixed_eps_mode_leaves_tiny_maps_unnormalised():
    """The plain GroupNorm alternative (ε = 1e-5) does *not* normalise 1e-12 maps (docs/method.md §3)."""
    u = torch.randn(2, 8, 8, dtype=torch.float64) * 1e-12
    y = LocalAdjointCorrector(2, eps=1e-5, eps_mode="fixed").normalize(u)
    assert y.abs().max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["zero", "constant", "tiny_constant", "zero_layer"])
@pytest.mark.parametrize(("mode", "eps"), [*MODES, ("fixed", 1e-5)])
def test_lac_degenerate_maps_give_beta_and_finite_grads(dtype, kind, mode, eps):
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 3, 5, 5, generator=g, dtype=dtype)
    if kind == "zero_layer":
        u.zero_()
    else:
        u[:, 1] = {"zero": 0.0, "constant": 2.5, "tiny_constant": -3e-13}[kind]
    u.requires_grad_(True)
    lac = LocalAdjointCorrector(3, eps=eps, eps_mode=mode)
    with torch.no_grad():
        lac.gamma.copy_(torch.tensor([0.7, -1.3, 2.0]))
        lac.beta.copy_(torch.tensor([0.1, 0.4, -0.2]))
    y = lac(u)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 1], torch.full_like(y[:, 1], 0.4), rtol=0, atol=1e-6)
    if kind == "zero_layer":
        torch.testing.assert_close(y[:, 0], torch.full_like(y[:, 0], 0.1), rtol=0, atol=1e-6)
    assert not torch.isnan(lac.normalize(u.detach())).any()
    loss = (y * torch.randn(y.shape, generator=g, dtype=dtype)).sum()
    gu, gg, gb = torch.autograd.grad(loss, [u, lac.gamma, lac.beta])
    for t in (gu, gg, gb):
        assert torch.isfinite(t).all()


def _lac_reference(u, gamma, beta, eps, mode):
    """Eq. 6 op by op (rescale, centre, moments, ε), as written before the fused form."""
    dims = (-3, -2, -1) if mode == "layer" else (-2, -1)
    scale = u.abs().amax(dim=dims, keepdim=True)
    zero = scale == 0
    if mode != "fixed":
        u = u / torch.where(zero, torch.ones_like(scale), scale)
    centred = u - u.mean(dim=(-2, -1), keepdim=True)
    var = centred.pow(2).mean(dim=(-2, -1), keepdim=True)
    if mode != "fixed":
        eps = eps * u.pow(2).mean(dim=dims, keepdim=True) + torch.finfo(u.dtype).tiny ** 0.5
    out = torch.where(zero, torch.zeros_like(u), centred / torch.sqrt(var + eps))
    return out * gamma.view(-1, 1, 1) + beta.view(-1, 1, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-30, 1e-13, 1.0, 1e25])
@pytest.mark.parametrize(("mode", "eps"), [*MODES, ("fixed", 1e-5)])
@pytest.mark.parametrize("grad", [False, True])
def test_lac_fused_form_matches_op_by_op_reference(dtype, scale, mode, eps, grad):
    """The two-reduction form (with and without the rescaling pass) equals Eq. 6 op by op,
    at scales where squares underflow or overflow float32, with zero and offset channels."""
    if mode == "fixed" and scale != 1.0:
        pytest.skip("a fixed ε is not scale invariant")
    g = torch.Generator().manual_seed(5)
    u = torch.randn(3, 2, 4, 6, 5, generator=g, dtype=torch.float64)
    u[:, :, 1] += 3.0
    u[0, 1, 2] = 0.0
    u[1, 0] = 0.0  # an all-zero item
    u = (u * scale).to(dtype).requires_grad_(grad)
    lac = LocalAdjointCorrector(4, eps=eps, eps_mode=mode).to(dtype)
    with torch.no_grad():
        lac.gamma.copy_(torch.tensor([0.5, -1.5, 2.0, 1.0]))
        lac.beta.copy_(torch.tensor([0.1, 0.0, -0.3, 0.2]))
    ref = _lac_reference(u.detach().double(), lac.gamma.double(), lac.beta.double(), eps, mode)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(lac(u).double(), ref, rtol=tol, atol=tol)
    if grad:
        w = torch.randn(u.shape, generator=g, dtype=torch.float64)
        gu = torch.autograd.grad((lac(u).double() * w).sum(), u)[0]
        ud = u.detach().double().requires_grad_(True)
        gr = torch.autograd.grad((_lac_reference(ud, lac.gamma.double(), lac.beta.double(), eps, mode)
                                  * w).sum(), ud)[0]
        torch.testing.assert_close(gu.double() * scale, gr * scale, rtol=tol * 10, atol=tol * 10)


def test_lac_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="channels"):
        LocalAdjointCorrector(3).normalize(torch.randn(4, 5, 5))


# ----------------------------------------------------------------------------- VJP (Prop. B.2)
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_raw_pull_back_equals_gradient_of_half_squared_norm(tiny_enc, stage):
    x = tiny_enc.normalize(smooth_image(32, batch=2, dtype=torch.float64))
    casc = AdjointCascade(tiny_enc, LACBank.for_encoder(tiny_enc))
    with tiny_enc.frozen():
        lin = casc.linearize(x, stage)
        a = lin.acts[stage]
        chans = torch.arange(a.shape[1])
        v = casc.raw_pull_back(lin, stage, channel_seeds(a, chans))  # (C, B, 3, H, W)
        for c in chans.tolist():
            xr = x.clone().requires_grad_(True)
            with torch.enable_grad():
                acts = tiny_enc.forward_stages(xr, upto=stage)
                obj = 0.5 * acts[stage][:, c].pow(2).sum()
            (ref,) = torch.autograd.grad(obj, xr)
            if ref.abs().max() == 0:
                assert v[c].abs().max() == 0
                continue
            torch.testing.assert_close(v[c], ref, rtol=1e-10, atol=1e-12 * ref.abs().max())


def test_channel_seeds_select_one_channel():
    a = torch.randn(2, 5, 3, 3)
    s = channel_seeds(a, torch.tensor([3, 0]))
    assert s.shape == (2, 2, 5, 3, 3)
    torch.testing.assert_close(s[0, :, 3], a[:, 3])
    assert s[0, :, [0, 1, 2, 4]].abs().sum() == 0
    torch.testing.assert_close(s[1, :, 0], a[:, 0])
    assert s[1, :, 1:].abs().sum() == 0


def test_vanilla_gradient_is_gradient_of_half_squared_norm(tiny_enc):
    x = tiny_enc.normalize(smooth_image(32, dtype=torch.float64))
    v = AdjointInverter(tiny_enc).vanilla_gradient(x)
    xr = x.clone().requires_grad_(True)
    obj = 0.5 * tiny_enc.forward_stages(xr)[-1].pow(2).sum()
    (ref,) = torch.autograd.grad(obj, xr)
    torch.testing.assert_close(v, ref, rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------- batching
def test_batched_equals_per_channel_loop(tiny_enc):
    lacs = random_lacs(tiny_enc, seed=5)
    x = tiny_enc.normalize(smooth_image(32, batch=2, seed=1, dtype=torch.float64))
    r7 = AdjointInverter(tiny_enc, lacs, chunk_size=7).invert(x, top_k=3)
    r1 = AdjointInverter(tiny_enc, lacs, chunk_size=1).invert(x, top_k=3)
    assert sorted(r7.x_hat) == list(range(tiny_enc.num_stages))
    with tiny_enc.frozen():
        acts = tiny_enc.forward_stages(x)
    for s in range(tiny_enc.num_stages):
        a = acts[s]
        w = simplex_measure(a)
        # independent reference: plain autograd, one channel at a time, LACs per docs/method.md §3
        phis = reference_psi(tiny_enc, lacs, x, s, channel_seeds(a, torch.arange(a.shape[1])))
        phis = phis.transpose(0, 1)  # (B, C, 3, H, W)
        ref = torch.einsum("bc,bcxhw->bxhw", w, phis)
        assert ref.abs().max() > 0
        for r in (r7, r1):
            assert rel_err(r.x_hat[s], ref) < 1e-5
            torch.testing.assert_close(r.weights[s], w)
            idx = r.channels[s]
            assert idx.shape == (2, 3)
            assert torch.equal(idx, w.topk(3, dim=1).indices)
            ref_phi = phis[torch.arange(2)[:, None], idx]
            assert rel_err(r.phi[s], ref_phi) < 1e-5
        # and the library's own pull_back, one seed per call, agrees too
        lin = AdjointCascade(tiny_enc, lacs).linearize(x, s)
        with tiny_enc.frozen(), torch.no_grad():
            one = torch.stack([AdjointCascade(tiny_enc, lacs).pull_back(
                lin, s, channel_seeds(a, torch.tensor([c])))[0] for c in range(a.shape[1])], 1)
        assert rel_err(one, phis) < 1e-5


def test_channel_inversions_and_psi_match_reference(tiny_enc):
    lacs = random_lacs(tiny_enc, seed=6)
    x = tiny_enc.normalize(smooth_image(32, batch=2, seed=2, dtype=torch.float64))
    inv = AdjointInverter(tiny_enc, lacs, chunk_size=3)
    chans = [5, 0, 11]
    got = inv.channel_inversions(x, -1, chans)
    assert got.shape == (2, 3, 3, 32, 32)
    with tiny_enc.frozen():
        a = tiny_enc.forward_stages(x)[-1]
    ref = reference_psi(tiny_enc, lacs, x, 3, channel_seeds(a, torch.tensor(chans)))
    assert rel_err(got, ref.transpose(0, 1)) < 1e-5
    # psi with an arbitrary cotangent at stage 2 (12 channels, 8x8)
    cot = torch.randn(2, 12, 8, 8, dtype=a.dtype, generator=torch.Generator().manual_seed(1))
    assert rel_err(inv.psi(x, 2, cot), reference_psi(tiny_enc, lacs, x, 2, cot[None])[0]) < 1e-5


def test_seed_zero_control_is_psi_of_zero(tiny_enc):
    lacs = random_lacs(tiny_enc, seed=7)
    x = tiny_enc.normalize(smooth_image(32, seed=3, dtype=torch.float64))
    inv = AdjointInverter(tiny_enc, lacs)
    ctrl = inv.seed_zero_control(x)
    ref = reference_psi(tiny_enc, lacs, x, 3, torch.zeros(1, 1, 16, 4, 4, dtype=torch.float64))[0]
    torch.testing.assert_close(ctrl, ref)
    # with non-zero β the control is not trivially zero: it is what leaks without a seed
    assert ctrl.abs().max() > 0


# ----------------------------------------------------------------------------- dead channels
def test_dead_channels_skipped_exactly(tiny_enc, monkeypatch):
    deep = tiny_enc.stages[3].body[0]
    dead = [2, 9, 13]
    with torch.no_grad():
        deep.weight[dead] = 0
        deep.bias[dead] = -1.0
    lacs = random_lacs(tiny_enc, seed=8)
    x = tiny_enc.normalize(smooth_image(32, seed=4, dtype=torch.float64))
    inv = AdjointInverter(tiny_enc, lacs, chunk_size=4)
    seen: list[int] = []
    orig = inv.cascade.pull_back

    def counting(lin, stage, cot):
        if stage == 3:
            per_chan = cot.abs().sum(dim=(1, 3, 4))  # (N, C): which channel each seed carries
            assert ((per_chan > 0).sum(1) == 1).all()
            seen.extend(per_chan.argmax(1).tolist())
            seen.append(-cot.shape[0])  # number of seeds in this call (negative marker)
        return orig(lin, stage, cot)

    monkeypatch.setattr(inv.cascade, "pull_back", counting)
    res = inv.invert(x, stages=[3])
    n_seeds = -sum(v for v in seen if v < 0)
    w = res.weights[3][0]
    live = (w > 0).nonzero().flatten().tolist()
    assert (w[dead] == 0).all() and 0 < len(live) <= 16 - len(dead)
    assert n_seeds == len(live)  # dead channels never enter the cascade
    assert sorted(v for v in seen if v >= 0) == live
    # full sum over *all* channels, dead ones included (their φ is finite, w = 0)
    with tiny_enc.frozen():
        lin = inv.cascade.linearize(x, 3)
        phi = orig(lin, 3, channel_seeds(lin.acts[3], torch.arange(16)))  # (16, 1, 3, H, W)
    assert torch.isfinite(phi).all()
    full = torch.einsum("c,cbxhw->bxhw", w, phi)
    torch.testing.assert_close(res.x_hat[3], full, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- placement
def test_lac_placement_tiny(tiny_enc):
    dec_after_stem = sum(i.decimates for i in tiny_enc.infos[1:])
    assert [i.decimates for i in tiny_enc.infos] == [True, False, True, True]
    assert tiny_enc.lac_boundaries == [1, 2]
    lacs = LACBank.for_encoder(tiny_enc)
    assert len(lacs.lacs) == dec_after_stem + 1 == 3
    assert set(lacs.lacs) == {"pix", "s1", "s2"}
    assert lacs.pix.num_channels == 3
    assert lacs.at(1).num_channels == 8 and lacs.at(2).num_channels == 12
    assert lacs.at(0) is None and lacs.at(3) is None


def test_lac_placement_resnet18(resnet18_pair):
    _, enc = resnet18_pair
    assert enc.lac_boundaries == [1, 2, 3]
    lacs = LACBank.for_encoder(enc)
    assert len(lacs.lacs) == 4
    assert [lacs.at(k).num_channels for k in (1, 2, 3)] == [64, 128, 256]
