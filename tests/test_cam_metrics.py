"""Saliency adapters (one call shape) and the faithfulness / localisation metrics on
cases computable by hand (docs/method.md §11)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adjinv.core.inverter import AdjointInverter
from adjinv.metrics.faithfulness import (
    FaithfulnessMetric,
    gaussian_blur,
    insertion_deletion,
    step_counts,
    trapezoid_auc,
)
from adjinv.metrics.localisation import (
    LocalisationMetric,
    average_precision,
    iou,
    pixel_accuracy,
    pointing_game,
)
from adjinv.paper.baselines.cam import AdjointSaliency, CAMSaliency
from conftest import random_lacs, staged_from_sequential, tiny_relu_cnn


@pytest.fixture(scope="module")
def tiny32():
    return staged_from_sequential(tiny_relu_cnn(seed=0))


def square_mask(size=32, lo=8, hi=20):
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[:, lo:hi, lo:hi] = True
    return m


# ----------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_cam_adapters_shape_range_and_state(tiny32, method):
    x = torch.randn(2, 3, 32, 32)
    tiny32.train()
    s = CAMSaliency(tiny32, method, score_batch_size=4).attribute(x)
    assert s.shape == (2, 32, 32) and s.dtype == torch.float32
    assert float(s.min()) >= 0 and float(s.max()) <= 1 + 1e-6
    # modes and requires_grad restored, no hook left behind
    assert tiny32.training and all(p.requires_grad for p in tiny32.parameters())
    assert all(not m._forward_hooks for m in tiny32.modules())
    tiny32.eval()


def test_our_saliency_has_the_same_shape(tiny32):
    x = torch.randn(2, 3, 32, 32)
    inv = AdjointInverter(tiny32, random_lacs(tiny32), chunk_size=8)
    s = AdjointSaliency(inv).attribute(x)
    assert s.shape == (2, 32, 32) and float(s.min()) >= 0
    s1 = AdjointSaliency(inv).attribute(x, target=1)
    assert not torch.allclose(s, s1)


# ----------------------------------------------------------------------------- localisation
def test_saliency_equal_to_mask_is_perfect():
    m = square_mask()
    s = m.float()
    assert float(iou(s, m)) == 1.0 and float(iou(s, m, classes=True)) == 1.0
    assert float(pixel_accuracy(s, m)) == 1.0
    assert float(pointing_game(s, m)) == 1.0
    assert float(average_precision(s, m)) == pytest.approx(1.0)


def test_pointing_tolerance_is_15_px():
    m = square_mask(64, 0, 10)  # mask rows/cols 0..9
    s = torch.zeros(1, 64, 64)
    s[0, 9, 9 + 15] = 1  # exactly 15 px right of the mask corner (9, 9)
    assert float(pointing_game(s, m)) == 1.0
    s.zero_()
    s[0, 9 + 11, 9 + 11] = 1  # 15.56 px away diagonally
    assert float(pointing_game(s, m)) == 0.0


def test_average_precision_matches_sklearn():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    m = torch.rand(3, 16, 16, generator=g) < 0.3
    s = torch.randint(0, 6, (3, 16, 16), generator=g).float()  # many ties
    ours = average_precision(s, m)
    for b in range(3):
        ref = average_precision_score(m[b].flatten().numpy(), s[b].flatten().numpy())
        assert float(ours[b]) == pytest.approx(ref, abs=1e-6)


def test_localisation_metric_update_compute_reset():
    m = square_mask(64, 30, 40).expand(2, -1, -1).clone()
    m[1] = False  # empty mask: skipped
    s = m.float()
    s[1] = torch.rand(64, 64)
    metric = LocalisationMetric()
    metric.update(s, m)
    r = metric.compute()
    assert r["n"] == 1 and r["skipped"] == 1 and r["miou"] == 1.0 and r["pointing"] == 1.0
    # inverted map: no overlap; its first maximum (0, 0) is > 15 px away
    metric.update(1 - m[:1].float(), m[:1])
    r = metric.compute()
    assert r["n"] == 2 and r["miou"] == pytest.approx(0.5) and r["pointing"] == 0.5
    metric.reset()
    assert math.isnan(metric.compute()["miou"])


# ----------------------------------------------------------------------------- faithfulness
class ConstantModel(nn.Module):
    """Logits that ignore the input."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.3, -1.0, 2.0]))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


def test_constant_model_gives_equal_insertion_and_deletion():
    x = torch.randn(2, 3, 24, 24)
    s = torch.rand(2, 24, 24)
    r = insertion_deletion(ConstantModel(), x, s, steps=10)
    p = torch.tensor([0.3, -1.0, 2.0]).double().softmax(0)[2]
    assert torch.allclose(r.insertion, r.deletion)
    assert torch.allclose(r.insertion, p.expand(2))


def test_trapezoid_and_step_counts():
    assert float(trapezoid_auc(torch.tensor([[0.0, 1.0]]))) == 0.5
    assert float(trapezoid_auc(torch.tensor([[1.0, 1.0, 1.0]]))) == 1.0
    assert step_counts(10, 4).tolist() == [0, 2, 5, 8, 10]


def loop_reference(model, x, s, steps, target):
    """Per-step loop written out from the protocol, one perturbed image at a time."""
    _, h, w = x.shape
    order = s.flatten().argsort(descending=True, stable=True)
    blurred = gaussian_blur(x[None])[0]
    ins, dele = [], []
    for i in range(steps + 1):
        k = round(i * h * w / steps)
        keep = torch.zeros(h * w, dtype=torch.bool)
        keep[order[:k]] = True
        keep = keep.view(1, h, w)
        a = torch.where(keep, x, blurred)
        d = torch.where(keep, torch.zeros_like(x), x)
        with torch.no_grad():
            ins.append(float(model(a[None]).double().softmax(1)[0, target]))
            dele.append(float(model(d[None]).double().softmax(1)[0, target]))
    return trapezoid_auc(torch.tensor([ins])), trapezoid_auc(torch.tensor([dele]))


def test_batched_insertion_deletion_equals_per_step_loop(tiny32):
    x = torch.randn(2, 3, 32, 32)
    s = torch.rand(2, 32, 32)
    a = insertion_deletion(tiny32, x, s, steps=8, internal_batch_size=5)
    b = insertion_deletion(tiny32, x, s, steps=8, internal_batch_size=64)
    assert torch.allclose(a.insertion, b.insertion) and torch.allclose(a.deletion, b.deletion)
    for i in range(2):
        ins, dele = loop_reference(tiny32, x[i], s[i], 8, int(a.target[i]))
        assert float(a.insertion[i]) == pytest.approx(float(ins), abs=1e-6)
        assert float(a.deletion[i]) == pytest.approx(float(dele), abs=1e-6)
    # endpoints: deletion starts at the clean probability, ends at the all-zero image
    with torch.no_grad():
        p = tiny32(x).double().softmax(1).gather(1, a.target[:, None])[:, 0]
    assert torch.allclose(a.deletion_curve[:, 0], p) and torch.allclose(a.insertion_curve[:, -1], p)


def test_faithfulness_metric_accumulates(tiny32):
    metric = FaithfulnessMetric(tiny32, steps=4)
    x = torch.randn(3, 3, 32, 32)
    s = torch.rand(3, 32, 32)
    r1 = metric.update(x[:2], s[:2])
    r2 = metric.update(x[2:], s[2:])
    out = metric.compute()
    assert out["n"] == 3
    assert out["insertion"] == pytest.approx(float(torch.cat([r1.insertion, r2.insertion]).mean()))
    metric.reset()
    assert metric.compute()["n"] == 0
