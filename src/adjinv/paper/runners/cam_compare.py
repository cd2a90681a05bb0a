"""``adjinv experiment cam-compare``: our class-directional saliency vs Grad-CAM,
Grad-CAM++ and Score-CAM (Sec. 3.3, Table 3, Supp. C.7; docs/method.md §11).

Every method is called through the same ``attribute(x, target=None)`` shape
([`adjinv.paper.baselines.cam`][adjinv.paper.baselines.cam]) for the class predicted on the clean image, on
the same
encoder (CAMs at the deepest stage's output). Faithfulness: Insertion / Deletion AUC
([`adjinv.metrics.faithfulness`][adjinv.metrics.faithfulness]); localisation — only where the data set has
masks —
mIoU, mAP, pAcc, Pointing ([`adjinv.metrics.localisation`][adjinv.metrics.localisation]). The seconds each
method
takes to produce one saliency map are recorded per image.

Per-image results are cached in ``out/cache/`` (a rerun resumes); ``results.json`` and
``table.md`` are written atomically.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core.inverter import AdjointInverter
from ...distributed import barrier, is_main, share_work
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_json, atomic_write_text
from ...methods.class_directional import MODES
from ...methods.controls import randomization_levels, randomized_encoder
from ...metrics.faithfulness import insertion_deletion
from ...metrics.localisation import LocalisationMetric
from ...state import to_module
from ..analysis.ecr import spearman
from ..baselines.cam import (
    CAM_LIBRARY,
    AdjointSaliency,
    CAMSaliency,
    CentredAdjointSaliency,
    EdgeSaliency,
    RandomSaliency,
)
from ..data.evalsets import EvalSet, open_eval_set
from .common import Log, environment, load_named_encoder, quiet_log, warnings_to_log
from .fidelity import _key
from .interference_common import parse_levels, portable_path
from .skeleton import Runner, option

METHODS = ("gradcam", "gradcam++", "scorecam", "ours", "ours_zero_mean", "random", "edge")
LABELS = {"gradcam": "G-CAM", "gradcam++": "G-CAM++", "scorecam": "S-CAM", "ours": "Ours",
          "ours_zero_mean": "Ours, per-RGB zero-mean x̂", "random": "sanity: random map",
          "edge": "sanity: Sobel edges of the input"}


def _levels_or_none(values: list[str]) -> list:
    """``--randomize`` values: stage counts and 'all', or just 'none' (no check)."""
    return [] if values == ["none"] else parse_levels(values)


@dataclass
class CamCompareConfig:
    """Settings of the CAM comparison (JSON keys = field names)."""

    encoder: str = option("efficientnet_lite0", "registry name")
    weights: str | None = option(None, "local encoder state dict")
    lac: str | None = option(None, "LAC checkpoint or bundled variant name (default: bundled, else identity)")
    random_init: bool = option(False, "testing only")
    data: list[str] = option(["samples", "composites"], "samples, composites, images:DIR, KIND:ROOT; append "
        "@MASKDIR for masks; repeatable", append=True)
    size: int = option(128, "image side in px")
    max_images: int | None = option(None, "images per data set")
    methods: list[str] = option(list(METHODS), f"subset of {', '.join(METHODS)} (default: all)")
    mode: str = option("contribution", "class weighting α of ours (docs/method.md §6)", choices=MODES)
    steps: int = option(100, "insertion/deletion steps")
    internal_batch_size: int = option(64, "perturbed images per forward")
    score_batch_size: int = option(32, "Score-CAM forward batch")
    tolerance: float = option(15.0, "pointing-game tolerance in px")
    chunk_size: int | None = option(None, "channels per batched cascade pass")
    seed: int = option(0, "random map, model randomisation")
    randomize: list = option([1, 3], "stage counts re-initialised for the model-randomisation sanity check "
        "(integers or 'all'; 'none': no check)", parse=_levels_or_none)
    blurred_deletion: bool = option(True, "skip the deletion curve onto a blurred copy",
        flag="--no-blurred-deletion", const=False)

    def validate(self) -> None:
        """Reject impossible settings."""
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise AdjinvError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
        if self.steps < 1 or self.internal_batch_size < 1 or self.score_batch_size < 1:
            raise AdjinvError("steps, internal_batch_size and score_batch_size must be >= 1")


def run_cam_compare(cfg: CamCompareConfig, out: str | Path, *, encoder: StagedEncoder | None = None,
                    log: Log = quiet_log) -> dict:
    """Run Table 3 for every data set; write ``results.json`` and ``table.md``. Under
    ``torchrun`` the ranks share each data set's images (filling ``out/cache``), then rank 0
    aggregates and writes; every rank returns the results (docs/cluster.md)."""
    from tqdm import tqdm

    from ...lacs.bundled import load_lacs

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    enc = encoder if encoder is not None else load_named_encoder(cfg.encoder, cfg.weights,
                                                                 cfg.random_init, log)
    with warnings_to_log(log):
        lacs, _, source = load_lacs(enc, cfg.lac)
    inv = AdjointInverter(enc, lacs, chunk_size=cfg.chunk_size)

    def build(e: StagedEncoder, a: AdjointInverter, level: int = 0) -> dict:
        made: dict = {}
        for m in cfg.methods:
            if m == "ours":
                made[m] = AdjointSaliency(a, cfg.mode)
            elif m == "ours_zero_mean":
                made[m] = CentredAdjointSaliency(a, cfg.mode)
            elif m == "random":
                made[m] = RandomSaliency(cfg.seed + 100_003 * level)  # a fresh draw per level
            elif m == "edge":
                made[m] = EdgeSaliency()
            else:
                made[m] = CAMSaliency(e, m, score_batch_size=cfg.score_batch_size)
        return made

    methods = build(enc, inv)
    levels = randomization_levels(cfg.randomize, enc.num_stages) if cfg.randomize else []
    # cascading model randomisation (Adebayo et al. 2018): the same methods on a copy whose
    # top n stages are re-initialised; same head, LACs and class index
    rand_methods = {}
    for n in levels:
        enc_r = randomized_encoder(enc, n, cfg.seed)
        rand_methods[n] = build(enc_r, AdjointInverter(enc_r, lacs, chunk_size=cfg.chunk_size), n)
    key = _key({"cfg": {k: v for k, v in asdict(cfg).items() if k not in ("data", "max_images")},
                "encoder": enc.weights_hash(), "lacs": source, "v": 2})
    results: dict = {"experiment": "cam-compare", "config": asdict(cfg), "encoder": enc.name,
                     "lacs": portable_path(source), "cam_library": CAM_LIBRARY,
                     "randomize_levels": levels,
                     "postprocess": {m: s.postprocess for m, s in methods.items()},
                     "data": {}, "tables": {}}
    for spec in cfg.data:
        es = open_eval_set(spec, cfg.size, max_images=cfg.max_images, train_images=0, seed=cfg.seed)
        results["data"][spec] = es.description
        log(f"cam-compare: {enc.name} on {spec} ({len(es.test)} images, {cfg.size} px, "
            f"masks: {'yes' if es.masks is not None else 'no'})")

        def image_row(item: tuple[str, torch.Tensor], es: EvalSet = es) -> dict:
            """One image's scores per method, from ``out/cache`` or computed (and cached)."""
            name, img = item
            cache = out / "cache" / es.label / f"{name}.json"
            if cache.is_file():
                saved = json.loads(cache.read_text())
                if saved.get("key") == key:
                    return saved["methods"]
            x = enc.normalize(to_module(img, enc))[None]
            with enc.frozen(), torch.no_grad():
                target = enc(x).argmax(1)
            row = {}
            for m, meth in methods.items():
                t0 = time.perf_counter()
                s = meth.attribute(x, target)
                secs = time.perf_counter() - t0
                with enc.frozen():
                    f = insertion_deletion(enc, x, s, target=target, steps=cfg.steps,
                                           internal_batch_size=cfg.internal_batch_size,
                                           blurred_deletion=cfg.blurred_deletion)
                r = {"insertion": float(f.insertion[0]), "deletion": float(f.deletion[0]),
                     "seconds": secs, "target": int(target[0])}
                if f.deletion_blur is not None:
                    r["deletion_blur"] = float(f.deletion_blur[0])
                for n, rm in rand_methods.items():
                    s_r = rm[m].attribute(x, target)
                    r[f"rank_corr_top{n}"] = spearman(s.detach().flatten(), s_r.detach().flatten())
                if es.masks is not None:
                    loc = LocalisationMetric(tolerance=cfg.tolerance)
                    vals = loc.update(s, es.masks[name][None].to(s.device))
                    r.update({k: float(v[0]) for k, v in vals.items()})
                row[m] = r
            atomic_write_json(cache, {"key": key, "methods": row})
            return row

        # under torchrun the ranks share the images (filling out/cache); rank 0 aggregates
        if not share_work(list(es.test.items()), image_row):
            continue
        per_image = {name: image_row((name, img)) for name, img in
                     tqdm(es.test.items(), desc=spec, leave=False, file=sys.stderr, disable=None)}
        results["tables"][spec] = {"mean": _mean(per_image, list(methods)), "per_image": per_image,
                                   "masks": es.masks is not None}
    if not is_main():  # under torchrun: wait for rank 0's results.json
        barrier()
        return json.loads((out / "results.json").read_text())
    results["seconds"] = round(time.perf_counter() - t_all, 2)
    results["environment"] = environment()
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", markdown_table(results))
    log(f"wrote {out}/results.json and table.md ({results['seconds']:.1f} s)")
    barrier()  # under torchrun the other ranks wait for results.json
    return results


def _mean(per_image: dict[str, dict], methods: list[str]) -> dict:
    out: dict = {}
    for m in methods:
        rows = [r[m] for r in per_image.values()]
        keys = [k for k in rows[0] if k != "target"]
        out[m] = {}
        for k in keys:
            vals = [r[k] for r in rows if r[k] == r[k]]  # NaN (empty mask) excluded
            out[m][k] = sum(vals) / len(vals) if vals else float("nan")
        out[m]["n"] = len(rows)
    return out


def markdown_table(results: dict) -> str:
    """Table 3 layout per data set: Ins ↑ / Del ↓ (and mIoU, mAP, pAcc, Point where masks
    exist), plus seconds per image for each method."""
    lines = [f"# CAM comparison (Table 3 layout) — {results['encoder']}, LACs: {results['lacs']}", "",
             f"CAMs: {results['cam_library']}, at the deepest stage's output; their maps are ReLU'd "
             "and min-max normalised by the library. Ours: Σ_rgb |x̂^(k)| for the class predicted on "
             "the clean image.", ""]
    for spec, t in results["tables"].items():
        first = next(iter(t["mean"].values()))
        cols = [("insertion", "Ins ↑"), ("deletion", "Del ↓")]
        if "deletion_blur" in first:
            cols.append(("deletion_blur", "Del onto blur ↓"))
        if t["masks"]:
            cols += [("miou", "mIoU ↑"), ("map", "mAP ↑"), ("pacc", "pAcc ↑"), ("pointing", "Point ↑")]
        cols += [(k, f"ρ(map, map of random top {k[13:]})") for k in first if k.startswith("rank_corr_top")]
        cols.append(("seconds", "s / image"))
        n = first["n"]
        lines += [f"## {spec} ({n} images)", "", "| Method | " + " | ".join(c[1] for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for m, v in t["mean"].items():
            lines.append(f"| {LABELS[m]} | " + " | ".join(
                f"{v[k]:.2f}" if k == "seconds" else f"{v[k]:.3f}" for k, _ in cols) + " |")
        if any(k.startswith("rank_corr") for k, _ in cols):
            lines += ["", "ρ: Spearman rank correlation of each method's map with the same method's "
                          "map on a copy of the encoder whose top n stages are re-initialised "
                          "(cascading, Adebayo et al. 2018): a map that does not change (ρ near 1) "
                          "does not depend on what those stages learned."]
        if not t["masks"]:
            lines += ["", "No foreground masks for this data set: localisation not computed."]
        lines += ["", f"Data: {results['data'][spec]}", ""]
    lines.append(f"Wall time {results['seconds']:.1f} s.")
    return "\n".join(lines) + "\n"


EPILOG = """examples:
  adjinv experiment cam-compare --out runs/cam                 # bundled photos (faithfulness only)
  adjinv experiment cam-compare --data oxford_pet:data/pets --max-images 100 --size 224 --out runs/t3
  adjinv experiment cam-compare --data images:photos/@masks/ --out runs/mine   # masks by file name
"""


RUNNERS = (Runner(
    "cam-compare", CamCompareConfig, run_cam_compare,
    help="our saliency vs Grad-CAM, Grad-CAM++, Score-CAM (Table 3)",
    description="Insertion/Deletion AUC and (with masks) mIoU, mAP, pixel accuracy and the "
                "pointing game for our class-directional saliency and three CAMs.",
    epilog=EPILOG, out_help="output folder (rerun to resume)", distributed=True),)
