"""Export the best-validation LACs of a training run that is still going (or finished) as
a bundleable checkpoint: γ/β of the kept copy at the run's best validation step, the
vanilla map fitted on the run's own training photos at its size, and the run's metadata
with ``weights_step`` and whether the run had finished. The validation photos choose the
step; no held-out photo is read.

    python benchmarks/export_best.py benchmarks/results/training/lite0-224/paper.lac.safetensors \\
        src/adjinv/lacs/weights/efficientnet_lite0.lac.safetensors --variant paper-224
"""

from __future__ import annotations

import argparse

from adjinv import load_encoder
from adjinv.core.inverter import AdjointInverter
from adjinv.errors import AdjinvError
from adjinv.lacs.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from adjinv.lacs.training import fit_vanilla, kept_checkpoints
from adjinv.paper.data.corpus import load_corpus_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="the training checkpoint (state file) of the run")
    ap.add_argument("out", help="the exported checkpoint")
    ap.add_argument("--variant", required=True, help="the name the run's log and variant go by")
    ap.add_argument("--corpus", default="corpus")
    args = ap.parse_args()
    meta, _ = read_checkpoint(args.run)
    es = meta.get("early_stopping", {})
    step = int(es.get("best_step", 0))
    if step <= 0:
        raise SystemExit("the run has no validation check yet: nothing to choose from")
    kept = next((p for p in kept_checkpoints(args.run) if p.name == f"step-{step:05d}.lac.safetensors"),
                None)
    if kept is None:
        raise SystemExit(f"no kept copy of step {step}: keep_every must divide validate_every")
    cfg = meta["training"]
    enc = load_encoder(meta["encoder"]["name"])
    lacs, _ = load_checkpoint(kept, enc)
    if not all(n.startswith("corpus:") for n in cfg["images"]):
        raise AdjinvError("export_best.py exports corpus runs only")
    names = [n.split(":", 1)[1] for n in cfg["images"]]
    train = load_corpus_split(args.corpus, "train", colour_only=True)
    if sorted(train) != sorted(names):
        raise AdjinvError("the corpus's training split differs from the run's image list")
    vanilla = fit_vanilla(enc, AdjointInverter(enc, lacs), [train[n] for n in names], cfg["size"])
    finished = bool(meta.get("complete"))
    out = save_checkpoint(args.out, lacs, enc, extras=vanilla.tensors(), meta={
        "training": cfg, "step": step, "weights_step": step, "exported_from_step": step,
        "complete": True, "training_finished": finished, "steps_run": int(meta.get("step", 0)),
        "early_stopping": es, "variant": args.variant})
    print(f"wrote {out}: weights of step {step} (validation ℓ1 {es.get('best'):.4f}), run at step "
          f"{meta.get('step')}, finished: {finished}")


if __name__ == "__main__":
    main()
