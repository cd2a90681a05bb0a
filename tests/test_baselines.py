"""Reconstruction baselines (docs/method.md §13): M&V objective, UpConvNet training/resume, LPIPS
availability, SSIM identity."""

from __future__ import annotations

import pytest
import torch
import torchvision

from adjinv.errors import AdjinvError
from adjinv.metrics.lpips import load_lpips
from adjinv.metrics.reconstruction import ssim
from adjinv.paper.baselines.mahendran import (
    MVConfig,
    _converged,
    mahendran_vedaldi,
    mv_objective,
    robust_inversion,
    total_variation,
)
from adjinv.paper.baselines.upconv import (
    UpConvConfig,
    UpConvDecoder,
    crop_bank,
    export_upconv,
    load_upconv,
    train_upconv,
    upconv_reconstruct,
)
from conftest import smooth_image, staged_from_sequential, tiny_relu_cnn


@pytest.fixture(scope="module")
def tiny32():
    return staged_from_sequential(tiny_relu_cnn(seed=0))


def test_ssim_of_an_image_with_itself_is_one():
    img = smooth_image(32, batch=2)
    assert torch.allclose(ssim(img, img), torch.ones(2, dtype=torch.float64))


def test_total_variation_by_hand():
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0  # two unit differences at (0,0): right and down
    assert float(total_variation(x, 2.0)) == pytest.approx(2.0)
    assert float(total_variation(x, 1.0)) == pytest.approx(2**0.5, abs=1e-5)


def test_mv_objective_decreases_on_a_tiny_encoder():
    # bias-free: the near-zero start has features ~0, so the data term starts near 1
    enc = staged_from_sequential(tiny_relu_cnn(seed=0, bias=False))
    x0 = enc.normalize(smooth_image(32))
    cfg = MVConfig(steps=40, lr=0.05)
    rec = mahendran_vedaldi(enc, x0, cfg)
    assert rec.shape == x0.shape and torch.isfinite(rec).all()
    assert cfg.history[0] > 0.9
    assert cfg.history[-1] < 0.6 * cfg.history[0]


def test_mv_weights_are_configurable(tiny32):
    cfg = MVConfig(lambda_alpha=0.5, lambda_tv=0.25)
    assert cfg.weights(32, 32) == (0.5, 0.25)
    la, lt = MVConfig().weights(10, 10)
    assert la == pytest.approx(1 / (100 * (80 / 255) ** 6))
    assert lt == pytest.approx(1 / (100 * (80 / 255 / 6.5) ** 2))


def test_mv_scales_multiply_the_weights_in_effect():
    la, lt = MVConfig().weights(10, 10)
    assert MVConfig(alpha_scale=2.0, tv_scale=16.0).weights(10, 10) == pytest.approx((2 * la, 16 * lt))
    assert MVConfig(lambda_tv=0.25, tv_scale=4.0).weights(10, 10)[1] == pytest.approx(1.0)
    cfg = MVConfig(optimizer="adam", tv_scale=4.0, stage=2, tol=1e-3)
    assert MVConfig(**cfg.to_dict()).to_dict() == cfg.to_dict()
    assert cfg.to_dict()["lr"] == 0.01 and MVConfig().to_dict()["lr"] == 0.05


def test_mv_stopping_rule_by_hand():
    falling = [1.0 - 0.5 * (1 - 0.8**t) for t in range(40)]  # 1 → 0.5, flat by the end
    assert _converged(falling, 5, 1e-2)
    assert not _converged(falling[:20], 5, 1e-2)  # still falling fast
    assert not _converged(falling, 5, 1e-2, min_steps=41)
    assert not _converged(falling, 5, 0.0)  # tol 0: never
    assert not _converged(falling[:9], 5, 1.0)  # fewer than 2·window steps
    # a plateau at the start (no decrease yet) and a transient above the start never stop
    assert not _converged([1.0] * 40, 5, 1e-2)
    assert not _converged([1.0, *([3.0] * 39)], 5, 1e-2)
    # a rise larger than tol times the gain does not stop either
    assert not _converged([1.0] * 10 + [0.5] * 5 + [0.7] * 5, 5, 1e-2)


def test_mv_stops_before_the_cap_and_records_it():
    enc = staged_from_sequential(tiny_relu_cnn(seed=0, bias=False))
    x0 = enc.normalize(smooth_image(32))
    cfg = MVConfig(steps=2000, optimizer="adam", lr=0.02, tol=1e-2, window=10)
    mahendran_vedaldi(enc, x0, cfg)
    assert cfg.converged and 20 <= cfg.steps_run < 2000
    assert len(cfg.history) == cfg.steps_run and cfg.history[-1] < 0.6 * cfg.history[0]
    info = cfg.run_info()
    assert info["steps_run"] == cfg.steps_run and info["converged"] and info["lr"] == 0.02
    # tol 0 (the default) runs every step and says so
    full = MVConfig(steps=30, optimizer="adam", lr=0.02, window=10)
    mahendran_vedaldi(enc, x0, full)
    assert full.steps_run == 30 and not full.converged and len(full.history) == 30


def test_mv_adam_lowers_the_energy():
    enc = staged_from_sequential(tiny_relu_cnn(seed=0, bias=False))
    x0 = enc.normalize(smooth_image(32, batch=2))
    cfg = MVConfig(steps=60, optimizer="adam")
    rec = mahendran_vedaldi(enc, x0, cfg)
    assert rec.shape == x0.shape and torch.isfinite(rec).all()
    assert cfg.history[-1] < 0.5 * cfg.history[0]


def test_mv_inverts_a_shallower_stage():
    enc = staged_from_sequential(tiny_relu_cnn(seed=0, bias=False))
    x0 = enc.normalize(smooth_image(32))
    cfg = MVConfig(steps=60, optimizer="adam", stage=1)
    rec = mahendran_vedaldi(enc, x0, cfg)
    z0 = torch.zeros_like(x0)
    z1 = enc.denormalize(rec) - enc.mean.view(1, 3, 1, 1)
    with torch.no_grad():
        phi0 = enc.forward_stages(x0)[1]
        start = mv_objective(enc, z0, phi0, cfg)[1]["data"]
        end = mv_objective(enc, z1, phi0, cfg)[1]["data"]
    assert float(start) == pytest.approx(1.0, abs=0.05)  # near-zero image: features ~0
    assert float(end) < 0.7 * float(start)  # the priors keep it above 0
    # the objective reads stage 1: the deepest stage's features have another shape
    assert phi0.shape[1] == 8 and enc.forward_stages(x0)[-1].shape[1] == 16
    # stage 1 is reconstructed better than by inverting the deepest stage
    deep = mahendran_vedaldi(enc, x0, MVConfig(steps=60, optimizer="adam"))
    zd = enc.denormalize(deep) - enc.mean.view(1, 3, 1, 1)
    with torch.no_grad():
        assert float(mv_objective(enc, zd, phi0, cfg)[1]["data"]) > float(end) + 0.1


def test_mv_stops_when_the_energy_is_no_longer_finite():
    enc = staged_from_sequential(tiny_relu_cnn(seed=0, bias=False))
    x0 = enc.normalize(smooth_image(32))
    cfg = MVConfig(steps=500, lr=1.0, tv_scale=100.0)  # TV diffusion step far past stability
    mahendran_vedaldi(enc, x0, cfg)
    assert cfg.diverged and not cfg.converged and cfg.steps_run < 500
    assert cfg.run_info()["diverged"]
    ok = MVConfig(steps=5)
    mahendran_vedaldi(enc, x0, ok)
    assert not ok.diverged


@pytest.mark.parametrize("bad", [
    {"optimizer": "lbfgs"}, {"tol": -1e-3}, {"tol": float("nan")}, {"window": 0}, {"window": 2.5},
    {"min_steps": -1}, {"stage": 1.5}, {"stage": True}, {"tv_scale": -1.0},
    {"alpha_scale": float("inf")}, {"lr": 0.0}, {"steps": 0}, {"lambda_tv": -1.0},
    {"lr_drop_at": 1.5},
])
def test_mv_rejects_bad_settings(tiny32, bad):
    with pytest.raises(AdjinvError, match="M&V"):
        mahendran_vedaldi(tiny32, torch.zeros(1, 3, 32, 32), MVConfig(**bad))


def test_mv_rejects_a_stage_out_of_range(tiny32):
    with pytest.raises(AdjinvError, match="stage 4 is out of range"):
        mahendran_vedaldi(tiny32, torch.zeros(1, 3, 32, 32), MVConfig(stage=4))
    with pytest.raises(AdjinvError, match="out of range"):
        mahendran_vedaldi(tiny32, torch.zeros(1, 3, 32, 32), MVConfig(stage=-5))


def test_robust_inversion_needs_weights(tiny32):
    with pytest.raises(AdjinvError, match="robust"):
        robust_inversion(tiny32, torch.zeros(1, 3, 32, 32), weights=None)


def test_upconv_decoder_overfits_one_tiny_batch(tiny32):
    imgs = smooth_image(32, batch=2, seed=3)
    dec, losses = train_upconv(tiny32, imgs, UpConvConfig(steps=200, batch_size=2, lr=5e-3,
                                                          width=32, min_width=16))
    assert losses[-1] < 0.25 * losses[0]
    rec = upconv_reconstruct(tiny32, dec, tiny32.normalize(imgs))
    assert rec.shape == imgs.shape


def test_upconv_resume_is_bit_identical(tiny32, tmp_path):
    imgs = smooth_image(32, batch=3, seed=4)
    cfg = {"batch_size": 2, "width": 16, "min_width": 8, "checkpoint_every": 3}
    full, lf = train_upconv(tiny32, imgs, UpConvConfig(steps=6, **cfg), checkpoint=tmp_path / "a.st")
    train_upconv(tiny32, imgs, UpConvConfig(steps=3, **cfg), checkpoint=tmp_path / "b.st")
    resumed, lr = train_upconv(tiny32, imgs, UpConvConfig(steps=6, **cfg), checkpoint=tmp_path / "b.st")
    assert lf == lr and lf.stopped == lr.stopped == "steps"
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # a complete checkpoint is loaded, not retrained
    again, la = train_upconv(tiny32, imgs, UpConvConfig(steps=6, **cfg), checkpoint=tmp_path / "b.st")
    assert la == lf and all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                               full.state_dict().values(), strict=True))
    with pytest.raises(AdjinvError, match="differ"):
        train_upconv(tiny32, imgs, UpConvConfig(steps=6, **{**cfg, "batch_size": 3}),
                     checkpoint=tmp_path / "b.st")


class _Crash(Exception):
    pass


def _crash_at(n: int):
    def progress(step: int, total: int, loss: float) -> None:
        if step == n:
            raise _Crash

    return progress


def test_upconv_early_stopping_returns_the_best_decoder(tiny32, tmp_path):
    # lr 0.05 overshoots: the validation loss is lowest at the first check, then rises
    imgs, val = smooth_image(32, batch=3, seed=4), smooth_image(32, batch=2, seed=7)
    cfg = UpConvConfig(steps=40, batch_size=2, lr=0.05, width=16, min_width=8, validate_every=2,
                       patience=2)
    dec, hist = train_upconv(tiny32, imgs, cfg, checkpoint=tmp_path / "a.st", val_images=val)
    vals = [r["val_loss"] for r in hist.validation]
    assert hist.stopped == "plateau" and len(hist) < cfg.steps
    assert len(hist) == hist.best_step + cfg.patience * cfg.validate_every
    assert hist.best_val == min(vals) < vals[-1]
    assert hist.best_step == hist.validation[vals.index(min(vals))]["step"]
    # the decoder returned is the best one, not the last: its validation loss is best_val
    feats = tiny32.forward_stages(tiny32.normalize(val))[-1]
    with torch.no_grad():
        got = float(torch.nn.functional.mse_loss(dec(feats, (32, 32)), tiny32.normalize(val)))
    assert got == pytest.approx(hist.best_val, rel=1e-6)
    # a finished (plateaued) run is loaded, not trained on, even with a higher step cap
    again, h2 = train_upconv(tiny32, imgs, UpConvConfig(**{**cfg.__dict__, "steps": 80}),
                             checkpoint=tmp_path / "a.st", val_images=val)
    assert list(h2) == list(hist) and h2.stopped == "plateau"
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 dec.state_dict().values(), strict=True))
    assert torch.equal(load_upconv(tmp_path / "a.st", tiny32).net[0].weight, dec.net[0].weight)


def test_upconv_validation_settings_are_checked(tiny32):
    imgs = smooth_image(32, batch=2, seed=4)
    with pytest.raises(AdjinvError, match="patience"):
        train_upconv(tiny32, imgs, UpConvConfig(steps=1, patience=2))
    with pytest.raises(AdjinvError, match="val_images"):
        train_upconv(tiny32, imgs, UpConvConfig(steps=1, validate_every=1))
    with pytest.raises(AdjinvError, match="val_images"):
        train_upconv(tiny32, imgs, UpConvConfig(steps=1), val_images=imgs)


def test_upconv_resume_with_validation_is_bit_identical(tiny32, tmp_path):
    """A run killed between its best validation check and its early stop, then resumed,
    ends exactly like an uninterrupted one: losses, validation record, stopping step,
    weights, file. (The killed run's last checkpoint holds the best weights and 2 of the
    3 checks of patience; losing either would change the result.)"""
    from safetensors.torch import load_file

    from adjinv.lacs.checkpoint import read_tagged

    imgs, val = smooth_image(32, batch=3, seed=4), smooth_image(32, batch=2, seed=7)
    cfg = UpConvConfig(steps=30, batch_size=2, lr=0.02, width=16, min_width=8, validate_every=2,
                       patience=3, checkpoint_every=4)
    full, hf = train_upconv(tiny32, imgs, cfg, checkpoint=tmp_path / "a.st", val_images=val)
    assert hf.stopped == "plateau" and (hf.best_step, len(hf)) == (8, 14)
    with pytest.raises(_Crash):
        train_upconv(tiny32, imgs, cfg, checkpoint=tmp_path / "b.st", val_images=val,
                     progress=_crash_at(13))
    meta, _ = read_tagged(tmp_path / "b.st", "adjinv-upconv/1", "x", "x")
    assert (meta["step"], meta["best_step"], meta["bad"], meta["stopped"]) == (12, 8, 2, "")
    resumed, hr = train_upconv(tiny32, imgs, cfg, checkpoint=tmp_path / "b.st", val_images=val)
    assert list(hr) == list(hf) and hr.record() == hf.record()
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    ta, tb = load_file(tmp_path / "a.st"), load_file(tmp_path / "b.st")
    assert ta.keys() == tb.keys() and any(k.startswith("best.") for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    # another validation set or validation cadence cannot resume this run
    with pytest.raises(AdjinvError, match="validate_every"):
        train_upconv(tiny32, imgs, UpConvConfig(**{**cfg.__dict__, "validate_every": 3}),
                     checkpoint=tmp_path / "b.st", val_images=val)


def test_load_upconv_refuses_another_encoder(tiny32, tmp_path):
    imgs = smooth_image(32, batch=2, seed=4)
    train_upconv(tiny32, imgs, UpConvConfig(steps=2, batch_size=2, width=16, min_width=8),
                 checkpoint=tmp_path / "a.st")
    other = staged_from_sequential(tiny_relu_cnn(seed=1))  # same layout, other weights
    with pytest.raises(AdjinvError, match="another encoder"):
        load_upconv(tmp_path / "a.st", other)
    export_upconv(tmp_path / "a.st", tmp_path / "a.export.st")
    with pytest.raises(AdjinvError, match="another encoder"):
        load_upconv(tmp_path / "a.export.st", other)
    assert isinstance(load_upconv(tmp_path / "a.st", tiny32), UpConvDecoder)


def test_upconv_export_round_trip(tiny32, tmp_path):
    from safetensors.torch import load_file

    imgs, val = smooth_image(32, batch=3, seed=4), smooth_image(32, batch=2, seed=7)
    cfg = UpConvConfig(steps=12, batch_size=2, lr=0.01, width=32, min_width=8, validate_every=2)
    dec, hist = train_upconv(tiny32, imgs, cfg, checkpoint=tmp_path / "t.st", val_images=val)
    meta = export_upconv(tmp_path / "t.st", tmp_path / "e.st")
    assert meta["kind"] == "inference" and meta["weights_step"] == hist.best_step < 12
    stored = load_file(tmp_path / "e.st")
    assert all(k.startswith("decoder.") and v.dtype == torch.float16 for k, v in stored.items())
    assert (tmp_path / "e.st").stat().st_size < (tmp_path / "t.st").stat().st_size / 5
    loaded = load_upconv(tmp_path / "e.st", tiny32)
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    x = tiny32.normalize(val)
    want, got = upconv_reconstruct(tiny32, dec, x), upconv_reconstruct(tiny32, loaded, x)
    assert not torch.equal(want, got)  # float16 storage rounds the weights ...
    assert torch.allclose(want, got, rtol=0, atol=2e-3 * float(want.abs().max()))  # ... slightly
    with pytest.raises(AdjinvError, match="inference-only"):
        train_upconv(tiny32, imgs, cfg, checkpoint=tmp_path / "e.st", val_images=val)


def test_crop_bank_is_seeded_per_photo_and_crop():
    photos = {"a": smooth_image(48, seed=1)[0], "b": smooth_image(48, seed=2)[0]}
    bank = crop_bank(photos, 16, 3, 0.5, seed=0)
    assert bank.shape == (6, 3, 16, 16) and float(bank.min()) >= 0 and float(bank.max()) <= 1
    assert torch.equal(bank, crop_bank(photos, 16, 3, 0.5, seed=0))
    assert not torch.equal(bank, crop_bank(photos, 16, 3, 0.5, seed=1))
    assert len({tuple(c.flatten()[:64].tolist()) for c in bank}) == 6  # six different crops
    # a photo's crops do not depend on the other photos
    assert torch.equal(bank[3:], crop_bank({"b": photos["b"]}, 16, 3, 0.5, seed=0))
    with pytest.raises(AdjinvError):
        crop_bank(photos, 16, 0, 0.5)


def test_upconv_output_size():
    dec = UpConvDecoder(16, 8, width=16, min_width=8)
    assert dec(torch.zeros(1, 16, 4, 4)).shape == (1, 3, 32, 32)
    with pytest.raises(AdjinvError):
        UpConvDecoder(16, 6)


def test_lpips_unavailable_without_weights():
    metric, reason = load_lpips("alex")
    assert metric is None and "unavailable" in reason and "random" in reason
    metric, reason = load_lpips("vgg", backbone="x.pth")
    assert metric is None and "linear-layer" in reason


def test_lpips_with_supplied_files(tmp_path):
    """The mechanics with files the 'user' supplies (random values here, so only identities
    are checked): d(x, x) = 0, d ≥ 0, symmetric."""
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alex_backbone.pth")
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
           for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(lin, tmp_path / "alex.pth")
    metric, reason = load_lpips("alex", tmp_path / "alex_backbone.pth", tmp_path / "alex.pth")
    assert reason == ""
    a, b = smooth_image(64, batch=2, seed=0), smooth_image(64, batch=2, seed=1)
    assert torch.allclose(metric(a, a), torch.zeros(2), atol=1e-6)
    d = metric(a, b)
    assert (d > 0).all() and torch.allclose(d, metric(b, a))
    with pytest.raises(AdjinvError, match="vgg16"):
        load_lpips("vgg", tmp_path / "alex_backbone.pth", tmp_path / "alex.pth")
