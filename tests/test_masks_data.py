"""Masked datasets in their official layouts (tiny fake copies) and the embedded composites."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adjinv.errors import AdjinvError
from adjinv.paper.data.composites import composite_set
from adjinv.paper.data.masks import CUB200, ImageMaskFolder, OxfordPetMasks, open_masked


def _img(path, h=40, w=60, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _mask(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def test_cub_layout(tmp_path):
    root = tmp_path / "CUB_200_2011"
    rows = [(1, "001.Black_footed_Albatross/a_1.jpg", 1, 1), (2, "001.Black_footed_Albatross/a_2.jpg", 1, 0),
            (3, "002.Laysan_Albatross/b_1.jpg", 2, 0)]
    (root).mkdir(parents=True)
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in rows))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    m = np.zeros((40, 60))
    m[10:30, 20:40] = 255
    m[0, 0] = 100  # a soft annotator disagreement below 0.5
    for i, p, _, _ in rows:
        _img(root / "images" / p, seed=i)
        _mask(tmp_path / "segmentations" / p.replace(".jpg", ".png"), m)
    test = CUB200(tmp_path, "test", size=20)
    assert len(test) == 2 and [it[3] for it in test.items] == [0, 1]
    s = test[1]
    assert s.image.shape == (3, 20, 20) and s.mask.dtype == torch.bool and s.label == 1
    assert 0.2 < s.mask.float().mean() < 0.7 and not s.mask[0, 0]
    assert len(CUB200(root, "train", size=20)) == 1
    assert test.classes[1] == "002.Laysan_Albatross"


def _pet_layout(root, test, trainval, tri):
    """A fake Oxford-IIIT Pet: the split files (lines ``name class-id species breed-id``),
    a photo and the trimap ``tri`` for every image listed."""
    ann = root / "annotations"
    ann.mkdir()
    (ann / "test.txt").write_text(test)
    (ann / "trainval.txt").write_text(trainval)
    for i, line in enumerate((test + trainval).splitlines()):
        n = line.split()[0]
        _img(root / "images" / f"{n}.jpg", seed=i)
        _mask(ann / "trimaps" / f"{n}.png", tri)
    return ann


def test_pet_trimaps(tmp_path):
    tri = np.full((40, 60), 2)
    tri[10:30, 10:50] = 1
    tri[10, 10:50] = 3
    _pet_layout(tmp_path, "Birman_1 7 1 4\nbeagle_2 12 2 3\n", "Birman_3 7 1 4\n", tri)
    ds = OxfordPetMasks(tmp_path, "test", size=40)
    s = ds[0]
    assert s.label == 6 and ds.classes[6] == "Birman" and s.name == "Birman_1"
    with_border = OxfordPetMasks(tmp_path, "test", size=40, boundary=True)[0]
    assert with_border.mask.sum() > s.mask.sum()
    assert len(open_masked(f"oxford_pet:{tmp_path}", "train", 40)) == 1


def test_pet_foreground_is_one_definition(tmp_path):
    """Trimap 1 = pet, 2 = background, 3 = border: the masked datasets and the evaluation
    sets of the runners read the same foreground (the pet alone) from the same files."""
    from adjinv.paper.data.evalsets import open_eval_set
    from adjinv.paper.data.masks import pet_foreground, read_pet_trimap

    t = torch.tensor([[1, 2, 3]])
    assert pet_foreground(t).tolist() == [[True, False, False]]
    assert pet_foreground(t, boundary=True).tolist() == [[True, False, True]]
    tri = np.full((40, 60), 2)
    tri[8:32, 10:50] = 3
    tri[12:28, 14:46] = 1
    ann = _pet_layout(tmp_path, "Birman_1 1 1 1\nbeagle_2 2 2 1\n", "Birman_3 1 1 1\nbeagle_4 2 2 1\n", tri)
    # a palette trimap: the values are labels, read as they are (not as grey levels)
    pal = Image.fromarray(tri.astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 255, 255, 0, 0, 255, 255, 0, 0] + [0] * 756)
    pal.save(ann / "trimaps" / "beagle_2.png")
    assert torch.equal(read_pet_trimap(ann / "trimaps" / "beagle_2.png"), torch.from_numpy(tri))
    ds = OxfordPetMasks(tmp_path, "test", size=32)
    ev = open_eval_set(f"oxford_pet:{tmp_path}", 32, train_images=1)
    assert ev.masks is not None and set(ev.masks) == {"Birman_1", "beagle_2"}
    for item in (ds[0], ds[1]):
        assert torch.equal(ev.masks[item.name], item.mask)
    # the border is out: the pet's 16 x 32 px, scaled by 32/40 into the 32 x 32 crop (the
    # border band would make it 24 x 40)
    assert ds[0].mask.float().mean() == pytest.approx(16 * 0.8 * 32 * 0.8 / 32**2, abs=0.03)


def test_image_mask_folder(tmp_path):
    for i in range(2):
        _img(tmp_path / "im" / f"p{i}.jpg", seed=i)
        m = np.zeros((40, 60))
        m[:, :30] = 1
        _mask(tmp_path / "mk" / f"p{i}.png", m)
    ds = ImageMaskFolder(tmp_path / "im", tmp_path / "mk", size=40)
    assert len(ds) == 2 and ds[0].mask.shape == (40, 40)
    _img(tmp_path / "im" / "lonely.jpg")
    with pytest.raises(AdjinvError, match="no mask"):
        ImageMaskFolder(tmp_path / "im", tmp_path / "mk", size=40)
    with pytest.raises(AdjinvError):
        open_masked("nope:x")


def test_composites_deterministic_masks_exact():
    a, b = composite_set("fg"), composite_set("ecr")
    assert len(a) == 10 and len(b) == 10 and all(c.photo == "chelsea" for c in b)
    c = a[0]
    assert c.image.shape == (3, 224, 224) and c.mask.shape == (224, 224)
    assert 0.05 < c.mask.float().mean() < 0.5
    ds = open_masked("composites", size=64)
    s = ds[3]
    assert s.image.shape == (3, 64, 64) and s.mask.any()
    assert torch.equal(ds[3].image, s.image)
