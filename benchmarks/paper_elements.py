"""Every element of the paper, its command, our number and a status (docs/paper-claims.md).

The catalogue is ``benchmarks/paper_elements.json``: one entry per element (id, where it is
in the paper, a one-line description, what the paper's text kept of its number, the command
that measures or verifies it here, the results files or tests behind it, and the status
rule). This module turns it into the table of docs/paper-claims.md:

- ``basis: results``: the extractor registered below under the element's id reads the
  committed results file(s) and applies the rule written in the catalogue. Elements whose
  results another run will add list them as ``expected``; until those files exist the
  extractor says "not run".
- ``basis: tests``: a definition or identity implemented in the library; the status is
  "implemented (tested)" and the cell names the tests, never a number.
- ``basis: tests-refute``: a claim the named tests show to be false.
- ``basis: none``: nothing measures it yet ("missing"); the command says what would.
- ``basis: commentary``: a remark with no claim of its own to measure ("not comparable").

``problems()`` lists what is inconsistent in the catalogue (the test suite calls it);
``table()`` renders the generated block (``benchmarks/docs_tables.py`` calls it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CATALOGUE = REPO / "benchmarks" / "paper_elements.json"
RESULTS = REPO / "benchmarks" / "results"
STATUSES = ("agrees", "disagrees", "not comparable", "implemented (tested)", "not run", "missing")
BASES = ("results", "tests", "tests-refute", "none", "commentary")

Cell = tuple[str, str]  # (our number, status)


def load() -> dict:
    return json.loads(CATALOGUE.read_text())


def _j(rel: str) -> dict:
    """A results file by its path relative to the repository root."""
    return json.loads((REPO / rel).read_text())


def _pc(name: str) -> dict:
    return _j(f"benchmarks/results/paper_claims/{name}.json")


def _ci(s: dict | None) -> str:
    """A bootstrap summary as 'mean [lo, hi]'."""
    if not s or s.get("mean") is None:
        return "undefined"
    if s.get("lo") is None:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def _above(a: dict, b: dict) -> bool:
    """a's interval lies entirely above b's."""
    return None not in (a.get("lo"), b.get("hi")) and a["lo"] > b["hi"]


def _agree(ok: bool) -> str:
    return "agrees" if ok else "disagrees"


def _test_names(el: dict) -> str:
    return ", ".join(f"`{t.split('::')[-1]}`" for t in el["tests"])


# ----------------------------------------------------------------------------- Crisis I / II
def _crisis_rows() -> list[dict]:
    return _pc("crisis")["mean"]


def _holds_at(names: list[str], n: int) -> str:
    return "every boundary" if len(names) == n else (
        "no boundary" if not names else f"{len(names)} of {n} ({', '.join(names)})")


def crisis_1(el: dict) -> Cell:
    rows = _crisis_rows()
    above = [m["name"] for m in rows if m["raw"]["lattice_contrast"] > m["raw"]["lattice_contrast_shuffled"]]
    vals = ", ".join(f"{m['raw']['lattice_contrast']:.2f} ({m['raw']['lattice_contrast_shuffled']:.2f})"
                     for m in rows)
    return (f"raw heaviest-coset contrast (chance), deepest boundary first: {vals}; above chance at "
            f"{_holds_at(above, len(rows))}", _agree(len(above) == len(rows)))


def crisis_2_eq1(el: dict) -> Cell:
    rows = _crisis_rows()
    hyp = [m["name"] for m in rows if m["raw"]["hypotheses_hold"] > 0.5]
    ang = ", ".join(f"{m['raw']['angle_deg']:.0f}" for m in rows)
    return (f"bound verified by `{el['tests'][0].split('::')[-1]}`; hypotheses met at "
            f"{_holds_at(hyp, len(rows))}; raw angle to the box-filtered signal (°): {ang}",
            _agree(len(hyp) == len(rows)))


def a3_lac_vs_crises(el: dict) -> Cell:
    rows = _crisis_rows()
    lower = [m["name"] for m in rows if m["lac_out"]["lattice_contrast"] < m["raw"]["lattice_contrast"]]
    closer = [m["name"] for m in rows if m["lac_out"]["angle_deg"] < m["raw"]["angle_deg"]]
    n = len(rows)
    return (f"contrast lower after the LAC at {_holds_at(lower, n)}; angle smaller after the LAC at "
            f"{_holds_at(closer, n)}", _agree(len(lower) == n and len(closer) == n))


# ----------------------------------------------------------------------------- Supp. A, B
def eq31_multipath(el: dict) -> Cell:
    single, multi = (REPO / f for f in el["results"])
    if not multi.exists():
        return (f"— (`{el['results'][1]}` not committed yet)", "not run")
    a, b = (json.loads(f.read_text())["variant"] for f in (single, multi))
    (la, ra), (lb, rb) = ((v["mean"]["trained"]["l1"], v["mean"]["trained"]["pearson"]) for v in (a, b))
    worse, better = lb > la and rb < ra, lb < la and rb > ra
    status = "agrees" if worse else ("disagrees" if better else "not comparable")
    step = {k: v.get("best_step") or v.get("step") for k, v in (("a", a), ("b", b))}
    return (f"held-out x̂_L, Eq. 31 (weights of step {step['b']}) vs Eq. 9 (step {step['a']}): ℓ1 "
            f"{lb:.4f} vs {la:.4f}, Pearson r {rb:.3f} vs {ra:.3f}", status)


def a5_depth(el: dict) -> Cell:
    r = _pc("depth")
    parts = []
    for v in ("bundled", "identity"):
        d = r["variants"][v]
        parts.append(f"{v} LACs, mean Pearson r stem → deepest: "
                     + ", ".join(f"{d['mean'][s]:.2f}" for s in r["stages"]))
    ok = r["variants"]["bundled"]["increases_with_depth"] == 0
    return ("; ".join(parts) + " (the identity LACs fall the same way)", _agree(ok))


def _support_cells(model: dict, inputs: list[str]) -> tuple[list[float], list[float]]:
    first: list[float] = []
    later: list[float] = []
    for i, st in enumerate(model["stages"]):
        for inp in inputs:
            c = st[inp]
            if c["pixels_outside"] > 0:  # otherwise the field covers the image: vacuous
                (first if i == 0 else later).append(c["energy_outside"])
    return first, later


def thm1(el: dict) -> Cell:
    r = _pc("support")
    relu = {k: v for k, v in r["models"].items() if "ReLU" in k}
    vals = [x for m in relu.values() for part in _support_cells(m, r["inputs"]) for x in part]
    return (f"{', '.join(relu)}: largest share of ‖v‖² outside the field {max(vals):.4f} over {len(vals)} "
            f"non-vacuous cells; test {_test_names(el)}", _agree(bool(vals) and max(vals) == 0))


def remark_3(el: dict) -> Cell:
    r = _pc("support")
    parts, ok = [], True
    for name, m in r["models"].items():
        if "ReLU" in name:
            continue
        first, later = _support_cells(m, r["inputs"])

        def w(v: list[float]) -> str:
            return f"{max(v):.4f}" if v else "vacuous"

        parts.append(f"{name}: first stage {w(first)}, later stages {w(later)}")
        ok &= all(x <= 0.05 for x in first + later)
    return ("largest share of ‖v‖² outside the field of the positive positions — " + "; ".join(parts),
            _agree(ok))


def _lac() -> dict:
    return _pc("lac")


def lemma_b1_i(el: dict) -> Cell:
    r = _lac()
    bpix, med = r["parameters"]["pix"]["beta"], r["train_pixel_median"]
    closer = sum(abs(b - m) < abs(b) for b, m in zip(bpix, med, strict=True))
    inner = all(v["beta_all_zero"] for k, v in r["parameters"].items() if k != "pix")
    hist = "; ".join(f"{n} (every β trained): median |β| " + ", ".join(
        f"{k} {v['beta_abs_median']:.2f}" for k, v in h["parameters"].items())
        for n, h in r.get("history_lacs", {}).items())
    return (("inner β 0 by construction (pixbias); " if inner else "")
            + f"β_pix = ({', '.join(f'{b:+.3f}' for b in bpix)}), closer to the photos' pixel median "
            f"({', '.join(f'{m:+.3f}' for m in med)}) than to 0 in {closer} of 3"
            + (f"; {hist}" if hist else ""), _agree(closer < 2))


def lemma_b1_ii(el: dict) -> Cell:
    p = _lac()["parameters"]
    pos = min(v["gamma_positive_share"] for v in p.values())
    return f"smallest share of γ > 0 over the {len(p)} bundled LACs: {pos:.3f}", _agree(pos == 1)


def c5_norm(el: dict) -> Cell:
    spreads = [v for ph in _lac()["norm_spread"].values() for v in ph.values()]
    within = min(v["share_within_1e_6"] for v in spreads)
    beta_only = max(v["share_beta_only"] for v in spreads)
    ok = all(v["share_within_1e_6"] + v["share_beta_only"] > 1 - 1e-9 for v in spreads)
    return (f"share of live channels within 1e-6 of the LAC_pix-predicted norm: {within:.3f} at worst; "
            f"the rest ({100 * beta_only:.1f} % at most) pull back nothing and sit at the β-only norm",
            _agree(ok))


def thm2(el: dict) -> Cell:
    r = _pc("duality")
    parts, ok = [], True
    for d in r["results"].values():
        label = "zero-mean φ" if d["centred"] else "φ as is"
        parts.append(f"k = {d['k']}, {label}: ρ = {d['spearman']:.3f}, same maximiser "
                     f"{'yes' if d['same_maximiser'] else 'no'}")
        ok &= d["spearman"] > 0.5 and d["same_maximiser"]
    d0 = next(iter(r["results"].values()))
    return (f"{d0['n_subsets']} random subsets of a {d0['pool']}-channel pool, {d0['images']} images — "
            + "; ".join(parts), _agree(ok))


# ----------------------------------------------------------------------------- Sec. 3.1
def table_1(el: dict) -> Cell:
    r = _j(el["results"][0])
    parts, ok = [], True
    for key, cell in r["cells"].items():
        ours = cell["ours"]["ssim"]
        base = {m: cell[m]["ssim"] for m in ("vanilla", "mahendran", "robust", "upconv")
                if m in cell and "ssim" in cell[m]}
        un = [m for m in ("vanilla", "mahendran", "robust", "upconv") if m in cell and "ssim" not in cell[m]]
        ok &= all(ours > v for v in base.values())
        parts.append(f"{key}, SSIM×100: ours {100 * ours:.1f}; " + ", ".join(
            f"{m} {100 * v:.1f}" for m, v in base.items())
            + f"; seed-zero control {100 * cell['control']['ssim']:.1f}"
            + (f"; unavailable: {', '.join(un)}" if un else ""))
    lpips = r.get("lpips")
    lp = "LPIPS unavailable" if not lpips or "unavailable" in str(lpips) else "LPIPS in results"
    return "; ".join(parts) + f"; {lp}", _agree(ok)


def _figure(patterns: list[str], fallback: list[str]) -> str | None:
    """The first committed file matching an expected glob, else the first existing fallback."""
    for pat in patterns:
        rel = pat.removeprefix("benchmarks/results/")
        hits = sorted(p for p in RESULTS.glob(rel) if p.is_file())
        if hits:
            return hits[0].relative_to(REPO).as_posix()
    for f in fallback:
        if (REPO / f).exists():
            return f
    return None


def figure_2(el: dict) -> Cell:
    fig = _figure(el["expected"], [f for f in el["results"] if f.endswith(".png")])
    if fig is None:
        return "— (no figure committed)", "not run"
    note = ""
    if fig.startswith("benchmarks/results/reconstruction-full/"):
        s = _j("benchmarks/results/reconstruction-full/results.json")["summary"]
        note = ("; in it, mean Pearson r: ours " + f"{s['trained']['pearson']['mean']:.3f}, "
                + ", ".join(f"{m} {s[m]['pearson']['mean']:.3f}"
                            for m in ("vanilla_train", "mahendran", "upconv") if m in s)
                + f", flat colour {s['flat']['pearson']['mean']:.3f}")
    return f"figure: `{fig}`{note}", "not comparable"


def p1_fig3a(el: dict) -> Cell:
    fig = _figure(el["expected"], [])
    return (f"figure: `{fig}`", "not comparable") if fig else ("— (no figure committed)", "not run")


p2_fig3b = p1_fig3a


# ----------------------------------------------------------------------------- Sec. 3.2.1
def _fg(rel: str = "benchmarks/results/interference/fg-paradox/results.json") -> dict:
    return _j(rel)["encoders"][0]["summary"]


def fg_full(el: dict) -> Cell:
    s = _fg()
    raw, area = s["measured"]["raw"]["full"], s["area_ratio"]
    zm = s["measured"]["zero_mean"]["full"]
    return (f"raw FG(x̂) {_ci(raw)} vs mask area {_ci(area)}; zero-mean {_ci(zm)} (swapped-seed "
            f"{_ci(s['swapped_seed']['zero_mean']['full'])}, permuted head "
            f"{_ci(s['head_permuted']['zero_mean']['full'])})", _agree(_above(raw, area)))


def o1(el: dict) -> Cell:
    s = _fg()
    m = s["measured"]["raw"]
    scale = (m["pos"]["mean"] + m["neg"]["mean"]) / 2
    ok = m["O1"]["hi"] is not None and m["O1"]["hi"] < 0.1 * scale
    return (f"raw O1 {_ci(m['O1'])} (hemisphere FG ≈ {scale:.3f}), zero-mean "
            f"{_ci(s['measured']['zero_mean']['O1'])}; the shuffled heads give "
            f"{_ci(s['head_permuted']['raw']['O1'])} and {_ci(s['head_random']['raw']['O1'])}, "
            "so it is not a property of the classifier's weights", _agree(ok))


def _o2_status(s: dict) -> tuple[str, bool]:
    o2 = s["measured"]["raw"]["O2"]
    ctrl = {"permuted head": s["head_permuted"]["raw"]["O2"], "random head": s["head_random"]["raw"]["O2"],
            "swapped seed": s["swapped_seed"]["raw"]["O2"]}
    ok = o2.get("lo") is not None and o2["lo"] > 0 and all(_above(o2, c) for c in ctrl.values())
    return (f"raw O2 {_ci(o2)} (zero-mean {_ci(s['measured']['zero_mean']['O2'])}); controls: "
            + ", ".join(f"{k} {_ci(v)}" for k, v in ctrl.items()), ok)


def o2(el: dict) -> Cell:
    text, ok = _o2_status(_fg())
    return text, _agree(ok)


def _interference_results() -> list[tuple[str, dict]]:
    out = []
    for p in sorted(RESULTS.glob("interference/*/results.json")):
        out.append((p.relative_to(REPO).as_posix(), json.loads(p.read_text())))
    return out


def o3(el: dict) -> Cell:
    p = RESULTS / "capacity" / "results.json"
    if not p.exists():
        return "— (`benchmarks/results/capacity/results.json` not committed yet)", "not run"
    r = json.loads(p.read_text())
    o = r["o3"]
    parts = []
    for v in ("raw", "zero_mean"):
        per = ", ".join(f"{x['encoder']} {_ci(x['fg']['O2'][v]['measured'])}" for x in r["rows"])
        parts.append(f"{v} O2 gap: {per}; {'monotone' if o[v]['monotone_increasing'] else 'not monotone'}")
    ok = o["raw"]["monotone_increasing"] and o["zero_mean"]["monotone_increasing"]
    return "; ".join(parts), _agree(ok)


def c2_probe(el: dict) -> Cell:
    for rel, r in _interference_results():
        if r.get("config", {}).get("head") == "probe" and "encoders" in r:
            text, ok = _o2_status(r["encoders"][0]["summary"])
            return f"`{rel}` (probe head): {text}", _agree(ok)
    return "— (no fg-paradox run with a probe head committed yet; the encoder's own head was used)", "not run"


# ----------------------------------------------------------------------------- Sec. 3.2.3
def _sp() -> dict:
    return _j("benchmarks/results/interference/superposition/results.json")["summary"]


def h1_energy(el: dict) -> Cell:
    h = _sp()
    m = h["measured"]
    zm = m["zero_mean"]["energy_fraction"]
    ctrl = {"swapped seed": h["swapped_seed"]["zero_mean"]["energy_fraction"],
            **{f"random top {k}": v["zero_mean"]["energy_fraction"] for k, v in h["randomized"].items()}}
    ok = all(_above(zm, c) for c in ctrl.values())
    return (f"raw λ₁/tr G {_ci(m['raw']['energy_fraction'])}, of which the LAC_pix floor forces "
            f"≥ {h['floor']['analytic']['bias_share']:.3f}; zero-mean {_ci(zm)}; controls (zero-mean): "
            + ", ".join(f"{k} {_ci(v)}" for k, v in ctrl.items()), _agree(ok))


def h1_variance(el: dict) -> Cell:
    h = _sp()
    zm, sw = h["measured"]["zero_mean"]["expansion"], h["swapped_seed"]["zero_mean"]["expansion"]
    ok = zm.get("lo") is not None and zm["lo"] > 1 and _above(zm, sw)
    return (f"expansion raw {_ci(h['measured']['raw']['expansion'])} (LAC_pix floor), zero-mean "
            f"{_ci(zm)}, swapped-seed {_ci(sw)}", _agree(ok))


def h1_cosine(el: dict) -> Cell:
    m = _sp()["measured"]

    def rng(c: dict) -> str:
        return f"[{c['p5']:.2f}, {c['p95']:.2f}]"

    zb, za = m["zero_mean"]["cos_before"], m["zero_mean"]["cos_after"]
    ok = za["p95"] - za["p5"] > zb["p95"] - zb["p5"]
    return (f"p5-p95 cosine range raw {rng(m['raw']['cos_before'])} → {rng(m['raw']['cos_after'])}; "
            f"zero-mean {rng(zb)} → {rng(za)}", _agree(ok))


def h2_b1(el: dict) -> Cell:
    h2 = _sp()["h2"]
    b1 = h2["measured"]["zero_mean"]["B1"]
    bp, br = h2["head_permuted"]["zero_mean"]["B1"], h2["head_random"]["zero_mean"]["B1"]
    return (f"zero-mean B1 {_ci(b1)} with the encoder's head, {_ci(bp)} with W_k permuted, {_ci(br)} "
            f"with a random row (raw {_ci(h2['measured']['raw']['B1'])}; 0 = full cancellation)",
            _agree(_above(bp, b1) and _above(br, b1)))


def eq99_hemispheres(el: dict) -> Cell:
    h2 = _sp()["h2"]
    b2, bp = h2["measured"]["zero_mean"]["B2"], h2["head_permuted"]["zero_mean"]["B2"]
    return (f"share of each hemisphere along u: raw {_ci(h2['measured']['raw']['B2'])} (the LAC_pix "
            f"bias), zero-mean {_ci(b2)}, permuted head {_ci(bp)}", _agree(_above(b2, bp)))


# ----------------------------------------------------------------------------- Sec. 3.2.4-3.2.5
def _cmp() -> dict:
    return _j("benchmarks/results/compression/results.json")


def _acc(row: dict, sel: str, name: str) -> float:
    v = row[sel][name]
    return 100 * (v["mean"] if isinstance(v, dict) else v)


def finding_1(el: dict) -> Cell:
    r = _cmp()
    rows = {round(x["prune"], 4): x for x in r["rows"]}
    base, at90 = rows[0.0], rows[0.9]
    parts, bad = [], []
    for name in r["eval_sets"]:
        drops = {s: _acc(at90, s, name) - _acc(base, s, name) for s in ("covvol", "energy", "random")}
        parts.append(f"{name}: " + ", ".join(f"{s} {d:+.2f}" for s, d in drops.items()))
        if any(abs(d) > 1 for d in drops.values()):
            bad.append(name)
    return (f"{r['config']['dataset']}, {r['encoder']['name']}: change at 90 % pruning (points) — "
            + "; ".join(parts) + (f"; beyond 1 point on {', '.join(bad)}" if bad else ""), _agree(not bad))


def finding_2(el: dict) -> Cell:
    r = _cmp()
    top = max(r["rows"], key=lambda x: x["prune"])
    ind = r["eval_sets"][0]
    parts, ok = [], True
    gap_id = _acc(top, "covvol", ind) - _acc(top, "energy", ind)
    for name in r["eval_sets"]:
        c, e, rnd = (_acc(top, s, name) for s in ("covvol", "energy", "random"))
        parts.append(f"{name}: CovVol {c:.2f}, Energy {e:.2f}, Random {rnd:.2f}")
        ok &= c > e and c > rnd
        if name != ind:
            ok &= (c - e) > gap_id
    return f"at {100 * top['prune']:.0f} % (k = {top['k']}): " + "; ".join(parts), _agree(ok)


def effective_rank(el: dict) -> Cell:
    r = _cmp()
    return (f"clean effective rank {r['clean_effective_rank']:.1f} of {r['channels']} channels "
            f"({100 * r['clean_effective_rank'] / r['channels']:.1f} %), {r['config']['dataset']}, "
            f"{r['encoder']['name']}", "not comparable")


def table_4(el: dict) -> Cell:
    r = _cmp()
    top = max(r["rows"], key=lambda x: x["prune"])
    return (f"{r['config']['dataset']} ({r['encoder']['name']}), at {100 * top['prune']:.0f} %: "
            + "; ".join(f"{n} CovVol {_acc(top, 'covvol', n):.2f} / Energy {_acc(top, 'energy', n):.2f} / "
                        f"Random {_acc(top, 'random', n):.2f}" for n in r["eval_sets"]), "not comparable")


def table_5(el: dict) -> Cell:
    found = [el["expected"][0]] + [p.relative_to(REPO).as_posix()
                                   for p in sorted(RESULTS.glob("compression*/results.json"))]
    for rel in found:
        if not (REPO / rel).exists():
            continue
        r = _j(rel)
        if not r.get("transfer"):
            continue
        parts, ok = [], True
        for spec, rows in r["transfer"].items():
            top = max(rows, key=lambda x: x["prune"])
            c, e, rnd = (_acc(top, s, spec) for s in ("covvol", "energy", "random"))
            parts.append(f"{spec} at {100 * top['prune']:.0f} %: CovVol {c:.2f}, Energy {e:.2f}, "
                         f"Random {rnd:.2f}")
            ok &= c >= e and c > rnd
        return f"`{rel}`: " + "; ".join(parts), _agree(ok)
    return f"— (`{el['expected'][0]}` not committed yet)", "not run"


def finding_3_fig4d(el: dict) -> Cell:
    r = _j(el["results"][0])
    m = r["mean_over_corruptions"]
    keys = {"accuracy": "accuracy", "log det Σ_S": "logdet_subset", "effective rank": "effective_rank",
            "trace": "trace"}
    rising = [k for k, f in keys.items() if any(b[f] > a[f] for a, b in zip(m, m[1:], strict=False))]
    mmd_falls = any(b["mmd2"] < a["mmd2"] for a, b in zip(m, m[1:], strict=False))
    norm = r["normalised"]
    cells = ", ".join(f"{lab} {norm[-1][k]:.2f}" for lab, k in
                      (("accuracy", "accuracy"), ("volume", "volume"), ("effective rank", "effective_rank"),
                       ("trace", "trace")) if k in norm[-1])
    return (f"mean over {len(r['per_corruption'])} corruptions, severity 5 relative to 0: {cells}; "
            + (f"not monotone: {', '.join(rising)}" if rising else "all four monotone")
            + ("; MMD² not monotone" if mmd_falls else "; MMD² grows monotonically"),
            _agree(not rising and not mmd_falls))


def figure_4c(el: dict) -> Cell:
    for rel in el["expected"]:
        if rel.endswith(".json") and (REPO / rel).exists():
            f = _j(rel).get("figure_4c") or {}
            sev = ", ".join(str(x["severity"]) for x in f.get("files", []))
            return (f"figure: `{Path(rel).parent.as_posix()}/{f.get('figure', '?')}` ({f.get('corruption')}, "
                    f"severities {sev})", "not comparable")
    if _j("benchmarks/results/ood/results.json").get("figure_4c"):
        return "figure: in `benchmarks/results/ood/`", "not comparable"
    return "— (the OOD run skipped the reconstructions: --no-figure)", "not run"


# ----------------------------------------------------------------------------- Sec. 3.3
def _cam(metrics: tuple[str, ...], check: tuple[str, ...], lower: tuple[str, ...] = ()) -> Cell:
    r = _j("benchmarks/results/cam-compare/results.json")
    parts, ok, small = [], True, False
    for spec, t in r["tables"].items():
        mean = t["mean"]
        n = mean["ours"].get("n", 0)
        small |= n < 10
        cams = [m for m in ("gradcam", "gradcam++", "scorecam") if m in mean]
        sanity = [m for m in ("random", "edge") if m in mean]
        parts.append(f"{spec} ({n} images): " + ", ".join(
            f"{k} ours {mean['ours'][k]:.3f} vs " + "/".join(f"{mean[c][k]:.3f}" for c in cams + sanity)
            for k in metrics) + f" ({'/'.join(cams + sanity)})")
        for k in check:
            best = min if k in lower else max
            # ours must beat the CAMs and the sanity maps (random, Sobel edges) on the metric
            ok &= mean["ours"][k] == best([mean["ours"][k], *(mean[c][k] for c in cams + sanity)])
    status = "not comparable" if small else _agree(ok)
    return "; ".join(parts), status


def table_2(el: dict) -> Cell:
    return _cam(("insertion", "deletion"), ("insertion", "deletion"), lower=("deletion",))


def table_3(el: dict) -> Cell:
    return _cam(("map", "pointing", "miou"), ("map", "pointing"))


# ----------------------------------------------------------------------------- Sec. 3.4
def _ecr() -> tuple[dict, dict, int, str]:
    """The ECR run with the per-dataset probe (the paper's protocol, Supp. C.2) when it is
    committed, else the ImageNet-head run."""
    for rel in ("benchmarks/results/interference/ecr-probe/results.json",
                "benchmarks/results/interference/ecr/results.json"):
        if (REPO / rel).exists():
            r = _j(rel)
            return r, r["curves"]["measured"], r["test_images"]["classified_as_class"], rel
    raise FileNotFoundError("no ECR results committed")


def _at(curve: dict, key: str, p: float) -> float:
    i = min(range(len(curve["fractions"])), key=lambda j: abs(curve["fractions"][j] - p))
    return curve[key][i]


def _live_point(r: dict, c: dict, p: float) -> float:
    """``p``, or the largest tabulated fraction within the live channels when ``p`` exceeds
    them (beyond it Descending and Ascending ablate the same set: equal by construction)."""
    live = r.get("live_fraction", 1.0)
    return p if p <= live else max(f for f in c["fractions"] if f <= live + 1e-9)


def ecr_descending(el: dict) -> Cell:
    r, c, n, rel = _ecr()
    p = _live_point(r, c, 0.7)
    d, a, rm, rs = (_at(c, k, p) for k in ("descending", "ascending", "random_mean", "random_std"))
    sw = r.get("controls", {}).get("swapped_seed", {}).get("descending")
    sw_p = _at({"fractions": c["fractions"], "v": sw}, "v", p) if sw else None
    limit = " (the live-channel limit, not 70 %)" if p != 0.7 else ""
    text = (f"`{rel.split('/')[-2]}`: class {r['class']['name']}, {n} of {r['n_test_images']} test images "
            f"classified as it; at {100 * p:.0f} %{limit}: "
            f"Descending {d:.3f}, Ascending {a:.3f}, Random {rm:.3f} ± {rs:.3f}"
            + (f", swapped-seed ranking {sw_p:.3f}" if sw_p is not None else ""))
    if n == 0:
        return text + " (noise-level curves)", "not comparable"
    return text, _agree(d < rm - rs and d < a and (sw_p is None or d < sw_p))


def ecr_ascending(el: dict) -> Cell:
    r, c, n, rel = _ecr()
    fr = c["fractions"]
    live = r.get("live_fraction", 1.0)
    mid = [i for i, f in enumerate(fr) if 0.3 - 1e-9 <= f <= 0.6 + 1e-9]
    tail = [i for i, f in enumerate(fr) if f > 0.8 + 1e-9]
    text = (f"`{rel.split('/')[-2]}`: Ascending − Random mean at " + ", ".join(
        f"{fr[i]:.1f}: {c['ascending'][i] - c['random_mean'][i]:+.3f}" for i in mid + tail)
        + f"; {n} test images classified as {r['class']['name']}; live channels {live:.2f} of all")
    if n == 0:
        return text + " (noise-level curves)", "not comparable"
    ok = all(c["ascending"][i] >= c["random_mean"][i] for i in mid) and any(
        c["ascending"][i] < c["random_mean"][i] for i in tail)
    return text, _agree(ok)


# ----------------------------------------------------------------------------- Sec. 3.5
def _attention(el: dict) -> dict | None:
    p = REPO / el["expected"][0]
    return json.loads(p.read_text()) if p.exists() else None


def attention_layers(el: dict) -> Cell:
    r = _attention(el)
    if r is None:
        return f"— (`{el['expected'][0]}` not committed yet); tests {_test_names(el)}", "not run"
    acc = (r.get("head") or {}).get("accuracy") or {}
    test = acc.get("test")
    return (f"{len(r['images'])} images, {r['encoder']}, grid {r['grid']}, head test accuracy "
            f"{'—' if test is None else f'{test:.3f}'}; layer maps in `benchmarks/results/attention/`",
            "not comparable")


def attention_tokens(el: dict) -> Cell:
    r = _attention(el)
    if r is None:
        return f"— (`{el['expected'][0]}` not committed yet)", "not run"
    parts, ok = [], True
    ctrl = r.get("control_untrained") or {}
    for b, s in r["summary"].items():
        d, sh = s["distance_tokens"]["mean"], s["shuffled_tokens"]["mean"]
        u = (ctrl.get(b) or {}).get("distance_tokens", {}).get("mean")
        parts.append(f"block {b}: peak distance {d:.2f} tokens vs shuffled {sh:.2f}"
                     + (f" and untrained head {u:.2f}" if u is not None else "")
                     + f", own-cell energy {s['own_energy']['mean']:.3f} (uniform {s['uniform_energy']:.3f})")
        ok &= d < sh and (u is None or d < u)
    return f"{len(r['images'])} images — " + "; ".join(parts), _agree(ok)


def _fv() -> dict:
    return _pc("fv")


def _fv_variant(r: dict, prefix: str) -> dict:
    return next(v for k, v in r["variants"].items() if k.startswith(prefix))


def thm_b5(el: dict) -> Cell:
    r = _fv()
    ok = all(c["bound_holds"] for v in r["variants"].values() for c in v.values())
    d = _fv_variant(r, "default")
    deep = r["stages"][-1]
    return (f"decomposition exact ({_test_names(el)}); Eq. 65-66 bound on ‖R_dir‖ holds in "
            f"{'every' if ok else 'not every'} (LACs, stage) cell; shipped LACs, deepest stage: "
            f"‖R_dir‖/‖principal‖ = {d[deep]['r_dir_rel']['mean']:.2f}, "
            f"‖R_bias‖/‖principal‖ = {d[deep]['r_bias_rel']['mean']:.2f}", _agree(ok))


def remark_2(el: dict) -> Cell:
    r = _pc("support")
    cov = [st[inp]["field_covered"] for k, m in r["models"].items() if "ReLU" in k
           for st in m["stages"] for inp in r["inputs"] if st[inp]["pixels_outside"] > 0]
    return (f"resnet18 (ReLU): v ≠ 0 on {min(cov):.4f} of the field's pixels at worst over {len(cov)} "
            f"non-vacuous cells (mean {sum(cov) / len(cov):.4f}); `{el['tests'][0].split('::')[-1]}` "
            "shows an exact cancellation it detects", _agree(min(cov) >= 0.99))


def remark_4(el: dict) -> Cell:
    r = _fv()
    ident = _fv_variant(r, "identity")
    rdir = {s: c["r_dir_rel"]["mean"] for s, c in ident.items()}
    rbias = max(c["r_bias_rel"]["max"] for c in ident.values())
    s_max = max(rdir, key=rdir.__getitem__)
    return (f"identity LACs (every β = 0): ‖R_bias‖ = {rbias:.3f}; ‖R_dir‖/‖principal‖ per stage "
            + ", ".join(f"{v:.2f}" for v in rdir.values()) + f" (largest at {s_max})",
            _agree(rbias == 0 and rdir[s_max] > 0.01))


def remark_5(el: dict) -> Cell:
    r = _fv()
    out = []
    for prefix in ("default", "pixbias", "identity"):
        v = _fv_variant(r, prefix)
        out.append(f"{prefix}: " + ", ".join(f"{c['delta']['median']:.2f}" for c in v.values()))
    med = [c["delta"]["median"] for c in _fv_variant(r, "default").values()]
    return ("median δ_c per stage, stem → deepest (0 = no error, 2 = opposite): " + "; ".join(out),
            _agree(max(med) <= 0.1))


def h2_b2(el: dict) -> Cell:
    r = _pc("b2")
    s = r["summary"]
    parts, ok = [], True
    for v in ("raw", "zero_mean"):
        c = s[v]
        ctrl = max(c[k]["mean"] for k in c if k.startswith("head_") or k == "swapped_seed")
        good = _above(c["measured"], s["area"]) and c["measured"]["mean"] > ctrl
        ok &= good
        parts.append(f"{v}: FG(Σ α r) {_ci(c['measured'])} vs shuffled heads "
                     + ", ".join(f"{c[k]['mean']:.3f}" for k in c if k.startswith("head_"))
                     + f", swapped seed {c['swapped_seed']['mean']:.3f}")
    return (f"{len(r['images'])} composites, mask area {_ci(s['area'])}; " + "; ".join(parts), _agree(ok))


# ----------------------------------------------------------------------------- generic bases
def _tested(el: dict) -> Cell:
    return f"verified by {_test_names(el)}", "implemented (tested)"


def covvol_guarantee(el: dict) -> Cell:
    return (f"log det Σ_S is not monotone (`{el['tests'][0].split('::')[-1]}`), so "
            "(1 − 1/e) does not apply; greedy is within 1/k! in volume (Çivril & Magdon-Ismail 2009); "
            "the surrogate log det(I + Σ_S/σ²) carries (1 − 1/e) (tested against brute force)", "disagrees")


def _missing(el: dict) -> Cell:
    return "— (nothing measures it yet)", "missing"


def _commentary(el: dict) -> Cell:
    return "— (commentary: " + el["rule"].split(": ", 1)[-1] + ")", "not comparable"


EXTRACTORS: dict[str, Callable[[dict], Cell]] = {
    "crisis-1": crisis_1, "crisis-2-eq1": crisis_2_eq1, "a3-lac-vs-crises": a3_lac_vs_crises,
    "eq31-multipath": eq31_multipath, "a5-depth": a5_depth, "thm1": thm1, "remark-3": remark_3,
    "lemma-b1-i": lemma_b1_i, "lemma-b1-ii": lemma_b1_ii, "c5-norm": c5_norm, "thm2": thm2,
    "table-1": table_1, "figure-2": figure_2, "p1-fig3a": p1_fig3a, "p2-fig3b": p2_fig3b,
    "fg-full": fg_full, "o1": o1, "o2": o2, "o3": o3, "c2-probe": c2_probe,
    "h1-energy": h1_energy, "h1-variance": h1_variance, "h1-cosine": h1_cosine, "h2-b1": h2_b1,
    "eq99-hemispheres": eq99_hemispheres, "finding-1": finding_1, "finding-2": finding_2,
    "finding-3-fig4d": finding_3_fig4d, "effective-rank": effective_rank, "figure-4c": figure_4c,
    "table-4": table_4, "table-5": table_5, "table-2": table_2, "table-3": table_3,
    "ecr-descending": ecr_descending, "ecr-ascending": ecr_ascending,
    "attention-layers": attention_layers, "attention-tokens": attention_tokens,
    "covvol-guarantee": covvol_guarantee, "thm-b5": thm_b5, "remark-2": remark_2,
    "remark-4": remark_4, "remark-5": remark_5, "h2-b2": h2_b2,
}
GENERIC: dict[str, Callable[[dict], Cell]] = {"tests": _tested, "none": _missing, "commentary": _commentary}


def evaluate(el: dict) -> Cell:
    """(our number, status) of one catalogue element."""
    fn = EXTRACTORS.get(el["id"]) or GENERIC[el["basis"]]
    our, status = fn(el)
    if status not in STATUSES:
        raise ValueError(f"{el['id']}: status {status!r} is not one of {STATUSES}")
    return our, status


# ----------------------------------------------------------------------------- consistency
_TEST_REF = re.compile(r"^(tests/[\w/]+\.py)::(test_\w+)$")


def problems(cat: dict | None = None) -> list[str]:
    """What is inconsistent in the catalogue (empty when it is consistent)."""
    cat = load() if cat is None else cat
    els = cat["elements"]
    out = []
    if cat.get("count") != len(els):
        out.append(f"count {cat.get('count')} != {len(els)} elements")
    ids = Counter(e["id"] for e in els)
    out += [f"duplicate id {i}" for i, n in ids.items() if n > 1]
    for e in els:
        i = e["id"]
        for f in ("kind", "where", "element", "paper", "command", "basis"):
            if not str(e.get(f, "")).strip():
                out.append(f"{i}: empty {f}")
        if e.get("basis") not in BASES:
            out.append(f"{i}: basis {e.get('basis')!r}")
            continue
        if e["basis"] == "results" and i not in EXTRACTORS:
            out.append(f"{i}: basis results but no extractor")
        if e["basis"] == "results" and not (e["results"] or e["expected"]):
            out.append(f"{i}: basis results but neither results nor expected files")
        if e["basis"] in ("tests", "tests-refute") and not e["tests"]:
            out.append(f"{i}: basis {e['basis']} but no tests")
        if e["basis"] in ("none", "commentary") and not e.get("rule"):
            out.append(f"{i}: basis {e['basis']} needs a rule saying why")
        for f in e["results"]:
            if not f.startswith("benchmarks/results/") or not (REPO / f).is_file():
                out.append(f"{i}: results file {f} missing")
        for f in e["expected"]:
            if not f.startswith("benchmarks/results/"):
                out.append(f"{i}: expected file {f} outside benchmarks/results/")
        for t in e["tests"]:
            m = _TEST_REF.match(t)
            if not m:
                out.append(f"{i}: test reference {t!r} is not tests/FILE.py::test_name")
                continue
            p = REPO / m.group(1)
            if not p.is_file() or not re.search(rf"^def {m.group(2)}\(", p.read_text(), re.M):
                out.append(f"{i}: test {t} not found")
    out += [f"extractor for unknown id {i}" for i in EXTRACTORS if i not in ids]
    return out


# ----------------------------------------------------------------------------- rendering
def rows() -> list[tuple[dict, str, str]]:
    return [(e, *evaluate(e)) for e in load()["elements"]]


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def table() -> str:
    """The generated block: counts, then one row per element."""
    cat = load()
    rs = rows()
    counts = Counter(st for _, _, st in rs)
    lines = [f"{len(rs)} elements (an earlier count found {cat['issue_count']}; see \"How the elements are "
             "counted\" below), from `benchmarks/paper_elements.json`: "
             + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES) + ".", "",
             "| # | element | command | our number | the paper's | status |", "|---|---|---|---|---|---|"]
    for n, (e, our, st) in enumerate(rs, 1):
        cmd = e["command"] if e["command"].startswith("—") else f"`{e['command']}`"
        lines.append("| " + " | ".join(_md(c) for c in (
            str(n), f"**{e['where']}** — {e['element']} (`{e['id']}`)", cmd, our, e["paper"], st)) + " |")
    return "\n".join(lines)


def rules() -> str:
    """The status rule of every element that has one, by id."""
    return "\n".join(f"- `{e['id']}`: {e['rule']}" for e in load()["elements"] if e.get("rule"))


if __name__ == "__main__":
    bad = problems()
    print("\n".join(bad) if bad else "catalogue consistent")
    for e, our, st in rows():
        print(f"{e['id']:22} {st:22} {our[:110]}")
