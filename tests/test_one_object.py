"""One object end to end (issue 28): every method takes the ``adjinv.Inverter`` of the
one-liner or a plain model; results answer in the user's space and words."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import adjinv
from adjinv.core.display import centred_display
from adjinv.encoders.auto import pretrained_normalization
from adjinv.errors import AdjinvError
from adjinv.methods import controls
from adjinv.methods.readout import LogitReadout, invert_readout
from adjinv.methods.saliency import AdjointSaliency
from conftest import random_lacs, smooth_image, tiny_relu_cnn

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def inv():
    model = tiny_relu_cnn(seed=0)
    return adjinv.Inverter(model, lacs="identity", normalize=True, encoder_kw={"probe_size": 64})


def test_readme_python_block_runs_verbatim():
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    assert "adjinv.Inverter(model, normalize=True)" in block
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identity LACs for an untrained resnet18
        ns: dict = {}
        exec(compile(block, "README.md", "exec"), ns)
    res, cd = ns["res"], ns["cd"]
    kite = ns["inv"].encoder.categories.index("kite")
    assert kite == 21 and bool((cd.target == kite).all())
    assert res.error_bound[-1].shape == (2,) and bool((res.omitted_mass[-1] >= 0).all())


def test_every_method_takes_the_inverter(inv):
    x = smooth_image(32).expand(2, -1, -1, -1).contiguous()  # [0, 1], as inv takes it
    res = inv(x, target=3)
    enc = inv.encoder
    xn = enc.normalize(x)
    cd = adjinv.class_directional_inversion(inv, x, target=3)
    torch.testing.assert_close(cd.x_class, res.extra["class"])
    # the same with the AdjointInverter and normalised input, the old way
    cd2 = adjinv.class_directional_inversion(inv.inverter, xn, target=3)
    torch.testing.assert_close(cd.x_class, cd2.x_class)
    r = invert_readout(inv, x, LogitReadout(enc.head, 3))
    r2 = invert_readout(enc, None, xn, LogitReadout(enc.head, 3))
    torch.testing.assert_close(r.psi, r2.psi)
    torch.testing.assert_close(controls.seed_zero(inv, x), inv.seed_zero_control(x))
    sw = controls.swapped_class_directional(inv, x, x.flip(0), 3)
    assert sw.x_class.shape == x.shape
    sal = AdjointSaliency(inv).attribute(x, target=3)
    torch.testing.assert_close(sal, res.extra["class"].abs())


def test_plain_model_is_accepted_and_matches():
    model = tiny_relu_cnn(seed=1)
    xn = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identity LACs
        a = adjinv.class_directional_inversion(model, xn, target=2)
        inv = adjinv.Inverter(model)
    torch.testing.assert_close(a.x_class, inv.invert(xn, target=2).extra["class"])
    with pytest.raises(AdjinvError, match="adjinv.Inverter"):
        adjinv.class_directional_inversion("not a model", xn)  # type: ignore[arg-type]


def test_class_names_as_target_with_hints():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1000))
    inv = adjinv.Inverter(model, lacs="identity", encoder_kw={"probe_size": 32})
    x = torch.randn(2, 3, 32, 32)
    res = inv.invert(x, target="kite")
    ref = inv.invert(x, target=21)
    torch.testing.assert_close(res.extra["class"], ref.extra["class"])
    per_image = inv.invert(x, target=["kite", 22])
    torch.testing.assert_close(per_image.extra["class"][0], ref.extra["class"][0])
    with pytest.raises(AdjinvError, match="did you mean .*'kite'"):
        inv.invert(x, target="kitte")
    small = adjinv.Inverter(tiny_relu_cnn(), lacs="identity", encoder_kw={"probe_size": 64})
    with pytest.raises(AdjinvError, match="no class names"):
        small.invert(x, target="kite")


def test_stages_answer_to_module_paths_with_hints():
    model = torchvision.models.resnet18(num_classes=10)
    inv = adjinv.Inverter(model, lacs="identity", encoder_kw={"probe_size": 64})
    assert inv.encoder.stage_aliases[-1][0] == "layer4"
    res = inv(torch.randn(1, 3, 64, 64), stages=["layer4", "layer2"])
    assert sorted(res.x_hat) == [2, 4]
    assert res.x_hat["layer4"] is res.x_hat[-1] and res.x_hat["layer2.1"] is res.x_hat[2]
    with pytest.raises(KeyError, match="did you mean 'layer4'"):
        res.x_hat["layer5"]
    with pytest.raises(AdjinvError, match="did you mean 'layer3'"):
        inv(torch.randn(1, 3, 64, 64), stages=["layr3"])
    assert "layer4" in res.x_hat and "layer9" not in res.x_hat


def test_anytime_fields_take_negative_and_named_keys(inv):
    x = smooth_image(32)
    res = inv.invert(x, target=1, mass=0.5)
    last = inv.encoder.num_stages - 1
    for f in (res.omitted_mass, res.error_bound, res.error_bound_abs):
        assert f[-1] is f[last] is f[inv.encoder.infos[-1].name]
        assert f["class"].shape == (1,)
    assert float(res.omitted_mass[-1]) > 0
    with pytest.raises(KeyError, match="did you mean 'class'"):
        res.error_bound["clas"]


def test_image_is_the_report_mapping_in_input_space(inv):
    enc = inv.encoder
    enc.mean.fill_(0.5)
    enc.std.fill_(0.25)
    inv.inverter.lacs = random_lacs(enc, seed=3)
    x = smooth_image(32)
    res = inv(x)
    raw = res.x_hat[-1]
    torch.testing.assert_close(res.to_input(-1), raw * 0.25 + 0.5)
    img = res.image(-1)
    assert img.shape == raw.shape and float(img.min()) >= 0 and float(img.max()) <= 1
    torch.testing.assert_close(img, centred_display(raw * 0.25 + 0.5))
    assert float(img.std()) > 0.1  # stretched, unlike the clipped to_display
    with pytest.raises(AdjinvError, match="holds"):
        inv(x, stages=[0]).image("class")


def test_repr_is_short(inv):
    res = inv.invert(smooth_image(32), target=0, top_k=2, mass=0.5)
    text = repr(res)
    assert len(text) < 300 and "tensor(" not in text
    assert "x: 1×3×32×32" in text and "'class'" in text and "top-2" in text and "anytime" in text


def test_normalisation_comes_from_the_model_when_it_says():
    model = tiny_relu_cnn()
    model.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # as timm sets it
    enc = adjinv.encoder_from_module(model, probe_size=64)
    assert enc.mean.tolist() == [0.5] * 3 and enc.std.tolist() == [0.5] * 3
    tv = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    mean, std, source = pretrained_normalization(tiny_relu_cnn(), tv)
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and "transform" in source
    enc = adjinv.encoder_from_module(tiny_relu_cnn(), probe_size=64, mean=(0.1,) * 3, std=(0.2,) * 3)
    assert enc.mean.tolist() == pytest.approx([0.1] * 3)
    assert pretrained_normalization(tiny_relu_cnn()) is None
    with pytest.raises(AdjinvError, match="together"):
        adjinv.encoder_from_module(tiny_relu_cnn(), mean=(0.1,) * 3)


def test_timm_model_keeps_its_own_normalisation():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    inv = adjinv.Inverter(model, lacs="identity", normalize=True, encoder_kw={"probe_size": 64})
    assert inv.encoder.mean.tolist() == [0.5] * 3
    assert "layer4" in inv.encoder.stage_aliases[-1]


def test_report_takes_the_inverter(inv, tmp_path):
    from adjinv.viz.report import ReportConfig, write_report

    imgs = {"a": smooth_image(32, seed=1)[0], "b": smooth_image(32, seed=2)[0]}
    index = write_report(inv, imgs, tmp_path, ReportConfig(size=32, top_k=2))
    assert index == tmp_path / "index.html" and "x̂_L" in index.read_text()
    assert (tmp_path / "a" / "summary.json").is_file() and (tmp_path / "b" / "compare_swapped.png").is_file()
