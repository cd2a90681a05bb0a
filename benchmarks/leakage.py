"""How much of x̂'s likeness comes from the photo's features, per training objective.

For each LAC variant (``name=checkpoint``), on the held-out photos of the embedded split
(never trained on), with the controls of ``adjinv experiment reconstruction``:

- per photo: Pearson r and affine-SSIM of the trained x̂_L, the swapped-seed, random-seed,
  seed-zero and identity-LAC controls, the feature-specific view x̂ − mean_K x̂_swap, and the
  *feature share* ``(x̂ − swapped)/(x̂ − identity)`` (of Pearson r);
- the learning curve over the variant's kept checkpoints (``<stem>.steps/``);
- β ablation: x̂ with one LAC's β set to zero at evaluation, one LAC at a time.

Writes ``<variant>.json`` per variant and ``leakage.md`` (generated from every variant's
JSON in ``--out``; ``--table-only`` regenerates it) into ``--out``. Variants can run as
separate processes into the same ``--out``.

    python benchmarks/leakage.py --out benchmarks/results/leakage \\
        paper=runs/paper.lac.safetensors pixbias=runs/pixbias.lac.safetensors
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from adjinv import load_encoder
from adjinv.core.inverter import AdjointInverter
from adjinv.fileio import atomic_write_json, atomic_write_text
from adjinv.lacs.checkpoint import load_checkpoint
from adjinv.lacs.training import kept_checkpoints
from adjinv.metrics.likeness import bootstrap_ci
from adjinv.paper.runners.reconstruction import ReconstructionConfig, _Runner

CONTROLS = ("trained", "swapped", "random_seed", "seed_zero", "identity")
METRICS = ("pearson", "ssim_affine", "l1")


def _quiet(_msg: str) -> None:
    pass


def _scores(r: _Runner, inv: AdjointInverter, tag: str, methods: list[str]) -> dict[str, dict]:
    """Per photo (mean over crops) Pearson / affine-SSIM of each method."""
    per: dict[str, dict] = {}
    for name in r.names:
        rows = []
        for k in range(r.cfg.crops):
            outs = {m: r.output(inv, tag, m, name, k)[0] for m in methods}
            rows.append(r.scores(outs, r.x[name][k: k + 1], {}))
        per[name] = {m: {c: float(np.mean([row[m][c] for row in rows])) for c in METRICS}
                     for m in methods}
    return per


MIN_GAIN = 0.02  # below this gain of x̂ over identity LACs (Pearson r) the share is undefined


def _share(p: dict) -> float:
    """(x̂ − swapped)/(x̂ − identity) of Pearson r; NaN when x̂ gains less than MIN_GAIN over
    identity LACs (the ratio of two noise-sized differences means nothing)."""
    den = p["trained"]["pearson"] - p["identity"]["pearson"]
    return (p["trained"]["pearson"] - p["swapped"]["pearson"]) / den if den > MIN_GAIN else float("nan")


def evaluate(enc, name: str, ckpt: str, out: Path, size: int, crops: int, curve_crops: int,
             ablate: bool, curve_every: int) -> dict:
    t0 = time.perf_counter()
    cfg = ReconstructionConfig(lac=ckpt, size=size, crops=crops, partners=[1, 2, 4])
    r = _Runner(cfg, out / name, _quiet, enc)
    methods = [*CONTROLS, *(f"feature_k{k}" for k in r.ks)]
    per = _scores(r, r.inv, "main", methods)
    res: dict = {"checkpoint": Path(ckpt).name, "step": r.lac_meta.get("step"),
                 "best_step": r.lac_meta.get("early_stopping", {}).get("best_step"),
                 "objective": r.lac_meta.get("training", {}).get("objective", "paper"),
                 "per_photo": per, "feature_share": {n: _share(p) for n, p in per.items()}}
    res["mean"] = {m: {c: float(np.mean([per[n][m][c] for n in per])) for c in METRICS} for m in methods}
    shares = [v for v in res["feature_share"].values() if v == v]
    res["feature_share_mean"] = float(np.mean(shares)) if shares else float("nan")
    res["feature_share_ci"] = bootstrap_ci(shares) if shares else [float("nan")] * 3
    if ablate:
        res["beta_ablation"] = {}
        for lac_name, lac in r.inv.lacs.lacs.items():
            if not bool((lac.beta != 0).any()):
                continue
            lacs = copy.deepcopy(r.inv.lacs)
            with torch.no_grad():
                lacs.lacs[lac_name].beta.zero_()
            inv = AdjointInverter(enc, lacs)
            abl = _scores(r, inv, f"no_beta_{lac_name}", ["trained", "seed_zero"])
            res["beta_ablation"][lac_name] = {
                m: {c: float(np.mean([abl[n][m][c] for n in abl])) for c in METRICS}
                for m in ("trained", "seed_zero")}
    curve = []
    for p in kept_checkpoints(ckpt):
        step = int(p.name[5:10])
        if step % curve_every:
            continue
        ccfg = ReconstructionConfig(lac=str(p), size=size, crops=curve_crops, partners=[1])
        # step 0 is the identity LACs for every objective linearised at the same place:
        # one shared cache per place (docs/method.md §16)
        at = r.inv.lacs.linearize_at
        step0 = "_step0" if at == "input" else f"_step0_{at}"
        rc = _Runner(ccfg, out / (step0 if step == 0 else name) / "curve", _quiet, enc)
        sc = _scores(rc, rc.inv, p.name.split(".")[0], [m for m in CONTROLS if m != "identity"])
        for n in sc:  # the identity LACs do not depend on the checkpoint: reuse the main rows
            sc[n]["identity"] = per[n]["identity"]
        assert step == load_checkpoint(p, enc)[1].meta["step"]
        shares = [x for x in (_share(sc[n]) for n in sc) if x == x]
        curve.append({"step": step, **{m: {c: float(np.mean([sc[n][m][c] for n in sc]))
                                           for c in METRICS} for m in CONTROLS},
                      "feature_share": float(np.mean(shares)) if shares else float("nan"),
                      "per_photo": sc})
    res["curve"] = curve
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def _fmt_share(v: float, ci: list[float] | None = None) -> str:
    if v != v:
        return "undefined"
    return f"{v:.2f}" + (f" [{ci[1]:.2f}, {ci[2]:.2f}]" if ci is not None else "")


def table(results: dict) -> str:
    lines = ["# Leakage per training objective (held-out photos)", "",
             "Generated by `benchmarks/leakage.py` from the variants' JSON files beside this table. "
             f"EfficientNet-Lite0 at {results['size']} px, {results['crops']} crop(s) per held-out photo. "
             "Pearson r of x̂_L and its controls against the photo (mean over held-out photos; crops "
             "averaged within a photo); feature share = (x̂ − swapped)/(x̂ − identity) of Pearson r, "
             f"with a 95 % bootstrap interval over photos, undefined where x̂ gains less than "
             f"{MIN_GAIN} over identity LACs.",
             "", "| variant | step (best) | x̂_L | swapped | random seed | seed-zero | identity | "
             "feature view K=4 | feature share |", "|---|---|---|---|---|---|---|---|---|"]
    for v, r in results["variants"].items():
        m = r["mean"]
        fk = max((k for k in m if k.startswith("feature_k")), default=None)
        ci = r["feature_share_ci"]
        lines.append(f"| {v} ({r['objective']}) | {r['step']} ({r['best_step']}) | "
                     + " | ".join(f"{m[c]['pearson']:.3f}" for c in CONTROLS)
                     + f" | {m[fk]['pearson']:.3f} | {_fmt_share(r['feature_share_mean'], ci)} |")
    lines += ["", "Affine-SSIM, same rows:", "", "| variant | " + " | ".join(CONTROLS) + " |",
              "|---|" + "---|" * len(CONTROLS)]
    for v, r in results["variants"].items():
        lines.append(f"| {v} | " + " | ".join(f"{r['mean'][c]['ssim_affine']:.3f}" for c in CONTROLS) + " |")
    lines += ["", "Feature share per held-out photo:", "",
              "| variant | " + " | ".join(next(iter(results["variants"].values()))["feature_share"]) + " |",
              "|---|" + "---|" * len(next(iter(results["variants"].values()))["feature_share"])]
    for v, r in results["variants"].items():
        lines.append(f"| {v} | " + " | ".join(_fmt_share(s) for s in r["feature_share"].values()) + " |")
    for v, r in results["variants"].items():
        if r.get("curve"):
            lines += ["", f"Learning curve, {v} (Pearson r; {results['curve_crops']} crop per photo):", "",
                      "| step | x̂_L | swapped | random seed | seed-zero | feature share |",
                      "|---|---|---|---|---|---|"]
            for c in r["curve"]:
                lines.append(f"| {c['step']} | " + " | ".join(f"{c[m]['pearson']:.3f}" for m in
                             ("trained", "swapped", "random_seed", "seed_zero"))
                             + f" | {_fmt_share(c['feature_share'])} |")
        if r.get("beta_ablation"):
            m = r["mean"]
            lines += ["", f"β ablation, {v} (Pearson r with one LAC's β zeroed at evaluation):", "",
                      "| β zeroed | x̂_L | seed-zero |", "|---|---|---|",
                      f"| none | {m['trained']['pearson']:.3f} | {m['seed_zero']['pearson']:.3f} |"]
            for lac, a in r["beta_ablation"].items():
                lines.append(f"| {lac} | {a['trained']['pearson']:.3f} | {a['seed_zero']['pearson']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", help="name=checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--crops", type=int, default=3)
    ap.add_argument("--curve-crops", type=int, default=1, help="must equal --crops (identity reused)")
    ap.add_argument("--ablate", nargs="*", default=["paper"], help="variants whose β to ablate")
    ap.add_argument("--curve-every", type=int, default=30, help="curve points: steps divisible by N")
    ap.add_argument("--order", nargs="*",
                    default=["paper", "pixbias", "contrastive", "paper-colour", "reference", "multipath"],
                    help="row order of the table")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.table_only:
        enc = load_encoder("efficientnet_lite0")
        for spec in args.variants:
            name, ckpt = spec.split("=", 1)
            v = evaluate(enc, name, ckpt, out / "cache", args.size, args.crops, args.curve_crops,
                         name in args.ablate, args.curve_every)
            atomic_write_json(out / f"{name}.json", {"size": args.size, "crops": args.crops,
                                                     "curve_crops": args.curve_crops, "variant": v})
            print(json.dumps({name: {"feature_share": v["feature_share_mean"], "mean": v["mean"]}}),
                  flush=True)
    found = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    names = [n for n in args.order if n in found] + sorted(set(found) - set(args.order))
    if names:
        first = found[names[0]]
        res = {"size": first["size"], "crops": first["crops"], "curve_crops": first["curve_crops"],
               "variants": {n: found[n]["variant"] for n in names}}
        atomic_write_text(out / "leakage.md", table(res))


if __name__ == "__main__":
    main()
