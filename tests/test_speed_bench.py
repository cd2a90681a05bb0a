"""benchmarks/speed.py: its naive baseline is the cascade, its FLOP count scales with the
image, and a smoke run writes one row per method to JSON and Markdown. No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from adjinv.core.inverter import AdjointInverter
from conftest import random_lacs, smooth_image, staged_from_sequential, tiny_relu_cnn

SPEED = Path(__file__).resolve().parent.parent / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("adjinv_bench_speed", SPEED)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_naive_loop_equals_cascade_float64(speed, tiny_enc):
    lacs = random_lacs(tiny_enc)
    inv = AdjointInverter(tiny_enc, lacs, chunk_size=3)
    x = smooth_image(32, batch=2, dtype=torch.float64)
    last = tiny_enc.num_stages - 1
    ref = inv.invert(x, stages=[last]).x_hat[last]
    naive = speed.naive_synthesis(tiny_enc, lacs, inv.prepare(x), last)
    assert ((naive - ref).norm() / ref.norm()).item() < 1e-10
    # the partial synthesis (error check and --channels-limit) agrees too
    idx = torch.tensor([1, 4, 9])
    part = speed.cascade_partial(inv, x, last, idx)
    naive_part = speed.naive_synthesis(tiny_enc, lacs, inv.prepare(x), last, idx)
    assert ((naive_part - part).norm() / part.norm()).item() < 1e-10


def test_flop_count_scales_with_area(speed, tiny_enc):
    last = tiny_enc.num_stages - 1
    small = speed.forward_flops(tiny_enc, smooth_image(32, dtype=torch.float64), last)
    big = speed.forward_flops(tiny_enc, smooth_image(64, dtype=torch.float64), last)
    full = speed.forward_flops(tiny_enc, smooth_image(32, dtype=torch.float64), None)
    assert small > 0
    assert 3.5 < big / small < 4.5
    assert full > small  # the head's matmul is counted


def test_cascade_variants_from_flags(speed):
    assert [m.name for m in speed.cascade_variants({"engine": None, "precision": None})] == ["cascade"]
    ms = speed.cascade_variants({"engine": ["auto", "autograd"], "precision": ["float32"]})
    assert [m.name for m in ms] == ["cascade[auto,float32]", "cascade[autograd,float32]"]
    assert ms[1].kwargs == {"engine": "autograd", "precision": "float32"}


def test_smoke_run_writes_a_row_per_method(speed, tmp_path, monkeypatch, capsys):
    def tiny(name, random_init=False):
        enc = staged_from_sequential(tiny_relu_cnn(seed=0))
        enc.name = name
        return enc

    monkeypatch.setattr(speed, "load_encoder", tiny)
    out, md = tmp_path / "speed_test.json", tmp_path / "BENCHMARKS.md"
    res = speed.main(["--encoders", "tiny", "--size", "32", "--batch", "1", "2", "--channels-limit", "2",
                      "--repeats", "1", "--warmup", "0", "--ref-channels", "4", "--scorecam-batch", "8",
                      "--out", str(out), "--markdown", str(md)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["cascade", "naive", "scorecam"] * 2
    assert res["rows"] == rows
    for r in rows:
        assert r["partial"] and r["channels_timed"] == 2 and len(r["times_s"]) == 1
        assert r["flops"] > 0 and r["seconds_per_image"] > 0
        if r["method"] == "scorecam":
            assert r["rel_error"] is None
        else:
            assert r["rel_error"] < 1e-4 and r["rel_error_channels"] == 4
    text = md.read_text()
    for m in ("cascade (partial)", "naive (partial)", "scorecam (partial)"):
        assert text.count(f"| {m} | 2 of ") == 2  # one row per batch size in the main table
    assert "speed_test.json" in text and rows[0]["device"] in text
    assert "| tiny | 32 | 2 | cascade (partial) |" in capsys.readouterr().out


def test_inverter_options_give_one_cascade_row_each(speed, monkeypatch, capsys):
    if not (speed.inverter_accepts("engine") and speed.inverter_accepts("precision")):
        pytest.skip("this AdjointInverter has no engine/precision options")
    monkeypatch.setattr(speed, "load_encoder",
                        lambda name, random_init=False: staged_from_sequential(tiny_relu_cnn(seed=0)))
    res = speed.main(["--encoders", "tiny", "--size", "32", "--channels-limit", "2", "--repeats", "1",
                      "--warmup", "0", "--ref-channels", "4", "--methods", "cascade", "naive",
                      "--engine", "auto", "autograd", "--precision", "float32"])
    rows = res["rows"]
    assert [r["method"] for r in rows] == ["cascade[auto,float32]", "cascade[autograd,float32]", "naive"]
    assert rows[1]["options"] == {"engine": "autograd", "precision": "float32"}
    assert all(r["rel_error"] < 1e-4 for r in rows)
    capsys.readouterr()


def test_ablation_flags_name_their_rows_and_are_restored(speed, monkeypatch, capsys):
    from adjinv.core import adjoint

    monkeypatch.setattr(speed, "load_encoder",
                        lambda name, random_init=False: staged_from_sequential(tiny_relu_cnn(seed=0)))
    before = adjoint.FP16_WEIGHT_TERMS, adjoint.MASK_AS_BITS
    seen = []
    real = speed.bench_config

    def spy(*a, **kw):
        seen.append((adjoint.FP16_WEIGHT_TERMS, adjoint.MASK_AS_BITS))
        return real(*a, **kw)

    monkeypatch.setattr(speed, "bench_config", spy)
    res = speed.main(["--encoders", "tiny", "--size", "32", "--channels-limit", "2", "--repeats", "1",
                      "--warmup", "0", "--ref-channels", "4", "--methods", "cascade",
                      "--fp16-weight-terms", "1", "--mask-product"])
    assert seen == [(1, False)]
    assert res["rows"][0]["method"] == "cascade[fp16 weight terms=1][masks by product]"
    assert res["rows"][0]["options"] == {"fp16_weight_terms": 1, "mask_product": True}
    assert before == (adjoint.FP16_WEIGHT_TERMS, adjoint.MASK_AS_BITS)
    capsys.readouterr()
