"""Mahendran & Vedaldi (2015) on EfficientNet-Lite0, run to convergence, its prior weights
chosen on validation photos only; then the held-out photos from every stage.

1. Validation sweep: on the corpus's colour validation photos (centre crops at
   ``--size``), each TV-weight multiplier of ``--tv-scales`` (× M&V's normalised λ_TV;
   λ_α at M&V's normalised value) with each optimiser of ``--optimizers`` (``sgd``: M&V's
   momentum SGD; ``adam``), one photo per run, each run stopped by the stopping rule of
   ``adjinv.paper.baselines.mahendran`` (``--tol``, ``--window``, ``--min-steps``) or at
   the cap ``--steps``. Scores per photo: Pearson r (RGB, ``pearson_rgb``) and ℓ1 (mean
   |x̂ − x| in the encoder's normalised space) against the photo.
2. Selection [choice]: the setting with the best mean validation Pearson r. r is
   invariant to a per-channel gain and offset and is 0 for a flat output, so it rewards
   structure; ℓ1 rewards a flat mean-grey output (the minimiser of ℓ1 when nothing is
   known), so it is reported beside r but not used to choose. The "paper" setting is
   M&V's own normalised weights (multiplier 1) with the optimiser that has the better
   mean validation r at multiplier 1.
3. Held-out: with the chosen and the paper setting, every held-out photo (the embedded
   held-out photos and the corpus's) inverted from each stage of ``--stages`` (default
   all; the last is the deepest), scored by r and ℓ1, with the steps run and whether the
   stopping rule ended the run.

Writes JSON atomically after every run (``--out``); a rerun skips the runs already in it
(the settings that define a result must match, else it stops). Beside it, a PNG figure
of ``--figure-photos`` held-out photos: the photo, then M&V (paper, deepest), M&V
(chosen, deepest) and M&V (chosen) from the ``--figure-stages``, each through the
per-image affine display mapping (``adjinv.metrics.likeness.affine_fit``: gain and
offset per RGB channel fitted to the photo by least squares, as for every method), r in
each title. The displayed panels are kept as PNG files in ``OUT-panels/`` so that a
resumed run can draw the figure.

    python benchmarks/mv_sweep.py                       # the real run (long: see --timing)
    python benchmarks/mv_sweep.py --timing 5            # per-step cost and the run's estimate
    python benchmarks/mv_sweep.py --size 64 --steps 20 --photos-limit 2 --out /tmp/mv.json
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import torch

from adjinv import load_encoder
from adjinv.fileio import atomic_write_bytes, atomic_write_json, finite_json, safe_name, save_png
from adjinv.images.files import resize_center_crop
from adjinv.images.photos import split_photos
from adjinv.metrics.likeness import affine_fit, pearson_rgb
from adjinv.paper.baselines.mahendran import MVConfig, mahendran_vedaldi
from adjinv.paper.data.corpus import load_corpus_split

ENCODER = "efficientnet_lite0"
# the settings that define a stored result: a rerun must agree on them to resume
PROTOCOL_KEYS = ("encoder", "size", "steps", "window", "tol", "min_steps", "sgd_lr", "adam_lr",
                 "tv_scales", "optimizers", "validation_photos", "heldout_photos", "seed")


def setting_key(optimizer: str, tv_scale: float) -> str:
    return f"{optimizer}-tv{tv_scale:g}"


def make_config(args: argparse.Namespace, optimizer: str, tv_scale: float, stage: int = -1) -> MVConfig:
    lr = args.sgd_lr if optimizer == "sgd" else args.adam_lr
    return MVConfig(steps=args.steps, optimizer=optimizer, lr=lr, tol=args.tol, window=args.window,
                    min_steps=args.min_steps, tv_scale=tv_scale, alpha_scale=1.0, stage=stage,
                    seed=args.seed)


def invert_one(enc, x: torch.Tensor, cfg: MVConfig) -> tuple[torch.Tensor, dict]:
    """One photo (1, 3, H, W), normalised: the reconstruction and its record."""
    t0 = time.perf_counter()
    out = mahendran_vedaldi(enc, x, cfg)
    info = cfg.run_info()
    l1 = float((out - x).abs().mean())
    # a diverged run (non-finite energy, non-finite image) scores r = 0 (pearson_rgb's
    # value for a channel without correlation) and no l1
    rec = {"pearson": float(pearson_rgb(out, x)[0]), "l1": l1 if math.isfinite(l1) else None,
           "steps_run": info["steps_run"], "converged": info["converged"], "diverged": info["diverged"],
           "energy_first": cfg.history[0], "energy_final": info["energy_final"],
           "seconds": round(time.perf_counter() - t0, 2)}
    return out, rec


def summary(photos: dict[str, dict]) -> dict:
    vals = list(photos.values())
    if not vals:
        return {"n": 0}
    r = [v["pearson"] for v in vals]
    l1 = [v["l1"] for v in vals if v["l1"] is not None]
    return {"n": len(vals), "mean_pearson": sum(r) / len(r),
            "mean_l1": sum(l1) / len(l1) if len(l1) == len(vals) else None,
            "converged": sum(bool(v["converged"]) for v in vals),
            "diverged": sum(bool(v.get("diverged")) for v in vals),
            "mean_steps_run": sum(v["steps_run"] for v in vals) / len(vals)}


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _run_line(rec: dict) -> str:
    return (f"r {rec['pearson']:.3f} l1 {_num(rec['l1'])} steps {rec['steps_run']} converged "
            f"{rec['converged']} diverged {rec['diverged']} {rec['seconds']:.0f}s")


def _line(summ: dict) -> str:
    return (f"mean r {summ['mean_pearson']:.3f} mean l1 {_num(summ['mean_l1'])} converged "
            f"{summ['converged']}/{summ['n']} diverged {summ['diverged']} "
            f"mean steps {summ['mean_steps_run']:.0f}")


def load_photos(args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    val = load_corpus_split(args.corpus, "validation", colour_only=True)
    held = {**split_photos("heldout"), **load_corpus_split(args.corpus, "heldout")}
    if args.photos_limit:
        val = dict(list(val.items())[: args.photos_limit])
        held = dict(list(held.items())[: args.photos_limit])
    return val, held


def timing(enc, args: argparse.Namespace, stages: list[int], n_val: int, n_held: int) -> None:
    """Seconds per step at batch 1 for each stage and optimiser, and the run's cost."""
    x = enc.normalize(torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)))
    per: dict[int, float] = {}
    for k in stages:
        ts = []
        for opt in args.optimizers:
            mahendran_vedaldi(enc, x, MVConfig(steps=2, optimizer=opt, stage=k))  # warm-up
            t0 = time.perf_counter()
            mahendran_vedaldi(enc, x, MVConfig(steps=args.timing, optimizer=opt, stage=k))
            ts.append((time.perf_counter() - t0) / args.timing)
            print(f"stage {k} {opt}: {ts[-1]:.4f} s/step", flush=True)
        per[k] = max(ts)
    deepest = per[max(stages)]
    n_set = len(args.tv_scales) * len(args.optimizers)
    val_steps = n_set * n_val
    held_runs = 2 * n_held
    for label, steps in (("cap", args.steps), ("min_steps", max(args.min_steps, 2 * args.window))):
        v = val_steps * steps * deepest
        h = held_runs * steps * sum(per.values())
        print(f"if every run stops at the {label} ({steps} steps): validation {n_set} settings x "
              f"{n_val} photos = {v / 60:.0f} CPU-min; held-out 2 settings x {n_held} photos x "
              f"{len(stages)} stages = {h / 60:.0f} CPU-min; total {(v + h) / 60:.0f} CPU-min "
              f"({(v + h) / 3600:.1f} h on {args.threads} thread(s))", flush=True)


def draw_figure(path: Path, panels_dir: Path, data: dict, names: list[str], columns: list[tuple[str, str]]
                ) -> bool:
    """The figure from the stored panels; False when a panel is missing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from adjinv.images.files import load_image

    rows = []
    for name in names:
        row = []
        for title, run in columns:
            p = panels_dir / f"{safe_name(run)}__{safe_name(name)}.png"
            if not p.is_file():
                return False
            r = None
            if run != "photo":
                key, stage = run.split("/stage")
                r = data["heldout"][key][f"stage{stage}"]["photos"][name]["pearson"]
            row.append((title, load_image(p), r))
        rows.append(row)
    fig = Figure(figsize=(1.9 * len(columns), 2.0 * len(names)))
    FigureCanvasAgg(fig)
    for i, (name, row) in enumerate(zip(names, rows, strict=True)):
        for j, (title, img, r) in enumerate(row):
            ax = fig.add_subplot(len(names), len(columns), i * len(columns) + j + 1)
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            label = "" if r is None else f"r = {r:.2f}"
            ax.set_title(f"{title}\n{label}" if i == 0 else label, fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="corpus")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=2000, help="cap on the steps of one run")
    ap.add_argument("--tol", type=float, default=1e-3, help="stopping rule tolerance (0: run every step)")
    ap.add_argument("--window", type=int, default=50, help="stopping rule window (steps)")
    ap.add_argument("--min-steps", type=int, default=1000,
                    help="steps before the stopping rule is read: from the near-zero start, momentum "
                         "SGD sits on a plateau at E ~ 1 for 250+ steps at 224 px (see mahendran.py)")
    ap.add_argument("--tv-scales", type=float, nargs="+", default=[1.0, 4.0, 16.0, 64.0],
                    help="multipliers of M&V's normalised TV weight (1 is the paper setting)")
    ap.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"])
    ap.add_argument("--sgd-lr", type=float, default=0.05)
    ap.add_argument("--adam-lr", type=float, default=0.01)
    ap.add_argument("--stages", type=int, nargs="+", default=None,
                    help="stages to invert the held-out photos from (default: all)")
    ap.add_argument("--figure-stages", type=int, nargs="+", default=None,
                    help="shallower stages in the figure (default: the two below the deepest)")
    ap.add_argument("--figure-photos", type=int, default=4)
    ap.add_argument("--photos-limit", type=int, default=0, help="first N validation and N held-out photos")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing", type=int, default=0,
                    help="time N steps per stage at batch 1, print the run's cost estimate and stop")
    ap.add_argument("--out", default="benchmarks/results/baselines/mv-lite0-224.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if 1.0 not in args.tv_scales:
        raise SystemExit("--tv-scales must contain 1 (M&V's own weights, the paper setting)")

    enc = load_encoder(ENCODER)
    n = enc.num_stages
    deepest = n - 1
    if any(not -n <= s < n for s in (args.stages or []) + (args.figure_stages or [])):
        raise SystemExit(f"--stages and --figure-stages must lie in 0..{deepest} (or -1..-{n})")
    stages = sorted({s % n for s in (args.stages or range(n))} | {deepest})
    fig_stages = args.figure_stages if args.figure_stages is not None else stages[-3:-1]
    fig_stages = sorted({s % n for s in fig_stages}, reverse=True)
    if any(s not in stages for s in fig_stages):
        raise SystemExit(f"--figure-stages must be among the stages run: {stages}")

    val, held = load_photos(args)
    if args.timing:
        timing(enc, args, stages, len(val), len(held))
        return

    out = Path(args.out)
    panels = out.with_name(out.stem + "-panels")
    fig_names = list(held)[: args.figure_photos]
    protocol = {
        "encoder": ENCODER, "size": args.size, "steps": args.steps, "window": args.window,
        "tol": args.tol, "min_steps": args.min_steps, "sgd_lr": args.sgd_lr, "adam_lr": args.adam_lr,
        "tv_scales": args.tv_scales, "optimizers": args.optimizers, "seed": args.seed,
        "validation_photos": list(val), "heldout_photos": list(held),
        "alpha_weight": "M&V's normalised value (alpha_scale 1)",
        "selection": "best mean validation Pearson r (RGB); l1 reported, not used",
        "paper_setting": "tv_scale 1 with the optimiser of better mean validation r at tv_scale 1",
        "metrics": "pearson_rgb(x_hat, x) and mean |x_hat - x|, both in the encoder's normalised space",
        "stopping_rule": "adjinv.paper.baselines.mahendran: window means, relative to the decrease "
                         "so far; steps is the cap",
        "torch": torch.__version__,
    }
    data: dict = {"protocol": protocol, "validation": {}, "validation_summary": {}, "chosen": None,
                  "paper": None, "heldout": {}, "heldout_summary": {}, "figure": None}
    if out.is_file():
        import json

        old = json.loads(out.read_text())
        diff = [k for k in PROTOCOL_KEYS if old["protocol"].get(k) != protocol[k]]
        if diff:
            raise SystemExit(f"{out} holds results of other settings ({', '.join(diff)}): pass another "
                             "--out or the same settings")
        data.update({k: old[k] for k in ("validation", "heldout") if k in old})
        print(f"resuming {out}", flush=True)

    def save() -> None:
        data["validation_summary"] = {k: summary(v["photos"]) for k, v in data["validation"].items()}
        data["heldout_summary"] = {k: {s: summary(v["photos"]) for s, v in by.items()}
                                   for k, by in data["heldout"].items()}
        atomic_write_json(out, finite_json(data))

    def x_of(img: torch.Tensor) -> torch.Tensor:
        return enc.normalize(resize_center_crop(img, args.size)[None])

    # 1. validation sweep
    grid = [(o, s) for s in args.tv_scales for o in args.optimizers]
    for opt, scale in grid:
        key = setting_key(opt, scale)
        cfg = make_config(args, opt, scale)
        entry = data["validation"].setdefault(key, {"config": cfg.to_dict(), "photos": {}})
        for name, img in val.items():
            if name in entry["photos"]:
                continue
            _, rec = invert_one(enc, x_of(img), make_config(args, opt, scale))
            entry["photos"][name] = rec
            print(f"validation {key} {name}: {_run_line(rec)}", flush=True)
            save()
    save()
    for k, summ in data["validation_summary"].items():
        print(f"validation {k}: {_line(summ)}")
    means = {k: data["validation_summary"][k]["mean_pearson"] for k in data["validation"]}
    chosen = max(means, key=lambda k: (means[k], k))
    paper = max((setting_key(o, 1.0) for o in args.optimizers), key=lambda k: (means[k], k))
    data["chosen"], data["paper"] = chosen, paper
    print(f"chosen {chosen} (mean validation r {means[chosen]:.3f}); paper {paper} "
          f"({means[paper]:.3f})", flush=True)

    # 2. held-out photos from every stage, chosen and paper settings
    for key in dict.fromkeys([chosen, paper]):
        opt, scale = key.split("-tv")
        for k in sorted(stages, reverse=True):
            cfg = make_config(args, opt, float(scale), stage=k)
            entry = data["heldout"].setdefault(key, {}).setdefault(
                f"stage{k}", {"config": cfg.to_dict(), "photos": {}})
            for name, img in held.items():
                if name in entry["photos"]:
                    continue
                x = x_of(img)
                xh, rec = invert_one(enc, x, make_config(args, opt, float(scale), stage=k))
                entry["photos"][name] = rec
                if name in fig_names and k in (deepest, *fig_stages):
                    x01 = enc.denormalize(x)
                    save_png(panels / f"photo__{safe_name(name)}.png", x01[0].clamp(0, 1))
                    shown = affine_fit(enc.denormalize(xh), x01)
                    save_png(panels / f"{safe_name(f'{key}/stage{k}')}__{safe_name(name)}.png", shown[0])
                print(f"held-out {key} stage {k} {name}: {_run_line(rec)}", flush=True)
                save()
    save()

    # 3. figure
    columns = [("photo", "photo")]
    if paper != chosen:
        columns.append((f"M&V paper ({paper})\nstage {deepest} (deepest)", f"{paper}/stage{deepest}"))
    columns.append((f"M&V chosen ({chosen})\nstage {deepest} (deepest)", f"{chosen}/stage{deepest}"))
    columns += [(f"M&V chosen\nstage {k}", f"{chosen}/stage{k}") for k in fig_stages]
    png = out.with_suffix(".png")
    data["figure"] = {"png": png.name, "panels": panels.name, "photos": fig_names,
                      "columns": [title.replace("\n", ", ") for title, _ in columns],
                      "display": "photo as is; every reconstruction through affine_fit (gain and offset "
                                 "per RGB channel fitted to the photo by least squares, clipped)"}
    save()
    if fig_names and draw_figure(png, panels, data, fig_names, columns):
        print(f"wrote {png}")
    else:
        print("figure not drawn: panels missing (the figure photos were run before this figure "
              f"was asked for; delete their entries in {out} to rerun them)")
    for key in dict.fromkeys([chosen, paper]):
        for s, summ in data["heldout_summary"][key].items():
            print(f"held-out {key} {s}: {_line(summ)}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
