"""The one-liner ``adjinv.Inverter``, naturally indexed results and ``load_lacs``'s result."""

from __future__ import annotations

import warnings

import pytest
import torch

import adjinv
from adjinv.core.stagedict import StageDict
from adjinv.errors import AdjinvError
from adjinv.lacs.bundled import IDENTITY_SOURCE, LoadedLACs
from adjinv.methods.class_directional import class_directional_inversion
from conftest import random_lacs, smooth_image, staged_from_sequential, tiny_relu_cnn


@pytest.fixture
def model():
    return tiny_relu_cnn(seed=0)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_plain_module_matches_the_explicit_three_steps(model):
    inv = adjinv.Inverter(model, lacs="identity", encoder_kw={"probe_size": 64})
    assert isinstance(inv, torch.nn.Module) and inv.lacs_source == IDENTITY_SOURCE
    x = inv.encoder.normalize(smooth_image(32))
    res = inv(x, stages="all")
    ref = adjinv.AdjointInverter(adjinv.encoder_from_module(model, probe_size=64)).invert(x)
    last = inv.encoder.num_stages - 1
    assert sorted(res.x_hat) == list(range(last + 1))
    deepest = inv(x)  # the default: the deepest stage only, the same numbers
    assert sorted(deepest.x_hat) == [last]
    torch.testing.assert_close(deepest.x_hat[-1], res.x_hat[-1], rtol=1e-6, atol=1e-7)
    with pytest.raises(AdjinvError, match="'all'"):
        inv(x, stages="every")
    _close(res.x_hat[-1], ref.x_hat[last])
    _close(res.x_hat[0], ref.x_hat[0])


def test_results_index_by_negative_index_and_name(model):
    enc = staged_from_sequential(model)
    inv = adjinv.Inverter(enc, random_lacs(enc))
    res = inv(enc.normalize(smooth_image(32)), top_k=2, stages="all")
    names = [i.name for i in enc.infos]
    for field in (res.x_hat, res.weights, res.channels, res.phi):
        assert isinstance(field, StageDict)
        assert field[-1] is field[3] and field[names[-1]] is field[3] and field[-4] is field[0]
        assert -1 in field and names[1] in field and "nope" not in field and -5 not in field
    with pytest.raises(KeyError, match="out of range"):
        res.x_hat[-5]
    with pytest.raises(KeyError, match="no stage named"):
        res.x_hat["nope"]
    # a subset of stages: -1 still means the encoder's deepest stage, not the deepest key
    part = inv(enc.normalize(smooth_image(32)), stages=[1, "stage2"])
    assert sorted(part.x_hat) == [1, 2] and -1 not in part.x_hat and part.x_hat.get(-1) is None
    _close(part.x_hat[-2], res.x_hat[2])


def test_stagedict_without_names_refuses_negative_indices():
    d = StageDict({0: "a", 2: "c"})
    assert d[2] == "c" and d[torch.tensor(0)] == "a"
    with pytest.raises(KeyError, match="stage names"):
        d[-1]
    named = StageDict({0: "a"}, names=["stem", "deep"])
    named[-1] = "z"
    assert dict(named) == {0: "a", 1: "z"} and named["deep"] == "z"


def test_normalize_inside_the_call(model):
    enc = staged_from_sequential(model)
    img = smooth_image(32)
    plain = adjinv.Inverter(enc, lacs="identity")
    inside = adjinv.Inverter(enc, lacs="identity", normalize=True)
    _close(inside(img, stages=[-1]).x_hat[-1], plain(enc.normalize(img), stages=[-1]).x_hat[-1])
    with pytest.raises(AdjinvError, match=r"\[0, 1\]"):
        inside(enc.normalize(img))


def test_target_gives_the_class_directional_reconstruction(model):
    enc = staged_from_sequential(model)
    lacs = random_lacs(enc)
    inv = adjinv.Inverter(enc, lacs)
    x = enc.normalize(smooth_image(32, batch=2))
    res = inv.invert(x, target=3)
    ref = class_directional_inversion(adjinv.AdjointInverter(enc, lacs), x, target=3)
    _close(res.extra["class"], ref.x_class)
    _close(res.extra["class+"], ref.x_pos)
    _close(res.extra["class-"], ref.x_neg)
    _close(res.extra_weights["class"], ref.alpha)
    assert -1 in res.x_hat  # the spectrum comes with it from the same pass
    with pytest.raises(AdjinvError, match="not a class"):
        inv.invert(x, target=99)


def test_to_moves_encoder_and_lacs_together(model):
    enc = staged_from_sequential(model)
    inv = adjinv.Inverter(enc, random_lacs(enc))
    x = enc.normalize(smooth_image(32))
    ref = inv(x, stages=[-1]).x_hat[-1].double()
    moved = inv.double()
    assert moved is inv
    assert all(p.dtype == torch.float64 for p in inv.lacs.parameters())
    assert all(p.dtype == torch.float64 for p in inv.encoder.parameters())
    out = inv(x, stages=[-1]).x_hat[-1]  # the input follows the encoder's dtype
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_delegated_methods_take_stage_names(model):
    enc = staged_from_sequential(model)
    inv = adjinv.Inverter(enc, random_lacs(enc))
    x = enc.normalize(smooth_image(32))
    _close(inv.seed_zero_control(x, "stage3"), inv.inverter.seed_zero_control(x, 3))
    phi = inv.channel_inversions(x, -1, [0, 1])
    _close(phi, inv.inverter.channel_inversions(x, 3, [0, 1]))
    with pytest.raises(AdjinvError, match="out of range"):
        inv.psi(x, 9, torch.zeros(1, 16, 4, 4))


def test_registry_name_uses_the_bundled_lacs():
    inv = adjinv.Inverter("efficientnet_lite0")
    assert inv.lacs_source.endswith(".safetensors") and inv.vanilla_map is not None
    assert "efficientnet_lite0" in repr(inv)


def test_bad_arguments_name_the_fix(model):
    with pytest.raises(AdjinvError, match="registry name"):
        adjinv.Inverter(42)  # type: ignore[arg-type]
    with pytest.raises(AdjinvError, match="weights= applies"):
        adjinv.Inverter(model, weights="w.safetensors")
    enc = staged_from_sequential(model)
    with pytest.raises(AdjinvError, match="lacs must be"):
        adjinv.Inverter(enc, lacs=3.5)  # type: ignore[arg-type]
    with pytest.raises(AdjinvError, match="mode must be"):
        adjinv.Inverter(enc, "identity").invert(enc.normalize(smooth_image(32)), target=0, mode="x")


def test_load_lacs_result_keeps_the_tuple_form(model):
    enc = staged_from_sequential(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = adjinv.load_lacs(enc)
    assert any("identity" in str(w.message) for w in caught)
    assert isinstance(got, LoadedLACs) and not got.trained and got.vanilla_map is None
    lacs, vanilla, source = got
    assert lacs is got.lacs and vanilla is None and source == IDENTITY_SOURCE
    # and the one-liner takes it as is
    assert adjinv.Inverter(enc, got).lacs is got.lacs


def test_inverter_readout_goes_through_its_cascade(tiny_enc):
    from adjinv.methods.readout import LogitReadout, invert_readout

    inv = adjinv.Inverter(tiny_enc)
    x = tiny_enc.normalize(smooth_image(32, dtype=torch.float64))
    got = inv.readout(x, LogitReadout(tiny_enc.head, 0))
    want = invert_readout(tiny_enc, inv.lacs, x, LogitReadout(tiny_enc.head, 0))
    torch.testing.assert_close(got.psi, want.psi)
