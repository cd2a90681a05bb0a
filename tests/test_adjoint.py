"""The explicit stage transposes (adjinv.core.adjoint) against autograd's VJP, in float64."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adjinv import load_encoder
from adjinv.core.adjoint import _and_bits, _mask_bits, _Op, _store_weight, _to_polyphase, build_stage_adjoint
from adjinv.core.cascade import AdjointCascade, chunked
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.core.precision import fp32_mode
from adjinv.encoders.efficientnet_lite import Conv2dSame
from adjinv.errors import AdjinvError
from adjinv.lacs.training import lac_step
from conftest import inplace_bn_cnn, staged_from_sequential


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def random_lacs(enc: torch.nn.Module, seed: int = 0) -> LACBank:
    torch.manual_seed(seed)
    lacs = LACBank.for_encoder(enc).double()
    for p in lacs.parameters():
        p.data.normal_()
    return lacs


def compare(enc, size: int, batch: int = 2, seed: int = 0, **kw) -> list[bool]:
    """Every stage's pull-back and the full cascade agree with the autograd engine."""
    enc = enc.double()
    lacs = random_lacs(enc, seed)
    x = torch.randn(batch, 3, size, size + 3, dtype=torch.float64)
    with enc.frozen(), torch.no_grad():
        ref, fast = AdjointCascade(enc, lacs, engine="autograd"), AdjointCascade(enc, lacs, **kw)
        lr, lf = ref.linearize(x), fast.linearize(x)
        for k in range(enc.num_stages):
            assert torch.equal(lr.acts[k], lf.acts[k]) or rel(lf.acts[k], lr.acts[k]) < 1e-13
            u = torch.randn(3, *lr.acts[k].shape, dtype=torch.float64)
            keep = u.clone()
            assert rel(lf.pullbacks[k](u), lr.pullbacks[k](u)) < 1e-12, k
            assert torch.equal(u, keep), "the pull-back modified its input"
        last = enc.num_stages - 1
        u = torch.randn(2, *lr.acts[last].shape, dtype=torch.float64)
        assert rel(fast.pull_back(lf, last, u), ref.pull_back(lr, last, u)) < 1e-12
    return lf.explicit


@pytest.mark.parametrize("name,size,expected", [
    ("efficientnet_lite0", 45, [True] * 6),
    ("resnet18", 37, [True] * 5),
    ("resnet50", 37, [True] * 5),
    ("densenet121", 40, [True, True, False, False, False]),  # AvgPool transitions: autograd
])
def test_real_architectures_match_autograd(name, size, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = load_encoder(name, random_init=name != "efficientnet_lite0")
    assert compare(enc, size) == expected


def test_unsupported_stages_fall_back_to_autograd():
    torch.manual_seed(0)
    stages = [nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.GELU()),
              nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.GroupNorm(2, 8)),
              nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1, padding_mode="reflect"), nn.ReLU())]
    from adjinv.encoders.staged import LinearHead, StagedEncoder
    enc = StagedEncoder(stages, LinearHead(nn.Linear(8, 3)), probe_size=16)
    assert compare(enc, 16) == [False, False, False]


def test_inplace_bn_boundaries_and_small_cnn():
    assert compare(staged_from_sequential(inplace_bn_cnn()), 33) == [True] * 4


class Mixed(nn.Module):
    """Functional ReLUs, hardtanh, residual add, channel concat, overlapping max-pool,
    an unfused BatchNorm (its conv feeds two users) and TF-"SAME" convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.a = Conv2dSame(4, 6, 3, 2)
        self.b = nn.Conv2d(6, 6, 3, 1, 1)
        self.bn = nn.BatchNorm2d(6).eval()
        self.bn.running_mean.normal_()
        self.bn.running_var.uniform_(0.5, 2)
        self.c = Conv2dSame(12, 5, 5, 1, groups=1)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.a(x))
        y = self.b(h)
        z = torch.cat([F.hardtanh(self.bn(y), -0.5, 0.7), y.relu()], dim=1)
        z = torch.relu(self.c(z)) + torch.add(F.relu6(self.c(z)), 0.0)
        return self.pool(z.clone())


@pytest.mark.parametrize("size", [15, 16])
def test_mixed_ops_match_vjp(size):
    torch.manual_seed(1)
    body = Mixed().double().eval()
    x = torch.randn(2, 4, size, size + 1, dtype=torch.float64)
    built = build_stage_adjoint(body, x)
    assert built is not None
    y, adj = built
    y_ref, fn = torch.func.vjp(body, x)
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-12)
    u = torch.randn(3, *y.shape, dtype=torch.float64)
    ref = torch.stack([fn(u[i])[0] for i in range(3)])
    assert rel(adj(u), ref) < 1e-12


@pytest.mark.parametrize("k,s,p,size", [(7, 2, 3, 31), (7, 2, 3, 32), (3, 2, 1, 17), (4, 2, 1, 16),
                                        (5, 3, 2, 20), (3, 2, 0, 15)])
def test_polyphase_equals_transposed_convolution(k, s, p, size):
    torch.manual_seed(0)
    w = torch.randn(6, 3, k, k, dtype=torch.float64)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    y = F.conv2d(x, w, None, s, p)
    g = torch.randn_like(y)
    op_pad = size - ((y.shape[-1] - 1) * s - 2 * p + k)
    ref = F.conv_transpose2d(g, w, None, s, p, op_pad)
    op = _Op("conv", (), {"weight": w, "stride": (s, s), "padding": (p, p), "groups": 1,
                          "output_padding": (op_pad, op_pad), "dilation": (1, 1), "crop": None,
                          "dtype": torch.float64, "fmt": torch.contiguous_format, "in_size": (size, size)})
    _to_polyphase(op)
    d = op.data
    z = F.pixel_shuffle(F.conv2d(g, d["weight"], None, 1, d["pad"]), d["stride"])
    z = F.pad(z, (0, max(0, p + size - z.shape[-1]), 0, max(0, p + size - z.shape[-2])))
    assert rel(z[..., p: p + size, p: p + size], ref) < 1e-12


def test_lac_training_gradients_match_autograd_engine(tiny_enc):
    enc = tiny_enc.double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    grads = []
    for engine in ("autograd", "auto"):
        inv = AdjointInverter(enc, random_lacs(enc, 3), engine=engine)
        with enc.frozen():
            loss = lac_step(inv, x).l1
        grads.append((loss, [p.grad.clone() for p in inv.lacs.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-14)


@pytest.mark.filterwarnings("ignore:precision=.fp16. is meant for CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_lac_training_runs_in_low_precision(tiny_enc, precision):
    """A LAC training step through float16/bfloat16 transposes differentiates (no out= or
    integer views on the autograd path) and its gradients are close to float32's."""
    enc = copy.deepcopy(tiny_enc).float()
    x = torch.randn(1, 3, 32, 32)
    grads = {}
    for p in ("float32", precision):
        inv = AdjointInverter(enc, random_lacs(enc, 3).float(), precision=p)
        with enc.frozen():
            lac_step(inv, x)
        grads[p] = torch.cat([q.grad.flatten() for q in inv.lacs.parameters()])
    assert torch.isfinite(grads[precision]).all()
    assert rel(grads[precision], grads["float32"]) < 0.1


@pytest.mark.filterwarnings("ignore:precision=.fp16. is meant for CUDA")
def test_precisions_and_engines(tiny_enc):
    x = torch.randn(1, 3, 32, 32)
    last = tiny_enc.num_stages - 1
    out = {p: AdjointInverter(tiny_enc, precision=p).invert(x, stages=[last]).x_hat[last]
           for p in ("float32", "tf32", "fp16", "bf16")}
    assert torch.equal(out["float32"], out["tf32"])  # TF32 does not exist on CPU
    for p in ("fp16", "bf16"):
        err = rel(out[p], out["float32"])
        assert 0 < err < 1 and torch.isfinite(out[p]).all()
    with pytest.raises(ValueError, match="precision"):
        AdjointInverter(tiny_enc, precision="fp8")
    with pytest.raises(ValueError, match="engine"):
        AdjointInverter(tiny_enc, engine="fast")


def test_split_float16_weights_carry_twice_the_bits():
    """W_hi + W_lo carry W to ~2^-21 (W_hi alone to 2^-11), in the memory format asked for."""
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64) * 0.1
    hi, lo = _store_weight(w, torch.float16, torch.channels_last)
    assert hi.dtype == lo.dtype == torch.float16 and lo.is_contiguous(memory_format=torch.channels_last)
    assert rel(hi.double() + lo.double(), w) < 2 ** -20 < rel(hi.double(), w)
    assert _store_weight(w, torch.float32, torch.contiguous_format)[1] is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cl", [True, False])
@pytest.mark.parametrize("shape", [(1, 6, 5, 4), (2, 3, 4, 5), (1, 2, 1, 1), (1, 1, 3, 2)])
def test_masks_as_bitwise_and_equal_the_product(dtype, cl, shape):
    """The ReLU mask applied as an AND of bit patterns equals the product, for owned and
    shared cotangents, broadcast over the chunk or per image, odd and even sizes, and
    falls back to the product on a layout the integer view cannot take."""
    torch.manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    n = 3
    mask = (torch.randn(shape) > 0).to(dtype).contiguous(memory_format=fmt)
    bits = _mask_bits(mask, cl)
    g = torch.randn(n * shape[0], *shape[1:]).to(dtype).contiguous(memory_format=fmt)
    want = (g.view(n, *shape) * mask).view(g.shape)
    shared = _and_bits(g, bits, cl, False, n)
    if shared is None:  # 1×1 maps: strides of size-1 dims defeat the integer view → product
        assert shape[-2:] == (1, 1)
        return
    assert torch.equal(shared, want) and not torch.equal(g, want)
    owned = g.clone(memory_format=fmt)
    out = _and_bits(owned, bits, cl, True, n)
    assert torch.equal(out, want) and out.data_ptr() == owned.data_ptr()
    other = g.contiguous(memory_format=torch.contiguous_format if cl else torch.channels_last)
    got = _and_bits(other, bits, cl, False, n)
    assert got is None or torch.equal(got, want)


@pytest.mark.filterwarnings("ignore:precision=.fp16. is meant for CUDA")
@pytest.mark.parametrize("name,size", [("resnet18", 37), ("efficientnet_lite0", 45)])
def test_float16_pull_back_is_close_scale_free_and_explicit(name, size):
    """precision="fp16": every stage stays explicit, the result is within float16 rounding
    of float32 at any scale of the seed (each stage rescales to float16's range)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = load_encoder(name, random_init=name != "efficientnet_lite0")
    lacs = LACBank.for_encoder(enc)
    x = torch.randn(1, 3, size, size)
    last = enc.num_stages - 1
    with enc.frozen(), torch.no_grad():
        ref, half = AdjointCascade(enc, lacs), AdjointCascade(enc, lacs, precision="fp16")
        lr = ref.linearize(x)
        with pytest.warns(UserWarning, match="meant for CUDA"):
            lh = half.linearize(x)
        assert all(lh.explicit)
        u = torch.randn(2, *lr.acts[last].shape)
        want = ref.raw_pull_back(lr, last, u)
        for scale in (1e-20, 1.0, 1e20):
            got = half.raw_pull_back(lh, last, u * scale)
            assert got.dtype == torch.float32
            assert rel(got / scale, want) < 1e-2
        assert rel(half.pull_back(lh, last, u), ref.pull_back(lr, last, u)) < 2e-2


@pytest.mark.filterwarnings("ignore:precision=.fp16. is meant for CUDA")
def test_float16_weights_out_of_range_fall_back_and_overflow_raises():
    torch.manual_seed(0)
    big = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    with torch.no_grad():
        big[0].weight.mul_(1e6)
    x = torch.randn(1, 3, 8, 8)
    assert build_stage_adjoint(big, x, dtype=torch.float16) is None  # → float32 autograd
    grow = nn.Sequential(*[nn.Conv2d(3, 3, 1, bias=False) for _ in range(4)])
    with torch.no_grad():
        for m in grow:
            m.weight.copy_(torch.eye(3).view(3, 3, 1, 1) * 1000.0)
    y, pb = build_stage_adjoint(grow, torch.randn(1, 3, 5, 5), dtype=torch.float16)
    assert not torch.isfinite(pb(torch.ones(1, *y.shape))).all()  # 1000⁴ > 65504
    enc = staged_from_sequential(nn.Sequential(grow, nn.Linear(3, 2)), 1)
    casc = AdjointCascade(enc, LACBank.for_encoder(enc), precision="fp16", verify=False)
    with enc.frozen(), torch.no_grad():
        lin = casc.linearize(torch.randn(1, 3, 8, 8))
        with pytest.raises(AdjinvError, match="overflowed"):
            casc.raw_pull_back(lin, 0, torch.ones(1, *lin.acts[0].shape))
    # the self-check sees the overflow on its random cotangent: that stage uses autograd
    checked = AdjointCascade(enc, LACBank.for_encoder(enc), precision="fp16")
    with enc.frozen(), torch.no_grad(), pytest.warns(UserWarning, match="explicit transpose differs"):
        lin = checked.linearize(torch.randn(1, 3, 8, 8))
    assert lin.explicit == [False]
    with enc.frozen(), torch.no_grad():
        assert torch.isfinite(checked.raw_pull_back(lin, 0, torch.ones(1, *lin.acts[0].shape))).all()


def test_fp32_mode_restores_global_flags():
    conv = torch.backends.cudnn.conv
    mm = torch.backends.cuda.matmul
    red = mm.allow_fp16_reduced_precision_reduction
    with fp32_mode("fp16"):
        assert not mm.allow_fp16_reduced_precision_reduction
    assert mm.allow_fp16_reduced_precision_reduction == red
    before = conv.fp32_precision
    with fp32_mode("float32"):
        assert conv.fp32_precision == "ieee"
    with fp32_mode("tf32"):
        assert conv.fp32_precision == "tf32"
    assert conv.fp32_precision == before


def test_out_of_memory_halves_the_chunk(tiny_enc, monkeypatch):
    x = torch.randn(1, 3, 32, 32)
    last = tiny_enc.num_stages - 1
    ref = AdjointInverter(tiny_enc, chunk_size=1).invert(x, stages=[last]).x_hat[last]
    inv = AdjointInverter(tiny_enc, chunk_size=16)
    real, sizes = inv.cascade.pull_back, []

    def tight(lin, stage, cot):
        sizes.append(cot.shape[0])
        if cot.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(lin, stage, cot)

    monkeypatch.setattr(inv.cascade, "pull_back", tight)
    out = inv.invert(x, stages=[last]).x_hat[last]
    assert sizes[1:3] == [8, 4] and max(sizes[3:]) <= 2
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_chunked_halves_on_out_of_memory_and_raises_for_one_channel():
    seen = []

    def work(ch):
        seen.append(ch.numel())
        if ch.numel() > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return ch * 10

    out = list(chunked(torch.arange(7), 5, work))
    assert seen == [5, 2, 2, 2, 1]  # halved once, the smaller size kept
    assert torch.equal(torch.cat([ch for ch, _ in out]), torch.arange(7))
    assert all(torch.equal(r, ch * 10) for ch, r in out)

    def never(ch):
        raise torch.cuda.OutOfMemoryError("simulated")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        list(chunked(torch.arange(4), 4, never))


def test_images_split_when_live_sets_differ_gives_the_same_result(tiny_enc, monkeypatch):
    x = torch.randn(3, 3, 32, 32)
    last = tiny_enc.num_stages - 1
    inv = AdjointInverter(tiny_enc)
    monkeypatch.setattr(AdjointInverter, "SPLIT_RATIO", float("inf"))
    joint = inv.invert(x, top_k=2)
    calls = []
    real = inv.cascade.linearize
    monkeypatch.setattr(inv.cascade, "linearize", lambda x, upto=None: calls.append(x.shape[0])
                        or real(x, upto))
    monkeypatch.setattr(AdjointInverter, "SPLIT_RATIO", 0.0)
    ticks = []
    inv.chunk_size = 4
    split = inv.invert(x, top_k=2, stages=[last], progress=lambda d, t: ticks.append((d, t)))
    inv.chunk_size = None
    assert calls.count(1) >= 3  # one linearisation per image
    # progress counts on over the whole batch instead of restarting per image
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks) and len({t for _, t in ticks}) == 1
    assert ticks[-1][0] == ticks[-1][1]
    split = inv.invert(x, top_k=2)
    for s in range(last + 1):
        assert torch.allclose(split.x_hat[s], joint.x_hat[s], rtol=1e-5, atol=1e-6)
        assert torch.equal(split.channels[s], joint.channels[s])
        assert torch.allclose(split.phi[s], joint.phi[s], rtol=1e-5, atol=1e-6)


# ------------------------------------------------ exact types: subclasses that change forward
def _two_stage(mid: nn.Module, c: int = 8):
    from adjinv.encoders.staged import LinearHead, StagedEncoder
    torch.manual_seed(0)
    stages = [nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), mid),
              nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())]
    for m in stages[0].modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return StagedEncoder(stages, LinearHead(nn.Linear(c, 3)), probe_size=32)


@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU])
def test_batchnorm_with_fused_activation_is_not_a_plain_batchnorm(act):
    """timm's BatchNormAct2d subclasses BatchNorm2d and applies its activation in forward:
    transposing it as a BatchNorm scale dropped the activation's derivative."""
    from timm.layers import BatchNormAct2d
    enc = _two_stage(BatchNormAct2d(8, act_layer=act))
    explicit = compare(enc, 20)
    assert explicit[1]  # the plain stage stays explicit


@pytest.mark.parametrize("size", [64, 65])
def test_maxpool_with_same_padding_is_not_a_plain_maxpool(size):
    """timm's MaxPool2dSame pads with -inf in forward: its padding must not be dropped."""
    from timm.layers.pool2d_same import MaxPool2dSame
    enc = _two_stage(nn.Sequential(nn.ReLU(), MaxPool2dSame(3, 2)))
    compare(enc, size)


def test_subclass_without_own_forward_stays_explicit():
    class MyConv(nn.Conv2d):
        pass

    class MyBN(nn.BatchNorm2d):
        pass

    from adjinv.core.adjoint import known_type
    assert known_type(MyConv(3, 3, 1)) is nn.Conv2d and known_type(nn.ReLU6()) is nn.ReLU6
    from timm.layers import BatchNormAct2d
    assert known_type(BatchNormAct2d(4)) is None
    enc = _two_stage(nn.Sequential(MyBN(8), nn.ReLU()))
    enc.stages[0].body[0].__class__ = MyConv
    assert compare(enc, 20) == [True, True]


# ------------------------------------------------ the per-stage self-check
def _old_rule(m):
    """The rule before exact types: any BatchNorm2d subclass counted as a plain BatchNorm."""
    return nn.BatchNorm2d if isinstance(m, nn.BatchNorm2d) else _KNOWN_TYPE(m)


from adjinv.core import adjoint as _adjoint_mod  # noqa: E402

_KNOWN_TYPE = _adjoint_mod.known_type


def test_self_check_falls_back_on_a_wrong_transpose(monkeypatch):
    """With the wrong transpose of a fused BatchNorm+activation forced back in, the
    self-check catches it: that stage uses autograd (with a warning naming the type), the
    other stays explicit, and the result equals the autograd engine's."""
    from timm.layers import BatchNormAct2d
    monkeypatch.setattr(_adjoint_mod, "known_type", _old_rule)
    enc = _two_stage(BatchNormAct2d(8, act_layer=nn.ReLU)).double()
    x = torch.randn(2, 3, 20, 23, dtype=torch.float64)
    lacs = random_lacs(enc)
    with enc.frozen(), torch.no_grad():
        unchecked = AdjointCascade(enc, lacs, verify=False).linearize(x)
        assert unchecked.explicit == [True, True]  # the defect is real without the check
        with pytest.warns(UserWarning, match="stage 0.*BatchNormAct2d"):
            lin = AdjointCascade(enc, lacs).linearize(x)
        ref = AdjointCascade(enc, lacs, engine="autograd").linearize(x)
        assert lin.explicit == [False, True]
        assert lin.check_errors[0] > 0.1 and lin.check_errors[1] < 1e-12
        u = torch.randn(3, *lin.acts[1].shape, dtype=torch.float64)
        cas = AdjointCascade(enc, lacs)
        assert rel(cas.pull_back(lin, 1, u), cas.pull_back(ref, 1, u)) < 1e-12
        assert rel(cas.pull_back(unchecked, 1, u), cas.pull_back(ref, 1, u)) > 0.1


def test_self_check_passes_silently_on_correct_stages(tiny_enc):
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with tiny_enc.frozen(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        lin = AdjointInverter(tiny_enc).cascade.linearize(x)
    assert all(lin.explicit) and all(e is not None and e < 1e-12 for e in lin.check_errors)
    assert AdjointInverter(tiny_enc, verify=False).cascade.verify is False


def _jvp_compare(enc, size: int, batch: int = 2) -> int:
    """Every explicit stage's `jacobian()` against torch.func.jvp of the stage, in float64,
    and the adjoint identity <J v, u> = <v, Jᵀ u>; returns how many stages were checked."""
    enc = enc.double()
    x = torch.randn(batch, 3, size, size + 3, dtype=torch.float64)
    checked = 0
    with enc.frozen(), torch.no_grad():
        cas = AdjointCascade(enc, LACBank.for_encoder(enc).double())
        lin = cas.linearize(x)
        for k, pb in enumerate(lin.pullbacks):
            if not getattr(pb, "has_jacobian", False):
                continue
            a_in = x if k == 0 else lin.acts[k - 1]
            v = torch.randn(3, *a_in.shape, dtype=torch.float64)
            keep = v.clone()
            got = pb.jacobian(v)
            assert torch.equal(v, keep), "jacobian() modified its input"
            want = torch.stack([torch.func.jvp(enc.stages[k], (a_in,), (v[i],))[1] for i in range(3)])
            assert rel(got, want) < 1e-12, k
            u = torch.randn(3, *lin.acts[k].shape, dtype=torch.float64)
            lhs, rhs = (got * u).sum(), (v * pb(u)).sum()
            assert abs(float(lhs - rhs)) < 1e-10 * float(lhs.abs() + rhs.abs()), k
            checked += 1
    return checked


@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 45), ("resnet18", 37)])
def test_stage_jacobians_match_forward_mode_autograd(name, size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = load_encoder(name, random_init=name != "efficientnet_lite0")
    assert _jvp_compare(enc, size) == enc.num_stages


@pytest.mark.parametrize("size", [15, 16])
def test_mixed_ops_jacobian_matches_jvp(size):
    """Max-pool switches, concatenation, residual sums, an unfused BatchNorm, TF-"SAME"
    padding and a clone: the forward linearisation against torch.func.jvp."""
    torch.manual_seed(1)
    body = Mixed().double().eval()
    x = torch.randn(2, 4, size, size + 1, dtype=torch.float64)
    y, adj = build_stage_adjoint(body, x)
    v = torch.randn(3, *x.shape, dtype=torch.float64)
    want = torch.stack([torch.func.jvp(body, (x,), (v[i],))[1] for i in range(3)])
    assert adj.has_jacobian
    assert rel(adj.jacobian(v), want) < 1e-12
    assert compare(staged_from_sequential(inplace_bn_cnn()), 33) == [True] * 4
    assert _jvp_compare(staged_from_sequential(inplace_bn_cnn()), 33) == 4


def test_recorded_transposes_back_propagate_through_their_jacobians(tiny_enc, monkeypatch):
    """LAC training's gradients with each transpose back-propagated through
    `StageAdjoint.jacobian()` equal those with the transpose's own ops recorded."""
    from adjinv.core import cascade

    enc = load_encoder("efficientnet_lite0")
    lacs = random_lacs(enc).float()
    x = enc.normalize(torch.rand(1, 3, 48, 48))
    inv = AdjointInverter(enc, lacs)
    got = {}
    for flag in (False, True):
        monkeypatch.setattr(cascade, "EXPLICIT_BACKWARD", flag)
        lacs.zero_grad(set_to_none=True)
        with enc.frozen():
            lac_step(inv, x, channel_fraction=0.3, gen=torch.Generator().manual_seed(0))
        got[flag] = torch.cat([p.grad.flatten() for p in lacs.parameters()])
    assert float(got[False].abs().max()) > 0
    assert rel(got[True], got[False]) < 1e-5  # float32


def test_a_wrong_stage_jacobian_falls_back_to_autograd_with_a_warning(monkeypatch):
    """If a stage's `jacobian()` failed its adjoint check, LAC training would get wrong
    gradients silently; it falls back to recording the transpose's ops instead."""
    from adjinv.core import adjoint, cascade

    enc = load_encoder("efficientnet_lite0")
    lacs = random_lacs(enc).float()
    x = enc.normalize(torch.rand(1, 3, 48, 48))
    inv = AdjointInverter(enc, lacs)

    def grads() -> torch.Tensor:
        lacs.zero_grad(set_to_none=True)
        with enc.frozen():
            lac_step(inv, x, channel_fraction=0.3, gen=torch.Generator().manual_seed(0))
        return torch.cat([p.grad.flatten() for p in lacs.parameters()])

    monkeypatch.setattr(cascade, "EXPLICIT_BACKWARD", False)
    ref = grads()
    monkeypatch.setattr(cascade, "EXPLICIT_BACKWARD", True)
    real = adjoint.StageAdjoint._forward

    def wrong(op, ins, own, n):  # every mask forgotten: not the stage's Jacobian
        return ins[0] if op.kind == "mask" else real(op, ins, own, n)

    monkeypatch.setattr(adjoint.StageAdjoint, "_forward", staticmethod(wrong))
    with pytest.warns(UserWarning, match="fails its adjoint check"):
        got = grads()
    assert rel(got, ref) < 1e-5
