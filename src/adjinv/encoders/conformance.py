"""Conformance of architectures a user may bring: each one splits and inverts exactly, or
is refused with a clear [`AdjinvError`][adjinv.errors.AdjinvError].

For every torchvision classification builder and a list of timm families (random
initialisation with random BatchNorm statistics, float64, one image of 64 px): the split
must reproduce the model's logits, and the top-``k`` per-channel inversions ``φ`` of the
deepest stage through the default engine (explicit transposes, self-checked) must equal
those of the autograd engine. The explicit transposes are also compared without the
self-check, to record whether it had to step in.

    python -m adjinv.encoders.conformance --out benchmarks/results/conformance.json \\
        --doc docs/compatibility.md            # every model (long)
    python -m adjinv.encoders.conformance --render benchmarks/results/conformance.json \\
        --doc docs/compatibility.md            # the table from a results file
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..core.inverter import AdjointInverter
from ..core.simplex import simplex_measure
from ..errors import AdjinvError, captured_warnings
from .auto import encoder_from_module
from .staged import StagedEncoder

log = logging.getLogger(__name__)

# The smallest variant of each timm family checked (the families named by the suite's
# brief, then a few more with layers of their own).
TIMM_MODELS = (
    "resnet18", "resnet10t", "resnet18d", "resnet26d", "regnetx_002", "regnety_002",
    "efficientnet_b0", "tf_efficientnet_b0", "efficientnet_lite0", "tinynet_e",
    "mobilenetv2_035", "mobilenetv3_small_050", "tf_mobilenetv3_small_minimal_100", "mixnet_s",
    "tf_mixnet_s", "rexnet_100", "cspresnet50", "cs3darknet_s", "convnext_atto", "ghostnet_050",
    "lcnet_050", "mnasnet_small", "fbnetc_100", "hardcorenas_a", "repvgg_a0", "gernet_s",
    "dla34", "selecsls42b", "resnext26ts", "efficientnetv2_rw_t", "tf_efficientnetv2_b0",
    "vgg11", "densenet121", "vit_tiny_patch16_224",
)
# What the default test run checks (each a few seconds on 2 cores).
SUBSET = ("torchvision/mobilenet_v2", "torchvision/squeezenet1_1", "torchvision/shufflenet_v2_x0_5",
          "torchvision/mnasnet0_5", "timm/regnetx_002", "timm/resnet10t", "timm/mobilenetv3_small_050",
          "timm/ghostnet_050")
SIZES = {"torchvision/inception_v3": 96}  # its smallest valid input is 75 px
NUM_CLASSES = 10
PHI_RTOL = 1e-6  # float64: the engines differ by summation order only (≈1e-13)


def torchvision_models() -> list[str]:
    """Every classification builder of torchvision, as ``torchvision/<name>``."""
    import torchvision

    return [f"torchvision/{n}" for n in torchvision.models.list_models(module=torchvision.models)]


def all_models() -> list[str]:
    """torchvision's builders and [`TIMM_MODELS`][TIMM_MODELS] (if timm is installed)."""
    names = torchvision_models()
    try:
        import timm
    except ImportError:
        return names
    known = set(timm.list_models())
    return names + [f"timm/{n}" for n in TIMM_MODELS if n in known]


def build(name: str, seed: int = 0) -> nn.Module:
    """Random-init model ``source/name`` (nothing is downloaded), BatchNorm statistics and
    affine parameters drawn at random so that no BatchNorm is an identity."""
    torch.manual_seed(seed)
    source, arch = name.split("/", 1)
    if source == "torchvision":
        import torchvision

        kw = {"aux_logits": False, "init_weights": False} if arch in ("inception_v3", "googlenet") else {}
        model = torchvision.models.get_model(arch, weights=None, num_classes=NUM_CLASSES, **kw)
    elif source == "timm":
        import timm

        model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES)
    else:
        raise ValueError(f"unknown source {source!r} (torchvision/… or timm/…)")
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None
                    and m.running_mean is not None):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(b.norm())
    return float((a - b).norm()) / den if den > 0 else float((a - b).norm())


def check_model(name: str, *, size: int | None = None, top_k: int = 4, seed: int = 0) -> dict:
    """One model's conformance record: split, engines per stage, errors, status, reason.

    ``status``: ``explicit`` / ``mixed`` / ``autograd`` (engines of the stages, all
    checks passed), ``refused`` (an AdjinvError, ``reason`` its message) or ``FAILED``
    (a wrong result or a raw crash: a bug)."""
    size = size or SIZES.get(name, 64)
    rec: dict = {"model": name, "size": size, "status": "FAILED", "reason": ""}
    t0 = time.perf_counter()
    try:
        model = build(name, seed).double()
    except Exception as e:  # a builder that does not build is reported, not fatal
        rec.update(status="unbuildable", reason=f"{type(e).__name__}: {e}"[:300])
        return rec
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enc = encoder_from_module(model, probe_size=size, name=name)
    except AdjinvError as e:
        rec.update(status="refused", reason=str(e), seconds=time.perf_counter() - t0)
        return rec
    except Exception as e:
        rec.update(reason=f"raw {type(e).__name__}: {e}"[:500], seconds=time.perf_counter() - t0)
        return rec
    rec.update(split=enc.split_method, head=type(enc.head).__name__,
               stages=[i.name for i in enc.infos], channels=[i.channels for i in enc.infos],
               reductions=[i.reduction for i in enc.infos], lac_boundaries=enc.lac_boundaries)
    try:
        rec.update(_compare(model, enc, size, top_k, seed))
    except Exception as e:
        rec.update(reason=f"raw {type(e).__name__} while inverting: {e}"[:500])
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _compare(model: nn.Module, enc: StagedEncoder, size: int, top_k: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, size, size, generator=g, dtype=torch.float64)
    out: dict = {}
    with torch.no_grad():
        ref_logits = model(x)
        logits = enc(x)
        out["logits_rel_err"] = _rel(logits, ref_logits)
    last = enc.num_stages - 1
    with captured_warnings() as caught:
        auto = AdjointInverter(enc, chunk_size=top_k)
        with enc.frozen(), torch.no_grad():
            lin = auto.cascade.linearize(x)
    fallbacks = [str(w.message) for w in caught if "explicit transpose differs" in str(w.message)]
    with torch.no_grad():
        w = simplex_measure(lin.acts[-1])
    ch = w.topk(min(top_k, w.shape[1]), dim=1).indices[0].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        phi = auto.channel_inversions(x, last, ch)
        phi_ref = AdjointInverter(enc, chunk_size=top_k, engine="autograd").channel_inversions(x, last, ch)
        phi_raw = AdjointInverter(enc, chunk_size=top_k, verify=False).channel_inversions(x, last, ch)
    out.update(engines=["explicit" if e else "autograd" for e in lin.explicit],
               check_errors=lin.check_errors, self_check_fallbacks=fallbacks,
               phi_rel_err=_rel(phi, phi_ref), phi_rel_err_unchecked=_rel(phi_raw, phi_ref),
               finite=bool(torch.isfinite(phi).all()))
    if out["logits_rel_err"] > 1e-6:
        out["reason"] = f"the split's logits differ by {out['logits_rel_err']:.1e}"
    elif not out["finite"]:
        out["reason"] = "non-finite φ"
    elif out["phi_rel_err"] > PHI_RTOL:
        out["reason"] = f"φ differs from the autograd engine by {out['phi_rel_err']:.1e}"
    else:
        n = sum(lin.explicit)
        out["status"] = "explicit" if n == len(lin.explicit) else "autograd" if n == 0 else "mixed"
    return out


# ----------------------------------------------------------------------------- the document
STATUSES = ("explicit", "mixed", "autograd", "refused", "FAILED", "unbuildable")


def render(results: dict) -> str:
    """docs/compatibility.md from a results file written by [`main()`][main]."""
    rows = results["models"]
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines = [
        "# Compatibility",
        "",
        "Generated by `python -m adjinv.encoders.conformance` from "
        f"`{results['results_file']}` ({results['date']}, torch {results['torch']}, "
        f"torchvision {results['torchvision']}, timm {results.get('timm', '-')}). Do not edit by hand.",
        "",
        "Every torchvision classification builder and the smallest variant of a list of timm "
        "families, with random weights and random BatchNorm statistics (nothing downloaded), "
        f"in float64 on one {results['size']} px image (inception_v3: 96 px, its smallest valid "
        "input is 75 px). `encoder_from_module` splits each model; "
        "the split must reproduce the model's logits, and the top-4 per-channel inversions "
        "φ of the deepest stage through the default engine (explicit stage transposes, each "
        "self-checked against `torch.func.vjp`) must equal those of `engine=\"autograd\"` "
        f"(relative error ≤ {PHI_RTOL:g}). Otherwise the model must be refused with an "
        "`AdjinvError` naming the reason.",
        "",
        "- **explicit**: every stage uses the explicit transposes;",
        "- **mixed**: some stages fall back to autograd (ops without an explicit transpose);",
        "- **autograd**: every stage uses `vmap` over `torch.func.vjp`;",
        "- **refused**: a clear `AdjinvError` (reason below);",
        "- **FAILED**: a wrong result or a raw crash (a bug).",
        "",
        "| status | models |",
        "|---|---|",
        *[f"| {s} | {counts[s]} |" for s in STATUSES if counts[s] or s != "unbuildable"],
        f"| total | {len(rows)} |",
        "",
        "Engine per stage: `E` explicit, `a` autograd. *split*: how the stages were found "
        "(`children`: the model's child modules; `fx graph`: cuts of its FX graph before each "
        "drop of resolution; `timm feature_info`: the stage outputs timm declares). *head*: "
        "`LinearHead` (GAP → [LayerNorm] → Linear) or `ModuleHead` (any differentiable head; "
        "the class-directional weights then come from the logit gradient, see below). "
        "*unchecked φ err*: the explicit engine with the self-check switched off.",
        "",
        "| model | status | split | stages | LAC boundaries | engines | head | φ err | unchecked φ err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] in ("refused", "unbuildable"):
            continue
        eng = "".join("E" if e == "explicit" else "a" for e in r.get("engines", []))
        nan = float("nan")
        lines.append(
            f"| {r['model']} | {r['status']} | {r.get('split', '')} | {len(r.get('stages', []))} "
            f"| {r.get('lac_boundaries', '')} | `{eng}` | {r.get('head', '')} "
            f"| {r.get('phi_rel_err', nan):.0e} | {r.get('phi_rel_err_unchecked', nan):.0e} |"
        )
    caught = [r for r in rows if r.get("self_check_fallbacks")]
    lines += ["", "## Stages the self-check sent to autograd", ""]
    if caught:
        for r in caught:
            for msg in r["self_check_fallbacks"]:
                lines.append(f"- {r['model']}: {msg}")
    else:
        lines.append("None: every explicit transpose matched autograd.")
    lines += ["", "## Refused models", ""]
    for r in rows:
        if r["status"] in ("refused", "FAILED", "unbuildable"):
            reason = r["reason"].replace("|", "/").replace("\n", " ")
            lines.append(f"- **{r['model']}** ({r['status']}): {reason}")
    if results.get("not_run"):
        lines += ["", "## Not run in this results file", "",
                  "The run was stopped before these (the largest) models: "
                  + ", ".join(results["not_run"]) + "."]
    lines += [
        "",
        "## Heads that are not GAP → Linear",
        "",
        "For a linear head on global-average-pooled features the class-directional weight of "
        "channel c for class k is the logit contribution α = W_k,c·g_c (Eq. 12). For any other "
        "differentiable head z = h(A_L) (an MLP, a convolutional classifier) adjinv uses the "
        "gradient G = ∂z_k/∂A_L of the class logit with respect to the deepest map: "
        "W_k,c becomes Σ_hw G_c,hw and the contribution W_k,c·g_c becomes Σ_hw G_c,hw·A_c,hw, the "
        "channel's first-order share of the logit at this image. For a linear head on GAP, "
        "G = W_k,c/(h·w) at every position, so the two coincide exactly (tested).",
        "",
    ]
    return "\n".join(lines)


_BIG = ("vit_h", "vit_l", "128gf", "32gf", "16gf", "_b7", "_b6", "_b5", "large", "_l_", "v2_l",
        "v2_m", "152", "101", "vgg19", "vgg16", "_b4", "swin_v2_b", "_base", "_b_", "b_16", "b_32",
        "8gf", "x_8", "3_2gf", "x_3", "vgg13", "vgg11", "wide")


def _cost_rank(name: str) -> int:
    """Rough build-and-run cost: models with large markers in their names go last."""
    return sum(tag in name for tag in _BIG)


def main(argv: list[str] | None = None) -> None:
    """Run the suite (or re-render a results file) and write the JSON and the document."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="source/name; default: all")
    ap.add_argument("--out", default="benchmarks/results/conformance.json")
    ap.add_argument("--doc", default="docs/compatibility.md")
    ap.add_argument("--render", nargs="+", default=None,
                    help="only merge these results files into --out (a model in a later file "
                         "replaces its record in an earlier one) and render --doc")
    ap.add_argument("--shard", default=None, help="i/n: every n-th model from the i-th, cheap ones first")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ..fileio import atomic_write_json

    if args.render:
        parts = [json.loads(Path(f).read_text()) for f in args.render]
        latest = {r["model"]: r for p in parts for r in p["models"]}  # later files win
        results = {**parts[0], "results_file": args.out,
                   "models": sorted(latest.values(), key=lambda r: r["model"]),
                   "not_run": [n for n in all_models() if n not in latest]}
        atomic_write_json(args.out, results)
        Path(args.doc).write_text(render(results))
        return
    import torchvision

    names = args.models or sorted(all_models(), key=_cost_rank)
    if args.shard:
        i, n = (int(v) for v in args.shard.split("/"))
        names = names[i::n]
    results = {"results_file": args.out, "date": time.strftime("%Y-%m-%d"), "size": 64,
               "torch": torch.__version__, "torchvision": torchvision.__version__, "models": []}
    try:
        import timm

        results["timm"] = timm.__version__
    except ImportError:
        pass
    for name in names:
        rec = check_model(name)
        results["models"].append(rec)
        log.info("%s: %s %s", name, rec["status"], rec.get("reason", "")[:120])
        atomic_write_json(args.out, results)  # progress survives an interruption
    Path(args.doc).write_text(render(results))


if __name__ == "__main__":
    main()
