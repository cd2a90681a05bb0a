"""Docs tables are generated from committed results files, never hand-copied."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_blocks_match_results():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "docs_tables.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
