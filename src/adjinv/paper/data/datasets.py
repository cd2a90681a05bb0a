"""Labelled image sets in their official layouts (Sec. 3.2.5, Supp. C.6).

A dataset here is anything with ``len(ds)``, ``ds[i] -> (image, label)`` where
``image`` is a (3, size, size) float tensor in [0, 1] and ``label`` an ``int``,
a ``classes`` list, and ``describe() -> dict`` (everything that determines its
images, used as the feature-cache key). Images are resized (shorter side) and
centre-cropped to ``size`` with
[`adjinv.images.files.resize_center_crop()`][adjinv.images.files.resize_center_crop].

Nothing is downloaded: point the loaders at copies you have.

- [`CIFAR100`][CIFAR100] — ``cifar-100-python/{train,test,meta}``, the official
  *python* batches. These are pickles. They are read with a restricted
  unpickler that accepts only the NumPy array reconstructors and
  ``_codecs.encode`` (how protocol-2 pickles store bytes) and refuses every
  other global, so a tampered file cannot run code; it fails with an error.
- [`CIFAR100C`][CIFAR100C] — ``CIFAR-100-C/<corruption>.npy`` (severities 1–5 stacked,
  10 000 images each) + ``labels.npy`` (Hendrycks & Dietterich 2019).
- [`StanfordDogs`][StanfordDogs] — ``Images/<wnid>-<breed>/*.jpg`` and the split lists
  ``lists/{train,test}_list.mat`` (or beside ``Images/``).
- [`OxfordPets`][OxfordPets] — ``images/*.jpg`` and ``annotations/{trainval,test}.txt``.
- [`ImageFolder`][ImageFolder] — ``<class>/<image>`` (with ``train/`` and ``test/``
  sub-folders if present, else a seeded stratified split).
- [`LFWFaces`][LFWFaces] — the embedded default, see its docstring.
- [`CompositeObjects`][CompositeObjects] — an embedded labelled set made from the composites
  ([`adjinv.paper.data.composites`][adjinv.paper.data.composites]), for cross-dataset transfer; see its
  docstring.
- [`CorruptedDataset`][CorruptedDataset] — any dataset with an ImageNet-C corruption applied
  on the fly ([`adjinv.paper.data.corruptions`][adjinv.paper.data.corruptions]).
"""

from __future__ import annotations

import io
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..._optional import require
from ...errors import AdjinvError
from ...images.files import IMAGE_SUFFIXES, load_image, resize_center_crop
from .corruptions import CORRUPTIONS, corrupt

SPLITS = ("train", "test")

RESIZE = "resize shorter side (bilinear, antialias) + centre crop"


def dataset_folder(root: str | os.PathLike, name: str) -> Path:
    """``root / name`` if that folder exists, else ``root``: a data set's root may be given
    as its own folder or as the folder holding it."""
    r = Path(root)
    return r / name if (r / name).is_dir() else r


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise AdjinvError(f"split must be one of {SPLITS}, got {split!r}")


def _uint8_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 → (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0


def stratified_split(labels: Sequence[int], test_fraction: float, seed: int) -> tuple[list[int],
                                                                                         list[int]]:
    """Indices of a seeded split that keeps each class's proportion (at least one
    training image per class)."""
    if not 0 < test_fraction < 1:
        raise AdjinvError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    lab = torch.as_tensor(list(labels))
    train, test = [], []
    for c in torch.unique(lab).tolist():
        idx = (lab == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)].tolist()
        n_test = min(len(idx) - 1, round(test_fraction * len(idx)))
        test += idx[:n_test]
        train += idx[n_test:]
    return sorted(train), sorted(test)


class SizedImages(ABC):  # noqa: B024 (a base for state, not an interface)
    """What every image set shares (labelled or masked): the side ``size`` (at least
    8 px) its images come at, and its class names ``classes``."""

    name = "dataset"

    def __init__(self, size: int) -> None:
        if size < 8:
            raise AdjinvError(f"image size must be at least 8 px, got {size}")
        self.size = size
        self.classes: list[str] = []


class ImageDataset(SizedImages):
    """Base: subclasses fill ``self.classes`` and implement ``__len__``, ``_label(i)``
    and ``__getitem__`` (``(image (3, size, size) in [0, 1], label)``); file- or
    array-backed sets derive from ``_LoadedDataset`` and implement ``_load(i)``."""

    @abstractmethod
    def __len__(self) -> int:  # pragma: no cover - abstract
        ...

    @abstractmethod
    def _label(self, i: int) -> int:  # pragma: no cover - abstract
        ...

    @abstractmethod
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:  # pragma: no cover - abstract
        ...

    @property
    def labels(self) -> list[int]:
        """Every label, in order."""
        return [self._label(i) for i in range(len(self))]

    def describe(self) -> dict:
        """What determines the images (the feature cache's key)."""
        return {"dataset": self.name, "size": self.size, "n": len(self),
                "num_classes": len(self.classes), "transform": RESIZE}


class _LoadedDataset(ImageDataset):
    """An [`ImageDataset`][ImageDataset] that loads image ``i`` with ``_load`` and resizes it."""

    @abstractmethod
    def _load(self, i: int) -> torch.Tensor:  # pragma: no cover - abstract
        ...

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        return resize_center_crop(self._load(i), self.size), self._label(i)


class Subset(ImageDataset):
    """The images ``indices`` of ``base`` (e.g. a quick run on the first N)."""

    def __init__(self, base: ImageDataset, indices: Sequence[int]) -> None:
        super().__init__(base.size)
        self.base, self.indices = base, list(indices)
        self.classes = base.classes
        self.name = base.name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.base[self.indices[i]]

    def _label(self, i: int) -> int:
        return self.base._label(self.indices[i])

    def describe(self) -> dict:
        """The base's description plus the chosen indices."""
        d = dict(self.base.describe())
        d.update(n=len(self), subset=self.indices)
        return d


def first_per_class(ds: ImageDataset, n: int) -> Subset:
    """A subset of at most ``n`` images that interleaves the classes (for quick runs)."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(ds.labels):
        by_class.setdefault(y, []).append(i)
    order: list[int] = []
    rounds = max(len(v) for v in by_class.values())
    for r in range(rounds):
        order += [v[r] for _, v in sorted(by_class.items()) if r < len(v)]
    return Subset(ds, sorted(order[:n]))


# ----------------------------------------------------------------------------- embedded
class LFWFaces(ImageDataset):
    """The embedded default: ``skimage.data.lfw_subset()`` — 100 face and 100 non-face
    crops from Labeled Faces in the Wild (shipped inside scikit-image, no download).

    Honest description: two classes (0 = face, 1 = non-face: background crops of the
    same photos), 25 × 25 grayscale. Each image is repeated to 3 channels and
    upsampled bilinearly to ``size`` (default 96), so the encoder sees blurry grey
    images far from its ImageNet training distribution. It is a small, real-photo,
    fully offline stand-in for CIFAR-100 — easy (two classes), so expect the
    accuracy plateau, not the paper's tail separation, to be the informative part.
    The split is stratified and seeded (``test_fraction`` of each class held out).
    """

    name = "lfw_subset"

    def __init__(self, split: str = "train", size: int = 96, test_fraction: float = 0.5,
                 seed: int = 0) -> None:
        super().__init__(size)
        _check_split(split)
        skdata = require("skimage.data", "the embedded LFW subset")
        imgs = np.asarray(skdata.lfw_subset(), dtype=np.float32)
        if imgs.max() > 1.0:  # documented as uint8, returned as float in [0, 1]
            imgs = imgs / 255.0
        labels = [0] * 100 + [1] * 100
        train, test = stratified_split(labels, test_fraction, seed)
        self.indices = train if split == "train" else test
        self._imgs = torch.from_numpy(imgs)
        self._labels = labels
        self.split, self.test_fraction, self.seed = split, test_fraction, seed
        self.classes = ["face", "non-face"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        g = self._imgs[j][None, None].clamp(0, 1)
        up = F.interpolate(g, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return up[0].expand(3, -1, -1).clamp(0, 1).contiguous(), self._labels[j]

    def _label(self, i: int) -> int:
        return self._labels[self.indices[i]]

    def describe(self) -> dict:
        """Name, split, size and the split's seed."""
        return {"dataset": self.name, "split": self.split, "size": self.size, "n": len(self),
                "test_fraction": self.test_fraction, "seed": self.seed, "num_classes": 2,
                "transform": "25x25 grey -> 3 channels, bilinear upsampling"}


# ----------------------------------------------------------------------------- composites
class CompositeObjects(_LoadedDataset):
    """An embedded labelled set made, not downloaded: composites
    ([`adjinv.paper.data.composites`][adjinv.paper.data.composites])
    of the three composite photos outside the held-out photo split (``chelsea``,
    ``motorcycle``, ``rocket``) pasted on the five scikit-image background textures, with
    placement and scale drawn from seed ``1000 + i``.

    ``label="object"`` (default): the class is the pasted photo (3 classes); each class
    cycles through the five backgrounds. ``label="background"``: the class is the
    background texture (5 classes); each class cycles through the three photos. So the
    factor that is not the label is balanced across classes. ``per_class`` composites per
    class (default ``120 // classes``: 40 or 24), split per class by
    [`stratified_split()`][stratified_split] (``test_fraction``, seeded). Train and test share photos and
    textures (at other placements, scales and texture crops): a transfer set with its own
    labels, not a hard benchmark.
    """

    name = "composites"

    def __init__(self, split: str = "train", size: int = 96, label: str = "object",
                 per_class: int | None = None, test_fraction: float = 0.5, seed: int = 0) -> None:
        from .composites import BACKGROUNDS, COMPOSITE_VERSION, TRANSFER_PHOTOS

        super().__init__(size)
        _check_split(split)
        if label not in ("object", "background"):
            raise AdjinvError(f"composites label must be 'object' or 'background', got {label!r}")
        self.classes = list(TRANSFER_PHOTOS if label == "object" else BACKGROUNDS)
        per_class = 120 // len(self.classes) if per_class is None else per_class
        if per_class < 2:
            raise AdjinvError("composites need at least 2 images per class")
        other = BACKGROUNDS if label == "object" else TRANSFER_PHOTOS
        specs: list[tuple[str, str, int]] = []
        labels: list[int] = []
        for c, cls in enumerate(self.classes):
            for j in range(per_class):
                o = other[j % len(other)]
                photo, bg = (cls, o) if label == "object" else (o, cls)
                specs.append((photo, bg, 1000 + len(specs)))
                labels.append(c)
        train, test = stratified_split(labels, test_fraction, seed)
        keep = train if split == "train" else test
        self.specs = [specs[i] for i in keep]
        self._labels = [labels[i] for i in keep]
        self.split, self.label, self.per_class = split, label, per_class
        self.test_fraction, self.seed, self.version = test_fraction, seed, COMPOSITE_VERSION

    def __len__(self) -> int:
        return len(self.specs)

    def _load(self, i: int) -> torch.Tensor:
        from .composites import composite

        return composite(*self.specs[i]).image

    def _label(self, i: int) -> int:
        return self._labels[i]

    def describe(self) -> dict:
        """Label kind, split, size, seeds and the composite generator's version."""
        return {"dataset": f"{self.name}:{self.label}", "split": self.split, "size": self.size,
                "n": len(self), "num_classes": len(self.classes), "classes": self.classes,
                "per_class": self.per_class, "test_fraction": self.test_fraction,
                "seed": self.seed, "composite_version": self.version,
                "transform": "224 px composite canvas, " + RESIZE}


# ----------------------------------------------------------------------------- CIFAR
class _RestrictedUnpickler(pickle.Unpickler):
    """Only what the CIFAR python batches need; any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def safe_unpickle(path: str | os.PathLike) -> object:
    """Load a CIFAR python batch with [`_RestrictedUnpickler`][_RestrictedUnpickler] (no arbitrary code)."""
    p = Path(path)
    if not p.is_file():
        raise AdjinvError(f"{p} does not exist")
    try:
        with open(p, "rb") as f:
            return _RestrictedUnpickler(io.BufferedReader(f), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise AdjinvError(f"cannot read {p} as a CIFAR python batch: {e}") from None


def _key(d: dict, name: str) -> Any:
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise AdjinvError(f"CIFAR batch lacks the key {name!r}")


class CIFAR100(_LoadedDataset):
    """CIFAR-100 from the official python batches (``root`` is ``cifar-100-python/`` or
    its parent). 32 × 32 RGB, 100 fine labels; upsampled to ``size``."""

    name = "cifar100"

    def __init__(self, root: str | os.PathLike, split: str = "train", size: int = 32) -> None:
        super().__init__(size)
        _check_split(split)
        r = dataset_folder(root, "cifar-100-python")
        batch = safe_unpickle(r / split)
        if not isinstance(batch, dict):
            raise AdjinvError(f"{r / split} is not a CIFAR batch (a dict)")
        data = np.asarray(_key(batch, "data"), dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise AdjinvError(f"{r / split}: data has shape {data.shape}, expected (N, 3072)")
        self._data = data.reshape(-1, 3, 32, 32)
        self._labels = [int(v) for v in _key(batch, "fine_labels")]
        if len(self._labels) != len(self._data):
            raise AdjinvError(f"{r / split}: {len(self._data)} images but {len(self._labels)} labels")
        self.classes = [str(i) for i in range(100)]
        if (r / "meta").is_file():
            meta = safe_unpickle(r / "meta")
            if not isinstance(meta, dict):
                raise AdjinvError(f"{r / 'meta'} is not a CIFAR meta file (a dict)")
            names = _key(meta, "fine_label_names")
            self.classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        self.root, self.split = r.resolve(), split

    def __len__(self) -> int:
        return len(self._data)

    def _load(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._data[i].astype(np.float32) / 255.0)

    def _label(self, i: int) -> int:
        return self._labels[i]

    def describe(self) -> dict:
        """Root, split, size."""
        return {**super().describe(), "root": str(self.root), "split": self.split}


class CIFAR100C(_LoadedDataset):
    """CIFAR-100-C: ``root/<corruption>.npy`` holds severities 1–5 stacked (equal
    blocks), ``root/labels.npy`` the matching labels. Read with ``allow_pickle=False``
    and memory-mapped."""

    name = "cifar100c"

    def __init__(self, root: str | os.PathLike, corruption: str, severity: int,
                 size: int = 32) -> None:
        super().__init__(size)
        r = dataset_folder(root, "CIFAR-100-C")
        f = r / f"{corruption}.npy"
        if not f.is_file():
            have = sorted(p.stem for p in r.glob("*.npy") if p.stem != "labels") if r.is_dir() else []
            raise AdjinvError(f"{f} does not exist; corruptions found in {r}: {', '.join(have) or 'none'}")
        if severity not in (1, 2, 3, 4, 5):
            raise AdjinvError(f"CIFAR-100-C severity must be 1-5, got {severity}")
        data = np.load(f, mmap_mode="r", allow_pickle=False)
        labels = np.load(r / "labels.npy", allow_pickle=False)
        if data.ndim != 4 or data.shape[-1] != 3 or data.shape[0] % 5 or len(labels) != data.shape[0]:
            raise AdjinvError(f"{f}: shape {data.shape} with {len(labels)} labels; expected "
                              "(5·N, H, W, 3) uint8 and as many labels")
        n = data.shape[0] // 5
        self._data = data[(severity - 1) * n: severity * n]
        self._labels = [int(v) for v in labels[(severity - 1) * n: severity * n]]
        self.classes = [str(i) for i in range(100)]
        self.root, self.corruption, self.severity = r.resolve(), corruption, severity

    def __len__(self) -> int:
        return len(self._data)

    def _load(self, i: int) -> torch.Tensor:
        return _uint8_to_tensor(np.array(self._data[i], dtype=np.uint8))  # a copy off the memmap

    def _label(self, i: int) -> int:
        return self._labels[i]

    def describe(self) -> dict:
        """Root, corruption, severity, size."""
        return {**super().describe(), "root": str(self.root), "corruption": self.corruption,
                "severity": self.severity}


# ----------------------------------------------------------------------------- files
class _FileDataset(_LoadedDataset):
    def __init__(self, files: list[Path], labels: list[int], classes: list[str], size: int,
                 root: Path, split: str) -> None:
        super().__init__(size)
        if not files:
            raise AdjinvError(f"no images found for split {split!r} under {root}")
        self.files, self._labels, self.classes = files, labels, classes
        self.root, self.split = root.resolve(), split

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> torch.Tensor:
        return load_image(self.files[i], mode="convert")

    def _label(self, i: int) -> int:
        return self._labels[i]

    def describe(self) -> dict:
        """Root, split, size."""
        return {**super().describe(), "root": str(self.root), "split": self.split}


class StanfordDogs(_FileDataset):
    """Stanford Dogs (Khosla et al. 2011): ``root/Images/<wnid>-<breed>/*.jpg`` and the
    official split ``root/lists/{train,test}_list.mat`` (``root/{train,test}_list.mat``
    also accepted). Classes are the breed folders in sorted order."""

    name = "stanford_dogs"

    def __init__(self, root: str | os.PathLike, split: str = "train", size: int = 224) -> None:
        loadmat = require("scipy.io", "reading Stanford Dogs' .mat split lists").loadmat
        _check_split(split)
        r = Path(root)
        images = r / "Images"
        if not images.is_dir():
            raise AdjinvError(f"{images} does not exist (expected the official Images/ folder)")
        lst = next((p for p in (r / "lists" / f"{split}_list.mat", r / f"{split}_list.mat")
                    if p.is_file()), None)
        if lst is None:
            raise AdjinvError(f"no {split}_list.mat in {r / 'lists'} or {r} (from the official lists.tar)")
        mat = loadmat(lst)
        rel = [str(np.asarray(e).ravel()[0]) for e in np.asarray(mat["file_list"]).ravel()]
        dirs = sorted(p.name for p in images.iterdir() if p.is_dir())
        index = {d: i for i, d in enumerate(dirs)}
        files, labels = [], []
        for f in rel:
            folder = f.split("/")[0]
            if folder not in index:
                raise AdjinvError(f"{lst} lists {f}, but {images / folder} does not exist")
            files.append(images / f)
            labels.append(index[folder])
        classes = [d.split("-", 1)[1] if "-" in d else d for d in dirs]
        super().__init__(files, labels, classes, size, r, split)


class OxfordPets(_FileDataset):
    """Oxford-IIIT Pet (Parkhi et al. 2012): ``root/images/<Breed>_<n>.jpg`` and the
    official split ``root/annotations/{trainval,test}.txt`` (lines ``name class-id
    species breed-id``, class-id 1–37). ``split="train"`` reads ``trainval.txt``."""

    name = "oxford_pet"

    def __init__(self, root: str | os.PathLike, split: str = "train", size: int = 224) -> None:
        _check_split(split)
        r = Path(root)
        ann = r / "annotations" / ("trainval.txt" if split == "train" else "test.txt")
        if not ann.is_file():
            raise AdjinvError(f"{ann} does not exist (expected the official annotations/ folder)")
        files, labels, names = [], [], {}
        for line in ann.read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise AdjinvError(f"{ann}: cannot parse line {line!r}")
            cid = int(parts[1]) - 1
            names[cid] = parts[0].rsplit("_", 1)[0]
            files.append(r / "images" / f"{parts[0]}.jpg")
            labels.append(cid)
        classes = [names.get(i, str(i)) for i in range(max(names) + 1)] if names else []
        super().__init__(files, labels, classes, size, r, split)


class ImageFolder(_FileDataset):
    """``root/<class>/<images>``; if ``root/train`` and ``root/test`` exist they are the
    splits, else each class is split with [`stratified_split()`][stratified_split]."""

    name = "imagefolder"

    def __init__(self, root: str | os.PathLike, split: str = "train", size: int = 224,
                 test_fraction: float = 0.2, seed: int = 0) -> None:
        _check_split(split)
        r = Path(root)
        if not r.is_dir():
            raise AdjinvError(f"image folder {r} does not exist")
        pre_split = (r / "train").is_dir() and (r / "test").is_dir()
        base = r / split if pre_split else r
        classes = sorted(p.name for p in base.iterdir() if p.is_dir())
        if not classes:
            raise AdjinvError(f"{base} has no class sub-folders (<class>/<image files>)")
        files, labels = [], []
        for i, c in enumerate(classes):
            fs = sorted(p for p in (base / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files += fs
            labels += [i] * len(fs)
        if not pre_split:
            tr, te = stratified_split(labels, test_fraction, seed)
            keep = tr if split == "train" else te
            files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        super().__init__(files, labels, classes, size, r, split)
        self.seed, self.test_fraction, self.pre_split = seed, test_fraction, pre_split

    def describe(self) -> dict:
        """Root, split, size and the split's seed."""
        d = super().describe()
        if not self.pre_split:
            d.update(seed=self.seed, test_fraction=self.test_fraction)
        return d


# ----------------------------------------------------------------------------- corrupted
class CorruptedDataset(ImageDataset):
    """``base`` with corruption ``name`` at ``severity`` applied on the fly, after the
    resize. Image ``i`` is corrupted with seed ``seed·1_000_003 + i``: the same image
    gets the same corruption whatever the batch or order."""

    def __init__(self, base: ImageDataset, name: str, severity: int, seed: int = 0,
                 spatial_scale: float = 1.0) -> None:
        super().__init__(base.size)
        if name not in CORRUPTIONS:
            raise AdjinvError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
        self.base, self.corruption, self.severity = base, name, severity
        self.seed, self.spatial_scale = seed, spatial_scale
        self.classes = base.classes
        self.name = f"{base.name}+{name}"

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, y = self.base[i]
        i = i % len(self)
        return corrupt(img, self.corruption, self.severity, seed=self.seed * 1_000_003 + i,
                       spatial_scale=self.spatial_scale), y

    def _label(self, i: int) -> int:
        return self.base._label(i)

    def describe(self) -> dict:
        """The base's description plus the corruption."""
        return {"base": self.base.describe(), "corruption": self.corruption,
                "severity": self.severity, "seed": self.seed, "spatial_scale": self.spatial_scale,
                "implementation": "adjinv.paper.data.corruptions/1"}


# ----------------------------------------------------------------------------- specs
DATASET_KINDS = ("lfw", "composites", "cifar100", "stanford_dogs", "oxford_pet", "imagefolder")


def open_dataset(spec: str, split: str, size: int, seed: int = 0) -> ImageDataset:
    """A dataset from a spec string: ``lfw`` (embedded), ``composites[:object|background]``
    (embedded, made from the composites) or ``KIND:ROOT`` with KIND one of ``cifar100``,
    ``stanford_dogs``, ``oxford_pet``, ``imagefolder``."""
    kind, _, root = spec.partition(":")
    if kind == "lfw":
        return LFWFaces(split, size=size, seed=seed)
    if kind == "composites":
        return CompositeObjects(split, size=size, label=root or "object", seed=seed)
    if kind not in DATASET_KINDS:
        raise AdjinvError(f"unknown dataset {spec!r}; use lfw, composites[:object|background] or "
                          f"KIND:ROOT with KIND in {', '.join(DATASET_KINDS[2:])}")
    if not root:
        raise AdjinvError(f"dataset {spec!r} needs a root folder: {kind}:PATH")
    if kind == "cifar100":
        return CIFAR100(root, split, size=size)
    if kind == "stanford_dogs":
        return StanfordDogs(root, split, size=size)
    if kind == "oxford_pet":
        return OxfordPets(root, split, size=size)
    return ImageFolder(root, split, size=size, seed=seed)


def open_shifted(spec: str, test_set: ImageDataset, size: int, seed: int = 0,
                 spatial_scale: float = 1.0) -> list[ImageDataset]:
    """Shifted copies of the in-distribution test set (same labels), from a spec:
    ``corrupt:NAME:SEVERITY`` (NAME may be ``all``) applies [`corruptions`][adjinv.paper.data.corruptions]
    on the fly; ``cifar100c:ROOT[:NAME[:SEVERITY]]`` reads CIFAR-100-C files (NAME
    ``all`` or omitted: every corruption found; SEVERITY omitted: 1–5)."""
    kind, _, rest = spec.partition(":")
    if kind == "corrupt":
        name, _, sev = rest.partition(":")
        names = list(CORRUPTIONS) if name in ("", "all") else [name]
        try:
            severities = [int(sev)] if sev else [3]
        except ValueError:
            raise AdjinvError(f"bad severity in {spec!r}") from None
        return [CorruptedDataset(test_set, n, s, seed=seed, spatial_scale=spatial_scale)
                for n in names for s in severities]
    if kind == "cifar100c":
        parts = rest.split(":")
        root = parts[0]
        if not root:
            raise AdjinvError(f"{spec!r} needs a root: cifar100c:ROOT[:NAME[:SEVERITY]]")
        r = dataset_folder(root, "CIFAR-100-C")
        if len(parts) > 1 and parts[1] not in ("", "all"):
            names = [parts[1]]
        else:
            names = [n for n in CORRUPTIONS if (r / f"{n}.npy").is_file()]
            if not names:
                raise AdjinvError(f"no <corruption>.npy files in {r}")
        severities = [int(parts[2])] if len(parts) > 2 and parts[2] else [1, 2, 3, 4, 5]
        return [CIFAR100C(r, n, s, size=size) for n in names for s in severities]
    raise AdjinvError(f"unknown shift {spec!r}; use corrupt:NAME:SEVERITY or "
                      "cifar100c:ROOT[:NAME[:SEVERITY]]")
