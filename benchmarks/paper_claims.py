"""Measure the paper's claims that no experiment runner covers.

One part per claim; each writes ``<part>.json`` into ``--out`` (default
``benchmarks/results/paper_claims``) with its settings and the environment:

- ``crisis``: Crisis I / II (Eq. 1; Supp. A.1, Eq. 19–27) along the deepest pull-back of
  the top channel seeds, raw VJP vs through the bundled LACs (``adjinv.paper.analysis.crisis``);
- ``support``: Remark 3, Theorem 1's support containment on random-init non-ReLU
  networks (torchvision ConvNeXt-Tiny, GELU; EfficientNet-B0, SiLU) beside a ReLU
  reference (ResNet-18), on full photos and on a photo patch in a blank canvas
  (``adjinv.paper.analysis.support``);
- ``lac``: Lemma B.1 (trained γ/β) and Supp. C.5 (spread of ‖φ_c‖)
  (``adjinv.paper.analysis.lac_stats``);
- ``duality``: Theorem 2 over random channel subsets (``adjinv.paper.analysis.duality``);
- ``fv``: Theorem B.5, Corollary B.6, Remarks 4-5: the cascade direction error δ_c and the
  two residuals of x̂ against the feature-visualisation directions, per source stage, for
  the default, ``pixbias`` and identity LACs (``adjinv.paper.analysis.fv_equivalence``);
- ``b2``: H2 (B2), Eq. 98: foreground energy of the residual sum Σ α_c r_c on the embedded
  composites, beside shuffled heads, swapped seeds and the mask's area;
- ``depth``: source-depth monotonicity (Supp. A.5, Prop. B.8): Pearson r of x̂_l with the
  photo against the stage l, bundled vs identity LACs, and any further LACs given as
  ``--depth-lacs NAME=PATH`` (e.g. the single-path and multi-path runs of Supp. A.4,
  Eq. 9 vs Eq. 31).

Everything runs on the embedded default, EfficientNet-Lite0, at ``--size`` px (96); the
held-out photos of ``adjinv.images.photos`` are the evaluation set, the training photos
are used only where a statistic of the training data is the reference (Lemma B.1's
median). ``docs/paper-claims.md`` is generated from these files (benchmarks/docs_tables.py).

    OMP_NUM_THREADS=1 python benchmarks/paper_claims.py crisis support lac duality depth
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from adjinv import load_encoder
from adjinv.core.cascade import AdjointCascade
from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.core.simplex import simplex_measure
from adjinv.encoders.staged import StagedEncoder
from adjinv.fileio import atomic_write_json
from adjinv.images.files import random_crop, resize_center_crop
from adjinv.images.photos import split_photos
from adjinv.lacs.bundled import load_lacs
from adjinv.lacs.checkpoint import default_variant
from adjinv.paper.runners.common import environment

log = logging.getLogger("paper_claims")
REPO = Path(__file__).resolve().parent.parent
PARTS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def part(fn: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
    PARTS[fn.__name__] = fn
    return fn


def _lite0() -> tuple[StagedEncoder, LACBank, str]:
    enc = load_encoder("efficientnet_lite0")
    # the bundled `pixbias` variant (β only at the pixels), on which these results were run
    loaded = load_lacs(enc, "pixbias")
    src = Path(loaded.source)
    inside = src.is_absolute() and src.is_relative_to(REPO)
    rel = src.relative_to(REPO).as_posix() if inside else loaded.source
    return enc, loaded.lacs, rel


def _heldout(size: int, crops: int = 1, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """Held-out photos: the centre crop, then ``crops − 1`` fixed random crops each."""
    names, imgs = [], []
    for i, (n, img) in enumerate(split_photos("heldout").items()):
        gen = torch.Generator().manual_seed(seed + i)
        for k in range(crops):
            names.append(n if k == 0 else f"{n}#{k}")
            imgs.append(resize_center_crop(img, size) if k == 0 else random_crop(img, size, 0.5, gen))
    return names, torch.stack(imgs)


@part
def crisis(args: argparse.Namespace) -> dict:
    from adjinv.paper.analysis.crisis import diagnose_path, eq1_bound_deg

    enc, lacs, src = _lite0()
    names, imgs = _heldout(args.size)
    x = enc.normalize(imgs)
    per: dict[str, list[dict]] = {}
    for n, xi in zip(names, x, strict=True):
        per[n] = diagnose_path(AdjointCascade(enc, lacs), xi[None], top_k=args.top_k)
        log.info("crisis: %s done", n)
    # mean over photos, per boundary and chain
    mean: list[dict] = []
    for i, row in enumerate(per[names[0]]):
        m = {k: row[k] for k in ("stage", "name", "stride", "signal", "resolution")}
        for chain in ("raw", "lac_in", "lac_out", "raw_source_period", "lac_source_period"):
            if chain in row:
                m[chain] = {k: sum(per[n][i][chain][k] for n in names) / len(names)
                            for k in row[chain]}
                m[chain]["eq1_bound_deg"] = eq1_bound_deg(m[chain]["n_perp_ratio"])
        if "source_period" in row:
            m["source_period"] = row["source_period"]
        mean.append(m)
    return {"encoder": enc.name, "size": args.size, "lacs": src, "photos": names,
            "top_k": args.top_k, "mean": mean, "per_photo": per}


@part
def support(args: argparse.Namespace) -> dict:
    import torchvision

    from adjinv.encoders.auto import encoder_from_module
    from adjinv.paper.analysis.support import support_leak

    names, imgs = _heldout(args.size)
    names, imgs = names[:2], imgs[:2]
    # a photo patch in a blank canvas: activity is local, so the receptive field of the
    # positive positions does not cover the image at any depth
    # (small and in a corner, so that deep stages' fields still leave pixels out)
    canvas = torch.zeros_like(imgs[:1])
    p, o = args.size // 12, args.size // 24
    canvas[..., o: o + p, o: o + p] = resize_center_crop(imgs[0], p)
    models = {"resnet18 (ReLU)": torchvision.models.resnet18,
              "convnext_tiny (GELU)": torchvision.models.convnext_tiny,
              "efficientnet_b0 (SiLU)": torchvision.models.efficientnet_b0}
    out: dict[str, dict] = {}
    for label, ctor in models.items():
        torch.manual_seed(0)
        model = ctor(weights=None).eval()
        enc = encoder_from_module(model)
        inputs = {n: enc.normalize(im[None]) for n, im in zip(names, imgs, strict=True)}
        # zero outside the patch in encoder space (the canvas is blank after normalisation)
        inputs["patch"] = torch.where(canvas.abs().sum(1, keepdim=True) > 0,
                                      enc.normalize(canvas), torch.zeros_like(canvas))
        stages = []
        with enc.frozen():
            for lvl, info in enumerate(enc.infos):
                gen = torch.Generator().manual_seed(lvl)
                ch = torch.randperm(info.channels, generator=gen)[: args.channels]

                def feats(z: torch.Tensor, lvl: int = lvl, enc: StagedEncoder = enc) -> torch.Tensor:
                    return enc.forward_stages(z, upto=lvl)[lvl]

                row = {"stage": lvl, "name": info.name, "reduction": info.reduction}
                for n, xi in inputs.items():
                    row[n] = support_leak(feats, xi, ch).to_dict()
                stages.append(row)
        out[label] = {"stages": stages}
        log.info("support: %s done", label)
    return {"size": args.size, "weights": "random init (torchvision defaults, seed 0)",
            "channels_per_stage": args.channels, "inputs": [*names, "patch"],
            "patch": f"centre crop of {names[0]} at {p} px placed at ({o}, {o}) in a blank "
                     f"{args.size} px canvas (zero in encoder space)", "models": out}


def _git_lacs(enc: StagedEncoder, spec: str) -> LACBank:
    """LACs from a checkpoint committed in this repository's history: ``<commit>:<path>``."""
    import subprocess
    import tempfile

    blob = subprocess.run(["git", "-C", str(REPO), "show", spec], check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "lacs.safetensors"
        path.write_bytes(blob)
        return load_lacs(enc, path).lacs


@part
def lac(args: argparse.Namespace) -> dict:
    from adjinv.paper.analysis.lac_stats import inversion_norm_spread, lac_parameter_report, pixel_median

    enc, lacs, src = _lite0()
    train = split_photos("train")
    xt = enc.normalize(torch.stack([resize_center_crop(v, args.size) for v in train.values()]))
    med = pixel_median(xt)
    names, imgs = _heldout(args.size)
    x = enc.normalize(imgs)
    inv = AdjointInverter(enc, lacs)
    spread: dict[str, dict] = {}
    for n, xi in zip(names, x, strict=True):
        spread[n] = {}
        for stage in (args.shallow_stage, enc.num_stages - 1):
            with enc.frozen():
                a = enc.forward_stages(xi[None], upto=stage)[stage]
            live = (simplex_measure(a)[0] > 0).nonzero()[:, 0]
            phi = inv.channel_inversions(xi[None], stage, live)[0]
            spread[n][enc.infos[stage].name] = inversion_norm_spread(phi, lacs).to_dict()
        log.info("lac: %s done", n)
    # Lemma B.1 (i) concerns every β; the bundled (pixbias) LACs train only β_pix, so the
    # paper-objective LACs bundled earlier (every β trained) are reported beside them
    others = {name: {"source": f"git {spec}", "parameters": lac_parameter_report(_git_lacs(enc, spec))}
              for name, spec in (item.split("=", 1) for item in args.history_lacs)}
    return {"encoder": enc.name, "size": args.size, "lacs": src,
            "parameters": lac_parameter_report(lacs), "history_lacs": others,
            "train_pixel_median": [float(v) for v in med],
            "train_pixel_mean": [float(v) for v in xt.double().mean((0, 2, 3))],
            "normalisation": {"mean": [float(v) for v in enc.mean.flatten()],
                              "std": [float(v) for v in enc.std.flatten()]},
            "train_photos": list(train), "heldout": names, "norm_spread": spread}


@part
def duality(args: argparse.Namespace) -> dict:
    from adjinv.paper.analysis.covvol import covariance_volume_select
    from adjinv.paper.analysis.duality import duality_study, random_subsets
    from adjinv.paper.features import gap_features

    enc, lacs, src = _lite0()
    names, imgs = _heldout(args.size, crops=args.crops)
    x = enc.normalize(imgs)
    last = enc.num_stages - 1
    with enc.frozen(), torch.no_grad():
        gap = gap_features(enc, imgs).double()
    # the pool: channels live on every image and never saturated (ReLU6 at 6 everywhere
    # pulls back nothing), largest mean simplex weight first. A channel dead on one image
    # has φ_c = Ψ(0) = β_pix there, which makes the Gram matrix of any subset holding two
    # such channels singular (log Vol = −∞), so E log Vol is only finite on this pool.
    usable = (gap != 0).all(0) & (gap < 6 - 1e-6).all(0)
    with enc.frozen(), torch.no_grad():
        w = simplex_measure(enc.forward_stages(x, upto=last)[last]).mean(0)
    order = [int(c) for c in w.argsort(descending=True) if usable[c]]
    inv = AdjointInverter(enc, lacs)
    cand = order[: args.pool]
    phi = torch.stack([inv.channel_inversions(xi[None], last, cand)[0] for xi in x])
    log.info("duality: %d inversions done", phi.shape[0] * phi.shape[1])
    flat = phi.flatten(-2).std(-1).amin(-1)  # (N, K): spatial std, smallest RGB channel
    keep = (flat > 0).all(0)
    pool = [c for c, k in zip(cand, keep.tolist(), strict=True) if k]
    phi = phi[:, keep]
    g = gap[:, pool]
    gc = g - g.mean(0)
    cov = gc.T @ gc / (g.shape[0] - 1)
    res: dict[str, dict] = {}
    greedy_by_k: dict[str, list[int]] = {}
    for k in args.k:
        subsets = random_subsets(len(pool), k, args.subsets, seed=0)
        greedy = sorted(covariance_volume_select(cov, k).order.tolist())
        greedy_by_k[f"k{k}"] = greedy
        if greedy not in subsets:
            subsets.append(greedy)
        for centred in (False, True):
            r, vols, dets = duality_study(phi, g, subsets, centred=centred)
            vt = torch.tensor(vols)
            gi = subsets.index(greedy)
            res[f"k{k}_{'centred' if centred else 'raw'}"] = {
                **r.to_dict(),
                "greedy_covvol_volume_rank": int((vt > vt[gi]).sum()) + 1,
                "log_volume": {"min": min(vols), "max": max(vols)},
                "gap_logdet": {"min": min(dets), "max": max(dets)}}
    return {"encoder": enc.name, "size": args.size, "lacs": src, "images": names,
            "stage": enc.infos[last].name, "pool_channels": pool,
            "pool_rule": "deepest channels live and unsaturated (0 < GAP < 6) on every image, "
                         "largest mean simplex weight, φ not constant on any image",
            "greedy_subsets": greedy_by_k, "results": res}


@part
def depth(args: argparse.Namespace) -> dict:
    from scipy.stats import spearmanr

    from adjinv.metrics.likeness import pearson_rgb
    from adjinv.paper.analysis.depth import depth_increases, depth_profiles, l1_error

    enc, lacs, src = _lite0()
    names, imgs = _heldout(args.size)
    x = enc.normalize(imgs)
    out: dict[str, dict] = {}
    banks = [("bundled", lacs, src), ("identity", LACBank.for_encoder(enc), "identity (γ=1, β=0)")]
    for spec in args.depth_lacs:
        label, path = spec.split("=", 1)
        full = Path(path) if Path(path).is_absolute() else REPO / path
        if not full.is_relative_to(REPO):
            raise SystemExit(f"--depth-lacs {spec}: commit the checkpoint inside the repository")
        banks.append((label, load_lacs(enc, full).lacs, full.relative_to(REPO).as_posix()))
    for label, bank, source in banks:
        inv = AdjointInverter(enc, bank)
        stages = [i.name for i in enc.infos]
        per: dict[str, dict[str, float]] = {}
        per_l1: dict[str, dict[str, float]] = {}
        for n, xi in zip(names, x, strict=True):
            prof = depth_profiles(inv, xi[None], {"pearson": pearson_rgb, "l1": l1_error})
            per[n] = {s: float(r[0]) for s, r in zip(stages, prof["pearson"], strict=True)}
            per_l1[n] = {s: float(r[0]) for s, r in zip(stages, prof["l1"], strict=True)}
        mean = {s: sum(per[n][s] for n in names) / len(names) for s in stages}
        rho, pval = spearmanr(range(len(stages)), [mean[s] for s in stages])
        drops = depth_increases([mean[s] for s in stages])
        per_photo_monotone = {n: depth_increases([per[n][s] for s in stages]) == 0 for n in names}
        out[label] = {"lacs": source, "per_photo": per, "mean": mean, "per_photo_l1": per_l1,
                      "mean_l1": {s: sum(per_l1[n][s] for n in names) / len(names) for s in stages},
                      "spearman_depth_vs_r": float(rho),
                      "p_value": float(pval), "increases_with_depth": int(drops),
                      "monotone_per_photo": per_photo_monotone}
        log.info("depth: %s done", label)
    return {"encoder": enc.name, "size": args.size, "lacs": src, "photos": names,
            "stages": [i.name for i in enc.infos], "metric": "Pearson r per RGB channel, mean",
            "metric_l1": "mean |x̂_l − x| in encoder space (each stage's term of Eq. 9 / Eq. 31)",
            "variants": out}


def _quantiles(v: torch.Tensor) -> dict[str, float]:
    v = v.flatten().double()
    return {"median": float(v.median()), "p90": float(v.quantile(0.9)), "max": float(v.max()),
            "mean": float(v.mean())}


@part
def fv(args: argparse.Namespace) -> dict:
    """Theorem B.5 / Cor. B.6 / Remarks 4-5: cascade direction error δ_c and the residuals."""
    from adjinv.paper.analysis.fv_equivalence import fv_decomposition

    enc = load_encoder("efficientnet_lite0")
    names, imgs = _heldout(args.size)
    x = enc.normalize(imgs)
    banks = {f"default ({default_variant('efficientnet_lite0') or 'default'}: every β trained)":
             load_lacs(enc).lacs,
             "pixbias (inner β = 0)": load_lacs(enc, "pixbias").lacs,
             "identity (γ = 1, β = 0)": LACBank.for_encoder(enc)}
    stages = [i.name for i in enc.infos]
    out: dict[str, dict] = {}
    for label, bank in banks.items():
        inv = AdjointInverter(enc, bank)
        per: dict[str, dict] = {}
        for s, sname in enumerate(stages):
            with torch.no_grad(), enc.frozen():
                w = simplex_measure(enc.forward_stages(x)[s])
            ch = w.argsort(dim=1, descending=True)[:, : args.fv_channels]
            d = fv_decomposition(inv, x, s, ch)
            rel = d.relative()
            per[sname] = {"delta": _quantiles(d.delta), "r_dir_rel": _quantiles(rel["r_dir"]),
                          "r_bias_rel": _quantiles(rel["r_bias"]),
                          "bound_holds": bool((d.r_dir.flatten(2).norm(dim=2)
                                               <= d.bound_dir * (1 + 1e-4) + 1e-9).all())}
        out[label] = per
        log.info("fv: %s done", label)
    return {"encoder": enc.name, "size": args.size, "photos": names, "stages": stages,
            "channels_per_stage": args.fv_channels,
            "definitions": {"delta": "‖û_c − e_c‖ per RGB channel (Eq. 60), over channels, RGB, photos",
                            "r_dir_rel": "‖Σ w γ s (û − e)‖ / ‖Σ w γ s e‖ per photo (Thm B.5)",
                            "r_bias_rel": "‖Σ w β_pix‖ / ‖Σ w γ s e‖ per photo (Cor. B.6)"},
            "variants": out}


@part
def b2(args: argparse.Namespace) -> dict:
    """H2 (B2), Eq. 98: the residual sum Σ α_c r_c concentrates on the class object."""
    from adjinv.methods.class_directional import foreground_energy, mask_area_ratio
    from adjinv.methods.controls import (
        HEAD_CONTROLS,
        head_row,
        partner_derangement,
        shuffled_head_row,
        swapped_channel_inversions,
    )
    from adjinv.paper.analysis.superposition import centre_rgb, leading_direction, rank_one_subtract
    from adjinv.paper.data.masks import open_masked
    from adjinv.paper.runners.interference_common import bootstrap_ci

    enc, lacs, src = _lite0()
    inv = AdjointInverter(enc, lacs)
    ds = open_masked("composites", "test", args.size)
    items = [ds[i] for i in range(len(ds))]
    partners, rule = partner_derangement([it.label for it in items])
    variants = ("raw", "zero_mean")
    rows: list[dict] = []
    for i, it in enumerate(items):
        x = enc.normalize(it.image)[None]
        xp = enc.normalize(items[partners[i]].image)[None]
        with torch.no_grad(), enc.frozen():
            a_last = enc.forward_stages(x)[-1]
            k = enc.head(a_last).argmax(1)
            wk = head_row(enc, a_last, k)[0]
            g = a_last.mean(dim=(-2, -1))[0]
            w = simplex_measure(a_last)[0]
        ch = w.argsort(descending=True)
        ch = ch[w[ch] > 0][: args.b2_channels]
        phi = inv.channel_inversions(x, -1, ch)[0].double()
        phi_s = swapped_channel_inversions(inv, x, xp, ch)[0].double()
        mask = it.mask.bool()[None]
        heads = {"measured": wk} | {f"head_{h}": shuffled_head_row(wk, h, 0) for h in HEAD_CONTROLS}
        row: dict = {"name": it.name, "group": it.label, "area": float(mask_area_ratio(mask[0]))}
        for v in variants:
            f = phi if v == "raw" else centre_rgb(phi)
            fs = phi_s if v == "raw" else centre_rgb(phi_s)
            u, _ = leading_direction(f)

            def residual_sum(feats: torch.Tensor, alpha: torch.Tensor, u: torch.Tensor = u) -> torch.Tensor:
                r = rank_one_subtract(feats, u)[0]  # r_c = φ_c − ⟨φ_c, u⟩ u (Eq. 13)
                return (alpha.view(-1, 1, 1, 1) * r).sum(0, keepdim=True)

            cell = {}
            for h, wrow in heads.items():
                alpha = (wrow * g)[ch].double()
                cell[h] = float(foreground_energy(residual_sum(f, alpha), mask)[0])
            alpha = (wk * g)[ch].double()
            cell["swapped_seed"] = float(foreground_energy(residual_sum(fs, alpha), mask)[0])
            cell["full"] = float(foreground_energy((alpha.view(-1, 1, 1, 1) * f).sum(0, keepdim=True),
                                                   mask)[0])
            row[v] = cell
        rows.append(row)
        log.info("b2: %s done", it.name)
    groups = [r["group"] for r in rows]

    def ci(vals: list[float]) -> dict:
        return bootstrap_ci(vals, 2000, 0, groups=groups)

    keys = ["measured", *[f"head_{h}" for h in HEAD_CONTROLS], "swapped_seed", "full"]
    summary = {"area": ci([r["area"] for r in rows])}
    summary |= {v: {q: ci([r[v][q] for r in rows]) for q in keys} for v in variants}
    return {"encoder": enc.name, "size": args.size, "lacs": src, "data": "composites (test)",
            "channels": args.b2_channels, "partner_rule": rule,
            "definitions": {
                "measured": "FG(Σ_c α_c r_c), r_c = φ_c − ⟨φ_c, u⟩ u, u the leading direction of the "
                            "channel inversions (H1), α_c = W_{k,c} GAP(A_L)_c for the predicted class",
                "head_*": "the same with the head row shuffled (permuted / Gaussian of matched norm)",
                "swapped_seed": "the partner photo's features through this image's Jacobians, same α",
                "full": "FG(Σ α_c φ_c), the class-directional reconstruction on these channels",
                "zero_mean": "every φ_c made zero-mean per RGB channel first (removes β_pix)"},
            "images": rows, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="+", choices=sorted(PARTS))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "paper_claims"))
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--top-k", type=int, default=8, help="crisis: channel seeds per photo")
    ap.add_argument("--channels", type=int, default=8, help="support: channels per stage")
    ap.add_argument("--shallow-stage", type=int, default=2, help="lac: a shallow stage for C.5")
    ap.add_argument("--history-lacs", nargs="*", default=[
        "paper_objective_40_steps=6ee5380:src/adjinv/weights/efficientnet_lite0.lac.safetensors"],
        help="lac: NAME=COMMIT:PATH checkpoints from this repository's history to report too")
    ap.add_argument("--crops", type=int, default=2, help="duality: crops per held-out photo")
    ap.add_argument("--pool", type=int, default=24, help="duality: channel pool size")
    ap.add_argument("--k", type=int, nargs="+", default=[4, 8], help="duality: subset sizes")
    ap.add_argument("--subsets", type=int, default=500, help="duality: random subsets")
    ap.add_argument("--b2-channels", type=int, default=128,
                    help="b2: top deepest channels by simplex weight per image")
    ap.add_argument("--fv-channels", type=int, default=16,
                    help="fv: top channels by simplex weight per stage and photo")
    ap.add_argument("--depth-lacs", nargs="*", default=[
        "paper-colour=src/adjinv/lacs/weights/efficientnet_lite0-paper-colour.lac.safetensors",
        "multipath=benchmarks/results/training/multipath.lac.safetensors",
        "paper-colour@60=benchmarks/results/training/paper-colour.steps/step-00060.lac.safetensors",
        "multipath@60=benchmarks/results/training/multipath.steps/step-00060.lac.safetensors"],
        help="depth: NAME=PATH further LAC checkpoints (inside the repository) to profile; by "
             "default Supp. A.4's two runs (Eq. 9, Eq. 31) at their kept step and at step 60")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.parts:
        t = time.perf_counter()
        res = PARTS[name](args)
        res["seconds"] = round(time.perf_counter() - t, 1)
        res["environment"] = environment()
        res["command"] = f"python benchmarks/paper_claims.py {name}"
        path = atomic_write_json(Path(args.out) / f"{name}.json", res)
        log.info("%s: %s (%.0f s)", name, path, res["seconds"])


if __name__ == "__main__":
    main()
