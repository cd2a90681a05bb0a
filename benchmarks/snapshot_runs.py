"""Loss curves of the 224 px corpus runs (every ``lite*-224/`` folder) drawn from their
logs while they go on (a finished run draws its own): ``<run>.loss.png`` beside each log,
then the generated docs blocks.

    python benchmarks/snapshot_runs.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from adjinv.lacs.training import plot_history

TRAINING = Path(__file__).resolve().parent / "results" / "training"

if __name__ == "__main__":
    for log in sorted(TRAINING.glob("lite*-224/*.log.json")):
        history = json.loads(log.read_text())
        if history:
            print(plot_history(log.with_name(log.name.replace(".log.json", ".lac.safetensors")), history))
    sys.exit(subprocess.call([sys.executable, str(Path(__file__).with_name("docs_tables.py"))]))
