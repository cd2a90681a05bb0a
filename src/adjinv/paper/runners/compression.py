"""``adjinv experiment compression``: channel selection vs linear-probe accuracy
(Sec. 3.2.5 Findings 1–2, Tables 4–5; docs/method.md §8).

Protocol: GAP features of the deepest stage on the in-distribution train/test
split; for each pruning ratio ``p`` keep ``k = ⌈(1−p)·C⌉`` channels chosen by
CovVol (greedy log-det on the train covariance with a ridge), Energy (top-k
mean ``g_c²``) or Random (``random_seeds`` seeds, mean ± std); train a linear
probe on the kept channels of the train split; report its accuracy on the test
split and on every shifted set (same labels: on-the-fly corruptions or
CIFAR-100-C).

[choice] Transfer sets (``transfer``: Stanford Dogs, Oxford-IIIT Pet, …) have
their own labels: the channels are still chosen on the in-distribution train
covariance, and a new probe is trained on the transfer set's train split and
tested on its test split — so the table shows whether a selection made on one
distribution carries to another. The paper does not say where it selected
channels for its cross-dataset table.

Outputs in ``out/``: ``results.json``, ``table.md``, ``accuracy.png`` (+ the
feature cache in ``out/cache`` unless ``cache_dir`` says otherwise).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_json, atomic_write_text
from ..analysis.covvol import covariance_volume_select, energy_select, keep_count, random_select
from ..analysis.geometry import covariance, effective_rank
from ..data.datasets import ImageDataset, first_per_class, open_dataset, open_shifted
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
)
from .skeleton import Runner, option

SELECTORS = ("covvol", "energy", "random")
ID_SET = "in-distribution"


@dataclass
class CompressionConfig:
    """Settings of the compression runner (JSON keys = field names)."""

    encoder: str = option("efficientnet_lite0", "registry name")
    weights: str | None = option(None, "local encoder state dict")
    random_init: bool = option(False, "allow an untrained encoder (testing only)")
    dataset: str = option("lfw", "lfw (embedded, default) or cifar100:ROOT, stanford_dogs:ROOT, "
        "oxford_pet:ROOT, imagefolder:ROOT")
    shifts: list[str] = option(["corrupt:all:3"], "shifted test set with the same labels, repeatable: "
        "corrupt:NAME|all:SEVERITY or cifar100c:ROOT[:NAME[:SEVERITY]]", flag="--shift", append=True,
        clear=("--no-shift", "evaluate in-distribution only"))
    transfer: list[str] = option([], "another dataset with its own labels, repeatable", append=True)
    size: int = option(96, "image side in px")
    prune_ratios: list[float] = option([0.0, 0.5, 0.8, 0.9, 0.95, 0.98], "pruning ratios in [0, 1)",
        flag="--prune")
    random_seeds: int = option(50, "seeds for the Random selector")
    ridge_rel: float = option(1e-6, "ridge as a fraction of the mean channel variance")
    weight_decay: float = option(1e-3, "probe L2 penalty")
    max_iter: int = option(200, "probe optimiser iterations")
    spatial_scale: float | None = option(None, "corruption pixel-size scale (default size/224)")
    max_images: int | None = option(None, "use at most N images per split (quick runs)")
    batch_size: int = option(64, "images per feature batch")
    seed: int = option(0, "data split, corruptions, Random selector")
    cache_dir: str | None = option(None, "feature cache folder (default OUT/cache)")

    def validate(self) -> None:
        """Reject impossible settings with a message."""
        if not self.prune_ratios or any(not 0 <= p < 1 for p in self.prune_ratios):
            raise AdjinvError(f"prune_ratios must lie in [0, 1), got {self.prune_ratios}")
        if self.random_seeds < 1:
            raise AdjinvError("random_seeds must be at least 1")
        if self.ridge_rel < 0:
            raise AdjinvError("ridge_rel must be >= 0")


def _limit(ds: ImageDataset, n: int | None) -> ImageDataset:
    return first_per_class(ds, n) if n is not None and n < len(ds) else ds


def _probe_all(train: tuple[torch.Tensor, torch.Tensor],
               tests: dict[str, tuple[torch.Tensor, torch.Tensor]], channels: torch.Tensor,
               num_classes: int, pcfg: ProbeConfig, memo: dict) -> dict[str, float]:
    ch = torch.sort(channels).values  # the probe does not depend on the channel order
    key = (id(train[0]), tuple(ch.tolist()))
    if key not in memo:
        probe = LinearProbe(num_classes, pcfg).fit(train[0][:, ch], train[1])
        memo[key] = {n: probe.accuracy(x[:, ch], y) for n, (x, y) in tests.items()}
    return memo[key]


def _rows(train: tuple[torch.Tensor, torch.Tensor], tests: dict[str, tuple[torch.Tensor, torch.Tensor]],
          orders: dict[str, torch.Tensor], cfg: CompressionConfig, num_classes: int, log: Log
          ) -> list[dict]:
    c = train[0].shape[1]
    pcfg = ProbeConfig(weight_decay=cfg.weight_decay, max_iter=cfg.max_iter, seed=cfg.seed)
    memo: dict = {}
    rows = []
    for p in cfg.prune_ratios:
        k = keep_count(c, p)
        t0 = time.perf_counter()
        row: dict = {"prune": p, "k": k}
        for sel in ("covvol", "energy"):
            row[sel] = _probe_all(train, tests, orders[sel][:k], num_classes, pcfg, memo)
        runs = [_probe_all(train, tests, random_select(c, k, cfg.seed * 100_003 + s), num_classes,
                           pcfg, memo) for s in range(cfg.random_seeds)]
        row["random"] = {}
        for name in tests:
            v = torch.tensor([r[name] for r in runs], dtype=torch.float64)
            row["random"][name] = {"mean": float(v.mean()),
                                   "std": float(v.std()) if v.numel() > 1 else 0.0,
                                   "values": v.tolist()}
        row["seconds"] = round(time.perf_counter() - t0, 3)
        log(f"  prune {100 * p:4.1f}% (k={k}): " + "; ".join(
            f"{n}: covvol {100 * row['covvol'][n]:.1f} energy {100 * row['energy'][n]:.1f} "
            f"random {100 * row['random'][n]['mean']:.1f}±{100 * row['random'][n]['std']:.1f}"
            for n in tests))
        rows.append(row)
    return rows


def run_compression(cfg: CompressionConfig, out: str | Path, *, encoder: StagedEncoder | None = None,
                    log: Log = quiet_log) -> dict:
    """Run the protocol and write ``results.json``, ``table.md`` and ``accuracy.png``
    to ``out``. ``encoder`` overrides ``cfg.encoder`` (library use)."""
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    with timer(times, "load_encoder"):
        enc = encoder if encoder is not None else load_named_encoder(
            cfg.encoder, cfg.weights, cfg.random_init, log)
    scale = cfg.spatial_scale if cfg.spatial_scale is not None else cfg.size / 224
    log(f"compression: encoder {enc.name}, dataset {cfg.dataset}, {cfg.size} px")

    with timer(times, "features"):
        train_ds = _limit(open_dataset(cfg.dataset, "train", cfg.size, cfg.seed), cfg.max_images)
        test_ds = _limit(open_dataset(cfg.dataset, "test", cfg.size, cfg.seed), cfg.max_images)
        ftr = features(enc, train_ds, "train", cache, cfg.batch_size, log)
        fte = features(enc, test_ds, "test", cache, cfg.batch_size, log)
        tests = {ID_SET: (fte.features, fte.labels)}
        shift_info = {}
        for spec in cfg.shifts:
            sets = open_shifted(spec, test_ds, cfg.size, seed=cfg.seed, spatial_scale=scale)
            fs = [features(enc, s, f"{spec} [{i + 1}/{len(sets)}]", cache, cfg.batch_size, log)
                  for i, s in enumerate(sets)]
            tests[spec] = (torch.cat([f.features for f in fs]), torch.cat([f.labels for f in fs]))
            shift_info[spec] = {"parts": len(sets), "images": int(tests[spec][1].numel())}
        transfer_feats = {}
        for spec in cfg.transfer:
            tr = _limit(open_dataset(spec, "train", cfg.size, cfg.seed), cfg.max_images)
            te = _limit(open_dataset(spec, "test", cfg.size, cfg.seed), cfg.max_images)
            transfer_feats[spec] = (features(enc, tr, f"{spec} train", cache, cfg.batch_size, log),
                                    features(enc, te, f"{spec} test", cache, cfg.batch_size, log),
                                    len(tr.classes))

    num_classes = len(train_ds.classes)
    g = ftr.features
    c = g.shape[1]
    with timer(times, "selection"):
        cov = covariance(g)
        ridge = relative_ridge(cov, cfg.ridge_rel)
        kmax = max(keep_count(c, p) for p in cfg.prune_ratios)
        cv = covariance_volume_select(cov, kmax, ridge=ridge)
        if cv.k < kmax:
            raise AdjinvError(f"CovVol stopped after {cv.k} channels ({cv.stopped}); "
                              "raise ridge_rel")
        orders = {"covvol": cv.order.cpu(), "energy": energy_select(g, kmax).cpu()}
        erank = effective_rank(cov)
    log(f"  C={c}, ridge λ={ridge:.3g}, clean effective rank {erank:.1f}, "
        f"dead channels {int((g.abs().sum(0) == 0).sum())}")

    with timer(times, "probes"):
        rows = _rows((ftr.features, ftr.labels), tests, orders, cfg, num_classes, log)
        transfer_rows = {}
        for spec, (f_tr, f_te, ncls) in transfer_feats.items():
            log(f" transfer {spec}:")
            transfer_rows[spec] = _rows((f_tr.features, f_tr.labels),
                                        {spec: (f_te.features, f_te.labels)}, orders, cfg, ncls, log)
    times["total"] = round(time.perf_counter() - t_all, 3)

    checkpoints = sorted({keep_count(c, p) for p in cfg.prune_ratios})
    results = {
        "experiment": "compression",
        "config": asdict(cfg),
        "encoder": {"name": enc.name, "weights_hash": enc.weights_hash()},
        "dataset": {"train": train_ds.describe(), "test": test_ds.describe(),
                    "classes": train_ds.classes, "n_train": len(train_ds), "n_test": len(test_ds)},
        "channels": c,
        "dead_channels_train": int((g.abs().sum(0) == 0).sum()),
        "ridge": ridge,
        "clean_effective_rank": erank,
        "spatial_scale": scale,
        "covvol": {"objective": cv.objective, "stopped": cv.stopped,
                   "logdet_at_k": {str(k): float(cv.logdet[k - 1]) for k in checkpoints},
                   "order_head": cv.order[:32].tolist()},
        "energy_order_head": orders["energy"][:32].tolist(),
        "shifts": shift_info,
        "eval_sets": list(tests),
        "rows": rows,
        "transfer": transfer_rows,
        "seconds": times,
        "environment": environment(),
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", markdown_table(results))
    plot_accuracy(results, out / "accuracy.png")
    log(f"wrote {out}/results.json, table.md, accuracy.png ({times['total']:.1f} s)")
    return results


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _table(rows: list[dict], sets: list[str]) -> list[str]:
    head = "| Prune % | k | " + " | ".join(f"{s}: {sel}" for s in sets
                                           for sel in ("CovVol", "Energy", "Random")) + " |"
    lines = [head, "|" + "---|" * (2 + 3 * len(sets))]
    for r in rows:
        cells = []
        for s in sets:
            rnd = r["random"][s]
            cells += [_pct(r["covvol"][s]), _pct(r["energy"][s]),
                      f"{_pct(rnd['mean'])} ± {_pct(rnd['std'])}"]
        lines.append(f"| {100 * r['prune']:g} | {r['k']} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(results: dict) -> str:
    """Table 4/5-style markdown: test accuracy (%) per pruning ratio, selector and set."""
    cfg = results["config"]
    lines = [f"# Compression: linear-probe accuracy (%) — {results['encoder']['name']}, "
             f"{cfg['dataset']}, {cfg['size']} px", "",
             f"C = {results['channels']} channels ({results['dead_channels_train']} dead on the train "
             f"split); n_train = {results['dataset']['n_train']}, n_test = "
             f"{results['dataset']['n_test']}; ridge λ = {results['ridge']:.3g}; clean effective "
             f"rank {results['clean_effective_rank']:.1f}; Random: mean ± std over "
             f"{cfg['random_seeds']} seeds.", ""]
    lines += _table(results["rows"], results["eval_sets"])
    for spec, rows in results["transfer"].items():
        lines += ["", f"Transfer set {spec} (channels chosen on {cfg['dataset']}, probe trained "
                      "on the transfer set's train split):", ""]
        lines += _table(rows, [spec])
    t = results["seconds"]
    lines += ["", f"Wall time: {t['total']:.1f} s (features {t['features']:.1f} s, selection "
                  f"{t['selection']:.1f} s, probes {t['probes']:.1f} s)."]
    return "\n".join(lines) + "\n"


def plot_accuracy(results: dict, path: Path) -> Path:
    """Accuracy vs pruning ratio, one panel per evaluation set (Random: mean ± std band)."""
    plt = pyplot()
    panels = [(s, results["rows"]) for s in results["eval_sets"]]
    panels += [(s, rows) for s, rows in results["transfer"].items()]
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels, strict=False):
        x = [100 * r["prune"] for r in rows]
        for sel, style in (("covvol", "o-"), ("energy", "s--")):
            ax.plot(x, [100 * r[sel][name] for r in rows], style, label=sel)
        m = [100 * r["random"][name]["mean"] for r in rows]
        sd = [100 * r["random"][name]["std"] for r in rows]
        ax.plot(x, m, "^:", label="random (mean)")
        lo = [a - b for a, b in zip(m, sd, strict=True)]
        hi = [a + b for a, b in zip(m, sd, strict=True)]
        ax.fill_between(x, lo, hi, alpha=0.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("pruning ratio (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Compression — {results['encoder']['name']}, C={results['channels']}", fontsize=10)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- CLI
EPILOG = """examples:
  adjinv experiment compression --out runs/compression            # embedded default (LFW faces)
  adjinv experiment compression --dataset cifar100:data/ --shift cifar100c:data/CIFAR-100-C \\
      --transfer stanford_dogs:data/dogs --transfer oxford_pet:data/pets --size 224 --out runs/c100
  adjinv experiment compression --config compression.json --out runs/mine
"""

RUNNERS = (Runner(
    "compression", CompressionConfig, run_compression,
    help="CovVol vs Energy vs Random channel selection (Tables 4-5)",
    description="Select k = ceil((1-p)C) GAP channels by covariance volume, energy or at "
                "random, train a linear probe, report test accuracy in- and out-of-distribution.",
    epilog=EPILOG, outputs=("results.json", "table.md", "accuracy.png")),)
