"""The report's cheaper computation (issue 27) gives the numbers of the exact calls."""

from __future__ import annotations

import torch

from adjinv.core.inverter import AdjointInverter
from adjinv.core.simplex import simplex_measure
from adjinv.encoders.registry import load_encoder
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import photo
from adjinv.lacs.bundled import load_lacs
from adjinv.viz.report import ReportConfig, _scores, deepest_acts, invert_one, planned_channels
from conftest import random_lacs, smooth_image, staged_from_sequential, tiny_relu_cnn


def test_synthesize_anytime_is_exact_without_mass_and_bounded_with_it():
    enc = staged_from_sequential(tiny_relu_cnn(seed=0)).double()
    inv = AdjointInverter(enc, random_lacs(enc).double())
    x = enc.normalize(smooth_image(32, dtype=torch.float64))
    src = enc.normalize(smooth_image(32, seed=5, dtype=torch.float64))
    with torch.no_grad(), enc.frozen():
        lin = inv.linearize(x, 3)[0]
        a_p = enc.forward_stages(src)[-1]
        w = simplex_measure(a_p)
        full = inv.synthesize(lin, 3, {"w": w}, source=a_p)[0]["w"]
        exact = inv.synthesize_anytime(lin, 3, w, source=a_p)
        part = inv.synthesize_anytime(lin, 3, w, mass=0.6, source=a_p)
    assert torch.equal(exact.x_hat, full) and float(exact.error_bound_abs[0]) == 0
    assert float(part.omitted_mass[0]) > 0
    assert float((part.x_hat - full).norm()) <= float(part.error_bound_abs[0])


def test_report_panels_equal_the_exact_calls(tmp_path):
    enc = load_encoder("efficientnet_lite0")
    lacs = load_lacs(enc, None).lacs
    size = 64
    img, other = photo("china"), photo("flower")
    cfg = ReportConfig(size=size, top_k=2, partner_mass=None)
    partner = deepest_acts(enc, other, size)
    s = invert_one(enc, lacs, None, "china", img, tmp_path / "china", cfg, partners=[partner])
    x = enc.normalize(resize_center_crop(img, size))[None]
    inv = AdjointInverter(enc, lacs)
    ref = inv.invert(x)  # every stage in one call: the old report
    shown = resize_center_crop(img, size)
    for st in s["stages"]:
        want = _scores(enc, ref.x_hat[st["stage"]][0], shown)
        assert abs(st["ssim"] - want["ssim"]) <= 1e-6
    control = _scores(enc, inv.seed_zero_control(x)[0], shown)
    assert abs(s["seed_zero_control"]["ssim"] - control["ssim"]) <= 1e-6
    assert s["partners_anytime"]["per_partner"][0]["error_bound"] == 0
    n = planned_channels(enc, img, cfg, [partner])
    live = sum(int((w > 0).sum()) for w in ref.weights.values())
    assert n == live + int((simplex_measure(partner) > 0).sum())
