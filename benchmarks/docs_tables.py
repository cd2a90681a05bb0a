"""Fill the generated blocks of README.md and docs/*.md from committed results files.

A block is the text between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``;
each NAME has one function below that renders it from JSON under ``benchmarks/results/``.
``--check`` exits 1 when a block differs from what the results give (the test suite runs it).

    python benchmarks/docs_tables.py           # rewrite the blocks
    python benchmarks/docs_tables.py --check   # verify
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _json(rel: str) -> dict:
    return json.loads((RESULTS / rel).read_text())


def cluster_projection() -> str:
    rows = {r["method"]: r["seconds_per_image"] for r in _json("speed_cuda_r50.json")["rows"]
            if r["encoder"] == "resnet50" and r["batch"] == 1}
    images = 50_000
    lines = ["| precision | s per image (1 GPU, measured) | ImageNet-val (50,000) on 1 GPU | "
             "8 GPUs | 64 GPUs |", "|---|---|---|---|---|"]
    for m in ("cascade[float32]", "cascade[tf32]", "cascade[fp16]"):
        s = rows[m]
        lines.append(f"| {m[8:-1]} | {s:.3f} | {images * s / 3600:.2f} h | "
                     f"{images * s / 8 / 60:.1f} min | {images * s / 64 / 60:.1f} min |")
    return "\n".join(lines)


BLOCKS = {"cluster-projection": cluster_projection}


def render(text: str) -> str:
    def fill(m: re.Match) -> str:
        name = m.group(1)
        if name not in BLOCKS:
            raise SystemExit(f"unknown generated block {name!r}")
        return f"<!-- generated:{name} -->\n{BLOCKS[name]()}\n<!-- /generated:{name} -->"

    return re.sub(r"<!-- generated:([\w-]+) -->.*?<!-- /generated:\1 -->", fill, text, flags=re.S)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = []
    for p in DOCS:
        old = p.read_text()
        new = render(old)
        if new != old:
            stale.append(p.relative_to(REPO).as_posix())
            if not args.check:
                p.write_text(new)
    if args.check and stale:
        print("generated blocks out of date: " + ", ".join(stale) + " (run benchmarks/docs_tables.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
