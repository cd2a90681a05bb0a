"""The bundled LAC checkpoint for the embedded default (integration, real weights)."""

from __future__ import annotations

import pytest
import torch

import adjinv
from adjinv.core.lac import LACBank
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import HELDOUT, TRAIN, VALIDATION, is_greyscale, photo
from adjinv.lacs.checkpoint import bundled_checkpoint, bundled_variants, read_checkpoint

# every default trained by the corpus recipe; the 96 px LACs are the paper-colour variants
AT_224 = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_the_96_px_lite_lacs_are_small_load_and_never_saw_the_heldout_photos(name):
    """Lite1 / Lite2's LACs by the 96 px recipe, their ``paper-colour`` variant."""
    path = bundled_checkpoint(name, "paper-colour")
    assert path is not None and path.stat().st_size < 64_000
    meta, tensors = read_checkpoint(path)
    assert not any(k.startswith(("extra.adam.", "extra.last.", "extra.best.")) for k in tensors)
    assert meta["complete"]
    trained_on = {name.split(":", 1)[-1] for name in meta["training"]["images"]}
    # the training split's colour photos (benchmarks/train_embedded.py --photos colour)
    assert trained_on == {n for n in TRAIN if not is_greyscale(photo(n))}
    assert not trained_on & (set(HELDOUT) | set(VALIDATION))
    # the shipped weights are the best validation checkpoint of the run
    assert meta["step"] == meta["early_stopping"]["best_step"]
    assert meta["variant"] == "paper-colour"
    enc = adjinv.load_encoder(name)
    lacs, vanilla, source = adjinv.load_lacs(enc, "paper-colour")
    assert source == str(path) and vanilla is not None
    assert any((p - q).abs().max() > 1e-2 for p, q in
               zip(lacs.parameters(), LACBank.for_encoder(enc).parameters(), strict=True))


def test_bundled_variants_are_named_and_the_pixbias_one_limits_leakage():
    """The ``pixbias`` variant has β only at the pixels: the seed-zero cascade is the
    constant image β_pix, so no likeness can come from biases pulled back through the
    photo's Jacobians."""
    assert {"paper", "pixbias", "paper-colour"} <= set(bundled_variants("efficientnet_lite0"))
    for v in ("paper", "pixbias"):
        meta, _ = read_checkpoint(bundled_checkpoint("efficientnet_lite0", v))
        assert meta["variant"] == v and meta["training"]["objective"] == v
    assert read_checkpoint(bundled_checkpoint("efficientnet_lite0"))[0]["variant"] == "paper-224"
    enc = adjinv.load_encoder("efficientnet_lite0")
    lacs = adjinv.load_lacs(enc, "pixbias").lacs
    for name, lac in lacs.lacs.items():
        if name != "pix":
            assert torch.equal(lac.beta, torch.zeros_like(lac.beta))
    x = enc.normalize(resize_center_crop(photo("china"), 64))[None]
    z = adjinv.AdjointInverter(enc, lacs).seed_zero_control(x)
    torch.testing.assert_close(z, lacs.pix.beta.detach().view(1, 3, 1, 1).expand_as(z))


def test_trained_lacs_lower_the_validation_loss():
    """The training objective on a validation photo (never trained on) is lower than with
    identity LACs."""
    enc = adjinv.load_encoder("efficientnet_lite0")
    lacs = adjinv.load_lacs(enc).lacs
    x = enc.normalize(resize_center_crop(photo(VALIDATION[0]), 128))[None]
    last = enc.num_stages - 1
    l1 = [float((adjinv.AdjointInverter(enc, bank).invert(x, stages=[last]).x_hat[last] - x).abs().mean())
          for bank in (LACBank.for_encoder(enc), lacs)]
    assert l1[1] < l1[0], l1


@pytest.mark.parametrize("name", AT_224)
def test_the_default_is_eq9_at_224_px_trained_on_the_corpus_training_photos_only(name):
    """The default (``paper-224``): Eq. 9 at 224 px on the corpus (docs/evidence.md, Result 6),
    trained on the corpus's colour training photos only, the run finished by early stopping
    and its weights those of the best validation check."""
    import json
    from pathlib import Path

    path = bundled_checkpoint(name)
    assert path is not None and path.stat().st_size < 64_000
    meta, tensors = read_checkpoint(path)
    assert not any(k.startswith(("extra.adam.", "extra.last.", "extra.best.")) for k in tensors)
    assert meta["variant"] == "paper-224" and meta["training"]["objective"] == "paper"
    assert meta["training"]["size"] == 224 and meta["complete"] and meta["training_finished"]
    assert meta["step"] == meta["weights_step"] == meta["early_stopping"]["best_step"]
    assert meta["steps_run"] > meta["step"]  # stopped by the patience rule after its best check
    manifest = Path(__file__).resolve().parent.parent / "benchmarks" / "corpus" / "manifest.json"
    rows = json.loads(manifest.read_text())["photos"]
    trained_on = {n.split(":", 1)[1] for n in meta["training"]["images"]}
    assert all(n.startswith("corpus:") for n in meta["training"]["images"])
    assert trained_on == {r["name"] for r in rows if r["split"] == "train" and not r["greyscale"]}
    assert not trained_on & ({r["name"] for r in rows if r["split"] != "train"} | set(HELDOUT))
    assert meta["encoder"]["name"] == name
    enc = adjinv.load_encoder(name)
    lacs, vanilla, source = adjinv.load_lacs(enc)
    assert source == str(path) and vanilla is not None
    assert any((p - q).abs().max() > 1e-2 for p, q in
               zip(lacs.parameters(), LACBank.for_encoder(enc).parameters(), strict=True))


def test_the_early_stopped_96_px_default_ships_as_paper_colour():
    """The previous default, kept as a named variant: Eq. 9 at 96 px on the embedded training
    split's colour photos, weights of its best validation check."""
    meta, _ = read_checkpoint(bundled_checkpoint("efficientnet_lite0", "paper-colour"))
    assert meta["variant"] == "paper-colour" and meta["step"] == meta["early_stopping"]["best_step"]
    trained_on = {n.split(":", 1)[-1] for n in meta["training"]["images"]}
    assert trained_on == {n for n in TRAIN if not is_greyscale(photo(n))}
    assert not trained_on & (set(HELDOUT) | set(VALIDATION))
