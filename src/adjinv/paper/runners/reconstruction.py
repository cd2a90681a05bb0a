"""``adjinv experiment reconstruction``: does x̂_L reconstruct the image from its features?

A pre-registered, held-out, controlled evaluation (docs/evidence.md).
The protocol — photos, crops, methods, metrics and the decision rule — is written to
``protocol.json`` before anything is computed; a rerun with other settings in the same
folder is refused.

**Photos.** LAC-free parts (the vanilla map, UpConvNet, the flat colour) are fitted on the
training photos only; every score is measured on held-out photos only, and the held-out
photos choose nothing. Defaults: [`adjinv.images.photos.split_photos()`][adjinv.images.photos.split_photos]
(``--train DIR
--heldout DIR`` for your own). A held-out photo that the evaluated LAC checkpoint names
among its training images is flagged ``seen_by_lacs`` and left out of the verdicts and
the summary. Crop 0 is the centre crop, crops 1… are fixed random crops (a generator
seeded by photo and crop); crops are averaged within a photo first, and 95 % intervals
are a percentile bootstrap over photos.

**Methods** ([`METHODS`][METHODS]) are rows of one table, each an image in the encoder's input
space: x̂_L (Eq. 8) with the trained and with identity LACs; the seed-zero control Ψ(0);
swapped seeds (another held-out photo's ``A_L`` and simplex weights pulled back through
this photo's Jacobians; the partner of photo ``i`` is photo ``i + 1`` in a fixed order,
never itself); Gaussian seeds with ``A_L``'s per-channel ℓ2 norms and this photo's
weights; x̂_L with the top stage re-initialised; the vanilla gradient with its map fitted
on the training photos, per-image min-max, or per-image least-squares affine (an upper
bound); the flat mean colour of the training photos; Mahendran & Vedaldi; UpConvNet
(trained here on crops of the training photos, or a pre-trained file, ``--upconv-weights``);
Guided Backprop and DeconvNet (shown per-image min-max); Robust inversion (the Mahendran
& Vedaldi optimisation on an adversarially robust copy of the encoder) only when
``--robust PATH`` gives its weights (else "unavailable"); and the feature-specific view
``x̂ − mean_{j≤K} x̂_swap(i+j)`` for each K in ``partners``.

**Metrics**, the same for every method (``x``: the input crop in [0, 1]):
``ssim``/``psnr`` on the method's own pixel mapping (de-normalised, clipped);
``ssim_affine``/``psnr_affine`` on the *display mapping* — a least-squares affine map per
image and RGB channel fitted to ``x``, then clipped ([`affine_fit()`][adjinv.metrics.likeness.affine_fit]),
which is also what the figure shows; ``pearson`` (per-RGB r, mean over RGB); ``gmsd`` and
``haarpsi`` (``piq``, on the display mapping); ``lpips`` (own pixel mapping) only when
``--lpips-backbone`` and ``--lpips-linear`` name the weight files (else "unavailable",
never a number from random weights); re-encoding agreement (top-5 overlap and
GAP-feature cosine of display vs ``x`` under each independent network, at its own input
size); and ``l1``, the training objective ``mean |out − x|`` in the encoder's input space.

**Verdict** per held-out photo (on ``pearson`` and ``ssim_affine``):
V1 trained beats identity LACs (and, with ≥ 3 learning-curve points, the held-out gain
over identity grows with training: Spearman ρ(step, gain) > 0 and the last gain exceeds
the first); V2 trained beats the flat colour and the best of the three vanilla rows;
V3 the feature share ``(r_x̂ − r_swap)/(r_x̂ − r_identity)`` on Pearson is ≥ 0.5;
V4 (a description, not a pass) whether seed-zero and swapped-seed Pearson rise from
the first to the last learning-curve point. "Reconstructs from the features" = V1 ∧ V2 ∧ V3.

**Figure 2** (``figure2.png``): the qualitative grid of the paper's Sec. 3.1 — held-out
photos as rows; the input, Ours (x̂_L), Vanilla (map fitted on the training photos),
Mahendran & Vedaldi, Robust inversion ("unavailable" without weights) and UpConvNet as
columns, plus the seed-zero control (docs/method.md §14) — each in its own pixel mapping,
no per-image fit. ``--figure2-only`` redraws it from a finished run's cache.
"""

from __future__ import annotations

import copy
import json
import math
import re
import textwrap
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ...core.inverter import AdjointInverter
from ...core.lac import LACBank
from ...core.simplex import simplex_measure
from ...distributed import all_reduce_sum, barrier, is_main, rank_world, share_work
from ...encoders.staged import StagedEncoder
from ...encoders.weights import load_into, read_state_dict
from ...errors import AdjinvError
from ...fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from ...images.files import list_images, load_image, random_crop, resize_center_crop
from ...lacs.checkpoint import load_checkpoint, resolve_checkpoint
from ...lacs.vanilla import VanillaMap, fit_vanilla_map
from ...metrics.likeness import affine_fit, bootstrap_ci, gmsd, haarpsi, pearson_rgb, reencoding_agreement
from ...metrics.lpips import LPIPS, load_lpips
from ...metrics.reconstruction import psnr, ssim
from ..analysis.ecr import spearman
from ..baselines.guided import modified_gradient
from ..baselines.mahendran import MVConfig, mahendran_vedaldi, robust_inversion
from ..baselines.upconv import UpConvConfig, load_upconv, train_upconv, upconv_reconstruct
from .common import (
    Log,
    environment,
    load_named_encoder,
    pyplot,
    quiet_log,
    save_figure,
)
from .interference_common import portable_path
from .skeleton import Runner, Variant, option

PROTOCOL_VERSION = 1

BASE_METHODS: tuple[str, ...] = (
    "trained", "identity", "seed_zero", "swapped", "random_seed", "top_reinit",
    "vanilla_train", "vanilla_minmax", "vanilla_affine", "flat", "mahendran", "upconv",
    "guided", "deconvnet")
METHODS = BASE_METHODS  # plus feature_k{K} for each K in the config's partners

LABELS: dict[str, str] = {
    "trained": "x̂_L, trained LACs", "identity": "x̂_L, identity LACs",
    "seed_zero": "seed-zero Ψ(0)", "swapped": "swapped seeds (partner photo)",
    "random_seed": "random Gaussian seeds", "top_reinit": "x̂_L, top stage re-initialised",
    "vanilla_train": "vanilla, map fitted on training photos",
    "vanilla_minmax": "vanilla, per-image min-max",
    "vanilla_affine": "vanilla, per-image LS affine (upper bound)",
    "flat": "flat mean colour (training photos)", "mahendran": "Mahendran & Vedaldi",
    "upconv": "UpConvNet (training photos)", "guided": "Guided Backprop",
    "deconvnet": "DeconvNet", "robust": "Robust inversion (M&V on the robust encoder)",
}
KIND: dict[str, str] = {
    "trained": "method", "identity": "control", "seed_zero": "control", "swapped": "control",
    "random_seed": "control", "top_reinit": "control", "vanilla_train": "baseline",
    "vanilla_minmax": "baseline", "vanilla_affine": "baseline", "flat": "baseline",
    "mahendran": "baseline", "upconv": "baseline", "guided": "baseline", "deconvnet": "baseline",
    "robust": "baseline",
}
METRICS: tuple[str, ...] = ("pearson", "ssim_affine", "psnr_affine", "ssim", "psnr", "gmsd",
                            "haarpsi", "l1")
HIGHER_BETTER = {"gmsd": False, "l1": False, "lpips": False}
# optional settings, left out of protocol.json at their defaults (older protocols stay valid)
OPTIONAL_DEFAULTS: dict[str, Any] = {"robust": None, "lpips_net": "alex", "lpips_backbone": None,
                                     "lpips_linear": None, "upconv_weights": None}
# Figure 2's columns (docs/method.md §13), then the control (§14)
FIGURE2: tuple[tuple[str, str], ...] = (
    ("trained", "Ours (x̂_L)"), ("vanilla_train", "Vanilla"), ("mahendran", "Mahendran & Vedaldi"),
    ("robust", "Robust inversion"), ("upconv", "UpConvNet"), ("seed_zero", "control: seed zero"))
CURVE_METHODS = ("trained", "swapped", "random_seed", "seed_zero")
CURVE_METRICS = ("pearson", "ssim_affine", "l1")
# Input side of each re-encoding network (its ImageNet evaluation resolution).
REENCODE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


@dataclass
class ReconstructionConfig:
    """Settings of the evaluation (all stored in ``protocol.json``)."""

    encoder: str = option("efficientnet_lite0", "registry name")
    weights: str | None = option(None, "local encoder state dict")
    random_init: bool = option(False, "testing only")
    lac: str | None = option(None, "LAC checkpoint or bundled variant name to evaluate (default: the "
        "bundled one)")
    curve: str | None = option(None, "folder of step-N.lac.safetensors for the learning curve")
    train: str | None = option(None, "folder of training photos (with --heldout)")
    heldout: str | None = option(None, "folder of held-out photos (with --train)")
    size: int = option(128, "crop side in px")
    crops: int = option(3, "crops per photo")
    min_crop: float = option(0.5, "smallest random crop, as a fraction of the photo's side")
    max_photos: int | None = option(None, "use only the first N held-out photos")
    partners: list[int] = option([1, 2, 4], "K values of the feature-specific view")
    mv_steps: int = option(200, "Mahendran & Vedaldi steps")
    upconv_steps: int = option(300, "UpConvNet training steps")
    upconv_crops: int = option(8, "crops per training photo for UpConvNet")
    upconv_weights: str | None = option(None, "a pre-trained UpConvNet file for this encoder "
        "(benchmarks/train_upconv.py), loaded instead of training one (upconv_steps and "
        "upconv_crops are then unused)")
    reencoders: list[str] = option(["efficientnet_lite1", "efficientnet_lite2"], "independent networks of "
        "the re-encoding agreement")
    seed: int = option(0, "crops, random seeds, baselines")
    chunk_size: int | None = option(None, "channels per batched cascade pass")
    quick: bool = option(False, "64 px, 1 crop, 3 photos, cheap baselines: minutes")
    robust: str | None = option(None, "adversarially robust weights of the same encoder (Robust "
        "inversion; without them it is reported unavailable)")
    lpips_net: str = option("alex", "LPIPS backbone kind", choices=["alex", "vgg"])
    lpips_backbone: str | None = option(None, "torchvision alexnet/vgg16 state dict (LPIPS)")
    lpips_linear: str | None = option(None, "lpips v0.1 linear-layer weights (LPIPS)")

    def apply_quick(self) -> None:
        """The ``--quick`` setting: tiny size, one crop, three photos, cheap baselines."""
        self.size, self.crops, self.max_photos = 64, 1, 3
        self.partners = [1, 2]
        self.mv_steps, self.upconv_steps, self.upconv_crops = 5, 10, 1

    def validate(self) -> None:
        """Reject impossible settings."""
        if self.size < 32 or self.crops < 1 or not 0 < self.min_crop <= 1:
            raise AdjinvError("reconstruction needs size >= 32, crops >= 1, 0 < min_crop <= 1")
        if (self.train is None) != (self.heldout is None):
            raise AdjinvError("pass both --train DIR and --heldout DIR, or neither (the embedded "
                              "photo split)")
        if not self.partners or min(self.partners) < 1:
            raise AdjinvError("partners must list K >= 1 (partners per feature-specific view)")


# ------------------------------------------------------------------ photos
def _photos(cfg: ReconstructionConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    if cfg.train is not None:
        def folder(d: str) -> dict[str, torch.Tensor]:
            return {p.stem: load_image(p, mode="convert") for p in list_images(d)}
        train, held = folder(cfg.train), folder(str(cfg.heldout))
        both = sorted(set(train) & set(held))
        if both:
            raise AdjinvError(f"--train and --heldout share photo name(s) {', '.join(both)}; "
                              "the split must be disjoint by photo")
    else:
        from ...images.photos import split_photos
        train, held = split_photos("train"), split_photos("heldout")
    if cfg.max_photos is not None:
        held = dict(list(held.items())[: cfg.max_photos])
    if len(held) < 2:
        raise AdjinvError("the swapped-seed control needs at least 2 held-out photos")
    return train, held


def crops_of(name: str, img: torch.Tensor, cfg: ReconstructionConfig) -> torch.Tensor:
    """(crops, 3, S, S): the centre crop, then fixed random crops of ``img``."""
    out = [resize_center_crop(img, cfg.size)]
    for k in range(1, cfg.crops):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + zlib.crc32(name.encode()) + k)
        out.append(random_crop(img, cfg.size, cfg.min_crop, g))
    return torch.stack(out)


def derangement(names: list[str], shift: int) -> dict[str, str]:
    """Partner of each photo: ``shift`` places on in the fixed order (never itself)."""
    n = len(names)
    if shift % n == 0:
        raise AdjinvError(f"a shift of {shift} pairs each of {n} photos with itself")
    return {names[i]: names[(i + shift) % n] for i in range(n)}


def _lac_step(meta: dict) -> int:
    for k in ("weights_step", "step", "exported_from_step"):
        if isinstance(meta.get(k), int):
            return meta[k]
    return int(meta.get("training", {}).get("steps", 0))


def _seen(meta: dict) -> set[str]:
    """Photo names a LAC checkpoint was trained on (``skimage:coffee`` → ``coffee``)."""
    imgs = meta.get("training", {}).get("images", []) or []
    return {Path(str(s).split(":", 1)[-1]).stem for s in imgs}


def reinit_top_stage(encoder: StagedEncoder, seed: int = 0) -> StagedEncoder:
    """A copy of ``encoder`` whose deepest stage has freshly initialised weights (and
    BatchNorm statistics): the model-randomisation control."""
    enc = copy.deepcopy(encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in enc.stages[-1].modules():
            reset, reset_stats = getattr(m, "reset_parameters", None), getattr(m, "reset_running_stats", None)
            if m is not enc.stages[-1] and callable(reset):
                reset()
            if callable(reset_stats):
                reset_stats()
    return enc


# ------------------------------------------------------------------ cache
class _Cache:
    """One safetensors file per (photo, crop, method): written atomically, skipped when present."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.computed = 0

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts[:-1], parts[-1] + ".safetensors")

    def get(self, *parts: str) -> tuple[torch.Tensor, float, float] | None:
        """``(output, wall seconds, CPU seconds)`` of a cached entry, or None."""
        p = self.path(*parts)
        if not p.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            return (f.get_tensor("out"), float(meta.get("seconds", "nan")),
                    float(meta.get("cpu_seconds", "nan")))

    def put(self, out: torch.Tensor, seconds: float, cpu: float, *parts: str) -> None:
        from safetensors.torch import save

        self.computed += 1
        atomic_write_bytes(self.path(*parts), save(
            {"out": out.detach().float().cpu().contiguous()},
            metadata={"seconds": repr(seconds), "cpu_seconds": repr(cpu)}))


def _minmax(v: torch.Tensor) -> torch.Tensor:
    lo = v.amin(dim=(-2, -1), keepdim=True)
    hi = v.amax(dim=(-2, -1), keepdim=True)
    return (v - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))


# ------------------------------------------------------------------ the run
class _Runner:
    lpips: LPIPS | None = None  # the metric, when its weight files are given

    def __init__(self, cfg: ReconstructionConfig, out: Path, log: Log,
                 encoder: StagedEncoder | None) -> None:
        self.cfg, self.out, self.log = cfg, out, log
        self.cache = _Cache(out / "cache")
        enc = encoder or load_named_encoder(cfg.encoder, cfg.weights, cfg.random_init, log)
        self.enc = enc
        self.last = enc.num_stages - 1
        lac_path = resolve_checkpoint(enc.name, cfg.lac)
        if lac_path is None:
            raise AdjinvError(f"no LAC checkpoint for {enc.name}: pass --lac CKPT (train one with "
                              "`adjinv train`)")
        self.lac_path = str(lac_path)
        lacs, ck = load_checkpoint(lac_path, enc, allow_other_weights=cfg.random_init)
        self.lac_meta = ck.meta
        self.inv = AdjointInverter(enc, lacs, chunk_size=cfg.chunk_size)
        # identity LACs linearised where the trained ones are (docs/method.md §16)
        self.inv_id = AdjointInverter(enc, LACBank.for_encoder(enc, linearize_at=lacs.linearize_at),
                                      chunk_size=cfg.chunk_size)
        self.unavailable: dict[str, str] = {}
        self.robust_enc: StagedEncoder | None = None
        if cfg.robust is None:
            self.unavailable["robust"] = ("unavailable: no adversarially robust weights given "
                                          "(--robust PATH)")
        else:
            self.robust_enc = load_robust_encoder(enc, cfg.robust, registry=encoder is None, log=log)
        self.lpips, reason = load_lpips(cfg.lpips_net, cfg.lpips_backbone, cfg.lpips_linear)
        if self.lpips is None:
            self.unavailable["lpips"] = reason
        self.extra = [] if self.robust_enc is None else ["robust"]
        self.train, self.held = _photos(cfg)
        self.names = list(self.held)
        self.x = {n: crops_of(n, im, cfg) for n, im in self.held.items()}
        self.max_k = min(max(cfg.partners), len(self.names) - 1)
        self.ks = sorted({min(k, self.max_k) for k in cfg.partners})
        self.methods = list(BASE_METHODS) + self.extra + [f"feature_k{k}" for k in self.ks]
        self._acts: dict[tuple[str, int], torch.Tensor] = {}
        self._fitted: dict[str, Any] = {}
        self.fit_wall = self.fit_cpu = 0.0

    # ---------------------------------------------------------------- helpers
    def norm(self, img: torch.Tensor) -> torch.Tensor:
        return self.enc.normalize(img)

    def acts(self, name: str, k: int) -> torch.Tensor:
        """``A_L`` of held-out crop (name, k)."""
        key = (name, k)
        if key not in self._acts:
            with torch.no_grad(), self.enc.frozen():
                self._acts[key] = self.enc.forward_stages(self.norm(self.x[name][k: k + 1]))[-1]
        return self._acts[key]

    def train_crops(self, per_photo: int) -> torch.Tensor:
        cfg = self.cfg
        sub = copy.copy(cfg)
        sub.crops = per_photo
        return torch.cat([crops_of(n, im, sub) for n, im in self.train.items()])

    def _fit_cost(self, key: str, wall: float, cpu: float) -> None:
        """Record what fitting a baseline on the training photos cost (kept out of the
        per-photo costs; stored in ``fit_seconds.json``)."""
        self.fit_wall += wall
        self.fit_cpu += cpu
        if not is_main():  # under torchrun rank 0 fits first and records it (run_reconstruction)
            return
        path = self.out / "fit_seconds.json"
        costs = json.loads(path.read_text()) if path.is_file() else {}
        if key not in costs:  # the first fit; a resumed run reloads (UpConvNet) or refits
            costs[key] = {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}
            atomic_write_json(path, costs)

    def vanilla_map(self) -> VanillaMap:
        if "vanilla" not in self._fitted:
            t0, c0 = time.perf_counter(), time.process_time()
            xs = self.norm(self.train_crops(1))
            v = torch.cat([self.inv.vanilla_gradient(xs[i: i + 1]) for i in range(xs.shape[0])])
            self._fitted["vanilla"] = fit_vanilla_map(v, xs)
            self._fit_cost("vanilla_map_fit", time.perf_counter() - t0, time.process_time() - c0)
        return self._fitted["vanilla"]

    def flat(self) -> torch.Tensor:
        if "flat" not in self._fitted:
            self._fitted["flat"] = self.train_crops(1).mean(dim=(0, 2, 3))
        return self._fitted["flat"]

    def upconv(self) -> Any:
        if "upconv" not in self._fitted and self.cfg.upconv_weights:
            self._fitted["upconv"] = load_upconv(self.cfg.upconv_weights, self.enc)
            self.log(f"  UpConvNet: pre-trained, {portable_path(self.cfg.upconv_weights)}")
        if "upconv" not in self._fitted:
            cfg = self.cfg
            ucfg = UpConvConfig(steps=cfg.upconv_steps, seed=cfg.seed,
                                checkpoint_every=max(1, min(50, cfg.upconv_steps)),
                                images=sorted(self.train))
            t0, c0 = time.perf_counter(), time.process_time()
            dec, losses = train_upconv(self.enc, self.train_crops(cfg.upconv_crops), ucfg,
                                       checkpoint=self.out / "upconv.safetensors")
            self._fitted["upconv"] = dec
            self._fit_cost("upconv_training", time.perf_counter() - t0, time.process_time() - c0)
            self.log(f"  UpConvNet: {len(losses)} steps, last loss {losses[-1] if losses else 0:.4f}")
        return self._fitted["upconv"]

    def top_reinit_inverter(self) -> AdjointInverter:
        if "reinit" not in self._fitted:
            self._fitted["reinit"] = AdjointInverter(reinit_top_stage(self.enc, self.cfg.seed),
                                                     self.inv.lacs, chunk_size=self.cfg.chunk_size)
        return self._fitted["reinit"]

    def synth(self, inv: AdjointInverter, x: torch.Tensor, w: torch.Tensor,
              source: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad(), inv.encoder.frozen():
            lin, acts = inv.linearize(x, self.last)
            src = source if source is not None else acts[self.last]
            sums, _ = inv.synthesize(lin, self.last, {"x": w}, source=src)
        return sums["x"]

    # ---------------------------------------------------------------- one method
    def compute(self, inv: AdjointInverter, method: str, name: str, k: int) -> torch.Tensor:
        """The output of ``method`` on held-out crop (name, k), in encoder input space."""
        img = self.x[name][k: k + 1]
        x = self.norm(img)
        a = self.acts(name, k)
        if method == "trained":
            return self.synth(inv, x, simplex_measure(a))
        if method == "identity":
            return self.synth(self.inv_id, x, simplex_measure(a))
        if method == "seed_zero":
            return inv.seed_zero_control(x, self.last)
        if method == "swapped" or method.startswith("swap"):
            shift = 1 if method == "swapped" else int(method[4:])
            partner = derangement(self.names, shift)[name]
            ap = self.acts(partner, k)
            return self.synth(inv, x, simplex_measure(ap), source=ap)
        if method == "random_seed":
            g = torch.Generator().manual_seed(self.cfg.seed * 7919 + zlib.crc32(name.encode()) + k)
            z = torch.randn(a.shape, generator=g, dtype=torch.float32).to(a)
            scale = a.flatten(2).norm(dim=-1) / z.flatten(2).norm(dim=-1).clamp_min(1e-30)
            return self.synth(inv, x, simplex_measure(a), source=z * scale[..., None, None])
        if method == "top_reinit":
            rinv = self.top_reinit_inverter()
            with torch.no_grad(), rinv.encoder.frozen():
                ar = rinv.encoder.forward_stages(x)[-1]
            return self.synth(rinv, x, simplex_measure(ar))
        if method.startswith("vanilla"):
            v = self.inv.vanilla_gradient(x, self.last)
            if method == "vanilla_train":
                return self.vanilla_map()(v)
            if method == "vanilla_minmax":
                return self.norm(_minmax(v))
            return self.norm(affine_fit(v, img))
        if method == "flat":
            return self.norm(self.flat().view(1, 3, 1, 1).expand_as(img).clone())
        if method == "mahendran":
            return mahendran_vedaldi(self.enc, x, MVConfig(steps=self.cfg.mv_steps, seed=self.cfg.seed))
        if method == "robust":
            if self.robust_enc is None:
                raise AdjinvError(self.unavailable["robust"])
            return robust_inversion(self.robust_enc, x, MVConfig(steps=self.cfg.mv_steps,
                                                                 seed=self.cfg.seed),
                                    weights=self.cfg.robust)
        if method == "upconv":
            return upconv_reconstruct(self.enc, self.upconv(), x)
        if method in ("guided", "deconvnet"):
            return self.norm(_minmax(modified_gradient(self.enc, x, method, self.last)))
        raise AdjinvError(f"unknown method {method!r}")

    def output(self, inv: AdjointInverter, tag: str, method: str, name: str,
               k: int) -> tuple[torch.Tensor, float, float]:
        """Cached output of one method (``tag``: ``main`` or a curve checkpoint), with the
        wall and CPU seconds it took when computed."""
        if method.startswith("feature_k"):
            kk = int(method[9:])
            xh = self.output(inv, tag, "trained", name, k)[0]
            sw = [self.output(inv, tag, f"swap{j}" if j > 1 else "swapped", name, k)[0]
                  for j in range(1, kk + 1)]
            return xh - torch.stack(sw).mean(0), 0.0, 0.0
        hit = self.cache.get(tag, name, f"crop{k}", method)
        if hit is not None:
            return hit
        t0, c0 = time.perf_counter(), time.process_time()
        f0, g0 = self.fit_wall, self.fit_cpu
        out = self.compute(inv, method, name, k).detach().float().cpu()
        sec = time.perf_counter() - t0 - (self.fit_wall - f0)
        cpu = time.process_time() - c0 - (self.fit_cpu - g0)
        self.cache.put(out, sec, cpu, tag, name, f"crop{k}", method)
        return out, sec, cpu

    # ---------------------------------------------------------------- metrics
    def scores(self, outs: dict[str, torch.Tensor], img: torch.Tensor,
               reenc: dict[str, StagedEncoder]) -> dict[str, dict[str, float]]:
        names = list(outs)
        out = torch.cat([outs[m] for m in names])
        ref = img.expand_as(out)
        native = self.enc.to_display(out)
        disp = affine_fit(out, ref)
        cols = {
            "pearson": pearson_rgb(out, ref), "ssim_affine": ssim(disp, ref),
            "psnr_affine": psnr(disp, ref), "ssim": ssim(native, ref), "psnr": psnr(native, ref),
            "gmsd": gmsd(disp, ref), "haarpsi": haarpsi(disp, ref),
            "l1": (out - self.norm(ref)).abs().flatten(1).mean(1),
        }
        if self.lpips is not None:
            cols["lpips"] = self.lpips(native.clamp(0, 1), ref)
        for rn, renc in reenc.items():
            agree = reencoding_agreement(renc, disp, ref, size=REENCODE_SIZE.get(rn, self.cfg.size))
            short = rn.replace("efficientnet_", "")
            cols[f"top5_{short}"] = agree["top5"]
            cols[f"cosine_{short}"] = agree["cosine"]
        return {m: {c: float(v[i]) for c, v in cols.items()} for i, m in enumerate(names)}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}




def _protocol(cfg: ReconstructionConfig, r: _Runner, curve: list[tuple[int, str]]) -> dict:
    return {
        "version": PROTOCOL_VERSION, "config": _protocol_config(cfg), "encoder": r.enc.name,
        "encoder_hash": r.enc.weights_hash(), "lac": portable_path(r.lac_path),
        "train_photos": sorted(r.train), "heldout_photos": r.names,
        "partners": {str(j): derangement(r.names, j) for j in range(1, r.max_k + 1)},
        "methods": r.methods, "metrics": list(METRICS) + (["lpips"] if r.lpips is not None else []),
        "curve": [portable_path(c) for _, c in curve],
        "rule": {"V1": "pearson and ssim_affine: trained > identity; with >= 3 curve points also "
                       "Spearman(step, gain over identity) > 0 and last gain > first",
                 "V2": "pearson and ssim_affine: trained > flat and > max(vanilla_train, "
                       "vanilla_minmax, vanilla_affine)",
                 "V3": "feature share (r_trained - r_swapped)/(r_trained - r_identity) >= 0.5 "
                       "(pearson)",
                 "V4": "seed_zero and swapped pearson: last curve point > first (descriptive)",
                 "reconstructs_from_features": "V1 and V2 and V3"},
    }


def _protocol_config(cfg: ReconstructionConfig) -> dict:
    """The settings as ``protocol.json`` records them: the optional ones (Robust inversion,
    LPIPS, a pre-trained UpConvNet) only when set, so that a protocol written before they
    existed still matches."""
    d = asdict(cfg)
    for k, v in OPTIONAL_DEFAULTS.items():
        if d.get(k) == v:
            d.pop(k)
    for k in ("robust", "lpips_backbone", "lpips_linear", "upconv_weights"):
        if d.get(k) is not None:
            d[k] = portable_path(d[k])
    return d


def load_robust_encoder(encoder: StagedEncoder, path: str, *, registry: bool,
                        log: Log = quiet_log) -> StagedEncoder:
    """The adversarially robust encoder of Robust inversion (docs/method.md §13): the
    registry's ``encoder.name`` loaded with the weights file ``path`` when ``registry``,
    else a copy of ``encoder`` (a network of your own) with ``path``'s state dict."""
    if registry:
        return load_named_encoder(encoder.name, path, False, log)
    enc = copy.deepcopy(encoder)
    load_into(enc, read_state_dict(path), encoder.name, path)
    return enc.eval()


def _curve_checkpoints(cfg: ReconstructionConfig, main_step: int, main_path: str) -> list[tuple[int, str]]:
    """(step, path) of the learning curve: ``identity`` at step 0, then ``--curve``'s
    ``step-N.lac.safetensors`` files (or the evaluated checkpoint alone)."""
    pts: list[tuple[int, str]] = [(0, "identity")]
    if cfg.curve is None:
        return pts + [(main_step, main_path)]
    d = Path(cfg.curve)
    files = sorted(d.glob("step-*.lac.safetensors")) if d.is_dir() else []
    if not files:
        raise AdjinvError(f"--curve {str(d)!r} holds no step-N.lac.safetensors files")
    for f in files:
        m = re.fullmatch(r"step-(\d+)\.lac\.safetensors", f.name)
        if m and int(m.group(1)) > 0:  # step 0 is the identity LACs, already the first point
            pts.append((int(m.group(1)), str(f)))
    return sorted(pts)


def run_reconstruction(cfg: ReconstructionConfig, out_dir: str | Path, *,
                       log: Log = quiet_log, encoder: StagedEncoder | None = None,
                       reencoders: dict[str, StagedEncoder] | None = None) -> dict:
    """Run (or resume) the evaluation; write ``protocol.json``, ``results.json``,
    ``table.md``, ``figure.png`` and ``curve.png`` under ``out_dir``; return the results.

    ``encoder`` and ``reencoders`` (name → encoder) replace the registry's networks named
    in ``cfg`` (for your own models, and the tests).

    Under ``torchrun`` (a process group of several ranks, sharing ``out_dir``), rank 0
    first fits the training-photo baselines, then the ranks share the per-(photo, crop,
    method) outputs, each filling the cache, and rank 0 alone scores them and writes the
    results; every rank returns them (docs/cluster.md)."""
    if cfg.quick:
        cfg.apply_quick()
    cfg.validate()
    t_start, c_start = time.perf_counter(), time.process_time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = _Runner(cfg, out, log, encoder)
    curve = _curve_checkpoints(cfg, _lac_step(r.lac_meta), r.lac_path)
    proto = _protocol(cfg, r, curve)
    ppath = out / "protocol.json"
    if ppath.is_file():
        old = json.loads(ppath.read_text())
        if old != json.loads(json.dumps(proto)):
            raise AdjinvError(f"{ppath} records another protocol (other settings, photos or "
                              "checkpoints); use a new --out folder")
    elif is_main():
        atomic_write_json(ppath, proto)
    seen = _seen(r.lac_meta) & set(r.names)
    if seen:
        log(f"warning: the LAC checkpoint was trained on held-out photo(s) {', '.join(sorted(seen))}: "
            "they are flagged and left out of the verdicts and the summary")
    log(f"reconstruction: {r.enc.name} at {cfg.size} px, {len(r.names)} held-out photos × "
        f"{cfg.crops} crops, {len(r.train)} training photos, LACs {portable_path(r.lac_path)}")

    swaps = ["swapped"] + [f"swap{j}" for j in range(2, r.max_k + 1)]
    main_methods = [*BASE_METHODS, *r.extra, *swaps[1:]]
    curve_invs: dict[str, tuple[AdjointInverter, str]] = {}

    def curve_inverter(step: int, path: str) -> tuple[AdjointInverter, str]:
        if path == "identity":
            return r.inv_id, "curve-identity"
        if path not in curve_invs:
            lacs, _ = load_checkpoint(path, r.enc, allow_other_weights=cfg.random_init)
            curve_invs[path] = (AdjointInverter(r.enc, lacs, chunk_size=cfg.chunk_size),
                                f"curve-step{step}")
        return curve_invs[path]

    # 0. under torchrun: the ranks share the per-(photo, crop, method) outputs (the cache),
    # then rank 0 alone does steps 1-4, which only read the cache (docs/cluster.md)
    if rank_world()[1] > 1:
        if is_main():  # the training-photo fits, once, before the work is shared
            r.vanilla_map()
            r.upconv()
        barrier()

        def fill(item: tuple[int | None, str, str, str, int]) -> None:
            step, path, m, name, k = item
            inv, tag = (r.inv, "main") if step is None else curve_inverter(step, path)
            r.output(inv, tag, m, name, k)

        items: list[tuple[int | None, str, str, str, int]] = [
            (None, "", m, name, k) for name in r.names for k in range(cfg.crops) for m in main_methods]
        items += [(step, path, m, name, k) for step, path in curve if path != r.lac_path
                  for name in r.names for k in range(cfg.crops) for m in CURVE_METHODS
                  if not (path == "identity" and m == "trained")]
        main = share_work(items, fill)
        total = torch.tensor([float(r.cache.computed)], dtype=torch.float64)
        all_reduce_sum([total])  # "computed" counts every rank's outputs
        r.cache.computed = int(total.item())
        if not main:
            barrier()  # rank 0 aggregates and writes the results
            return json.loads((out / "results.json").read_text())

    # 1. every method on every held-out crop (cached)
    cost: dict[str, float] = {}
    cpu_cost: dict[str, float] = {}
    per_crop: dict[str, list[dict[str, torch.Tensor]]] = {}
    for name in r.names:
        per_crop[name] = []
        for k in range(cfg.crops):
            outs = {}
            for m in [*main_methods, *[f"feature_k{j}" for j in r.ks]]:
                t0 = time.perf_counter()
                o, sec, cpu = r.output(r.inv, "main", m, name, k)
                outs[m] = o
                cost[m] = cost.get(m, 0.0) + (sec if sec == sec else 0.0)
                cpu_cost[m] = cpu_cost.get(m, 0.0) + (cpu if cpu == cpu else 0.0)
                if time.perf_counter() - t0 > 1:
                    log(f"  {name} crop {k} {m}: {time.perf_counter() - t0:.1f} s")
            per_crop[name].append(outs)
    if (out / "fit_seconds.json").is_file():
        for key, v in json.loads((out / "fit_seconds.json").read_text()).items():
            cost[key], cpu_cost[key] = v["seconds"], v["cpu_seconds"]

    # 2. metrics (cheap; recomputed from the cached images)
    reenc = reencoders if reencoders is not None else {
        n: load_named_encoder(n, None, False, log) for n in cfg.reencoders}
    per_photo: dict[str, dict[str, dict[str, float]]] = {}
    for name in r.names:
        rows = [r.scores({m: o[m] for m in r.methods}, r.x[name][k: k + 1], reenc)
                for k, o in enumerate(per_crop[name])]
        per_photo[name] = {m: _mean([row[m] for row in rows]) for m in r.methods}

    # 3. learning curve on held-out photos
    curve_rows: list[dict] = []
    for step, path in curve:
        cinv, tag = curve_inverter(step, path)
        for name in r.names:
            vals: dict[str, list[dict[str, float]]] = {}
            for k in range(cfg.crops):
                outs = {}
                for m in CURVE_METHODS:
                    if path == r.lac_path:
                        outs[m] = per_crop[name][k][m]
                    elif path == "identity" and m == "trained":  # the same computation
                        outs[m] = per_crop[name][k]["identity"]
                    else:
                        outs[m] = r.output(cinv, tag, m, name, k)[0]
                sc = r.scores(outs, r.x[name][k: k + 1], {})
                for m in CURVE_METHODS:
                    vals.setdefault(m, []).append({c: sc[m][c] for c in CURVE_METRICS})
            curve_rows.append({"step": step, "checkpoint": portable_path(path), "photo": name,
                               **{m: _mean(v) for m, v in vals.items()}})

    # 4. verdicts, summary
    verdicts = _verdicts(r, per_photo, curve_rows, seen)
    unseen = [n for n in r.names if n not in seen]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for m in r.methods:
        summary[m] = {}
        for c in per_photo[r.names[0]][m]:
            col = [per_photo[n][m][c] for n in unseen]
            mean, lo, hi = bootstrap_ci(col, seed=cfg.seed) if col else (math.nan,) * 3
            summary[m][c] = {"mean": mean, "lo": lo, "hi": hi}
    feature_k = {str(k): {"pearson": summary[f"feature_k{k}"]["pearson"],
                          "ssim_affine": summary[f"feature_k{k}"]["ssim_affine"]} for k in r.ks}
    results = {
        "protocol": proto, "encoder": r.enc.name, "lacs": portable_path(r.lac_path),
        "lac_step": _lac_step(r.lac_meta), "size": cfg.size, "crops": cfg.crops,
        "heldout": r.names, "seen_by_lacs": sorted(seen), "train": sorted(r.train),
        "methods": {m: {"label": _label(m), "kind": KIND.get(m, "view")} for m in r.methods},
        "per_photo": per_photo, "summary": summary, "feature_k": feature_k,
        "curve": curve_rows, "verdicts": verdicts,
        "cost_seconds": {m: round(v, 2) for m, v in cost.items()},
        "cost_cpu_seconds": {m: round(v, 2) for m, v in cpu_cost.items()},
        "cpu_seconds_this_run": round(time.process_time() - c_start, 1),
        "computed": r.cache.computed, "seconds": round(time.perf_counter() - t_start, 1),
        "environment": environment(),
        "display_mapping": "per image and RGB channel, least-squares gain and offset fitted to the "
                           "input, then clipped to [0, 1]",
        "unavailable": r.unavailable,
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", markdown_table(results))
    _figure(r, per_crop, per_photo, out / "figure.png")
    draw_figure2({n: r.x[n][0:1] for n in r.names},
                 {n: {m: per_crop[n][0][m] for m in r.methods} for n in r.names},
                 r.enc, r.unavailable, out / "figure2.png", seen=_seen(r.lac_meta), size=cfg.size)
    _curve_plot([row for row in curve_rows if row["photo"] not in seen], out / "curve.png")
    for line in verdict_lines(results):
        log(line)
    barrier()  # under torchrun the other ranks wait for results.json
    return results


def _label(m: str) -> str:
    if m.startswith("feature_k"):
        return f"feature-specific x̂ − mean of {m[9:]} swapped"
    return LABELS[m]


def _verdicts(r: _Runner, per_photo: dict, curve_rows: list[dict], seen: set[str]) -> dict:
    out: dict[str, dict] = {}
    for name in r.names:
        p = per_photo[name]
        v1_by = {c: bool(p["trained"][c] > p["identity"][c]) for c in ("pearson", "ssim_affine")}
        v1a = all(v1_by.values())
        pts = sorted(((row["step"], row) for row in curve_rows if row["photo"] == name),
                     key=lambda t: t[0])
        steps = [s for s, _ in pts]
        gain = [row["trained"]["pearson"] - pts[0][1]["trained"]["pearson"] for _, row in pts]
        rho = spearman(torch.tensor(steps), torch.tensor(gain)) if len(pts) >= 3 else float("nan")
        grows = None
        if len(pts) >= 3:
            grows = bool(rho > 0 and gain[-1] > gain[0])
        best_van = {c: max(p[m][c] for m in ("vanilla_train", "vanilla_minmax", "vanilla_affine"))
                    for c in ("pearson", "ssim_affine")}
        v2_by = {c: bool(p["trained"][c] > p["flat"][c] and p["trained"][c] > best_van[c])
                 for c in ("pearson", "ssim_affine")}
        v2 = all(v2_by.values())
        den = p["trained"]["pearson"] - p["identity"]["pearson"]
        share = (p["trained"]["pearson"] - p["swapped"]["pearson"]) / den if den > 0 else None
        v3 = share is not None and share >= 0.5
        den_s = p["trained"]["ssim_affine"] - p["identity"]["ssim_affine"]
        share_s = ((p["trained"]["ssim_affine"] - p["swapped"]["ssim_affine"]) / den_s
                   if den_s > 0 else None)
        rise = {m: (pts[-1][1][m]["pearson"] - pts[0][1][m]["pearson"]) for m in ("seed_zero", "swapped")}
        v1 = v1a and (grows is not False)
        out[name] = {
            "seen_by_lacs": name in seen,
            "V1": v1, "V1_trained_beats_identity": v1a, "V1_by_metric": v1_by,
            "V1_gain_grows": grows, "V2_by_metric": v2_by,
            "V1_spearman_step_gain": rho, "V2": v2, "V2_best_vanilla": best_van,
            "V3": v3, "feature_share_pearson": share, "feature_share_ssim_affine": share_s,
            "V4_seed_zero_rise": rise["seed_zero"], "V4_swapped_rise": rise["swapped"],
            "V4_rises": bool(rise["seed_zero"] > 0 and rise["swapped"] > 0),
            "reconstructs_from_features": bool(v1 and v2 and v3),
        }
    return out


def _by_metric(v: dict, key: str) -> str:
    return ", ".join(f"{c.replace('ssim_affine', 'affine SSIM')} {'yes' if ok else 'no'}"
                     for c, ok in v.get(key, {}).items())


def verdict_lines(results: dict) -> list[str]:
    """The decision rule's outcome per held-out photo, in plain words."""
    lines = []
    for name, v in results["verdicts"].items():
        share = v["feature_share_pearson"]
        tag = " (SEEN in LAC training: not held out for these LACs)" if v["seen_by_lacs"] else ""
        lines.append(
            f"{name}{tag}: V1 {'yes' if v['V1'] else 'no'} ({_by_metric(v, 'V1_by_metric')}), "
            f"V2 {'yes' if v['V2'] else 'no'} ({_by_metric(v, 'V2_by_metric')}), "
            f"V3 {'yes' if v['V3'] else 'no'} (feature share "
            f"{'undefined' if share is None else f'{share:.2f}'}), V4 seed-zero/swapped "
            f"{'rise' if v['V4_rises'] else 'do not both rise'} with training "
            f"({v['V4_seed_zero_rise']:+.3f}/{v['V4_swapped_rise']:+.3f}) → x̂_L "
            f"{'DOES' if v['reconstructs_from_features'] else 'does NOT'} reconstruct this photo "
            "from its features")
    held = [v for v in results["verdicts"].values() if not v["seen_by_lacs"]]
    yes = sum(v["reconstructs_from_features"] for v in held)
    lines.append(f"overall: x̂_L reconstructs from the features on {yes} of {len(held)} held-out photos")
    return lines


# ------------------------------------------------------------------ outputs
def _fmt(s: dict, c: str) -> str:
    d = 1 if c.startswith("psnr") else 3
    return f"{s['mean']:.{d}f} [{s['lo']:.{d}f}, {s['hi']:.{d}f}]"


def markdown_table(results: dict) -> str:
    """``table.md``: the summary with 95 % bootstrap intervals over photos, the
    per-photo table, feature share vs K, the verdicts and per-method costs."""
    cols = list(next(iter(results["summary"].values())))
    held = [n for n in results["heldout"] if n not in results["seen_by_lacs"]]
    lines = [f"# Reconstruction from the features — {results['encoder']} at {results['size']} px",
             "", f"LACs: `{Path(results['lacs']).name}` (step {results['lac_step']}). Held-out photos "
             f"scored: {', '.join(held)} ({results['crops']} crop(s) each, averaged within a photo; "
             "95 % percentile-bootstrap intervals over photos)."]
    if results["seen_by_lacs"]:
        lines.append(f"Left out of the summary and verdicts because these LACs were trained on them: "
                     f"{', '.join(results['seen_by_lacs'])}.")
    lines += ["", "Display mapping (the figure, `*_affine`, GMSD, HaarPSI, re-encoding): "
              f"{results['display_mapping']}. `ssim`/`psnr`: each method's own pixel mapping, "
              "clipped. `l1`: mean |out − x| in the encoder's input space (the training objective). "
              "GMSD and l1: lower is better.", "",
              "| method | kind | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for m, row in results["summary"].items():
        lines.append(f"| {results['methods'][m]['label']} | {results['methods'][m]['kind']} | "
                     + " | ".join(_fmt(row[c], c) for c in cols) + " |")
    lines += ["", "## Per photo (Pearson / affine SSIM)", "",
              "| method | " + " | ".join(results["heldout"]) + " |",
              "|---|" + "---|" * len(results["heldout"])]
    for m in results["summary"]:
        cells = [f"{results['per_photo'][n][m]['pearson']:.3f} / "
                 f"{results['per_photo'][n][m]['ssim_affine']:.3f}" for n in results["heldout"]]
        lines.append(f"| {results['methods'][m]['label']} | " + " | ".join(cells) + " |")
    lines += ["", "## Feature-specific view vs K (partners averaged)", "",
              "| K | Pearson | affine SSIM |", "|---|---|---|"]
    for k, v in results["feature_k"].items():
        lines.append(f"| {k} | {_fmt(v['pearson'], 'pearson')} | "
                     f"{_fmt(v['ssim_affine'], 'ssim_affine')} |")
    lines += ["", "## Verdicts", ""] + [f"- {s}" for s in verdict_lines(results)]
    lines += ["", "## Learning curve (held-out mean Pearson)", "",
              "| step | " + " | ".join(CURVE_METHODS) + " |", "|---|" + "---|" * len(CURVE_METHODS)]
    for step in sorted({row["step"] for row in results["curve"]}):
        rows = [row for row in results["curve"] if row["step"] == step and row["photo"] in held]
        if rows:
            lines.append(f"| {step} | " + " | ".join(
                f"{sum(x[m]['pearson'] for x in rows) / len(rows):.3f}" for m in CURVE_METHODS) + " |")
    lines += ["", "## Cost (seconds, summed over photos and crops; CPU: process time, nan if "
              "not recorded)", "", "| method | wall s | CPU s |", "|---|---|---|"]
    for m, s in results["cost_seconds"].items():
        lines.append(f"| {m} | {s:.1f} | {results['cost_cpu_seconds'].get(m, math.nan):.1f} |")
    for what, why in results.get("unavailable", {}).items():
        lines.append(f"{'Robust inversion' if what == 'robust' else what.upper()}: {why}.")
    lines += ["", f"Wall time {results['seconds']:.1f} s ({results['computed']} outputs computed "
              "this run, the rest from the cache)."]
    return "\n".join(lines) + "\n"


def _figure(r: _Runner, per_crop: dict, per_photo: dict, path: Path) -> None:
    plt = pyplot()
    cols = ["input", *r.methods]
    fig, axes = plt.subplots(len(r.names), len(cols), figsize=(1.45 * len(cols), 1.75 * len(r.names)),
                             squeeze=False)
    for i, name in enumerate(r.names):
        img = r.x[name][0:1]
        for j, m in enumerate(cols):
            ax = axes[i][j]
            if m == "input":
                shown, title = img, name + (" (seen)" if name in _seen(r.lac_meta) else "")
            else:
                shown = affine_fit(per_crop[name][0][m], img)
                s = per_photo[name][m]
                title = f"r {s['pearson']:.2f}\naSSIM {s['ssim_affine']:.2f}"
            ax.imshow(shown[0].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=6)
            if i == 0:
                ax.set_xlabel("")
                ax.text(0.5, 1.45, m, transform=ax.transAxes, ha="center", fontsize=6)
    fig.suptitle("Every method through one display mapping (per-image per-RGB least-squares "
                 "affine fit to the input, clipped); numbers: crop 0's photo means", fontsize=8)
    save_figure(fig, path)


def draw_figure2(inputs: dict[str, torch.Tensor], outputs: dict[str, dict[str, torch.Tensor]],
                 encoder: StagedEncoder, unavailable: dict[str, str], path: Path, *,
                 seen: set[str] | frozenset[str] = frozenset(), size: int | None = None) -> Path:
    """Figure 2 (module docstring): one row per held-out photo (``inputs``: name → (1, 3, S, S)
    in [0, 1]), one column per method of [`FIGURE2`][FIGURE2], each output (encoder input space)
    shown in its own pixel mapping — de-normalised and clipped, no per-image fit — with its
    Pearson r and SSIM against the input. A method missing from ``outputs`` is drawn as a
    grey "unavailable" panel with the reason from ``unavailable``."""
    plt = pyplot()
    names = list(inputs)
    cols = [("input", "input"), *FIGURE2]
    fig, axes = plt.subplots(len(names), len(cols), figsize=(1.5 * len(cols), 1.7 * len(names)),
                             squeeze=False)
    for i, name in enumerate(names):
        img = inputs[name]
        for j, (m, label) in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.text(0.5, 1.32, label, transform=ax.transAxes, ha="center", fontsize=7)
            if m == "input":
                ax.imshow(img[0].permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_title(name + (" (seen)" if name in seen else ""), fontsize=6)
                continue
            out = outputs.get(name, {}).get(m)
            if out is None:
                ax.imshow(torch.full_like(img[0], 0.85).permute(1, 2, 0).numpy())
                why = unavailable.get(m, "not computed in this run")
                ax.text(0.5, 0.5, "\n".join(textwrap.wrap(why, 18)), transform=ax.transAxes,
                        ha="center", va="center", fontsize=4.5)
                ax.set_title("unavailable", fontsize=6)
                continue
            shown = encoder.to_display(out).float().clamp(0, 1)
            r_val = float(pearson_rgb(out, img)[0])
            s_val = float(ssim(shown, img)[0])
            ax.imshow(shown[0].permute(1, 2, 0).numpy())
            ax.set_title(f"r {r_val:.2f}  SSIM {s_val:.2f}", fontsize=6)
    px = f"{size} px " if size else ""
    fig.suptitle(f"Figure 2: {px}held-out photos (centre crop), every method in its own pixel "
                 "mapping (no per-image fit); r: Pearson, SSIM: on the shown image", fontsize=8)
    return save_figure(fig, path)


def write_figure2(out_dir: str | Path, *, log: Log = quiet_log,
                  encoder: StagedEncoder | None = None) -> Path:
    """Redraw ``figure2.png`` of a finished run in ``out_dir`` from its ``protocol.json``
    and cached outputs (``--figure2-only``): nothing is computed but the display."""
    out = Path(out_dir)
    ppath, rpath = out / "protocol.json", out / "results.json"
    if not ppath.is_file():
        raise AdjinvError(f"{ppath} does not exist: run the evaluation first")
    proto = json.loads(ppath.read_text())
    cfg = ReconstructionConfig(**proto["config"])
    enc = encoder or load_named_encoder(cfg.encoder, cfg.weights, cfg.random_init, log)
    _, held = _photos(cfg)
    cache = _Cache(out / "cache")
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, dict[str, torch.Tensor]] = {}
    for name in proto["heldout_photos"]:
        inputs[name] = crops_of(name, held[name], cfg)[0:1]
        outputs[name] = {}
        for m, _ in FIGURE2:
            hit = cache.get("main", name, "crop0", m)
            if hit is not None:
                outputs[name][m] = hit[0]
            elif m in proto["methods"]:
                raise AdjinvError(f"{cache.path('main', name, 'crop0', m)} is missing: the cache of "
                                  "this run is incomplete; rerun the evaluation to fill it")
    res = json.loads(rpath.read_text()) if rpath.is_file() else {}
    unavailable = {"robust": "unavailable: no adversarially robust weights given (--robust PATH)",
                   **res.get("unavailable", {})}
    lac = proto.get("lac")
    seen: set[str] = set()
    if lac is not None and res.get("seen_by_lacs"):
        seen = set(res["seen_by_lacs"])
    path = draw_figure2(inputs, outputs, enc, unavailable, out / "figure2.png", seen=seen,
                        size=cfg.size)
    log(f"wrote {path}")
    return path


def _curve_plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(4 * len(CURVE_METRICS), 3))
    steps = sorted({row["step"] for row in rows})
    for ax, c in zip(axes, CURVE_METRICS, strict=True):
        for m in CURVE_METHODS:
            ys = [sum(x[m][c] for x in rows if x["step"] == s) / max(1, sum(x["step"] == s for x in rows))
                  for s in steps]
            ax.plot(steps, ys, marker="o", label=m)
        ax.set_xlabel("LAC training step (0 = identity)")
        ax.set_title(f"held-out {c} (mean over photos)")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


# ------------------------------------------------------------------ CLI
EPILOG = """examples:
  adjinv experiment reconstruction --out runs/recon                 # bundled LACs, embedded split
  adjinv experiment reconstruction --out runs/recon-q --quick       # minutes
  adjinv experiment reconstruction --out runs/c --lac new.lac.safetensors --curve ckpts/
  adjinv experiment reconstruction --out runs/mine --train photos/train --heldout photos/test
  torchrun --nproc-per-node 4 -m adjinv experiment reconstruction --out runs/recon  # 4 processes
"""


def _figure2_only(cfg: ReconstructionConfig, out: Path, *, log: Log = quiet_log) -> dict:
    """``--figure2-only``: [`write_figure2()`][write_figure2] of the finished run in ``out``."""
    return {"figure2": str(write_figure2(out, log=log))}


RUNNERS = (Runner(
    "reconstruction", ReconstructionConfig, run_reconstruction,
    help="held-out, controlled test: does x̂_L reconstruct from the features?",
    description="Scores x̂_L against its controls (identity LACs, seed zero, swapped and "
                "random seeds, top stage re-initialised) and baselines on held-out photos, "
                "and prints the pre-registered verdict per photo.",
    epilog=EPILOG, outputs=("results.json", "table.md", "figure.png", "figure2.png", "curve.png"),
    summary=lambda results, out: verdict_lines(results), out_help="output folder (rerun to resume)",
    distributed=True, variants=(Variant(
        "--figure2-only", "redraw figure2.png of the finished run in --out from its cache; compute "
        "nothing", _figure2_only, ("figure2.png",)),)),)


__all__: list[str] = ["ReconstructionConfig", "run_reconstruction", "markdown_table",
                      "verdict_lines", "derangement", "crops_of", "reinit_top_stage", "METHODS",
                      "draw_figure2", "write_figure2", "load_robust_encoder"]
