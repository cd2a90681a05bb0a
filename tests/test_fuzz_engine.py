"""Property-based fuzzing of the core on random tiny CNNs (hypothesis): random depth,
kernels, strides, paddings, BatchNorm, ReLU/ReLU6/SiLU, residual blocks, image sizes.

For every drawn model, in float64: each stage's explicit transpose equals autograd's VJP
or the stage falls back; the full cascade equals the autograd engine's; nothing is
NaN/Inf; every simplex measure sums to 1; a batch inverts like its images one by one."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from adjinv.core.cascade import AdjointCascade  # noqa: E402
from adjinv.core.inverter import AdjointInverter  # noqa: E402
from adjinv.core.simplex import simplex_measure  # noqa: E402
from adjinv.encoders.staged import LinearHead, StagedEncoder  # noqa: E402
from adjinv.errors import AdjinvError  # noqa: E402
from conftest import random_lacs  # noqa: E402

ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "relu_inplace": lambda: nn.ReLU(inplace=True)}


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


layer = st.fixed_dictionaries({
    "k": st.sampled_from([1, 3, 5]), "stride": st.sampled_from([1, 1, 2]),
    "pad": st.sampled_from(["same", "zero", "one"]), "bn": st.booleans(),
    "act": st.sampled_from(sorted(ACTS)), "residual": st.booleans(), "pool": st.booleans(),
    "out": st.sampled_from([4, 6, 8]),
})
spec = st.fixed_dictionaries({
    "stages": st.lists(st.lists(layer, min_size=1, max_size=3), min_size=1, max_size=4),
    "size": st.integers(12, 30), "seed": st.integers(0, 10_000),
})


def build(s: dict) -> StagedEncoder:
    torch.manual_seed(s["seed"])
    c = 3
    stages = []
    for i, blocks in enumerate(s["stages"]):
        mods: list[nn.Module] = []
        for j, b in enumerate(blocks):
            k = b["k"]
            pad = {"same": k // 2, "zero": 0, "one": min(1, k // 2)}[b["pad"]]
            stride = 2 if (j == 0 and i > 0) else b["stride"]  # each later stage decimates
            seq = [nn.Conv2d(c, b["out"], k, stride, pad, bias=not b["bn"])]
            if b["bn"]:
                bn = nn.BatchNorm2d(b["out"]).eval()
                bn.running_mean.uniform_(-0.3, 0.3)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.data.uniform_(0.5, 1.5)
                bn.bias.data.uniform_(-0.2, 0.4)
                seq.append(bn)
            seq.append(ACTS[b["act"]]())
            block = nn.Sequential(*seq)
            if b["residual"] and stride == 1 and pad == k // 2 and c == b["out"]:
                block = Residual(block)
            mods.append(block)
            c = b["out"]
            if b["pool"] and j == len(blocks) - 1:
                mods.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        stages.append(nn.Sequential(*mods))
    try:
        return StagedEncoder(stages, LinearHead(nn.Linear(c, 3)), probe_size=64).double()
    except AdjinvError as e:  # kernels larger than a map of the 64 px probe: not a valid model
        assert "probe" in str(e)
        return None


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    d = float((a - b).norm())
    n = float(b.norm())
    return d / n if n > 0 else d


# no shrinking phase: it can take minutes per failure; a failing example is printed as drawn
@settings(max_examples=12, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec)
def test_random_cnns_explicit_equals_autograd(s):
    enc = build(s)
    assume(enc is not None)
    size = max(s["size"], enc.total_stride)
    g = torch.Generator().manual_seed(s["seed"])
    x = torch.randn(2, 3, size, size + 1, generator=g, dtype=torch.float64)
    with enc.frozen(), torch.no_grad():
        try:
            acts = enc.forward_stages(x)
        except RuntimeError:  # the image is too small for this stack of kernels
            acts = None
        assume(acts is not None)
        assume(all(bool((a != 0).flatten(1).any(1).all()) for a in acts))  # a live map per image
        lacs = random_lacs(enc, seed=s["seed"] % 7).double()
        fast = AdjointCascade(enc, lacs, verify=False)
        ref = AdjointCascade(enc, lacs, engine="autograd")
        lf, lr = fast.linearize(x), ref.linearize(x)
        for k in range(enc.num_stages):
            assert rel(lf.acts[k], lr.acts[k]) < 1e-12
            u = torch.randn(2, *lr.acts[k].shape, generator=g, dtype=torch.float64)
            assert rel(lf.pullbacks[k](u), lr.pullbacks[k](u)) < 1e-10, (k, lf.explicit)
        checked = AdjointCascade(enc, lacs).linearize(x)  # the self-check never fires here
        assert checked.explicit == lf.explicit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inv = AdjointInverter(enc, lacs, chunk_size=3)
        both = inv.invert(x, top_k=2)
        ref_inv = AdjointInverter(enc, lacs, chunk_size=3, engine="autograd").invert(x, top_k=2)
        one = [inv.invert(x[b: b + 1], top_k=2) for b in range(2)]
    for k in range(enc.num_stages):
        w = simplex_measure(lf.acts[k])
        torch.testing.assert_close(w.sum(1), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
        assert torch.isfinite(both.x_hat[k]).all() and torch.isfinite(both.phi[k]).all()
        assert rel(both.x_hat[k], ref_inv.x_hat[k]) < 1e-10
        for b in range(2):
            assert rel(both.x_hat[k][b: b + 1], one[b].x_hat[k]) < 1e-10
