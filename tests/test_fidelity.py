"""Fidelity guarantees (docs/method.md §5): Theorem 1 and Corollary 1 on a bias-free ReLU CNN.

The effective receptive field ``ERF_{l,c}`` is computed *structurally*, independently of
the library: a linear twin of the encoder with all-ones kernels (same strides and
padding), no bias and no ReLU. Its input-gradient of ``Σ_p 1[A_{l,c}(p) ≠ 0] · T_{l}(p)``
is non-negative and positive exactly at the pixels that reach an active position of
channel ``c`` through some path of kernel taps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vjp, vmap

from adjinv.core.cascade import AdjointCascade, channel_seeds
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.encoders.staged import StagedEncoder
from conftest import random_lacs

SIZE = 64


def patch_image(seed: int = 0) -> torch.Tensor:
    """Encoder-space input that is exactly zero outside an 8x8 patch near a corner."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float64)
    x[:, :, 6:14, 4:12] = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    return x


def twin_forward(enc: StagedEncoder, x: torch.Tensor, stage: int) -> torch.Tensor:
    """All-ones linear twin of the conv chain up to ``stage``. The convolutions mix all
    channels, so one channel carries the structure: (B, 1, H, W) → (B, 1, h, w)."""
    t = x
    for st in enc.stages[: stage + 1]:
        for m in st.body.modules():
            if isinstance(m, nn.Conv2d):
                assert m.groups == 1 and m.dilation == (1, 1)
                k = torch.ones(1, 1, *m.kernel_size, dtype=x.dtype)
                t = F.conv2d(t, k, None, m.stride, m.padding)
    return t


def erf_masks(enc: StagedEncoder, x: torch.Tensor, stage: int) -> torch.Tensor:
    """ERF_{stage,c} for every channel c: bool (C, H, W)."""
    with torch.no_grad():
        a = enc.forward_stages(x, upto=stage)[stage]  # (1, C, h, w)
    active = (a[0] != 0).to(x.dtype)  # (C, h, w)
    ones = torch.ones(1, 1, *x.shape[-2:], dtype=x.dtype)
    _, pull = vjp(lambda t: twin_forward(enc, t, stage), ones)
    (g,) = vmap(pull)(active[:, None, None])  # (C, 1, 1, H, W)
    assert (g >= 0).all()
    return g[:, 0, 0] > 0


def test_theorem1_support_of_v_within_erf(bias_free_enc):
    enc = bias_free_enc
    x = patch_image()
    casc = AdjointCascade(enc, LACBank.for_encoder(enc))
    dense = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(9))
    report = {}
    for stage in range(enc.num_stages):
        with enc.frozen():
            lin = casc.linearize(x, stage)
            a = lin.acts[stage]
            v = casc.raw_pull_back(lin, stage, channel_seeds(a, torch.arange(a.shape[1])))
            lin_d = casc.linearize(dense, stage)
            a_d = lin_d.acts[stage]
            v_d = casc.raw_pull_back(lin_d, stage, channel_seeds(a_d, torch.arange(a.shape[1])))
        erf = erf_masks(enc, x, stage)  # (C, H, W)
        supp = v[:, 0].abs().sum(1) > 0  # (C, H, W)
        violations = int((supp & ~erf).sum())
        report[stage] = violations
        # not vacuous: the gradient is non-zero somewhere, the ERF does not cover the image
        assert supp.any()
        assert not erf.any(0).all()
        assert (~erf.any(0)).sum() > SIZE * SIZE // 10
        # and the check can fail: a dense image's gradients leave this patch's ERF
        assert int(((v_d[:, 0].abs().sum(1) > 0) & ~erf).sum()) > 0
    print("Theorem 1 violating pixels per stage:", report)
    assert report == dict.fromkeys(range(enc.num_stages), 0), report


def test_erf_is_channel_selective(bias_free_enc):
    """ERFs differ between channels (otherwise Theorem 1 would only test the union)."""
    x = patch_image()
    erf = erf_masks(bias_free_enc, x, 3)
    nonempty = [e for e in erf if e.any()]
    assert len(nonempty) >= 2
    assert any(not torch.equal(nonempty[0], e) for e in nonempty[1:])


def spatial_gradient_support(img: torch.Tensor) -> torch.Tensor:
    """Pixels touched by a non-zero forward difference in x or y: bool (H, W)."""
    d = img[0]
    gx = (d[:, :, 1:] != d[:, :, :-1]).any(0)
    gy = (d[:, 1:, :] != d[:, :-1, :]).any(0)
    s = torch.zeros(d.shape[1:], dtype=torch.bool)
    s[:, 1:] |= gx
    s[:, :-1] |= gx
    s[1:, :] |= gy
    s[:-1, :] |= gy
    return s


def test_corollary1_support_of_grad_xhat(bias_free_enc):
    enc = bias_free_enc
    x = patch_image(seed=1)
    lacs = random_lacs(enc, seed=11)
    res = AdjointInverter(enc, lacs, chunk_size=8).invert(x)
    report = {}
    for stage, xh in res.x_hat.items():
        active = res.weights[stage][0] > 0
        union = erf_masks(enc, x, stage)[active].any(0)
        dil = F.max_pool2d(union[None, None].double(), 3, 1, 1)[0, 0] > 0
        supp = spatial_gradient_support(xh)
        report[stage] = int((supp & ~dil).sum())
        assert supp.any()
        assert (~dil).sum() > SIZE * SIZE // 10
        # x̂ is far from zero outside: LAC β makes it a non-zero constant there
        assert xh[0][:, ~dil].abs().max() > 0
    print("Corollary 1 violating pixels per stage:", report)
    assert report == dict.fromkeys(res.x_hat, 0), report
    # the check can fail: x̂ of a dense image varies outside this patch's ERFs
    dense = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(4))
    xd = AdjointInverter(enc, lacs, chunk_size=8).invert(dense, stages=[3]).x_hat[3]
    assert int((spatial_gradient_support(xd) & ~dil).sum()) > 0
