"""The fidelity (Table 1) and cam-compare (Table 3) runners end to end on a tiny CNN at
32 px, their per-image caches, and the CLI registration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from adjinv.cli import build_parser
from adjinv.paper.runners.cam_compare import CamCompareConfig, run_cam_compare
from adjinv.paper.runners.fidelity import FidelityConfig, run_fidelity
from conftest import smooth_image, staged_from_sequential, tiny_relu_cnn


@pytest.fixture(scope="module")
def tiny32():
    return staged_from_sequential(tiny_relu_cnn(seed=0))


def test_fidelity_runner(tiny32, tmp_path):
    cfg = FidelityConfig(encoders=["custom"], size=32, max_images=2, train_images=5,
                         mv={"steps": 5}, upconv={"steps": 4, "width": 16, "min_width": 8})
    res = run_fidelity(cfg, tmp_path, encoders={"custom": tiny32})
    cell = res["cells"]["custom|samples"]
    for m in ("ours", "control", "vanilla", "mahendran", "upconv"):
        assert 0 < cell[m]["ssim"] <= 1 and cell[m]["n"] == 2 and "lpips" not in cell[m], m
    assert "unavailable" in cell["robust"]
    assert "unavailable" in res["lpips"]
    setup = res["setup"]["custom|samples"]
    assert setup["lacs"].startswith("identity") and "fitted once" in setup["vanilla_map"]
    assert (tmp_path / "upconv" / "custom__samples.safetensors").is_file()
    table = (tmp_path / "table.md").read_text()
    assert "| Control: seed zero | SSIM ×100 ↑ |" in table
    assert "| Robust inversion | SSIM ×100 ↑ | – |" in table
    assert len(list((tmp_path / "cache" / "custom" / "samples").glob("*.json"))) == 2
    # a rerun reads every image from the cache
    again = run_fidelity(cfg, tmp_path, encoders={"custom": tiny32})
    assert again["cells"]["custom|samples"]["per_image"] == cell["per_image"]


def write_masked_folder(root, n=3, size=40):
    (root / "img").mkdir()
    (root / "mask").mkdir()
    for i in range(n):
        img = (smooth_image(size, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(img).save(root / "img" / f"im{i}.png")
        m = np.zeros((size, size), np.uint8)
        m[5 + i: 25 + i, 10:30] = 255
        Image.fromarray(m).save(root / "mask" / f"im{i}.png")


def test_cam_compare_runner_with_masks(tiny32, tmp_path):
    write_masked_folder(tmp_path)
    spec = f"images:{tmp_path / 'img'}@{tmp_path / 'mask'}"
    cfg = CamCompareConfig(data=[spec, "samples", "composites"], size=32, max_images=2, steps=4,
                           score_batch_size=8, chunk_size=8, randomize=[1])
    res = run_cam_compare(cfg, tmp_path / "out", encoder=tiny32)
    assert res["lacs"].startswith("identity")
    masked = res["tables"][spec]
    assert masked["masks"] and set(masked["mean"]) == {"gradcam", "gradcam++", "scorecam", "ours",
                                                       "ours_zero_mean", "random", "edge"}
    for v in masked["mean"].values():
        assert 0 <= v["insertion"] <= 1 and 0 <= v["deletion"] <= 1 and v["seconds"] >= 0
        assert 0 <= v["deletion_blur"] <= 1
        assert 0 <= v["miou"] <= 1 and v["pointing"] in (0.0, 0.5, 1.0) and v["n"] == 2
    # sanity rows: the edge map ignores the model (ρ = 1 after re-initialisation); a fresh
    # random map is uncorrelated with the previous one
    assert masked["mean"]["edge"]["rank_corr_top1"] == pytest.approx(1.0)
    assert abs(masked["mean"]["random"]["rank_corr_top1"]) < 0.3
    comp = res["tables"]["composites"]
    assert comp["masks"] and 0 <= comp["mean"]["ours"]["miou"] <= 1
    plain = res["tables"]["samples"]
    assert not plain["masks"] and "miou" not in plain["mean"]["ours"]
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| S-CAM |" in table and "mIoU" in table and "localisation not computed" in table
    assert "sanity: random map" in table and "Del onto blur" in table
    assert "ReLU" in json.dumps(res["postprocess"])


def test_cli_help_and_registration(capsys):
    parser = build_parser()
    for name in ("fidelity", "cam-compare"):
        with pytest.raises(SystemExit):
            parser.parse_args(["experiment", name, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_sobel_edges():
    from adjinv.paper.baselines.cam import sobel_magnitude

    flat = torch.full((1, 3, 16, 16), 0.3)
    assert float(sobel_magnitude(flat).abs().max()) == 0
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1.0
    e = sobel_magnitude(step)[0]
    assert float(e[:, :6].abs().max()) == 0 and float(e[:, 10:].abs().max()) == 0
    assert float(e[:, 7:9].min()) > 0
