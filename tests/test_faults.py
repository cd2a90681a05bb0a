"""Faults as tests: Ctrl-C, a full disk and SIGKILL during a run.

Each one checks that what was finished is kept, nothing half-written is left behind
and nothing written before is damaged.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from adjinv.cli import main
from adjinv.fileio import OLD_TAG, PARTIAL_TAG, TMP_TAG
from adjinv.lacs.checkpoint import read_checkpoint

SRC = str(Path(__file__).parents[1] / "src")


def photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.kron(rng.random((10, 12, 3)), np.ones((8, 8, 1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((arr * 255).astype(np.uint8)).save(path)
    return path


def spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "adjinv.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"finished before the fault: {proc.communicate()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((TMP_TAG, PARTIAL_TAG, OLD_TAG))]


def complete(folder: Path) -> bool:
    s = json.loads((folder / "summary.json").read_text())
    files = ["input.png", "control_seed_zero.png", *s["class_directional"]["files"],
             *(st["file"] for st in s["stages"]), *(c["file"] for c in s["top_channels"])]
    return all((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in files)


def test_sigint_keeps_finished_images_and_leaves_no_partial_files(tmp_path):
    imgs = [photo(tmp_path / "in" / f"p{i}.png", i) for i in range(8)]
    out = tmp_path / "out"
    proc = spawn(["invert", *map(str, imgs), "--out", str(out), "--size", "64",
                  "--channels", "2"], tmp_path)
    wait_for(lambda: (out / "p0" / "summary.json").is_file(), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "adjinv: interrupted" in err
    done = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert done and len(done) < len(imgs), done  # interrupted part-way
    assert done == [f"p{i}" for i in range(len(done))]
    assert all(complete(out / d) for d in done)
    assert not leftovers(out)
    index = json.loads((out / "summary.json").read_text())
    assert [s["image"] for s in index] == done  # the index lists exactly what finished
    assert f"{len(done)} of {len(imgs)} image(s) complete" in err


def test_disk_full_keeps_everything_already_written(tmp_path, capsys, monkeypatch):
    imgs = [photo(tmp_path / "in" / f"q{i}.png", i) for i in range(3)]
    out = tmp_path / "out"
    argv = ["invert", *map(str, imgs), "--out", str(out), "--size", "32", "--channels", "1"]
    assert main(argv) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".adjinv.lock"}

    import adjinv.fileio as aio

    real = aio.atomic_write_bytes
    state = {"q1": 0, "full": False}

    def fills_up(path, data):
        if f".q1{PARTIAL_TAG}" in str(path):
            state["q1"] += 1
            state["full"] |= state["q1"] > 2  # the disk fills while image 2 is written
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(aio, "atomic_write_bytes", fills_up)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("adjinv: error")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "disk is full" in lines[0] and "1 of 3 image(s) complete" in lines[0]
    assert str(out) in lines[0]
    assert not leftovers(out)
    for p, data in before.items():  # the earlier run's files: all there, none damaged
        if "q0" not in p.parts:
            assert p.read_bytes() == data, p
    assert complete(out / "q0") and complete(out / "q1") and complete(out / "q2")


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    folder = tmp_path / "imgs"
    photo(folder / "a.png", 1)
    photo(folder / "b.png", 2)
    args = ["train", "--images", str(folder), "--size", "32", "--checkpoint-every", "1",
            "--chunk-size", "256", "--steps", "5"]
    ref = tmp_path / "ref.safetensors"
    assert main([*args, "--out", str(ref)]) == 0

    ck = tmp_path / "killed.safetensors"
    proc = spawn([*args, "--out", str(ck)], tmp_path)

    def saved() -> bool:
        try:
            return ck.is_file() and read_checkpoint(ck)[0]["step"] >= 1
        except Exception:  # polled while being replaced
            return False

    wait_for(saved, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    meta, _ = read_checkpoint(ck)
    assert 1 <= meta["step"] < 5 and not meta["complete"]
    assert main([*args, "--out", str(ck), "--resume"]) == 0
    m_ref, t_ref = read_checkpoint(ref)
    m_ck, t_ck = read_checkpoint(ck)
    assert m_ck["step"] == m_ref["step"] == 5 and m_ck["losses"] == m_ref["losses"]
    assert t_ref.keys() == t_ck.keys()
    for k in t_ref:
        assert torch.equal(t_ref[k], t_ck[k]), k


def test_interrupt_while_writing_leaves_no_staging_folder(tmp_path, capsys, monkeypatch):
    import adjinv.fileio as aio

    real = aio.atomic_write_bytes
    calls = {"n": 0}

    def interrupted(path, data):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(aio, "atomic_write_bytes", interrupted)
    out = tmp_path / "out"
    assert main(["invert", str(photo(tmp_path / "a.png", 0)), "--out", str(out), "--size", "32",
                 "--channels", "0"]) == 130
    assert "0 of 1 image(s) complete" in capsys.readouterr().err
    assert not leftovers(out) and not (out / "a").exists()
