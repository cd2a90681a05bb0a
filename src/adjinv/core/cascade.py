"""The adjoint cascade Ψ_l (Eq. 3–7, docs/method.md §2–§3), batched over channels and images."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TypeVar, cast

import torch
from torch import nn
from torch.func import vjp, vmap

from ..encoders.staged import Stage, StagedEncoder
from ..errors import AdjinvError
from .adjoint import StageAdjoint, build_stage_adjoint, known_type
from .lac import LACBank, LocalAdjointCorrector
from .memory import chunk_size_for
from .precision import check_precision, compute_dtype, fp32_mode

PullBack = Callable[[torch.Tensor], torch.Tensor]
R = TypeVar("R")
ENGINES = ("auto", "autograd")
log = logging.getLogger(__name__)

# Relative tolerance of the per-stage self-check, ‖J_expᵀu − J_vjpᵀu‖ / ‖J_vjpᵀu‖, by the
# dtype the explicit transposes compute in. float32/float64 differ only by summation
# order (measured ≤ 1e-6 / 1e-15 on the test encoders); float16/bfloat16 round the
# cotangents (11 / 8 bits). A dropped derivative or a lost padding is O(1).
VERIFY_RTOL = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@dataclass
class Linearization:
    """The encoder linearised at one batch ``x``: activations ``A_0..A_l`` and, per
    stage, the pull-back ``u ↦ J_{f_k}ᵀ u`` on cotangents (N, B, C, h, w) (one
    forward shared by all chunks)."""

    x: torch.Tensor
    acts: list[torch.Tensor]
    pullbacks: list[PullBack]
    check_errors: list[float | None] = field(default_factory=list)
    """Per stage: the self-check's relative error of the explicit transpose (``None``:
    not checked); a stage that failed it uses autograd."""

    @property
    def explicit(self) -> list[bool]:
        """Per stage: the explicit transpose ([`adjinv.core.adjoint`][adjinv.core.adjoint]), or ``vmap``
        over autograd's VJP."""
        return [isinstance(pb, StageAdjoint) for pb in self.pullbacks]

    @property
    def upto(self) -> int:
        """Deepest stage linearised."""
        return len(self.acts) - 1


# While LAC training records a pull-back, back-propagate through each explicit stage
# transpose with its own Jacobian (`StageAdjoint.jacobian()`, one forward pass) instead of
# recording the transpose's ops for autograd (False: record them; for A/B and tests).
EXPLICIT_BACKWARD = True


class _RecordedTranspose(torch.autograd.Function):
    """``u ↦ J_fᵀ u`` for autograd: computed without recording its ops; its backward
    is ``g ↦ J_f g`` (the transpose is linear, so that is its exact derivative)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, u: torch.Tensor,
                pb: StageAdjoint) -> torch.Tensor:
        ctx.pb = pb  # type: ignore[attr-defined]
        out = pb(u)
        return out.clone() if out.untyped_storage().data_ptr() == u.untyped_storage().data_ptr() \
            else out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.pb.jacobian(g), None  # type: ignore[attr-defined]


def _apply(pb: PullBack, u: torch.Tensor) -> torch.Tensor:
    """One stage's pull-back; through `_RecordedTranspose` while autograd records, once the
    stage's Jacobian has passed its adjoint check (else autograd records the transpose's
    ops, with a warning: never a silently wrong gradient)."""
    if EXPLICIT_BACKWARD and isinstance(pb, StageAdjoint) and torch.is_grad_enabled() \
            and u.requires_grad and pb.has_jacobian:
        checked = pb.jacobian_error is not None
        with fp32_mode("float32"):  # a check of the algebra, not of TF32's rounding
            err = pb.check_jacobian(u)
        tol = VERIFY_RTOL.get(pb.dtype, 1e-4)
        if err <= tol:
            return cast(torch.Tensor, _RecordedTranspose.apply(u, pb))
        if not checked:
            msg = (f"a stage's explicit Jacobian fails its adjoint check ({err:.2e}, tolerance "
                   f"{tol:.0e}); LAC gradients through that stage use autograd instead")
            log.warning(msg)
            warnings.warn(msg, stacklevel=4)
    return pb(u)


def _vjp(stage: nn.Module, a: torch.Tensor
         ) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple[torch.Tensor]]]:
    """``torch.func.vjp`` of one stage (no auxiliary output): ``(f(a), u ↦ (J_fᵀ u,))``."""
    y, fn = vjp(stage, a)[:2]
    return y, fn


def _vmapped(fn: Callable[[torch.Tensor], tuple[torch.Tensor]]) -> PullBack:
    batched = vmap(fn)
    return lambda u: batched(u)[0]


class AdjointCascade:
    """``Ψ_l(S) = LAC_pix(J_{f_0}ᵀ(… LAC_{l-1}(J_{f_l}ᵀ S) …))`` (Eq. 7).

    A LAC follows the pull-back through every decimating stage ``k+1`` (acting on
    the gradient w.r.t. stage ``k``'s output) and through the stem (``LAC_pix``).
    Cotangents carry a leading channel dimension ``N`` before the image batch
    ``B``: shape (N, B, C_l, h, w). Every item is independent, so a chunk of N
    seeds costs one batched pull-back per stage.

    ``engine="auto"`` transposes every stage it can trace explicitly (convolutions
    with BatchNorm folded in, masks, routing; by default channels-last except for IEEE
    float32 on CUDA, as measured in docs/speed.md) and uses ``vmap`` over ``torch.func.vjp`` for the
    rest; ``engine="autograd"`` uses the latter everywhere. ``precision`` is one of
    [`adjinv.core.precision.PRECISIONS`][adjinv.core.precision.PRECISIONS].

    ``verify`` (default on): every explicitly transposed stage is checked, each time it is
    linearised, against ``torch.func.vjp`` on one random cotangent (and its output against
    the autograd forward); beyond `VERIFY_RTOL` for the compute dtype the stage uses
    autograd instead, with a warning naming its module types.
    ``kernels="triton"`` runs masks with their residual sums and the LACs as Triton kernels
    ([`adjinv.core.triton_kernels`][adjinv.core.triton_kernels]; CUDA, default off: not yet measured faster).
    """

    def __init__(self, encoder: StagedEncoder, lacs: LACBank, *, engine: str = "auto",
                 precision: str = "float32", channels_last: bool | None = None,
                 verify: bool = True, kernels: str = "torch") -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.encoder = encoder
        self.lacs = lacs
        self.engine = engine
        self.precision = check_precision(precision)
        self.channels_last = channels_last
        self.verify = verify
        self.kernels = kernels
        if kernels != "torch":
            from .triton_kernels import check_kernels

            check_kernels(kernels)

    def precision_context(self) -> AbstractContextManager[None]:
        """The TF32 setting of this cascade's pull-backs (restored on exit)."""
        return fp32_mode(self.precision)

    def _use_channels_last(self, x: torch.Tensor) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        # measured (docs/speed.md): NHWC faster on 2 CPU cores and for TF32/bf16 on an H100;
        # cuDNN's IEEE float32 NCHW kernels were faster there (0.836 vs 0.935 s, ResNet-50)
        return x.device.type != "cuda" or self.precision != "float32"

    def linearize(self, x: torch.Tensor, upto: int | None = None) -> Linearization:
        """Run the forward pass once, keeping each stage's pull-back."""
        last = self.encoder.num_stages - 1 if upto is None else upto
        cl = self._use_channels_last(x)
        dtype = compute_dtype(self.precision, x.dtype)
        if self.precision == "fp16" and x.device.type == "cpu":
            warnings.warn("precision='fp16' is meant for CUDA: float16 convolutions on the CPU are "
                          "far slower than float32 (69 s vs 1.8 s for one Lite0 image at 96 px on "
                          "2 cores); use precision='float32' on the CPU", stacklevel=3)
        acts, pbs, errs = [], [], []
        a = x
        with fp32_mode("float32"):
            for k, st in enumerate(cast(list[Stage], self.encoder.stages[: last + 1])):
                built: tuple[torch.Tensor, PullBack] | None = None
                err = None
                if self.engine == "auto":
                    built = build_stage_adjoint(st.body, a, channels_last=cl, dtype=dtype,
                                                kernels=self.kernels)
                if built is not None and self.verify:
                    built, err = self._verified(k, st, a, built, dtype)
                if built is None:
                    a, fn = _vjp(st, a)
                    pbs.append(_vmapped(fn))
                else:
                    a, pb = built
                    pbs.append(pb)
                acts.append(a)
                errs.append(err)
        return Linearization(x=x, acts=acts, pullbacks=pbs, check_errors=errs)

    def _verified(self, k: int, st: Stage, a: torch.Tensor,
                  built: tuple[torch.Tensor, PullBack], dtype: torch.dtype
                  ) -> tuple[tuple[torch.Tensor, PullBack], float]:
        """The explicit stage ``built`` if it matches autograd on one random cotangent,
        else stage ``k``'s autograd pull-back (with a warning); and the relative error."""
        y, pb = built
        # plain autograd, not torch.func: its first call imports torch._dynamo (about 1.5 s
        # of every `adjinv invert` on 2 cores); the same VJP
        with torch.enable_grad():
            a_in = a.detach().requires_grad_(True)
            y_ref = st(a_in)
            gen = torch.Generator(device=y_ref.device).manual_seed(k)
            u = torch.randn(y_ref.shape, generator=gen, device=y_ref.device, dtype=y_ref.dtype)
            want = torch.autograd.grad(y_ref, a_in, u)[0]
        y_ref = y_ref.detach()
        got = pb(u.unsqueeze(0))[0]
        err = max(_rel_err(got, want), _rel_err(y, y_ref))
        tol = VERIFY_RTOL.get(dtype, 1e-4)
        if err <= tol:
            return built, err
        types = ", ".join(_module_types(st.body))
        msg = (f"stage {k} ({self.encoder.infos[k].name}): its explicit transpose differs from "
               f"autograd's VJP by {err:.2e} (relative; tolerance {tol:.0e} in {dtype}), so it "
               f"uses autograd; module types in the stage: {types}")
        log.warning(msg)
        warnings.warn(msg, stacklevel=3)
        y_ref, fn = _vjp(st, a)
        return (y_ref, _vmapped(fn)), err

    def pull_back(self, lin: Linearization, stage: int, cot: torch.Tensor) -> torch.Tensor:
        """Ψ_stage applied to cotangents ``cot`` (N, B, C_stage, h, w) → (N, B, 3, H, W)."""
        u = cot
        with self.precision_context():
            for k in range(stage, -1, -1):
                u = _apply(lin.pullbacks[k], u)
                if k == 0:
                    u = self._lac(self.lacs.pix, u)
                elif self.encoder.infos[k].decimates:
                    lac = self.lacs.at(k - 1)
                    if lac is not None:
                        u = self._lac(lac, u)
        return self._checked(u)

    def _lac(self, lac: LocalAdjointCorrector, u: torch.Tensor) -> torch.Tensor:
        """``lac(u)``; with ``kernels="triton"`` in two Triton passes where they apply."""
        if self.kernels == "triton":
            from .triton_kernels import lac_apply

            out = lac_apply(lac, u)
            if out is not None:
                return out
        return lac(u)

    def raw_pull_back(self, lin: Linearization, stage: int, cot: torch.Tensor) -> torch.Tensor:
        """``J_{A_stage}ᵀ cot`` without any LAC (the vanilla VJP of Eq. 3)."""
        u = cot
        with self.precision_context():
            for k in range(stage, -1, -1):
                u = lin.pullbacks[k](u)
        return self._checked(u)

    def _checked(self, u: torch.Tensor) -> torch.Tensor:
        """float16 pull-backs are rescaled per stage but could still overflow inside one:
        never hand back a non-finite result silently."""
        if self.precision == "fp16" and not bool(torch.isfinite(u).all()):
            raise AdjinvError("the float16 pull-back overflowed (a stage grows a cotangent more "
                              "than 65504×); use precision='tf32' or 'float32'")
        return u

    def per_item_bytes(self, lin: Linearization, stage: int) -> int:
        """Rough memory of one seed through the cascade. Explicit transposes hold about 3
        maps as large as the widest map inside a stage (the gradient, a residual branch,
        the next output); ``vmap`` over autograd's VJP holds up to ~6x the stage input for
        inverted bottlenecks: count 8 of the widest stage boundary."""
        sizes = [lin.x[0].numel()] + [a[0].numel() for a in lin.acts[: stage + 1]]
        b = lin.x.shape[0]
        pbs = lin.pullbacks[: stage + 1]
        explicit = [pb for pb in pbs if isinstance(pb, StageAdjoint)]
        if len(explicit) == len(pbs):
            return int(3 * max(sizes + [pb.widest for pb in explicit]) * b * lin.x.element_size())
        return int(8 * max(sizes) * b * lin.x.element_size())


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """``‖got − want‖ / ‖want‖`` in float64 (0 when both vanish, inf if only ``want`` does)."""
    diff = float((got.double() - want.double()).norm())
    ref = float(want.double().norm())
    if ref == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / ref


def _module_types(body: nn.Module) -> list[str]:
    """Distinct module types of a stage (containers left out), those without an explicit
    transpose first."""
    mods = [m for m in body.modules() if not isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict)]
    unknown = [type(m).__name__ for m in mods if known_type(m) is None]
    known = [type(m).__name__ for m in mods if known_type(m) is not None]
    return list(dict.fromkeys(unknown + known)) or [type(body).__name__]


def channel_seeds(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Channel-selective seeds ``S_{l,c} = E_c ⊙ A_l`` (Eq. 3) for channels ``idx``:
    ``a`` (B, C, h, w) → (len(idx), B, C, h, w)."""
    onehot = torch.zeros(idx.numel(), a.shape[1], dtype=a.dtype, device=a.device)
    onehot[torch.arange(idx.numel(), device=a.device), idx] = 1
    return onehot[:, None, :, None, None] * a.unsqueeze(0)


def chunked(idx: torch.Tensor, size: int,
            work: Callable[[torch.Tensor], R]) -> Iterator[tuple[torch.Tensor, R]]:
    """The one chunked pull-back loop (docs/method.md §3, [choice] batching): ``(ch, work(ch))``
    for consecutive slices ``ch`` of ``idx`` of at most ``size`` entries.

    A CUDA out-of-memory error inside ``work`` means the memory estimate was too
    optimistic: the chunk is halved, the cache emptied and the same
    channels retried; later chunks keep the smaller size. A single channel that does not
    fit re-raises. ``work`` is therefore retried and must change nothing outside its
    return value; the caller consumes the result after each ``yield``, where a failure is
    not retried.

    Args:
        idx: 1-D tensor of the indices (channels, seeds) to process.
        size: entries per chunk at first (at least 1).
        work: maps one slice of ``idx`` to its result, e.g. ``Ψ_l`` of its seeds.

    Returns:
        An iterator of ``(slice, result)`` pairs covering ``idx`` in order.
    """
    size = max(1, size)
    done = 0
    while done < idx.numel():
        ch = idx[done: done + size]
        try:
            out = work(ch)
        except torch.cuda.OutOfMemoryError:
            if ch.numel() == 1:
                raise
            size = max(1, size // 2)
            log.info("out of memory with %d channels per chunk; retrying with %d",
                     ch.numel(), size)
            torch.cuda.empty_cache()
            continue
        yield ch, out
        done += ch.numel()


def auto_chunk(cascade: AdjointCascade, lin: Linearization, stage: int,
               budget: int | None = None) -> int:
    """Channels per chunk that fit the device's memory budget."""
    return chunk_size_for(cascade.per_item_bytes(lin, stage), lin.x.device, budget)
