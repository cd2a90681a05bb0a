"""Sec. 3.5 / C.9: attention heads through the unchanged LAC cascade.

``adjinv train-head`` trains a [`HybridAttentionClassifier`][HybridAttentionClassifier] on a labelled set;
``adjinv experiment attention`` visualises block energies ``‖T_b‖²`` (layer-wise),
token energies ``‖T_{b,t}‖²`` (per token, at an early and a deep block) and the
head's top logit with the trained LACs, and measures how close each token map's
energy peak lies to the token's own grid position against a shuffled reference
(the paper's "adjacent tokens attend to neighbouring regions", as a number).
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...core.lac import LACBank
from ...core.validate import check_input
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_json, atomic_write_text, safe_name, save_png
from ...images.files import resize_center_crop
from ...methods.readout import BlockEnergy, LogitReadout, TokenEnergy, invert_readouts
from ...viz.display import robust_minmax
from ...viz.figures import image_row, token_mosaic
from ...viz.html import figure, page, table
from ..data.labelled import LabelledSet
from ..heads.attention import (
    HeadTrainConfig,
    HeadTraining,
    HybridAttentionClassifier,
    HybridConfig,
    TokenPeaks,
    load_head,
    smooth_energy,
    summarize,
    token_energy_maps,
    token_peak_distance,
    train_head,
)
from .common import Log, environment, quiet_log, warnings_to_log
from .interference_common import portable_path
from .skeleton import Runner, option

EPILOG_TRAIN_HEAD = """example:
  adjinv train-head --out head.safetensors            # embedded labelled set (bundled photos)
  adjinv train-head --images labelled/ --size 224 --steps 300 --out head.safetensors --resume
  (labelled/ holds one sub-folder of images per class: labelled/cat/*.jpg, labelled/dog/*.jpg)
"""
EPILOG_ATTENTION = """example:
  adjinv experiment attention --out attention-out     # trains a head on the embedded set first
  adjinv experiment attention --head head.safetensors --images a.jpg b.jpg --out att-out
"""

Progress = Callable[[int, int], None]


@dataclass
class AttentionConfig:
    """What ``adjinv experiment attention`` computes per image."""

    size: int = 128
    token_blocks: list[int] = field(default_factory=lambda: [0, -1])
    window: int | None = None
    seed: int = 0
    chunk_size: int | None = None
    split: bool = False
    control_untrained: bool = False


# ----------------------------------------------------------------------------- runner
def _block_index(b: int, n: int) -> int:
    s = b + n if b < 0 else b
    if not 0 <= s < n:
        raise AdjinvError(f"block {b} out of range for a head with {n} attention blocks")
    return s


def _peaks_json(tp: TokenPeaks, i: int, grid: tuple[int, int]) -> list[dict]:
    out = []
    for t in range(grid[0] * grid[1]):
        out.append({"token": t, "grid": tp.grid[t].tolist(),
                    "peak_px": tp.peak_px[i, t].tolist(),
                    "peak_grid": [round(float(v), 4) for v in tp.peak_grid[i, t]],
                    "distance_tokens": float(tp.distance[i, t]),
                    "distance_px": float(tp.distance_px[i, t]),
                    "shuffled_tokens": float(tp.shuffled[i, t]),
                    "others_mean_tokens": float(tp.others_mean[i, t]),
                    "own_cell": bool(tp.own_cell[i, t]),
                    "own_energy": float(tp.own_energy[i, t]),
                    "shuffled_energy": float(tp.shuffled_energy[i, t])})
    return out


def _locality_summary(tps: list, pixel: list, t: int) -> dict:
    """Per-block statistics over every token map of every image."""
    def cat(name: str, src: list) -> torch.Tensor:
        return torch.cat([getattr(p, name).flatten().double().cpu() for p in src])

    return {
        "window_px": tps[0].window,
        "distance_tokens": summarize(cat("distance", tps)),
        "distance_px": summarize(cat("distance_px", tps)),
        "shuffled_tokens": summarize(cat("shuffled", tps)),
        "others_mean_tokens": summarize(cat("others_mean", tps)),
        "own_cell_rate": float(cat("own_cell", tps).mean()),
        "closer_than_shuffled": float((cat("distance", tps) < cat("shuffled", tps)).double().mean()),
        "own_energy_above_shuffled": float((cat("own_energy", tps) > cat("shuffled_energy", tps))
                                           .double().mean()),
        "own_cell_rate_chance": 1.0 / t,
        "own_energy": summarize(cat("own_energy", tps)),
        "shuffled_energy": summarize(cat("shuffled_energy", tps)),
        "uniform_energy": 1.0 / t,
        "pixel_argmax": {"window_px": 1,
                         "distance_tokens": summarize(cat("distance", pixel)),
                         "shuffled_tokens": summarize(cat("shuffled", pixel))},
    }


def visualise_image(encoder: StagedEncoder, lacs: LACBank | None, head: HybridAttentionClassifier,
                    name: str, image: torch.Tensor, out: Path, cfg: AttentionConfig,
                    progress: Progress | None = None) -> tuple[dict, dict]:
    """Layer-wise and per-token maps of one image (3, H, W) in [0, 1]; PNGs into ``out``.
    Returns the image's JSON record and its [`TokenPeaks`][TokenPeaks] per block."""
    t0 = time.perf_counter()
    img = resize_center_crop(image, cfg.size)
    x = encoder.normalize(img)[None]
    nb = len(head.blocks)
    tok_blocks = sorted({_block_index(b, nb) for b in cfg.token_blocks})
    with torch.no_grad(), encoder.frozen():
        a = encoder.forward_stages(check_input(x, encoder))[-1]
    h, w = int(a.shape[-2]), int(a.shape[-1])
    n_tok = h * w
    layer_ro: dict = {f"block{b}": BlockEnergy(head, b) for b in range(nb)}
    layer_ro["logit"] = LogitReadout(head)
    token_ro = {f"block{b}/token{t}": TokenEnergy(head, b, t) for b in tok_blocks for t in range(n_tok)}
    if cfg.split:
        res = invert_readouts(encoder, lacs, x, layer_ro, split=True, chunk_size=cfg.chunk_size)
        res.update(invert_readouts(encoder, lacs, x, token_ro, chunk_size=cfg.chunk_size))
    else:
        res = invert_readouts(encoder, lacs, x, {**layer_ro, **token_ro}, chunk_size=cfg.chunk_size)
    if progress is not None:
        progress(1, 1)
    with torch.no_grad():
        probs = head.classify(encoder, x).softmax(1)[0]
    k = int(probs.argmax())
    out.mkdir(parents=True, exist_ok=True)
    img = img.to(res["logit"].psi)
    save_png(out / "input.png", img)
    win = cfg.window if cfg.window is not None else max(1, cfg.size // h)
    layers, shown, titles = {}, [img], ["input"]
    heat: list[torch.Tensor | None] = [None]
    for b in range(nb):
        r = res[f"block{b}"]
        fn = f"layer_block{b}.png"
        save_png(out / fn, robust_minmax(r.psi[0]))
        layers[str(b)] = {"readout": "||T_b||^2", "value": float(r.value[0]), "file": fn}
        if r.split is not None:
            layers[str(b)]["split_file"] = f"layer_block{b}_split.png"
            save_png(out / f"layer_block{b}_split.png", robust_minmax(r.split[0]))
        shown.append(robust_minmax(r.psi[0]))
        heat.append(smooth_energy(token_energy_maps(r.psi[0]), win))
        titles.append(f"Ψ_L(∂‖T_{b}‖²/∂A_L)")
    lg = res["logit"]
    save_png(out / "logit.png", robust_minmax(lg.psi[0]))
    files = {"input": "input.png", "figure": "figure6_layers.png", "logit": "logit.png"}
    if lg.split is not None:
        save_png(out / "logit_split.png", robust_minmax(lg.split[0]))
        files["logit_split"] = "logit_split.png"
    shown.append(robust_minmax(lg.psi[0]))
    heat.append(smooth_energy(token_energy_maps(lg.psi[0]), win))
    titles.append(f"Ψ_L(∂z_k/∂A_L), k={head.classes[k]}")
    image_row(out / "figure6_layers.png", shown, titles, heat)
    tokens, peaks = {}, {}
    for b in tok_blocks:
        maps = torch.stack([res[f"block{b}/token{t}"].psi[0] for t in range(n_tok)])[None]
        tp = token_peak_distance(maps, (h, w), window=cfg.window, seed=cfg.seed + b)
        px = token_peak_distance(maps, (h, w), window=1, seed=cfg.seed + b)
        peaks[b] = (tp, px)
        fn = f"tokens_block{b}.png"
        token_mosaic(out / fn, smooth_energy(token_energy_maps(maps[0]), tp.window), (h, w),
                     tp.peak_px[0], f"{name}: Ψ_L(∂‖T_{{{b},t}}‖²/∂A_L) per token t, block {b} "
                     f"(energy, σ = {tp.window / 4:g} px; cyan: token cell, ×: peak)")
        tokens[str(b)] = {"file": fn, "summary": _locality_summary([tp], [px], n_tok),
                          "tokens": _peaks_json(tp, 0, (h, w))}
    rec = {"image": name, "grid": [h, w],
           "prediction": {"index": k, "name": head.classes[k], "probability": float(probs[k])},
           "files": files,
           "layers": layers, "logit": {"class": head.classes[k], "value": float(lg.value[0])},
           "tokens": tokens, "seconds": time.perf_counter() - t0}
    return rec, peaks


def token_locality(encoder: StagedEncoder, lacs: LACBank | None, head: HybridAttentionClassifier,
                   image: torch.Tensor, cfg: AttentionConfig) -> dict[int, tuple[TokenPeaks, TokenPeaks]]:
    """Per-token maps of one image through ``head`` (no files): ``{block: (smoothed, pixel)}``
    [`TokenPeaks`][TokenPeaks], for the untrained-head control (docs/method.md §12)."""
    x = encoder.normalize(resize_center_crop(image, cfg.size))[None]
    nb = len(head.blocks)
    blocks = sorted({_block_index(b, nb) for b in cfg.token_blocks})
    with torch.no_grad(), encoder.frozen():
        a = encoder.forward_stages(check_input(x, encoder))[-1]
    h, w = int(a.shape[-2]), int(a.shape[-1])
    ro = {f"block{b}/token{t}": TokenEnergy(head, b, t) for b in blocks for t in range(h * w)}
    res = invert_readouts(encoder, lacs, x, ro, chunk_size=cfg.chunk_size)
    out = {}
    for b in blocks:
        maps = torch.stack([res[f"block{b}/token{t}"].psi[0] for t in range(h * w)])[None]
        out[b] = (token_peak_distance(maps, (h, w), window=cfg.window, seed=cfg.seed + b),
                  token_peak_distance(maps, (h, w), window=1, seed=cfg.seed + b))
    return out


def untrained_copy(head: HybridAttentionClassifier, seed: int) -> HybridAttentionClassifier:
    """A freshly initialised head of the same architecture (seeded), for the control."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ctrl = HybridAttentionClassifier(head.channels, head.num_classes, head.config, head.classes)
    p = next(head.parameters())
    return ctrl.to(device=p.device, dtype=p.dtype).eval()


def run_attention(encoder: StagedEncoder, lacs: LACBank | None, lac_source: str,
                  head: HybridAttentionClassifier, head_info: dict, images: dict[str, torch.Tensor],
                  out: Path, cfg: AttentionConfig, progress: Progress | None = None) -> dict:
    """Visualise every image, write ``results.json`` and ``index.html`` into ``out``."""
    t0 = time.perf_counter()
    if cfg.size < encoder.total_stride:
        raise AdjinvError(f"--size {cfg.size} is smaller than the encoder's total stride "
                          f"{encoder.total_stride}")
    for b in cfg.token_blocks:
        _block_index(b, len(head.blocks))
    recs: list[dict] = []
    per_block: dict[int, list] = {}
    ctrl_block: dict[int, list] = {}
    ctrl = untrained_copy(head, cfg.seed + 12345) if cfg.control_untrained else None
    for i, (name, img) in enumerate(images.items()):
        rec, peaks = visualise_image(encoder, lacs, head, name, img, out / name, cfg)
        recs.append(rec)
        for b, pair in peaks.items():
            per_block.setdefault(b, []).append(pair)
        if ctrl is not None:
            for b, pair in token_locality(encoder, lacs, ctrl, img, cfg).items():
                ctrl_block.setdefault(b, []).append(pair)
        if progress is not None:
            progress(i + 1, len(images))
    n_tok = recs[0]["grid"][0] * recs[0]["grid"][1] if recs else 0
    summary = {str(b): _locality_summary([p[0] for p in v], [p[1] for p in v], n_tok)
               for b, v in sorted(per_block.items())}
    control = {str(b): _locality_summary([p[0] for p in v], [p[1] for p in v], n_tok)
               for b, v in sorted(ctrl_block.items())}
    results = {
        "experiment": "attention (Sec. 3.5, C.9)",
        "encoder": encoder.name, "lacs": lac_source, "size": cfg.size,
        "grid": recs[0]["grid"] if recs else None,
        "token_blocks": sorted(per_block), "head": head_info,
        "config": asdict(cfg),
        "notes": [
            "Layer-wise maps: Psi_L(dS/dA_L) for S = ||T_b||^2 (block output energy); per-token maps: "
            "S = ||T_{b,t}||^2, one cascade pass of the whole seed through the unchanged LACs.",
            "Peak: argmax of the per-pixel energy sum_rgb (Psi - spatial mean)^2 smoothed by a "
            "Gaussian of sigma = window_px/4 (window_px = one token cell by default; pixel_argmax: "
            "no smoothing), mapped to "
            "token-grid coordinates (cell centres at integers). distance_tokens: peak to the token's "
            "own position; shuffled_tokens: peak to a random other token's position (seeded); "
            "own_energy: energy fraction inside the token's cell (uniform = 1/T).",
            "The blocks are pre-norm with residual connections: T_{b,t} contains token t's own "
            "input, so part of each token seed sits at its own position by construction.",
            "control_untrained: the same per-token statistics through a freshly initialised head "
            "of the same architecture (seeded): locality it also shows is not learned by attention.",
        ],
        "summary": summary,
        "control_untrained": control,
        "environment": environment(),
        "images": recs,
        "seconds": {"visualisation": time.perf_counter() - t0},
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", markdown_table(results))
    _write_index(out, results)
    return results


def markdown_table(results: dict) -> str:
    """Token locality per block against the shuffled reference, and the head's accuracy."""
    head = results["head"]
    acc = head.get("accuracy") or {}
    data = head.get("data") or {}

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    n_img = len(results["images"])
    lines = [f"# Attention head through the LACs (Sec. 3.5) — {results['encoder']}", "",
             f"LACs `{results['lacs']}`; {results['size']} px, token grid {results['grid']}; "
             f"{n_img} visualised image(s): {', '.join(r['image'] for r in results['images'])}.", "",
             f"Head: {head.get('architecture', {}).get('blocks', '?')} attention blocks, trained on "
             f"{data.get('description', head.get('source'))}; accuracy train {f(acc.get('train'))}, "
             f"test {f(acc.get('test'))}.", "",
             "| block | peak–own distance (tokens), mean / median | shuffled other token, mean / "
             "median | closer than shuffled | peak in own cell (chance) | own-cell energy | "
             "shuffled-cell energy | uniform | pixel argmax: distance / shuffled |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [(b, s) for b, s in results["summary"].items()]
    rows += [(f"{b}, untrained head", s) for b, s in results.get("control_untrained", {}).items()]
    for b, s in rows:
        d, sh, pa = s["distance_tokens"], s["shuffled_tokens"], s["pixel_argmax"]
        lines.append(f"| {b} | {f(d['mean'])} / {f(d['median'])} | {f(sh['mean'])} / "
                     f"{f(sh['median'])} | {f(s.get('closer_than_shuffled'))} | "
                     f"{f(s['own_cell_rate'])} ({f(s['own_cell_rate_chance'])}) | "
                     f"{f(s['own_energy']['mean'])} | {f(s['shuffled_energy']['mean'])} | "
                     f"{f(s['uniform_energy'])} | {f(pa['distance_tokens']['mean'])} / "
                     f"{f(pa['shuffled_tokens']['mean'])} |")
    lines += ["", "Per image, the value of each layer-wise readout ||T_b||^2 and the prediction:", ""]
    for r in results["images"]:
        lines.append(f"- {r['image']}: predicted {r['prediction']['name']} (p = "
                     f"{r['prediction']['probability']:.3f}); block energies "
                     + ", ".join(f"{v['value']:.3g}" for v in r["layers"].values()) + ".")
    lines += ["", *[f"- {n}" for n in results["notes"]]]
    return "\n".join(lines) + "\n"


def _write_index(out: Path, results: dict) -> Path:
    rows = []
    for b, s in results["summary"].items():
        rows.append([b, s["distance_tokens"]["mean"], s["distance_tokens"]["median"],
                     s["shuffled_tokens"]["mean"], s["shuffled_tokens"]["median"],
                     s["own_cell_rate"], s["own_cell_rate_chance"], s["own_energy"]["mean"],
                     s["uniform_energy"]])
    head = results["head"]
    acc = head.get("accuracy") or {}
    intro = (f"<p>encoder <b>{results['encoder']}</b>, LACs: {results['lacs']}, {results['size']} px, "
             f"token grid {results['grid']}; head: {head.get('source')}, accuracy train "
             f"{acc.get('train')} / test {acc.get('test')}.</p><p>Maps are shown with a robust "
             "(1–99 %) min-max; energy maps are smoothed by a Gaussian of σ = a quarter token cell.</p>")
    sections = [table(rows, ["block", "peak dist. mean", "median", "shuffled mean", "median",
                             "own-cell rate", "chance", "own-cell energy", "uniform"])]
    for r in results["images"]:
        p = r["image"] + "/"
        figs = [figure(p + "figure6_layers.png", "input, Ψ of each block energy, Ψ of the top logit")]
        figs += [figure(p + t["file"], f"tokens, block {b}") for b, t in r["tokens"].items()]
        figs += [figure(p + v["split_file"], f"block {b}: Σ_c w_c Ψ_L(E_c ⊙ G)")
                 for b, v in r["layers"].items() if "split_file" in v]
        if "logit_split" in r["files"]:
            figs.append(figure(p + r["files"]["logit_split"], "top logit: Σ_c w_c Ψ_L(E_c ⊙ G)"))
        sections.append(f"<section><h2>{html.escape(r['image'])}</h2><p>prediction "
                        f"{html.escape(r['prediction']['name'])} "
                        f"(p = {r['prediction']['probability']:.3f})</p>{''.join(figs)}</section>")
    style = "<style>figure img{width:auto !important;height:auto !important;max-width:900px}</style>"
    return atomic_write_text(out / "index.html",
                             page("adjinv — attention heads (Sec. 3.5)", sections, style + intro))


# ----------------------------------------------------------------------------- CLI
LABELLED, HEAD = "labelled set", "hybrid head"


@dataclass
class HeadSetup:
    """Encoder, labelled set and head hyper-parameters shared by ``adjinv train-head`` and
    ``adjinv experiment attention``."""

    encoder: str = option("efficientnet_lite0", "registry name, see `adjinv encoders`")
    weights: str | None = option(None, "local encoder state dict (.pth or .safetensors)")
    random_init: bool = option(False, "allow an encoder without pretrained weights (for testing only)")
    seed: int = option(0, "data split, crops, init and batches")
    labelled: str | None = option(None, "ImageFolder layout, one sub-folder per class (default: the "
        "embedded set of random crops of the 5 bundled photos, one class per photo: a sanity check)",
        flag="--labelled", metavar="FOLDER", group=LABELLED, input=True)
    labelled_set: str = option("crops", "embedded set without a folder: 'crops' (train and test crops of "
        "the same 5 photos, a sanity check) or 'detection' (object pasted on a texture vs texture alone; "
        "tested on held-out photos pasted on textures no training image shows)",
        choices=["crops", "detection"], group=LABELLED)
    test_fraction: float = option(0.2, "held-out fraction per class of a folder", group=LABELLED)
    train_per_class: int = option(24, "embedded set", group=LABELLED)
    test_per_class: int = option(8, "embedded set", group=LABELLED)
    steps: int = option(30, "Adam steps", group=HEAD)
    lr: float = option(3e-4, "Adam learning rate", group=HEAD)
    batch_size: int = option(16, "images per step", group=HEAD)
    blocks: int = option(3, "attention blocks", group=HEAD)
    heads: int = option(8, "attention heads per block", group=HEAD)
    mlp_ratio: float = option(1.0, "MLP width / token width", group=HEAD)
    dropout: float = option(0.0, "dropout in the blocks", group=HEAD)
    dim: int | None = option(None, "project tokens to this width first (default: keep C_L, as the paper)",
        group=HEAD)
    checkpoint_every: int = option(20, "steps between checkpoints", group=HEAD)

    def check(self) -> None:
        """Refuse impossible hyper-parameters (the skeleton calls this before any work)."""
        _check_setup(self, getattr(self, "size", None))


@dataclass
class TrainHeadArgs(HeadSetup):
    """What ``adjinv train-head`` trains (``--out`` is the checkpoint path)."""

    labelled: str | None = option(None, "ImageFolder layout, one sub-folder per class (default: the "
        "embedded set of random crops of the 5 bundled photos, one class per photo: a sanity check)",
        flag="--images", metavar="FOLDER", group=LABELLED, input=True)
    size: int = option(128, "image side in px")
    resume: bool = option(False, "continue the run saved at --out")


@dataclass
class AttentionArgs(HeadSetup):
    """What ``adjinv experiment attention`` loads, trains and visualises
    ([`AttentionConfig`][AttentionConfig] is the part [`run_attention()`][run_attention] needs)."""

    head: str | None = option(None, "head checkpoint from `adjinv train-head` (default: train one on the "
        "labelled set first, in memory)")
    images: list[str] | None = option(None, "images to visualise (default: the bundled photos)")
    num_images: int = option(0, "use only the first N bundled photos; 0: all")
    size: int | None = option(None, "image side in px (default: the head's training size, else 128)")
    token_blocks: list[int] = option([0, -1], "blocks with per-token maps (default 0 -1: the first and the "
        "last)")
    window: int | None = option(None, "energy smoothing window for the peak, px (default: one token cell)")
    split: bool = option(False, "also the per-channel split sum_c w_c Psi_L(E_c * G) of each layer-wise "
        "seed (one cascade pass per live channel: about a minute per map on 2 CPU cores)")
    control_untrained: bool = option(False, "also the token locality through a freshly initialised head of "
        "the same architecture (the control for locality that attention did not learn)")
    lac: str | None = option(None, "LAC checkpoint (default: the bundled one for the encoder)")
    allow_other_weights: bool = option(False, "accept LACs/head trained on other weights of this "
        "architecture")
    chunk_size: int | None = option(None, "seeds per batched backward (default: from free memory)")


def _bar(desc: str, total: int, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, disable=None)


def _load_encoder(cfg: HeadSetup, log: Log) -> StagedEncoder:
    from ...encoders import load_encoder

    with warnings_to_log(log):
        return load_encoder(cfg.encoder, cfg.weights, random_init=cfg.random_init)


def _labelled(cfg: HeadSetup, size: int) -> LabelledSet:
    from ..data.labelled import composite_detection_set, embedded_labelled_set, image_folder

    if cfg.labelled:
        return image_folder(cfg.labelled, size, test_fraction=cfg.test_fraction, seed=cfg.seed)
    if cfg.labelled_set == "detection":
        return composite_detection_set(size, train_per_class=cfg.train_per_class,
                                       test_per_class=cfg.test_per_class, seed=cfg.seed)
    return embedded_labelled_set(size, train_per_class=cfg.train_per_class,
                                 test_per_class=cfg.test_per_class, seed=cfg.seed)


def _check_setup(cfg: HeadSetup, size: int | None) -> None:
    """Refuse impossible hyper-parameters before any work (as ``adjinv train`` does)."""
    import math

    def bad(flag: str, value: object, rule: str) -> AdjinvError:
        return AdjinvError(f"{flag} {value!r} is out of range: it must be {rule}")

    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise bad("--lr", cfg.lr, "a finite number > 0, e.g. 3e-4")
    if not (isinstance(cfg.dropout, (int, float)) and 0 <= cfg.dropout < 1):
        raise bad("--dropout", cfg.dropout, "in [0, 1), e.g. 0.1")
    if not (isinstance(cfg.mlp_ratio, (int, float)) and math.isfinite(cfg.mlp_ratio)
            and cfg.mlp_ratio > 0):
        raise bad("--mlp-ratio", cfg.mlp_ratio, "a finite number > 0")
    if not (isinstance(cfg.test_fraction, (int, float)) and 0 <= cfg.test_fraction < 1):
        raise bad("--test-fraction", cfg.test_fraction, "in [0, 1)")
    for flag, v in (("--steps", cfg.steps), ("--batch-size", cfg.batch_size),
                    ("--blocks", cfg.blocks), ("--heads", cfg.heads),
                    ("--checkpoint-every", cfg.checkpoint_every),
                    ("--train-per-class", cfg.train_per_class),
                    ("--test-per-class", cfg.test_per_class), ("--dim", cfg.dim or 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(flag, v, "an integer >= 1")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
        raise bad("--size", size, "an integer >= 16 (px), e.g. 128")


def _head_config(cfg: HeadSetup) -> HeadTrainConfig:
    return HeadTrainConfig(steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
                           checkpoint_every=cfg.checkpoint_every,
                           model=HybridConfig(blocks=cfg.blocks, heads=cfg.heads,
                                              mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout,
                                              dim=cfg.dim))


def _train(enc: StagedEncoder, data: LabelledSet, cfg: HeadTrainConfig,
           checkpoint: Path | None, resume: bool) -> HeadTraining:
    feat_bar = _bar("features", data.train_images.shape[0] + data.test_images.shape[0], "img")
    bar = _bar("train-head", cfg.steps, "step")

    def fprog(done: int, total: int) -> None:
        feat_bar.update(done - feat_bar.n)

    def prog(step: int, total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    try:
        return train_head(enc, data, cfg, checkpoint=checkpoint, resume=resume, progress=prog,
                          feature_progress=fprog)
    finally:
        feat_bar.close()
        bar.close()


def _fmt_acc(v: float | None) -> str:
    return "n/a (no test images)" if v is None else f"{v:.3f}"


def train_head_command(cfg: TrainHeadArgs, out: Path, *, log: Log = quiet_log) -> dict:
    """``adjinv train-head``: train, checkpoint to ``out``; a summary of the run."""
    _check_setup(cfg, cfg.size)
    if out.exists() and not cfg.resume:
        raise AdjinvError(f"{out} exists; pass --resume to continue that run or choose another --out")
    t0 = time.perf_counter()
    enc = _load_encoder(cfg, log)
    data = _labelled(cfg, cfg.size)
    log(f"labelled set: {data.description}")
    hcfg = _head_config(cfg)
    res = _train(enc, data, hcfg, out, cfg.resume)
    first = sum(res.losses[:5]) / max(1, len(res.losses[:5]))
    last = sum(res.losses[-5:]) / max(1, len(res.losses[-5:]))
    return {"encoder": enc.name, "blocks": hcfg.model.blocks, "steps": hcfg.steps,
            "first_losses": first, "last_losses": last, "train_accuracy": res.train_accuracy,
            "test_accuracy": res.test_accuracy, "seconds": time.perf_counter() - t0}


def _trained(r: dict, out: Path) -> list[str]:
    return [f"trained a {r['blocks']}-block attention head on {r['encoder']} for {r['steps']} steps "
            f"(cross-entropy {r['first_losses']:.3g} first 5 -> {r['last_losses']:.3g} last 5): "
            f"accuracy train {_fmt_acc(r['train_accuracy'])}, test {_fmt_acc(r['test_accuracy'])}; "
            f"{r['seconds']:.1f} s; wrote {out}"]


def attention_command(cfg: AttentionArgs, out: Path, *, log: Log = quiet_log) -> dict:
    """``adjinv experiment attention``: load (or train) the head, visualise, summarise."""
    from ...images.files import load_image
    from ...images.samples import SAMPLE_NAMES, sample_images
    from ...lacs.bundled import load_lacs

    _check_setup(cfg, cfg.size)
    t0 = time.perf_counter()
    enc = _load_encoder(cfg, log)
    with warnings_to_log(log):
        lacs, _, source = load_lacs(enc, cfg.lac, allow_other_weights=cfg.allow_other_weights)
    if cfg.head:
        head, meta, _ = load_head(cfg.head, enc, allow_other_weights=cfg.allow_other_weights)
        size = cfg.size or int(meta.get("data", {}).get("size", 128))
        head_info = {"source": str(cfg.head), "architecture": meta.get("architecture"),
                     "classes": meta.get("classes"), "data": meta.get("data"),
                     "training": meta.get("training"), "accuracy": meta.get("accuracy"),
                     "step": meta.get("step")}
    else:
        size = cfg.size or 128
        data = _labelled(cfg, size)
        test_data = data
        log(f"no --head: training one on {data.description}")
        th = time.perf_counter()
        res = _train(enc, data, _head_config(cfg), None, False)
        head = res.model
        head_info = {"source": "trained in this run", "architecture": asdict(head.config),
                     "classes": head.classes,
                     "data": {"description": data.description, "size": size,
                              "train": int(data.train_images.shape[0]),
                              "test": int(data.test_images.shape[0])},
                     "training": asdict(_head_config(cfg)),
                     "accuracy": {"train": res.train_accuracy, "test": res.test_accuracy},
                     "final_losses": res.losses[-5:], "seconds": time.perf_counter() - th}
        log(f"head accuracy train {_fmt_acc(res.train_accuracy)}, test "
            f"{_fmt_acc(res.test_accuracy)} ({head_info['seconds']:.1f} s)")
    if not cfg.images and cfg.labelled_set == "detection" and not cfg.labelled:
        # the set's test images with an object: held-out photos the head never saw
        if cfg.head:
            test_data = _labelled(cfg, size)
        pos = [i for i, y in enumerate(test_data.test_labels.tolist())
               if test_data.classes[y] == "object"]
        pos = pos[: cfg.num_images] if cfg.num_images else pos
        images = {f"test{i:02d}": test_data.test_images[i] for i in pos}
    elif cfg.images:
        images = {}
        taken: set[str] = set()
        for f in map(Path, cfg.images):  # folder names made safe: no "..", "/" or reserved names
            images[safe_name(f.stem, taken)] = load_image(f, mode="convert")
    else:
        names = SAMPLE_NAMES[: cfg.num_images] if cfg.num_images else SAMPLE_NAMES
        images = sample_images(names)
    source = portable_path(source)
    acfg = AttentionConfig(size=size, token_blocks=cfg.token_blocks, window=cfg.window,
                           seed=cfg.seed, chunk_size=cfg.chunk_size, split=cfg.split,
                           control_untrained=cfg.control_untrained)
    log(f"encoder {enc.name}, LACs: {source}; visualising {len(images)} image(s) at {size} px")
    bar = _bar("images", len(images), "img")
    try:
        results = run_attention(enc, lacs, source, head, head_info, images, out, acfg,
                                progress=lambda d, n: bar.update(d - bar.n))
    finally:
        bar.close()
    results["seconds"]["total"] = time.perf_counter() - t0
    return results


def _locality_lines(results: dict, out: Path) -> list[str]:
    return [f"block {b}: token-peak distance mean {s['distance_tokens']['mean']:.2f} / median "
            f"{s['distance_tokens']['median']:.2f} tokens vs shuffled {s['shuffled_tokens']['mean']:.2f}"
            f" / {s['shuffled_tokens']['median']:.2f}; own-cell energy "
            f"{s['own_energy']['mean']:.3f} (uniform {s['uniform_energy']:.3f})"
            for b, s in results["summary"].items()]


RUNNERS = (
    Runner("train-head", TrainHeadArgs, train_head_command, command=True,
           help="train a hybrid attention head on the frozen encoder",
           description="Train the attention blocks + linear head of a hybrid classifier (Sec. 3.5) "
                       "on a labelled set; the encoder stays frozen. Checkpointed, resumable; "
                       "prints train/test accuracy.",
           epilog=EPILOG_TRAIN_HEAD, outputs=(), summary=_trained,
           out_help="checkpoint path (.safetensors)", out_file=True),
    Runner("attention", AttentionArgs, attention_command,
           help="attention heads through the trained LACs (Sec. 3.5, Fig. 6)",
           description="Layer-wise (block energy) and per-token (token energy) visualisations of a "
                       "hybrid attention head through the unchanged LAC cascade, with the distance "
                       "between each token map's energy peak and the token's grid position against a "
                       "shuffled reference.",
           epilog=EPILOG_ATTENTION, outputs=("results.json", "table.md", "index.html"),
           write=lambda results, out: atomic_write_json(out / "results.json", results),
           summary=_locality_lines, out_default="attention-out"),
)
