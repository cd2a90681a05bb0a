"""fg-paradox, superposition and ecr runners on a tiny CNN, and CLI smoke tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from adjinv.cli import build_parser, main
from adjinv.paper.runners.ecr import ECRConfig, run_ecr
from adjinv.paper.runners.fg_paradox import FGParadoxConfig, run_fg_paradox
from adjinv.paper.runners.superposition import SuperpositionConfig, run_superposition
from conftest import random_lacs, staged_from_sequential, tiny_relu_cnn


@pytest.fixture(scope="module")
def tiny32():
    enc = staged_from_sequential(tiny_relu_cnn(seed=0))
    return enc, random_lacs(enc)


def test_fg_paradox_runner_and_cache(tiny32, tmp_path):
    enc, lacs = tiny32
    cfg = FGParadoxConfig(size=32, max_images=3, randomize=[1, "all"])
    res = run_fg_paradox(cfg, tmp_path, encoders=[enc], lacs=[lacs])
    for f in ("results.json", "table.md", "fg.png", "example_custom.png"):
        assert (tmp_path / f).is_file(), f
    per = res["encoders"][0]
    rec = per["images"][0]
    for row in ("measured", "head_permuted", "head_random", "swapped_seed"):
        for v in ("raw", "zero_mean", "psi0_projected"):
            m = rec[row][v]
            assert m["O1"] == pytest.approx(abs(m["pos"] - m["neg"]))
            assert m["O2"] == pytest.approx(m["full"] - max(m["pos"], m["neg"]))
    # the shuffled heads change the hemispheres, not the features
    assert rec["head_permuted"]["raw"]["pos"] != rec["measured"]["raw"]["pos"]
    assert set(rec["randomized"]) == {"1", "4"} and rec["seed_zero"]["fg"] is not None
    # partners never share the source photo (composites 0, 1 are one photo; 2 another)
    groups = {r["name"]: r["group"] for r in per["images"]}
    assert all(groups[r["partner"]] != r["group"] for r in per["images"])
    assert "another group" in per["partner_rule"]
    assert 0 < per["lac_pix"]["bias_share"] < 1
    s = per["summary"]["measured"]["raw"]["full"]
    assert s["n"] == 3 and s["n_groups"] == 2 and s["lo"] <= s["mean"] <= s["hi"]
    assert "zero-mean" in (tmp_path / "table.md").read_text()
    again = run_fg_paradox(cfg, tmp_path, encoders=[enc], lacs=[lacs])
    assert again["encoders"][0]["summary"] == res["encoders"][0]["summary"]


def test_superposition_runner(tiny32, tmp_path):
    enc, lacs = tiny32
    cfg = SuperpositionConfig(size=32, max_images=2, randomize=[1], panel_channels=2, max_channels=8)
    res = run_superposition(cfg, tmp_path, encoder=enc, lacs=lacs)
    assert res["images"][0]["channels"] <= 8
    assert (tmp_path / res["figures"][0]).is_file() and (tmp_path / res["figures"][1]).is_file()
    m = res["summary"]["measured"]
    assert 0 < m["raw"]["energy_fraction"]["mean"] <= 1
    assert "cos_u" in res["summary"]["swapped_seed"]["zero_mean"]
    for r in res["images"]:  # the exact floor is a lower bound on every image
        assert r["measured"]["raw"]["energy_fraction"] >= r["floor"]["measured"] - 1e-9
        assert r["partner"] != r["name"]
    h2 = res["summary"]["h2"]
    assert set(h2) == {"measured", "head_permuted", "head_random"}
    b1 = h2["measured"]["raw"]["B1"]["mean"]
    assert b1 is None or 0 <= b1 <= 1
    assert "B1" in (tmp_path / "table.md").read_text()


def test_ecr_runner_with_files(tiny32, tmp_path):
    enc, lacs = tiny32
    rng = np.random.default_rng(0)
    ref = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(ref)
    m = np.zeros((40, 40), dtype=np.uint8)
    m[5:20, 5:25] = 255
    Image.fromarray(m).save(tmp_path / "region.png")
    (tmp_path / "data").mkdir()
    for i in range(3):
        arr = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / "data" / f"{i}.png")
    cfg = ECRConfig(reference=str(ref), region=str(tmp_path / "region.png"), data=str(tmp_path / "data"),
                    target=2, size=32, random_seeds=4, randomize=[1], fractions=[0.0, 0.5, 1.0])
    res = run_ecr(cfg, tmp_path / "out", encoder=enc, lacs=lacs)
    c = res["curves"]["measured"]
    assert c["descending"][0] == c["ascending"][0] == c["random_mean"][0]
    assert c["descending"][-1] == pytest.approx(c["random_mean"][-1])
    assert {"seed_zero", "swapped_seed", "random_top1", "energy", "abs_alpha",
            "zero_mean"} <= set(res["controls"])
    assert 0 <= res["ecr_zero_mean"]["mean"] <= 1
    assert res["live_fraction"] == pytest.approx(res["live_channels"] / res["channels"])
    ti = res["test_images"]
    assert 0 <= ti["classified_as_class"] <= 3 and 0 <= ti["mean_p_before"] <= 1
    if 0 < ti["classified_as_class"] < 3:  # only the correctly classified images are ablated
        assert ti["mean_p_before_used"] != ti["mean_p_before"]
    assert "Descending = Ascending" in (tmp_path / "out" / "table.md").read_text()
    for f in ("results.json", "table.md", "ablation.png", "reference.png"):
        assert (tmp_path / "out" / f).is_file()


def test_cli_help_and_errors(tmp_path, capsys):
    ap = build_parser()
    for name in ("fg-paradox", "superposition", "ecr"):
        with pytest.raises(SystemExit):
            ap.parse_args(["experiment", name, "--help"])
        assert "adjinv experiment " + name in capsys.readouterr().out
    assert main(["experiment", "ecr", "--out", str(tmp_path), "--reference", "a.png"]) == 2
    assert "together" in capsys.readouterr().err
    assert main(["experiment", "fg-paradox", "--out", str(tmp_path), "--randomize", "x"]) == 2
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"sizes": 3}))
    assert main(["experiment", "superposition", "--out", str(tmp_path), "--config", str(bad)]) == 2


def test_cli_fg_paradox_smoke(tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["experiment", "fg-paradox", "--out", str(out), "--encoder", "resnet18", "--random-init",
               "--size", "32", "--max-images", "2", "--randomize", "1", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["encoders"][0]["lacs"].startswith("identity")
    # identity LACs: Ψ_L(0) = 0, so the seed-zero control is undefined, and said so
    assert res["encoders"][0]["summary"]["seed_zero"]["undefined"] == 2
