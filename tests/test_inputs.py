"""Bad inputs get an AdjinvError whose message names the problem (and the fix)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adjinv.core.inverter import AdjointInverter
from adjinv.core.validate import check_input
from adjinv.errors import AdjinvError
from adjinv.images.files import array_to_tensor, list_images, load_image
from conftest import smooth_image


def test_adjinv_error_is_a_value_error():
    assert issubclass(AdjinvError, ValueError)


def test_good_input_passes_and_is_cast(tiny_enc):
    x = tiny_enc.normalize(smooth_image(32))  # float32 in, float64 encoder
    y = check_input(x[0], tiny_enc)  # a single (3, H, W) image is accepted
    assert y.shape == (1, 3, 32, 32) and y.dtype == torch.float64


@pytest.mark.parametrize(
    ("make", "keyword"),
    [
        (lambda: torch.rand(32, 32), "shape"),
        (lambda: torch.rand(2, 1, 3, 32, 32), "shape"),
        (lambda: (torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "floating-point"),
        (lambda: torch.randint(0, 255, (1, 3, 32, 32)), "floating-point"),
        (lambda: torch.rand(1, 1, 32, 32), "grayscale"),
        (lambda: torch.rand(1, 32, 32), "grayscale"),
        (lambda: torch.rand(1, 4, 32, 32), "RGBA"),
        (lambda: torch.rand(2, 3, 32, 32).index_put_((torch.tensor(1), torch.tensor(0)),
                                                     torch.tensor(float("nan"))), "NaN"),
        (lambda: torch.rand(1, 3, 32, 32).index_put_((torch.tensor(0), torch.tensor(2)),
                                                     torch.tensor(float("inf"))), "Inf"),
        (lambda: torch.rand(1, 3, 4, 4), "stride"),
        (lambda: torch.rand(1, 3, 32, 5), "stride"),
        (lambda: torch.zeros(1, 3, 32, 32), "constant"),
        (lambda: torch.cat([torch.rand(1, 3, 32, 32), torch.full((1, 3, 32, 32), 0.3)]),
         "constant"),
        (lambda: np.random.rand(32, 32, 3), "torch.Tensor"),
    ],
)
def test_bad_tensor_inputs(tiny_enc, make, keyword):
    x = make()
    with pytest.raises(AdjinvError, match=keyword):
        check_input(x, tiny_enc)
    # every public entry point validates the same way
    with pytest.raises(AdjinvError, match=keyword):
        AdjointInverter(tiny_enc).invert(x)


def test_stride_message_names_the_minimum(tiny_enc):
    with pytest.raises(AdjinvError) as ei:
        check_input(torch.rand(1, 3, 4, 4), tiny_enc)
    assert "8x8" in str(ei.value)


def test_normalised_uniform_colour_image_is_refused(tiny_enc):
    """BUG: check_input only refuses an image whose pixels are equal across *all*
    channels. After normalisation with the ImageNet mean/std, a uniform grey image has a
    different constant in each channel, so it is accepted although it has no spatial
    structure (validate.py: the constant test flattens C, H and W together)."""
    grey = tiny_enc.normalize(torch.full((1, 3, 32, 32), 0.5))
    with pytest.raises(AdjinvError, match="constant"):
        check_input(grey, tiny_enc)


# ----------------------------------------------------------------------------- files
def _save(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_load_good_png(tmp_path):
    arr = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    t = load_image(_save(tmp_path / "ok.png", arr))
    assert t.shape == (3, 20, 30) and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_grayscale_file(tmp_path):
    arr = (np.random.default_rng(0).random((20, 30)) * 255).astype(np.uint8)
    p = _save(tmp_path / "g.png", arr)
    with pytest.raises(AdjinvError, match="grayscale") as ei:
        load_image(p)
    assert "convert" in str(ei.value)
    assert load_image(p, mode="convert").shape == (3, 20, 30)


def test_rgba_file(tmp_path):
    arr = (np.random.default_rng(0).random((20, 30, 4)) * 255).astype(np.uint8)
    p = _save(tmp_path / "a.png", arr)
    with pytest.raises(AdjinvError, match="RGBA") as ei:
        load_image(p)
    assert "alpha" in str(ei.value)
    assert load_image(p, mode="convert").shape == (3, 20, 30)


def test_arrays_grayscale_and_rgba():
    with pytest.raises(AdjinvError, match="grayscale"):
        array_to_tensor(np.zeros((8, 8), np.uint8))
    with pytest.raises(AdjinvError, match="grayscale"):
        array_to_tensor(np.zeros((8, 8, 1), np.uint8))
    with pytest.raises(AdjinvError, match="RGBA"):
        array_to_tensor(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(AdjinvError, match="shape"):
        array_to_tensor(np.zeros((8, 8, 2), np.uint8))
    t = array_to_tensor(np.full((4, 5, 3), 65535, np.uint16))
    assert t.shape == (3, 4, 5) and float(t.max()) == 1.0


@pytest.mark.parametrize("mode", ["P", "CMYK"])
def test_other_colour_modes_are_not_misnamed(tmp_path, mode):
    """BUG: a palette PNG is reported as "grayscale" and a CMYK JPEG as "RGBA" (the
    strict check in images/files.py looks only at the array shape, not at PIL's mode)."""
    rgb = Image.fromarray((np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8))
    img = rgb.convert(mode)
    p = tmp_path / ("x.png" if mode == "P" else "x.jpg")
    img.save(p)
    with pytest.raises(AdjinvError) as ei:
        load_image(p)
    msg = str(ei.value)
    assert "grayscale" not in msg and "RGBA" not in msg, msg
    assert "convert" in msg
    assert load_image(p, mode="convert").shape == (3, 16, 16)


def test_unreadable_file(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"this is not a png at all \x00\x01\x02" * 10)
    with pytest.raises(AdjinvError, match="cannot read"):
        load_image(p)


def test_truncated_png(tmp_path):
    arr = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    good = _save(tmp_path / "good.png", arr).read_bytes()
    p = tmp_path / "half.png"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(AdjinvError, match="cannot read"):
        load_image(p)


@pytest.mark.parametrize("read, name, match", [
    (load_image, "nope.png", "does not exist"),  # a missing file
    (list_images, "", "holds no images"),  # a folder without images
    (list_images, "nope", "does not exist"),  # a missing folder
])
def test_missing_files_and_folders(tmp_path, read, name, match):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(AdjinvError, match=match):
        read(tmp_path / name)


def test_list_images_finds_nested_files_sorted(tmp_path):
    arr = np.zeros((8, 8, 3), np.uint8)
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "b.png", arr)
    _save(tmp_path / "sub" / "a.JPG", arr)
    (tmp_path / "c.txt").write_text("x")
    files = list_images(tmp_path)
    assert files == [tmp_path / "b.png", tmp_path / "sub" / "a.JPG"]
