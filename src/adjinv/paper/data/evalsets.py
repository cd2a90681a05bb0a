"""Evaluation sets for the Table 1 / Table 3 runners: test images by name, optional
foreground masks, and training images (for UpConvNet and the vanilla map's fit).

Spec strings (``--data``):

- ``samples`` — the embedded default: the five bundled photos (centre crops) as test
  images; training images are random crops of the same photos
  ([`adjinv.paper.data.labelled.embedded_labelled_set()`][adjinv.paper.data.labelled.embedded_labelled_set],
  as for the bundled LACs). No masks.
- ``composites`` — the embedded mask-bearing composites
([`adjinv.paper.data.composites`][adjinv.paper.data.composites]):
  test images with exact masks, so the localisation metrics exist on the embedded default.
- ``images:DIR`` — every image in a folder (test only, no training split).
- ``KIND:ROOT`` — a dataset of
[`adjinv.paper.data.datasets.open_dataset()`][adjinv.paper.data.datasets.open_dataset] (``oxford_pet``,
  ``stanford_dogs``, ``cifar100``, ``imagefolder``, or ``lfw``): its test split (first
  ``max_images``, classes interleaved) and train split. For ``oxford_pet`` the masks are
  the official trimaps ``annotations/trimaps/<name>.png``; [choice] foreground = the pet,
  trimap value 1 ([`adjinv.paper.data.masks.pet_foreground()`][adjinv.paper.data.masks.pet_foreground], as
  for the masked datasets).
- any spec with ``@MASKDIR`` appended: masks from ``MASKDIR/<image stem>.png`` (any
  non-zero pixel is foreground), resized and cropped like the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import AdjinvError
from ...images.files import list_images, load_image, resize_center_crop
from ...images.samples import SAMPLE_NAMES, sample_images
from .datasets import first_per_class, open_dataset
from .labelled import embedded_labelled_set
from .masks import pet_foreground, read_pet_trimap


@dataclass
class EvalSet:
    """``test``: name → (3, S, S) in [0, 1]; ``masks``: name → (S, S) bool, or None;
    ``train``: (N, 3, S, S) or None."""

    spec: str
    label: str
    test: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] | None
    train: torch.Tensor | None
    description: str


def slug(spec: str) -> str:
    """A folder-safe name for a spec."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_")[:80] or "data"


def _mask_file(path: Path, size: int, trimap: bool) -> torch.Tensor:
    from PIL import Image

    if trimap:
        fg = pet_foreground(read_pet_trimap(path))
    else:
        if not path.is_file():
            raise AdjinvError(f"mask {str(path)!r} does not exist (masks are matched by image name)")
        with Image.open(path) as im:
            fg = torch.from_numpy(np.array(im.convert("L")) > 0)
    return resize_center_crop(fg.float()[None], size)[0] > 0.5


def open_eval_set(spec: str, size: int, *, max_images: int | None = None,
                  train_images: int = 64, seed: int = 0) -> EvalSet:
    """Resolve ``spec`` (see the module docstring) at ``size`` px."""
    base, _, mask_dir = spec.partition("@")
    masks: dict[str, torch.Tensor] | None = None
    if base == "samples":
        photos = sample_images(SAMPLE_NAMES)
        names = list(photos)[:max_images]
        test = {n: resize_center_crop(photos[n], size) for n in names}
        desc = f"bundled photos ({', '.join(names)}), {size} px centre crops"
        train = None
        if train_images > 0:
            per = -(-train_images // len(SAMPLE_NAMES))
            train = embedded_labelled_set(size, train_per_class=per, test_per_class=0,
                                          seed=seed).train_images
            desc += (f"; training images: {per} random crops of each photo (they share content "
                     "with the test images)")
        stems = {n: n for n in names}
    elif base == "composites" or base.startswith("composites:"):
        from .masks import open_masked

        ds = open_masked(base, "test", size)
        n = len(ds) if max_images is None else min(len(ds), max_images)
        items = [ds[i] for i in range(n)]
        test = {it.name: it.image for it in items}
        masks = {it.name: it.mask for it in items}
        stems = {it.name: it.name for it in items}
        train = None
        desc = (f"embedded composites ({n} images, masks exact by construction: the pasted "
                f"ellipse), {size} px")
    elif base.startswith("images:"):
        files = list_images(base.partition(":")[2])[:max_images]
        test = {f.stem: resize_center_crop(load_image(f, mode="convert"), size) for f in files}
        stems = {f.stem: f.stem for f in files}
        train = None
        desc = (f"{len(files)} images from {base.partition(':')[2]}, {size} px centre crops "
                "(no training split)")
    else:
        ds_test = open_dataset(base, "test", size, seed)
        ds_train = open_dataset(base, "train", size, seed)
        sub = first_per_class(ds_test, max_images) if max_images is not None else ds_test
        ds_files = getattr(ds_test, "files", None)
        test, stems = {}, {}
        for j, i in enumerate(getattr(sub, "indices", range(len(sub)))):
            name = ds_files[i].stem if ds_files is not None else f"{j:05d}"
            test[name] = ds_test[i][0]
            stems[name] = name
        tr = first_per_class(ds_train, train_images) if train_images < len(ds_train) else ds_train
        train = torch.stack([tr[i][0] for i in range(len(tr))]) if train_images > 0 else None
        desc = (f"{base}: {len(test)} test images (classes interleaved), {len(tr)} training "
                f"images, {size} px")
        if base.startswith("oxford_pet:") and not mask_dir:
            tri = Path(base.partition(":")[2]) / "annotations" / "trimaps"
            masks = {n: _mask_file(tri / f"{s}.png", size, True) for n, s in stems.items()}
            desc += "; masks: official trimaps (foreground = pet, trimap value 1)"
    if mask_dir:
        md = Path(mask_dir)
        masks = {n: _mask_file(md / f"{s}.png", size, False) for n, s in stems.items()}
        desc += f"; masks from {md}"
    if not test:
        raise AdjinvError(f"data {spec!r} has no test images")
    return EvalSet(spec, slug(spec), test, masks, train, desc)
