"""Dataset loaders on tiny fake copies of the official layouts, the restricted CIFAR
unpickler, the embedded LFW default, and the resumable feature cache."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from adjinv.errors import AdjinvError
from adjinv.paper.data.datasets import (
    CIFAR100,
    CIFAR100C,
    CorruptedDataset,
    ImageFolder,
    LFWFaces,
    OxfordPets,
    StanfordDogs,
    first_per_class,
    open_dataset,
    open_shifted,
    safe_unpickle,
    stratified_split,
)
from adjinv.paper.features import extract_gap_features
from conftest import staged_from_sequential, tiny_relu_cnn


def _png(path, seed, size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def _jpg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (18, 22, 3), dtype=np.uint8)).save(path, format="JPEG")


@pytest.fixture
def cifar_root(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 4)):
        batch = {b"filenames": [f"{i}.png".encode() for i in range(n)],
                 b"fine_labels": [i % 3 for i in range(n)], b"coarse_labels": [0] * n,
                 b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8)}
        (root / split).write_bytes(pickle.dumps(batch, protocol=2))
    (root / "meta").write_bytes(pickle.dumps(
        {b"fine_label_names": [b"apple", b"bear", b"cloud"], b"coarse_label_names": [b"x"]}, protocol=2))
    return tmp_path


def test_cifar100(cifar_root):
    ds = CIFAR100(cifar_root, "train", size=16)
    assert len(ds) == 6 and ds.classes == ["apple", "bear", "cloud"]
    img, y = ds[4]
    assert img.shape == (3, 16, 16) and img.dtype == torch.float32 and y == 1
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    raw = safe_unpickle(cifar_root / "cifar-100-python" / "test")
    ref = torch.from_numpy(raw[b"data"][1].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(CIFAR100(cifar_root, "test", size=32)[1][0], ref, atol=1e-6)
    d = ds.describe()
    assert d["split"] == "train" and d["size"] == 16 and d["n"] == 6


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path):
    bad = tmp_path / "cifar-100-python"
    bad.mkdir()
    (bad / "train").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(AdjinvError, match="not allowed"):
        CIFAR100(tmp_path, "train")
    (bad / "test").write_bytes(b"not a pickle")
    with pytest.raises(AdjinvError, match="cannot read"):
        CIFAR100(tmp_path, "test")


def test_cifar100c(tmp_path):
    root = tmp_path / "CIFAR-100-C"
    root.mkdir()
    data = np.zeros((10, 32, 32, 3), dtype=np.uint8)
    for s in range(5):
        data[2 * s: 2 * s + 2] = 40 * (s + 1)  # the severity is readable from the pixels
    np.save(root / "fog.npy", data)
    np.save(root / "labels.npy", np.arange(10) % 2)
    ds = CIFAR100C(tmp_path, "fog", 3, size=8)
    assert len(ds) == 2
    img, _ = ds[0]
    assert img.shape == (3, 8, 8) and float(img.mean()) == pytest.approx(120 / 255, abs=1e-6)
    with pytest.raises(AdjinvError, match="corruptions found in .*fog"):
        CIFAR100C(tmp_path, "snow", 1)
    sets = open_shifted(f"cifar100c:{tmp_path}", None, 8)
    assert [s.severity for s in sets] == [1, 2, 3, 4, 5] and sets[0].corruption == "fog"
    assert len(open_shifted(f"cifar100c:{root}:fog:2", None, 8)) == 1


def test_stanford_dogs(tmp_path):
    from scipy.io import savemat

    files = ["n02085620-Chihuahua/n02085620_1.jpg", "n02085620-Chihuahua/n02085620_2.jpg",
             "n02085782-Japanese_spaniel/n02085782_1.jpg"]
    for i, f in enumerate(files):
        _jpg(tmp_path / "Images" / f, i)
    (tmp_path / "lists").mkdir()
    for split, sel in (("train", [0, 2]), ("test", [1])):
        cell = np.empty((len(sel), 1), dtype=object)
        for j, i in enumerate(sel):
            cell[j, 0] = np.array([files[i]])
        savemat(tmp_path / "lists" / f"{split}_list.mat",
                {"file_list": cell, "labels": np.array([[1], [2]])[: len(sel)]})
    tr = StanfordDogs(tmp_path, "train", size=12)
    assert len(tr) == 2 and tr.classes == ["Chihuahua", "Japanese_spaniel"]
    assert tr.labels == [0, 1] and tr[1][0].shape == (3, 12, 12)
    assert len(StanfordDogs(tmp_path, "test", size=12)) == 1
    with pytest.raises(AdjinvError, match="Images"):
        StanfordDogs(tmp_path / "nope")


def test_oxford_pets(tmp_path):
    names = ["Abyssinian_1", "Abyssinian_2", "basset_hound_1", "basset_hound_2"]
    for i, n in enumerate(names):
        _jpg(tmp_path / "images" / f"{n}.jpg", i)
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "trainval.txt").write_text("#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\n"
                                      "basset_hound_1 2 2 1\n")
    (ann / "test.txt").write_text("Abyssinian_2 1 1 1\nbasset_hound_2 2 2 1\n")
    tr = OxfordPets(tmp_path, "train", size=10)
    assert tr.classes == ["Abyssinian", "basset_hound"] and tr.labels == [0, 1]
    te = open_dataset(f"oxford_pet:{tmp_path}", "test", 10)
    assert len(te) == 2 and te[0][0].shape == (3, 10, 10)


def test_image_folder_split_and_presplit(tmp_path):
    for c in ("cat", "dog"):
        for i in range(5):
            _png(tmp_path / "flat" / c / f"{i}.png", i)
            _png(tmp_path / "pre" / "train" / c / f"{i}.png", i)
        _png(tmp_path / "pre" / "test" / c / "x.png", 9)
    tr = ImageFolder(tmp_path / "flat", "train", size=8, test_fraction=0.4, seed=1)
    te = ImageFolder(tmp_path / "flat", "test", size=8, test_fraction=0.4, seed=1)
    assert len(tr) == 6 and len(te) == 4 and not set(tr.files) & set(te.files)
    assert tr.classes == ["cat", "dog"] and tr[0][0].shape == (3, 8, 8)
    assert len(ImageFolder(tmp_path / "pre", "test", size=8)) == 2
    with pytest.raises(AdjinvError, match="class sub-folders"):
        ImageFolder(tmp_path / "flat" / "cat", "train")


def test_lfw_embedded_default():
    tr, te = LFWFaces("train", size=32), LFWFaces("test", size=32)
    assert len(tr) + len(te) == 200 and len(te) == 100
    assert sorted(tr.labels).count(0) == 50
    assert not set(tr.indices) & set(te.indices)
    img, y = te[0]
    assert img.shape == (3, 32, 32) and torch.equal(img[0], img[2]) and y in (0, 1)
    assert te.describe()["transform"].startswith("25x25 grey")


def test_composite_transfer_sets():
    """The embedded labelled composites: balanced classes, a disjoint deterministic split,
    and no held-out photo (adjinv.images.photos) anywhere in them."""
    from adjinv.images.photos import HELDOUT
    from adjinv.paper.data.datasets import CompositeObjects, open_dataset

    for label, classes in (("object", 3), ("background", 5)):
        tr = open_dataset(f"composites:{label}", "train", 24)
        te = CompositeObjects("test", size=24, label=label)
        assert len(tr.classes) == classes and len(tr) == len(te) == 60
        assert all(tr.labels.count(c) == 60 // classes for c in range(classes))
        assert not {s[2] for s in tr.specs} & {s[2] for s in te.specs}
        assert not {s[0] for s in tr.specs + te.specs} & set(HELDOUT)
        img, y = te[0]
        assert img.shape == (3, 24, 24) and 0 <= float(img.min()) <= float(img.max()) <= 1
        assert torch.equal(img, CompositeObjects("test", size=24, label=label)[0][0])
        assert tr.describe()["dataset"] == f"composites:{label}"
    assert open_dataset("composites", "train", 24).label == "object"
    with pytest.raises(AdjinvError, match="object"):
        CompositeObjects("train", label="colour")


def test_split_helpers_and_corrupted_wrapper():
    tr, te = stratified_split([0] * 5 + [1] * 5, 0.4, seed=0)
    assert len(te) == 4 and sorted(tr + te) == list(range(10))
    assert stratified_split([0] * 5 + [1] * 5, 0.4, seed=0) == (tr, te)
    ds = LFWFaces("test", size=16)
    sub = first_per_class(ds, 4)
    assert len(sub) == 4 and sorted(sub.labels) == [0, 0, 1, 1]
    cd = CorruptedDataset(sub, "gaussian_noise", 2, seed=3)
    a, b = cd[1][0], cd[1][0]
    assert torch.equal(a, b) and not torch.equal(a, sub[1][0])
    assert cd.describe()["corruption"] == "gaussian_noise"
    assert len(open_shifted("corrupt:all:2", sub, 16)) == 15
    with pytest.raises(AdjinvError, match="unknown"):
        open_shifted("rain:1", sub, 16)
    with pytest.raises(AdjinvError, match="unknown dataset"):
        open_dataset("mnist:x", "train", 16)


class _Flaky:
    """A dataset that fails at one index on its first pass (an interrupted run)."""

    def __init__(self, n=10, fail_at=None, tag="a"):
        self.n, self.fail_at, self.tag = n, fail_at, tag
        g = torch.Generator().manual_seed(0)
        self.imgs = torch.rand(n, 3, 32, 32, generator=g)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise KeyboardInterrupt
        return self.imgs[i], i % 2

    def describe(self):
        return {"dataset": "flaky", "n": self.n, "tag": self.tag}


def test_feature_cache_resumes_after_interruption(tmp_path):
    enc = staged_from_sequential(tiny_relu_cnn(seed=0))
    ref = extract_gap_features(enc, _Flaky(), batch_size=3)
    assert ref.features.shape == (10, 16) and ref.labels.tolist() == [i % 2 for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        extract_gap_features(enc, _Flaky(fail_at=6), batch_size=2, shard_size=4, cache_dir=tmp_path)
    (folder,) = list(tmp_path.iterdir())
    assert len(list(folder.glob("shard-*.safetensors"))) == 1  # the finished shard survived
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["key"]["encoder_hash"] == enc.weights_hash()
    assert meta["key"]["dataset"]["tag"] == "a"
    ticks = []
    resumed = extract_gap_features(enc, _Flaky(), batch_size=2, shard_size=99, cache_dir=tmp_path,
                                   progress=lambda d, t: ticks.append((d, t)))
    assert resumed.computed == 6  # shard 0-4 came from disk; the stored shard size wins
    assert ticks[-1] == (10, 10)
    assert torch.allclose(resumed.features, ref.features, atol=1e-6)
    again = extract_gap_features(enc, _Flaky(), cache_dir=tmp_path)
    assert again.computed == 0 and torch.equal(again.features, resumed.features)
    # another dataset description or other weights: another cache entry
    extract_gap_features(enc, _Flaky(tag="b"), cache_dir=tmp_path)
    with torch.no_grad():
        enc.head.linear.weight.add_(1.0)
    extract_gap_features(enc, _Flaky(), cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3
