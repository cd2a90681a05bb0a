"""The photo corpus builder and loader (adjinv.paper.data.corpus), on synthetic packages:
no apt-get, no download."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adjinv.errors import AdjinvError
from adjinv.paper.data import corpus as C

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: 16.04/lake_by_A.jpg
Copyright: 2018, A
License: CC-BY-4.0

Files: debian/*
Copyright: 2019 Packager
License: MIT
"""


def _jpeg(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
    buf = io.BytesIO()
    coarse.resize((w, h), Image.Resampling.BILINEAR).save(buf, format="JPEG")
    return buf.getvalue()


def test_dep5_licence_takes_the_last_matching_stanza():
    assert C.dep5_licence(COPYRIGHT, "usr/share/backgrounds/lake_by_A.jpg") == ("CC-BY-4.0", "2018, A")
    assert C.dep5_licence(COPYRIGHT, "usr/share/backgrounds/other.jpg") == ("GPL-2+", "2020 Someone")
    assert C.dep5_licence("no stanzas here", "a.jpg") == ("unknown", "")


def test_eet_archive_gives_its_largest_jpeg():
    blob = b"EET\x00" + b"\x01" * 50 + _jpeg(16, 12, 0) + b"junk\xff\xd8\xffjunk" + _jpeg(40, 30, 1)
    with Image.open(io.BytesIO(C.eet_largest_jpeg(blob))) as im:
        assert im.size == (40, 30)
    with pytest.raises(AdjinvError, match="no JPEG"):
        C.eet_largest_jpeg(b"EET no image")


def test_near_duplicates_finds_the_same_photo_at_two_sizes():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(96, 128),
                                        mode="bilinear")[0]
    small = torch.nn.functional.interpolate(a[None], size=(48, 64), mode="area")[0]
    other = torch.rand(3, 96, 128, generator=g)
    pairs = C.near_duplicates({"a": a, "a_small": small, "other": other})
    assert [(p[0], p[1]) for p in pairs] == [("a", "a_small")]


def _fake_packages(monkeypatch, tmp_path: Path, files: dict[str, bytes]) -> None:
    def download(package: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        deb = into / f"{package}_1.0-1_all.deb"
        deb.write_bytes(b"fake")
        return deb

    def unpack(deb: Path, into: Path) -> None:
        pkg = deb.name.split("_")[0]
        for member, data in files.items():
            p = into / member
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        doc = into / "usr/share/doc" / pkg / "copyright"
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(COPYRIGHT)

    monkeypatch.setattr(C, "_apt_download", download)
    monkeypatch.setattr(C, "_unpack", unpack)


def test_build_writes_a_tree_and_manifest_and_loading_checks_hashes(monkeypatch, tmp_path):
    files = {"usr/share/backgrounds/lake_by_A.jpg": _jpeg(90, 60, 2),
             "usr/share/backgrounds/hill.jpg": _jpeg(80, 64, 3),
             "usr/share/backgrounds/x.edj": b"EET" + _jpeg(70, 50, 4)}
    _fake_packages(monkeypatch, tmp_path, files)
    sources = (C.Source("lake", "pkg", "usr/share/backgrounds/lake_by_A.jpg", "heldout"),
               C.Source("hill", "pkg", "usr/share/backgrounds/hill.jpg", "train"),
               C.Source("eet", "pkg", "usr/share/backgrounds/x.edj", "validation"))
    root = tmp_path / "corpus"
    entries = C.build_corpus(root, sources, short_side=32, include_embedded=False)
    man = json.loads((root / "manifest.json").read_text())
    assert man["counts"] == {"train": 1, "validation": 1, "heldout": 1}
    lake = next(r for r in man["photos"] if r["name"] == "lake")
    assert lake["licence"] == "CC-BY-4.0" and lake["package_version"] == "1.0-1"
    assert lake["file"] == "heldout/pkg/lake.png" and min(lake["size"]) == 32
    assert lake["source_size"] == [90, 60]
    assert {e.name for e in entries} == {"lake", "hill", "eet"}
    got = C.load_corpus_split(root, "train")
    assert list(got) == ["hill"] and got["hill"].shape[0] == 3 and min(got["hill"].shape[1:]) == 32
    (root / "train/pkg/hill.png").write_bytes((root / "heldout/pkg/lake.png").read_bytes())
    with pytest.raises(AdjinvError, match="differs from the manifest"):
        C.load_corpus_split(root, "train")
    with pytest.raises(AdjinvError, match="unknown split"):
        C.load_corpus_split(root, "test")


def test_missing_corpus_and_missing_member_name_the_fix(monkeypatch, tmp_path):
    with pytest.raises(AdjinvError, match="make corpus"):
        C.load_corpus_split(tmp_path, "train")
    _fake_packages(monkeypatch, tmp_path, {})
    with pytest.raises(AdjinvError, match="SOURCES"):
        C.build_corpus(tmp_path / "c", (C.Source("a", "pkg", "usr/a.jpg"),), include_embedded=False)


def test_the_shipped_selection_keeps_the_embedded_held_out_photos_held_out():
    from adjinv.images.photos import HELDOUT, TRAIN, VALIDATION

    names = [s.name for s in C.SOURCES]
    assert len(names) == len(set(names)) >= 60
    assert not set(names) & set(HELDOUT + TRAIN + VALIDATION)
    split = {s: sum(x.split == s for x in C.SOURCES) for s in C.SPLITS}
    assert split["heldout"] >= 5 and split["validation"] >= 10
