"""``adjinv experiment fidelity``: reconstruction fidelity against inversion baselines
(Sec. 3.1, Table 1, Supp. C.1; docs/method.md §13).

For every encoder and data set, each method reconstructs every test image from the
deepest features ``A_L`` of the same frozen encoder:

- ``ours``: ``x̂_L`` through the LACs (a ``--lac NAME=PATH`` checkpoint, else the bundled
  one, else identity LACs with a warning — the table records which), always beside the
  **seed-zero control** (docs/method.md §14) — the same cascade with the seed set to zero;
- ``vanilla``: the raw VJP mapped by the per-RGB gain/offset stored in the LAC checkpoint,
  or, when it has none, fitted once on the data set's training images (never per test image);
- ``mahendran``: [`mahendran_vedaldi()`][adjinv.paper.baselines.mahendran.mahendran_vedaldi];
- ``robust``: the same optimisation on robust weights given with ``--robust NAME=PATH``
  (else reported unavailable);
- ``upconv``: a decoder trained on the training images' ``A_L`` (checkpoint in
  ``out/upconv/``, resumable).

Scores on de-normalised images clipped to [0, 1]: SSIM (Gaussian window), PSNR, and
LPIPS when ``--lpips-backbone`` and ``--lpips-linear`` are given (else "unavailable").
Per-image results are cached in ``out/cache/`` (a rerun continues where it stopped);
``results.json`` and ``table.md`` (method × data set, cells per encoder ``a/b/c``) are
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core.inverter import AdjointInverter
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_json, atomic_write_text
from ...lacs.vanilla import VanillaMap
from ...metrics.lpips import load_lpips
from ...metrics.reconstruction import psnr, ssim
from ...state import module_device, to_module
from ..baselines.mahendran import MVConfig, mahendran_vedaldi
from ..baselines.upconv import UpConvConfig, train_upconv, upconv_reconstruct
from ..data.evalsets import EvalSet, open_eval_set
from .common import Log, environment, load_named_encoder, quiet_log, warnings_to_log
from .interference_common import portable_path
from .skeleton import Runner, option

METHODS = ("ours", "control", "vanilla", "mahendran", "robust", "upconv")
LABELS = {"ours": "Ours (x̂_L)", "control": "Control: seed zero", "vanilla": "Vanilla gradient",
          "mahendran": "Mahendran & Vedaldi", "robust": "Robust inversion", "upconv": "UpConvNet"}


def _pairs(flag: str) -> Callable[[list[str]], dict[str, str]]:
    """Parser of a repeatable ``NAME=PATH`` flag into ``{NAME: PATH}``."""
    def parse(items: list[str]) -> dict[str, str]:
        out = {}
        for it in items:
            k, sep, v = it.partition("=")
            if not sep or not k or not v:
                raise AdjinvError(f"{flag} expects NAME=PATH, got {it!r}")
            out[k] = v
        return out

    return parse


@dataclass
class FidelityConfig:
    """Settings of the fidelity runner (JSON keys = field names)."""

    encoders: list[str] = option(["efficientnet_lite0"], "registry names")
    data: list[str] = option(["samples"], "samples, images:DIR, KIND:ROOT; append @MASKDIR for masks; "
        "repeatable", append=True)
    weights: dict[str, str] = option({}, "encoder weights, repeatable", append=True, metavar="NAME=PATH",
        parse=_pairs("--weights"))
    lac: dict[str, str] = option({}, "LAC checkpoint, repeatable", append=True, metavar="NAME=PATH",
        parse=_pairs("--lac"))
    robust: dict[str, str] = option({}, "adversarially robust weights, repeatable", append=True,
        metavar="NAME=PATH", parse=_pairs("--robust"))
    random_init: bool = option(False, "testing only")
    size: int = option(128, "image side in px")
    max_images: int | None = option(None, "test images per data set")
    train_images: int = option(64, "training images for UpConvNet/vanilla fit")
    methods: list[str] = option(list(METHODS), f"subset of {', '.join(METHODS)} (default: all)")
    mv: dict = option({}, f"M&V optimisation steps (default {MVConfig.steps}; JSON: any MVConfig field)",
        flag="--mv-steps", type=int, parse=lambda n: {"steps": n})
    upconv: dict = option({}, f"UpConvNet training steps (default {UpConvConfig.steps}; JSON: any "
        "UpConvConfig field)", flag="--upconv-steps", type=int, parse=lambda n: {"steps": n})
    lpips_net: str = option("alex", "LPIPS network", choices=["alex", "vgg"])
    lpips_backbone: str | None = option(None, "torchvision alexnet/vgg16 state dict")
    lpips_linear: str | None = option(None, "lpips v0.1 linear-layer weights (alex.pth / vgg.pth)")
    chunk_size: int | None = option(None, "channels per batched cascade pass")
    seed: int = option(0, "training subsets, baselines' initialisation")

    def validate(self) -> None:
        """Reject impossible settings."""
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise AdjinvError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
        if not self.encoders or not self.data:
            raise AdjinvError("give at least one encoder and one data set")
        if self.size < 16:
            raise AdjinvError("size must be at least 16 px")


def _key(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _scores(enc: StagedEncoder, rec: torch.Tensor, img: torch.Tensor, lp: object) -> dict:
    d = enc.to_display(rec).float().cpu()
    out = {"ssim": float(ssim(d, img)[0]), "psnr": float(psnr(d, img)[0])}
    if lp is not None:
        out["lpips"] = float(lp(d, img)[0])  # type: ignore[operator]
    return out


class _Methods:
    """Everything one (encoder, data set) pair needs, built once."""

    def __init__(self, enc: StagedEncoder, cfg: FidelityConfig, es: EvalSet, out: Path,
                 log: Log) -> None:
        from ...lacs.bundled import load_lacs
        from ...lacs.training import fit_vanilla

        self.enc, self.cfg, self.log = enc, cfg, log
        self.info: dict = {}
        with warnings_to_log(log):
            lacs, vmap, source = load_lacs(enc, cfg.lac.get(enc.name))
        source = portable_path(source)
        self.info["lacs"] = source
        self.inv = AdjointInverter(enc, lacs, chunk_size=cfg.chunk_size)
        self.vanilla: VanillaMap | None = None
        if "vanilla" in cfg.methods:
            if vmap is not None:
                self.vanilla, self.info["vanilla_map"] = vmap, f"from the LAC checkpoint {source}"
            elif es.train is not None:
                self.vanilla = fit_vanilla(enc, self.inv, list(es.train), cfg.size)
                self.info["vanilla_map"] = (f"fitted once on {es.train.shape[0]} training images "
                                            "(the LAC checkpoint has none)")
            else:
                self.info["vanilla_map"] = "unavailable: no fitted map and no training images"
        self.robust_enc = None
        if "robust" in cfg.methods:
            path = cfg.robust.get(enc.name)
            if path is None:
                self.info["robust"] = (f"unavailable: no adversarially robust weights for {enc.name} "
                                       f"(--robust {enc.name}=PATH)")
            else:
                self.robust_enc = load_named_encoder(enc.name, path, False, log)
                self.info["robust"] = f"robust weights {path}"
        self.decoder = None
        if "upconv" in cfg.methods:
            if es.train is None:
                self.info["upconv"] = "unavailable: the data set has no training images"
            else:
                ucfg = UpConvConfig(**{"seed": cfg.seed, **cfg.upconv})
                ck = out / "upconv" / f"{enc.name}__{es.label}.safetensors"
                t0 = time.perf_counter()
                self.decoder, losses = train_upconv(enc, es.train, ucfg, checkpoint=ck,
                                                    progress=_bar_progress(f"UpConvNet {enc.name}"))
                self.info["upconv"] = {"checkpoint": str(ck), "steps": ucfg.steps,
                                       "train_images": int(es.train.shape[0]),
                                       "final_loss": losses[-1] if losses else None,
                                       "seconds": round(time.perf_counter() - t0, 2)}
        self.mv = MVConfig(**{"seed": cfg.seed, **cfg.mv})
        self.info["mahendran"] = self.mv.to_dict()

    def run(self, method: str, x: torch.Tensor) -> torch.Tensor | str:
        """Reconstruction (1, 3, H, W) in normalised space, or the reason it is unavailable."""
        if method == "ours":
            return self.inv.invert(x, stages=[-1]).x_hat[self.enc.num_stages - 1]
        if method == "control":
            return self.inv.seed_zero_control(x)
        if method == "vanilla":
            if self.vanilla is None:
                return self.info["vanilla_map"]
            return self.vanilla(self.inv.vanilla_gradient(x))
        if method == "mahendran":
            return mahendran_vedaldi(self.enc, x, MVConfig(**self.mv.to_dict()))
        if method == "robust":
            if self.robust_enc is None:
                return self.info["robust"]
            return mahendran_vedaldi(self.robust_enc, x, MVConfig(**self.mv.to_dict()))
        if self.decoder is None:
            return self.info["upconv"]
        return upconv_reconstruct(self.enc, self.decoder, x)


def _bar_progress(desc: str):
    from tqdm import tqdm

    state: dict = {}

    def cb(done: int, total: int, loss: float) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, leave=False, file=sys.stderr, disable=None)
        bar = state["bar"]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return cb


def run_fidelity(cfg: FidelityConfig, out: str | Path, *,
                 encoders: dict[str, StagedEncoder] | None = None, log: Log = quiet_log) -> dict:
    """Run Table 1 and write ``results.json`` and ``table.md`` to ``out``. ``encoders``
    maps names to ready encoders (library use; overrides loading by name)."""
    from tqdm import tqdm

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lp, lp_reason = load_lpips(cfg.lpips_net, cfg.lpips_backbone, cfg.lpips_linear)
    if lp is None:
        log(f"LPIPS {lp_reason}")
    t_all = time.perf_counter()
    results: dict = {"experiment": "fidelity", "config": asdict(cfg),
                     "lpips": {"net": cfg.lpips_net} if lp is not None else lp_reason,
                     "cells": {}, "setup": {}, "data": {}}
    for name in cfg.encoders:
        enc = (encoders or {}).get(name) or load_named_encoder(
            name, cfg.weights.get(name), cfg.random_init, log)
        lpd = lp.to(module_device(enc)) if lp is not None else None
        for spec in cfg.data:
            es = open_eval_set(spec, cfg.size, max_images=cfg.max_images,
                               train_images=cfg.train_images, seed=cfg.seed)
            results["data"][spec] = es.description
            log(f"fidelity: {name} on {spec} ({len(es.test)} images, {cfg.size} px)")
            m = _Methods(enc, cfg, es, out, log)
            results["setup"][f"{name}|{spec}"] = m.info
            key = _key({"cfg": {k: v for k, v in asdict(cfg).items()
                                if k not in ("encoders", "data", "max_images")},
                        "encoder": enc.weights_hash(), "lacs": m.info["lacs"]})
            per_image: dict[str, dict] = {}
            for img_name, img in tqdm(es.test.items(), desc=f"{name} {spec}", leave=False,
                                      file=sys.stderr, disable=None):
                cache = out / "cache" / name / es.label / f"{img_name}.json"
                if cache.is_file():
                    saved = json.loads(cache.read_text())
                    if saved.get("key") == key:
                        per_image[img_name] = saved["methods"]
                        continue
                x = enc.normalize(to_module(img, enc))[None]
                row: dict = {}
                for meth in cfg.methods:
                    t0 = time.perf_counter()
                    rec = m.run(meth, x)
                    if isinstance(rec, str):
                        row[meth] = {"unavailable": rec}
                        continue
                    secs = time.perf_counter() - t0
                    row[meth] = {**_scores(enc, rec, img[None], lpd), "seconds": secs}
                atomic_write_json(cache, {"key": key, "methods": row})
                per_image[img_name] = row
            results["cells"][f"{name}|{spec}"] = _aggregate(per_image, cfg.methods)
            results["cells"][f"{name}|{spec}"]["per_image"] = per_image
    results["seconds"] = round(time.perf_counter() - t_all, 2)
    results["environment"] = environment()
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", markdown_table(results))
    log(f"wrote {out}/results.json and table.md ({results['seconds']:.1f} s)")
    return results


def _aggregate(per_image: dict[str, dict], methods: list[str]) -> dict:
    agg: dict = {}
    for meth in methods:
        rows = [r[meth] for r in per_image.values() if meth in r and "unavailable" not in r[meth]]
        if not rows:
            reason = next((r[meth]["unavailable"] for r in per_image.values() if meth in r), "not run")
            agg[meth] = {"unavailable": reason}
            continue
        agg[meth] = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        agg[meth]["n"] = len(rows)
    return agg


def markdown_table(results: dict) -> str:
    """Table 1 layout: rows method × metric, columns data sets, cells ``a/b/…`` per encoder
    (SSIM and LPIPS ×100 as in the paper; PSNR in dB; seconds per image)."""
    cfg = results["config"]
    encs, data = cfg["encoders"], cfg["data"]
    metrics = [("ssim", "SSIM ×100 ↑", 100), ("lpips", "LPIPS ×100 ↓", 100),
               ("psnr", "PSNR dB ↑", 1), ("seconds", "s / image", 1)]
    lines = [f"# Reconstruction fidelity (Table 1 layout) — cells: {' / '.join(encs)}", "",
             f"{cfg['size']} px; '–' = unavailable (see results.json 'setup').", "",
             "| Method | Metric | " + " | ".join(data) + " |", "|---|---|" + "---|" * len(data)]
    for meth in cfg["methods"]:
        for key, label, scale in metrics:
            if key == "lpips" and not isinstance(results["lpips"], dict):
                continue
            cells = []
            for spec in data:
                vals = []
                for e in encs:
                    c = results["cells"].get(f"{e}|{spec}", {}).get(meth, {})
                    vals.append(f"{scale * c[key]:.{1 if key != 'seconds' else 2}f}"
                                if key in c else "–")
                cells.append("/".join(vals))
            lines.append(f"| {LABELS[meth]} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "Data:"] + [f"- {k}: {v}" for k, v in results["data"].items()]
    lines += ["", "Setup per encoder and data set (LACs, vanilla map, robust weights, UpConvNet):"]
    for k, v in results["setup"].items():
        lines.append(f"- {k}: LACs {v['lacs']}; vanilla map: {v.get('vanilla_map', 'not run')}; "
                     f"robust: {v.get('robust', 'not run')}")
    if not isinstance(results["lpips"], dict):
        lines += ["", f"LPIPS {results['lpips']}"]
    lines += ["", "Read 'Ours' beside 'Control: seed zero' (docs/method.md §14): the control shows how much "
                  "likeness the image's own activation masks and the LAC biases give without the "
                  f"features. Wall time {results['seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI
EPILOG = """examples:
  adjinv experiment fidelity --out runs/fid                      # bundled photos, Lite0
  adjinv experiment fidelity --encoders resnet50 resnet18 --weights resnet50=r50.pth \\
      --weights resnet18=r18.pth --lac resnet50=r50.lac.safetensors --robust resnet50=r50_l2.pth \\
      --data oxford_pet:data/pets --data stanford_dogs:data/dogs --max-images 200 --size 224 \\
      --lpips-backbone alexnet-owt-7be5be79.pth --lpips-linear lpips_v0.1_alex.pth --out runs/t1
"""


RUNNERS = (Runner(
    "fidelity", FidelityConfig, run_fidelity,
    help="reconstruction fidelity vs inversion baselines (Table 1)",
    description="Invert the deepest features with ours (+ seed-zero control), vanilla gradient, "
                "Mahendran & Vedaldi, robust inversion and UpConvNet; score SSIM, PSNR, LPIPS.",
    epilog=EPILOG, out_help="output folder (rerun to resume)"),)
