"""The per-image inversion report behind ``adjinv invert`` and ``adjinv demo``."""

from __future__ import annotations

import html
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.anytime import select_channels
from ..core.inverter import AdjointInverter
from ..core.lac import LACBank
from ..core.simplex import simplex_measure
from ..encoders.staged import StagedEncoder
from ..fileio import atomic_write_json, atomic_write_text, finite_json, inside, save_png
from ..images.files import resize_center_crop
from ..lacs.vanilla import VanillaMap
from ..methods.class_directional import class_directional_weights
from ..methods.resolve import resolve
from ..metrics.likeness import affine_fit, pearson_rgb
from ..metrics.reconstruction import psnr, ssim
from ..outdir import publish_dir, staging_dir
from ..state import module_device
from .display import centred_display, robust_minmax
from .html import figure, page, table

Progress = Callable[[str, int, int], None]

log = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    """What to compute per image."""

    size: int = 224
    top_k: int = 8
    mode: str = "contribution"
    chunk_size: int | None = None
    precision: str = "float32"
    mass: float | None = None
    partner_mass: float | None = 0.9
    """Simplex mass of each swapped-seed partner's anytime synthesis (Eq. 8); its proven
    error bound (docs/speed.md, "Anytime inversion") goes on the page. ``None``: every
    channel (exact)."""


def _scores(encoder: StagedEncoder, rec: torch.Tensor, img: torch.Tensor) -> dict[str, float]:
    d = encoder.to_display(rec).unsqueeze(0)
    return {"ssim": float(ssim(d, img[None])), "psnr": float(psnr(d, img[None]))}


COMPARISON = (("x_hat", "x̂_L (ours)"), ("seed_zero", "control: seed = 0"),
              ("swapped", "control: another photo's features"),
              ("feature_view", "feature-specific view"), ("vanilla", "vanilla gradient"))


def _likeness(rec: torch.Tensor, img: torch.Tensor) -> dict[str, float]:
    """Scores on the shared display mapping (per-RGB least-squares affine fit, clipped)."""
    d = affine_fit(rec[None], img[None])
    return {"pearson": float(pearson_rgb(rec[None], img[None])), "ssim_affine": float(ssim(d, img[None]))}


def deepest_acts(encoder: StagedEncoder, image: torch.Tensor, size: int) -> torch.Tensor:
    """``A_L`` (1, C, h, w) of one image (3, H, W) in [0, 1] at the report's size: a
    partner's features for the swapped-seed control of another image."""
    x = encoder.normalize(resize_center_crop(image, size).to(module_device(encoder)))[None]
    with torch.no_grad(), encoder.frozen():
        return encoder.forward_stages(x)[-1]


def planned_channels(encoder: StagedEncoder, image: torch.Tensor, cfg: ReportConfig,
                     partners: list[torch.Tensor] | None = None) -> int:
    """How many channel pull-backs `invert_one()` will run on ``image`` (one forward):
    the deepest stage's chosen channels, every shallower stage's live ones and each
    partner's anytime selection — the total of a progress bar over a whole run."""
    x = encoder.normalize(resize_center_crop(image, cfg.size).to(module_device(encoder)))[None]
    with torch.no_grad(), encoder.frozen():
        acts = encoder.forward_stages(x)
    w = [simplex_measure(a) for a in acts]
    n = int(select_channels(w[-1], cfg.mass, None).sum())
    n += sum(int((v != 0).sum()) for v in w[:-1])
    for a_p in partners or []:
        n += int(select_channels(simplex_measure(a_p.to(acts[-1])), cfg.partner_mass, None).sum())
    return n


def invert_one(encoder: StagedEncoder, lacs: LACBank, vanilla: VanillaMap | None,
               name: str, image: torch.Tensor, out: Path, cfg: ReportConfig,
               progress: Progress | None = None,
               partners: list[torch.Tensor] | None = None) -> dict:
    """Invert one image (3, H, W) in [0, 1]; write PNGs and ``summary.json`` to ``out``.

    ``partners``: deepest activations of other photos ([`deepest_acts()`][deepest_acts]); each is
    pulled back through this image's Jacobians with its own simplex weights (the
    swapped-seed control), from its heaviest channels up to ``cfg.partner_mass`` with the
    proven bound of docs/speed.md ("Anytime inversion") in ``summary["partners_anytime"]``;
    ``x̂_L − mean(swapped)`` is the feature-specific view
    (docs/evidence.md). Every panel of the comparison row is shown through the same
    mapping (each RGB channel centred, then a robust min-max) with its Pearson r and
    affine-fitted SSIM.

    The files are written into a hidden sibling folder that replaces ``out`` only once
    all of them are complete, so an interrupted run leaves no half-filled folder."""
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    clock = [t0]

    def lap(panel: str) -> None:
        now = time.perf_counter()
        timing[panel] = timing.get(panel, 0.0) + now - clock[0]
        clock[0] = now

    img = resize_center_crop(image, cfg.size).to(module_device(encoder))
    x = encoder.normalize(img)[None]
    inv = AdjointInverter(encoder, lacs, chunk_size=cfg.chunk_size, precision=cfg.precision)
    x = inv.prepare(x)
    with torch.no_grad(), encoder.frozen():
        live = int((encoder.forward_stages(x)[-1].abs().amax(dim=(-2, -1)) > 0).sum())
    top_k = min(cfg.top_k, live)
    if top_k < cfg.top_k:
        log.info("%s: %d channel(s) requested, %d live in the deepest stage: writing %d",
                 name, cfg.top_k, live, top_k)
    chosen: dict[str, torch.Tensor] = {}

    def cd(acts: list[torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
        chosen["k"] = logits.argmax(1)
        return class_directional_weights(encoder, acts[-1], chosen["k"], cfg.mode)

    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress(name, done, total)

    lap("forward")
    last = encoder.num_stages - 1
    # the deepest stage first (x̂_L, x̂^(k) and the top φ share its pass), then the exact
    # spectrum of the shallower stages, each a pass of its own (BENCHMARKS.md)
    res = inv.invert(x, stages=[last], top_k=top_k, extra_weights=cd, progress=tick,
                     mass=cfg.mass)
    lap("x̂_L, class-directional, top channels")
    if last > 0:
        shallow = inv.invert(x, stages=list(range(last)), progress=tick)
        for st in range(last):
            res.x_hat[st], res.weights[st] = shallow.x_hat[st], shallow.weights[st]
    lap("spectrum (shallower stages)")
    partner_bounds: list[dict[str, float]] = []
    with torch.no_grad(), encoder.frozen():
        # one linearisation for the seed-zero control, the vanilla gradient and the partners
        lin = inv.linearize(x, last)[0]
        control = inv.cascade.pull_back(lin, last, torch.zeros_like(lin.acts[last])[None])[0][0]
        lap("seed-zero control")
        van_lin = lin if not inv.at_reference else inv.cascade.linearize(x, last)
        raw_vanilla = inv.cascade.raw_pull_back(van_lin, last, van_lin.acts[last][None])[0]
        lap("vanilla gradient")
        swapped = []
        for a_p in partners or []:
            a_p = a_p.to(lin.acts[last])
            part = inv.synthesize_anytime(lin, last, simplex_measure(a_p), mass=cfg.partner_mass,
                                          source=a_p, progress=tick)
            swapped.append(part.x_hat[0])
            partner_bounds.append({"omitted_mass": float(part.omitted_mass[0]),
                                   "error_bound": float(part.error_bound[0])})
    lap("swapped-seed partners")
    last = encoder.num_stages - 1
    img = img.to(res.x.device, res.x.dtype)
    probs = res.logits.softmax(1)[0]
    k = int(chosen["k"][0])

    final, out = out, staging_dir(out)
    try:
        save_png(out / "input.png", img)
        stages = []
        for s, info in enumerate(encoder.infos):
            fn = f"spectrum_{s}_{info.name}.png"
            save_png(out / fn, encoder.to_display(res.x_hat[s][0]))
            stages.append({"stage": s, "name": info.name, "file": fn,
                           "channels": info.channels,
                           "live_channels": int((res.weights[s][0] > 0).sum()),
                           **_scores(encoder, res.x_hat[s][0], img)})
        chans = []
        for j, c in enumerate(res.channels.get(last, torch.empty(1, 0, dtype=torch.long))[0].tolist()):
            fn = f"channel_{last}_{c}.png"
            save_png(out / fn, robust_minmax(res.phi[last][0, j]))
            chans.append({"channel": c, "weight": float(res.weights[last][0, c]), "file": fn})
        for key, fn in (("class", "class.png"), ("class+", "class_pos.png"), ("class-", "class_neg.png")):
            save_png(out / fn, robust_minmax(res.extra[key][0]))
        save_png(out / "control_seed_zero.png", encoder.to_display(control))
        panels = {"x_hat": res.x_hat[last][0], "seed_zero": control, "vanilla": raw_vanilla[0]}
        if swapped:
            panels["swapped"] = swapped[0]
            panels["feature_view"] = res.x_hat[last][0] - torch.stack(swapped).mean(0)
        comparison = []
        for key, label in COMPARISON:
            if key in panels:
                fn = f"compare_{key}.png"
                save_png(out / fn, centred_display(panels[key]))
                comparison.append({"key": key, "label": label, "file": fn,
                                   **_likeness(panels[key], img)})
        summary = {
            "image": name,
            "encoder": encoder.name,
            "size": cfg.size,
            "top1": {"index": k, "name": encoder.class_name(k), "probability": float(probs[k])},
            "reconstruction": _scores(encoder, res.x_hat[last][0], img),
            "seed_zero_control": _scores(encoder, control, img),
            "comparison": comparison,
            "partners": len(swapped),
            "partners_anytime": {"mass": cfg.partner_mass, "per_partner": partner_bounds},
            "anytime": {"mass": cfg.mass, "omitted_mass": float(res.omitted_mass[last][0]),
                        "error_bound": float(res.error_bound[last][0])},
            "stages": stages,
            "simplex_weights": {str(s): res.weights[s][0].tolist() for s in res.weights},
            "top_channels": chans,
            "top_channels_requested": cfg.top_k,
            "live_channels_deepest": live,
            "class_directional": {"mode": cfg.mode, "files": ["class.png", "class_pos.png",
                                                             "class_neg.png"],
                                  "alpha_sum": float(res.extra_weights["class"][0].sum())},
        }
        if vanilla is not None:
            v = vanilla(raw_vanilla)[0]
            save_png(out / "vanilla.png", encoder.to_display(v))
            summary["vanilla_gradient"] = _scores(encoder, v, img)
        else:
            summary["vanilla_gradient"] = {"unavailable": "no fitted vanilla map: the LAC checkpoint "
                                                          "has none (train LACs with adjinv train)"}
        lap("scores and files")
        summary["seconds"] = time.perf_counter() - t0
        summary["timing"] = timing
        atomic_write_json(out / "summary.json", finite_json(summary))
        publish_dir(out, final)
    except BaseException:  # interrupted or failed: leave no half-filled folder
        shutil.rmtree(out, ignore_errors=True)
        raise
    return summary


def _partner_note(summary: dict) -> str:
    """The anytime bound of the swapped-seed partners, for their captions."""
    info = summary.get("partners_anytime") or {}
    per = info.get("per_partner") or []
    if info.get("mass") is None or not per:
        return ""
    worst = max(b["error_bound"] for b in per)
    return (f" (partner from its heaviest channels up to simplex mass {info['mass']:g}: "
            f"relative error ≤ {worst:.2g}, proven)")


def image_section(summary: dict, prefix: str) -> str:
    """HTML for one image's results (paths relative to the page; every name escaped,
    every link percent-encoded)."""
    s = summary
    p = prefix.rstrip("/") + "/" if prefix else ""
    top = s["top1"]
    esc = html.escape
    figs_main = [figure(p + "input.png", "input"),
                 figure(p + s["stages"][-1]["file"], "x̂_L (Eq. 8)"),
                 figure(p + "control_seed_zero.png", "control: seed = 0")]
    if "unavailable" not in s["vanilla_gradient"]:
        figs_main.append(figure(p + "vanilla.png", "vanilla gradient"))
    spectrum = [figure(p + st["file"], f"stage {st['stage']} {st['name']}") for st in s["stages"]]
    cd = [figure(p + "class.png", f"x̂^(k), k = {top['name']}"),
          figure(p + "class_pos.png", "x̂^(k)+ (W>0)"), figure(p + "class_neg.png", "x̂^(k)− (W<0)")]
    ch = [figure(p + c["file"], f"channel {c['channel']} (w={c['weight']:.3g})")
          for c in s["top_channels"]]
    comp = s.get("comparison", [])
    figs_cmp = [figure(p + c["file"], f"{c['label']}: r = {c['pearson']:.3f}, SSIM = {c['ssim_affine']:.3f}"
                       + (_partner_note(s) if c["key"] in ("swapped", "feature_view") else ""))
                for c in comp]
    rows = [["x̂_L (ours)", s["reconstruction"]["ssim"], s["reconstruction"]["psnr"]],
            ["control: seed zero", s["seed_zero_control"]["ssim"], s["seed_zero_control"]["psnr"]]]
    if "unavailable" not in s["vanilla_gradient"]:
        rows.append(["vanilla gradient", s["vanilla_gradient"]["ssim"], s["vanilla_gradient"]["psnr"]])
    return (f"<section><h2>{esc(s['image'])}</h2><p>top-1: <b>{esc(top['name'])}</b> "
            f"(class {int(top['index'])},"
            f" p = {top['probability']:.3f}); {s['seconds']:.1f} s</p>"
            + "<h3>x̂_L beside its controls, one display mapping (each RGB channel centred, then "
              "the image's 1–99 % percentiles to [0, 1]: structure is shown whether or not it "
              "resembles the photo). Scores: Pearson r, and SSIM after a least-squares affine fit "
              "to the input</h3>" + "".join(figs_cmp)
            + "<h3>Each method's own pixel mapping</h3>"
            + "".join(figs_main) + table(rows, ["reconstruction", "SSIM", "PSNR (dB)"])
            + "<h3>Semantic inversion spectrum (one x̂_l per stage)</h3>" + "".join(spectrum)
            + "<h3>Class-directional inversion (Eq. 12)</h3>" + "".join(cd)
            + "<h3>Top channels of the deepest stage (φ_L,c)</h3>" + "".join(ch) + "</section>")


def write_index(out: Path, summaries: list[dict], title: str, intro: str = "") -> Path:
    """``index.html`` and the combined ``summary.json`` over every image."""
    atomic_write_json(out / "summary.json", finite_json(summaries))
    rows = [[s["image"], s["top1"]["name"], s["top1"]["probability"], s["reconstruction"]["ssim"],
             s["seed_zero_control"]["ssim"], s["vanilla_gradient"].get("ssim", "n/a")]
            for s in summaries]
    overview = table(rows, ["image", "top-1", "p", "SSIM x̂_L", "SSIM control (seed 0)",
                            "SSIM vanilla"])
    note = ("<p>Reconstructions are de-normalised and clipped to [0, 1]; channel bases and "
            "class-directional maps are shown with a robust (1–99 %) min-max. The seed-zero "
            "control is the same cascade with the deepest seed set to zero: read every "
            "reconstruction score beside it (docs/method.md §14).</p>")
    sections = [image_section(s, s["image"]) for s in summaries]
    return atomic_write_text(out / "index.html", page(title, [overview, *sections], intro + note))


def write_report(model: Any, images: Mapping[str, torch.Tensor], out: str | Path,
                 cfg: ReportConfig | None = None, *, partners: int = 2,
                 title: str = "adjinv report") -> Path:
    """The HTML report of ``adjinv invert`` from Python: per image x̂_L beside its controls
    through one display mapping (the one of ``Inversion.image``), the spectrum, the top
    channels and ``x̂^(k)`` (docs/method.md §4, §6, §14).

    Args:
        model: ``adjinv.Inverter(model, …)`` (its LACs and vanilla map are used), an
            [`AdjointInverter`][AdjointInverter], a [`StagedEncoder`][StagedEncoder] or a CNN ``nn.Module``
            ([`adjinv.methods.resolve.resolve()`][adjinv.methods.resolve.resolve]).
        images: ``{name: image (3, H, W) in [0, 1]}``, whatever the model's ``normalize``;
            each is resized and centre-cropped to ``cfg.size``.
        out: the folder; one sub-folder per image and ``index.html`` are written in it.
        cfg: what to compute per image (default [`ReportConfig`][ReportConfig]).
        partners: other images' features pulled back through each image's Jacobians (the
            swapped-seed control), at most ``len(images) - 1``.
        title: the page's title.

    Returns:
        The path of ``index.html``.
    """
    inv = resolve(model).inverter
    cfg = cfg or ReportConfig()
    names = list(images)
    k = min(partners, len(names) - 1)
    acts = {n: deepest_acts(inv.encoder, images[n], cfg.size) for n in names} if k > 0 else {}
    summaries = [invert_one(inv.encoder, inv.lacs, getattr(model, "vanilla_map", None), n,
                            images[n], inside(out, n), cfg,
                            partners=[acts[names[(i + j) % len(names)]] for j in range(1, k + 1)])
                 for i, n in enumerate(names)]
    return write_index(Path(out), summaries, title)
