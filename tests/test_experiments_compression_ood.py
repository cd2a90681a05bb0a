"""The compression and OOD runners end to end on tiny settings: library calls with a tiny
CNN, and CLI smoke tests with the bundled EfficientNet-Lite0 at 32 px."""

from __future__ import annotations

import json

import pytest

from adjinv.cli import build_parser, main
from adjinv.paper.runners.compression import CompressionConfig, run_compression
from adjinv.paper.runners.ood import OODConfig, run_ood, run_ood_figure
from conftest import staged_from_sequential, tiny_relu_cnn


@pytest.fixture(scope="module")
def tiny32():
    return staged_from_sequential(tiny_relu_cnn(seed=0))


def test_compression_runner(tiny32, tmp_path):
    cfg = CompressionConfig(size=32, max_images=12, shifts=["corrupt:gaussian_noise:2"],
                            prune_ratios=[0.0, 0.5, 0.9], random_seeds=3, max_iter=50)
    res = run_compression(cfg, tmp_path, encoder=tiny32)
    for f in ("results.json", "table.md", "accuracy.png"):
        assert (tmp_path / f).is_file()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["eval_sets"] == ["in-distribution", "corrupt:gaussian_noise:2"]
    assert [r["k"] for r in on_disk["rows"]] == [16, 8, 2]
    row = on_disk["rows"][1]
    for sel in ("covvol", "energy"):
        assert set(row[sel]) == set(on_disk["eval_sets"])
        assert all(0 <= v <= 1 for v in row[sel].values())
    assert len(row["random"]["in-distribution"]["values"]) == 3
    # at 0 % pruning every selector keeps every channel: one probe, one accuracy
    r0 = on_disk["rows"][0]
    assert r0["covvol"] == r0["energy"] and r0["random"]["in-distribution"]["std"] == 0
    table = (tmp_path / "table.md").read_text()
    assert "| 90 | 2 |" in table and "CovVol" in table
    assert res["dataset"]["n_train"] == 12 and res["channels"] == 16
    # a second run reads every feature from the cache
    again = run_compression(cfg, tmp_path, encoder=tiny32)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(again["rows"]) == strip(res["rows"])


def test_ood_runner(tiny32, tmp_path):
    cfg = OODConfig(size=32, max_images=10, corruptions=["gaussian_noise", "contrast"],
                    severities=[1, 4], keep=4, max_iter=50, chunk_size=4)
    res = run_ood(cfg, tmp_path, encoder=tiny32)
    for f in ("results.json", "table.md", "geometry.png", "geometry_per_corruption.png",
              "reconstructions.png", "reconstructions/class_s5.png"):
        assert (tmp_path / f).is_file(), f
    rows = res["per_corruption"]["gaussian_noise"]
    assert [r["severity"] for r in rows] == [0, 1, 4]
    assert set(rows[1]) >= {"accuracy", "logdet_subset", "effective_rank", "trace", "mmd2",
                            "logdet_corr_subset", "mean_norm", "logdet_random_subset"}
    assert all(r["logdet_corr_subset"] <= 1e-9 for r in rows)  # a correlation matrix has det ≤ 1
    assert "log det corr" in (tmp_path / "table.md").read_text()
    n0 = res["normalised"][0]
    assert n0["accuracy"] == 1 and n0["volume"] == 1 and n0["effective_rank"] == 1
    # the clean test split is closer to the clean train split than heavy noise is
    assert res["mean_over_corruptions"][-1]["mmd2"] > res["mean_over_corruptions"][0]["mmd2"]
    fig = res["figure_4c"]
    assert fig["lacs"].startswith("identity") and len(fig["files"]) == 6
    assert "Figure 4(c)" in (tmp_path / "table.md").read_text()


def test_ood_figure_only(tiny32, tmp_path):
    """``--figure-only``: Figure 4(c) and its record, no geometry, results.json untouched."""
    (tmp_path / "results.json").write_text("{}")
    cfg = OODConfig(size=32, max_images=6, max_iter=30, chunk_size=4, figure_corruption="fog")
    rec = run_ood_figure(cfg, tmp_path, encoder=tiny32)
    assert (tmp_path / "results.json").read_text() == "{}"
    for f in ("reconstructions.png", "figure_4c.json", "reconstructions/input_s0.png",
              "reconstructions/class_s5.png"):
        assert (tmp_path / f).is_file(), f
    on_disk = json.loads((tmp_path / "figure_4c.json").read_text())
    fig = on_disk["figure_4c"]
    assert fig["corruption"] == "fog" and [f["severity"] for f in fig["files"]] == [0, 1, 2, 3, 4, 5]
    assert on_disk["config"]["figure_corruption"] == "fog" and rec["figure_4c"] == fig


def test_compression_transfer_on_composites(tiny32, tmp_path):
    """Cross-dataset transfer onto the embedded composite sets: channels chosen on the
    in-distribution split, a new probe per transfer set with its own classes."""
    cfg = CompressionConfig(size=32, max_images=6, shifts=[], prune_ratios=[0.0, 0.9],
                            random_seeds=2, max_iter=30,
                            transfer=["composites:object", "composites:background"])
    res = run_compression(cfg, tmp_path, encoder=tiny32)
    assert list(res["transfer"]) == ["composites:object", "composites:background"]
    for spec, rows in res["transfer"].items():
        assert [r["k"] for r in rows] == [16, 2]
        assert all(0 <= r["covvol"][spec] <= 1 for r in rows)
    assert "Transfer set composites:background" in (tmp_path / "table.md").read_text()


def test_cli_help_and_errors(tmp_path, capsys):
    ap = build_parser()
    for name in ("compression", "ood"):
        with pytest.raises(SystemExit):
            ap.parse_args(["experiment", name, "--help"])
        assert "adjinv experiment " + name in capsys.readouterr().out
    bad = tmp_path / "cfg.json"
    bad.write_text(json.dumps({"prune_ratio": [0.5]}))
    assert main(["experiment", "compression", "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["experiment", "ood", "--out", str(tmp_path / "o"), "--corruptions", "rain"]) == 2


def test_cli_smoke_lite0(tmp_path, capsys):
    """The real CLI path with the bundled pretrained encoder, on 6 tiny images."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"random_seeds": 2, "max_iter": 30}))
    out = tmp_path / "comp"
    assert main(["experiment", "compression", "--out", str(out), "--config", str(cfg), "--size", "32",
                 "--max-images", "6", "--prune", "0", "0.9", "--no-shift", "--threads", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["encoder"]["name"] == "efficientnet_lite0" and res["channels"] == 1280
    assert res["config"]["random_seeds"] == 2 and [r["k"] for r in res["rows"]] == [1280, 128]
    assert "wrote" in capsys.readouterr().out
    out2 = tmp_path / "ood"
    assert main(["experiment", "ood", "--out", str(out2), "--size", "32", "--max-images", "6",
                 "--corruptions", "fog", "--severities", "2", "--keep", "3", "--no-figure",
                 "--cache-dir", str(out / "cache")]) == 0
    res2 = json.loads((out2 / "results.json").read_text())
    assert res2["figure_4c"] is None and list(res2["per_corruption"]) == ["fog"]
