"""O3, "the gap grows with capacity", over EfficientNet-Lite0, Lite1 and Lite2.

Each encoder has bundled LACs trained by the same recipe (``make lac``, ``make lac-lite``:
the paper objective on the training split's colour photos, best validation checkpoint).
The three runners are run per encoder at the same settings (96 px, 1 thread):

    adjinv experiment fg-paradox --encoder efficientnet_lite0 --encoder efficientnet_lite1 \\
        --encoder efficientnet_lite2 --out benchmarks/results/capacity/fg-paradox --threads 1
    adjinv experiment superposition --encoder efficientnet_liteN \\
        --out benchmarks/results/capacity/superposition-liteN --threads 1
    adjinv experiment reconstruction --encoder efficientnet_liteN --config CONFIG \\
        --out benchmarks/results/capacity/reconstruction-liteN --threads 1

(Lite0's reconstruction evaluation is ``benchmarks/results/reconstruction-default``, the same
setting; CONFIG repeats its settings: 1 crop, 50 M&V and 100 UpConvNet steps on 8 crops, the
other two encoders as re-encoders.) This script gathers them, with each encoder's parameter
count, into ``benchmarks/results/capacity/results.json``; docs/interference.md is generated
from it (benchmarks/docs_tables.py).

    python benchmarks/capacity.py
"""

from __future__ import annotations

import json
from pathlib import Path

from scipy.stats import spearmanr

from adjinv import load_encoder
from adjinv.fileio import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results" / "capacity"
ENCODERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _read(rel: str | Path) -> dict:
    return json.loads((REPO / rel).read_text())


def _reconstruction(name: str) -> str:
    if name == "efficientnet_lite0":
        return "benchmarks/results/reconstruction-default/results.json"
    return f"benchmarks/results/capacity/reconstruction-lite{name[-1]}/results.json"


def main() -> None:
    fg = _read(OUT / "fg-paradox" / "results.json")
    per_fg = {p["encoder"]: p["summary"] for p in fg["encoders"]}
    missing = [e for e in ENCODERS if e not in per_fg]
    if missing:
        raise SystemExit(f"fg-paradox results lack {missing}: run the command in this file's docstring")
    rows = []
    for name in ENCODERS:
        enc = load_encoder(name)
        params = sum(p.numel() for p in enc.parameters())
        s = per_fg[name]
        sp = _read(OUT / f"superposition-lite{name[-1]}" / "results.json")["summary"]
        rec = _read(_reconstruction(name))
        o2 = {v: {k: s[k][v]["O2"] for k in ("measured", "swapped_seed", "head_permuted", "head_random")}
              for v in ("raw", "zero_mean")}
        rows.append({
            "encoder": name, "parameters": params,
            "lacs": rec["lacs"],
            "fg": {"area_ratio": s["area_ratio"], "full_zero_mean": s["measured"]["zero_mean"]["full"],
                   "O2": o2},
            "h1": {v: sp["measured"][v]["energy_fraction"] for v in ("raw", "zero_mean")},
            "h1_swapped_seed": {v: sp["swapped_seed"][v]["energy_fraction"] for v in ("raw", "zero_mean")},
            "b1": {h: sp["h2"][h]["zero_mean"]["B1"] for h in sp["h2"]},
            "reconstruction": {
                "pearson": rec["summary"]["trained"]["pearson"],
                "swapped_pearson": rec["summary"]["swapped"]["pearson"],
                "identity_pearson": rec["summary"]["identity"]["pearson"],
                "feature_share": {p: v["feature_share_pearson"] for p, v in rec["verdicts"].items()},
                "verdicts": sum(bool(v["reconstructs_from_features"]) for v in rec["verdicts"].values()),
                "photos": len(rec["verdicts"])},
        })
    gaps = [r["fg"]["O2"]["zero_mean"]["measured"]["mean"] for r in rows]
    raw = [r["fg"]["O2"]["raw"]["measured"]["mean"] for r in rows]
    res = {"encoders": list(ENCODERS), "size": fg["config"]["size"], "data": fg["dataset"],
           "rows": rows,
           "o3": {v: {"gaps": g, "monotone_increasing": all(a < b for a, b in zip(g, g[1:], strict=False)),
                      "spearman_params_vs_gap": float(spearmanr([r["parameters"] for r in rows], g)[0])}
                  for v, g in (("raw", raw), ("zero_mean", gaps))},
           "sources": {"fg_paradox": "benchmarks/results/capacity/fg-paradox/results.json",
                       "superposition": [f"benchmarks/results/capacity/superposition-lite{e[-1]}/results.json"
                                         for e in ENCODERS],
                       "reconstruction": [_reconstruction(e) for e in ENCODERS]}}
    print(atomic_write_json(OUT / "results.json", res))


if __name__ == "__main__":
    main()
