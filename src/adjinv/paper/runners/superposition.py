"""Sec. 3.2.2–3.2.3 / C.3–C.4: holographic superposition (H1), re-measured with controls.

Per image: the H1 statistics of docs/method.md §7 ([`
superposition_statistics()`][adjinv.paper.analysis.superposition.
superposition_statistics]) of the deepest stage's channel inversions ``φ_{L,c}`` for
the ``max_channels`` live channels of largest simplex weight [choice: a cap so the
runner finishes in minutes on a CPU; ``max_channels = 0`` takes every live channel],
averaged over images with bootstrap intervals; beside them the three controls.
Figure-3-style panels for the first image(s): (a) per-channel inversions from the
high-, mid- and low-weight thirds of the live channels; (b) the per-stage
reconstructions ``x̂_l`` with ``x̂^(k)``, ``x̂^(k)_+``, ``x̂^(k)_-``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core.inverter import AdjointInverter
from ...core.lac import LACBank
from ...core.simplex import simplex_measure
from ...distributed import barrier, share_work
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_json, atomic_write_text
from ...methods.class_directional import class_directional_weights
from ...methods.controls import (
    HEAD_CONTROLS,
    head_row,
    nan_to_none,
    partner_derangement,
    randomization_levels,
    randomized_encoder,
    seed_zero,
    shuffled_head_row,
    swapped_channel_inversions,
)
from ...viz.display import robust_minmax
from ..analysis.superposition import (
    VARIANTS,
    direction_cosine,
    interference_terms,
    lac_pix_floor,
    leading_direction,
    measured_floor,
    superposition_statistics,
    variants,
)
from ..data.masks import open_masked
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
from .skeleton import Runner, option

SCALARS = ("energy_fraction", "variance_before", "variance_after", "expansion")
H2_ROWS = ("measured", "head_permuted", "head_random")


@dataclass
class SuperpositionConfig:
    """What ``adjinv experiment superposition`` measures."""

    encoder: str = option("efficientnet_lite0", "registry name")
    weights: str | None = option(None, "local encoder state dict")
    lac: str | None = option(None, "LAC checkpoint or bundled variant name (default: bundled, else identity "
        "with a warning)")
    random_init: bool = option(False, "untrained encoder (tests)")
    data: str = option("composites", "composites (default), cub:ROOT, oxford_pet:ROOT, masks:IMAGES:MASKS")
    split: str = option("test", "dataset split", choices=["train", "test"])
    size: int = option(96, "image side in px")
    max_images: int | None = option(None, "use the first N images")
    max_channels: int = option(128, "top channels by simplex weight (0 = all live)")
    randomize: list = option([1, 3], "stage counts to re-initialise (integers or 'all')", parse=parse_levels)
    figure_images: int = option(1, "images with Figure-3 panels")
    panel_channels: int = option(4, "channels shown per Figure-3 panel")
    seed: int = option(0, "swapped seeds, controls, bootstrap")
    n_boot: int = option(2000, "bootstrap resamples of the intervals")
    chunk_size: int | None = option(None, "channels per batched cascade pass")


def top_channels(enc: StagedEncoder, x: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(channels, weights)``: live deepest-stage channels by descending simplex weight
    (at most ``cap``; 0 = all live)."""
    with torch.no_grad(), enc.frozen():
        w = simplex_measure(enc.forward_stages(x)[-1])[0]
    order = w.argsort(descending=True)
    order = order[w[order] > 0]
    return (order if cap <= 0 else order[:cap]), w


def _stats(phi: torch.Tensor) -> dict:
    s = superposition_statistics(phi).to_dict()
    return {k: (nan_to_none(v) if isinstance(v, float) else
                {q: nan_to_none(u) for q, u in v.items()} if isinstance(v, dict) else v)
            for k, v in s.items()}


def _variant_stats(phi: torch.Tensor, psi0: torch.Tensor, ref_u: dict[str, torch.Tensor] | None = None
                   ) -> tuple[dict, dict[str, torch.Tensor]]:
    """H1 statistics of ``phi`` raw, per-RGB zero-mean and Ψ(0)-projected (docs/method.md §15),
    and the leading direction of each; ``ref_u``: add ``cos_u`` against these directions."""
    out: dict = {}
    us: dict[str, torch.Tensor] = {}
    for v, f in variants(phi, psi0).items():
        if f is None:
            out[v] = None
            continue
        try:
            u, _ = leading_direction(f)
        except AdjinvError as e:
            out[v] = {"error": str(e)}
            continue
        us[v] = u
        out[v] = _stats(f)
        if ref_u is not None and v in ref_u:
            out[v]["cos_u"] = nan_to_none(direction_cosine(ref_u[v], u))
    return out, us


def _h2(phi: torch.Tensor, psi0: torch.Tensor, us: dict[str, torch.Tensor], alpha: torch.Tensor,
        sign: torch.Tensor) -> dict:
    out: dict = {}
    for v, f in variants(phi, psi0).items():
        if f is None or v not in us:
            out[v] = None
            continue
        out[v] = {q: nan_to_none(x) for q, x in interference_terms(f, alpha, sign, us[v]).items()}
    return out


def measure_image(inv: AdjointInverter, randomized: dict[int, AdjointInverter], x: torch.Tensor,
                  partner: torch.Tensor, cfg: SuperpositionConfig) -> dict:
    """One image's H1 statistics and controls, each raw, zero-mean and Ψ(0)-projected;
    H2 (B1, B2) for the encoder's head and the two shuffled heads; the bias floors."""
    enc = inv.encoder
    ch, _ = top_channels(enc, x, cfg.max_channels)
    if ch.numel() < 2:
        raise AdjinvError("fewer than two live channels at the deepest stage")
    phi = inv.channel_inversions(x, -1, ch)[0]
    z = seed_zero(inv, x)[0]
    meas, us = _variant_stats(phi, z)
    rec: dict = {"channels": int(ch.numel()), "measured": meas,
                 "floor": {"measured": nan_to_none(measured_floor(phi))}}
    with torch.no_grad(), enc.frozen():
        a_last = enc.forward_stages(inv.prepare(x))[-1]
        k = enc.head(a_last).argmax(1)
        wk = head_row(enc, a_last, k)[0]
        g = a_last.mean(dim=(-2, -1))[0]
    rec["class"] = int(k[0])
    rec["h2"] = {"measured": _h2(phi, z, us, (wk * g)[ch], wk[ch])}
    for kind in HEAD_CONTROLS:
        w2 = shuffled_head_row(wk, kind, cfg.seed)
        rec["h2"][f"head_{kind}"] = _h2(phi, z, us, (w2 * g)[ch], w2[ch])
    e_phi = float(phi.double().pow(2).flatten(1).sum(1).mean())
    u = us.get("raw")
    rec["seed_zero"] = {
        "energy_vs_mean_channel": float(z.double().pow(2).sum()) / e_phi if e_phi > 0 else None,
        "cos_u": nan_to_none(direction_cosine(u, z)) if u is not None else None,
        "mean_cos_channels": nan_to_none(sum(direction_cosine(p, z) for p in phi) / len(phi))
        if float(z.abs().sum()) > 0 else None}
    phi_s = swapped_channel_inversions(inv, x, partner, ch)[0]
    rec["swapped_seed"], _ = _variant_stats(phi_s, z, us)
    rec["randomized"] = {}
    for n, inv_r in randomized.items():
        try:
            ch_r, _ = top_channels(inv_r.encoder, x, cfg.max_channels)
            phi_r = inv_r.channel_inversions(x, -1, ch_r)[0]
            rec["randomized"][str(n)], _ = _variant_stats(phi_r, seed_zero(inv_r, x)[0], us)
        except AdjinvError as e:
            rec["randomized"][str(n)] = {"error": str(e)}
    return rec


def figure_panels(inv: AdjointInverter, x: torch.Tensor, img: torch.Tensor, name: str,
                  cfg: SuperpositionConfig, out: Path) -> list[str]:
    """Figure 3 (a) and (b) for one image; returns the file names."""
    enc = inv.encoder
    _, w = top_channels(enc, x, 0)
    live = w.argsort(descending=True)
    live = live[w[live] > 0]
    thirds = torch.tensor_split(live, 3)
    picks = []
    for t, label in zip(thirds, ("high", "mid", "low"), strict=True):
        sel = t[torch.linspace(0, len(t) - 1, min(cfg.panel_channels, len(t))).round().long()] \
            if len(t) else t
        picks += [(label, int(c)) for c in sel]
    phi = inv.channel_inversions(x, -1, [c for _, c in picks])[0]
    plt = pyplot()
    ncol = max(1, cfg.panel_channels)
    fig, axes = plt.subplots(3, ncol, figsize=(1.9 * ncol, 6.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    counts = {"high": 0, "mid": 0, "low": 0}
    for (label, c), p in zip(picks, phi, strict=True):
        r = ("high", "mid", "low").index(label)
        ax = axes[r, counts[label]]
        counts[label] += 1
        ax.imshow(robust_minmax(p.float().cpu()).permute(1, 2, 0).numpy())
        ax.set_title(f"{label} c={c} w={float(w[c]):.2g}", fontsize=7)
    fig.suptitle(f"(a) φ_L,c of {name}: high / mid / low simplex-weight thirds", fontsize=9)
    fa = f"figure3a_{name}.png"
    save_figure(fig, out / fa)

    def weights(acts: list[torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
        return class_directional_weights(enc, acts[-1], logits.argmax(1), "contribution")

    res = inv.invert(x, extra_weights=weights)
    shown = [("input", img)] + [(f"x̂_{s} ({enc.infos[s].name})", robust_minmax(v[0].float().cpu()))
                                for s, v in sorted(res.x_hat.items())]
    shown += [(t, robust_minmax(res.extra[k][0].float().cpu()))
              for t, k in (("x̂^(k)", "class"), ("x̂^(k)+", "class+"), ("x̂^(k)−", "class-"))]
    fig, axes = plt.subplots(1, len(shown), figsize=(1.9 * len(shown), 2.3))
    for ax, (title, im) in zip(axes, shown, strict=True):
        ax.imshow(im.permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.suptitle(f"(b) per-stage reconstructions and class-directional hemispheres, {name}, "
                 f"k = {enc.class_name(int(res.logits.argmax()))}", fontsize=9)
    fb = f"figure3b_{name}.png"
    save_figure(fig, out / fb)
    return [fa, fb]


def _agg(recs: list[dict], get: object, cfg: SuperpositionConfig) -> dict:
    """Bootstrap summary of one row (measured or a control), per variant."""
    groups = [r["group"] for r in recs]

    def ci(vals: list) -> dict:
        return bootstrap_ci(vals, cfg.n_boot, cfg.seed, groups=groups)

    out: dict = {}
    for v in VARIANTS:
        rows = [(get(r) or {}).get(v) or {} for r in recs]  # type: ignore[operator]
        o: dict = {q: ci([x.get(q) for x in rows]) for q in SCALARS}
        for q in ("cos_before", "cos_after"):
            o[q] = {p: ci([(x.get(q) or {}).get(p) for x in rows])["mean"]
                    for p in ("min", "p5", "p95", "max")}
        if any("cos_u" in x for x in rows):
            o["cos_u"] = ci([x.get("cos_u") for x in rows])
        out[v] = o
    return out


def _agg_h2(recs: list[dict], cfg: SuperpositionConfig) -> dict:
    groups = [r["group"] for r in recs]
    return {head: {v: {q: bootstrap_ci([((r["h2"][head] or {}).get(v) or {}).get(q) for r in recs],
                                       cfg.n_boot, cfg.seed, groups=groups)
                       for q in ("B1", "B2", "sum_abs_ratio")} for v in VARIANTS}
            for head in H2_ROWS}


def run_superposition(cfg: SuperpositionConfig, out: str | Path, *, log: Log = quiet_log,
                      encoder: StagedEncoder | None = None, lacs: LACBank | None = None) -> dict:
    """``results.json``, ``table.md`` and the Figure-3 panels in ``out``.

    Under ``torchrun`` the ranks share the images (each filling ``out/cache``), then rank 0
    aggregates and writes; every rank returns the results (docs/cluster.md)."""
    t0 = time.perf_counter()
    out = Path(out)
    enc, bank, src = model_with_lacs(cfg.encoder, cfg.weights, cfg.random_init, cfg.lac, log,
                                     encoder, lacs)
    ds = open_masked(cfg.data, cfg.split, cfg.size)
    n = len(ds) if cfg.max_images is None else min(len(ds), cfg.max_images)
    if n < 2:
        raise AdjinvError("superposition needs at least two images (swapped-seed control)")
    levels = randomization_levels(cfg.randomize, enc.num_stages)
    inv = AdjointInverter(enc, bank, chunk_size=cfg.chunk_size)
    randomized = {lv: AdjointInverter(randomized_encoder(enc, lv, cfg.seed), bank,
                                      chunk_size=cfg.chunk_size) for lv in levels}
    items = [ds[i] for i in range(n)]
    partners, rule = partner_derangement([it.label for it in items])
    cache = ImageCache(out / "cache")
    base = {"v": 3, "encoder": enc.name, "weights": enc.weights_hash(), "lacs": lac_digest(bank),
            "size": cfg.size, "max_channels": cfg.max_channels, "levels": levels, "seed": cfg.seed}
    recs: list[dict] = []
    figures: list = []
    computed = [0]

    def record(i: int) -> dict:
        """Image ``i``'s record, from the cache or measured (and cached)."""
        it, partner = items[i], items[partners[i]]
        key = {**base, "image": tensor_digest(it.image), "partner": tensor_digest(partner.image)}
        rec = cache.get(key)
        if rec is None:
            rec = measure_image(inv, randomized, enc.normalize(it.image)[None],
                                enc.normalize(partner.image)[None], cfg)
            cache.put(key, rec)
            computed[0] += 1
        return rec

    # under torchrun the ranks share the images (filling the cache); rank 0 aggregates
    if not share_work(list(range(n)), record):
        barrier()  # wait for rank 0's results.json
        return json.loads((out / "results.json").read_text())
    for i in iter_with_bar(list(range(n)), "superposition"):
        it, partner = items[i], items[partners[i]]
        recs.append({**record(i), "name": it.name, "group": it.label, "partner": partner.name})
        if i < cfg.figure_images:
            figures += figure_panels(inv, enc.normalize(it.image)[None], it.image, it.name, cfg, out)
    log(f"  {n} images ({computed[0]} computed, {n - computed[0]} from cache)")
    groups = [r["group"] for r in recs]
    floor = lac_pix_floor(bank.pix.gamma, bank.pix.beta)
    summary = {"measured": _agg(recs, lambda r: r["measured"], cfg),
               "floor": {"analytic": floor,
                         "measured": bootstrap_ci([r["floor"]["measured"] for r in recs], cfg.n_boot,
                                                  cfg.seed, groups=groups)},
               "h2": _agg_h2(recs, cfg),
               "seed_zero": {q: bootstrap_ci([r["seed_zero"][q] for r in recs], cfg.n_boot, cfg.seed,
                                             groups=groups)
                             for q in ("energy_vs_mean_channel", "cos_u", "mean_cos_channels")},
               "swapped_seed": _agg(recs, lambda r: r["swapped_seed"], cfg),
               "randomized": {str(lv): _agg(recs, lambda r, lv=lv: r["randomized"][str(lv)], cfg)
                              for lv in levels}}
    results = {
        "experiment": "superposition H1 (Sec. 3.2.3, C.4)",
        "encoder": enc.name, "lacs": src, "dataset": ds.describe(), "n_images": n,
        "partner_rule": rule,
        "lac_pix": {"gamma": bank.pix.gamma.detach().tolist(), "beta": bank.pix.beta.detach().tolist()},
        "config": asdict(cfg),
        "definitions": {
            "energy_fraction": "lambda_1 / tr(G), G = Phi Phi^T of the channel inversions",
            "variance": "V = mean_c ||phi_c - mean phi||^2 / mean_c ||phi_c||^2, before and after "
                        "r_c = phi_c - <phi_c,u>u ([choice] each over its own rows' energy)",
            "expansion": "V_after / V_before",
            "cos": "min / 5th / 95th percentile / max of pairwise cosine similarities (means over images)",
            "cos_u": "|cos| between this image's leading direction u and the control's",
            "seed_zero": "energy of Psi_L(0) relative to the mean channel energy; |cos| of Psi_L(0) "
                         "with u and (mean) with each phi_c: how much of the shared direction is "
                         "seed-independent",
            "channels": "live deepest-stage channels of largest simplex weight, at most max_channels",
            "variants": "raw phi; zero_mean: each RGB channel minus its spatial mean (removes "
                        "beta_pix exactly); psi0_projected: the component along Psi_L(0) removed",
            "floor": "analytic: |b|^2/(|b|^2+|s|^2) = sum beta_pix^2/(sum beta_pix^2 + sum gamma_pix^2), "
                     "a lower bound on lambda_1/tr G for any input; measured: lambda_1(B B^T)/tr G with "
                     "B the rows' per-RGB means, an exact per-image lower bound (docs/method.md section 15)",
            "B1": "|sum_c alpha_c a_c| / (|sum_+ alpha_c a_c| + |sum_- alpha_c a_c|), a_c = <phi_c, u>, "
                  "alpha = W_k g over the same channels; 0 = the hemispheres' shared parts cancel",
            "B2": "mean over hemispheres of (sum_+- alpha_c a_c)^2 / |x_+-|^2: share of each hemisphere "
                  "along u",
            "intervals": "95% percentile bootstrap over source photos / classes (whole groups resampled)",
        },
        "controls": CONTROLS_NOTE + BIAS_NOTE,
        "summary": summary, "figures": figures, "images": recs, "environment": environment(),
    }
    results["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", table(results))
    barrier()  # under torchrun the other ranks wait for results.json
    return results


VARIANT_LABELS = {"raw": "raw φ", "zero_mean": "per-RGB zero-mean φ",
                  "psi0_projected": "Ψ(0) direction projected out"}


def h1_table(results: dict) -> list[str]:
    """λ₁/tr G, V, expansion and cosines: every row × the three variants, with the floor."""
    s = results["summary"]
    lines = ["| | variant | λ₁/tr G | V before | V after | expansion | cos before (p5, p95) "
             "| cos after (p5, p95) | |cos(u, u_ctrl)| |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [("measured", s["measured"]), ("swapped-seed", s["swapped_seed"])]
    rows += [(f"random top {lv}", v) for lv, v in s["randomized"].items()]

    def pr(c: dict) -> str:
        return "–" if c["p5"] is None else f"{c['p5']:.3f}, {c['p95']:.3f}"

    for name, row in rows:
        for v in VARIANTS:
            t = row[v]
            lines.append(f"| {name} | {VARIANT_LABELS[v]} | {fmt_ci(t['energy_fraction'])} | "
                         f"{fmt_ci(t['variance_before'])} | {fmt_ci(t['variance_after'])} | "
                         f"{fmt_ci(t['expansion'])} | {pr(t['cos_before'])} | {pr(t['cos_after'])} | "
                         f"{fmt_ci(t['cos_u']) if 'cos_u' in t else ''} |")
    fl = s["floor"]
    lines += ["", f"Floor under λ₁/tr G (docs/method.md §15): analytic from the loaded LAC_pix, "
                  f"Σβ²/(Σβ²+Σγ²) = {fmt(fl['analytic']['bias_share'])} (so V before ≤ "
                  f"{fmt(fl['analytic']['v_before_ceiling'])}); exact per-image floor "
                  f"λ₁(BBᵀ)/tr G of the raw φ = {fmt_ci(fl['measured'])}."]
    return lines


def h2_table(results: dict) -> list[str]:
    """B1 and B2 for the encoder's head and the two shuffled heads, per variant."""
    h = results["summary"]["h2"]
    labels = {"measured": "encoder's head W_k", "head_permuted": "W_k permuted across channels",
              "head_random": "random row, ‖W_k‖ matched"}
    lines = ["| head | variant | B1 | B2 | |Σ α a| / Σ |α a| |", "|---|---|---|---|---|"]
    for head in H2_ROWS:
        for v in VARIANTS:
            t = h[head][v]
            lines.append(f"| {labels[head]} | {VARIANT_LABELS[v]} | {fmt_ci(t['B1'])} | "
                         f"{fmt_ci(t['B2'])} | {fmt_ci(t['sum_abs_ratio'])} |")
    return lines


def table(results: dict) -> str:
    """The Markdown summary."""
    s = results["summary"]
    lines = [f"# Superposition (H1) — {results['encoder']} (LACs: {results['lacs']}), "
             f"{results['n_images']} images, {results['dataset']['size']} px, at most "
             f"{results['config']['max_channels']} channels", "",
             f"Swapped-seed partners: {results.get('partner_rule', 'next image')}.", ""]
    lines += h1_table(results)
    z = s["seed_zero"]
    lines += ["", f"seed-zero: ‖Ψ_L(0)‖² / mean ‖φ_c‖² = {fmt_ci(z['energy_vs_mean_channel'])}, "
                  f"|cos(Ψ_L(0), u)| = {fmt_ci(z['cos_u'])}, mean |cos(Ψ_L(0), φ_c)| = "
                  f"{fmt_ci(z['mean_cos_channels'])}.", "", "## H2 (B1, B2) with shuffled heads", ""]
    lines += h2_table(results)
    lines += ["", "Controls:", ""]
    lines += [f"- {c}" for c in results["controls"]]
    lines += ["", f"Wall time {results['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


EPILOG = """examples:
  adjinv experiment superposition --out runs/h1                 # embedded composites, Lite0, 96 px
  adjinv experiment superposition --data oxford_pet:data/pets --encoder resnet50 --size 224 \\
      --lac r50.lac.safetensors --max-channels 0 --max-images 50 --out runs/h1-pet
A second run with the same --out reuses every finished image (out/cache).
"""


RUNNERS = (Runner(
    "superposition", SuperpositionConfig, run_superposition,
    help="H1 statistics of channel inversions with controls (Sec. 3.2.3)",
    description="Leading-eigenvalue energy fraction, rank-one subtraction, inter-channel "
                "variance and cosine ranges of the deepest channel inversions (docs/method.md §7), "
                "with seed-zero, swapped-seed and model-randomisation controls; Figure-3 panels.",
    epilog=EPILOG, outputs=("results.json", "table.md", "figures"), distributed=True),)
