"""Hybrid attention head (Sec. 3.5, C.9): model, training/resume, token locality, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from adjinv.cli import main
from adjinv.errors import AdjinvError
from adjinv.paper.data.labelled import LabelledSet, embedded_labelled_set, image_folder
from adjinv.paper.heads.attention import (
    HeadTrainConfig,
    HybridAttentionClassifier,
    HybridConfig,
    load_head,
    token_peak_distance,
    train_head,
)
from conftest import smooth_image, staged_from_sequential, tiny_relu_cnn


def _data(n_train=6, n_test=3, size=32, classes=3) -> LabelledSet:
    x = smooth_image(size, n_train + n_test, seed=4, dtype=torch.float32)
    y = torch.arange(n_train + n_test) % classes
    return LabelledSet([f"c{k}" for k in range(classes)], x[:n_train], y[:n_train],
                       x[n_train:], y[n_train:], "test data")


def _cfg(steps, **kw) -> HeadTrainConfig:
    model = HybridConfig(heads=2, dim=8, dropout=kw.pop("dropout", 0.1))
    return HeadTrainConfig(steps=steps, lr=1e-2, batch_size=4, checkpoint_every=1, model=model, **kw)


@pytest.fixture
def enc32():
    return staged_from_sequential(tiny_relu_cnn(seed=0))


def test_tokens_are_row_major_and_width_c(enc32):
    m = HybridAttentionClassifier(16, 4, HybridConfig(heads=4))
    a = torch.randn(2, 16, 3, 5)
    tok = m.tokens(a)
    assert tok.shape == (2, 15, 16)
    for t in range(15):
        assert torch.equal(tok[:, t], a[:, :, t // 5, t % 5])
    states = m.token_states(a)
    assert len(states) == 3 and all(s.shape == (2, 15, 16) for s in states)
    assert m(a).shape == (2, 4)
    # only the head's own parameters: 3 blocks + final norm + linear, no embedding at width C_L
    assert isinstance(m.embed, torch.nn.Identity)


def test_bad_architecture_messages():
    with pytest.raises(AdjinvError, match="do not divide the token width 1280"):
        HybridAttentionClassifier(1280, 5, HybridConfig(heads=3))
    m = HybridAttentionClassifier(16, 3, HybridConfig(heads=2))
    with pytest.raises(AdjinvError, match=r"expects the deepest map \(B, 16, h, w\)"):
        m(torch.randn(1, 8, 2, 2))


def test_train_head_learns_and_resume_is_bit_identical(enc32, tmp_path):
    data = _data()
    full = train_head(enc32, data, _cfg(4))
    ck = tmp_path / "head.safetensors"
    part = train_head(enc32, data, _cfg(2), checkpoint=ck)
    assert part.step == 2
    resumed = train_head(enc32, data, _cfg(4), checkpoint=ck, resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.losses == full.losses and len(full.losses) == 4
    assert full.train_accuracy is not None and 0 <= full.test_accuracy <= 1
    model, meta, _ = load_head(ck, enc32)
    assert meta["step"] == 4 and meta["complete"] and meta["classes"] == data.classes
    assert meta["accuracy"]["train"] == full.train_accuracy
    for k, v in model.state_dict().items():
        assert torch.equal(v, a[k])


def test_float64_head_round_trip(tiny_enc, tmp_path):
    data = _data()
    data.train_images, data.test_images = data.train_images.double(), data.test_images.double()
    ck = tmp_path / "head.safetensors"
    res = train_head(tiny_enc, data, _cfg(1), checkpoint=ck)
    model, _, _ = load_head(ck, tiny_enc)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, res.model.state_dict()[k])


def test_resume_refuses_other_settings_and_encoders(enc32, tmp_path):
    data = _data()
    ck = tmp_path / "head.safetensors"
    train_head(enc32, data, _cfg(1), checkpoint=ck)
    with pytest.raises(AdjinvError, match="differs in lr"):
        train_head(enc32, data, HeadTrainConfig(steps=2, lr=0.5, batch_size=4, model=_cfg(1).model),
                   checkpoint=ck, resume=True)
    other = _data()
    other.train_images = other.train_images.flip(-1)
    with pytest.raises(AdjinvError, match="labelled data"):
        train_head(enc32, other, _cfg(2), checkpoint=ck, resume=True)
    enc_b = staged_from_sequential(tiny_relu_cnn(seed=1))
    with pytest.raises(AdjinvError, match="other weights"):
        load_head(ck, enc_b)
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    with pytest.raises(AdjinvError, match="truncated or corrupt"):
        load_head(tmp_path / "junk.safetensors", enc32)


def test_classify_uses_frozen_encoder(enc32):
    data = _data()
    res = train_head(enc32, data, _cfg(2, dropout=0.0))
    x = enc32.normalize(data.test_images)
    z = res.model.classify(enc32, x)
    assert z.shape == (3, 3)
    assert all(p.requires_grad for p in enc32.parameters())


def _bump_maps(h, w, size, shift=(0, 0)):
    """Token t's map: a Gaussian bump (σ = 1.5 px) at the centre of the cell of token t
    shifted by ``shift`` cells (wrapping around)."""
    s = size // h
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                            torch.arange(size, dtype=torch.float64), indexing="ij")
    maps = torch.zeros(1, h * w, 3, size, size, dtype=torch.float64)
    for t in range(h * w):
        i, j = (t // w + shift[0]) % h, (t % w + shift[1]) % w
        cy, cx = i * s + (s - 1) / 2, j * s + (s - 1) / 2
        maps[0, t] = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2))
    return maps


def test_token_peak_distance_on_known_maps():
    tp = token_peak_distance(_bump_maps(4, 4, 64), (4, 4))
    assert torch.allclose(tp.distance, torch.zeros(1, 16, dtype=torch.float64), atol=0.1)
    assert tp.own_cell.all() and (tp.own_energy > 0.99).all()
    assert (tp.shuffled >= 0.9).all() and (tp.shuffled_energy < 0.01).all()
    assert tp.window == 16
    tp2 = token_peak_distance(_bump_maps(4, 4, 64, shift=(0, 1)), (4, 4), window=1)
    # a one-cell shift (with wrap-around at the last column): distance 1 or 3 cells
    d = tp2.distance[0].view(4, 4)
    assert torch.allclose(d[:, :3], torch.full((4, 3), 1.0, dtype=torch.float64), atol=0.1)
    assert torch.allclose(d[:, 3], torch.full((4,), 3.0, dtype=torch.float64), atol=0.1)
    assert torch.allclose(tp2.distance_px, tp2.distance * 16)
    assert not tp2.own_cell.any()
    with pytest.raises(AdjinvError, match="do not fill a 3x3 grid"):
        token_peak_distance(_bump_maps(4, 4, 64), (3, 3))


def test_image_folder_split(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("cat", 4), ("dog", 2)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            arr = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    d = image_folder(tmp_path, 32, test_fraction=0.25, seed=0)
    assert d.classes == ["cat", "dog"] and d.size == 32
    assert d.train_labels.tolist().count(0) == 3 and d.test_labels.tolist().count(0) == 1
    assert d.train_labels.tolist().count(1) == 2  # round(0.25 * 2) = 0 test images
    d2 = image_folder(tmp_path, 32, test_fraction=0.25, seed=0)
    assert torch.equal(d.train_images, d2.train_images)
    (tmp_path / "only").mkdir()
    with pytest.raises(AdjinvError, match="at least two class sub-folders"):
        image_folder(tmp_path / "only", 32)


def test_embedded_labelled_set_is_deterministic():
    a = embedded_labelled_set(32, train_per_class=2, test_per_class=1)
    b = embedded_labelled_set(32, train_per_class=2, test_per_class=1)
    assert a.classes == ["chelsea", "coffee", "astronaut", "rocket", "motorcycle"]
    assert a.train_images.shape == (10, 3, 32, 32) and a.test_images.shape == (5, 3, 32, 32)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_images, b.test_images)
    assert a.train_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert "sanity check" in a.description
    # test crops are different crops, not copies of training ones
    assert not any(torch.equal(a.test_images[0], t) for t in a.train_images)


def test_cli_train_head_and_experiment(tmp_path, capsys):
    ck = tmp_path / "head.safetensors"
    args = ["train-head", "--out", str(ck), "--size", "64", "--dim", "16", "--heads", "2",
            "--train-per-class", "2", "--test-per-class", "1", "--checkpoint-every", "1"]
    assert main([*args, "--steps", "1"]) == 0
    assert "accuracy train" in capsys.readouterr().out
    assert main([*args, "--steps", "2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--steps", "2", "--resume"]) == 0
    out = tmp_path / "att"
    assert main(["experiment", "attention", "--head", str(ck), "--out", str(out),
                 "--num-images", "1"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["size"] == 64 and r["grid"] == [2, 2] and r["token_blocks"] == [0, 2]
    assert r["head"]["step"] == 2
    for b in ("0", "2"):
        s = r["summary"][b]
        assert s["distance_tokens"]["n"] == 4 and s["shuffled_tokens"]["mean"] > 0
        assert 0 <= s["own_energy"]["mean"] <= 1
    img = r["images"][0]
    d = out / img["image"]
    for f in [*img["files"].values(), *(v["file"] for v in img["layers"].values()),
              *(v["file"] for v in img["tokens"].values())]:
        assert (d / f).is_file(), f
    assert len(img["tokens"]["2"]["tokens"]) == 4
    assert (out / "index.html").is_file() and not list(out.rglob("*.tmp"))
    assert main(["experiment", "attention", "--head", str(ck), "--out", str(out),
                 "--token-blocks", "7"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_runner_on_a_tiny_encoder_with_split(enc32, tmp_path):
    from adjinv.paper.runners.attention import AttentionConfig, run_attention

    torch.manual_seed(0)
    head = HybridAttentionClassifier(16, 3, HybridConfig(heads=2, dim=8))
    imgs = {"a": smooth_image(40, 1, seed=1)[0], "b": smooth_image(48, 1, seed=2)[0]}
    cfg = AttentionConfig(size=32, token_blocks=[1, -1], split=True)
    r = run_attention(enc32, None, "identity", head, {"source": "test"}, imgs, tmp_path, cfg)
    assert r["grid"] == [4, 4] and r["token_blocks"] == [1, 2]
    assert r["summary"]["1"]["distance_tokens"]["n"] == 32
    for img in r["images"]:
        d = tmp_path / img["image"]
        assert all((d / v["split_file"]).is_file() for v in img["layers"].values())
        assert (d / img["files"]["logit_split"]).is_file()
        toks = img["tokens"]["2"]["tokens"]
        assert [t["grid"] for t in toks[:5]] == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
        assert all(t["shuffled_tokens"] >= 0 and 0 <= t["own_energy"] <= 1 for t in toks)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(r["summary"]))
