"""LAC checkpoints, training (loss decrease, exact resume) and the reconstruction metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file

from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.errors import AdjinvError
from adjinv.lacs.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from adjinv.lacs.training import TrainConfig, train_lacs
from adjinv.metrics.reconstruction import psnr, ssim
from conftest import random_lacs, smooth_image, staged_from_sequential, tiny_relu_cnn


def _assert_same_lacs(a: LACBank, b: LACBank) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tiny_enc, tmp_path):
    lacs = random_lacs(tiny_enc, seed=3)
    extras = {"vanilla.gain": torch.tensor([1.0, 2.0, 3.0]), "blob": torch.arange(6.0).view(2, 3)}
    p = save_checkpoint(tmp_path / "sub" / "lac.safetensors", lacs, tiny_enc,
                        meta={"note": "hello", "step": 7}, extras=extras)
    assert p.is_file()
    assert not [f for f in p.parent.iterdir() if f.name != p.name]  # no temp files left
    loaded, ck = load_checkpoint(p, tiny_enc)
    _assert_same_lacs(loaded, lacs)
    assert loaded.boundaries == lacs.boundaries == {1: 8, 2: 12}
    assert (loaded.pix.eps, loaded.pix.eps_mode) == (lacs.pix.eps, lacs.pix.eps_mode)
    assert ck.meta["note"] == "hello" and ck.meta["step"] == 7
    assert ck.meta["encoder_hash"] == tiny_enc.weights_hash()
    assert ck.extras.keys() == extras.keys()
    for k, v in extras.items():
        assert torch.equal(ck.extras[k], v)
    # the loaded LACs invert identically
    x = tiny_enc.normalize(smooth_image(32, seed=1, dtype=torch.float64))
    a = AdjointInverter(tiny_enc, lacs).invert(x, stages=[3]).x_hat[3]
    b = AdjointInverter(tiny_enc, loaded).invert(x, stages=[3]).x_hat[3]
    assert torch.equal(a, b)


def test_checkpoint_non_default_eps_mode_round_trip(tiny_enc, tmp_path):
    lacs = LACBank.for_encoder(tiny_enc, eps=1e-12, eps_mode="channel")
    p = save_checkpoint(tmp_path / "c.safetensors", lacs, tiny_enc)
    loaded, _ = load_checkpoint(p, tiny_enc)
    assert (loaded.pix.eps, loaded.pix.eps_mode) == (1e-12, "channel")
    assert (loaded.at(2).eps, loaded.at(2).eps_mode) == (1e-12, "channel")


def test_checkpoint_for_another_encoder_refused(tiny_enc, inplace_model, tmp_path):
    import adjinv

    other = adjinv.encoder_from_module(inplace_model, probe_size=32)
    p = save_checkpoint(tmp_path / "o.safetensors", LACBank.for_encoder(other), other)
    with pytest.raises(AdjinvError, match="was trained for") as ei:
        load_checkpoint(p, tiny_enc)
    msg = str(ei.value)
    assert "8/8/12/16" in msg  # both layouts are described
    # a layout differing in one stage only (channel count) is refused too
    torch.manual_seed(0)
    m = tiny_relu_cnn()
    m[2][0] = torch.nn.Conv2d(8, 10, 3, 2, 1)
    m[3][0] = torch.nn.Conv2d(10, 16, 3, 2, 1)
    enc2 = staged_from_sequential(m.double())
    with pytest.raises(AdjinvError, match="was trained for"):
        load_checkpoint(save_checkpoint(tmp_path / "t.safetensors", LACBank.for_encoder(enc2),
                                        enc2), tiny_enc)


def test_checkpoint_other_weights_refused_unless_allowed(tiny_enc, tmp_path):
    lacs = random_lacs(tiny_enc, seed=4)
    p = save_checkpoint(tmp_path / "w.safetensors", lacs, tiny_enc)
    twin = staged_from_sequential(tiny_relu_cnn(seed=1).double())  # same layout, other weights
    assert twin.layout() == tiny_enc.layout()
    assert twin.weights_hash() != tiny_enc.weights_hash()
    with pytest.raises(AdjinvError, match="other weights") as ei:
        load_checkpoint(p, twin)
    assert "allow_other_weights" in str(ei.value)
    loaded, _ = load_checkpoint(p, twin, allow_other_weights=True)
    _assert_same_lacs(loaded, lacs)


def test_weights_hash_follows_weight_changes(tiny_enc, tmp_path):
    """BUG: ``StagedEncoder.weights_hash`` is cached on first use (staged.py), so after
    the wrapped modules' weights change (fine-tuning, ``model.load_state_dict``; the
    modules are shared with the user's model) it still returns the old hash and
    ``load_checkpoint`` accepts LACs trained for other weights."""
    p = save_checkpoint(tmp_path / "w.safetensors", LACBank.for_encoder(tiny_enc), tiny_enc)
    h0 = tiny_enc.weights_hash()
    with torch.no_grad():
        tiny_enc.stages[0].body[0].weight.mul_(2.0)
    assert tiny_enc.weights_hash() != h0
    with pytest.raises(AdjinvError, match="other weights"):
        load_checkpoint(p, tiny_enc)


def test_truncated_and_corrupt_checkpoints(tiny_enc, tmp_path):
    p = save_checkpoint(tmp_path / "ok.safetensors", random_lacs(tiny_enc), tiny_enc)
    data = p.read_bytes()
    half = tmp_path / "half.safetensors"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdjinvError, match="truncated or corrupt"):
        load_checkpoint(half, tiny_enc)
    tail = tmp_path / "tail.safetensors"
    tail.write_bytes(data[:-8])
    with pytest.raises(AdjinvError, match="truncated or corrupt"):
        load_checkpoint(tail, tiny_enc)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AdjinvError, match="truncated or corrupt"):
        read_checkpoint(junk)
    with pytest.raises(AdjinvError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors", tiny_enc)


def test_safetensors_without_adjinv_metadata(tiny_enc, tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(p))
    with pytest.raises(AdjinvError, match="not an adjinv LAC checkpoint"):
        load_checkpoint(p, tiny_enc)
    q = tmp_path / "othermeta.safetensors"
    save_file({"w": torch.zeros(3)}, str(q), metadata={"adjinv": json.dumps({"format": "x/9"})})
    with pytest.raises(AdjinvError, match="not an adjinv LAC checkpoint"):
        read_checkpoint(q)
    r = tmp_path / "badjson.safetensors"
    save_file({"w": torch.zeros(3)}, str(r), metadata={"adjinv": "{not json"})
    with pytest.raises(AdjinvError, match="not an adjinv LAC checkpoint"):
        read_checkpoint(r)


def test_checkpoint_with_inconsistent_tensors(tiny_enc, tmp_path):
    p = save_checkpoint(tmp_path / "ok.safetensors", random_lacs(tiny_enc), tiny_enc)
    meta, tensors = read_checkpoint(p)
    del tensors["lac.lacs.s2.beta"]
    q = tmp_path / "bad.safetensors"
    q.write_bytes(st_save(tensors, metadata={"adjinv": json.dumps(meta)}))
    with pytest.raises(AdjinvError, match="inconsistent"):
        load_checkpoint(q, tiny_enc)


# ----------------------------------------------------------------------------- training
def _train_images() -> list[torch.Tensor]:
    return [smooth_image(40, seed=s)[0] for s in range(2)]


def test_training_resume_is_exact(tiny_enc, tmp_path):
    imgs = _train_images()
    cfg = {"size": 32, "checkpoint_every": 1, "lr": 0.05, "seed": 3, "batch_size": 1}
    one = tmp_path / "one.safetensors"
    lacs_a, van_a, loss_a = train_lacs(tiny_enc, imgs, TrainConfig(steps=4, **cfg),
                                       checkpoint=one, chunk_size=5)
    assert loss_a[-1] != loss_a[0]
    two = tmp_path / "two.safetensors"
    _, _, loss_b1 = train_lacs(tiny_enc, imgs, TrainConfig(steps=2, **cfg), checkpoint=two,
                               chunk_size=5)
    assert read_checkpoint(two)[0]["step"] == 2
    lacs_b, van_b, loss_b = train_lacs(tiny_enc, imgs, TrainConfig(steps=4, **cfg),
                                       checkpoint=two, resume=True, chunk_size=5)
    assert len(loss_a) == len(loss_b) == 4 and loss_b[:2] == loss_b1
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-12)
    for k, v in lacs_a.state_dict().items():
        torch.testing.assert_close(lacs_b.state_dict()[k], v, rtol=1e-6, atol=1e-8)
    # training moved the parameters away from identity
    assert any((lacs_a.lacs[n].beta.abs() > 0).any() for n in lacs_a.lacs)
    torch.testing.assert_close(van_a.gain, van_b.gain)
    meta, _ = read_checkpoint(two)
    assert meta["step"] == 4 and meta["complete"] is True and len(meta["losses"]) == 4


def test_training_resume_after_interruption(tiny_enc, tmp_path):
    imgs = _train_images()
    cfg = TrainConfig(steps=4, size=32, checkpoint_every=1, lr=0.05, seed=3)
    ref, _, ref_loss = train_lacs(tiny_enc, imgs, cfg)

    def stop_at_3(step, total, loss):
        if step == 3:
            raise KeyboardInterrupt

    p = tmp_path / "int.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_lacs(tiny_enc, imgs, cfg, checkpoint=p, progress=stop_at_3)
    meta, _ = read_checkpoint(p)
    assert meta["step"] == 2 and meta["complete"] is False
    got, _, loss = train_lacs(tiny_enc, imgs, cfg, checkpoint=p, resume=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(got.state_dict()[k], v, rtol=1e-6, atol=1e-8)


def test_resume_with_other_config_refused(tiny_enc, tmp_path):
    imgs = _train_images()
    p = tmp_path / "c.safetensors"
    train_lacs(tiny_enc, imgs, TrainConfig(steps=1, size=32, lr=0.05), checkpoint=p)
    with pytest.raises(AdjinvError, match="lr"):
        train_lacs(tiny_enc, imgs, TrainConfig(steps=2, size=32, lr=0.01), checkpoint=p,
                   resume=True)


def test_training_reduces_reconstruction_loss(tiny_enc):
    imgs = _train_images()
    cfg = TrainConfig(steps=25, size=32, lr=0.05, seed=0, min_crop=1.0, checkpoint_every=1000)
    lacs, _, losses = train_lacs(tiny_enc, imgs, cfg)
    assert all(np.isfinite(losses))
    # the held-fixed evaluation: ℓ1 of x̂_L on the (un-augmented) training images
    x = tiny_enc.normalize(torch.stack([torch.nn.functional.interpolate(
        i[None], size=(32, 32), mode="bilinear", antialias=True)[0] for i in imgs]))
    x = x.double()

    def l1(bank):
        return float((AdjointInverter(tiny_enc, bank).invert(x, stages=[3]).x_hat[3] - x)
                     .abs().mean())

    before, after = l1(LACBank.for_encoder(tiny_enc)), l1(lacs)
    assert after < 0.8 * before, (before, after)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_training_input_errors(tiny_enc):
    with pytest.raises(AdjinvError, match="no training images"):
        train_lacs(tiny_enc, [], TrainConfig(steps=1, size=32))
    with pytest.raises(AdjinvError, match="smaller than"):
        train_lacs(tiny_enc, [torch.rand(3, 4, 4)], TrainConfig(steps=1, size=32))
    with pytest.raises(AdjinvError, match="channel_fraction"):
        train_lacs(tiny_enc, _train_images(), TrainConfig(steps=1, size=32, channel_fraction=0))


# ----------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("size", [(24, 24), (33, 41)])
def test_ssim_equals_skimage(size):
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, *size, generator=g, dtype=torch.float64)
    b = (a + 0.2 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = ssim(a, b)
    assert got.shape == (2,)
    for i in range(2):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, data_range=1,
                                    channel_axis=0)
        assert abs(float(got[i]) - ref) < 1e-10, (float(got[i]), ref)
    torch.testing.assert_close(ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert (got < 0.99).all()


def test_psnr():
    a = torch.zeros(1, 3, 8, 8)
    b = torch.full((1, 3, 8, 8), 0.1)
    torch.testing.assert_close(psnr(a, b), torch.tensor([20.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        ssim(a, b[:, :, :4])


def test_resolve_checkpoint_names_the_choices(tmp_path):
    from adjinv.lacs.checkpoint import bundled_checkpoint, bundled_variants, resolve_checkpoint

    assert resolve_checkpoint("efficientnet_lite0", None) == bundled_checkpoint("efficientnet_lite0")
    assert resolve_checkpoint("no_such_encoder", None) is None
    f = tmp_path / "mine.lac.safetensors"
    f.write_bytes(b"x")
    assert resolve_checkpoint("efficientnet_lite0", str(f)) == f
    for v in bundled_variants("efficientnet_lite0"):
        assert resolve_checkpoint("efficientnet_lite0", v) == bundled_checkpoint("efficientnet_lite0", v)
    # the default by the variant name it records (what the CLI's --lac help names)
    from adjinv.lacs.checkpoint import default_variant, read_checkpoint

    own = default_variant("efficientnet_lite0")
    assert own and own in bundled_variants("efficientnet_lite0")
    assert own == read_checkpoint(bundled_checkpoint("efficientnet_lite0"))[0]["variant"]
    assert resolve_checkpoint("efficientnet_lite0", own) == bundled_checkpoint("efficientnet_lite0")
    with pytest.raises(AdjinvError, match=f"does not exist.*{own}"):
        resolve_checkpoint("efficientnet_lite0", "nope")
