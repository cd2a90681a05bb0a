"""The photo corpus for LAC training at the demo's size (docs/evidence.md, "The corpus").

Real photographs from Debian's wallpaper packages (fetched with ``apt-get download`` and
unpacked with ``dpkg -x``, nothing installed system-wide) plus the photos that ship inside
the Python packages the project already uses ([`adjinv.images.photos`][adjinv.images.photos]). The selection
below keeps photographs only (no renders, logos or drawings), one file per wallpaper
(the largest of the resolutions a wallpaper ships in), and fixes the split **by photo**:

- ``train``: LAC and baseline training;
- ``validation``: learning-rate schedule, early stopping, checkpoint and default choice;
- ``heldout``: evaluation only. The embedded held-out photos stay held out, and corpus
  photos join them.

[`build_corpus()`][build_corpus] writes an ImageFolder-style tree ``ROOT/<split>/<source>/<name>.png``
(shorter side [`SHORT_SIDE`][SHORT_SIDE] px) and ``ROOT/manifest.json`` (source package and
version, file, licence and copyright from the package's ``debian/copyright``, sha256 of
the source file and of the written PNG, sizes, split). [`load_corpus_split()`][load_corpus_split] reads a
built corpus back, checking every file against its manifest hash. Neither the tests nor
``adjinv demo`` need the corpus: only the trained LAC weights ship.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import AdjinvError
from ...fileio import atomic_write_bytes, atomic_write_json
from ...images.files import array_to_tensor
from ...images.photos import SPLITS as EMBEDDED_SPLITS
from ...images.photos import is_greyscale, photo

log = logging.getLogger(__name__)

SHORT_SIDE = 512
"""Shorter side of every corpus PNG: twice the demo's 224 px, so random-resized crops
down to a third of the photo's area still come from real pixels."""

SPLITS = ("train", "validation", "heldout")


@dataclass(frozen=True)
class Source:
    """One selected photograph: ``package`` (Debian) and ``member`` (path inside it;
    ``.edj`` members are Enlightenment Eet archives whose largest embedded JPEG is the
    photo), the ``split`` it belongs to and a short ``name``."""

    name: str
    package: str
    member: str
    split: str = "train"


_LOMIRI16 = "usr/share/backgrounds/"
_MATE = "usr/share/backgrounds/mate/nature/"
_LXQT = "usr/share/lxqt/wallpapers/"
_EDJ = "usr/share/enlightenment/data/backgrounds/"
_PLASMA = "usr/share/wallpapers/"

SOURCES: tuple[Source, ...] = (
    # Enlightenment's photographic backgrounds (Eet archives)
    *(Source(n.lower().replace("-", "_"), "enlightenment-data", f"{_EDJ}{n}.edj", s) for n, s in (
        ("Bamboo", "train"), ("Foggy-Trees", "train"), ("God-Rays", "validation"),
        ("Green-Maple", "train"), ("Lichen-Branches", "train"), ("Mountain", "train"),
        ("Peaks", "train"), ("Red-Maple", "heldout"), ("Sea-of-Lanterns", "train"),
        ("Snow-Trees", "validation"), ("Spruce-Needles", "train"), ("Sunset-Clouds", "train"),
        ("White-Flower", "train"), ("Yellow-Flower", "validation"))),
    # Lomiri (Ubuntu Touch) 16.04 and 20.04 photographs
    *(Source(n.split("_by_")[0].lower(), "lomiri-wallpapers-16.04", f"{_LOMIRI16}{n}.jpg", s)
      for n, s in (
          ("Bridge_by_Sander_Klootwijk", "train"), ("Dragonfly_by_Bolly", "validation"),
          ("Picture_0B_by_freespace", "heldout"), ("Picture_1A_by_freespace", "train"),
          ("Wine_by_Jakkub_Mede", "train"), ("aitzgorri_by_Aitzol_Berasategi", "train"),
          ("free_by_Peter_Nerlich", "train"), ("friends_by_Aitzol_Berasategi", "heldout"),
          ("greentock_by_Peter_Nerlich", "train"), ("life_by_Aitzol_Berasategi", "train"),
          ("picosdeeuropa_by_Aitzol_Berasategi", "validation"),
          ("seeding_by_Clements_Engelhardt", "train"), ("sunset_by_Aitzol_Berasategi", "train"))),
    Source("kleiber", "lomiri-wallpapers-20.04", f"{_LOMIRI16}Kleiber_by_Lukas_Baubkus.jpg", "train"),
    # LXQt's photographic wallpapers
    *(Source(Path(n).stem.lower().replace("-", "_"), "lxqt-themes", f"{_LXQT}{n}", s) for n, s in (
        ("Butterfly-Kenneth-Wimer.jpg", "train"), ("Valendas.png", "validation"),
        ("after-the-rain.jpg", "train"), ("appleflower.png", "train"), ("beam.png", "heldout"),
        ("butterfly.png", "train"), ("cloud.png", "train"), ("drop.png", "validation"),
        ("flowers.png", "train"), ("fog.jpg", "train"), ("this-is-not-windows.jpg", "train"))),
    # MATE's "nature" set
    *(Source(n.lower(), "mate-backgrounds", f"{_MATE}{n}.jpg", s) for n, s in (
        ("Aqua", "train"), ("Blinds", "train"), ("Dune", "validation"), ("FreshFlower", "train"),
        ("Garden", "heldout"), ("GreenMeadow", "train"), ("LadyBird", "validation"),
        ("RainDrops", "train"), ("Storm", "train"), ("TwoWings", "train"), ("Wood", "train"),
        ("YellowFlower", "train"))),
    # Plasma's photographs (largest resolution of each)
    *(Source(n.lower(), "plasma-workspace-wallpapers", f"{_PLASMA}{n}/contents/images/{r}", s)
      for n, r, s in (
          ("BytheWater", "2560x1600.jpg", "train"), ("ColdRipple", "2560x1600.jpg", "train"),
          ("ColorfulCups", "2560x1600.jpg", "heldout"), ("DarkestHour", "2560x1600.jpg", "train"),
          ("EveningGlow", "2560x1600.jpg", "validation"), ("FallenLeaf", "2560x1600.jpg", "train"),
          ("Grey", "2560x1600.jpg", "train"), ("OneStandsOut", "2560x1600.jpg", "heldout"),
          ("Path", "2560x1600.jpg", "validation"), ("Volna", "5120x2880.jpg", "train"),
          ("summer_1am", "2560x1600.jpg", "heldout"))),
)


@dataclass
class Entry:
    """One manifest row."""

    name: str
    split: str
    source: str
    package_version: str
    member: str
    licence: str
    copyright: str
    sha256_source: str
    sha256: str
    source_size: tuple[int, int]
    size: tuple[int, int]
    greyscale: bool
    file: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dep5_licence(copyright_text: str, member: str) -> tuple[str, str]:
    """``(licence, copyright)`` of ``member`` (a path inside the installed package) from a
    machine-readable ``debian/copyright``: the last ``Files:`` stanza one of whose patterns
    matches the path, a trailing part of it, or its file name (stanzas name source-tree
    paths, the package installs them elsewhere). ``("unknown", "")`` when none matches."""
    found = ("unknown", "")
    for stanza in re.split(r"\n\s*\n", copyright_text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                fields[key] = val.strip()
        if "files" not in fields or "license" not in fields:
            continue
        base = member.rsplit("/", 1)[-1]
        for pat in fields["files"].split():
            if (fnmatch.fnmatch(member, pat) or fnmatch.fnmatch(member, "*/" + pat)
                    or ("/" in pat and "*" not in pat and pat.rsplit("/", 1)[-1] == base)):
                found = (fields["license"].split("\n")[0], fields.get("copyright", "").split("\n")[0])
    return found


def eet_largest_jpeg(data: bytes) -> bytes:
    """The largest JPEG image embedded in an Enlightenment Eet (``.edj``) archive: Eet
    stores lossy images as JPEG streams."""
    from PIL import Image

    best, best_px = b"", 0
    for m in re.finditer(rb"\xff\xd8\xff", data):
        try:
            with Image.open(io.BytesIO(data[m.start():])) as im:
                px = im.size[0] * im.size[1]
                if px > best_px:
                    im.load()
                    buf = io.BytesIO()
                    im.convert("RGB").save(buf, format="PNG")
                    best, best_px = buf.getvalue(), px
        except Exception:  # not a decodable JPEG at this offset: keep scanning
            continue
    if not best:
        raise AdjinvError("no JPEG image inside the Eet archive")
    return best


def _resized_png(raw: bytes, short_side: int) -> tuple[bytes, tuple[int, int], tuple[int, int], bool]:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        src = im.size
        rgb = im.convert("RGB")
    scale = short_side / min(src)
    if scale < 1:
        rgb = rgb.resize((round(src[0] * scale), round(src[1] * scale)), Image.Resampling.LANCZOS)
    arr = np.asarray(rgb)
    grey = bool(np.abs(arr.astype(np.int16) - arr.mean(2, keepdims=True)).max() <= 1)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue(), src, rgb.size, grey


def dhash(img: torch.Tensor, n: int = 8) -> int:
    """64-bit difference hash of a (3, H, W) image (grey, (n+1)×n, horizontal gradients)."""
    g = img.mean(0)[None, None]
    small = torch.nn.functional.interpolate(g, size=(n, n + 1), mode="area")[0, 0]
    bits = (small[:, 1:] > small[:, :-1]).flatten().tolist()
    return sum(1 << i for i, b in enumerate(bits) if b)


def near_duplicates(images: dict[str, torch.Tensor], max_bits: int = 6) -> list[tuple[str, str, int]]:
    """Pairs of images whose difference hashes differ in at most ``max_bits`` bits (the same
    wallpaper at two resolutions, or a re-crop)."""
    hashes = {k: dhash(v) for k, v in images.items()}
    names = sorted(hashes)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = bin(hashes[a] ^ hashes[b]).count("1")
            if d <= max_bits:
                out.append((a, b, d))
    return out


def _apt_download(package: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    have = sorted(into.glob(f"{package}_*.deb"))
    if have:
        return have[-1]
    if shutil.which("apt-get") is None:
        raise AdjinvError("building the corpus needs Debian's apt-get (and dpkg): run it on a "
                          "Debian or Ubuntu machine")
    res = subprocess.run(["apt-get", "download", package], cwd=into, capture_output=True, text=True)
    have = sorted(into.glob(f"{package}_*.deb"))
    if res.returncode != 0 or not have:
        raise AdjinvError(f"`apt-get download {package}` failed: {res.stderr.strip()[-300:]}; "
                          "run `apt-get update` first (as root)")
    return have[-1]


def _unpack(deb: Path, into: Path) -> None:
    res = subprocess.run(["dpkg", "-x", str(deb), str(into)], capture_output=True, text=True)
    if res.returncode != 0:
        raise AdjinvError(f"`dpkg -x {deb.name}` failed: {res.stderr.strip()[-300:]}")


def build_corpus(root: str | Path, sources: tuple[Source, ...] = SOURCES,
                 short_side: int = SHORT_SIDE, include_embedded: bool = True) -> list[Entry]:
    """Build the corpus under ``root`` (see the module docstring) and return its manifest
    rows. Downloaded ``.deb`` files are cached in ``root/.debs``; every PNG and the manifest
    are written atomically, so an interrupted build is simply run again."""
    root = Path(root)
    debs = root / ".debs"
    entries: list[Entry] = []
    tensors: dict[str, torch.Tensor] = {}
    by_pkg: dict[str, list[Source]] = {}
    for s in sources:
        if s.split not in SPLITS:
            raise AdjinvError(f"source {s.name!r}: split must be one of {SPLITS}, got {s.split!r}")
        by_pkg.setdefault(s.package, []).append(s)
    with tempfile.TemporaryDirectory() as tmp:
        for pkg, chosen in by_pkg.items():
            deb = _apt_download(pkg, debs)
            version = deb.name.split("_")[1].replace("%3a", ":")
            tree = Path(tmp) / pkg
            _unpack(deb, tree)
            cr = tree / "usr/share/doc" / pkg / "copyright"
            text = ""
            if cr.is_file():
                text = cr.read_text(errors="replace")
            elif cr.with_suffix(".gz").is_file():
                text = gzip.decompress(cr.with_suffix(".gz").read_bytes()).decode(errors="replace")
            for s in chosen:
                path = tree / s.member
                if not path.is_file():
                    raise AdjinvError(f"{pkg} {version} has no {s.member}: the package changed; "
                                      "update adjinv.paper.data.corpus.SOURCES")
                raw = path.read_bytes()
                img = eet_largest_jpeg(raw) if path.suffix == ".edj" else raw
                png, src_size, size, grey = _resized_png(img, short_side)
                rel = f"{s.split}/{pkg}/{s.name}.png"
                atomic_write_bytes(root / rel, png)
                lic, cpr = dep5_licence(text, s.member)
                entries.append(Entry(s.name, s.split, pkg, version, s.member, lic, cpr,
                                     _sha256(raw), _sha256(png), src_size, size, grey, rel))
                tensors[s.name] = _load_png(png)
                log.info("%s: %s (%s)", s.split, s.name, lic)
    if include_embedded:
        entries += _embedded(root, short_side, tensors)
    dups = near_duplicates(tensors)
    if dups:
        raise AdjinvError("near-duplicate photos in the corpus (same wallpaper twice?): "
                          + ", ".join(f"{a}~{b} ({d} bits)" for a, b, d in dups))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise AdjinvError("two corpus photos share a name")
    atomic_write_json(root / "manifest.json", manifest_json(entries))
    return entries


def _load_png(png: bytes) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return array_to_tensor(np.array(im.convert("RGB")), source="corpus photo")


_EMBEDDED_LICENCES = {
    "china": ("CC-BY-2.0", "Flickr user danielbuechele (scikit-learn sample image)"),
    "flower": ("CC-BY-2.0", "Flickr user vultilion (scikit-learn sample image)"),
    "grace_hopper": ("public-domain", "U.S. Navy (matplotlib sample data)"),
}


def _embedded(root: Path, short_side: int, tensors: dict[str, torch.Tensor]) -> list[Entry]:
    """The photos shipped inside Python packages, with the split they already have."""
    from PIL import Image

    out = []
    for split, names in EMBEDDED_SPLITS.items():
        for n in names:
            t = photo(n)
            arr = (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            png, src, size, grey = _resized_png(buf.getvalue(), short_side)
            pkg = ("python:scikit-learn" if n in ("china", "flower") else
                   "python:matplotlib" if n == "grace_hopper" else "python:scikit-image")
            rel = f"{split}/{pkg.split(':')[1]}/{n}.png"
            atomic_write_bytes(root / rel, png)
            lic, cpr = _EMBEDDED_LICENCES.get(n, ("see scikit-image's data README", "scikit-image data"))
            out.append(Entry(n, split, pkg, "", n, lic, cpr, _sha256(buf.getvalue()), _sha256(png),
                             src, size, grey or is_greyscale(t), rel))
            tensors[n] = _load_png(png)
    return out


def manifest_json(entries: list[Entry]) -> dict:
    """The manifest as written: counts per split and source, then one row per photo."""
    rows = [asdict(e) for e in entries]
    counts = {s: sum(e.split == s for e in entries) for s in SPLITS}
    return {"short_side": SHORT_SIDE, "counts": counts,
            "colour_counts": {s: sum(e.split == s and not e.greyscale for e in entries) for s in SPLITS},
            "sources": sorted({e.source for e in entries}), "photos": rows}


def read_manifest(root: str | Path) -> dict:
    """``ROOT/manifest.json`` of a built corpus, with a message naming the fix if absent."""
    p = Path(root) / "manifest.json"
    if not p.is_file():
        raise AdjinvError(f"no corpus at {str(root)!r}: build it with `make corpus` "
                          "(or `python -m adjinv.paper.data.corpus DIR`)")
    return json.loads(p.read_text())


def load_corpus_split(root: str | Path, split: str, *, colour_only: bool = False,
                      verify: bool = True) -> dict[str, torch.Tensor]:
    """The photos of one split of a built corpus, name → (3, H, W) in [0, 1]; each file is
    checked against the manifest's sha256 (``verify``), so a run never trains on a photo
    that differs from the one the manifest names."""
    if split not in SPLITS:
        raise AdjinvError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    man = read_manifest(root)
    out = {}
    for row in man["photos"]:
        if row["split"] != split or (colour_only and row["greyscale"]):
            continue
        data = (Path(root) / row["file"]).read_bytes()
        if verify and _sha256(data) != row["sha256"]:
            raise AdjinvError(f"corpus file {row['file']} differs from the manifest: rebuild the "
                              "corpus with `make corpus`")
        out[row["name"]] = _load_png(data)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m adjinv.paper.data.corpus DIR``: build the corpus into DIR."""
    import argparse

    ap = argparse.ArgumentParser(description="Build the photo corpus (Debian wallpaper "
                                 "photographs + the embedded photos) into DIR.")
    ap.add_argument("root", help="output folder (ImageFolder-style tree + manifest.json)")
    ap.add_argument("--manifest-copy", default=None,
                    help="also write the manifest here (the committed copy)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    entries = build_corpus(args.root)
    if args.manifest_copy:
        atomic_write_json(args.manifest_copy, manifest_json(entries))
    counts = manifest_json(entries)["counts"]
    log.info("corpus: %d photos (%s) in %s", len(entries),
             ", ".join(f"{k} {v}" for k, v in counts.items()), args.root)


if __name__ == "__main__":
    main()
