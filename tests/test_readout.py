"""invert_readout: any scalar of the deepest map through the unchanged LAC cascade (docs/method.md §12)."""

from __future__ import annotations

import pytest
import torch

from adjinv.core.inverter import AdjointInverter
from adjinv.errors import AdjinvError
from adjinv.methods.readout import (
    BlockEnergy,
    LogitReadout,
    TokenEnergy,
    invert_readout,
    invert_readouts,
)
from adjinv.paper.heads.attention import HybridAttentionClassifier, HybridConfig
from conftest import random_lacs, reference_psi, smooth_image


def _x(enc, batch=1, size=64, seed=0):
    return enc.normalize(smooth_image(size, batch, seed, dtype=torch.float64))


def _hybrid(enc, seed=0):
    torch.manual_seed(seed)
    m = HybridAttentionClassifier(enc.infos[-1].channels, 3, HybridConfig(heads=2, dim=8)).double()
    return m


def test_logit_seed_is_w_over_hw_exactly(tiny_enc):
    lacs = random_lacs(tiny_enc)
    x = _x(tiny_enc, batch=2)
    k = 3
    res = invert_readout(tiny_enc, lacs, x, LogitReadout(tiny_enc.head, k))
    a = tiny_enc.forward_stages(x)[-1]
    hw = a.shape[-2] * a.shape[-1]
    want = (tiny_enc.head.linear.weight[k] / hw).view(1, -1, 1, 1).expand_as(a)
    assert torch.equal(res.seed, want)
    assert torch.allclose(res.value, tiny_enc(x)[:, k], rtol=0, atol=1e-12)
    last = tiny_enc.num_stages - 1
    ref = reference_psi(tiny_enc, lacs, x, last, res.seed[None])[0]
    torch.testing.assert_close(res.psi, ref, rtol=1e-9, atol=1e-12)


def test_top1_logit_default_target(tiny_enc):
    x = _x(tiny_enc, batch=2, seed=3)
    k = tiny_enc(x).argmax(1)
    res = invert_readout(tiny_enc, random_lacs(tiny_enc), x, LogitReadout(tiny_enc.head))
    hw = res.seed.shape[-1] * res.seed.shape[-2]
    for b in range(2):
        assert torch.equal(res.seed[b, :, 0, 0], tiny_enc.head.linear.weight[k[b]] / hw)


@pytest.mark.parametrize("readout", [
    lambda a: torch.zeros(a.shape[0], dtype=a.dtype),        # no graph at all
    lambda a: 0 * a.sum(dim=(1, 2, 3)),                      # a graph, zero gradient
    lambda a: torch.ones(a.shape[0], dtype=a.dtype) * 2.0,   # a constant
])
def test_readout_ignoring_features_raises_not_nan(tiny_enc, readout):
    with pytest.raises(AdjinvError, match="does not depend on the deepest feature map"):
        invert_readout(tiny_enc, random_lacs(tiny_enc), _x(tiny_enc, batch=2), readout)


def test_zero_seed_for_one_image_names_it(tiny_enc):
    x = _x(tiny_enc, batch=2)

    def only_first(a):
        return a[:, 0].sum(dim=(-2, -1)) * torch.tensor([1.0, 0.0], dtype=a.dtype)

    with pytest.raises(AdjinvError, match=r"image\(s\) \[1\]"):
        invert_readout(tiny_enc, None, x, only_first)


@pytest.mark.parametrize("bad, msg", [
    (lambda a: a.sum(dim=(2, 3)), "one scalar per image"),
    (lambda a: a.sum(dim=(1, 2, 3)) * float("nan"), "not finite"),
    (lambda a: "x", "must return a tensor"),
])
def test_bad_readout_outputs(tiny_enc, bad, msg):
    with pytest.raises(AdjinvError, match=msg):
        invert_readout(tiny_enc, None, _x(tiny_enc, batch=2), bad)


def test_lac_parameters_bit_identical_and_flags_restored(tiny_enc):
    lacs = random_lacs(tiny_enc)
    before = {k: v.clone() for k, v in lacs.state_dict().items()}
    # a mix of flags, which must come back as they were
    params = list(lacs.parameters())
    for i, p in enumerate(params):
        p.requires_grad_(i % 2 == 0)
    flags = [p.requires_grad for p in params]
    head = _hybrid(tiny_enc)
    head.train()
    x = _x(tiny_enc, batch=2)
    invert_readouts(tiny_enc, lacs, x, {"logit": LogitReadout(tiny_enc.head, 1),
                                         "block": BlockEnergy(head, 1),
                                         "token": TokenEnergy(head, 2, 5),
                                         "user": lambda a: a.pow(3).mean(dim=(1, 2, 3))},
                    split=True, top_k=2)
    after = lacs.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert [p.requires_grad for p in params] == flags
    assert all(p.grad is None for p in params)
    assert all(p.grad is None for p in head.parameters())
    assert head.training and all(m.training for m in head.modules())
    assert all(p.requires_grad for p in head.parameters())


def test_batch_equals_per_image(tiny_enc):
    lacs = random_lacs(tiny_enc)
    head = _hybrid(tiny_enc)
    x = _x(tiny_enc, batch=3, seed=5)
    ro = {"block": BlockEnergy(head, 0), "token": TokenEnergy(head, 1, 9)}
    batch = invert_readouts(tiny_enc, lacs, x, ro, split=True, top_k=2)
    for b in range(3):
        one = invert_readouts(tiny_enc, lacs, x[b:b + 1], ro, split=True, top_k=2)
        for n in ro:
            for f in ("value", "seed", "psi", "split", "weights", "parts"):
                torch.testing.assert_close(getattr(batch[n], f)[b], getattr(one[n], f)[0],
                                           rtol=1e-9, atol=1e-12, msg=f"{n}.{f}")
            assert torch.equal(batch[n].channels[b], one[n].channels[0])


def test_chunking_does_not_change_psi(tiny_enc):
    lacs = random_lacs(tiny_enc)
    head = _hybrid(tiny_enc)
    x = _x(tiny_enc, batch=2)
    ro = {f"t{t}": TokenEnergy(head, 2, t) for t in range(5)}
    one = invert_readouts(tiny_enc, lacs, x, ro, chunk_size=1)
    many = invert_readouts(tiny_enc, lacs, x, ro, chunk_size=64)
    for n in ro:
        torch.testing.assert_close(one[n].psi, many[n].psi, rtol=1e-10, atol=1e-13)


def test_energy_of_features_gives_x_hat_and_psi_of_a(tiny_enc):
    """For s = ½‖A_L‖² the seed is A_L itself: the split is exactly x̂_L (Eq. 8) and
    Ψ_L(G) is the single-seed cascade of A_L."""
    lacs = random_lacs(tiny_enc)
    x = _x(tiny_enc, batch=2)
    res = invert_readout(tiny_enc, lacs, x, lambda a: 0.5 * a.pow(2).sum(dim=(1, 2, 3)), split=True)
    inv = AdjointInverter(tiny_enc, lacs)
    last = tiny_enc.num_stages - 1
    full = inv.invert(x, stages=[last])
    torch.testing.assert_close(res.seed, tiny_enc.forward_stages(x)[-1], rtol=0, atol=1e-14)
    torch.testing.assert_close(res.split, full.x_hat[last], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.weights, full.weights[last], rtol=0, atol=0)
    torch.testing.assert_close(res.psi, inv.psi(x, last, res.seed), rtol=1e-9, atol=1e-12)


def test_per_channel_split_matches_reference_loop(tiny_enc):
    lacs = random_lacs(tiny_enc)
    head = _hybrid(tiny_enc)
    x = _x(tiny_enc, batch=1, seed=2)
    res = invert_readout(tiny_enc, lacs, x, TokenEnergy(head, 2, 10), split=True, top_k=3)
    last = tiny_enc.num_stages - 1
    g = res.seed
    eye = torch.eye(g.shape[1], dtype=g.dtype)
    seeds = eye[:, None, :, None, None] * g[None]  # (C, 1, C, h, w)
    phi = reference_psi(tiny_enc, lacs, x, last, seeds)[:, 0]  # (C, 3, H, W)
    want = torch.einsum("c,cphw->phw", res.weights[0], phi)
    torch.testing.assert_close(res.split[0], want, rtol=1e-9, atol=1e-12)
    contrib = (g * tiny_enc.forward_stages(x)[-1]).sum(dim=(-2, -1)).abs()[0]
    assert set(res.channels[0].tolist()) == set(contrib.topk(3).indices.tolist())
    for j, c in enumerate(res.channels[0].tolist()):
        torch.testing.assert_close(res.parts[0, j], phi[c], rtol=1e-9, atol=1e-12)


def test_hybrid_readouts_are_the_energies(tiny_enc):
    head = _hybrid(tiny_enc)
    a = tiny_enc.forward_stages(_x(tiny_enc, batch=2))[-1].detach()
    t = head.eval().token_states(a)
    assert torch.allclose(BlockEnergy(head, 1)(a), t[1].pow(2).sum(dim=(1, 2)))
    assert torch.allclose(TokenEnergy(head, 2, 7)(a), t[2][:, 7].pow(2).sum(-1))
    with pytest.raises(AdjinvError, match="token 99 out of range"):
        TokenEnergy(head, 0, 99)(a)
    with pytest.raises(AdjinvError, match="block 5 out of range"):
        BlockEnergy(head, 5)(a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_the_input(tiny_model, dtype):
    from conftest import staged_from_sequential

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        enc = staged_from_sequential(tiny_model.to(dev, dtype))
        x = enc.normalize(smooth_image(32, 2, 0, dtype=dtype).to(dev))
        res = invert_readout(enc, random_lacs(enc), x, LogitReadout(enc.head, 0), split=True, top_k=1)
        for f in ("value", "seed", "psi", "split", "weights", "parts"):
            t = getattr(res, f)
            assert t.dtype == dtype and t.device.type == dev, f
            assert torch.isfinite(t).all(), f


def test_readouts_recover_from_out_of_memory(tiny_enc, monkeypatch):
    lacs = random_lacs(tiny_enc)
    x = _x(tiny_enc, batch=2)
    outs = {f"k{k}": LogitReadout(tiny_enc.head, k) for k in range(4)}
    ref = invert_readouts(tiny_enc, lacs, x, outs, chunk_size=4)
    real, sizes = AdjointInverter.chunks, []

    def tight_chunks(self, lin, stage, idx, work):
        def guarded(ch):
            sizes.append(ch.numel())
            if ch.numel() > 1:
                raise torch.cuda.OutOfMemoryError("simulated")
            return work(ch)
        return real(self, lin, stage, idx, guarded)

    monkeypatch.setattr(AdjointInverter, "chunks", tight_chunks)
    got = invert_readouts(tiny_enc, lacs, x, outs, chunk_size=4)
    assert sizes == [4, 2, 1, 1, 1, 1]
    for k in outs:
        torch.testing.assert_close(got[k].psi, ref[k].psi, rtol=1e-5, atol=1e-7)


def test_readout_through_a_given_inverter(tiny_enc):
    from adjinv.core.inverter import AdjointInverter

    x = _x(tiny_enc)
    lacs = random_lacs(tiny_enc)
    ro = LogitReadout(tiny_enc.head, 0)
    inv = AdjointInverter(tiny_enc, lacs, chunk_size=1)  # its settings, not new defaults
    via_inverter = invert_readout(inv, None, x, ro, split=True)
    direct = invert_readout(tiny_enc, lacs, x, ro, split=True)
    torch.testing.assert_close(via_inverter.psi, direct.psi)
    torch.testing.assert_close(via_inverter.split, direct.split)
    with pytest.raises(AdjinvError, match="through the inverter"):
        invert_readout(inv, lacs, x, ro)
