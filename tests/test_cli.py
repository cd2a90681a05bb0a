"""The command line on the real embedded default, at small sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from adjinv.cli import PRECISION_CHOICES, main
from adjinv.core.precision import PRECISIONS
from adjinv.errors import AdjinvError
from adjinv.lacs.checkpoint import read_checkpoint


def _photo(path, seed=0, size=(72, 90)):
    rng = np.random.default_rng(seed)
    base = rng.random((size[0] // 8, size[1] // 8, 3))
    arr = np.kron(base, np.ones((8, 8, 1)))[: size[0], : size[1]]
    Image.fromarray((arr * 255).astype(np.uint8)).save(path)
    return path


def test_cli_offers_every_precision():
    assert PRECISION_CHOICES == PRECISIONS


def test_encoders_lists_registry(capsys):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    for name in ("efficientnet_lite0", "resnet18", "resnet50", "densenet121", "convnext_base"):
        assert name in out


def test_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["invert", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("adjinv: error:") and "does not exist" in err[0]
    assert "Traceback" not in "".join(err)


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(AdjinvError):
        main(["--debug", "invert", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")])


def test_unknown_encoder(tmp_path, capsys):
    img = _photo(tmp_path / "a.png")
    assert main(["invert", str(img), "--encoder", "vgg99", "--out", str(tmp_path / "o")]) == 2
    assert "unknown architecture" in capsys.readouterr().err


@pytest.mark.parametrize("device,message", [("cuda:7", "CUDA device"), ("quantum", "not a torch device")])
def test_unusable_device_is_a_clear_error(tmp_path, capsys, device, message):
    img = _photo(tmp_path / "a.png")
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that many GPUs")
    assert main(["invert", str(img), "--out", str(tmp_path / "o"), "--device", device]) == 2
    assert message in capsys.readouterr().err


def test_invert_writes_every_output(tmp_path):
    img = _photo(tmp_path / "cat.png")
    out = tmp_path / "out"
    assert main(["invert", str(img), "--out", str(out), "--size", "64", "--channels", "3"]) == 0
    d = out / "cat"
    s = json.loads((d / "summary.json").read_text())
    assert set(s["top1"]) == {"index", "name", "probability"}
    assert 0 <= s["top1"]["index"] < 1000 and 0 < s["top1"]["probability"] <= 1
    assert len(s["stages"]) == 6
    for st in s["stages"]:
        assert (d / st["file"]).is_file()
    for w in s["simplex_weights"].values():
        assert abs(sum(w) - 1) < 1e-4
    for key in ("reconstruction", "seed_zero_control"):
        assert -1 <= s[key]["ssim"] <= 1 and np.isfinite(s[key]["psnr"])
    assert len(s["top_channels"]) == 3
    for c in s["top_channels"]:
        assert (d / c["file"]).is_file()
    for f in ("input.png", "class.png", "class_pos.png", "class_neg.png", "control_seed_zero.png"):
        assert (d / f).is_file()
    van = s["vanilla_gradient"]
    # the bundled LAC checkpoint carries the fitted vanilla map, so the baseline is scored
    assert "ssim" in van and (d / "vanilla.png").is_file()
    assert (out / "index.html").is_file()
    assert "cat/class.png" in (out / "index.html").read_text()
    assert not list(out.rglob("*.tmp"))


def test_train_checkpoints_and_resumes(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _photo(folder / "a.png", 1)
    _photo(folder / "b.png", 2)
    ck = tmp_path / "lac.safetensors"
    args = ["train", "--images", str(folder), "--out", str(ck), "--size", "40",
            "--checkpoint-every", "1", "--chunk-size", "64"]
    assert main([*args, "--steps", "2"]) == 0
    meta, tensors = read_checkpoint(ck)
    assert meta["step"] == 2 and meta["complete"] and "extra.vanilla.gain" in tensors
    # an existing checkpoint is never overwritten without --resume
    assert main([*args, "--steps", "3"]) == 2
    assert "--resume" in capsys.readouterr().err
    small = tmp_path / "small.safetensors"
    assert main([*args, "--steps", "3", "--resume", "--export", str(small)]) == 0
    meta, _ = read_checkpoint(ck)
    assert meta["step"] == 3 and len(meta["losses"]) == 3
    meta_s, t_small = read_checkpoint(small)
    assert meta_s["step"] == 3 and not any(k.startswith("extra.adam.") for k in t_small)
    assert "extra.vanilla.gain" in t_small and "lac.lacs.pix.gamma" in t_small


def test_train_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--images", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_invert_announces_colour_conversion(tmp_path, capsys):
    gray = tmp_path / "g.png"
    Image.fromarray((np.random.default_rng(3).random((48, 56)) * 255).astype(np.uint8)).save(gray)
    assert main(["invert", str(gray), "--out", str(tmp_path / "o"), "--size", "48",
                 "--channels", "1"]) == 0
    assert "converted colour mode 'L' to RGB" in capsys.readouterr().err
    assert (tmp_path / "o" / "g" / "summary.json").is_file()
