"""Any scalar readout of the deepest feature map through the trained LAC cascade
(Sec. 3.5, C.9, docs/method.md §12).

For a scalar ``s(A_L)`` computed by any differentiable module on the deepest
stage (a class logit, an attention block's energy, a token's energy, a user
callable), the seed is the single-step VJP ``G = ∂s/∂A_L`` and the
visualisation is ``Ψ_L(G)`` through the *unchanged* trained LACs (Eq. 7): the
LACs are trained once against the encoder and serve every head.

A readout is any callable ``A_L (B, C, h, w) -> s (B,)`` in which image ``b``'s
scalar depends only on image ``b``'s features; the batch seed is then
``G = ∂(Σ_b s_b)/∂A_L``. If the readout is an ``nn.Module``, or has a ``module``
attribute that is one, that module runs in eval mode with its parameters'
``requires_grad`` off while the seed is taken (both restored afterwards), so
dropout is off and no gradient reaches the head's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..core.inverter import AdjointInverter
from ..core.lac import LACBank
from ..core.simplex import simplex_measure
from ..encoders.staged import StagedEncoder
from ..errors import AdjinvError
from ..state import frozen
from .resolve import resolve

Readout = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ReadoutInversion:
    """What [`invert_readout()`][invert_readout] computed for one readout (tensors on the encoder's device).

    ``value``: the readout ``s`` (B,); ``seed``: ``G = ∂s/∂A_L`` (B, C_L, h, w);
    ``psi``: ``Ψ_L(G)`` (B, 3, H, W), one cascade pass of the whole seed (docs/method.md §12's
    default). With ``split=True``: ``split`` = ``Σ_c w_{L,c} Ψ_L(E_c ⊙ G)`` (B, 3, H, W)
    and the simplex weights ``weights`` (B, C_L) (Eq. 2, 8). With ``top_k > 0``:
    ``channels`` (B, K) and ``parts`` (B, K, 3, H, W) = ``Ψ_L(E_c ⊙ G)`` for each image's
    ``K`` channels of largest first-order contribution ``|⟨G_c, A_{L,c}⟩|``.
    """

    value: torch.Tensor
    seed: torch.Tensor
    psi: torch.Tensor
    split: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    channels: torch.Tensor | None = None
    parts: torch.Tensor | None = None


# ----------------------------------------------------------------------------- readouts
class LogitReadout:
    """``s = z_k``: logit ``k`` of any head on the deepest map (``encoder.head``, a
    [`HybridAttentionClassifier`][adjinv.paper.heads.attention.HybridAttentionClassifier], …).

    ``target``: a class index, one per image (B,), or ``None`` for each image's top-1.
    For the encoder's linear head ``z = W·GAP(A_L) + b`` the seed is exactly
    ``W_k / (h·w)`` at every position.
    """

    def __init__(self, head: nn.Module, target: int | torch.Tensor | None = None) -> None:
        self.module = head
        self.target = target

    def __call__(self, a_last: torch.Tensor) -> torch.Tensor:
        z = self.module(a_last)
        if self.target is None:
            k = z.detach().argmax(1)
        else:
            k = torch.as_tensor(self.target, device=z.device).long().expand(z.shape[0])
            if ((k < 0) | (k >= z.shape[1])).any():
                raise AdjinvError(f"class index out of range for a head with {z.shape[1]} classes: "
                                  f"{k.tolist()}")
        return z.gather(1, k[:, None])[:, 0]

    def __repr__(self) -> str:
        return f"LogitReadout(target={self.target})"


class BlockEnergy:
    """``s = ‖T_b‖²``: the energy of attention block ``b``'s output over all tokens
    (Sec. C.9's layer-wise readout). ``model`` needs ``token_states(a_last, upto)``."""

    def __init__(self, model: nn.Module, block: int) -> None:
        self.module: Any = model  # a HybridAttentionClassifier (token_states)
        self.block = block

    def __call__(self, a_last: torch.Tensor) -> torch.Tensor:
        t = self.module.token_states(a_last, upto=self.block)[self.block]
        return t.pow(2).sum(dim=(1, 2))

    def __repr__(self) -> str:
        return f"BlockEnergy(block={self.block})"


class TokenEnergy:
    """``s = ‖T_{b,t}‖²``: the energy of token ``t`` at the output of block ``b``
    (Sec. C.9's per-token readout). Token ``t`` sits at row ``t // w``, column ``t % w``
    of the ``h×w`` grid of the deepest map."""

    def __init__(self, model: nn.Module, block: int, token: int) -> None:
        self.module: Any = model  # a HybridAttentionClassifier (token_states)
        self.block = block
        self.token = token

    def __call__(self, a_last: torch.Tensor) -> torch.Tensor:
        t = self.module.token_states(a_last, upto=self.block)[self.block]
        if not 0 <= self.token < t.shape[1]:
            raise AdjinvError(f"token {self.token} out of range: the deepest map has {t.shape[1]} "
                              "tokens (h·w)")
        return t[:, self.token].pow(2).sum(dim=-1)

    def __repr__(self) -> str:
        return f"TokenEnergy(block={self.block}, token={self.token})"


# ----------------------------------------------------------------------------- plumbing



def _readout_module(readout: Readout) -> nn.Module | None:
    if isinstance(readout, nn.Module):
        return readout
    m = getattr(readout, "module", None)
    return m if isinstance(m, nn.Module) else None


def readout_seed(readout: Readout, a_last: torch.Tensor, name: str = "readout"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, G)`` with ``s = readout(A_L)`` (B,) and ``G = ∂(Σ_b s_b)/∂A_L`` (B, C, h, w).

    Raises [`AdjinvError`][AdjinvError] when ``s`` has the wrong shape or is not finite, and
    when ``G`` is identically zero for an image: ``Ψ_L(0)`` shows only the LAC biases
    and the image's activation masks (the seed-zero control), nothing of the readout.
    """
    bsz = a_last.shape[0]
    cap = name[0].upper() + name[1:]
    a = a_last.detach().clone().requires_grad_(True)
    with ExitStack() as stack:
        mod = _readout_module(readout)
        if mod is not None:
            stack.enter_context(frozen(mod))
        with torch.enable_grad():
            s = readout(a)
        if not isinstance(s, torch.Tensor):
            raise AdjinvError(f"{cap} must return a tensor of shape ({bsz},), got {type(s).__name__}")
        if s.dim() == 0 and bsz == 1:
            s = s.reshape(1)
        elif s.dim() == 2 and s.shape[1] == 1:
            s = s[:, 0]
        if tuple(s.shape) != (bsz,):
            raise AdjinvError(f"{cap} must return one scalar per image, shape ({bsz},); got "
                              f"{tuple(s.shape)} (for several scalars, pass several readouts)")
        if not s.is_floating_point():
            raise AdjinvError(f"{cap} returned dtype {s.dtype}; a readout must be a differentiable "
                              "floating-point function of the features")
        if not torch.isfinite(s.detach()).all():
            raise AdjinvError(f"{cap} is not finite (NaN or Inf) for image(s) "
                              f"{(~torch.isfinite(s.detach())).nonzero().flatten().tolist()}")
        g = None
        if s.requires_grad:
            with torch.enable_grad():
                (g,) = torch.autograd.grad(s.sum(), a, allow_unused=True)
    if g is None:
        g = torch.zeros_like(a)
    g = g.detach()
    if not torch.isfinite(g).all():
        raise AdjinvError(f"the gradient of {name} w.r.t. the deepest features is not finite "
                          "(NaN or Inf); the readout is not differentiable at these features")
    dead = (g.flatten(1).abs().amax(1) == 0).nonzero().flatten().tolist()
    if dead:
        raise AdjinvError(
            f"{cap} does not depend on the deepest feature map A_L for image(s) {dead}: its "
            "gradient ∂s/∂A_L (the seed G) is identically zero, and Ψ_L(0) would show only the "
            "LAC biases, nothing of the readout; pass a scalar computed from the features")
    return s.detach(), g


# ----------------------------------------------------------------------------- public API
@torch.no_grad()
def invert_readouts(encoder: StagedEncoder | AdjointInverter | nn.Module, lacs: LACBank | None,
                    images: torch.Tensor, readouts: Mapping[str, Readout], *, split: bool = False,
                    top_k: int = 0, chunk_size: int | None = None,
                    memory_budget: int | None = None) -> dict[str, ReadoutInversion]:
    """[`invert_readout()`][invert_readout] for several readouts of the same images, sharing one
    forward linearisation; the seeds go through the cascade together, chunked to the
    memory budget. Returns ``{name: ReadoutInversion}`` in the order given.

    ``encoder`` may be ``adjinv.Inverter(model, …)`` (then ``images`` as it takes them) or
    an [`AdjointInverter`][AdjointInverter]: its LACs, precision, engine and chunking are used as they
    are (then ``lacs``, ``chunk_size`` and ``memory_budget`` must be ``None``); or a plain
    CNN ``nn.Module`` ([`adjinv.methods.resolve.resolve()`][adjinv.methods.resolve.resolve])."""
    if not readouts:
        raise AdjinvError("no readouts given; pass at least one scalar function of A_L")
    if top_k < 0:
        raise AdjinvError(f"top_k must be >= 0, got {top_k}")
    if isinstance(encoder, StagedEncoder):
        inverter = AdjointInverter(encoder, lacs, chunk_size=chunk_size,
                                   memory_budget=memory_budget)
        prepare: Callable[[torch.Tensor], torch.Tensor] = inverter.prepare
    else:
        if lacs is not None or chunk_size is not None or memory_budget is not None:
            raise AdjinvError("pass the LACs and chunking through the inverter, not beside it "
                              "(lacs, chunk_size and memory_budget must be None)")
        resolved = resolve(encoder)
        inverter, prepare = resolved.inverter, resolved.prepare
        encoder = inverter.encoder
    x = inverter.prepare(prepare(images))
    last = encoder.num_stages - 1
    out: dict[str, ReadoutInversion] = {}
    # no gradient can reach the trained LACs; their flags are restored on exit
    with encoder.frozen(), frozen(inverter.lacs):
        lin, acts = inverter.linearize(x, last)  # at the reference if the LACs say so (§16)
        a = acts[last]
        seeds = {}
        for name, r in readouts.items():
            label = "the readout" if len(readouts) == 1 else f"readout {name!r}"
            seeds[name] = readout_seed(r, a, label)
        names = list(seeds)
        stacked = torch.stack([seeds[n][1] for n in names])  # (N, B, C, h, w)
        psi = torch.empty(len(names), *x.shape, dtype=x.dtype, device=x.device)
        idx = torch.arange(len(names), device=x.device)
        for ch, phi in inverter.chunks(lin, last, idx,
                                       lambda ch: inverter.cascade.pull_back(lin, last, stacked[ch])):
            psi[ch] = phi
        w = simplex_measure(a) if split else None
        for i, n in enumerate(names):
            value, g = seeds[n]
            res = ReadoutInversion(value=value, seed=g, psi=psi[i])
            if split or top_k > 0:
                keep = None
                if top_k > 0:
                    contrib = (g * a).sum(dim=(-2, -1)).abs()
                    keep = contrib.topk(min(top_k, a.shape[1]), dim=1).indices
                sums, parts = inverter.synthesize(lin, last, {"split": w} if w is not None else {},
                                                  keep=keep, source=g)
                res.split = sums.get("split")
                res.weights = w
                res.channels, res.parts = keep, parts
            out[n] = res
    return out


def invert_readout(encoder: StagedEncoder | AdjointInverter | nn.Module,
                   lacs: LACBank | torch.Tensor | None, images: torch.Tensor | Readout,
                   readout: Readout | None = None, *, split: bool = False, top_k: int = 0,
                   chunk_size: int | None = None,
                   memory_budget: int | None = None) -> ReadoutInversion:
    """Visualise any scalar readout ``s`` of the deepest feature map (Sec. 3.5, docs/method.md §12).

    ``encoder``: the encoder; or ``adjinv.Inverter(model, …)``, an [`AdjointInverter`][AdjointInverter]
    or a CNN ``nn.Module``, whose LACs, precision and engine are used (``lacs`` then
    ``None``, or left out: ``invert_readout(inv, images, readout)``);
    ``images``: a normalised batch (B, 3, H, W) (validated by ``check_input``);
    ``lacs``: the trained LACs (``None``: identity LACs), never modified — no gradient
    reaches them and their ``requires_grad`` flags are restored. ``readout`` maps
    ``A_L`` (B, C_L, h, w) to (B,) (see the module docstring).

    Returns the seed ``G = ∂s/∂A_L`` and ``Ψ_L(G)``, one cascade pass of the whole
    seed (docs/method.md §12's default). [choice, docs/method.md §12] ``split=True`` adds the per-channel
    split of the seed, ``Σ_c w_{L,c} Ψ_L(E_c ⊙ G)`` over the live channels, with the
    simplex weights ``w_{L,c}`` of Eq. 2 (Eq. 8 with ``G`` in place of ``A_L``: for
    ``G = A_L`` it is ``x̂_L``); it costs one cascade pass per live channel.
    ``top_k`` keeps the per-channel parts ``Ψ_L(E_c ⊙ G)`` of the ``K`` channels with
    the largest first-order contribution ``|⟨G_c, A_{L,c}⟩|`` (for a linear head's
    logit, ``|W_{k,c} g_c|``, the class-directional ``α`` of Eq. 12).

    Raises [`AdjinvError`][AdjinvError] if the readout ignores the features (zero seed).
    """
    if isinstance(lacs, torch.Tensor):  # invert_readout(inv, images, readout)
        lacs, images, readout = None, lacs, cast(Readout, images)  # type: ignore[assignment]
    if readout is None or not isinstance(images, torch.Tensor):
        raise AdjinvError("call invert_readout(inverter, images, readout) or "
                          "invert_readout(encoder, lacs, images, readout)")
    return invert_readouts(encoder, lacs, images, {"readout": readout}, split=split, top_k=top_k,
                           chunk_size=chunk_size, memory_budget=memory_budget)["readout"]
