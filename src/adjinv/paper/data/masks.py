"""Images with foreground masks (Sec. 3.2.1, Supp. C.2), in their official layouts.

A masked dataset has ``len(ds)``, ``ds[i] -> MaskedImage`` (image (3, S, S) in [0, 1],
boolean mask (S, S), label, name) and ``describe()``. Image and mask are resized
(shorter side) and centre-cropped with the same geometry; the mask is resized
bilinearly and thresholded at 0.5.

- [`CUB200`][CUB200] — CUB-200-2011 (Wah et al. 2011): ``images.txt``,
  ``image_class_labels.txt``, ``train_test_split.txt``, ``classes.txt``,
  ``images/<class>/<file>.jpg`` and the separately distributed
  ``segmentations/<class>/<file>.png`` (inside the root or beside it).
  [choice] CUB masks are soft (several annotators); foreground is ``≥ 0.5``.
- [`OxfordPetMasks`][OxfordPetMasks] — Oxford-IIIT Pet (Parkhi et al. 2012): ``images/*.jpg``,
  ``annotations/{trainval,test}.txt`` and ``annotations/trimaps/<name>.png``
  (1 = pet, 2 = background, 3 = border). [choice] foreground = 1 ([`pet_foreground()`][pet_foreground],
  shared with the evaluation sets); ``boundary=True`` counts the border as foreground too.
- [`ImageMaskFolder`][ImageMaskFolder] — any ``images/`` folder with a ``masks/`` folder holding
  one mask per image with the same file stem (non-zero = foreground, any format).
- [`CompositeMasks`][CompositeMasks] — the embedded sample set: see
[`adjinv.paper.data.composites`][adjinv.paper.data.composites].

Nothing is downloaded.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AdjinvError
from ...images.files import IMAGE_SUFFIXES, list_images, load_image
from .datasets import SizedImages, _check_split, dataset_folder

RESIZE = "resize shorter side (bilinear, antialias) + centre crop; mask bilinear, > 0.5"


@dataclass
class MaskedImage:
    """One image (3, S, S) in [0, 1] with its boolean foreground mask (S, S)."""

    image: torch.Tensor
    mask: torch.Tensor
    label: int
    name: str


def resize_center_crop_pair(img: torch.Tensor, mask: torch.Tensor, size: int
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize the shorter side to ``size`` and centre-crop a square, image (3, H, W) and
    mask (H, W) with the same geometry (the mask bilinear then ``> 0.5``)."""
    _, h, w = img.shape
    if mask.shape != (h, w):
        raise AdjinvError(f"mask {tuple(mask.shape)} and image {(h, w)} differ in size")
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    both = torch.cat([img, mask[None].float()])[None]
    out = F.interpolate(both, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    out = out[:, top:top + size, left:left + size]
    return out[:3].clamp(0, 1), out[3] > 0.5


def load_mask(path: str | os.PathLike, threshold: float | None = None) -> torch.Tensor:
    """A mask file as (H, W) float in [0, 1] (RGB/alpha files: max over channels);
    with ``threshold`` a boolean ``> threshold·max`` instead."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise AdjinvError(f"mask {str(p)!r} does not exist")
    try:
        with Image.open(p) as im:
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise AdjinvError(f"cannot read mask {str(p)!r} ({type(e).__name__})") from None
    a = arr.astype(np.float64)
    if a.ndim == 3:
        a = a.max(-1)
    top = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
    if arr.dtype == bool:
        top = 1.0
    t = torch.from_numpy(a / top).float()
    if threshold is not None:
        m = t.max()
        return t > threshold * m if m > 0 else t > 0
    return t


class MaskedDataset(SizedImages):
    """Base: subclasses set ``self.items`` (name, image path, mask source, label) and
    ``self.classes`` and implement ``_mask(i) -> (H, W)`` (float or bool)."""

    name = "masked"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.items: list[tuple[str, Path, Any, int]] = []

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, i: int) -> torch.Tensor:
        return load_image(self.items[i][1], mode="convert")

    @abstractmethod
    def _mask(self, i: int) -> torch.Tensor:  # pragma: no cover - abstract
        ...

    def __getitem__(self, i: int) -> MaskedImage:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        img, mask = resize_center_crop_pair(self._image(i), self._mask(i).float(), self.size)
        return MaskedImage(img, mask, self.items[i][3], self.items[i][0])

    def describe(self) -> dict:
        """What determines the images (part of the runners' cache keys)."""
        return {"dataset": self.name, "size": self.size, "n": len(self),
                "num_classes": len(self.classes), "transform": RESIZE}


def _read_table(path: Path) -> dict[int, list[str]]:
    if not path.is_file():
        raise AdjinvError(f"{path} does not exist (expected the official CUB-200-2011 layout)")
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[int(parts[0])] = parts[1:]
    return out


class CUB200(MaskedDataset):
    """CUB-200-2011 with its official split (``train_test_split.txt``: 1 = train) and
    segmentations. ``root`` is the ``CUB_200_2011`` folder or its parent."""

    name = "cub200"

    def __init__(self, root: str | os.PathLike, split: str = "test", size: int = 224) -> None:
        super().__init__(size)
        _check_split(split)
        r = dataset_folder(root, "CUB_200_2011")
        seg = next((p for p in (r / "segmentations", r.parent / "segmentations") if p.is_dir()), None)
        if seg is None:
            raise AdjinvError(f"no segmentations/ folder in {r} or {r.parent} (the CUB "
                              "segmentations are a separate download: segmentations.tgz)")
        images = _read_table(r / "images.txt")
        labels = _read_table(r / "image_class_labels.txt")
        splits = _read_table(r / "train_test_split.txt")
        classes = _read_table(r / "classes.txt")
        self.classes = [classes[k][0] for k in sorted(classes)]
        want = "1" if split == "train" else "0"
        for iid in sorted(images):
            if splits.get(iid, ["?"])[0] != want:
                continue
            rel = images[iid][0]
            if iid not in labels:
                raise AdjinvError(f"image {iid} ({rel}) has no class in image_class_labels.txt")
            self.items.append((Path(rel).stem, r / "images" / rel,
                               seg / Path(rel).with_suffix(".png"), int(labels[iid][0]) - 1))
        if not self.items:
            raise AdjinvError(f"no {split} images listed in {r / 'train_test_split.txt'}")
        self.root, self.split = r.resolve(), split

    def _mask(self, i: int) -> torch.Tensor:
        return load_mask(self.items[i][2]) >= 0.5

    def describe(self) -> dict:
        """Root, split, size."""
        return {**super().describe(), "root": str(self.root), "split": self.split,
                "mask": "segmentation >= 0.5"}


# The Oxford-IIIT Pet trimap values (the dataset's README): 1 = pet, 2 = background,
# 3 = border ("not classified", the band where pet and background meet).
PET_TRIMAP_PET, PET_TRIMAP_BACKGROUND, PET_TRIMAP_BORDER = 1, 2, 3


def read_pet_trimap(path: str | os.PathLike) -> torch.Tensor:
    """An Oxford-IIIT Pet trimap file as its raw values (H, W) int64 (no colour conversion:
    the values are labels, not intensities)."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise AdjinvError(f"trimap {str(p)!r} does not exist (trimaps are matched by image name)")
    with Image.open(p) as im:
        t = torch.from_numpy(np.asarray(im).astype(np.int64))
    return t[..., 0] if t.dim() == 3 else t


def pet_foreground(trimap: torch.Tensor, boundary: bool = False) -> torch.Tensor:
    """The one Oxford-IIIT Pet foreground definition (Sec. 3.2.1, Supp. C.2).

    [choice] foreground = the pet, trimap value 1, as the dataset's convention names it;
    the border (3) is neither pet nor background and stays out unless ``boundary=True``.

    Args:
        trimap: integer trimap values (H, W), as [`read_pet_trimap()`][read_pet_trimap] returns them.
        boundary: count the border (3) as foreground too.

    Returns:
        A boolean (H, W) foreground mask.
    """
    fg = trimap == PET_TRIMAP_PET
    return fg | (trimap == PET_TRIMAP_BORDER) if boundary else fg


class OxfordPetMasks(MaskedDataset):
    """Oxford-IIIT Pet with trimaps; ``split="train"`` reads ``trainval.txt``."""

    name = "oxford_pet_masks"

    def __init__(self, root: str | os.PathLike, split: str = "test", size: int = 224,
                 boundary: bool = False) -> None:
        super().__init__(size)
        _check_split(split)
        r = Path(root)
        ann = r / "annotations" / ("trainval.txt" if split == "train" else "test.txt")
        tri = r / "annotations" / "trimaps"
        if not ann.is_file() or not tri.is_dir():
            raise AdjinvError(f"expected {ann} and {tri} (the official annotations/ folder)")
        names: dict[int, str] = {}
        for line in ann.read_text().splitlines():
            parts = line.split()
            if len(parts) < 2 or line.startswith("#"):
                continue
            cid = int(parts[1]) - 1
            names[cid] = parts[0].rsplit("_", 1)[0]
            self.items.append((parts[0], r / "images" / f"{parts[0]}.jpg",
                               tri / f"{parts[0]}.png", cid))
        self.classes = [names.get(i, str(i)) for i in range(max(names) + 1)] if names else []
        if not self.items:
            raise AdjinvError(f"{ann} lists no images")
        self.root, self.split, self.boundary = r.resolve(), split, boundary

    def _mask(self, i: int) -> torch.Tensor:
        return pet_foreground(read_pet_trimap(self.items[i][2]), self.boundary)

    def describe(self) -> dict:
        """Root, split, size, boundary rule."""
        return {**super().describe(), "root": str(self.root), "split": self.split,
                "mask": "trimap in {1, 3}" if self.boundary else "trimap == 1"}


class ImageMaskFolder(MaskedDataset):
    """``images/`` (any image files, recursively) and ``masks/`` with one mask per image
    under the same relative path and stem (any image format; foreground = values above
    half the mask's maximum). Label: the image's sub-folder index if images sit in
    class sub-folders, else 0."""

    name = "image_mask_folder"

    def __init__(self, images: str | os.PathLike, masks: str | os.PathLike, size: int = 224) -> None:
        super().__init__(size)
        im_dir, m_dir = Path(images), Path(masks)
        if not m_dir.is_dir():
            raise AdjinvError(f"mask folder {m_dir} does not exist")
        by_stem: dict[str, Path] = {}
        for p in m_dir.rglob("*"):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                by_stem[str(p.relative_to(m_dir).with_suffix(""))] = p
        folders = sorted({p.relative_to(im_dir).parts[0] for p in list_images(im_dir)
                          if len(p.relative_to(im_dir).parts) > 1})
        self.classes = folders or ["all"]
        missing = []
        for p in list_images(im_dir):
            key = str(p.relative_to(im_dir).with_suffix(""))
            if key not in by_stem:
                missing.append(key)
                continue
            parts = p.relative_to(im_dir).parts
            label = folders.index(parts[0]) if len(parts) > 1 and folders else 0
            self.items.append((key, p, by_stem[key], label))
        if missing:
            raise AdjinvError(f"{len(missing)} image(s) have no mask in {m_dir}, e.g. "
                              f"{missing[0]!r} (masks need the same relative path and stem)")
        self.roots = (im_dir.resolve(), m_dir.resolve())

    def _mask(self, i: int) -> torch.Tensor:
        return load_mask(self.items[i][2], threshold=0.5)

    def describe(self) -> dict:
        """Folders and size."""
        return {**super().describe(), "images": str(self.roots[0]), "masks": str(self.roots[1])}


class CompositeMasks(MaskedDataset):
    """The embedded composites of [`adjinv.paper.data.composites`][adjinv.paper.data.composites] (masks exact
    by construction)."""

    name = "composites"

    def __init__(self, size: int = 128, subset: str = "fg") -> None:
        from .composites import composite_set

        super().__init__(size)
        self.subset = subset
        self._data = composite_set(subset)
        self.classes = sorted({c.photo for c in self._data})
        self.items = [(c.name, Path(c.name), None, self.classes.index(c.photo)) for c in self._data]

    def _image(self, i: int) -> torch.Tensor:
        return self._data[i].image

    def _mask(self, i: int) -> torch.Tensor:
        return self._data[i].mask

    def describe(self) -> dict:
        """Subset and size (the composites are deterministic)."""
        from .composites import COMPOSITE_VERSION

        return {**super().describe(), "subset": self.subset, "version": COMPOSITE_VERSION}


MASKED_KINDS = ("composites", "cub", "oxford_pet", "masks")


def open_masked(spec: str, split: str = "test", size: int = 224) -> MaskedDataset:
    """A masked dataset from a spec: ``composites`` (embedded), ``cub:ROOT``,
    ``oxford_pet:ROOT``, ``masks:IMAGES_DIR:MASKS_DIR``."""
    kind, _, rest = spec.partition(":")
    if kind == "composites":
        return CompositeMasks(size, rest or "fg")
    if kind not in MASKED_KINDS:
        raise AdjinvError(f"unknown masked dataset {spec!r}; use composites, cub:ROOT, "
                          "oxford_pet:ROOT or masks:IMAGES_DIR:MASKS_DIR")
    if not rest:
        raise AdjinvError(f"{spec!r} needs a folder: {kind}:PATH")
    if kind == "cub":
        return CUB200(rest, split, size)
    if kind == "oxford_pet":
        return OxfordPetMasks(rest, split, size)
    images, sep, masks = rest.partition(":")
    if not sep:
        raise AdjinvError(f"{spec!r}: use masks:IMAGES_DIR:MASKS_DIR")
    return ImageMaskFolder(images, masks, size)
