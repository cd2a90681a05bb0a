"""The Triton kernels against the PyTorch reference, on the CPU under Triton's interpreter:
bit-exact masks and residual sums, the LAC to a stated tolerance, and the fall-backs."""

from __future__ import annotations

import os

# The interpreter is chosen when a kernel is decorated, so before the module is imported;
# the variable is put back after this file's tests (the module fixture below).
_BEFORE = os.environ.get("TRITON_INTERPRET")
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from adjinv.core import triton_kernels as tk  # noqa: E402
from adjinv.core.inverter import AdjointInverter  # noqa: E402
from adjinv.core.lac import LocalAdjointCorrector  # noqa: E402
from adjinv.errors import AdjinvError  # noqa: E402
from conftest import random_lacs, smooth_image, staged_from_sequential, tiny_relu_cnn  # noqa: E402

pytestmark = pytest.mark.skipif(tk.triton is None or os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs triton and TRITON_INTERPRET=1")


@pytest.fixture(autouse=True, scope="module")
def _interpreter_env():
    yield
    if _BEFORE is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _BEFORE


def _fmt(cl: bool) -> torch.memory_format:
    return torch.channels_last if cl else torch.contiguous_format


@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("with_acc,with_g2", [(False, False), (True, False), (True, True)])
def test_mask_add_is_bit_exact(cl, dtype, with_acc, with_g2):
    g0 = torch.Generator().manual_seed(0)
    b, c, h, w, n = 2, 5, 7, 3, 3  # 210 elements per image batch: not a multiple of 8
    mask = torch.rand(b, c, h, w, generator=g0) > 0.4
    g = torch.randn(n * b, c, h, w, generator=g0).to(dtype).contiguous(memory_format=_fmt(cl))
    acc = torch.randn(n * b, c, h, w, generator=g0).to(dtype).contiguous(memory_format=_fmt(cl))
    g2 = torch.randn(n * b, c, h, w, generator=g0).to(dtype).contiguous(memory_format=_fmt(cl))
    m = mask.to(dtype).repeat(n, 1, 1, 1)
    summed = g + g2 if with_g2 else g
    ref = acc + summed * m if with_acc else summed * m
    bits = tk.pack_mask(mask.contiguous(memory_format=_fmt(cl)), cl)
    assert bits.dtype == torch.uint8 and bits.numel() == -(-mask.numel() // 8)
    extra = g2 if with_g2 else None
    out = tk.mask_add(g, bits, mask.shape, cl, acc if with_acc else None, None, extra)
    assert out is not None and torch.equal(out, ref)
    # in place, into the pending residual gradient
    inplace = tk.mask_add(g, bits, mask.shape, cl, acc if with_acc else None,
                          acc if with_acc else g, extra)
    assert torch.equal(inplace, ref) and inplace.data_ptr() == (acc if with_acc else g).data_ptr()


def test_mask_add_refuses_what_it_cannot_match(monkeypatch):
    mask = torch.ones(1, 2, 4, 4, dtype=torch.bool)
    bits = tk.pack_mask(mask, False)
    g = torch.randn(2, 2, 4, 4)
    assert tk.mask_add(g.transpose(-1, -2), bits, mask.shape, False, None, None) is None
    assert tk.mask_add(torch.randn(2, 3, 4, 4), bits, mask.shape, False, None, None) is None
    with torch.enable_grad():
        assert tk.mask_add(g.requires_grad_(), bits, mask.shape, False, None, None) is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # a CPU tensor without the interpreter
    assert tk.mask_add(g.detach(), bits, mask.shape, False, None, None) is None


@pytest.mark.parametrize("mode,eps", [("layer", 1e-6), ("channel", 1e-12), ("fixed", 1e-5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
def test_lac_matches_reference_to_tolerance(mode, eps, dtype, layout):
    g0 = torch.Generator().manual_seed(1)
    lac = LocalAdjointCorrector(6, eps, mode)
    with torch.no_grad():
        lac.gamma.copy_(torch.randn(6, generator=g0))
        lac.beta.copy_(torch.randn(6, generator=g0))
    u = (torch.randn(4, 6, 13, 11, generator=g0, dtype=torch.float64) * 3 + 7).to(dtype)
    u[0, 1] = 0  # a dead channel: output β
    u[1, 2] = -2.5  # a constant channel: output β
    u[2, 3] *= 1e-9  # far below its layer
    if layout == "channels_last":
        u = u.contiguous(memory_format=torch.channels_last)
    elif layout == "cropped":  # a view into a larger map, as a transposed convolution's crop
        big = torch.zeros(4, 6, 15, 14, dtype=dtype).contiguous(memory_format=torch.channels_last)
        big[..., 1:14, 2:13] = u
        u = big[..., 1:14, 2:13]
    u5 = u.view(2, 2, 6, 13, 11) if layout != "cropped" else u.unflatten(0, (2, 2))
    with torch.no_grad():
        ref = lac(u5)
        out = tk.lac_apply(lac, u5)
    assert out is not None and out.shape == ref.shape
    err = float((out - ref).abs().max() / ref.abs().max())
    assert err <= tk.LAC_RTOL[dtype], err
    assert torch.equal(out[0, 0, 1], lac.beta[1].detach().to(dtype).expand(13, 11))


def test_lac_falls_back_where_it_cannot_match():
    lac = LocalAdjointCorrector(3)
    u = torch.randn(2, 3, 8, 8)
    with torch.enable_grad():
        assert tk.lac_apply(lac, u) is None  # γ records gradients: training uses PyTorch
    with torch.no_grad():
        assert tk.lac_apply(lac, u * 1e-30) is None  # the reference rescales first there
        assert tk.lac_apply(lac, u.half()) is None
        assert tk.lac_apply(lac, u) is not None


def test_unknown_kernels_option_is_refused():
    enc = staged_from_sequential(tiny_relu_cnn().double())
    with pytest.raises(AdjinvError, match="kernels must be one of"):
        AdjointInverter(enc, kernels="cuda")


# NCHW in the default run; channels-last (several seconds under the interpreter) marked slow
LAYOUTS = [False, pytest.param(True, marks=pytest.mark.slow)]


@pytest.mark.parametrize("cl", LAYOUTS)
def test_inversion_with_triton_kernels_matches_pytorch(cl):
    enc = staged_from_sequential(tiny_relu_cnn().double())
    lacs = random_lacs(enc)
    x = smooth_image(32, batch=2, dtype=torch.float64)
    kw = {"chunk_size": 16, "channels_last": cl}  # one chunk: three LACs, every mask
    ref = AdjointInverter(enc, lacs, **kw).invert(x, stages=[-1])
    out = AdjointInverter(enc, lacs, kernels="triton", **kw).invert(x, stages=[-1])
    for s in ref.x_hat:
        torch.testing.assert_close(out.x_hat[s], ref.x_hat[s], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cl", LAYOUTS)
def test_resnet_stage_masks_and_residual_sums_bit_exact(resnet18_pair, cl, monkeypatch):
    """Residual blocks: the sum of a block output's two gradients is done inside its
    ReLU's mask pass (the fused kernel), and each
    stage's transpose is bit-identical to the PyTorch path (no LAC inside a stage)."""
    _, enc = resnet18_pair
    fused = []
    real = tk.mask_add

    def counting(g, bits, shape, channels_last, acc, out, g2=None):
        res = real(g, bits, shape, channels_last, acc, out, g2)
        fused.append((res is not None, g2 is not None))
        return res

    monkeypatch.setattr(tk, "mask_add", counting)
    x = enc.normalize(smooth_image(32))
    ref = AdjointInverter(enc, channels_last=cl).cascade
    tri = AdjointInverter(enc, channels_last=cl, kernels="triton").cascade
    with torch.no_grad(), enc.frozen():
        lin, lin_t = ref.linearize(x, 2), tri.linearize(x, 2)
        fused.clear()  # the self-check's own probe pull-back may take the PyTorch path
        u = torch.randn(3, *lin.acts[2].shape, generator=torch.Generator().manual_seed(0))
        for k in (2, 1):
            expected = lin.pullbacks[k](u)
            assert torch.equal(lin_t.pullbacks[k](u), expected)
            u = expected
    assert fused and all(ok for ok, _ in fused)
    assert any(with_sum for _, with_sum in fused)  # residual sums done inside the mask pass
