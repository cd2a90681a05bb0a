"""Controls for every reconstruction-based claim (beyond the paper; docs/method.md §14).

A reconstruction ``x̂ = Σ_c α_c Ψ_L(E_c ⊙ A_L)`` mixes three ingredients: the seeds
``A_L`` (what the features say about the image), the image's own Jacobians (its
ReLU masks and the linearisation every pull-back goes through) and the trained
LACs (their biases ``β`` add image-independent structure). A claim about the
*features* holds only if it changes when the features change. Three controls
isolate the ingredients:

1. **seed-zero** (:func:`seed_zero`): ``Ψ_L(0)``, the cascade with the deepest seed
   set to zero. It contains no feature information at all: only this image's
   Jacobians and the LAC biases. Since every ``φ_c`` would equal it, every weighted
   reconstruction (``x̂``, ``x̂^(k)``, ``x̂^(k)_±``) collapses to a multiple of it and
   has its foreground energy. *Read:* a measured number close to the seed-zero
   number is explained without the features. With identity LACs (``β = 0``)
   ``Ψ_L(0)`` is exactly zero and the control is empty (reported as undefined).
2. **swapped-seed** (:func:`swapped_class_directional`,
   :func:`swapped_channel_inversions`): the seeds (and the weights computed from
   them) of a *different* image, pulled back through *this* image's Jacobians.
   *Read:* if the statistic on this image barely changes, it is a property of the
   image's Jacobians (where its ReLUs are open), not of its features.
3. **model randomisation** (Adebayo et al. 2018; :func:`randomized_encoder`): a deep
   copy of the encoder whose top ``n`` stages are re-initialised, cascading down
   (``n = 1, 2, …``); the head, the LACs and the class index stay the same.
   *Read:* a statistic that survives re-initialising the layers it is attributed to
   does not measure what those layers learned.

None of the controls modifies the user's encoder or LACs.
"""

from __future__ import annotations

import copy
import math
from typing import Any, cast

import torch
from torch import nn

from ..core.inverter import AdjointInverter
from ..encoders.staged import StagedEncoder
from ..errors import AdjinvError
from .class_directional import ClassDirectional, class_directional_weights


@torch.no_grad()
def seed_zero(inverter: AdjointInverter, x: torch.Tensor, stage: int = -1) -> torch.Tensor:
    """``Ψ_stage(0)`` for each image (B, 3, H, W): control 1 (see the module docstring)."""
    return inverter.seed_zero_control(x, stage)


def _check_pair(x: torch.Tensor, source: torch.Tensor) -> None:
    if x.shape != source.shape:
        raise AdjinvError(f"the swapped-seed control needs images of the same shape, got "
                          f"{tuple(x.shape)} and {tuple(source.shape)}: resize both to one size")


@torch.no_grad()
def swapped_class_directional(inverter: AdjointInverter, x: torch.Tensor, source: torch.Tensor,
                              target: int | torch.Tensor, mode: str = "contribution"
                              ) -> ClassDirectional:
    """Eq. 12 for class ``target`` with the seeds ``E_c ⊙ A_L(source)`` *and* the
    weights ``α`` of ``source`` (its GAP features), pulled back through the Jacobians
    of ``x``: control 2. [choice] The weights follow the seeds, so the only thing taken
    from ``x`` is its linearisation; the class index is the caller's (normally ``x``'s
    own top-1 class)."""
    x = inverter.prepare(x)
    source = inverter.prepare(source)
    _check_pair(x, source)
    enc = inverter.encoder
    last = enc.num_stages - 1
    k = torch.as_tensor(target, device=x.device).long().expand(x.shape[0])
    with enc.frozen():
        lin = inverter.linearize(x, last)[0]
        a_src = enc.forward_stages(source)[-1]
        sets = class_directional_weights(enc, a_src, k, mode)
        sums, _ = inverter.synthesize(lin, last, sets, source=a_src)
    return ClassDirectional(k, sums["class"], sums["class+"], sums["class-"], sets["class"])


@torch.no_grad()
def swapped_channel_inversions(inverter: AdjointInverter, x: torch.Tensor, source: torch.Tensor,
                               channels: torch.Tensor, stage: int = -1) -> torch.Tensor:
    """``Ψ_stage^{(x)}(E_c ⊙ A_stage(source))`` for the channels (B, K) or (K,): the
    per-channel inversions of control 2, (B, K, 3, H, W)."""
    x = inverter.prepare(x)
    source = inverter.prepare(source)
    _check_pair(x, source)
    s = inverter._stage_index(stage)
    keep = torch.as_tensor(channels, device=x.device, dtype=torch.long)
    if keep.dim() == 1:
        keep = keep.expand(x.shape[0], -1)
    enc = inverter.encoder
    with enc.frozen():
        lin = inverter.linearize(x, s)[0]
        a_src = enc.forward_stages(source, upto=s)[-1]
        _, kept = inverter.synthesize(lin, s, {}, keep=keep, source=a_src)
    assert kept is not None  # synthesize returns the kept φ whenever keep is given
    return kept


def _reinit(module: nn.Module) -> int:
    """Re-initialise every parameterised submodule the way PyTorch would build it;
    parameters of modules without ``reset_parameters`` get a truncated normal (σ = 0.02,
    matrices) or zeros (vectors). Returns the number of tensors re-initialised."""
    n = 0
    for m in module.modules():
        own = list(m.parameters(recurse=False))
        if hasattr(m, "reset_parameters"):
            cast(Any, m).reset_parameters()  # BatchNorm: also resets running statistics
            n += len(own)
            continue
        for p in own:
            if p.dim() > 1:
                nn.init.trunc_normal_(p, std=0.02)
            else:
                nn.init.zeros_(p)
            n += 1
    return n


def randomized_encoder(encoder: StagedEncoder, n_top: int, seed: int = 0) -> StagedEncoder:
    """A deep copy of ``encoder`` with its top ``n_top`` stages re-initialised (control 3,
    the cascading model randomisation of Adebayo et al. 2018). Stage ``L-j`` is
    re-initialised under seed ``seed + j``, so level ``n`` extends level ``n-1`` by one
    stage and leaves the stages above exactly as level ``n-1`` had them. The head is
    kept (the class direction ``W_k`` being inverted stays the same). The user's
    encoder is never modified."""
    n = encoder.num_stages
    if not 1 <= n_top <= n:
        raise AdjinvError(f"can re-initialise 1..{n} stages of this encoder, not {n_top}")
    out = copy.deepcopy(encoder)
    out._hash = None
    with torch.no_grad():
        for j in range(n_top):
            st = out.stages[n - 1 - j]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + j)
                _reinit(st)
    out.name = f"{encoder.name}+random_top{n_top}"
    return out


def randomization_levels(levels: list[int | str], num_stages: int) -> list[int]:
    """Resolve ``[1, 3, "all"]`` to sorted distinct stage counts within the encoder."""
    out = set()
    for v in levels:
        n = num_stages if v == "all" else int(v)
        if not 1 <= n <= num_stages:
            raise AdjinvError(f"randomisation level {v!r} out of range 1..{num_stages} (or 'all')")
        out.add(n)
    return sorted(out)


def nan_to_none(v: float | torch.Tensor) -> float | None:
    """JSON-ready float (NaN/inf → None)."""
    v = float(v)
    return v if math.isfinite(v) else None
