"""Theorem B.5 / Corollary B.6 decomposition (adjinv.paper.analysis.fv_equivalence)."""

from __future__ import annotations

import pytest
import torch

from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.errors import AdjinvError
from adjinv.paper.analysis.fv_equivalence import fv_decomposition
from conftest import random_lacs, smooth_image


def _setup(tiny_enc, stage):
    lacs = random_lacs(tiny_enc, seed=3)
    inv = AdjointInverter(tiny_enc, lacs)
    x = tiny_enc.normalize(smooth_image(32, batch=2, seed=4)).double()
    ch = torch.tensor([[0, 1, 2, 5], [3, 4, 6, 7]])
    return inv, x, ch, fv_decomposition(inv, x, stage, ch)


@pytest.mark.parametrize("stage", [1, 3])
def test_terms_add_up_to_the_weighted_channel_inversions(tiny_enc, stage):
    inv, x, ch, d = _setup(tiny_enc, stage)
    for b in range(2):
        phi = inv.channel_inversions(x[b:b + 1], stage, ch[b:b + 1])[0]       # (K, 3, H, W)
        want = (d.weights[b].view(-1, 1, 1, 1) * phi).sum(0)
        got = d.principal[b] + d.r_dir[b] + d.r_bias[b]
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
    # Eq. 65-66: the triangle-inequality bound holds per RGB channel
    assert (d.r_dir.flatten(2).norm(dim=2) <= d.bound_dir * (1 + 1e-9) + 1e-12).all()
    assert ((d.delta >= 0) & (d.delta <= 2 + 1e-9)).all()


def test_no_intermediate_lac_means_no_direction_error(tiny_enc):
    """From the first stage only the pixel LAC acts, so û_c = e_c and R_dir = 0; deeper, the
    intermediate LACs bend the direction (δ > 0) — the statistic can tell them apart."""
    _, _, _, d0 = _setup(tiny_enc, 0)
    assert d0.delta.max() < 1e-6
    _, _, _, d3 = _setup(tiny_enc, 3)
    assert d3.delta.max() > 1e-3
    assert float(d3.relative()["r_dir"].max()) > 1e-3


def test_reference_linearised_lacs_are_refused(tiny_enc):
    bank = LACBank.for_encoder(tiny_enc, linearize_at="reference")
    inv = AdjointInverter(tiny_enc, bank)
    x = tiny_enc.normalize(smooth_image(32, seed=1))
    with pytest.raises(AdjinvError, match="reference"):
        fv_decomposition(inv, x, 3, torch.tensor([[0, 1]]))
