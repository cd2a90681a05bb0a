"""``adjinv experiment ood``: the covariance geometry of GAP features under corruption
(Sec. 3.2.5 Finding 3, Figure 4(c)–(d), Supp. C.6; docs/method.md §9).

For each corruption and severity 1–5, on the corrupted test split:

- **accuracy** of a linear probe trained on the clean train split (all channels);
- ``log det(Σ_S + λI)`` of the corrupted covariance on the **clean CovVol
  subset** ``S`` (``k`` channels chosen on the clean train covariance);
- **effective rank** and **trace** of the full corrupted covariance;
- unbiased **MMD²** between clean train features and corrupted test features.

[choice] MMD uses a Gaussian kernel ``exp(−‖a−b‖²/(2h²))`` whose bandwidth ``h``
is the median pairwise distance of the pooled *clean* train and test features,
fixed once, so that the values at different severities are on one scale (a
per-comparison median would rescale the kernel as the features drift). The
clean reference is the train split and the corrupted set is the test split:
disjoint images, so at severity 0 MMD² is the estimator's noise floor (≈ 0,
possibly negative), not an artefact of comparing an image with itself.

"Normalised to severity 0" (Figure 4(d)): accuracy, effective rank and trace are
divided by their clean (severity-0) values; the log-det, which may be negative,
is shown as ``exp((log det_s − log det_0)/k)``, the geometric-mean change of the
subset ellipsoid's axes (1 when clean); MMD², which is ≈ 0 when clean, is shown
divided by its largest value, on the right axis.

Figure 4(c): one test image at severities 0–5 of ``figure_corruption`` with its
class-directional inversion ``x̂^(k) = Σ_c α_{k,c} φ_{L,c}`` (Eq. 12), where
``α_{k,c} = W_{k,c} g_c`` uses the probe's exact linear form on raw GAP features
and ``k`` is the image's true class [docs/method.md §6 "contribution" choice]. The LACs
are ``lac`` if given, else the encoder's bundled checkpoint, else identity LACs
(the results say which).

Outputs in ``out/``: ``results.json``, ``table.md``, ``geometry.png`` (4(d),
mean over corruptions), ``geometry_per_corruption.png``, ``reconstructions.png``
(4(c)) and ``reconstructions/*.png``. ``--figure-only`` ([`run_ood_figure()`][run_ood_figure]) makes
Figure 4(c) alone, with ``figure_4c.json``, and leaves ``results.json`` untouched.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ...distributed import barrier, share_work
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_json, atomic_write_text, save_png
from ...state import to_module
from ...viz.display import robust_minmax
from ..analysis.covvol import covariance_volume_select, keep_count
from ..analysis.geometry import (
    covariance,
    geometry_indicators,
    median_bandwidth,
    normalised_volume,
    random_subsets,
    shift_controls,
)
from ..data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from ..data.datasets import CorruptedDataset, first_per_class, open_dataset
from ..heads.probe import LinearProbe, ProbeConfig
from .common import (
    Log,
    environment,
    features,
    load_named_encoder,
    pyplot,
    quiet_log,
    relative_ridge,
    save_figure,
    timer,
    warnings_to_log,
)
from .interference_common import portable_path
from .skeleton import Runner, Variant, option

INDICATORS = ("accuracy", "logdet_subset", "effective_rank", "trace", "mmd2",
              "logdet_corr_subset", "mean_norm", "logdet_random_subset", "logdet_corr_random_subset")


@dataclass
class OODConfig:
    """Settings of the OOD-geometry runner (JSON keys = field names)."""

    encoder: str = option("efficientnet_lite0", "registry name")
    weights: str | None = option(None, "local encoder state dict")
    random_init: bool = option(False, "allow an untrained encoder (testing only)")
    dataset: str = option("lfw", "lfw (embedded, default) or KIND:ROOT (see compression)")
    size: int = option(96, "image side in px")
    corruptions: list[str] = option(list(CORRUPTIONS), f"subset of: {' '.join(CORRUPTIONS)} (default: all)")
    severities: list[int] = option(list(SEVERITIES), "subset of 1 2 3 4 5")
    prune_ratio: float = option(0.95, "CovVol subset size k = ceil((1 - p) C) unless --keep is given")
    keep: int | None = option(None, "CovVol subset size k (default ceil(0.05 C))")
    ridge_rel: float = option(1e-6, "ridge as a fraction of the mean channel variance")
    weight_decay: float = option(1e-3, "probe L2 penalty")
    max_iter: int = option(200, "probe optimiser iterations")
    spatial_scale: float | None = option(None, "corruption pixel-size scale (default size/224)")
    max_images: int | None = option(None, "use at most N images per split (quick runs)")
    batch_size: int = option(64, "images per feature batch")
    seed: int = option(0, "data split, corruptions, random subsets")
    cache_dir: str | None = option(None, "feature cache folder (default OUT/cache)")
    figure: bool = option(True, "skip the Figure 4(c) reconstructions", flag="--no-figure", const=False)
    figure_corruption: str = option("gaussian_noise", "corruption of Figure 4(c)")
    figure_image: int = option(0, "test-split index of the Figure 4(c) image")
    lac: str | None = option(None, "LAC checkpoint for Figure 4(c) (default: bundled, else identity)")
    chunk_size: int | None = option(None, "channels per batched backward in Figure 4(c)")
    random_subsets: int = option(10, "random channel subsets of size k (the CovVol subset's control)")

    def validate(self) -> None:
        """Reject impossible settings with a message."""
        bad = [c for c in self.corruptions if c not in CORRUPTIONS]
        if bad or not self.corruptions:
            raise AdjinvError(f"unknown or no corruptions {bad}; choose from {', '.join(CORRUPTIONS)}")
        if not self.severities or any(s not in SEVERITIES for s in self.severities):
            raise AdjinvError(f"severities must be among 1-5, got {self.severities}")
        if self.figure_corruption not in CORRUPTIONS:
            raise AdjinvError(f"unknown figure_corruption {self.figure_corruption!r}")


def _prepare(cfg: OODConfig, out: str | Path, encoder: StagedEncoder | None, log: Log,
             times: dict[str, float]) -> tuple[Path, Path, StagedEncoder, float]:
    """Validate, create ``out``, load the encoder: ``(out, feature cache, encoder, spatial scale)``."""
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    with timer(times, "load_encoder"):
        enc = encoder if encoder is not None else load_named_encoder(
            cfg.encoder, cfg.weights, cfg.random_init, log)
    scale = cfg.spatial_scale if cfg.spatial_scale is not None else cfg.size / 224
    return out, cache, enc, scale


def _clean_sets(cfg: OODConfig) -> tuple[Any, Any]:
    """The clean train and test sets (at most ``max_images`` per class each)."""
    train_ds = open_dataset(cfg.dataset, "train", cfg.size, cfg.seed)
    test_ds = open_dataset(cfg.dataset, "test", cfg.size, cfg.seed)
    if cfg.max_images is not None:
        train_ds = first_per_class(train_ds, cfg.max_images)
        test_ds = first_per_class(test_ds, cfg.max_images)
    return train_ds, test_ds


def run_ood(cfg: OODConfig, out: str | Path, *, encoder: StagedEncoder | None = None,
            log: Log = quiet_log) -> dict:
    """Run the protocol; write results, table and figures to ``out``. Under ``torchrun``
    the ranks share the feature extraction (one clean or corrupted set each, into the
    feature cache), then rank 0 computes and writes; every rank returns the results."""
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    out, cache, enc, scale = _prepare(cfg, out, encoder, log, times)
    severities = sorted(set(cfg.severities))
    log(f"ood: encoder {enc.name}, dataset {cfg.dataset}, {cfg.size} px, "
        f"{len(cfg.corruptions)} corruptions x severities {severities}, spatial scale {scale:.3f}")

    with timer(times, "clean"):
        train_ds, test_ds = _clean_sets(cfg)
        # under torchrun the ranks share the feature sets (each one fills its cache folder);
        # rank 0 alone then reads them all and computes the geometry (docs/cluster.md)
        sets: list[tuple[str, Any]] = [("clean train", train_ds), ("clean test", test_ds)] + [
            (f"{name} s{s}", CorruptedDataset(test_ds, name, s, seed=cfg.seed, spatial_scale=scale))
            for name in cfg.corruptions for s in severities]
        if not share_work(sets, lambda item: features(enc, item[1], item[0], cache, cfg.batch_size, log)):
            barrier()  # wait for rank 0's results.json
            return json.loads((out / "results.json").read_text())
        ftr = features(enc, train_ds, "clean train", cache, cfg.batch_size, log)
        fte = features(enc, test_ds, "clean test", cache, cfg.batch_size, log)
        c = ftr.features.shape[1]
        cov = covariance(ftr.features)
        ridge = relative_ridge(cov, cfg.ridge_rel)
        k = cfg.keep if cfg.keep is not None else keep_count(c, cfg.prune_ratio)
        sel = covariance_volume_select(cov, k, ridge=ridge)
        if sel.k < k:
            raise AdjinvError(f"CovVol stopped after {sel.k} of {k} channels ({sel.stopped})")
        subset = sel.order
        probe = LinearProbe(len(train_ds.classes), ProbeConfig(
            weight_decay=cfg.weight_decay, max_iter=cfg.max_iter, seed=cfg.seed)
        ).fit(ftr.features, ftr.labels)
        bandwidth = median_bandwidth(ftr.features, fte.features)
        rand = random_subsets(c, k, cfg.random_subsets, cfg.seed)

        def indicators(f: torch.Tensor, y: torch.Tensor) -> dict:
            ind = geometry_indicators(ftr.features, f, subset, ridge=ridge, bandwidth=bandwidth)
            return {"accuracy": probe.accuracy(f, y), **ind.to_dict(),
                    **shift_controls(f, subset, rand, ridge=ridge)}

        clean = indicators(fte.features, fte.labels)
    log(f"  clean: accuracy {100 * clean['accuracy']:.1f}%, log det Σ_S {clean['logdet_subset']:.2f} "
        f"(k={k}), effective rank {clean['effective_rank']:.1f}, trace {clean['trace']:.4g}, "
        f"MMD² {clean['mmd2']:.2e} (h={bandwidth:.3g})")

    per: dict[str, list[dict]] = {}
    with timer(times, "corrupted"):
        for name in cfg.corruptions:
            per[name] = [{"severity": 0, **clean}]
            for s in severities:
                ds = CorruptedDataset(test_ds, name, s, seed=cfg.seed, spatial_scale=scale)
                f = features(enc, ds, f"{name} s{s}", cache, cfg.batch_size, log)
                per[name].append({"severity": s, **indicators(f.features, f.labels)})
            row = per[name]
            log(f"  {name:18s} acc " + " ".join(f"{100 * r['accuracy']:.0f}" for r in row)
                + " | erank " + " ".join(f"{r['effective_rank']:.1f}" for r in row))
    mean = [{"severity": s, **{i: sum(per[n][j][i] for n in per) / len(per) for i in INDICATORS}}
            for j, s in enumerate([0, *severities])]
    normalised = normalise(mean, k)

    figure = None
    if cfg.figure:
        with timer(times, "figure_4c"):
            figure = reconstructions(enc, probe, test_ds, cfg, scale, out, log)
    times["total"] = round(time.perf_counter() - t_all, 3)

    results = {
        "experiment": "ood",
        "config": asdict(cfg),
        "encoder": {"name": enc.name, "weights_hash": enc.weights_hash()},
        "dataset": {"train": train_ds.describe(), "test": test_ds.describe(),
                    "classes": train_ds.classes, "n_train": len(train_ds), "n_test": len(test_ds)},
        "channels": c,
        "k": k,
        "ridge": ridge,
        "bandwidth": bandwidth,
        "mmd_convention": "unbiased MMD²_u, Gaussian kernel exp(-|a-b|²/(2h²)), h = median pairwise "
                          "distance of the pooled clean train+test features, fixed for all severities; "
                          "clean train split vs (corrupted) test split; each side capped at 2000 "
                          "rows by a seeded subsample",
        "spatial_scale": scale,
        "covvol_subset": subset.tolist(),
        "clean": clean,
        "per_corruption": per,
        "mean_over_corruptions": mean,
        "normalised": normalised,
        "figure_4c": figure,
        "seconds": times,
        "environment": environment(),
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", markdown_table(results))
    plot_geometry(results, out / "geometry.png")
    plot_per_corruption(results, out / "geometry_per_corruption.png")
    log(f"wrote {out}/results.json, table.md, geometry.png ({times['total']:.1f} s)")
    barrier()  # under torchrun the other ranks wait for results.json
    return results


def run_ood_figure(cfg: OODConfig, out: str | Path, *, encoder: StagedEncoder | None = None,
                   log: Log = quiet_log) -> dict:
    """Figure 4(c) alone (``--figure-only``): the probe on the clean train features and the
    class-directional reconstructions, nothing of the geometry. Writes ``reconstructions.png``,
    ``reconstructions/*.png`` and ``figure_4c.json`` (this run's settings and record) to
    ``out`` and leaves an existing ``results.json`` as it is (docs/method.md §6, §9)."""
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    out, cache, enc, scale = _prepare(cfg, out, encoder, log, times)
    with timer(times, "clean"):
        train_ds, test_ds = _clean_sets(cfg)
        ftr = features(enc, train_ds, "clean train", cache, cfg.batch_size, log)
        probe = LinearProbe(len(train_ds.classes), ProbeConfig(
            weight_decay=cfg.weight_decay, max_iter=cfg.max_iter, seed=cfg.seed)
        ).fit(ftr.features, ftr.labels)
    with timer(times, "figure_4c"):
        figure = reconstructions(enc, probe, test_ds, cfg, scale, out, log)
    times["total"] = round(time.perf_counter() - t_all, 3)
    record = {"experiment": "ood --figure-only", "config": asdict(cfg),
              "encoder": {"name": enc.name, "weights_hash": enc.weights_hash()},
              "dataset": {"train": train_ds.describe(), "test": test_ds.describe()},
              "spatial_scale": scale, "figure_4c": figure, "seconds": times,
              "environment": environment()}
    atomic_write_json(out / "figure_4c.json", record)
    log(f"wrote {out}/reconstructions.png and figure_4c.json ({times['total']:.1f} s)")
    return record


def normalise(rows: list[dict], k: int) -> list[dict]:
    """The Figure 4(d) normalisation (module docstring): rows[0] is severity 0."""
    r0 = rows[0]
    top = max((r["mmd2"] for r in rows), default=0.0)

    def ratio(a: float, b: float) -> float:
        return a / b if b else math.nan

    return [{"severity": r["severity"], "accuracy": ratio(r["accuracy"], r0["accuracy"]),
             "volume": normalised_volume(r["logdet_subset"], r0["logdet_subset"], k),
             "effective_rank": ratio(r["effective_rank"], r0["effective_rank"]),
             "trace": ratio(r["trace"], r0["trace"]),
             "mmd2_over_max": r["mmd2"] / top if top > 0 else math.nan} for r in rows]


def reconstructions(enc: StagedEncoder, probe: LinearProbe, test_ds: object, cfg: OODConfig,
                    scale: float, out: Path, log: Log) -> dict:
    """Figure 4(c): ``x̂^(k)`` of one test image at severities 0–5 of one corruption."""
    from ...core.inverter import AdjointInverter
    from ...lacs.bundled import load_lacs

    n = len(test_ds)  # type: ignore[arg-type]
    if not 0 <= cfg.figure_image < n:
        raise AdjinvError(f"figure_image {cfg.figure_image} out of range for {n} test images")
    img, label = test_ds[cfg.figure_image]  # type: ignore[index]
    sev = [0, *SEVERITIES]
    imgs = torch.stack([corrupt(img, cfg.figure_corruption, s,
                                seed=cfg.seed * 1_000_003 + cfg.figure_image, spatial_scale=scale)
                        for s in sev])
    with warnings_to_log(log):
        lacs, _, source = load_lacs(enc, cfg.lac)
    source = portable_path(source)
    w_eff, _ = probe.effective_weights()
    wk = to_module(w_eff[label], enc)

    def alpha(acts: list[torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
        g = acts[-1].mean(dim=(-2, -1))
        a = wk.unsqueeze(0) * g
        return {"class": a, "class+": a * (wk > 0), "class-": a * (wk < 0)}

    inv = AdjointInverter(enc, lacs, chunk_size=cfg.chunk_size)
    t0 = time.perf_counter()
    res = inv.invert(enc.normalize(to_module(imgs, enc)), stages=[], extra_weights=alpha)
    log(f"  figure 4(c): {len(sev)} class-directional inversions in {time.perf_counter() - t0:.1f} s "
        f"(LACs: {source})")
    folder = out / "reconstructions"
    files = []
    for i, s in enumerate(sev):
        a, b = f"input_s{s}.png", f"class_s{s}.png"
        save_png(folder / a, imgs[i])
        save_png(folder / b, robust_minmax(res.extra["class"][i]))
        files.append({"severity": s, "input": f"reconstructions/{a}", "class": f"reconstructions/{b}",
                      "probe_logit_minus_bias": float(res.extra_weights["class"][i].sum()),
                      "live_channels": int((res.extra_weights["class"][i] != 0).sum())})
    plt = pyplot()
    fig, axes = plt.subplots(2, len(sev), figsize=(1.9 * len(sev), 4.0))
    for i, s in enumerate(sev):
        axes[0, i].imshow(imgs[i].permute(1, 2, 0).cpu().numpy())
        axes[0, i].set_title(f"severity {s}", fontsize=9)
        axes[1, i].imshow(robust_minmax(res.extra["class"][i]).permute(1, 2, 0).float().cpu().numpy())
        for ax in axes[:, i]:
            ax.axis("off")
    axes[1, 0].set_title("x̂^(k) (Eq. 12)", fontsize=9)
    fig.suptitle(f"{cfg.figure_corruption}: class '{test_ds.classes[label]}', "  # type: ignore[attr-defined]
                 f"LACs: {Path(source).name if source.endswith('.safetensors') else source}",
                 fontsize=9)
    save_figure(fig, out / "reconstructions.png")
    return {"corruption": cfg.figure_corruption, "image_index": cfg.figure_image,
            "class": int(label), "class_name": test_ds.classes[label],  # type: ignore[attr-defined]
            "lacs": source, "files": files, "figure": "reconstructions.png"}


def markdown_table(results: dict) -> str:
    """The indicators per severity (mean over corruptions), normalised values, and the
    accuracy of every corruption × severity."""
    cfg = results["config"]
    lines = [f"# OOD geometry — {results['encoder']['name']}, {cfg['dataset']}, {cfg['size']} px", "",
             f"C = {results['channels']}, CovVol subset k = {results['k']} (chosen on clean train "
             f"features), ridge λ = {results['ridge']:.3g}, MMD bandwidth h = {results['bandwidth']:.4g} "
             f"({results['mmd_convention']}). n_train = {results['dataset']['n_train']}, n_test = "
             f"{results['dataset']['n_test']}; corruptions applied with spatial scale "
             f"{results['spatial_scale']:.3f}.", "",
             "Mean over corruptions:", "",
             "| severity | accuracy % | log det Σ_S | effective rank | trace | MMD² |",
             "|---|---|---|---|---|---|"]
    for r in results["mean_over_corruptions"]:
        lines.append(f"| {r['severity']} | {100 * r['accuracy']:.2f} | {r['logdet_subset']:.2f} | "
                     f"{r['effective_rank']:.2f} | {r['trace']:.4g} | {r['mmd2']:.3e} |")
    lines += ["", "Controls (docs/method.md §9): the scale-free log det of the correlation matrix on "
                  "the CovVol subset, the mean activation norm ‖g‖, and the mean over "
                  f"{results['config'].get('random_subsets', 0)} random subsets of the same size "
                  "(the CovVol subset maximises the clean log det; a random one is not selected):", "",
              "| severity | log det corr Σ_S | mean ‖g‖ | log det Σ_random | log det corr Σ_random |",
              "|---|---|---|---|---|"]
    for r in results["mean_over_corruptions"]:
        if "mean_norm" in r:
            lines.append(f"| {r['severity']} | {r['logdet_corr_subset']:.2f} | {r['mean_norm']:.3f} | "
                         f"{r['logdet_random_subset']:.2f} | {r['logdet_corr_random_subset']:.2f} |")
    lines += ["", "Normalised to severity 0 (Figure 4(d)):", "",
              "| severity | accuracy | volume (geo-mean axis ratio) | effective rank | trace | "
              "MMD² / max |", "|---|---|---|---|---|---|"]
    for r in results["normalised"]:
        lines.append(f"| {r['severity']} | {r['accuracy']:.3f} | {r['volume']:.3f} | "
                     f"{r['effective_rank']:.3f} | {r['trace']:.3f} | {r['mmd2_over_max']:.3f} |")
    sev = [r["severity"] for r in results["mean_over_corruptions"]]
    lines += ["", "Accuracy (%) per corruption:", "",
              "| corruption | " + " | ".join(f"s{s}" for s in sev) + " |", "|---" * (len(sev) + 1) + "|"]
    for name, rows in results["per_corruption"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * r['accuracy']:.1f}" for r in rows) + " |")
    lines += ["", "Effective rank per corruption:", "",
              "| corruption | " + " | ".join(f"s{s}" for s in sev) + " |", "|---" * (len(sev) + 1) + "|"]
    for name, rows in results["per_corruption"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r['effective_rank']:.1f}" for r in rows) + " |")
    if results.get("figure_4c"):
        f = results["figure_4c"]
        lines += ["", f"Figure 4(c): reconstructions.png — {f['corruption']}, test image "
                      f"{f['image_index']} (class {f['class_name']}), LACs: {f['lacs']}."]
    t = results["seconds"]
    lines += ["", "Wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + "."]
    return "\n".join(lines) + "\n"


_CURVES = (("accuracy", "accuracy", "o-"), ("volume", "volume exp(Δlog det/k)", "s-"),
           ("effective_rank", "effective rank", "^-"), ("trace", "trace", "d-"))


def _plot_norm(ax: object, norm: list[dict], legend: bool) -> None:
    sev = [r["severity"] for r in norm]
    for key, label, style in _CURVES:
        ax.plot(sev, [r[key] for r in norm], style, label=label, ms=4)  # type: ignore[attr-defined]
    ax.set_xlabel("severity")  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
    ax2 = ax.twinx()  # type: ignore[attr-defined]
    ax2.plot(sev, [r["mmd2_over_max"] for r in norm], "k--", label="MMD² / max", ms=4)
    ax2.set_ylim(-0.05, 1.05)
    if legend:
        h1, l1 = ax.get_legend_handles_labels()  # type: ignore[attr-defined]
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")  # type: ignore[attr-defined]


def plot_geometry(results: dict, path: Path) -> Path:
    """Figure 4(d): normalised indicators vs severity, mean over corruptions."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    _plot_norm(ax, results["normalised"], legend=True)
    ax.set_ylabel("relative to severity 0")
    ax.set_title(f"OOD geometry — {results['encoder']['name']}, {results['config']['dataset']} "
                 f"(mean of {len(results['per_corruption'])} corruptions)", fontsize=9)
    return save_figure(fig, path)


def plot_per_corruption(results: dict, path: Path) -> Path:
    """The same curves for each corruption (small multiples)."""
    plt = pyplot()
    names = list(results["per_corruption"])
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        _plot_norm(ax, normalise(results["per_corruption"][name], results["k"]), legend=(i == 0))
        ax.set_title(name, fontsize=9)
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- CLI
EPILOG = """examples:
  adjinv experiment ood --out runs/ood                     # embedded default (LFW faces), 15 x 5
  adjinv experiment ood --corruptions gaussian_noise fog --severities 1 3 5 --out runs/ood-quick
  adjinv experiment ood --dataset cifar100:data/ --size 224 --lac my.lac.safetensors --out runs/c100
"""


def _figure_only(cfg: OODConfig, out: Path, *, log: Log = quiet_log) -> dict:
    """``--figure-only``: [`run_ood_figure()`][run_ood_figure], refused with ``--no-figure``."""
    if not cfg.figure:
        raise AdjinvError("--figure-only and --no-figure contradict each other")
    return run_ood_figure(cfg, out, log=log)


RUNNERS = (Runner(
    "ood", OODConfig, run_ood,
    help="accuracy and covariance geometry vs corruption severity (Figure 4(c)-(d))",
    description="Per corruption and severity: probe accuracy, log det of the clean CovVol "
                "subset, effective rank, trace and MMD² to clean features; plus class-directional "
                "reconstructions of one image at increasing severity.",
    epilog=EPILOG, outputs=("results.json", "table.md", "figures"), distributed=True,
    variants=(Variant("--figure-only", "only Figure 4(c): probe on clean train features, "
                      "reconstructions.png and figure_4c.json (results.json untouched)", _figure_only,
                      ("reconstructions.png", "figure_4c.json")),)),)
