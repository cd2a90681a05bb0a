"""Labelled image sets for training a head on the frozen encoder (``adjinv train-head``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import AdjinvError
from ...images.files import list_images, load_image, random_crop, resize_center_crop
from ...images.samples import SAMPLE_NAMES, sample_images


@dataclass
class LabelledSet:
    """Square images (3, S, S) in [0, 1] with integer labels, split into train and test.

    ``classes[k]`` names label ``k``; ``description`` says where the images came from
    (stored in checkpoints and results).
    """

    classes: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    description: str

    @property
    def size(self) -> int:
        """Image side in px."""
        return int(self.train_images.shape[-1])


def image_folder(folder: str | os.PathLike, size: int, *, test_fraction: float = 0.2,
                 seed: int = 0) -> LabelledSet:
    """An ImageFolder layout, one sub-folder per class (``folder/cat/*.jpg``,
    ``folder/dog/*.png``, …; files anywhere below a class folder count), resized and
    centre-cropped to ``size``. The split is stratified and deterministic in ``seed``:
    ``round(test_fraction · n)`` images of each class go to test, but every class keeps
    at least one training image."""
    root = Path(folder)
    if not root.is_dir():
        raise AdjinvError(f"labelled image folder {str(root)!r} does not exist")
    if not 0 <= test_fraction < 1:
        raise AdjinvError(f"test_fraction must be in [0, 1), got {test_fraction}")
    classes, files = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            found = list_images(sub)
        except AdjinvError:
            continue
        classes.append(sub.name)
        files.append(found)
    if len(classes) < 2:
        raise AdjinvError(f"{str(root)!r} needs at least two class sub-folders holding images "
                          f"(found {len(classes)}): lay it out as {root}/<class>/<image>")
    gen = torch.Generator().manual_seed(seed)
    tr_x: list[torch.Tensor] = []
    te_x: list[torch.Tensor] = []
    tr_y: list[int] = []
    te_y: list[int] = []
    for k, fs in enumerate(files):
        order = torch.randperm(len(fs), generator=gen).tolist()
        n_test = min(round(test_fraction * len(fs)), len(fs) - 1)
        for j, i in enumerate(order):
            img = resize_center_crop(load_image(fs[i], mode="convert"), size)
            (te_x if j < n_test else tr_x).append(img)
            (te_y if j < n_test else tr_y).append(k)
    return LabelledSet(classes, torch.stack(tr_x), torch.tensor(tr_y), _stack(te_x, size),
                       torch.tensor(te_y, dtype=torch.long),
                       f"image folder {str(root)!r}: {len(tr_y)} train / {len(te_y)} test images, "
                       f"{len(classes)} classes, split seed {seed}, {size} px centre crops")


def _stack(imgs: list[torch.Tensor], size: int) -> torch.Tensor:
    return torch.stack(imgs) if imgs else torch.zeros(0, 3, size, size)


def embedded_labelled_set(size: int = 128, *, train_per_class: int = 24, test_per_class: int = 8,
                          min_crop: float = 0.4, seed: int = 0) -> LabelledSet:
    """The embedded default labelled set: a **sanity check, not a benchmark**.

    Each of the five bundled photos (chelsea, coffee, astronaut, rocket, motorcycle;
    see [`adjinv.images.samples`][adjinv.images.samples]) is one class. Its training images are
    ``train_per_class`` random square crops (``min_crop``–100 % of the shorter side,
    random horizontal flip, resized to ``size``); its test images are
    ``test_per_class`` further crops drawn the same way from an independent random
    stream. Train and test crops of a class come from the *same photo* and overlap
    in content, so test accuracy measures recognising a photo from new crops, not
    generalisation to new images of a category.
    """
    if train_per_class < 1 or test_per_class < 0:
        raise AdjinvError("train_per_class must be >= 1 and test_per_class >= 0")
    photos = sample_images(SAMPLE_NAMES)
    tr_x: list[torch.Tensor] = []
    te_x: list[torch.Tensor] = []
    tr_y: list[int] = []
    te_y: list[int] = []
    for k, img in enumerate(photos.values()):
        g_tr = torch.Generator().manual_seed(seed * 1_000_003 + 2 * k)
        g_te = torch.Generator().manual_seed(seed * 1_000_003 + 2 * k + 1)
        tr_x += [random_crop(img, size, min_crop, g_tr) for _ in range(train_per_class)]
        te_x += [random_crop(img, size, min_crop, g_te) for _ in range(test_per_class)]
        tr_y += [k] * train_per_class
        te_y += [k] * test_per_class
    return LabelledSet(list(photos), torch.stack(tr_x), torch.tensor(tr_y), _stack(te_x, size),
                       torch.tensor(te_y, dtype=torch.long),
                       f"embedded: {train_per_class} train / {test_per_class} test random crops "
                       f"(>= {min_crop:.0%} of the shorter side, flips) of each of the "
                       f"{len(photos)} bundled photos, one class per photo, seed {seed}, {size} px "
                       "(a sanity check, not a benchmark: train and test crops share their photo)")


#: The detection set's textures: the head trains on the first three, is tested on the other two.
DETECTION_TRAIN_BACKGROUNDS = ("brick", "grass", "gravel")
DETECTION_TEST_BACKGROUNDS = ("hubble_deep_field", "immunohistochemistry")
#: Pasted objects: training-split photos for training, the held-out photos for testing.
DETECTION_TRAIN_OBJECTS = ("chelsea", "motorcycle", "retina", "moon", "coins")
DETECTION_TEST_OBJECTS = ("china", "flower", "grace_hopper", "astronaut", "coffee")


def composite_detection_set(size: int = 128, *, train_per_class: int = 24, test_per_class: int = 8,
                            seed: int = 0) -> LabelledSet:
    """An embedded two-class set whose test images are new images, not crops of training ones.

    Class ``object``: an elliptical cut-out (centre 80 % of the photo) pasted onto a
    texture crop ([`adjinv.paper.data.composites.paste()`][adjinv.paper.data.composites.paste]); class
    ``texture``: the texture
    crop alone. Training images paste the training-split photos of
    [`adjinv.images.photos`][adjinv.images.photos] that are not textures
    ([`DETECTION_TRAIN_OBJECTS`][DETECTION_TRAIN_OBJECTS]) onto
    [`DETECTION_TRAIN_BACKGROUNDS`][DETECTION_TRAIN_BACKGROUNDS]; test images paste the held-out photos
    ([`DETECTION_TEST_OBJECTS`][DETECTION_TEST_OBJECTS], evaluation only) onto
    [`DETECTION_TEST_BACKGROUNDS`][DETECTION_TEST_BACKGROUNDS], textures no training image shows. Balanced
    classes; placements from ``seed``. Greyscale photos are replicated to RGB.
    """
    from ...images.photos import photo
    from .composites import background_crop, paste

    if train_per_class < 1 or test_per_class < 1:
        raise AdjinvError("train_per_class and test_per_class must be >= 1")

    def make(objects: tuple[str, ...], backgrounds: tuple[str, ...], n: int, base: int
             ) -> tuple[list[torch.Tensor], list[int]]:
        xs: list[torch.Tensor] = []
        ys: list[int] = []
        fgs = {o: photo(o).permute(1, 2, 0).double().numpy() for o in objects}
        for j in range(n):
            o, bgd = objects[j % len(objects)], backgrounds[(j // len(objects)) % len(backgrounds)]
            c = paste(fgs[o], (0.1, 0.1, 0.9, 0.9), o, bgd, base + j)
            xs.append(resize_center_crop(c.image, size))
            ys.append(0)
            xs.append(resize_center_crop(background_crop(backgrounds[j % len(backgrounds)],
                                                         base + 50_000 + j), size))
            ys.append(1)
        return xs, ys

    tr_x, tr_y = make(DETECTION_TRAIN_OBJECTS, DETECTION_TRAIN_BACKGROUNDS, train_per_class,
                      seed * 1_000_003 + 10_000)
    te_x, te_y = make(DETECTION_TEST_OBJECTS, DETECTION_TEST_BACKGROUNDS, test_per_class,
                      seed * 1_000_003 + 20_000)
    return LabelledSet(["object", "texture"], torch.stack(tr_x), torch.tensor(tr_y),
                       torch.stack(te_x), torch.tensor(te_y, dtype=torch.long),
                       f"embedded detection composites: object (cut-out pasted on a texture) vs "
                       f"texture alone; train {len(tr_y)} images pasting the training-split photos "
                       f"{', '.join(DETECTION_TRAIN_OBJECTS)} on {', '.join(DETECTION_TRAIN_BACKGROUNDS)}; "
                       f"test {len(te_y)} images pasting the held-out photos "
                       f"{', '.join(DETECTION_TEST_OBJECTS)} on "
                       f"{', '.join(DETECTION_TEST_BACKGROUNDS)} (objects and textures no training "
                       f"image shows); seed {seed}, {size} px")
