"""Fast paths of the explicit transposes equal the exact path (issue 27): equality, not time."""

from __future__ import annotations

import pytest
import torch

from adjinv.core import adjoint
from adjinv.core.cascade import AdjointCascade, channel_seeds
from adjinv.core.lac import LACBank
from adjinv.encoders.registry import load_encoder
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import photo


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_by_one_convolutions_as_matrix_products_equal_conv_transpose(monkeypatch, dtype):
    enc = load_encoder("efficientnet_lite0").to(dtype)
    x = enc.normalize(resize_center_crop(photo("china"), 64))[None].to(dtype)
    cascade = AdjointCascade(enc, LACBank.for_encoder(enc).to(dtype), channels_last=True)
    with torch.no_grad(), enc.frozen():
        lin = cascade.linearize(x)
        assert sum(op.data.get("matrix") is not None for pb in lin.pullbacks
                   for op in pb._ops.values()) > 20  # the fast path is taken
        last = lin.upto
        seeds = channel_seeds(lin.acts[last], torch.arange(6))
        fast = cascade.pull_back(lin, last, seeds)
        monkeypatch.setattr(adjoint, "MATMUL_1X1", False)
        exact = cascade.pull_back(lin, last, seeds)
    assert _rel(fast, exact) <= (1e-6 if dtype == torch.float32 else 1e-13)


def test_out_of_place_transposes_under_autograd_give_the_same_lac_gradients(monkeypatch):
    from adjinv.core.inverter import AdjointInverter
    from adjinv.lacs.training import lac_step
    from conftest import random_lacs

    enc = load_encoder("efficientnet_lite0")
    inv = AdjointInverter(enc, random_lacs(enc))
    x = enc.normalize(resize_center_crop(photo("china"), 64))[None]
    got = {}
    for inplace in (True, False):
        monkeypatch.setattr(adjoint, "IN_PLACE_UNDER_AUTOGRAD", inplace)
        for p in inv.lacs.parameters():
            p.grad = None
        with enc.frozen():
            lac_step(inv, x, gen=torch.Generator().manual_seed(0))
        got[inplace] = torch.cat([p.grad.flatten() for p in inv.lacs.parameters()])
    assert _rel(got[False], got[True]) <= 1e-6
