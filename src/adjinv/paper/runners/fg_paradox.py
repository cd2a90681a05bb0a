"""Sec. 3.2.1 / C.2: the foreground-energy paradox, re-measured with controls.

Per image: ``FG`` (Eq. 95) of ``x̂^(k)``, ``x̂^(k)_+``, ``x̂^(k)_-`` (Eq. 12, ``k`` the
encoder's top-1 class unless fixed) and the mask's area ratio; over images, means
with 95 % bootstrap intervals over source photos and the paper's observations as
measured numbers: ``O1 = |FG+ − FG−|``, ``O2 = FG_full − max(FG+, FG−)`` (per image,
then averaged), ``O3``: ``O2`` per encoder in the order given. Every number is reported
three ways (docs/method.md §15): on the raw reconstructions, on per-RGB zero-mean ones
(which removes the ``(Σ_± α) β_pix`` terms exactly) and with the ``Ψ(0)`` direction
projected out. Beside each, the controls of [`adjinv.methods.controls`][adjinv.methods.controls]: seed-zero,
swapped-seed (partners a derangement by source photo / class), model randomisation
and the shuffled head (``W_k`` permuted across channels; a random row of the same
norm). The runner reports what it measures; whether O1 is small or O2 positive is for
the numbers to say.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core.inverter import AdjointInverter
from ...core.lac import LACBank
from ...distributed import barrier, is_main, share_work
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_json, atomic_write_text
from ...methods.class_directional import (
    MODES,
    class_directional_inversion,
    class_directional_weights,
    foreground_energy,
    mask_area_ratio,
)
from ...methods.controls import (
    HEAD_CONTROLS,
    nan_to_none,
    partner_derangement,
    randomization_levels,
    randomized_encoder,
    seed_zero,
    shuffled_head_weights,
    swapped_class_directional,
)
from ...viz.display import robust_minmax
from ..analysis.superposition import VARIANTS, centre_rgb, lac_pix_floor, variants
from ..data.masks import MaskedDataset, open_masked
from .common import Log, environment, pyplot, quiet_log, save_figure
from .interference_common import (
    BIAS_NOTE,
    CONTROLS_NOTE,
    ImageCache,
    bootstrap_ci,
    fmt,
    fmt_ci,
    iter_with_bar,
    lac_digest,
    model_with_lacs,
    parse_levels,
    tensor_digest,
)
from .probe_head import HEADS, probe_encoder
from .skeleton import Runner, option


@dataclass
class FGParadoxConfig:
    """What ``adjinv experiment fg-paradox`` measures."""

    encoders: list[str] = option(["efficientnet_lite0"], "registry name, repeatable", flag="--encoder",
        append=True)
    weights: str | None = option(None, "local encoder state dict (single encoder)")
    lac: str | None = option(None, "LAC checkpoint or bundled variant name (default: bundled, else identity "
        "with a warning)")
    random_init: bool = option(False, "allow an untrained encoder (testing only)")
    data: str = option("composites", "composites (embedded, default), cub:ROOT, oxford_pet:ROOT, "
        "masks:IMAGES_DIR:MASKS_DIR")
    split: str = option("test", "dataset split", choices=["train", "test"])
    size: int = option(96, "image side in px")
    max_images: int | None = option(None, "use the first N images")
    mode: str = option("contribution", "class weighting α (default contribution = W·g)", choices=MODES)
    target: int | None = option(None, "fixed class k (default: top-1 per image)", flag="--class")
    randomize: list = option([1, 3], "stage counts to re-initialise from the top (integers or 'all')",
        parse=parse_levels)
    seed: int = option(0, "swapped seeds, controls, bootstrap")
    n_boot: int = option(2000, "bootstrap resamples of the intervals")
    chunk_size: int | None = option(None, "channels per batched cascade pass")
    head: str = option("encoder", "classifier: the encoder's own (ImageNet) head (default), or 'probe': a "
        "linear probe trained on the dataset's training split first (C.2; composites: the 'probe' "
        "subset, never a scored image)", choices=HEADS)


def _fg(x: torch.Tensor | None, mask: torch.Tensor) -> float | None:
    if x is None or float(x.pow(2).sum()) == 0:
        return None
    return float(foreground_energy(x, mask)[0])


def _trio(full: torch.Tensor | None, pos: torch.Tensor | None, neg: torch.Tensor | None,
          mask: torch.Tensor) -> dict:
    f, p, n = _fg(full, mask), _fg(pos, mask), _fg(neg, mask)
    d: dict[str, float | None] = {"full": f, "pos": p, "neg": n, "O1": None, "O2": None}
    if f is not None and p is not None and n is not None:
        d["O1"] = abs(p - n)
        d["O2"] = f - max(p, n)
    return d


def _trios(full: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, psi0: torch.Tensor,
           mask: torch.Tensor) -> dict:
    """FG, O1, O2 on the raw, per-RGB zero-mean and Ψ(0)-projected reconstructions
    (docs/method.md §15); ``psi0_projected`` is all None when ``Ψ(0) = 0``."""
    vf, vp, vn = variants(full, psi0), variants(pos, psi0), variants(neg, psi0)
    return {v: _trio(vf[v], vp[v], vn[v], mask) for v in VARIANTS}


def measure_image(inv: AdjointInverter, randomized: dict[int, AdjointInverter], x: torch.Tensor,
                  partner: torch.Tensor, mask: torch.Tensor, cfg: FGParadoxConfig,
                  keep: bool = False) -> tuple[dict, dict]:
    """One image's FG numbers and controls, each on the raw, zero-mean and Ψ(0)-projected
    reconstructions; ``keep``: also return the reconstructions."""
    enc = inv.encoder
    chosen: dict[str, torch.Tensor] = {}

    def weights(acts: list[torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
        k_ = logits.argmax(1) if cfg.target is None else \
            torch.as_tensor(cfg.target, device=logits.device).long().expand(logits.shape[0])
        chosen["k"] = k_
        sets = dict(class_directional_weights(enc, acts[-1], k_, cfg.mode))
        for kind in HEAD_CONTROLS:
            sh = shuffled_head_weights(enc, acts[-1], k_, kind, cfg.mode, cfg.seed)
            sets.update({f"{kind}:{q}": v for q, v in sh.items()})
        return sets

    res = inv.invert(x, stages=[], extra_weights=weights)
    ex = res.extra
    k = int(chosen["k"][0])
    z = seed_zero(inv, x)
    rec: dict = {"class": k, "class_name": enc.class_name(k),
                 "area_ratio": float(mask_area_ratio(mask)),
                 "measured": _trios(ex["class"], ex["class+"], ex["class-"], z, mask)}
    for kind in HEAD_CONTROLS:
        rec[f"head_{kind}"] = _trios(ex[f"{kind}:class"], ex[f"{kind}:class+"],
                                     ex[f"{kind}:class-"], z, mask)
    alpha = res.extra_weights["class"]
    rec["seed_zero"] = {"fg": _fg(z, mask),
                        "energy_ratio": nan_to_none(z.pow(2).sum() / ex["class"].pow(2).sum()
                                                    .clamp_min(1e-300) * alpha.sum() ** 2),
                        "uniform": bool(float(centre_rgb(z).abs().max()) <= 1e-6 * float(
                            z.abs().max().clamp_min(1e-30)))}
    sw = swapped_class_directional(inv, x, partner, k, cfg.mode)
    rec["swapped_seed"] = _trios(sw.x_class, sw.x_pos, sw.x_neg, z, mask)
    rec["randomized"] = {}
    shown = {"x̂": ex["class"], "x̂+": ex["class+"], "x̂−": ex["class-"], "seed-zero": z,
             "x̂ zero-mean": centre_rgb(ex["class"]), "swapped x̂": sw.x_class}
    for n, inv_r in randomized.items():
        try:
            cr = class_directional_inversion(inv_r, x, target=k, mode=cfg.mode)
            rec["randomized"][str(n)] = _trios(cr.x_class, cr.x_pos, cr.x_neg, seed_zero(inv_r, x), mask)
            shown[f"random top{n} x̂"] = cr.x_class
        except AdjinvError as e:
            empty = {"full": None, "pos": None, "neg": None, "O1": None, "O2": None}
            rec["randomized"][str(n)] = {**{v: dict(empty) for v in VARIANTS}, "error": str(e)}
    return rec, (shown if keep else {})


ROWS = ("measured", "head_permuted", "head_random", "swapped_seed")
QUANTITIES = ("full", "pos", "neg", "O1", "O2")


def _summary(recs: list[dict], levels: list[int], cfg: FGParadoxConfig) -> dict:
    groups = [r["group"] for r in recs]

    def ci(vals: list) -> dict:
        return bootstrap_ci(vals, cfg.n_boot, cfg.seed, groups=groups)

    def trios(get: object) -> dict:
        return {v: {q: ci([get(r)[v].get(q) for r in recs]) for q in QUANTITIES}  # type: ignore[operator]
                for v in VARIANTS}

    out: dict = {"area_ratio": ci([r["area_ratio"] for r in recs]),
                 "seed_zero": {"fg": ci([r["seed_zero"]["fg"] for r in recs]),
                               "undefined": sum(r["seed_zero"]["fg"] is None for r in recs),
                               "uniform": sum(bool(r["seed_zero"].get("uniform")) for r in recs)},
                 "randomized": {str(n): trios(lambda r, n=n: r["randomized"][str(n)]) for n in levels}}
    for row in ROWS:
        out[row] = trios(lambda r, row=row: r[row])
    return out


def run_encoder(enc: StagedEncoder, lacs: LACBank, lac_source: str, ds: MaskedDataset,
                cfg: FGParadoxConfig, out: Path, log: Log) -> dict | None:
    """Every image of ``ds`` through one encoder; per-image records cached under ``out/cache``.
    Under ``torchrun`` the ranks share the images (filling the cache) and only rank 0
    aggregates; the other ranks return None."""
    t0 = time.perf_counter()
    levels = randomization_levels(cfg.randomize, enc.num_stages)
    inv = AdjointInverter(enc, lacs, chunk_size=cfg.chunk_size)
    randomized = {n: AdjointInverter(randomized_encoder(enc, n, cfg.seed), lacs,
                                     chunk_size=cfg.chunk_size) for n in levels}
    n = len(ds) if cfg.max_images is None else min(len(ds), cfg.max_images)
    if n < 2:
        raise AdjinvError("fg-paradox needs at least two images (the swapped-seed control "
                          "takes its seeds from another image)")
    items = [ds[i] for i in range(n)]
    partners, rule = partner_derangement([it.label for it in items])
    cache = ImageCache(out / "cache")
    base = {"v": 2, "encoder": enc.name, "weights": enc.weights_hash(), "lacs": lac_digest(lacs),
            "size": cfg.size, "mode": cfg.mode, "target": cfg.target, "levels": levels,
            "seed": cfg.seed}

    def key_of(i: int) -> dict:
        it, partner = items[i], items[partners[i]]
        return {**base, "image": tensor_digest(it.image, it.mask), "partner": tensor_digest(partner.image)}

    def fill(i: int) -> None:
        """Measure image ``i`` into the cache unless it is there."""
        key = key_of(i)
        if cache.get(key) is None:
            it, partner = items[i], items[partners[i]]
            rec, _ = measure_image(inv, randomized, enc.normalize(it.image)[None],
                                   enc.normalize(partner.image)[None], it.mask, cfg, keep=False)
            cache.put(key, {**rec, "name": it.name})

    # image 0 is measured again by the aggregation below (for the example figure)
    if not share_work(list(range(1, n)), fill):
        return None
    recs, computed, example = [], 0, {}
    for i in iter_with_bar(list(range(n)), f"fg-paradox {enc.name}"):
        it, partner = items[i], items[partners[i]]
        key = key_of(i)
        rec = cache.get(key)
        first = i == 0
        if rec is None or first:
            x = enc.normalize(it.image)[None]
            xp = enc.normalize(partner.image)[None]
            new, shown = measure_image(inv, randomized, x, xp, it.mask, cfg, keep=first)
            if rec is None:
                rec, computed = new, computed + 1
                cache.put(key, {**rec, "name": it.name})
            if first:
                example = {"image": it.image, "mask": it.mask, "shown": shown, "name": it.name}
        rec["name"], rec["group"], rec["partner"] = it.name, it.label, partner.name
        recs.append(rec)
    log(f"  {enc.name}: {n} images ({computed} computed, {n - computed} from cache)")
    summ = _summary(recs, levels, cfg)
    if example:
        fn = f"example_{enc.name}.png"
        plot_example(example, out / fn)
        summ["example_figure"] = fn
    floor = lac_pix_floor(lacs.pix.gamma, lacs.pix.beta)
    return {"encoder": enc.name, "lacs": lac_source, "randomize_levels": levels,
            "partner_rule": rule, "lac_pix": {"gamma": lacs.pix.gamma.detach().tolist(),
                                              "beta": lacs.pix.beta.detach().tolist(), **floor},
            "summary": summ, "images": recs, "seconds": round(time.perf_counter() - t0, 2)}


def run_fg_paradox(cfg: FGParadoxConfig, out: str | Path, *, log: Log = quiet_log,
                   encoders: list[StagedEncoder] | None = None,
                   lacs: list[LACBank] | None = None) -> dict:
    """The whole experiment: ``results.json``, ``table.md``, ``fg.png`` and one example figure
    per encoder in ``out``. ``encoders``/``lacs``: objects instead of registry names."""
    t0 = time.perf_counter()
    out = Path(out)
    if cfg.mode not in MODES:
        raise AdjinvError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.head not in HEADS:
        raise AdjinvError(f"head must be one of {HEADS}, got {cfg.head!r}")
    ds = open_masked(cfg.data, cfg.split, cfg.size)
    shares: list[dict | None] = []

    def run_one(enc: StagedEncoder, bank: LACBank, src: str) -> dict | None:
        """One encoder with its own head or, ``head="probe"``, the dataset's probe (C.2)."""
        head: dict = {"head": "encoder"}
        if cfg.head == "probe":
            enc, head = probe_encoder(enc, cfg.data, cfg.size, scored=ds, log=log)
        rec = run_encoder(enc, bank, src, ds, cfg, out, log)
        return None if rec is None else {**rec, "head": head}

    if encoders is None:
        if not cfg.encoders:
            raise AdjinvError("give at least one encoder")
        for name in cfg.encoders:
            shares.append(run_one(*model_with_lacs(name, cfg.weights, cfg.random_init, cfg.lac, log)))
    else:
        for j, enc in enumerate(encoders):
            _, bank, src = model_with_lacs("", None, False, None, log, enc,
                                           lacs[j] if lacs is not None else None)
            shares.append(run_one(enc, bank, src))
    if not is_main():  # under torchrun: wait for rank 0's results.json
        barrier()
        return json.loads((out / "results.json").read_text())
    per = [p for p in shares if p is not None]
    o3 = [{"encoder": p["encoder"], "O2": p["summary"]["measured"]["raw"]["O2"],
           "O2_zero_mean": p["summary"]["measured"]["zero_mean"]["O2"]} for p in per]
    means = [o["O2"]["mean"] for o in o3]
    mono = None
    if len(means) > 1 and None not in means:
        mono = all(b > a for a, b in zip(means, means[1:], strict=False))
    results = {
        "experiment": "fg-paradox (Sec. 3.2.1, C.2)",
        "dataset": ds.describe(), "n_images": len(per[0]["images"]), "config": asdict(cfg),
        "definitions": {
            "FG": "sum_{p in M, rgb} x^2 / sum_{p, rgb} x^2 on the raw reconstruction (Eq. 95)",
            "O1": "|FG(x+) - FG(x-)| per image, averaged", "O2": "FG(x) - max(FG(x+), FG(x-)) per "
            "image, averaged", "O3": "O2 per encoder in the order given; 'increasing' says whether it "
            "rises along that order (the paper orders by capacity)",
            "variants": "raw: x as synthesised; zero_mean: each RGB channel minus its spatial mean "
                        "(removes (sum alpha) beta_pix exactly); psi0_projected: the component along "
                        "Psi_L(0) removed (null when Psi_L(0) = 0)",
            "head_permuted": "alpha from W_k permuted across channels (one permutation per run)",
            "head_random": "alpha from a Gaussian row with the norm of W_k (one draw per run)",
            "intervals": f"95% percentile bootstrap over source photos / classes (whole groups "
                         f"resampled), {cfg.n_boot} resamples, seed {cfg.seed}",
        },
        "controls": CONTROLS_NOTE + BIAS_NOTE,
        "encoders": per,
        "O3": {"per_encoder": o3, "increasing": mono},
        "environment": environment(),
    }
    results["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", table(results))
    plot_bars(results, out / "fg.png")
    barrier()  # under torchrun the other ranks wait for results.json
    return results


# ----------------------------------------------------------------------------- output
ROW_LABELS = {"measured": "measured", "head_permuted": "head permuted across channels",
              "head_random": "random head, matched row norm", "swapped_seed": "swapped-seed"}
VARIANT_LABELS = {"raw": "raw x̂", "zero_mean": "per-RGB zero-mean x̂",
                  "psi0_projected": "Ψ(0) direction projected out"}


def encoder_table(p: dict) -> list[str]:
    """One encoder's FG table: every row × the three variants (docs/method.md §15)."""
    s = p["summary"]
    lines = ["| reconstruction | variant | FG(x̂) | FG(x̂+) | FG(x̂−) | O1 | O2 |",
             "|---|---|---|---|---|---|---|"]
    rows = [(ROW_LABELS[r], s[r]) for r in ROWS]
    rows += [(f"random top {n}", v) for n, v in s["randomized"].items()]
    for name, t in rows:
        for v in VARIANTS:
            q = t[v]
            lines.append(f"| {name} | {VARIANT_LABELS[v]} | {fmt_ci(q['full'])} | {fmt_ci(q['pos'])} "
                         f"| {fmt_ci(q['neg'])} | {fmt_ci(q['O1'])} | {fmt_ci(q['O2'])} |")
    sz = s["seed_zero"]
    lines += [f"| seed-zero Ψ(0) (all three, raw) | | {fmt_ci(sz['fg'])} | | | | |"]
    return lines


def head_lines(p: dict) -> list[str]:
    """What classified the images: the encoder's own head or the per-dataset probe (C.2)."""
    h = p.get("head", {"head": "encoder"})
    if h.get("head") != "probe":
        return []
    acc = h.get("scored_accuracy")
    sp = h["split"]
    return [f"Head: a linear probe (C.2) trained on {h['n_train']} images of `{sp['dataset']}`"
            + (f" subset `{sp['subset']}`" if "subset" in sp else "")
            + f" ({len(h['classes'])} classes: {', '.join(h['classes'])}), none of them scored; "
            f"accuracy on its training split {h['train_accuracy']:.3f}"
            + (f", on the scored images {acc:.3f}" if acc is not None else "") + ".", ""]


def table(results: dict) -> str:
    """The Markdown summary."""
    lines = [f"# Foreground-energy paradox — {results['dataset']['dataset']}, "
             f"{results['n_images']} images, {results['dataset']['size']} px", ""]
    for p in results["encoders"]:
        s = p["summary"]
        lp = p.get("lac_pix", {})
        lines += [f"## {p['encoder']} (LACs: {p['lacs']}; {p['seconds']:.0f} s)", "",
                  f"Mask area ratio {fmt_ci(s['area_ratio'])}. Swapped-seed partners: "
                  f"{p.get('partner_rule', 'next image')}. LAC_pix bias share of every φ_c's energy "
                  f"‖b‖²/(‖b‖²+‖s‖²) = {fmt(lp.get('bias_share'))}.", ""]
        lines += head_lines(p) + encoder_table(p)
        sz = s["seed_zero"]
        lines += ["", f"seed-zero undefined (Ψ_L(0) = 0) for {sz['undefined']} image(s); a uniform "
                      f"image (per RGB) for {sz.get('uniform', 0)}.", ""]
    o3 = results["O3"]
    lines += ["O3 (O2 per encoder, raw): " + ", ".join(f"{o['encoder']} {fmt(o['O2']['mean'])}"
                                                        for o in o3["per_encoder"])
              + (f"; increasing along the given order: {o3['increasing']}" if o3["increasing"]
                 is not None else ""), "", "Controls:", ""]
    lines += [f"- {c}" for c in results["controls"]]
    return "\n".join(lines) + "\n"


def plot_bars(results: dict, path: Path) -> Path:
    """Mean FG with 95 % intervals per reconstruction and control, one panel per encoder."""
    plt = pyplot()
    n = len(results["encoders"])
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 3.6), squeeze=False)
    for ax, p in zip(axes[0], results["encoders"], strict=True):
        s = p["summary"]
        bars = [("area", s["area_ratio"])]
        bars += [(f"meas. {q}", s["measured"]["raw"][q]) for q in ("pos", "neg", "full")]
        bars += [("seed-0", s["seed_zero"]["fg"])]
        bars += [(f"swap {q}", s["swapped_seed"]["raw"][q]) for q in ("pos", "neg", "full")]
        for lv, t in s["randomized"].items():
            bars += [(f"rnd{lv} {q}", t["raw"][q]) for q in ("pos", "neg", "full")]
        xs = range(len(bars))
        m = [b[1]["mean"] if b[1]["mean"] is not None else 0 for b in bars]
        lo = [b[1]["lo"] if b[1]["lo"] is not None else mm for mm, b in zip(m, bars, strict=True)]
        hi = [b[1]["hi"] if b[1]["hi"] is not None else mm for mm, b in zip(m, bars, strict=True)]
        err = [[max(0, a - c) for a, c in zip(m, lo, strict=True)],
               [max(0, c - a) for a, c in zip(m, hi, strict=True)]]
        ax.bar(xs, m, yerr=err, capsize=2, color=["grey"] + ["C0"] * 3 + ["k"] + ["C1"] * 3
               + ["C2"] * (len(bars) - 8))
        ax.set_xticks(list(xs), [b[0] for b in bars], rotation=70, fontsize=7)
        ax.set_ylabel("foreground energy FG")
        ax.set_ylim(0, 1)
        ax.set_title(f"{p['encoder']} (LACs: {p['lacs']})", fontsize=8)
    return save_figure(fig, path)


def plot_example(example: dict, path: Path) -> Path:
    """The first image: input with its mask outline, then every reconstruction (robust min-max)."""
    plt = pyplot()
    shown = example["shown"]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(2.0 * (len(shown) + 1), 2.3))
    axes[0].imshow(example["image"].permute(1, 2, 0).numpy())
    axes[0].contour(example["mask"].numpy().astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
    axes[0].set_title(example["name"], fontsize=7)
    for ax, (t, img) in zip(axes[1:], shown.items(), strict=True):
        ax.imshow(robust_minmax(img[0].detach().float().cpu()).permute(1, 2, 0).numpy())
        ax.set_title(t, fontsize=8)
    for ax in axes:
        ax.axis("off")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- CLI
EPILOG = """examples:
  adjinv experiment fg-paradox --out runs/fg                  # embedded composites, Lite0, 96 px
  adjinv experiment fg-paradox --data cub:data/CUB_200_2011 --encoder resnet18 \\
      --encoder resnet50 --size 224 --lac r18.lac.safetensors --out runs/fg-cub
  adjinv experiment fg-paradox --data oxford_pet:data/pets --max-images 200 --out runs/fg-pet
  adjinv experiment fg-paradox --data masks:my/images:my/masks --randomize 1 2 all --out runs/fg-mine
A second run with the same --out reuses every finished image (out/cache).
"""


RUNNERS = (Runner(
    "fg-paradox", FGParadoxConfig, run_fg_paradox,
    help="foreground energy of x̂, x̂+, x̂− with controls (Sec. 3.2.1)",
    description="FG (Eq. 95) of the class-directional reconstruction and its sign hemispheres "
                "(Eq. 12) per image, with seed-zero, swapped-seed and model-randomisation "
                "controls; O1, O2, O3 as measured numbers.",
    epilog=EPILOG, outputs=("results.json", "table.md", "fg.png"), distributed=True),)
