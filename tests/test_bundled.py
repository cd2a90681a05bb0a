"""The bundled LAC checkpoint for the embedded default (integration, real weights)."""

from __future__ import annotations

import torch

import adjinv
from adjinv.checkpoint import bundled_checkpoint, read_checkpoint
from adjinv.core.lac import LACBank
from adjinv.data import resize_center_crop, sample_image
from adjinv.metrics.reconstruction import ssim


def test_bundled_checkpoint_is_small_and_loads():
    path = bundled_checkpoint("efficientnet_lite0")
    assert path is not None and path.stat().st_size < 64_000
    meta, tensors = read_checkpoint(path)
    assert not any(k.startswith("extra.adam.") for k in tensors)
    assert meta["complete"] and meta["training"]["channel_fraction"] == 1.0
    enc = adjinv.load_encoder("efficientnet_lite0")
    lacs, vanilla, source = adjinv.load_lacs(enc)
    assert source == str(path) and vanilla is not None
    # training moved the LACs away from the identity
    assert any((p - q).abs().max() > 1e-2 for p, q in
               zip(lacs.parameters(), LACBank.for_encoder(enc).parameters(), strict=True))


def test_trained_lacs_reconstruct_better_than_identity():
    enc = adjinv.load_encoder("efficientnet_lite0")
    lacs, _, _ = adjinv.load_lacs(enc)
    img = resize_center_crop(sample_image("chelsea"), 96)[None]
    x = enc.normalize(img[0])[None]
    last = enc.num_stages - 1
    scores = []
    for bank in (LACBank.for_encoder(enc), lacs):
        x_hat = adjinv.AdjointInverter(enc, bank).invert(x, stages=[last]).x_hat[last]
        scores.append(float(ssim(enc.to_display(x_hat), img)))
    assert torch.isfinite(torch.tensor(scores)).all()
    assert scores[1] > scores[0] + 0.02
