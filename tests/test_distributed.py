"""Data-parallel LAC training with two gloo processes on this machine (loopback only)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adjinv.distributed import rank_world, shard
from adjinv.lacs.training import TrainConfig, train_lacs
from conftest import smooth_image, staged_from_sequential, tiny_relu_cnn

CFG = {"steps": 3, "size": 32, "lr": 0.05, "batch_size": 4, "checkpoint_every": 1, "seed": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images():
    return [smooth_image(40, seed=s)[0] for s in range(5)]


def _worker(rank: int, world: int, port: int, out: str, cfg: dict, resume: bool) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        enc = staged_from_sequential(tiny_relu_cnn(seed=0).double())
        lacs, _, losses = train_lacs(enc, _images(), TrainConfig(**cfg), checkpoint=out,
                                     resume=resume)
        torch.save({"lacs": lacs.state_dict(), "losses": losses}, f"{out}.rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run(world: int, out: str, cfg: dict, resume: bool = False) -> None:
    mp.spawn(_worker, args=(world, _free_port(), out, cfg, resume), nprocs=world, join=True)


def test_shard_covers_every_item_once():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == items
    assert rank_world() == (0, 1)


def test_two_processes_equal_one(tmp_path):
    enc = staged_from_sequential(tiny_relu_cnn(seed=0).double())
    ref, _, ref_loss = train_lacs(enc, _images(), TrainConfig(**CFG))
    out = str(tmp_path / "ddp.safetensors")
    _run(2, out, CFG)
    r0 = torch.load(out + ".rank0.pt", weights_only=True)
    r1 = torch.load(out + ".rank1.pt", weights_only=True)
    # the same global batch of 4: two ranks of 2 images give the single process's steps
    # up to the order of floating-point sums: losses (float64 images) to 1e-12; the LAC
    # parameters are float32, so the summed gradients agree to float32 rounding (1e-5)
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor(ref_loss), rtol=1e-12, atol=0)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(r0["lacs"][k].to(v), v, rtol=1e-5, atol=1e-7)
        assert torch.equal(r0["lacs"][k], r1["lacs"][k])  # ranks stay in sync


def test_resume_with_another_world_size(tmp_path):
    enc = staged_from_sequential(tiny_relu_cnn(seed=0).double())
    ref, _, ref_loss = train_lacs(enc, _images(), TrainConfig(**CFG))
    out = str(tmp_path / "w.safetensors")
    # two steps in two processes, then the rest in one process
    _run(2, out, {**CFG, "steps": 2})
    lacs, _, losses = train_lacs(enc, _images(), TrainConfig(**CFG), checkpoint=out, resume=True)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_loss), rtol=1e-6, atol=0)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(lacs.state_dict()[k], v, rtol=1e-5, atol=1e-7)


def test_resume_on_more_processes(tmp_path):
    """The other direction: one step in one process, the rest resumed on two."""
    enc = staged_from_sequential(tiny_relu_cnn(seed=0).double())
    ref, _, ref_loss = train_lacs(enc, _images(), TrainConfig(**CFG))
    out = str(tmp_path / "w.safetensors")
    train_lacs(enc, _images(), TrainConfig(**{**CFG, "steps": 1}), checkpoint=out)
    _run(2, out, CFG, resume=True)
    r0 = torch.load(out + ".rank0.pt", weights_only=True)
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor(ref_loss), rtol=1e-6, atol=0)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(r0["lacs"][k].to(v), v, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- invert-dataset
def _dataset(folder):
    from adjinv.fileio import save_png

    for i in range(5):
        save_png(folder / f"img{i}.png", smooth_image(40, seed=10 + i)[0].float())
    (folder / "sub").mkdir()
    save_png(folder / "sub" / "deep.png", smooth_image(40, seed=20)[0].float())


def _dataset_worker(rank: int, world: int, port: int, data: str, out: str, timeout_s: int = 600) -> None:
    from datetime import timedelta

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    try:
        _invert(data, out)
    finally:
        dist.destroy_process_group()


def _invert(data, out):
    from pathlib import Path

    from adjinv.core.inverter import AdjointInverter
    from adjinv.paper.runners.invert_dataset import DatasetConfig, run
    from conftest import random_lacs

    enc = staged_from_sequential(tiny_relu_cnn(seed=0).double())
    inv = AdjointInverter(enc, random_lacs(enc, 3))
    return run(inv, Path(data), Path(out), DatasetConfig(size=32, stages=(-1, 1), shard_size=2,
                                                        class_directional=True))


def test_invert_dataset_one_process_equals_two_and_resumes(tmp_path):
    import json

    from safetensors.torch import load_file

    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    one = _invert(data, tmp_path / "one")
    r1 = json.loads(one.read_text())["images"]
    assert sorted(r1) == ["img0.png", "img1.png", "img2.png", "img3.png", "img4.png", "sub/deep.png"]
    assert set(r1["img0.png"]["stages"]) == {"1", "3"}
    mp.spawn(_dataset_worker, args=(2, _free_port(), str(data), str(tmp_path / "two")), nprocs=2,
             join=True)
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())["images"]
    assert sorted(r2) == sorted(r1)  # no image lost or done twice
    for f in r1:
        r1[f].pop("seconds"), r2[f].pop("seconds")
        assert r1[f] == r2[f]
    a = load_file(str(tmp_path / "one" / "shards" / "shard-00001.safetensors"))
    b = load_file(str(tmp_path / "two" / "shards" / "shard-00001.safetensors"))
    assert set(a) >= {"x_hat.3", "x_hat.1", "class"} and all(torch.equal(a[k], b[k]) for k in a)
    # resume: a finished shard is skipped, a missing one is redone
    shards = tmp_path / "one" / "shards"
    kept = (shards / "shard-00000.json").stat().st_mtime_ns
    (shards / "shard-00002.json").unlink()
    again = json.loads(_invert(data, tmp_path / "one").read_text())["images"]
    assert (shards / "shard-00000.json").stat().st_mtime_ns == kept
    assert sorted(again) == sorted(r1)


# ------------------------------------------------------- invert-dataset: kill one rank, resume
def _killable_worker(rank: int, world: int, port: int, data: str, out: str, hold: str) -> None:
    """A rank of ``invert-dataset``; with ``hold`` set, rank 1 finishes its first shard, then
    announces its second one (the file ``hold``) and stays inside it until it is killed."""
    import time

    import adjinv.paper.runners.invert_dataset as idm

    if hold and rank == 1:
        real, calls = idm.invert_shard, []

        def stalled(*a, **k):
            calls.append(1)
            res = real(*a, **k)
            if len(calls) == 2:  # mid-run: shard 1 is written, shard 3 computed, not written
                open(hold, "w").close()
                time.sleep(600)
            return res

        idm.invert_shard = stalled
    # a short collective timeout bounds how long rank 0 can wait for the killed rank
    _dataset_worker(rank, world, port, data, out, timeout_s=60)


def test_invert_dataset_resumes_after_one_rank_is_killed(tmp_path):
    import json
    import signal
    import time

    from safetensors.torch import load_file

    from adjinv.fileio import save_png

    data = tmp_path / "data"
    data.mkdir()
    _dataset(data)
    for i in range(5, 9):  # 10 images in shards of 2: shards 0, 2, 4 on rank 0; 1, 3 on rank 1
        save_png(data / f"more{i}.png", smooth_image(40, seed=30 + i)[0].float())
    ref = json.loads(_invert(data, tmp_path / "one").read_text())["images"]
    assert len(ref) == 10
    out, hold = tmp_path / "two", tmp_path / "rank1-stalled"
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_killable_worker, args=(r, 2, port, str(data), str(out), str(hold)))
             for r in range(2)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 120
        while not hold.exists():
            assert time.monotonic() < deadline, "rank 1 never reached its second shard"
            assert procs[1].is_alive(), "rank 1 died before it was killed"
            time.sleep(0.1)
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].join(10)
        procs[0].join(90)  # its barrier fails once rank 1's connection is gone
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
    assert procs[1].exitcode == -signal.SIGKILL
    assert procs[0].exitcode != 0  # rank 0 did not finish alone: no results.json
    shards = out / "shards"
    assert not (out / "results.json").exists()
    assert (shards / "shard-00001.json").is_file() and not (shards / "shard-00003.json").exists()
    assert not list(shards.glob(".*.tmp"))  # no half-written file left behind
    finished = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.json")}
    assert {"shard-00000.json", "shard-00001.json", "shard-00002.json", "shard-00004.json"} <= set(finished)
    assert len(finished) == 4  # only shard 3 (rank 1's second) is missing

    # the same command again, two processes: only the missing shard is inverted
    mp.spawn(_dataset_worker, args=(2, _free_port(), str(data), str(out)), nprocs=2, join=True)
    for name, t in finished.items():
        assert (shards / name).stat().st_mtime_ns == t, f"{name} was inverted twice"
    rows = [r["file"] for i in range(5) for r in json.loads((shards / f"shard-{i:05d}.json").read_text())]
    assert sorted(rows) == sorted(ref) and len(rows) == len(set(rows))  # none lost, none twice
    two = json.loads((out / "results.json").read_text())["images"]
    assert sorted(two) == sorted(ref)
    for f in ref:
        a, b = dict(ref[f]), dict(two[f])
        a.pop("seconds"), b.pop("seconds")
        assert a == b, f
    for i in range(5):
        a = load_file(str(tmp_path / "one" / "shards" / f"shard-{i:05d}.safetensors"))
        b = load_file(str(shards / f"shard-{i:05d}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), i


# ------------------------------------------------- experiment runners' per-image loops
def test_collective_timeout_setting(monkeypatch):
    from adjinv.distributed import init_from_env
    from adjinv.errors import AdjinvError

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("ADJINV_DIST_TIMEOUT_S", "a day")
    with pytest.raises(AdjinvError, match="ADJINV_DIST_TIMEOUT_S"):
        init_from_env()
    assert not dist.is_initialized()


def test_share_work_in_one_process_does_nothing():
    from adjinv.distributed import share_work

    seen = []
    assert share_work([1, 2, 3], seen.append) is True and seen == []  # the aggregation computes


def _recon_setup(root):
    from adjinv.fileio import save_png
    from adjinv.lacs.checkpoint import save_checkpoint
    from adjinv.paper.runners.reconstruction import ReconstructionConfig

    for sub, names in (("train", ["t0", "t1"]), ("held", ["h0", "h1", "h2"])):
        (root / sub).mkdir()
        for i, n in enumerate(names):
            save_png(root / sub / f"{n}.png", smooth_image(40, seed=50 + 10 * len(sub) + i)[0].float())
    enc = staged_from_sequential(tiny_relu_cnn(seed=0))
    from conftest import random_lacs

    (root / "curve").mkdir()
    save_checkpoint(root / "curve" / "step-00010.lac.safetensors", random_lacs(enc, 4), enc,
                    meta={"step": 10})
    lac = save_checkpoint(root / "lac.safetensors", random_lacs(enc, 3), enc, meta={"step": 20})
    return ReconstructionConfig(
        encoder="custom", lac=str(lac), curve=str(root / "curve"), train=str(root / "train"),
        heldout=str(root / "held"), size=32, crops=1, partners=[1, 2], mv_steps=2, upconv_steps=2,
        upconv_crops=1, reencoders=["tinyB"])


def _recon(cfg, out):
    from adjinv.paper.runners import reconstruction as rec

    # the figures are not what is compared here, and drawing them is most of the time
    figure, curve_plot = rec._figure, rec._curve_plot
    rec._figure = rec._curve_plot = lambda *a: None
    try:
        return rec.run_reconstruction(cfg, out, encoder=staged_from_sequential(tiny_relu_cnn(seed=0)),
                                      reencoders={"tinyB": staged_from_sequential(tiny_relu_cnn(seed=5))})
    finally:
        rec._figure, rec._curve_plot = figure, curve_plot


def _recon_worker(rank: int, world: int, port: int, cfg, out: str) -> None:
    from datetime import timedelta

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=300))
    from adjinv.paper.runners import reconstruction as rec

    real, computed = rec._Runner.compute, []

    def counted(self, inv, method, name, k):
        which = "main" if inv is self.inv else "identity" if inv is self.inv_id else "step10"
        computed.append((which, method, name, k))
        return real(self, inv, method, name, k)

    rec._Runner.compute = counted
    try:
        res = _recon(cfg, out)
        torch.save({"computed": computed, "results": res}, f"{out}.rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_reconstruction_two_processes_equal_one(tmp_path):
    """The per-(photo, crop, method) outputs shared over two gloo ranks, rank 0 scoring them,
    give the single process's results.json numbers."""
    import copy
    import json
    import math

    cfg = _recon_setup(tmp_path)
    one = _recon(copy.deepcopy(cfg), tmp_path / "one")
    mp.spawn(_recon_worker, args=(2, _free_port(), copy.deepcopy(cfg), str(tmp_path / "two")),
             nprocs=2, join=True)
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    ranks = [torch.load(str(tmp_path / "two") + f".rank{r}.pt", weights_only=False) for r in range(2)]
    assert json.dumps(ranks[1]["results"], sort_keys=True) == json.dumps(two, sort_keys=True)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    # the same outputs are cached, each computed exactly once, by one rank or the other
    files = sorted(p.relative_to(tmp_path / "one" / "cache")
                   for p in (tmp_path / "one" / "cache").rglob("*.safetensors"))
    assert files == sorted(p.relative_to(tmp_path / "two" / "cache")
                           for p in (tmp_path / "two" / "cache").rglob("*.safetensors"))
    done = [ranks[0]["computed"], ranks[1]["computed"]]
    assert min(map(len, done)) > 0 and len(done[0]) + len(done[1]) == len(files) == one["computed"]
    assert not set(done[0]) & set(done[1])
    assert two["computed"] == one["computed"]  # summed over the ranks
    assert set(one["cost_seconds"]) == set(two["cost_seconds"])  # the fits recorded once, by rank 0

    worst = 0.0

    def same(a, b, where):
        nonlocal worst
        if isinstance(a, dict):
            assert set(a) == set(b), where
            for k in a:
                same(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, list):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{where}[{i}]")
        elif isinstance(a, float) and not isinstance(b, bool):
            if math.isnan(a):
                assert math.isnan(b), where
            else:
                worst = max(worst, abs(a - b) / max(1.0, abs(a)))
                assert b == pytest.approx(a, rel=1e-5, abs=1e-6), where
        else:
            assert a == b, where

    for key in ("per_photo", "summary", "feature_k", "curve", "verdicts", "heldout", "protocol"):
        same(one[key], two[key], key)
    print(f"largest relative difference, 1 vs 2 processes: {worst:.2e}")


def _interference(out):
    import adjinv.paper.runners.fg_paradox as fgm
    from adjinv.paper.runners.cam_compare import CamCompareConfig, run_cam_compare
    from adjinv.paper.runners.fg_paradox import FGParadoxConfig, run_fg_paradox
    from adjinv.paper.runners.ood import OODConfig, run_ood
    from adjinv.paper.runners.superposition import SuperpositionConfig, run_superposition
    from conftest import random_lacs

    enc = staged_from_sequential(tiny_relu_cnn(seed=0))
    lacs = random_lacs(enc)
    plots = fgm.plot_bars, fgm.plot_example  # not compared here; drawing is most of the time
    fgm.plot_bars = fgm.plot_example = lambda *a: None
    try:
        fg = run_fg_paradox(FGParadoxConfig(size=32, max_images=5, randomize=[1]), out / "fg",
                            encoders=[enc], lacs=[lacs])
    finally:
        fgm.plot_bars, fgm.plot_example = plots
    sp = run_superposition(SuperpositionConfig(size=32, max_images=5, randomize=[1], figure_images=0,
                                               max_channels=8), out / "sp", encoder=enc, lacs=lacs)
    cam = run_cam_compare(CamCompareConfig(data=["samples"], size=32, max_images=3, steps=4,
                                           methods=["gradcam", "ours"], chunk_size=8), out / "cam",
                          encoder=enc)
    ood = run_ood(OODConfig(size=32, max_images=6, corruptions=["gaussian_noise", "contrast"],
                            severities=[1, 4], keep=4, max_iter=50, figure=False), out / "ood", encoder=enc)
    return fg, sp, cam, ood


def _interference_worker(rank: int, world: int, port: int, out: str) -> None:
    from pathlib import Path

    from adjinv.paper.runners import fg_paradox, superposition

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    computed = []
    for mod in (fg_paradox, superposition):  # count what each rank measures
        def counted(*a, _real=mod.measure_image, _name=mod.__name__, **k):
            computed.append(_name)
            return _real(*a, **k)

        mod.measure_image = counted
    try:
        fg, sp, cam, ood = _interference(Path(out))
        torch.save({"computed": computed, "fg": fg, "sp": sp, "cam": cam, "ood": ood}, f"{out}.rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_per_image_runners_two_processes_equal_one(tmp_path):
    """The per-image loops of fg-paradox, superposition and cam-compare, and ood's feature
    extraction, shared over two gloo ranks give the single process's numbers."""
    import json

    fg1, sp1, cam1, ood1 = _interference(tmp_path / "one")
    mp.spawn(_interference_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    ranks = [torch.load(str(tmp_path / "two") + f".rank{r}.pt", weights_only=False) for r in range(2)]
    fg2 = json.loads((tmp_path / "two" / "fg" / "results.json").read_text())
    sp2 = json.loads((tmp_path / "two" / "sp" / "results.json").read_text())
    assert json.dumps(ranks[1]["fg"], sort_keys=True) == json.dumps(fg2, sort_keys=True)
    assert json.dumps(ranks[1]["sp"], sort_keys=True) == json.dumps(sp2, sort_keys=True)
    cam2 = json.loads((tmp_path / "two" / "cam" / "results.json").read_text())
    assert json.dumps(ranks[1]["cam"], sort_keys=True) == json.dumps(cam2, sort_keys=True)
    ood2 = json.loads((tmp_path / "two" / "ood" / "results.json").read_text())
    assert json.dumps(ranks[1]["ood"], sort_keys=True) == json.dumps(ood2, sort_keys=True)
    ood1 = json.loads(json.dumps(ood1))
    for key in ("clean", "per_corruption", "mean_over_corruptions", "normalised", "covvol_subset",
                "bandwidth", "ridge"):
        assert ood1[key] == ood2[key], key
    # each of the 6 feature sets (clean train/test, 2 corruptions x 2 severities) extracted once
    sets = [p.parent for p in (tmp_path / "two" / "ood" / "cache").rglob("*") if p.is_file()]
    assert len(set(sets)) == 6
    rows1, rows2 = cam1["tables"]["samples"]["per_image"], cam2["tables"]["samples"]["per_image"]
    assert sorted(rows1) == sorted(rows2) and len(rows1) == 3
    for name, row in rows1.items():  # the same scores (the seconds are each run's own)
        for m, r in row.items():
            assert {k: v for k, v in r.items() if k != "seconds"} == \
                {k: v for k, v in rows2[name][m].items() if k != "seconds"}, (name, m)
    # the same numbers; 1 process: every image measured once (fg-paradox image 0 also for its
    # example figure, by rank 0); 2 processes: the images 1-4 of fg-paradox and 0-4 of
    # superposition are split between the ranks, each measured on exactly one
    fg1, sp1 = json.loads(json.dumps(fg1)), json.loads(json.dumps(sp1))
    assert json.dumps(fg1["encoders"][0]["images"]) == json.dumps(fg2["encoders"][0]["images"])
    assert json.dumps(fg1["encoders"][0]["summary"]) == json.dumps(fg2["encoders"][0]["summary"])
    assert json.dumps(sp1["images"]) == json.dumps(sp2["images"])
    assert json.dumps(sp1["summary"]) == json.dumps(sp2["summary"])
    fg_name, sp_name = "adjinv.paper.runners.fg_paradox", "adjinv.paper.runners.superposition"
    c0, c1 = ranks[0]["computed"], ranks[1]["computed"]
    assert c0.count(fg_name) + c1.count(fg_name) == 5 and c1.count(fg_name) == 2  # 4 shared + image 0
    assert c0.count(sp_name) == 3 and c1.count(sp_name) == 2
