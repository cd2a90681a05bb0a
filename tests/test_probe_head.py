"""The per-dataset probe head of fg-paradox / ecr (C.2) and the attention detection set."""

from __future__ import annotations

import pytest
import torch

from adjinv.errors import AdjinvError
from adjinv.images.photos import HELDOUT, TRAIN
from adjinv.paper.data.composites import composite_set
from adjinv.paper.data.labelled import (
    DETECTION_TEST_OBJECTS,
    DETECTION_TRAIN_OBJECTS,
    composite_detection_set,
)
from adjinv.paper.data.masks import open_masked
from adjinv.paper.heads.probe import LinearProbe
from adjinv.paper.runners.ecr import ECRConfig, run_ecr
from adjinv.paper.runners.fg_paradox import FGParadoxConfig, run_fg_paradox
from adjinv.paper.runners.probe_head import gap_features, probe_encoder, with_linear_head
from conftest import random_lacs, staged_from_sequential, tiny_relu_cnn


@pytest.fixture(scope="module")
def tiny32():
    enc = staged_from_sequential(tiny_relu_cnn(seed=0))
    return enc, random_lacs(enc)


def test_probe_subset_never_holds_a_scored_composite():
    probe = composite_set("probe")
    scored = composite_set("fg") + composite_set("ecr")
    assert len(probe) == 60
    assert not {c.name for c in probe} & {c.name for c in scored}
    for c in probe:  # no image of the probe split equals a scored one
        assert all(not torch.equal(c.image, s.image) for s in scored)
    # each photo appears only on backgrounds it never has in the scored fg set
    fg_pairs = {(c.photo, c.background) for c in composite_set("fg")}
    assert not {(c.photo, c.background) for c in probe} & fg_pairs
    assert {c.photo for c in probe} == {c.photo for c in composite_set("fg")}


def test_with_linear_head_is_exact_and_leaves_the_encoder_alone(tiny32):
    enc, _ = tiny32
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    w, b = torch.randn(3, 16), torch.randn(3)
    pe = with_linear_head(enc, w, b, ["a", "b", "c"])
    x = torch.rand(2, 3, 32, 32)
    g = enc.forward_stages(enc.normalize(x))[-1].mean(dim=(-2, -1))
    with torch.no_grad():
        assert torch.allclose(pe(enc.normalize(x)), g @ w.T + b, atol=1e-5)
    assert pe.class_name(2) == "c" and pe.name.endswith("+probe")
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert enc.head.num_classes == 5
    with pytest.raises(AdjinvError):
        with_linear_head(enc, torch.randn(3, 15), b, ["a", "b", "c"])


def test_probe_encoder_reproduces_the_probe(tiny32):
    enc, _ = tiny32
    scored = open_masked("composites", "test", 32)
    pe, rec = probe_encoder(enc, "composites", 32, scored=scored)
    train = open_masked("composites:probe", "test", 32)
    imgs = [train[i].image for i in range(len(train))]
    feats = gap_features(enc, imgs)
    labels = torch.tensor([train[i].label for i in range(len(train))])
    probe = LinearProbe(len(train.classes)).fit(feats, labels)
    with torch.no_grad():
        z = pe(enc.normalize(torch.stack(imgs)))
    assert torch.allclose(z.double(), probe.logits(feats), atol=1e-3)
    assert rec["n_train"] == 60 and rec["classes"] == train.classes
    assert rec["train_accuracy"] == pytest.approx(probe.accuracy(feats, labels))
    assert 0 <= rec["scored_accuracy"] <= 1
    with pytest.raises(AdjinvError, match="training split"):
        probe_encoder(enc, "masks:a:b", 32)


def test_fg_paradox_and_ecr_with_the_probe_head(tiny32, tmp_path):
    enc, lacs = tiny32
    cfg = FGParadoxConfig(size=32, max_images=2, randomize=[1], head="probe", n_boot=50)
    res = run_fg_paradox(cfg, tmp_path / "fg", encoders=[enc], lacs=[lacs])
    per = res["encoders"][0]
    assert per["encoder"] == "custom+probe" and per["head"]["head"] == "probe"
    names = per["head"]["classes"]
    assert all(r["class_name"] in names for r in per["images"])  # k is a probe class
    assert "linear probe" in (tmp_path / "fg" / "table.md").read_text()
    with pytest.raises(AdjinvError, match="head must be"):
        run_fg_paradox(FGParadoxConfig(size=32, max_images=2, head="x"), tmp_path / "x",
                       encoders=[enc], lacs=[lacs])
    ecfg = ECRConfig(size=32, max_images=3, randomize=[1], random_seeds=2, head="probe")
    er = run_ecr(ecfg, tmp_path / "ecr", encoder=enc, lacs=lacs)
    assert er["head"]["head"] == "probe" and er["class"]["name"] in er["head"]["classes"]
    assert "linear probe" in (tmp_path / "ecr" / "table.md").read_text()


def test_detection_set_tests_on_new_photos_and_textures():
    d = composite_detection_set(32, train_per_class=5, test_per_class=5)
    assert d.classes == ["object", "texture"]
    assert d.train_labels.bincount().tolist() == [5, 5] and d.test_labels.bincount().tolist() == [5, 5]
    assert set(DETECTION_TRAIN_OBJECTS) <= set(TRAIN)  # only training-split photos train
    assert set(DETECTION_TEST_OBJECTS) <= set(HELDOUT)
    assert not set(HELDOUT) & set(DETECTION_TRAIN_OBJECTS)
    # no test image is a training image
    flat_tr = d.train_images.flatten(1)
    assert torch.cdist(d.test_images.flatten(1), flat_tr).min() > 1.0
    # objects are pasted: an object image differs from the texture-only images
    assert "held-out photos" in d.description


def test_attention_cli_on_the_detection_set(tmp_path, monkeypatch):
    """--labelled-set detection: the head trains on it and the held-out object images are
    visualised; table.md carries the locality against the shuffled token."""
    import json

    from adjinv.cli import main

    out = tmp_path / "att"
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "attention", "--labelled-set", "detection", "--train-per-class", "2",
                 "--test-per-class", "3",
                 "--steps", "1", "--dim", "16", "--heads", "2", "--blocks", "2", "--size", "64",
                 "--num-images", "1", "--control-untrained", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert "held-out photos" in r["head"]["data"]["description"]
    assert [i["image"] for i in r["images"]] == ["test00"]  # an object image of the test split
    assert r["grid"] == [2, 2]
    for b, s in r["summary"].items():
        toks = r["images"][0]["tokens"][b]["tokens"]
        closer = sum(t["distance_tokens"] < t["shuffled_tokens"] for t in toks) / len(toks)
        assert s["closer_than_shuffled"] == pytest.approx(closer)
    ctrl = r["control_untrained"]
    assert set(ctrl) == set(r["summary"]) and r["environment"]["threads"] >= 1
    assert all(ctrl[b]["distance_tokens"]["n"] == 4 for b in ctrl)
    assert any(ctrl[b]["own_energy"]["mean"] != r["summary"][b]["own_energy"]["mean"] for b in ctrl)
    table = (out / "table.md").read_text()
    assert "closer than shuffled" in table and "test00" in table and "untrained head" in table
    assert not any(v.startswith("/") for v in (r["lacs"], r["head"]["source"]))
