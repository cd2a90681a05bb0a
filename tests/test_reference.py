"""Reference-linearised LACs (docs/method.md §16): the Jacobians come from one fixed
input, so nothing but the features distinguishes two photos' reconstructions."""

from __future__ import annotations

import pytest
import torch

from adjinv.core.inverter import AdjointInverter, reference_input
from adjinv.core.lac import LACBank
from adjinv.core.simplex import simplex_measure
from adjinv.errors import AdjinvError
from adjinv.lacs.checkpoint import load_checkpoint, save_checkpoint
from adjinv.lacs.training import TrainConfig, lac_step, train_lacs
from conftest import random_lacs, smooth_image


def _ref_lacs(enc, seed=3):
    lacs = random_lacs(enc, seed)
    lacs.linearize_at = "reference"
    return lacs


def test_reference_inversion_uses_only_the_features(tiny_enc):
    x = tiny_enc.normalize(smooth_image(32, batch=2, dtype=torch.float64))
    inv = AdjointInverter(tiny_enc, _ref_lacs(tiny_enc))
    res = inv.invert(x)
    last = tiny_enc.num_stages - 1
    # equal to pulling x's own seeds and weights back through the reference's Jacobians
    own = AdjointInverter(tiny_enc, _ref_lacs(tiny_enc))
    own.lacs.linearize_at = "input"
    with torch.no_grad(), tiny_enc.frozen():
        a = tiny_enc.forward_stages(x)[last]
        lin = own.cascade.linearize(reference_input(x), last)
        want = own.synthesize(lin, last, {"x": simplex_measure(a)}, source=a)[0]["x"]
        at_input = own.invert(x).x_hat[last]
    torch.testing.assert_close(res.x_hat[last], want)
    assert not torch.allclose(res.x_hat[last], at_input)
    # seed zero gives one image for every photo: the biases cannot read the photo
    z = inv.seed_zero_control(x)
    torch.testing.assert_close(z[0], z[1])
    # the per-channel inversions agree with the synthesis
    phi = inv.channel_inversions(x, last, [0, 1])
    assert phi.shape == (2, 2, 3, 32, 32) and not torch.allclose(phi[0], phi[1])


def test_reference_flag_survives_a_checkpoint(tiny_enc, tmp_path):
    lacs = _ref_lacs(tiny_enc)
    save_checkpoint(tmp_path / "r.lac.safetensors", lacs, tiny_enc)
    back, _ = load_checkpoint(tmp_path / "r.lac.safetensors", tiny_enc)
    assert back.linearize_at == "reference"
    with pytest.raises(AdjinvError, match="linearize_at"):
        LACBank({}, linearize_at="elsewhere")


def test_reference_objective_trains_and_refuses_a_mismatch(tiny_enc):
    imgs = [smooth_image(40, seed=s)[0] for s in range(3)]
    lacs, _, losses = train_lacs(tiny_enc, imgs, TrainConfig(steps=3, size=32, lr=0.1,
                                                             objective="reference"))
    assert lacs.linearize_at == "reference" and len(losses) == 3
    inner = [lac for name, lac in lacs.lacs.items() if name != "pix"]
    assert inner and all(lac.beta.requires_grad for lac in inner)  # every β is trained
    assert any(not torch.equal(lac.beta, torch.zeros_like(lac.beta)) for lac in inner)
    x = tiny_enc.normalize(smooth_image(32, dtype=torch.float64))
    with pytest.raises(AdjinvError, match="reference"):
        lac_step(AdjointInverter(tiny_enc, random_lacs(tiny_enc, 1)), x, objective="reference")


def test_cli_offers_every_objective():
    from adjinv.cli import build_parser
    from adjinv.lacs.training import OBJECTIVES

    p = build_parser()
    for obj in OBJECTIVES:
        args = p.parse_args(["train", "--out", "x.lac.safetensors", "--objective", obj])
        assert args.objective == obj
    assert p.parse_args(["train", "--out", "x.lac.safetensors"]).objective == "paper"


def test_crisis_diagnosis_refuses_reference_lacs(tiny_enc):
    from adjinv.core.cascade import AdjointCascade
    from adjinv.paper.analysis.crisis import diagnose_path

    x = tiny_enc.normalize(smooth_image(32, dtype=torch.float64))
    with pytest.raises(AdjinvError, match="reference linearisation"):
        diagnose_path(AdjointCascade(tiny_enc, _ref_lacs(tiny_enc)), x)
