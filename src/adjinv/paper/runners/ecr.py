"""Sec. 3.4 / C.8: causal concept localisation by ECR-ranked channel ablation, with controls.

From one reference image and a region mask: ``ECR_c`` (Eq. 17) of every live
deepest-stage channel inversion; the ranking is frozen and applied to the GAP
features of every test image (all assumed to be of class ``k``): zero the first
``p·C`` channels in Descending / Ascending / Random (``random_seeds`` seeds) order,
re-run the head, record the softmax probability of ``k`` (docs/method.md §10). Controls: the
ECR of ``Ψ_L(0)`` (seed-zero: every channel would get it, so any ranking would be
arbitrary); rankings from swapped seeds and from randomised encoders, applied to the
*real* model's features, with their Spearman correlation to the real ranking.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core.inverter import AdjointInverter
from ...core.lac import LACBank
from ...core.simplex import simplex_measure
from ...encoders.staged import LinearHead, StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_json, atomic_write_text
from ...images.files import list_images, load_image, resize_center_crop
from ...methods.controls import (
    head_row,
    nan_to_none,
    randomization_levels,
    randomized_encoder,
    seed_zero,
    swapped_channel_inversions,
)
from ...viz.display import robust_minmax
from ..analysis.ecr import ecr_ablation, energy_concentration_ratio, spearman
from ..analysis.superposition import centre_rgb
from ..data.composites import composite_set
from ..data.masks import load_mask, open_masked, resize_center_crop_pair
from .common import Log, environment, pyplot, quiet_log, save_figure
from .interference_common import (
    CONTROLS_NOTE,
    ImageCache,
    fmt,
    iter_with_bar,
    lac_digest,
    model_with_lacs,
    parse_levels,
    tensor_digest,
)
from .probe_head import HEADS, probe_encoder
from .skeleton import Runner, option


@dataclass
class ECRConfig:
    """What ``adjinv experiment ecr`` measures. ``reference``/``region``/``data`` None:
    the embedded composites (the cat on five backgrounds; the first is the reference,
    its pasted ellipse the region, the other nine the test images)."""

    encoder: str = option("efficientnet_lite0", "registry name")
    weights: str | None = option(None, "local encoder state dict")
    lac: str | None = option(None, "LAC checkpoint or bundled variant name (default: bundled, else identity "
        "with a warning)")
    random_init: bool = option(False, "untrained encoder (tests)")
    reference: str | None = option(None, "reference image file")
    region: str | None = option(None, "region mask file for the reference")
    data: str | None = option(None, "folder of test images of the class")
    target: int | None = option(None, "class index (default: reference top-1)", flag="--class")
    size: int = option(96, "image side in px")
    fractions: list[float] = option([i / 10 for i in range(11)], "ablation fractions (default 0, .1, …, 1)")
    random_seeds: int = option(50, "Random order seeds")
    randomize: list = option([1, 3], "stage counts to re-initialise (integers or 'all')", parse=parse_levels)
    max_images: int | None = option(None, "use the first N test images")
    correct_only: bool = option(True, "ablate on every test image, not only those classified as the class",
        flag="--all-test-images", const=False)
    seed: int = option(0, "Random orders, model randomisation")
    chunk_size: int | None = option(None, "channels per batched cascade pass")
    head: str = option("encoder", "classifier: the encoder's own (ImageNet) head (default), or 'probe': a "
        "linear probe trained first on --probe-data's training split (C.2)", choices=HEADS)
    probe_data: str = option("composites", "the probe's dataset: composites (default: the embedded 'probe' "
        "subset, no image of the ecr set), cub:ROOT or oxford_pet:ROOT (their train split; keep --data's "
        "test images out of it)")


def load_inputs(cfg: ECRConfig) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, torch.Tensor]], str]:
    """``(reference image, region mask, [(name, test image)], description)`` at ``cfg.size``."""
    if (cfg.reference is None) != (cfg.region is None):
        raise AdjinvError("give --reference and --region together (or neither: embedded default)")
    if cfg.reference is None:
        comps = composite_set("ecr")
        ref, reg = resize_center_crop_pair(comps[0].image, comps[0].mask.float(), cfg.size)
        data = cfg.data
        tests = ([(c.name, resize_center_crop(c.image, cfg.size)) for c in comps[1:]]
                 if data is None else None)
        desc = f"embedded composites: reference {comps[0].name}, region = its pasted ellipse"
    else:
        assert cfg.region is not None  # given together with cfg.reference (checked above)
        img = load_image(cfg.reference, mode="convert")
        m = load_mask(cfg.region, threshold=0.5)
        if m.shape != img.shape[1:]:
            raise AdjinvError(f"region {cfg.region} is {tuple(m.shape)} but the reference is "
                              f"{tuple(img.shape[1:])}: draw the mask at the image's size")
        ref, reg = resize_center_crop_pair(img, m.float(), cfg.size)
        data, tests = cfg.data, None
        desc = f"reference {cfg.reference}, region {cfg.region}"
        if data is None:
            raise AdjinvError("--data DIR (test images of the class) is required with --reference")
    if tests is None:
        assert data is not None  # tests are only left to read when a --data folder is given
        tests = [(str(p.name), resize_center_crop(load_image(p, mode="convert"), cfg.size))
                 for p in list_images(data)]
    if cfg.max_images is not None:
        tests = tests[: cfg.max_images]
    if not reg.any():
        raise AdjinvError("the region mask is empty after resizing")
    if not tests:
        raise AdjinvError("no test images")
    return ref, reg, tests, desc


def _spread(e: torch.Tensor | None) -> dict | None:
    if e is None:
        return None
    f = e[torch.isfinite(e)].double()
    if f.numel() == 0:
        return None
    return {"mean": float(f.mean()), "p5": float(f.quantile(0.05)), "p95": float(f.quantile(0.95))}


def channel_ecr(inv: AdjointInverter, x: torch.Tensor, region: torch.Tensor,
                source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ECR (C,), φ of the live channels)``; channels dead on the reference get NaN.
    ``source``: the swapped-seed control (seeds of another image through ``x``'s Jacobians)."""
    enc = inv.encoder
    with torch.no_grad(), enc.frozen():
        a = enc.forward_stages(x if source is None else source)[-1]
    w = simplex_measure(a)[0]
    live = (w > 0).nonzero().flatten()
    if source is None:
        phi = inv.channel_inversions(x, -1, live)[0]
    else:
        phi = swapped_channel_inversions(inv, x, source, live)[0]
    ecr = torch.full((w.numel(),), float("nan"), dtype=torch.float64)
    ecr[live.cpu()] = energy_concentration_ratio(phi, region.to(phi.device)).cpu()
    return ecr, phi


def run_ecr(cfg: ECRConfig, out: str | Path, *, log: Log = quiet_log,
            encoder: StagedEncoder | None = None, lacs: LACBank | None = None) -> dict:
    """``results.json``, ``table.md``, ``ablation.png`` and ``reference.png`` in ``out``."""
    t0 = time.perf_counter()
    out = Path(out)
    enc, bank, src = model_with_lacs(cfg.encoder, cfg.weights, cfg.random_init, cfg.lac, log,
                                     encoder, lacs)
    head_rec: dict = {"head": "encoder"}
    if cfg.head not in HEADS:
        raise AdjinvError(f"head must be one of {HEADS}, got {cfg.head!r}")
    if cfg.head == "probe":  # C.2: the dataset's probe; its split never holds a scored image
        scored = open_masked("composites:ecr", size=cfg.size) if cfg.reference is None else None
        enc, head_rec = probe_encoder(enc, cfg.probe_data, cfg.size, scored=scored, log=log)
    if any(not 0 <= f <= 1 for f in cfg.fractions):
        raise AdjinvError("ablation fractions must lie in [0, 1]")
    ref, reg, tests, desc = load_inputs(cfg)
    levels = randomization_levels(cfg.randomize, enc.num_stages)
    inv = AdjointInverter(enc, bank, chunk_size=cfg.chunk_size)
    x = enc.normalize(ref)[None]
    with torch.no_grad(), enc.frozen():
        ref_logits = enc(x)[0]
    k = int(ref_logits.argmax()) if cfg.target is None else int(cfg.target)
    if not 0 <= k < enc.head.num_classes:
        raise AdjinvError(f"--class {k} out of range for {enc.head.num_classes} classes")
    head = enc.head
    if not isinstance(head, LinearHead):
        raise AdjinvError(f"the ECR ablation removes GAP channels before a linear classifier "
                          f"(docs/method.md §10); {enc.name} has a {type(head).__name__}; use an "
                          "encoder whose head is GAP + Linear")
    cache = ImageCache(out / "cache")
    base = {"v": 1, "encoder": enc.name, "weights": enc.weights_hash(), "lacs": lac_digest(bank),
            "size": cfg.size, "reference": tensor_digest(ref, reg), "seed": cfg.seed}
    # GAP features of the test images, cached per image
    feats, computed = [], 0
    for _name, img in iter_with_bar(tests, "ecr: test features"):
        key = {**base, "kind": "gap", "image": tensor_digest(img)}
        hit = cache.get_tensors(key)
        if hit is None:
            with torch.no_grad(), enc.frozen():
                g = enc.forward_stages(enc.normalize(img)[None])[-1].mean(dim=(-2, -1))[0]
            cache.put_tensors(key, {"g": g})
            computed += 1
        else:
            g = hit["g"]
        feats.append(g.to(x))
    g = torch.stack(feats)
    with torch.no_grad():
        p_tests = head.from_gap(g).softmax(1)
        p_all = p_tests
    correct = p_tests.argmax(1) == k
    n_correct = int(correct.sum())
    used = "all test images"
    if cfg.correct_only and n_correct > 0:
        g, used = g[correct], f"the {n_correct} test images the model classifies as the class"
        p_tests = p_tests[correct]
    elif cfg.correct_only:
        used = "all test images: none is classified as the class, so the curves are noise-level"
    log(f"  ecr: {n_correct}/{len(tests)} test images classified as class {k}; using {used}")
    partner = enc.normalize(tests[0][1])[None]
    rankings: dict[str, torch.Tensor] = {}
    phi_ref = None
    jobs = [("measured", None), ("swapped_seed", None)] + [(f"random_top{n}", n) for n in levels]
    for label, n in iter_with_bar(jobs, "ecr: rankings"):
        key = {**base, "kind": "ecr", "label": label,
               "partner": tensor_digest(partner) if label == "swapped_seed" else None}
        hit = cache.get_tensors(key)
        if hit is not None and label != "measured":
            rankings[label] = hit["ecr"]
            continue
        try:
            if label == "measured":
                e, phi_ref = channel_ecr(inv, x, reg)
            elif label == "swapped_seed":
                e, _ = channel_ecr(inv, x, reg, source=partner)
            else:
                inv_r = AdjointInverter(randomized_encoder(enc, n, cfg.seed), bank,
                                        chunk_size=cfg.chunk_size)
                e, _ = channel_ecr(inv_r, x, reg)
        except AdjinvError as err:
            log(f"  {label}: {err}")
            continue
        rankings[label] = e
        cache.put_tensors(key, {"ecr": e})
    # competing orders that need no inversion (docs/method.md §10): plain activation energy
    # and |α_c| = |W_{k,c} g_c| on the reference; dead channels NaN (last, as for ECR)
    with torch.no_grad(), enc.frozen():
        a_ref = enc.forward_stages(x)[-1][0]
        g_ref = a_ref.mean(dim=(-2, -1))
    wk = head_row(enc, a_ref[None], torch.tensor([k], device=a_ref.device))[0]
    dead = simplex_measure(a_ref[None])[0].cpu() == 0
    energy = a_ref.double().pow(2).mean(dim=(-2, -1)).cpu()
    abs_alpha = (wk.detach().double().cpu() * g_ref.double().cpu()).abs()
    if phi_ref is not None:
        # ECR without the LAC_pix bias (docs/method.md §15): on per-RGB zero-mean φ_c
        live_idx = torch.isfinite(rankings["measured"]).nonzero().flatten()
        zm = torch.full_like(rankings["measured"], float("nan"))
        e_zm = energy_concentration_ratio(centre_rgb(phi_ref), reg.to(phi_ref.device))
        zm[live_idx] = e_zm.cpu().to(zm.dtype)
        rankings["zero_mean"] = zm
    rankings["energy"] = torch.where(dead, torch.nan, energy)
    rankings["abs_alpha"] = torch.where(dead, torch.nan, abs_alpha)
    z = seed_zero(inv, x)
    ecr_zero = energy_concentration_ratio(z, reg.to(z.device))[0]
    curves = {lab: ecr_ablation(head, g, k, e.to(g.device), cfg.fractions,
                                cfg.random_seeds if lab == "measured" else 1, cfg.seed)
              for lab, e in rankings.items()}
    real = rankings["measured"]
    fin = real[torch.isfinite(real)]
    results = {
        "experiment": "ecr ablation (Sec. 3.4, C.8)",
        "encoder": enc.name, "lacs": src, "inputs": desc, "n_test_images": len(tests),
        "head": head_rec,
        "class": {"index": k, "name": enc.class_name(k),
                  "reference_probability": float(ref_logits.softmax(0)[k])},
        "region_area_ratio": float(reg.double().mean()),
        "config": asdict(cfg),
        "test_images": {"classified_as_class": n_correct, "used": used,
                        "mean_p_before": float(p_all[:, k].mean()),
                        "mean_p_before_used": float(p_tests[:, k].mean())},
        "live_channels": int(fin.numel()), "channels": int(real.numel()),
        "live_fraction": float(fin.numel() / real.numel()),
        "ecr_measured": {"mean": float(fin.mean()), "p5": float(fin.quantile(0.05)),
                         "p95": float(fin.quantile(0.95)), "min": float(fin.min()),
                         "max": float(fin.max())},
        "ecr_zero_mean": _spread(rankings.get("zero_mean")),
        "curves": {"measured": curves["measured"].to_dict()},
        "controls": {
            "seed_zero": {"ecr_of_psi0": nan_to_none(ecr_zero),
                          "note": "every channel inversion would be Psi_L(0), so every channel "
                                  "gets this ECR and no ranking exists; compare it with the spread "
                                  "of the measured ECR (ecr_measured)"},
            **{lab: {"spearman_with_measured": nan_to_none(spearman(real, e)),
                     "descending": curves[lab].descending.tolist(),
                     "ascending": curves[lab].ascending.tolist()}
               for lab, e in rankings.items() if lab != "measured"},
        },
        "notes": CONTROLS_NOTE + [
            "Control rankings are applied to the real model's GAP features; a ranking from "
            "swapped seeds or a randomised encoder that damages the class as fast as the measured "
            "one means the measured ranking does not depend on what is being tested.",
            "[choice] channels dead on the reference (no ECR) come last in both ranked orders; "
            "Random is mean and population std over the seeds; n ablated = round(p*C).",
            f"live-fraction limit: only {fin.numel()}/{real.numel()} channels are live on the "
            f"reference, so above {fin.numel() / real.numel():.2f} ablated both ranked orders have "
            "removed every live channel and differ only in dead ones: Descending equals Ascending "
            "there by construction.",
            "zero_mean: the ECR ranking on per-RGB zero-mean phi_c, without the LAC_pix bias "
            "(docs/method.md section 15), which otherwise puts the region's area ratio into every "
            "channel's ECR.",
            "competing orders: 'energy' ranks channels by plain activation energy mean A_c^2 on the "
            "reference, 'abs_alpha' by |W_k,c g_c|; neither needs an inversion. An ECR ranking that "
            "does no better than these adds nothing.",
            "one reference image only (more than one reference is not implemented).",
        ],
        "environment": environment(),
    }
    results["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", table(results))
    plot_curves(results, out / "ablation.png")
    if phi_ref is not None:
        plot_reference(ref, reg, phi_ref, real, out / "reference.png")
    log(f"  {len(tests)} test images ({computed} features computed)")
    return results


def table(results: dict) -> str:
    """The Markdown summary."""
    c = results["curves"]["measured"]
    ti = results.get("test_images", {})
    lines = [f"# ECR ablation — {results['encoder']} (LACs: {results['lacs']})", "",
             f"{results['inputs']}; class {results['class']['name']} "
             f"(p = {results['class']['reference_probability']:.3f} on the reference); "
             f"{results['n_test_images']} test images; region area {results['region_area_ratio']:.3f}; "
             f"{results['live_channels']}/{results['channels']} live channels (above "
             f"{results.get('live_fraction', 1):.2f} ablated, Descending = Ascending by construction); "
             f"{ti.get('classified_as_class', '?')} test images classified as the class, mean p before "
             f"ablation {fmt(ti.get('mean_p_before'))}; curves over {ti.get('used', 'all test images')}.",
             "", *head_lines(results),
             "| fraction ablated | Descending | Ascending | Random (mean ± std) | "
             + " | ".join(f"{k} desc / asc" for k in results["controls"] if k != "seed_zero") + " |",
             "|---|---|---|---|" + "---|" * (len(results["controls"]) - 1)]
    for i, f in enumerate(c["fractions"]):
        ctrl = " | ".join(f"{fmt(v['descending'][i])} / {fmt(v['ascending'][i])}"
                          for k, v in results["controls"].items() if k != "seed_zero")
        lines.append(f"| {f:.2f} | {fmt(c['descending'][i])} | {fmt(c['ascending'][i])} | "
                     f"{fmt(c['random_mean'][i])} ± {fmt(c['random_std'][i])} | {ctrl} |")
    e = results["ecr_measured"]
    lines += ["", f"Measured ECR over live channels: mean {e['mean']:.3f}, 5–95 % "
                  f"[{e['p5']:.3f}, {e['p95']:.3f}]; seed-zero ECR(Ψ_L(0)) = "
                  f"{fmt(results['controls']['seed_zero']['ecr_of_psi0'])}."]
    z = results.get("ecr_zero_mean")
    if z:
        lines.append(f"ECR on per-RGB zero-mean φ_c (no LAC_pix bias): mean {z['mean']:.3f}, 5–95 % "
                     f"[{z['p5']:.3f}, {z['p95']:.3f}].")
    for k, v in results["controls"].items():
        if k != "seed_zero":
            lines.append(f"Spearman({k}, measured) = {fmt(v['spearman_with_measured'])}.")
    lines += ["", *[f"- {n}" for n in results["notes"]], "", f"Wall time {results['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def head_lines(results: dict) -> list[str]:
    """What classified the images: the encoder's own head or the per-dataset probe (C.2)."""
    h = results.get("head", {"head": "encoder"})
    if h.get("head") != "probe":
        return []
    sp = h["split"]
    return [f"Head: a linear probe (C.2) trained on {h['n_train']} images of `{sp['dataset']}`"
            + (f" subset `{sp['subset']}`" if "subset" in sp else "")
            + f" ({len(h['classes'])} classes: {', '.join(h['classes'])}), none of them the "
            f"reference or a test image; accuracy on its training split {h['train_accuracy']:.3f}.",
            ""]


def plot_curves(results: dict, path: Path) -> Path:
    """Probability of the class vs fraction ablated: the three orders, then the controls."""
    plt = pyplot()
    c = results["curves"]["measured"]
    f = c["fractions"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    ax.plot(f, c["descending"], "o-", label="Descending")
    ax.plot(f, c["ascending"], "s-", label="Ascending")
    m, s = torch.tensor(c["random_mean"]), torch.tensor(c["random_std"])
    ax.plot(f, m.tolist(), "^:", label=f"Random ({c['random_seeds']} seeds)")
    ax.fill_between(f, (m - s).tolist(), (m + s).tolist(), alpha=0.2)
    ax.set_title(f"ECR ranking, class {results['class']['name']}", fontsize=9)
    ax2 = axes[1]
    ax2.plot(f, c["descending"], "k-", label="measured desc.")
    for k, v in results["controls"].items():
        if k != "seed_zero":
            ax2.plot(f, v["descending"], "--", label=f"{k} desc.")
    ax2.set_title("control rankings (real model's features)", fontsize=9)
    for a in axes:
        a.set_xlabel("fraction of channels ablated")
        a.set_ylabel("softmax probability")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return save_figure(fig, path)


def plot_reference(ref: torch.Tensor, reg: torch.Tensor, phi: torch.Tensor, ecr: torch.Tensor,
                   path: Path) -> Path:
    """The reference with its region, and the three highest- and lowest-ECR channel inversions."""
    plt = pyplot()
    live = torch.isfinite(ecr).nonzero().flatten()
    order = live[ecr[live].argsort(descending=True)]
    picks = order[:3].tolist() + order[-3:].tolist()
    pos = {int(c): i for i, c in enumerate(live.tolist())}
    fig, axes = plt.subplots(1, 7, figsize=(14, 2.3))
    axes[0].imshow(ref.permute(1, 2, 0).numpy())
    axes[0].contour(reg.numpy().astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
    axes[0].set_title("reference + region", fontsize=8)
    for ax, c in zip(axes[1:], picks, strict=False):
        ax.imshow(robust_minmax(phi[pos[c]].float().cpu()).permute(1, 2, 0).numpy())
        ax.set_title(f"c={c} ECR={float(ecr[c]):.3f}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    return save_figure(fig, path)


EPILOG = """examples:
  adjinv experiment ecr --out runs/ecr                              # embedded composites, Lite0, 96 px
  adjinv experiment ecr --reference birman_12.jpg --region birman_12_tail.png \\
      --data pets/birman_test/ --size 224 --lac lite0.lac.safetensors --out runs/ecr-birman
(--region: a mask image of the reference's size, non-zero inside the region; --data: a folder
of test images, all of the class; --class K fixes the class, default the reference's top-1)
"""


RUNNERS = (Runner(
    "ecr", ECRConfig, run_ecr, help="ECR-ranked channel ablation with controls (Sec. 3.4)",
    description="Rank deepest-stage channels by the energy concentration ratio (Eq. 17) of "
                "their inversions inside a region of one reference image; ablate the GAP "
                "features of test images in Descending / Ascending / Random order.",
    epilog=EPILOG, outputs=("results.json", "table.md", "ablation.png")),)
