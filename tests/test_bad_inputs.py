"""The bad-input catalogue: every way a new user can get the input wrong, through the
command line (in-process ``adjinv.cli.main``) and the public API.

Each CLI case asserts the exit code, one ``adjinv: error:`` line and no traceback, no
partial output (``--out`` absent or unchanged) and nothing written outside ``--out``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from adjinv.cli import main
from adjinv.core.inverter import AdjointInverter
from adjinv.errors import AdjinvError
from adjinv.fileio import PARTIAL_TAG, TMP_TAG, safe_name
from adjinv.images.files import load_image
from adjinv.outdir import LOCK, MARKER
from conftest import random_lacs, smooth_image


# ----------------------------------------------------------------------------- inputs
def photo(path: Path, seed: int = 0, size: tuple[int, int] = (72, 90), fmt: str = "PNG") -> Path:
    """A blocky random RGB picture (structure at every scale the encoder sees)."""
    rng = np.random.default_rng(seed)
    base = rng.random((size[0] // 8 + 1, size[1] // 8 + 1, 3))
    arr = np.kron(base, np.ones((8, 8, 1)))[: size[0], : size[1]]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((arr * 255).astype(np.uint8)).save(path, format=fmt)
    return path


def png_header(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims ``w`` x ``h`` pixels, with no pixel data (a bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


class _Evil:
    """Unpickling this would create a file: proof that a pickle was executed."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def evil_pickle(path: Path, target: Path) -> Path:
    torch.save({"state_dict": _Evil(str(target))}, path)
    return path


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image16(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr.astype(np.uint16)).save(path)
    return path


# ----------------------------------------------------------------------------- harness
def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` except under ``skip``, with its size and mtime."""
    out = {}
    for p in root.rglob("*"):
        if p == skip or skip in p.parents:
            continue
        st = p.lstat()  # folders by name only: a probe file created and removed is no write
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns) if p.is_file() else (-1, 0)
    return out


@dataclass
class Run:
    code: int
    out: str
    err: str
    error_lines: list[str]


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    """Run ``main`` in ``tmp_path/work``; check the universal promises of a run."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def run(argv: list[str], out: Path | None = None) -> Run:
        out = out if out is not None else work / "out"
        before = snapshot(tmp_path, out)
        out_before = (snapshot(out, out / "\0") if out.is_dir() else
                      out.read_bytes() if out.exists() else None)
        capsys.readouterr()
        code = main([str(a) for a in argv])
        cap = capsys.readouterr()
        errors = [ln for ln in cap.err.splitlines() if ln.startswith("adjinv: error")
                  or ln.startswith("adjinv: internal")]
        assert "Traceback" not in cap.err + cap.out
        assert snapshot(tmp_path, out) == before, "something was written outside --out"
        if code != 0:
            assert len(errors) == 1, cap.err
            if out_before is None:
                assert not out.exists(), f"partial output left in {out}"
            elif code == 2:
                now = snapshot(out, out / "\0") if out.is_dir() else out.read_bytes()
                assert now == out_before, "--out changed by a refused run"
        else:
            assert not errors
        if out.is_dir():
            assert not [p for p in out.rglob("*") if p.name.endswith((TMP_TAG, PARTIAL_TAG))]
        return Run(code, cap.out, cap.err, errors)

    run.work = work
    return run


@dataclass(frozen=True)
class Case:
    kind: str
    argv: Callable[[Path], list]  # built in the work folder
    code: int
    message: str


W = "--out"
OUT = "out"
INV = ["invert"]
FAST = ["--size", "32", "--channels", "0"]


def _inv(*extra: object) -> Callable[[Path], list]:
    return lambda w: [*INV, photo(w / "in" / "a.png"), W, OUT, *extra]


def _train(*extra: object) -> Callable[[Path], list]:
    def build(w: Path) -> list:
        photo(w / "imgs" / "a.png")
        return ["train", "--images", w / "imgs", W, OUT, *extra]
    return build


CASES: dict[str, Case] = {
    # --- image files ------------------------------------------------------------------
    "missing-file": Case("image file", lambda w: [*INV, "nope.png", W, OUT], 2, "does not exist"),
    "folder-as-image": Case("image file", lambda w: [*INV, (w / "d").mkdir() or w / "d", W, OUT],
                            2, "is a folder, not an image"),
    "empty-file": Case("image file", lambda w: [*INV, write(w / "e.png", b""), W, OUT], 2,
                       "cannot read image"),
    "truncated-png": Case("image file", lambda w: [
        *INV, write(w / "t.png", photo(w / "full.png").read_bytes()[:200]), W, OUT], 2,
        "cannot read image"),
    "truncated-jpeg": Case("image file", lambda w: [
        *INV, write(w / "t.jpg", photo(w / "f.jpg", fmt="JPEG").read_bytes()[:300]), W, OUT], 2,
        "cannot read image"),
    "random-bytes": Case("image file", lambda w: [
        *INV, write(w / "r.png", np.random.default_rng(0).bytes(4000)), W, OUT], 2,
        "cannot read image"),
    "text-as-png": Case("image file", lambda w: [*INV, write(w / "t.png", b"hello\n" * 50), W, OUT],
                        2, "cannot read image"),
    "decompression-bomb": Case("image file", lambda w: [
        *INV, png_header(w / "bomb.png", 20000, 9100), W, OUT], 2, "decompression bombs"),
    "over-max-pixels": Case("image file", _inv("--max-pixels", "1000"), 2, "--max-pixels 6480"),
    "int32-out-of-range": Case("image file", lambda w: [
        *INV, _save(w / "i.tif", Image.fromarray(
            np.arange(-500, 500 * 63, 32, dtype=np.int32)[:1000].reshape(25, 40))), W, OUT], 2,
        "outside the 16-bit range"),
    "float-out-of-range": Case("image file", lambda w: [
        *INV, _save(w / "f.tif", Image.fromarray(
            np.linspace(0, 7, 1600, dtype=np.float32).reshape(40, 40))), W, OUT], 2,
        "only [0, 1] is unambiguous"),
    "constant-white": Case("image file", lambda w: [
        *INV, _save(w / "w.png", Image.new("RGB", (64, 64), "white")), W, OUT, *FAST], 2,
        "constant"),
    "constant-16bit": Case("image file", lambda w: [
        *INV, image16(w / "w16.png", np.full((64, 64), 65535)), W, OUT, *FAST], 2, "constant"),
    "near-constant-16bit-ripple": Case("image file", lambda w: [
        *INV, image16(w / "r16.png", 65535 - (np.arange(96 * 80).reshape(96, 80) % 97 == 0)),
        W, OUT, *FAST], 2, "constant"),
    # --- invert/demo options -------------------------------------------------------------
    "size-0": Case("option", _inv("--size", "0"), 2, "--size: 0 is out of range"),
    "size-negative": Case("option", _inv("--size", "-5"), 2, "out of range"),
    "size-huge": Case("option", _inv("--size", "100000"), 2, "between 16 and 4096"),
    "size-not-int": Case("option", _inv("--size", "big"), 2, "not an integer"),
    "size-below-stride": Case("option", _inv("--size", "16"), 2, "smaller than the total stride"),
    "chunk-size-0": Case("option", _inv("--chunk-size", "0"), 2, "--chunk-size: 0 is out of range"),
    "chunk-size-negative": Case("option", _inv("--chunk-size", "-3"), 2, "out of range"),
    "chunk-0-channels-0-hang": Case("option", _inv("--chunk-size", "0", "--channels", "0"), 2,
                                    "--chunk-size"),
    "channels-negative": Case("option", _inv("--channels", "-1"), 2, "--channels: -1 is out of range"),
    "max-pixels-0": Case("option", _inv("--max-pixels", "0"), 2, "--max-pixels"),
    "precision-unknown": Case("option", _inv("--precision", "fp64"), 2, "invalid choice"),
    "device-unknown": Case("option", _inv("--device", "quantum"), 2, "not a torch device"),
    "encoder-unknown": Case("option", _inv("--encoder", "vgg99"), 2, "unknown architecture"),
    "weights-missing": Case("option", _inv("--weights", "no.pth"), 2, "does not exist"),
    "lac-missing": Case("option", _inv("--lac", "no.safetensors", *FAST), 2, "no.safetensors"),
    "lac-other-encoder": Case("option", lambda w: [
        *INV, photo(w / "a.png"), W, OUT, "--encoder", "resnet18", "--random-init", "--lac",
        Path(__file__).parents[1] / "src/adjinv/lacs/weights/efficientnet_lite0.lac.safetensors",
        *FAST], 2, "efficientnet_lite0"),
    "unknown-option": Case("option", _inv("--frobnicate"), 2, "unrecognized arguments"),
    "no-images": Case("option", lambda w: [*INV, W, OUT], 2, "required"),
    "no-command": Case("option", lambda w: [], 2, "required"),
    "demo-images-too-many": Case("option", lambda w: ["demo", W, OUT, "--images", "999"], 2,
                                 "out of range"),
    "demo-images-negative": Case("option", lambda w: ["demo", W, OUT, "--images", "-1"], 2,
                                 "out of range"),
    # --- output folder -------------------------------------------------------------------
    "out-is-a-file": Case("output", lambda w: [
        *INV, photo(w / "a.png"), W, write(w / "out", b"mine"), *FAST], 2, "is an existing file"),
    "out-under-a-file": Case("output", lambda w: [
        *INV, photo(w / "a.png"), W, write(w / "f", b"x") / "sub", *FAST], 2, "is a file"),
    "out-user-folder": Case("output", lambda w: [
        *INV, photo(w / "a.png"), W, write(w / "out" / "index.html", b"<p>mine</p>").parent,
        *FAST], 2, "--overwrite"),
    # --- train options -------------------------------------------------------------------
    "train-checkpoint-every-0": Case("train option", _train("--checkpoint-every", "0"), 2,
                                     "--checkpoint-every"),
    "train-batch-size-0": Case("train option", _train("--batch-size", "0"), 2, "--batch-size"),
    "train-lr-nan": Case("train option", _train("--lr", "nan"), 2, "--lr: nan is out of range"),
    "train-lr-inf": Case("train option", _train("--lr", "inf"), 2, "--lr"),
    "train-lr-negative": Case("train option", _train("--lr", "-0.1"), 2, "--lr"),
    "train-steps-negative": Case("train option", _train("--steps", "-3"), 2, "--steps"),
    "train-steps-0": Case("train option", _train("--steps", "0"), 2, "--steps"),
    "train-size-0": Case("train option", _train("--size", "0"), 2, "--size"),
    "train-size-below-stride": Case("train option", _train("--size", "16"), 2, "total stride"),
    "train-channel-fraction-0": Case("train option", _train("--channel-fraction", "0"), 2,
                                     "--channel-fraction"),
    "train-channel-fraction-1.5": Case("train option", _train("--channel-fraction", "1.5"), 2,
                                       "--channel-fraction"),
    "train-chunk-size-0": Case("train option", _train("--chunk-size", "0"), 2, "--chunk-size"),
    "train-seed-negative": Case("train option", _train("--seed", "-1"), 2, "--seed"),
    "train-out-is-folder": Case("train option", lambda w: [
        "train", W, (w / "out").mkdir() or w / "out"], 2, "is a folder"),
    "train-out-exists": Case("train option", lambda w: [
        "train", W, write(w / "out", b"x")], 2, "--resume"),
    "train-images-is-file": Case("train option", lambda w: [
        "train", "--images", photo(w / "a.png"), W, OUT], 2, "is a file, not a folder"),
    "train-images-missing": Case("train option", lambda w: [
        "train", "--images", "nowhere", W, OUT], 2, "does not exist"),
    "train-images-empty": Case("train option", lambda w: [
        "train", "--images", (w / "e").mkdir() or w / "e", W, OUT], 2,
        "holds no images"),
    "train-export-is-out": Case("train option", lambda w: [
        "train", W, OUT, "--export", OUT], 2, "--export must differ"),
    "train-weights-pickle": Case("train option", lambda w: [
        "train", W, OUT, "--weights", evil_pickle(w / "evil.pth", w / "pwned")], 2,
        "could not read weights"),
}


def _save(path: Path, im: Image.Image) -> Path:
    im.save(path)
    return path


def _dataset_cmd(*extra: object) -> Callable[[Path], list]:
    def build(w: Path) -> list:
        photo(w / "imgs" / "a.png")
        return ["invert-dataset", w / "imgs", W, OUT, "--size", "32", *extra]
    return build


def _config(obj: object) -> Callable[[Path], list]:
    def build(w: Path) -> list:
        photo(w / "imgs" / "a.png")
        (w / "c.json").write_text(json.dumps(obj))
        return ["invert-dataset", w / "imgs", W, OUT, "--config", w / "c.json"]
    return build


def _bad_lac_meta(w: Path) -> list:
    from adjinv.core.lac import LACBank
    from adjinv.encoders import load_encoder
    from adjinv.lacs.checkpoint import save_checkpoint

    enc = load_encoder("efficientnet_lite0")
    ck = save_checkpoint(w / "bad.safetensors", LACBank.for_encoder(enc), enc,
                         meta={"lac_boundaries": {"x": "y"}})
    return [*INV, photo(w / "a.png"), W, OUT, "--lac", ck, *FAST]


# issue 29, item 14: user errors that were an internal error or exit 1
CASES.update({
    "dataset-device-bogus": Case("device", _dataset_cmd("--device", "bogus"), 2,
                                 "is not a torch device"),
    "dataset-stages-99": Case("option", _dataset_cmd("--stages", "99"), 2, "--stages 99"),
    "config-wrong-type": Case("config", _config({"size": "big"}), 2, "'size' is \"big\""),
    "config-list-of-str": Case("config", _config({"stages": ["x"]}), 2, "'stages'"),
    "train-head-lr-nan": Case("option", lambda w: ["train-head", W, "h.safetensors", "--lr",
                                                    "nan"], 2, "--lr nan"),
    "train-head-size-0": Case("option", lambda w: ["train-head", W, "h.safetensors", "--size",
                                                    "0"], 2, "--size 0"),
    "train-head-dropout-2": Case("option", lambda w: ["train-head", W, "h.safetensors",
                                                       "--dropout", "2"], 2, "--dropout 2.0"),
    "lac-malformed-metadata": Case("LAC file", _bad_lac_meta, 2, "malformed metadata"),
    "out-root": Case("out", _dataset_cmd(W, "/"), 2, "file-system root"),
})


# ----------------------------------------------------------------------------- the catalogue
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(cli, name):
    case = CASES[name]
    r = cli(case.argv(cli.work))
    assert r.code == case.code, r.err
    assert case.message in r.error_lines[0], r.err
    assert not (cli.work / "pwned").exists()


@pytest.mark.parametrize("option", ["--weights", "--lac"])
def test_malicious_pickle_is_never_executed(cli, option):
    pth = evil_pickle(cli.work / "evil.pth", cli.work / "pwned")
    r = cli([*INV, photo(cli.work / "a.png"), W, OUT, option, pth, *FAST])
    assert r.code == 2 and not (cli.work / "pwned").exists()


def test_out_dot_keeps_the_users_files(cli):
    w = cli.work
    (w / "index.html").write_text("<p>my own page</p>")
    (w / "summary.json").write_text('{"mine": true}')
    img = photo(w / "in" / "a.png")
    r = cli([*INV, img, W, ".", *FAST], out=w)
    assert r.code == 2 and "--overwrite" in r.error_lines[0]
    assert (w / "index.html").read_text() == "<p>my own page</p>"
    assert not (w / MARKER).exists()


def test_second_run_into_a_locked_out_is_refused(cli):
    out = cli.work / "out"
    out.mkdir()
    (out / MARKER).write_text("x")
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = cli([*INV, photo(cli.work / "a.png"), W, out, *FAST])
    finally:
        os.close(fd)
    assert r.code == 2 and "another adjinv run" in r.error_lines[0]
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, LOCK])


def test_random_init_ignored_is_said(cli):
    w = cli.work
    r = cli([*INV, _save(w / "w.png", Image.new("RGB", (64, 64), "white")), W, OUT,
             "--random-init", *FAST])
    assert r.code == 2 and "--random-init ignored" in r.err


@pytest.mark.parametrize("where", ["after-command", "at-the-end"])
def test_debug_anywhere_shows_the_exception(tmp_path, where):
    argv = ["invert", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]
    argv = ["invert", "--debug", *argv[1:]] if where == "after-command" else [*argv, "--debug"]
    with pytest.raises(AdjinvError, match="does not exist"):
        main(argv)


def test_environment_error_is_exit_1(cli, monkeypatch):
    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))
    img = photo(cli.work / "a.png")
    monkeypatch.setattr(Path, "mkdir", denied)
    r = cli([*INV, img, W, OUT, *FAST])
    assert r.code == 1 and "Permission denied" in r.error_lines[0]


def test_full_disk_is_found_before_the_work(cli, monkeypatch):
    import shutil
    from collections import namedtuple

    img = photo(cli.work / "a.png")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    r = cli([*INV, img, W, OUT, *FAST])
    assert r.code == 1 and "not enough free space" in r.error_lines[0]


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory"),
                                 RuntimeError("[enforce fail at alloc_cpu.cpp:117] "
                                              "DefaultCPUAllocator: can't allocate memory"),
                                 MemoryError()])
def test_out_of_memory_is_one_line_with_a_smaller_size(cli, monkeypatch, exc):
    def boom(*a, **k):
        raise exc
    monkeypatch.setattr("adjinv.viz.report.invert_one", boom)
    r = cli([*INV, photo(cli.work / "a.png"), W, OUT, "--size", "64", "--channels", "0"])
    assert r.code == 1 and "out of memory at --size 64" in r.error_lines[0]
    assert "--size 32" in r.error_lines[0]  # the suggestion


def test_internal_error_is_one_line(cli, monkeypatch):
    def boom(*a, **k):
        raise IndexError("list index out of range")
    monkeypatch.setattr("adjinv.viz.report.invert_one", boom)
    r = cli([*INV, photo(cli.work / "a.png"), W, OUT, *FAST])
    assert r.code == 1 and r.error_lines[0].startswith("adjinv: internal error: IndexError")


# ----------------------------------------------------------------------------- what now works
class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)

    def handle_endtag(self, tag):
        self._in_h2 = False


HOSTILE = ["...jpg", "..jpg", ".hidden.png", "CON.png", "summary.json.png", "index.html.png",
           "<img src=x onerror=document.title=1337>.png", "a#b?c%20d.png", "back\\slash.png"]


def test_traversal_and_injection_names_stay_inside_out(cli):
    w = cli.work
    files = [photo(w / "in" / n, seed=i) for i, n in enumerate(HOSTILE)]
    out = w / "out"  # the snapshot of w (its parent) catches a write beside it
    r = cli([*INV, *files, W, out, *FAST], out=out)
    assert r.code == 0, r.err
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(dirs) == len(HOSTILE)
    assert not any(d.startswith(".") or "/" in d or "\\" in d for d in dirs)
    assert "_CON" in dirs and "_summary.json" in dirs and "_index.html" in dirs
    for d in dirs:
        assert json.loads((out / d / "summary.json").read_text())["image"] == d
    assert isinstance(json.loads((out / "summary.json").read_text()), list)
    page = _Page()
    page.feed((out / "index.html").read_text())
    assert "<img src=x onerror=document.title=1337>" in page.h2
    assert not [i for i in page.imgs if i.get("src") == "x" or "onerror" in i]
    from urllib.parse import unquote
    for img in page.imgs:
        assert (out / unquote(img["src"])).is_file(), img["src"]
        assert "alt" in img


def test_safe_name_unit():
    assert safe_name("..") == "image" and safe_name(".") == "image"
    assert safe_name("../../etc/passwd") == "_.._etc_passwd"
    assert safe_name("a\0b") == "a_b" and safe_name("nul") == "_nul" and safe_name("com1.x") == "_com1.x"
    taken: set[str] = set()
    assert [safe_name(n, taken) for n in ("A", "a", "a")] == ["A", "a-2", "a-3"]
    assert len(safe_name("x" * 500)) <= 100 and len(safe_name("é" * 500).encode()) <= 100


def test_16bit_grayscale_is_read_at_full_depth(tmp_path):
    """A 16-bit PNG was read as pure white; now its values survive to within 1/65535."""
    rng = np.random.default_rng(0)
    arr = (rng.random((40, 56)) * 30000 + 2000).astype(np.uint16)
    p = image16(tmp_path / "g16.png", arr)
    with pytest.warns(UserWarning, match="I;16"):
        t = load_image(p, mode="convert")
    assert t.shape == (3, 40, 56)
    assert torch.allclose(t[0].double(), torch.from_numpy(arr / 65535.0), atol=1e-6)
    assert torch.equal(t[0], t[2])
    with pytest.raises(AdjinvError, match="I;16"):
        load_image(p)  # strict mode still refuses non-RGB


def test_16bit_grayscale_runs_end_to_end(cli):
    rng = np.random.default_rng(1)
    arr = np.kron(rng.random((8, 8)), np.ones((8, 8))) * 40000 + 1000
    r = cli([*INV, image16(cli.work / "g16.png", arr), W, OUT, *FAST])
    assert r.code == 0, r.err
    s = json.loads((cli.work / "out" / "g16" / "summary.json").read_text())
    inp = np.array(Image.open(cli.work / "out" / "g16" / "input.png"))
    assert inp.std() > 10 and inp.max() < 250  # not a white page
    assert s["top_channels"] == []


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P", "CMYK", "1", "I"])
def test_every_mode_converts(tmp_path, mode):
    rgb = Image.open(photo(tmp_path / "a.png"))
    im = rgb.convert(mode) if mode != "I" else Image.fromarray(
        np.array(rgb.convert("L")).astype(np.int32) * 200)
    p = tmp_path / ("x.tif" if mode in ("CMYK", "I") else "x.png")
    im.save(p)
    with pytest.warns(UserWarning, match="converted colour mode"):
        t = load_image(p, mode="convert")
    assert t.shape == (3, 72, 90) and float(t.min()) >= 0 and float(t.max()) <= 1
    assert float(t.std()) > 0.05


def test_transparent_pixels_are_white_not_black(tmp_path):
    a = np.zeros((32, 32, 4), np.uint8)
    a[..., 3] = 0
    a[:16, :, :] = (10, 20, 30, 255)
    Image.fromarray(a).save(tmp_path / "t.png")
    t = load_image(tmp_path / "t.png", mode="convert")
    assert torch.allclose(t[:, 20, 5], torch.ones(3))
    assert torch.allclose(t[:, 2, 5], torch.tensor([10, 20, 30]) / 255.0)


def test_exif_orientation_and_animation(tmp_path):
    im = Image.open(photo(tmp_path / "a.png", size=(40, 64)))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").shape == (3, 64, 40)
    frames = [Image.open(photo(tmp_path / f"f{i}.png", seed=i)).convert("P") for i in range(3)]
    frames[0].save(tmp_path / "an.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="animated \\(3 frames\\): using the first frame"):
        t = load_image(tmp_path / "an.gif", mode="convert")
    first = load_image(_save(tmp_path / "f0.gif", frames[0]), mode="convert")
    assert torch.equal(t, first)


def test_max_pixels_can_be_raised(tmp_path):
    p = photo(tmp_path / "a.png")
    with pytest.raises(AdjinvError, match="decompression bombs"):
        load_image(p, max_pixels=100)
    assert load_image(p, max_pixels=72 * 90).shape == (3, 72, 90)
    bomb = png_header(tmp_path / "b.png", 20000, 9100)
    from PIL import Image as PILImage
    assert PILImage.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's global is left as it was
    with pytest.raises(AdjinvError, match="182,000,000 pixels"):
        load_image(bomb)


def test_stale_temporaries_are_cleaned_on_the_next_run(cli):
    out = cli.work / "out"
    img = photo(cli.work / "a.png")
    assert cli([*INV, img, W, out, *FAST]).code == 0
    (out / "a" / f".input.png.x1y2{TMP_TAG}").write_bytes(b"half")
    (out / f".b{PARTIAL_TAG}").mkdir()
    (out / f".b{PARTIAL_TAG}" / "input.png").write_bytes(b"half")
    (out / f".index.html.q{TMP_TAG}").write_bytes(b"half")
    (out / ".a.old").mkdir()  # what an older version left for its image folder a
    r = cli([*INV, img, W, out, *FAST])
    assert r.code == 0 and "removed 4 stale temporary" in r.err
    assert not (out / f".b{PARTIAL_TAG}").exists() and not (out / ".a.old").exists()


def test_overwrite_writes_into_a_user_folder(cli):
    out = cli.work / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    r = cli([*INV, photo(cli.work / "a.png"), W, out, "--overwrite", *FAST], out=out)
    assert r.code == 0 and (out / "notes.txt").read_text() == "keep me"
    assert (out / "index.html").is_file() and (out / MARKER).is_file()


def test_channels_beyond_the_deepest_stage_are_clamped_to_live_ones(cli):
    r = cli([*INV, photo(cli.work / "a.png"), W, OUT, "--size", "32", "--channels", "100000",
             "--chunk-size", "512"])
    assert r.code == 0 and "more than the 1280 channels" in r.err
    s = json.loads((cli.work / "out" / "a" / "summary.json").read_text())
    live = s["live_channels_deepest"]
    assert len(s["top_channels"]) == live < 1280
    assert all(c["weight"] > 0 for c in s["top_channels"])
    assert len(list((cli.work / "out" / "a").glob("channel_*.png"))) == live


# ----------------------------------------------------------------------------- API
@pytest.fixture
def inverter(tiny_enc):
    return AdjointInverter(tiny_enc, random_lacs(tiny_enc))


@pytest.mark.parametrize("kw", [{"chunk_size": 0}, {"chunk_size": -1}, {"chunk_size": 2.5},
                                {"chunk_size": True}, {"memory_budget": 0}])
def test_api_constructor_arguments(tiny_enc, kw):
    with pytest.raises(AdjinvError, match=next(iter(kw))):
        AdjointInverter(tiny_enc, **kw)


@pytest.mark.parametrize("top_k", [-1, 1.5, "3"])
def test_api_top_k(inverter, top_k):
    with pytest.raises(AdjinvError, match="top_k"):
        inverter.invert(smooth_image(32, dtype=torch.float64), top_k=top_k)


@pytest.mark.parametrize("x,message", [
    (torch.zeros(0, 3, 32, 32, dtype=torch.float64), "empty"),
    (torch.full((1, 3, 32, 32), float("nan"), dtype=torch.float64), "NaN"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.int8), "floating-point"),
    (torch.zeros(1, 4, 32, 32, dtype=torch.float64), "RGBA"),
    (torch.zeros(2, 32, 32, dtype=torch.float64), "expected"),
    (torch.ones(1, 3, 32, 32, dtype=torch.float64) * 2.2 + 1e-7 * torch.rand(1, 3, 32, 32,
                                                                             dtype=torch.float64),
     "constant"),
])
def test_api_bad_batches(inverter, x, message):
    with pytest.raises(AdjinvError, match=message):
        inverter.invert(x)


def test_api_top_k_zero_and_chunk_one_finish(inverter):
    res = inverter.invert(smooth_image(32, dtype=torch.float64), top_k=0)
    assert not res.channels and torch.isfinite(res.x_hat[3]).all()
    one = AdjointInverter(inverter.encoder, inverter.lacs, chunk_size=1)
    assert torch.allclose(one.invert(smooth_image(32, dtype=torch.float64)).x_hat[3], res.x_hat[3])


@pytest.mark.parametrize("size", [0, -5, 2.5, True])
def test_api_resize_size(size):
    from adjinv.images.files import resize_center_crop

    with pytest.raises(AdjinvError, match="size must be a positive integer"):
        resize_center_crop(torch.rand(3, 8, 8), size)


@pytest.mark.parametrize("max_pixels", [0, -1, 1.5])
def test_api_max_pixels(tmp_path, max_pixels):
    with pytest.raises(AdjinvError, match="max_pixels"):
        load_image(photo(tmp_path / "a.png"), max_pixels=max_pixels)


def test_cli_pixel_limit_matches_the_loader():
    import adjinv.cli
    import adjinv.images.files

    assert adjinv.cli.DEFAULT_MAX_PIXELS == adjinv.images.files.DEFAULT_MAX_PIXELS


# ----------------------------------------------------------------------------- issue 29
HIDDEN = ["keep.tmp", ".settings.old/important.txt", "sub/.draft.tmp", "sub/deep/.x.partial/f",
          "sub/deep/deeper/.y.old/g", ".z.tmp", "a-notes/.b.tmp"]


def test_hidden_user_files_at_any_depth_survive_later_runs(cli):
    """Item 1: clean-up never deletes a user's hidden .tmp / .old / .partial, at any depth."""
    mine = cli.work / "mine"
    for rel in HIDDEN:
        write(mine / rel, rel.encode())
    img = photo(cli.work / "a.png")
    assert cli([*INV, img, W, mine, "--overwrite", *FAST], out=mine).code == 0
    r = cli([*INV, img, W, mine, *FAST], out=mine)
    assert r.code == 0 and "stale temporary" not in r.err
    for rel in HIDDEN:
        assert (mine / rel).read_bytes() == rel.encode(), rel


def test_overwrite_never_replaces_a_user_folder_or_file_named_like_an_image(cli):
    """Item 2: a user folder ``a`` (or file ``a``) where image ``a`` would go is refused."""
    mine = cli.work / "mine"
    write(mine / "a" / "notes.txt", b"n")
    img = photo(cli.work / "in" / "a.png")
    r = cli([*INV, img, W, mine, "--overwrite", *FAST], out=mine)
    assert r.code == 2 and "did not write" in r.error_lines[0]
    assert (mine / "a" / "notes.txt").read_bytes() == b"n"
    other = cli.work / "other"
    write(other / "a", b"file")
    r = cli([*INV, img, W, other, "--overwrite", *FAST], out=other)
    assert r.code == 2 and (other / "a").read_bytes() == b"file"
    assert not [p for p in other.iterdir() if p.name != "a"]


def test_runners_are_guarded_like_invert(cli):
    """Item 3: invert-dataset refuses a user folder, the data folder and a locked folder."""
    from filelock import FileLock

    imgs = cli.work / "imgs"
    photo(imgs / "a.png")
    mine = cli.work / "mine"
    write(mine / "results.json", b"mine")
    r = cli(["invert-dataset", imgs, W, mine, "--size", "32"], out=mine)
    assert r.code == 2 and "--overwrite" in r.error_lines[0]
    assert (mine / "results.json").read_bytes() == b"mine"
    r = cli(["invert-dataset", imgs, W, imgs, "--size", "32"], out=imgs)
    assert r.code == 2 and "input" in r.error_lines[0]
    r = cli(["invert-dataset", imgs, W, imgs / "inside", "--size", "32"], out=imgs / "inside")
    assert r.code == 2 and "inside the input" in r.error_lines[0]
    out = cli.work / "out"
    out.mkdir()
    (out / MARKER).write_text("x")
    with FileLock(str(out / LOCK)):
        r = cli(["invert-dataset", imgs, W, out, "--size", "32"], out=out)
    assert r.code == 2 and "another adjinv run" in r.error_lines[0]


def test_train_and_train_head_outputs_are_locked(cli):
    """Items 3-4: a second training on one --out is refused while the first holds it."""
    from filelock import FileLock

    w = cli.work
    with FileLock(str(w / ".run.safetensors.lock")):
        r = cli(["train-head", W, w / "run.safetensors", "--steps", "1"], out=w / "run.safetensors")
        assert r.code == 2 and "another adjinv run" in r.error_lines[0]
        photo(w / "imgs" / "a.png")
        r = cli(["train", "--images", w / "imgs", W, w / "run.safetensors", "--random-init",
                 "--encoder", "resnet18", "--steps", "1", "--size", "32"], out=w / "run.safetensors")
        assert r.code == 2 and "another adjinv run" in r.error_lines[0]
    assert not (w / "run.safetensors").exists()


def test_train_runs_keep_apart_and_export_keeps_user_files(cli):
    """Item 4: ``run.a`` and ``run.b`` get their own log and steps; --export never replaces
    a file that is not a LAC checkpoint."""
    from adjinv.lacs.training import kept_checkpoints, run_stem, write_log

    assert run_stem("x/run.a.safetensors") == "run.a"
    assert run_stem("lite0.lac.safetensors") == "lite0"  # the old naming is kept
    a, _ = write_log(cli.work / "run.a.safetensors", [{"step": 1, "loss": 1.0}])
    b, _ = write_log(cli.work / "run.b.safetensors", [{"step": 1, "loss": 2.0}])
    assert a != b and json.loads(a.read_text())[0]["loss"] == 1.0
    (cli.work / "run.a.steps").mkdir()
    (cli.work / "run.a.steps" / "step-00001.lac.safetensors").write_bytes(b"")
    assert kept_checkpoints(cli.work / "run.b.safetensors") == []
    notes = write(cli.work / "notes.txt", b"mine")
    photo(cli.work / "imgs" / "a.png")
    r = cli(["train", "--images", cli.work / "imgs", W, "t.safetensors", "--export", notes,
             "--random-init", "--encoder", "resnet18"], out=cli.work / "t.safetensors")
    assert r.code == 2 and "never replaces" in r.error_lines[0]
    assert notes.read_bytes() == b"mine"


def _checkpoint(tmp_path: Path, enc, *, meta: dict | None = None, **tensors: torch.Tensor) -> Path:
    from adjinv.lacs.checkpoint import save_checkpoint

    lacs = random_lacs(enc)
    with torch.no_grad():
        for k, v in tensors.items():
            lacs.get_parameter(k).copy_(v)
    extras = {"vanilla.gain": torch.ones(3), "vanilla.offset": torch.zeros(3)}
    return save_checkpoint(tmp_path / "c.safetensors", lacs, enc, meta=meta, extras=extras)


@pytest.mark.parametrize("what", ["gamma-nan", "beta-inf", "eps-nan", "eps-negative",
                                  "vanilla-nan", "eps-string"])
def test_non_finite_lac_values_are_refused_at_load(tmp_path, tiny_enc, what):
    """Item 5: NaN γ, Inf β, NaN vanilla gain, lac_eps NaN or -1 are refused, naming the fix."""
    from safetensors.torch import load_file, save_file

    from adjinv.lacs.checkpoint import load_checkpoint

    n = tiny_enc.layout()["stages"]  # noqa: F841 (the layout is what the checkpoint records)
    if what == "gamma-nan":
        ck = _checkpoint(tmp_path, tiny_enc, **{"lacs.pix.gamma": torch.tensor([1.0, float("nan"), 1.0])})
    elif what == "beta-inf":
        ck = _checkpoint(tmp_path, tiny_enc, **{"lacs.pix.beta": torch.tensor([0.0, float("inf"), 0.0])})
    else:
        eps = {"eps-nan": float("nan"), "eps-negative": -1.0, "eps-string": "1e-6"}.get(what)
        ck = _checkpoint(tmp_path, tiny_enc, meta=None if eps is None else {"lac_eps": eps})
        if what == "vanilla-nan":
            from safetensors import safe_open

            with safe_open(str(ck), "pt") as f:
                meta = f.metadata()
            t = load_file(str(ck))
            t["extra.vanilla.gain"] = torch.tensor([1.0, float("nan"), 1.0])
            save_file(t, str(ck), metadata=meta)
    with pytest.raises(AdjinvError, match="NaN|lac_eps"):
        load_checkpoint(ck, tiny_enc)


def test_non_finite_encoder_weights_are_refused(tmp_path):
    """Item 5: a state dict with a NaN tensor is refused when loaded."""
    from adjinv.encoders import load_encoder

    sd = torchvision_resnet18_state()
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(AdjinvError, match="NaN or infinite"):
        load_encoder("resnet18", tmp_path / "w.pth")


def torchvision_resnet18_state() -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


def test_summary_json_never_holds_a_bare_nan(tmp_path):
    """Item 5: a score that is not finite is written as null with a reason."""
    from adjinv.fileio import atomic_write_json, finite_json

    p = atomic_write_json(tmp_path / "s.json", finite_json([{"ssim": float("nan"), "psnr": 3.0}]))

    def strict(c: str) -> None:
        raise ValueError(c)

    row = json.loads(p.read_text(), parse_constant=strict)[0]
    assert row["ssim"] is None and "not a finite number" in row["ssim_unavailable"]
    assert row["psnr"] == 3.0


def test_invert_dataset_reinverts_an_image_whose_content_changed(tmp_path, tiny_enc):
    """Item 6: the manifest records content hashes; a changed image is inverted again."""
    from adjinv.fileio import save_png
    from adjinv.paper.runners.invert_dataset import DatasetConfig, run

    data = tmp_path / "data"
    data.mkdir()
    save_png(data / "a.png", smooth_image(40, seed=1)[0])
    save_png(data / "b.png", smooth_image(40, seed=2)[0])
    inv = AdjointInverter(tiny_enc, random_lacs(tiny_enc))
    cfg = DatasetConfig(size=32, stages=(-1,), shard_size=1)
    first = json.loads(run(inv, data, tmp_path / "out", cfg).read_text())["images"]
    save_png(data / "a.png", smooth_image(40, seed=7)[0])  # same name, other content
    again = json.loads(run(inv, data, tmp_path / "out", cfg).read_text())["images"]
    fresh = json.loads(run(inv, data, tmp_path / "fresh", cfg).read_text())["images"]
    for rows in (first, again, fresh):
        for row in rows.values():
            row.pop("seconds")
    assert again["a.png"] == fresh["a.png"] != first["a.png"]
    assert again["b.png"] == first["b.png"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["sha256"]["a.png"]) == 64


def test_stages_out_of_range_are_refused_not_wrapped():
    """Item 7."""
    from adjinv.paper.runners.invert_dataset import stage_indices

    assert stage_indices((-1, 0), 4) == [0, 3]
    for bad in [(99,), (4,), (-5,), ()]:
        with pytest.raises(AdjinvError, match="stages"):
            stage_indices(bad, 4)


def test_bundled_lac_name_wins_over_a_local_file(cli):
    """Item 8: ``--lac paper`` is the bundled variant even with a file ``paper`` here."""
    from adjinv.lacs.checkpoint import bundled_checkpoint, resolve_checkpoint

    (cli.work / "paper").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="local file of that name is ignored"):
        assert resolve_checkpoint("efficientnet_lite0", "paper") == \
            bundled_checkpoint("efficientnet_lite0", "paper")
    assert resolve_checkpoint("efficientnet_lite0", "./paper") == Path("./paper")
    r = cli([*INV, photo(cli.work / "in" / "a.png"), W, OUT, "--lac", "paper", *FAST])
    assert r.code == 0 and "efficientnet_lite0-paper" in r.err


def test_unfinished_checkpoint_warns(tmp_path, tiny_enc):
    """Item 9: a checkpoint with complete=false is used with a warning naming the fix."""
    from adjinv.lacs.bundled import load_lacs

    ck = _checkpoint(tmp_path, tiny_enc, meta={"complete": False, "step": 3})
    with pytest.warns(UserWarning, match="unfinished training run.*--resume"):
        load_lacs(tiny_enc, ck)


def test_concurrent_calls_on_one_inverter_restore_the_users_model():
    """Item 10: real threads share one Inverter over a train-mode model with gradients.
    The first thread in leaves first, while the second is still inside (the order that
    left the model frozen), then several threads run freely."""
    import threading

    from adjinv import Inverter
    from conftest import tiny_relu_cnn

    model = tiny_relu_cnn(seed=0).train()
    second_inside = threading.Event()
    seen: set[str] = set()

    def order(*_: object) -> None:
        name = threading.current_thread().name
        if name in seen:
            return
        seen.add(name)
        if name == "first":
            second_inside.wait(timeout=30)  # leave only once the second thread is inside
        elif name == "second":
            second_inside.set()
            threading.Event().wait(0.3)  # and stay inside after the first has left

    model[0].register_forward_pre_hook(order)
    inv = Inverter(model, lacs="identity")
    x = smooth_image(32)
    errors: list[BaseException] = []

    def work(repeat: int) -> None:
        try:
            for _ in range(repeat):
                assert torch.isfinite(inv(x).x_hat[-1]).all()
        except BaseException as e:  # reported below
            errors.append(e)

    def run(threads: list[threading.Thread]) -> None:
        for t in threads:
            t.start()
            threading.Event().wait(0.05)
        for t in threads:
            t.join(timeout=120)

    run([threading.Thread(target=work, args=(1,), name=n) for n in ("first", "second")])
    run([threading.Thread(target=work, args=(3,), name=f"free{i}") for i in range(3)])
    assert not errors, errors
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_a_second_invert_keeps_the_earlier_images_in_the_index(cli):
    """Item 11."""
    out = cli.work / "out"
    assert cli([*INV, photo(cli.work / "a.png", seed=1), W, out, *FAST]).code == 0
    r = cli([*INV, photo(cli.work / "b.png", seed=2), W, out, *FAST])
    assert r.code == 0 and "earlier runs (a)" in r.err
    assert [s["image"] for s in json.loads((out / "summary.json").read_text())] == ["a", "b"]
    assert 'href="a/' in (out / "index.html").read_text() or "a/input.png" in (out / "index.html").read_text()


def test_extreme_aspect_ratio_is_refused_and_resizing_is_bounded(tmp_path, monkeypatch):
    """Item 12: a 1 x 400000 PNG passes the pixel limit but is refused by name; a long
    strip given to the API is cropped before resizing (memory bounded by size²)."""
    import torch.nn.functional as F

    from adjinv.images import files

    strip = tmp_path / "strip.png"
    Image.new("RGB", (400_000, 1), "red").save(strip)
    with pytest.raises(AdjinvError, match="aspect ratio"):
        load_image(strip)
    asked: list[tuple[int, int]] = []
    real = F.interpolate

    def spy(x: torch.Tensor, size: tuple[int, int], **kw: object) -> torch.Tensor:
        asked.append(size)
        return real(x, size=size, **kw)

    monkeypatch.setattr(files.F, "interpolate", spy)
    out = files.resize_center_crop(torch.rand(3, 2, 40_000), 64)
    assert out.shape == (3, 64, 64) and asked[0][0] * asked[0][1] <= 4 * 64 * 64


def test_inconsistent_torchrun_environment_fails_fast(monkeypatch, caplog):
    """Item 13: RANK=1 WORLD_SIZE=1 is refused at once; RANK=0 WORLD_SIZE=2 without a second
    rank gives up after the short rendezvous timeout, with a line while waiting."""
    import logging
    import socket
    import time

    import torch.distributed as dist

    from adjinv.distributed import init_from_env

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(AdjinvError, match="inconsistent"):
        init_from_env()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("ADJINV_RENDEZVOUS_TIMEOUT_S", "2")
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="adjinv.distributed"), \
            pytest.raises(AdjinvError, match="did not meet"):
        init_from_env()
    assert time.monotonic() - t0 < 30 and not dist.is_initialized()
    assert "waiting for the other ranks" in caplog.text


# ----------------------------------------------------------------------------- LAC fuzz
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6)
_META_KEYS = ["encoder", "encoder_hash", "lac_boundaries", "lac_eps", "lac_eps_mode",
              "lac_linearize_at", "complete", "format"]
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
           torch.uint8, torch.bool]


@st.composite
def _tensor(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    dtype = draw(st.sampled_from(_DTYPES))
    fill = draw(st.sampled_from([0.5, float("nan"), float("inf"), -float("inf"), 1.0]))
    t = torch.full(shape, 1.0, dtype=torch.float64)
    if t.numel() and draw(st.booleans()):
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = fill
    return t.to(dtype) if dtype.is_floating_point else t.nan_to_num().to(dtype)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(meta_edits=st.dictionaries(st.sampled_from(_META_KEYS), _JSONISH, max_size=2),
       drop_meta=st.lists(st.sampled_from(_META_KEYS), max_size=2),
       tensor_edits=st.dictionaries(
           st.sampled_from(["lac.lacs.pix.gamma", "lac.lacs.pix.beta", "lac.lacs.s1.gamma",
                            "extra.vanilla.gain", "extra.vanilla.offset", "lac.extra"]),
           _tensor(), max_size=2),
       drop_tensors=st.lists(st.sampled_from(["lac.lacs.pix.gamma", "extra.vanilla.offset"]),
                             max_size=1),
       keep_format=st.booleans())
def test_fuzz_lac_checkpoint_fields(tmp_path_factory, meta_edits, drop_meta, tensor_edits,
                                    drop_tensors, keep_format):
    """Shapes, dtypes, non-finite values and metadata types of a LAC checkpoint: every
    variant loads to finite LACs or is refused with an AdjinvError, never an internal error."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from adjinv.lacs.bundled import load_lacs
    from conftest import staged_from_sequential, tiny_relu_cnn

    enc = staged_from_sequential(tiny_relu_cnn(seed=0).double())
    tmp = tmp_path_factory.mktemp("fuzz")
    ck = _checkpoint(tmp, enc)
    with safe_open(str(ck), "pt") as f:
        meta = json.loads(f.metadata()["adjinv"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    for k in drop_meta:
        meta.pop(k, None)
    meta.update(meta_edits)
    if keep_format:
        meta["format"] = "adjinv-lac/1"
    tensors.update(tensor_edits)
    for k in drop_tensors:
        tensors.pop(k, None)
    save_file(tensors, str(ck), metadata={"adjinv": json.dumps(meta)})
    try:
        loaded = load_lacs(enc, ck, allow_other_weights=True)
    except AdjinvError:
        return
    assert all(torch.isfinite(p).all() for p in loaded.lacs.parameters())
    if loaded.vanilla_map is not None:
        assert torch.isfinite(loaded.vanilla_map.gain).all()
        assert torch.isfinite(loaded.vanilla_map.offset).all()


# ----------------------------------------------------------------------------- issue 29, item 15
def _api_cases() -> dict[str, Callable[[Any], object]]:
    from adjinv import encoder_from_module, load_lacs
    from adjinv.core.lac import LACBank
    from adjinv.fileio import save_png
    from adjinv.images.files import resize_center_crop

    x = smooth_image(32)
    return {
        "target-str": lambda inv: inv.invert(x, target="cat"),
        "target-2d": lambda inv: inv.invert(x, target=torch.zeros(2, 2, dtype=torch.long)),
        "channel-out-of-range": lambda inv: inv.channel_inversions(x, -1, [10**6]),
        "channels-str": lambda inv: inv.channel_inversions(x, -1, "a"),
        "psi-seed-shape": lambda inv: inv.psi(x, -1, torch.zeros(1, 3, 2, 2)),
        "readout-not-callable": lambda inv: inv.readout(x, 5),
        "load-lacs-int": lambda inv: load_lacs(inv.encoder, 5),
        "lac-eps-mode": lambda inv: LACBank({1: 8}, eps_mode="bad"),
        "lac-negative-channels": lambda inv: LACBank({1: -3}),
        "encoder-from-str": lambda inv: encoder_from_module("resnet"),
        "resize-list": lambda inv: resize_center_crop([1], 32),
        "load-image-none": lambda inv: load_image(None),
        "save-png-shape": lambda inv: save_png("never.png", torch.zeros(5)),
    }


@pytest.mark.parametrize("case", list(_api_cases()))
def test_api_misuse_is_an_adjinv_error(case, monkeypatch, tmp_path):
    """Item 15: direct API calls that raised a raw TypeError/RuntimeError/ValueError."""
    from adjinv import Inverter
    from conftest import tiny_relu_cnn

    monkeypatch.chdir(tmp_path)
    inv = Inverter(tiny_relu_cnn(seed=0), lacs="identity")
    with pytest.raises(AdjinvError) as e:
        _api_cases()[case](inv)
    assert type(e.value) is AdjinvError
    assert not (tmp_path / "never.png").exists()


def test_half_a_vanilla_map_is_refused(tmp_path, tiny_enc):
    """A checkpoint with a vanilla gain but no offset: an AdjinvError, not a KeyError."""
    from adjinv.lacs.bundled import load_lacs
    from adjinv.lacs.checkpoint import save_checkpoint

    ck = save_checkpoint(tmp_path / "c.safetensors", random_lacs(tiny_enc), tiny_enc,
                         extras={"vanilla.gain": torch.ones(3)})
    with pytest.raises(AdjinvError, match="only one of"):
        load_lacs(tiny_enc, ck)
