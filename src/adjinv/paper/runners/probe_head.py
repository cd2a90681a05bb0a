"""The per-dataset linear probe as the classifier head (Supp. C.2; docs/method.md §6, §8).

The paper freezes each encoder and trains one linear probe on the target dataset, so
that the class directions ``W_k`` under study are those that classify that dataset.
[`probe_encoder()`][probe_encoder] does the same for ``fg-paradox`` and ``ecr`` (``--head probe``):
GAP features of the deepest stage on a *training* split, a multinomial logistic
regression ([`adjinv.paper.heads.probe.LinearProbe`][adjinv.paper.heads.probe.LinearProbe]), and a copy of
the encoder whose
head is the probe's exact linear form on raw GAP features (``effective_weights``). The
LACs are loaded for the original encoder first: they are head-independent
(docs/method.md §3), so the same cascade inverts both heads.

Training splits (never an image the runners score):

- ``composites``: the ``"probe"`` subset of [`adjinv.paper.data.composites`][adjinv.paper.data.composites],
one class per
  source photo, each photo on the backgrounds it never has in the scored ``"fg"`` set and
  at placements (seeds) no scored composite uses.
- ``cub:ROOT``, ``oxford_pet:ROOT``: the dataset's own ``train`` split (the runners
  score ``test``).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from ...encoders.staged import LinearHead, StagedEncoder
from ...errors import AdjinvError
from ..data.masks import CompositeMasks, MaskedDataset, open_masked
from ..heads.probe import LinearProbe, ProbeConfig
from .common import Log, quiet_log

HEADS = ("encoder", "probe")


def probe_training_set(spec: str, size: int) -> MaskedDataset:
    """The split the probe trains on for the masked dataset ``spec`` (see the module doc)."""
    kind, _, rest = spec.partition(":")
    if kind == "composites":
        return CompositeMasks(size, "probe")
    if kind in ("cub", "oxford_pet"):
        return open_masked(spec, "train", size)
    raise AdjinvError(f"--head probe needs a labelled training split: use the embedded composites, "
                      f"cub:ROOT or oxford_pet:ROOT, not {spec!r}")


@torch.no_grad()
def gap_features(encoder: StagedEncoder, images: list[torch.Tensor], batch_size: int = 16
                 ) -> torch.Tensor:
    """GAP of the deepest map (N, C_L) of images (3, S, S) in [0, 1], encoder frozen."""
    out = []
    with encoder.frozen():
        for s in range(0, len(images), batch_size):
            x = encoder.normalize(torch.stack(images[s:s + batch_size]))
            out.append(encoder.forward_stages(x)[-1].mean(dim=(-2, -1)))
    return torch.cat(out)


def with_linear_head(encoder: StagedEncoder, weight: torch.Tensor, bias: torch.Tensor,
                     classes: list[str], suffix: str = "probe") -> StagedEncoder:
    """A deep copy of ``encoder`` whose head is ``z = weight · GAP(A_L) + bias`` with class
    names ``classes``; the user's encoder is never modified."""
    if weight.dim() != 2 or weight.shape[0] != len(classes) or bias.shape != (len(classes),):
        raise AdjinvError(f"head weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not "
                          f"match {len(classes)} classes")
    c = encoder.infos[-1].channels
    if weight.shape[1] != c:
        raise AdjinvError(f"head weight has {weight.shape[1]} inputs; the deepest stage has {c}")
    out = copy.deepcopy(encoder)
    ref = next(iter(out.parameters()))
    lin = nn.Linear(c, len(classes)).to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    out.head = LinearHead(lin)
    out.categories = list(classes)
    out.name = f"{encoder.name}+{suffix}"
    out._hash = None
    return out


def probe_encoder(encoder: StagedEncoder, spec: str, size: int, *, config: ProbeConfig | None = None,
                  scored: MaskedDataset | None = None, log: Log = quiet_log
                  ) -> tuple[StagedEncoder, dict[str, Any]]:
    """``(encoder with the probe head, record)``: a probe trained on
    [`probe_training_set()`][probe_training_set] ``(spec, size)``; ``scored``: the images the runner scores,
    whose probe accuracy (and disjointness from the training split) goes into the record."""
    t0 = time.perf_counter()
    train = probe_training_set(spec, size)
    items = [train[i] for i in range(len(train))]
    if len({it.label for it in items}) < 2:
        raise AdjinvError("the probe's training split holds fewer than two classes")
    feats = gap_features(encoder, [it.image for it in items])
    labels = torch.tensor([it.label for it in items])
    cfg = config or ProbeConfig()
    probe = LinearProbe(len(train.classes), cfg).fit(feats, labels)
    w, b = probe.effective_weights()
    enc = with_linear_head(encoder, w.float(), b.float(), list(train.classes))
    rec: dict[str, Any] = {
        "head": "probe", "split": train.describe(), "classes": list(train.classes),
        "n_train": len(items), "train_accuracy": probe.accuracy(feats, labels),
        "config": {"weight_decay": cfg.weight_decay, "optimizer": cfg.optimizer,
                   "max_iter": cfg.max_iter, "seed": cfg.seed},
        "final_loss": probe.final_loss, "features": "GAP of the deepest stage, standardised "
        "with the training split's mean and std, folded into the head's exact linear form"}
    if scored is not None:
        s_items = [scored[i] for i in range(len(scored))]
        names = {it.name for it in items}
        overlap = sorted(names & {it.name for it in s_items})
        if overlap:
            raise AdjinvError(f"the probe's training split contains scored images: {overlap[:3]}")
        s_feats = gap_features(encoder, [it.image for it in s_items])
        same = list(scored.classes) == list(train.classes)
        rec["scored_accuracy"] = (probe.accuracy(s_feats, torch.tensor([it.label for it in s_items]))
                                  if same else None)
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"  probe head: {len(items)} training images, {len(train.classes)} classes, train accuracy "
        f"{rec['train_accuracy']:.3f}" + (f", on the scored images {rec['scored_accuracy']:.3f}"
                                          if rec.get("scored_accuracy") is not None else ""))
    return enc, rec
