"""Controls for every reconstruction-based claim (beyond the paper; docs/method.md §14).

A reconstruction ``x̂ = Σ_c α_c Ψ_L(E_c ⊙ A_L)`` mixes three ingredients: the seeds
``A_L`` (what the features say about the image), the image's own Jacobians (its
ReLU masks and the linearisation every pull-back goes through) and the trained
LACs (their biases ``β`` add image-independent structure). A claim about the
*features* holds only if it changes when the features change. Three controls
isolate the ingredients:

1. **seed-zero** ([`seed_zero()`][seed_zero]): ``Ψ_L(0)``, the cascade with the deepest seed
   set to zero. It contains no feature information at all: only this image's
   Jacobians and the LAC biases. Since every ``φ_c`` would equal it, every weighted
   reconstruction (``x̂``, ``x̂^(k)``, ``x̂^(k)_±``) collapses to a multiple of it and
   has its foreground energy. *Read:* a measured number close to the seed-zero
   number is explained without the features. With identity LACs (``β = 0``)
   ``Ψ_L(0)`` is exactly zero and the control is empty (reported as undefined).
2. **swapped-seed** ([`swapped_class_directional()`][swapped_class_directional],
   [`swapped_channel_inversions()`][swapped_channel_inversions]): the seeds (and the weights computed from
   them) of a *different* image, pulled back through *this* image's Jacobians.
   *Read:* if the statistic on this image barely changes, it is a property of the
   image's Jacobians (where its ReLUs are open), not of its features.
3. **model randomisation** (Adebayo et al. 2018; [`randomized_encoder()`][randomized_encoder]): a deep
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
from .resolve import Target, class_target, resolve


@torch.no_grad()
def seed_zero(inverter: Any, x: torch.Tensor, stage: int = -1) -> torch.Tensor:
    """``Ψ_stage(0)`` for each image (B, 3, H, W): control 1 (see the module docstring).
    ``inverter``: anything [`adjinv.methods.resolve.resolve()`][adjinv.methods.resolve.resolve] takes."""
    r = resolve(inverter)
    return r.inverter.seed_zero_control(r.prepare(x), stage)


def _check_pair(x: torch.Tensor, source: torch.Tensor) -> None:
    if x.shape != source.shape:
        raise AdjinvError(f"the swapped-seed control needs images of the same shape, got "
                          f"{tuple(x.shape)} and {tuple(source.shape)}: resize both to one size")


def _resolve_pair(model: Any, x: torch.Tensor, source: torch.Tensor
                  ) -> tuple[AdjointInverter, torch.Tensor, torch.Tensor]:
    r = resolve(model)
    x, source = r.inverter.prepare(r.prepare(x)), r.inverter.prepare(r.prepare(source))
    _check_pair(x, source)
    return r.inverter, x, source


@torch.no_grad()
def swapped_class_directional(inverter: Any, x: torch.Tensor, source: torch.Tensor,
                              target: Target, mode: str = "contribution") -> ClassDirectional:
    """Eq. 12 for class ``target`` with the seeds ``E_c ⊙ A_L(source)`` *and* the
    weights ``α`` of ``source`` (its GAP features), pulled back through the Jacobians
    of ``x``: control 2. [choice] The weights follow the seeds, so the only thing taken
    from ``x`` is its linearisation; the class index is the caller's (normally ``x``'s
    own top-1 class, or its name). ``inverter``: anything
    [`adjinv.methods.resolve.resolve()`][adjinv.methods.resolve.resolve] takes."""
    inverter, x, source = _resolve_pair(inverter, x, source)
    enc = inverter.encoder
    last = enc.num_stages - 1
    k = torch.as_tensor(class_target(target, enc), device=x.device).long().expand(x.shape[0])
    with enc.frozen():
        lin = inverter.linearize(x, last)[0]
        a_src = enc.forward_stages(source)[-1]
        sets = class_directional_weights(enc, a_src, k, mode)
        sums, _ = inverter.synthesize(lin, last, sets, source=a_src)
    return ClassDirectional(k, sums["class"], sums["class+"], sums["class-"], sets["class"])


@torch.no_grad()
def swapped_channel_inversions(inverter: Any, x: torch.Tensor, source: torch.Tensor,
                               channels: torch.Tensor, stage: int = -1) -> torch.Tensor:
    """``Ψ_stage^{(x)}(E_c ⊙ A_stage(source))`` for the channels (B, K) or (K,): the
    per-channel inversions of control 2, (B, K, 3, H, W). ``inverter``: anything
    [`adjinv.methods.resolve.resolve()`][adjinv.methods.resolve.resolve] takes."""
    inverter, x, source = _resolve_pair(inverter, x, source)
    s = inverter.stage_index(stage)
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


def partner_derangement(groups: list[int] | list[str]) -> tuple[list[int], str]:
    """The swapped-seed partner of every image: a permutation in which no image is
    paired with an image of its own group (docs/method.md §15).

    ``groups``: the source photo of each image (the embedded composites: the same photo
    pasted on other backgrounds is the *same* photo), or its class where labels exist.
    Sort by group and shift by the largest group's size ``m``; when ``m ≤ n − m`` this is a
    derangement with every partner in another group, each image used as a partner once.
    Otherwise (one group holds more than half the images) each image takes the next
    image of another group, cyclically; with a single group there is none and the
    partner is the next image. Returns ``(partners, rule)`` with the rule applied."""
    n = len(groups)
    if n < 2:
        raise AdjinvError("the swapped-seed control needs at least two images")
    order = sorted(range(n), key=lambda i: (str(groups[i]), i))
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[str(g)] = sizes.get(str(g), 0) + 1
    m = max(sizes.values())
    if len(sizes) == 1:
        return [(i + 1) % n for i in range(n)], "single group: next image (not a derangement by group)"
    partner = [0] * n
    if m <= n - m:
        for pos, i in enumerate(order):
            partner[i] = order[(pos + m) % n]
        return partner, "derangement by group (sorted by group, shifted by the largest group size)"
    for i in range(n):
        partner[i] = next(j for j in ((i + d) % n for d in range(1, n)) if str(groups[j]) != str(groups[i]))
    return partner, "next image of another group (a group holds more than half the images)"


HEAD_CONTROLS = ("permuted", "random")


def shuffled_head_row(wk: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """A control class row ``W'_k`` for the shuffled-head control (docs/method.md §15).

    ``"permuted"``: ``W_k`` permuted across channels (the same multiset of weights, the
    channel assignment destroyed); ``"random"``: a Gaussian row rescaled to ``W_k``'s
    norm (the head's row norms matched). ``wk`` (..., C); the permutation / draw depends
    only on ``seed`` and ``C``, so every image of a run gets the same control head."""
    if kind not in HEAD_CONTROLS:
        raise AdjinvError(f"head control must be one of {HEAD_CONTROLS}, got {kind!r}")
    c = wk.shape[-1]
    g = torch.Generator().manual_seed(seed)
    if kind == "permuted":
        perm = torch.randperm(c, generator=g).to(wk.device)
        return wk[..., perm]
    r = torch.randn(c, generator=g, dtype=torch.float64).to(wk.device, wk.dtype).expand_as(wk)
    return r * (wk.norm(dim=-1, keepdim=True) / r.norm(dim=-1, keepdim=True))


def head_row(encoder: StagedEncoder, a_last: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``W_{k,c}`` (B, C) of each image's class ``target[b]``: the head's exact per-image
    linear form, or for any other head the summed logit gradient (docs/method.md §6)."""
    from ..encoders.staged import LinearHead
    from .class_directional import logit_gradient

    if isinstance(encoder.head, LinearHead):
        w_eff, _ = encoder.head.effective_weights(a_last.mean(dim=(-2, -1)))
        return w_eff[torch.arange(a_last.shape[0], device=a_last.device), target]
    return logit_gradient(encoder.head, a_last, target).sum(dim=(-2, -1))


def shuffled_head_weights(encoder: StagedEncoder, a_last: torch.Tensor, target: torch.Tensor,
                          kind: str, mode: str = "contribution", seed: int = 0
                          ) -> dict[str, torch.Tensor]:
    """[`class_directional_weights()`][adjinv.methods.class_directional.class_directional_weights] with the
    class
    row replaced by [`shuffled_head_row()`][shuffled_head_row]: ``α'_c = W'_{k,c} g_c`` (contribution),
    ``W'_{k,c}`` (weight) or ``W'_{k,c} w_{L,c}``; the hemispheres split by the sign of
    ``W'``. Keys ``"class"``, ``"class+"``, ``"class-"`` as there (docs/method.md §6, §15)."""
    from .class_directional import _alphas

    wk = shuffled_head_row(head_row(encoder, a_last, target), kind, seed)
    return _alphas(wk, wk * a_last.mean(dim=(-2, -1)), a_last, mode)
