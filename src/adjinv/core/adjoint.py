"""Explicit transposed Jacobians of stages: the fast path of the cascade (Eq. 3, 7).

At a fixed image every stage of a ReLU CNN is, to first order, a chain of linear
maps: convolutions (with eval-mode BatchNorm folded into them), the ReLU/ReLU6
masks of the image, max-pool routing, sums and channel concatenations. A stage
is traced once with `torch.fx`; `build_stage_adjoint()` runs its
forward, records what each op's transpose needs, and returns a
`StageAdjoint` that applies ``J_fᵀ`` to a whole chunk of cotangents with
plain tensor ops (``conv_transpose2d`` on ``N·B`` maps, channels-last when
asked). Compared with ``vmap`` over ``torch.func.vjp`` this skips the autograd
engine, the batching rules' copies and every BatchNorm backward, and lets
convolutions run in the memory format the hardware prefers.

A module is transposed explicitly only when its type is one this file knows
exactly, or a subclass that does not override ``forward`` (a subclass that does, such
as a BatchNorm with a fused activation or a max-pool with its own padding, computes
something else, so it is traced into or left to autograd). Anything the tracer cannot
follow, or an op outside the supported set (LayerNorm, GELU, attention,
training-mode BatchNorm, …), makes `build_stage_adjoint()` return ``None``; the
cascade then uses ``torch.func.vjp`` for that stage, so every encoder still works.
Equality with the autograd VJP is tested in float64, and the cascade checks every
explicit stage against it once per linearisation ([`AdjointCascade`][adjinv.core.cascade.AdjointCascade]).
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..encoders.efficientnet_lite import Conv2dSame

# The module types with an explicit transpose. Conv2dSame (TF-"SAME" padding, the
# embedded EfficientNet-Lite) is known by its exact type: its forward is read below.
_KNOWN = (nn.Conv2d, Conv2dSame, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool2d,
          nn.Identity, nn.Dropout)
_RELU_FNS = {F.relu: (0.0, None), torch.relu: (0.0, None), F.relu6: (0.0, 6.0)}
_ADD_FNS = (operator.add, torch.add)
_PASS_METHODS = ("clone", "contiguous")
_RELU_METHODS = ("relu", "relu_")


def known_type(m: nn.Module) -> type | None:
    """The known type whose transpose applies to ``m``: ``type(m)`` itself if known, or
    the nearest known base class when no class in between defines ``forward``; else
    ``None`` (the module computes something this file has no transpose for)."""
    for cls in type(m).__mro__:
        if cls in _KNOWN:
            return cls
        if "forward" in vars(cls):
            return None
    return None


class _Tracer(fx.Tracer):
    """Keeps the known layers opaque; any other module from ``torch.nn`` stays opaque
    too (and is then refused), modules from elsewhere are traced into."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return known_type(m) is not None or super().is_leaf_module(m, qualname)


_TRACES: weakref.WeakKeyDictionary[nn.Module, fx.Graph | None] = weakref.WeakKeyDictionary()


def _trace(body: nn.Module) -> fx.Graph | None:
    """The stage's graph (cached per module), or ``None`` if it cannot be traced."""
    if body not in _TRACES:
        try:
            _TRACES[body] = _Tracer().trace(body)
        except Exception:  # any tracing failure means "use autograd" for this stage
            _TRACES[body] = None
    return _TRACES[body]


class Unsupported(Exception):
    """An op without an explicit transpose; the caller falls back to autograd."""


def _same_padding(m: nn.Conv2d, kind: type, h: int, w: int) -> tuple[int, int, int, int] | None:
    """(left, right, top, bottom) input padding of a TF-"SAME" convolution, if ``m`` is one."""
    return cast(Conv2dSame, m).same_padding(h, w) if kind is Conv2dSame else None


def _conv_ok(m: nn.Conv2d) -> bool:
    return m.padding_mode == "zeros" and not isinstance(m.padding, str)


@dataclass
class _Op:
    """One node's transpose: ``kind`` and what it needs."""

    kind: str
    args: tuple[fx.Node, ...]
    data: dict


class StageAdjoint:
    """``u ↦ J_fᵀ u`` for one stage at one input, on cotangents (N, B, C, h, w)."""

    def __init__(self, graph: fx.Graph, ops: dict[fx.Node, _Op], placeholder: fx.Node,
                 output: fx.Node, in_shape: torch.Size, channels_last: bool,
                 dtype: torch.dtype, widest: int) -> None:
        self._order = [n for n in reversed(graph.nodes) if n in ops]
        self._ops = ops
        self._placeholder = placeholder
        self._output = output
        self._in_shape = in_shape
        self._fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.dtype = dtype
        self.widest = widest  # elements of the largest map of one image inside the stage
        self._triton = False
        self.jacobian_error: float | None = None  # set by `check_jacobian()`

    def use_triton(self) -> None:
        """Apply masks and the residual sums after them with the Triton kernel of
        [`adjinv.core.triton_kernels`][adjinv.core.triton_kernels] (bits packed here), where it applies."""
        from .triton_kernels import pack_mask

        for op in self._ops.values():
            if op.kind == "mask":
                op.data["packed"] = pack_mask(op.data["mask"], op.data["channels_last"])
        self._triton = True

    def _triton_mask(self, op: _Op, g: torch.Tensor, own: bool, g2: torch.Tensor | None,
                     grads: dict[fx.Node, tuple[torch.Tensor, bool]]) -> tuple[torch.Tensor, bool] | None:
        """``grads[src] (+)= (g + g2) ⊙ mask`` in one fused pass (``g2``: a second gradient
        of the mask's output, a residual sum left pending); ``None`` when done, else the
        gradient for the PyTorch path."""
        from .triton_kernels import mask_add

        src, d = op.args[0], op.data
        acc, acc_own = grads.get(src, (None, False))
        out = acc if acc_own else (g if own else None)
        res = mask_add(g, d["packed"], d["mask"].shape, d["channels_last"], acc, out, g2)
        if res is not None:
            grads[src] = (res, True)
            return None
        if g2 is None:
            return g, own
        return (g.add_(g2) if own else g + g2), True

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        n, b = u.shape[:2]
        out_dtype = u.dtype
        u = u.reshape(n * b, *u.shape[2:])
        g, scale = _into_compute(u, self.dtype, self._fmt)
        # Each pending gradient carries a flag: True if no other reference to its memory
        # exists, so masks and sums may update it in place (fresh CPU allocations cost
        # as much as the arithmetic of an elementwise op).
        fresh = g.untyped_storage().data_ptr() != u.untyped_storage().data_ptr()
        # Under autograd (LAC training), in-place ops on the many views here (channel
        # splits, crops, permuted products) make autograd copy whole base tensors back
        # (CopySlices), a large share of a training step's time (profiled on Lite0 at 96 px;
        # benchmarks/training_step_ab.py times both). Out of place instead.
        inplace = IN_PLACE_UNDER_AUTOGRAD or not _records(g)
        fresh = fresh and inplace
        grads: dict[fx.Node, tuple[torch.Tensor, bool]] = {self._output: (g, fresh)}
        pending: dict[fx.Node, torch.Tensor] = {}  # Triton: a sum done inside the next mask
        for node in self._order:
            entry = grads.pop(node, None)
            if entry is None:
                continue
            op = self._ops[node]
            if self._triton and op.kind == "mask":
                entry = self._triton_mask(op, *entry, pending.pop(node, None), grads)
                if entry is None:
                    continue
            outs = self._transpose(op, entry[0], entry[1] and inplace, n)
            for src, (gs, own) in zip(op.args, outs, strict=True):
                own = own and inplace
                if src not in grads:
                    grads[src] = (gs, own)
                    continue
                if self._triton and src not in pending and src in self._ops \
                        and self._ops[src].kind == "mask":
                    pending[src] = gs
                    continue
                acc, acc_own = grads[src]
                if acc_own:
                    grads[src] = (acc.add_(gs), True)
                elif own:
                    grads[src] = (gs.add_(acc), True)
                else:
                    grads[src] = (acc + gs, inplace)
        got = grads.get(self._placeholder)
        if got is None:  # the stage ignores its input: its Jacobian is zero
            return u.new_zeros(n, b, *self._in_shape[1:])
        gx = _out_of_compute(got[0], scale, out_dtype, self._fmt)
        return gx.reshape(n, b, *gx.shape[1:])

    @property
    def has_jacobian(self) -> bool:
        """Whether `jacobian()` applies: float32/float64 compute, every convolution kept."""
        return self.dtype in (torch.float32, torch.float64) and all(
            op.data.get("fwd") is not None for op in self._ops.values()
            if op.kind in ("conv", "polyphase"))

    def check_jacobian(self, like: torch.Tensor) -> float:
        """The relative error of the adjoint identity ``⟨J v, u⟩ = ⟨v, Jᵀ u⟩`` on one
        seeded random pair (on ``like``'s device), normalised by ``‖J v‖·‖u‖``: about the
        rounding of the dtype when `jacobian()` is the adjoint of ``__call__`` (which the
        cascade checks against autograd), O(1) when it is not. Computed once, then cached in
        ``jacobian_error``."""
        if self.jacobian_error is None:
            with torch.no_grad():
                gen = torch.Generator(device=like.device).manual_seed(0)
                v = torch.randn((1, *self._in_shape), generator=gen, device=like.device,
                                dtype=self.dtype)
                jv = self.jacobian(v)
                u = torch.randn(jv.shape, generator=gen, device=like.device, dtype=self.dtype)
                lhs, rhs = (jv * u).sum(), (v * self(u)).sum()
                scale = float(jv.norm() * u.norm())
                self.jacobian_error = float((lhs - rhs).abs()) / scale if scale > 0 else 0.0
        return self.jacobian_error

    def jacobian(self, v: torch.Tensor) -> torch.Tensor:
        """``v ↦ J_f v`` on tangents (N, B, C_in, H, W) → (N, B, C_out, h, w): the stage's
        linearisation at its input, run forward through the same recorded ops (each
        convolution forward without its bias, each mask, pooling switch, sum and
        concatenation as recorded). It is the adjoint of ``__call__`` — what autograd needs
        to back-propagate through a transpose while LAC training records it
        (docs/method.md §4) — at the cost of one forward pass and without recording
        the transpose's own ops."""
        if not self.has_jacobian:
            raise AssertionError("jacobian() needs float32/float64 explicit convolutions")
        n, b = v.shape[:2]
        x = v.reshape(n * b, *v.shape[2:]).to(self.dtype).contiguous(memory_format=self._fmt)
        order = list(reversed(self._order))  # graph order
        uses: dict[fx.Node, int] = {self._output: 1}
        for node in order:
            for a in self._ops[node].args:
                uses[a] = uses.get(a, 0) + 1
        vals: dict[fx.Node, torch.Tensor] = {self._placeholder: x}
        for node in order:
            op = self._ops[node]
            ins, last = [], []
            for a in op.args:
                ins.append(vals[a])
                uses[a] -= 1
                last.append(uses[a] == 0 and a is not self._placeholder)
                if uses[a] == 0:
                    del vals[a]
            # an op may update its input in place where no one else reads that map
            own = [o and sum(t is ins[i] for t in ins) == 1 for i, o in enumerate(last)]
            vals[node] = self._forward(op, ins, own, n)
        out = vals.get(self._output)
        if out is None:  # the stage's output does not depend on its input
            raise AssertionError("stage output not reached from its input")
        return out.to(v.dtype).reshape(n, b, *out.shape[1:])

    @staticmethod
    def _forward(op: _Op, ins: list[torch.Tensor], own: list[bool], n: int) -> torch.Tensor:
        """One recorded op's linearisation, forward (the adjoint of `_transpose()`); ``own[i]``:
        ``ins[i]`` may be updated in place."""
        d = op.data
        if op.kind in ("conv", "polyphase"):
            f = d["fwd"]
            v = ins[0]
            if f["pad"] is not None:
                v = F.pad(v, f["pad"])
            mat = d.get("matrix")
            if mat is not None and MATMUL_1X1 and v.device.type == "cpu" \
                    and v.is_contiguous(memory_format=torch.channels_last):
                nb, c, h, w = v.shape
                y = torch.mm(v.permute(0, 2, 3, 1).reshape(-1, c), mat.t())
                return y.view(nb, h, w, -1).permute(0, 3, 1, 2)
            return F.conv2d(v, f["weight"], None, f["stride"], f["padding"], f["dilation"],
                            f["groups"])
        if op.kind == "scale":
            return ins[0].mul_(d["scale"]) if own[0] else ins[0] * d["scale"]
        if op.kind == "mask":
            v, m = ins[0], d["mask"]
            out = _and_bits(v, d["bits"], d["channels_last"], own[0], n)
            if out is not None:
                return out
            if m.shape[0] != 1:
                v5 = v.view(n, m.shape[0], *v.shape[1:])
                return (v5.mul_(m) if own[0] else v5 * m).view(v.shape)
            return v.mul_(m) if own[0] else v * m
        if op.kind == "maxpool":
            idx, (c, _, _) = d["indices"], d["shape"]
            v = ins[0]
            nb = v.shape[0]
            flat_idx = idx.flatten(2).expand(n, *idx.shape[:2], -1).reshape(nb, c, -1)
            return v.reshape(nb, c, -1).gather(2, flat_idx).view(nb, c, *idx.shape[-2:])
        if op.kind == "fanout":
            if len(ins) == 1:  # an identity: never hand on a map someone else still reads
                return ins[0] if own[0] else ins[0].clone()
            out, fresh = ins[0], own[0]
            for t in ins[1:]:
                out, fresh = (out.add_(t), True) if fresh else (out + t, True)
            return out
        if op.kind == "split":
            return torch.cat(ins, 1)
        raise AssertionError(op.kind)

    @staticmethod
    def _transpose(op: _Op, g: torch.Tensor, own: bool, n: int) -> list[tuple[torch.Tensor, bool]]:
        """The transposed op on ``g`` → one (gradient, owned) pair per input of the node."""
        d = op.data
        if op.kind == "polyphase":
            z = F.conv2d(g, d["weight"], None, 1, d["pad"])
            if d["weight_lo"] is not None:
                z = z.add_(F.conv2d(g, d["weight_lo"], None, 1, d["pad"]))
            z = F.pixel_shuffle(z, d["stride"])
            (ty, tx), (h, w) = d["shift"], d["size"]
            short_y, short_x = max(0, ty + h - z.shape[-2]), max(0, tx + w - z.shape[-1])
            if short_y or short_x:
                z = F.pad(z, (0, short_x, 0, short_y))
            return [(z[..., ty: ty + h, tx: tx + w], True)]
        if op.kind == "conv":
            if d["matrix"] is not None and MATMUL_1X1 and g.device.type == "cpu" \
                    and g.is_contiguous(memory_format=torch.channels_last):
                nb, c, h, w = g.shape  # channels-last: (nb·h·w, c) rows in memory order
                y = torch.mm(g.permute(0, 2, 3, 1).reshape(-1, c), d["matrix"])
                return [(y.view(nb, h, w, -1).permute(0, 3, 1, 2), True)]
            args = (None, d["stride"], d["padding"], d["output_padding"], d["groups"], d["dilation"])
            y = F.conv_transpose2d(g, d["weight"], *args)
            if d["weight_lo"] is not None:
                y = y.add_(F.conv_transpose2d(g, d["weight_lo"], *args))
            crop = d["crop"]
            if crop is not None:
                left, top, w, h = crop
                y = y[..., top: top + h, left: left + w]
            return [(y, True)]
        if op.kind == "scale":
            return [(g.mul_(d["scale"]) if own else g * d["scale"], True)]
        if op.kind == "mask":
            out = _and_bits(g, d["bits"], d["channels_last"], own, n)
            if out is not None:
                return [(out, True)]
            m = d["mask"]
            if m.shape[0] != 1:
                g5 = g.view(n, m.shape[0], *g.shape[1:])
                return [((g5.mul_(m) if own else g5 * m).view(g.shape), True)]
            return [(g.mul_(m) if own else g * m, True)]
        if op.kind == "maxpool":
            idx, (c, h, w) = d["indices"], d["shape"]
            nb = g.shape[0]
            flat_idx = idx.flatten(2).expand(n, *idx.shape[:2], -1).reshape(nb, c, -1)
            gin = g.new_zeros(nb, c, h * w).scatter_add_(2, flat_idx, g.reshape(nb, c, -1))
            return [(gin.view(nb, c, h, w), True)]
        if op.kind == "fanout":
            k = len(op.args)
            return [(g, own and k == 1)] * k
        if op.kind == "split":
            return [(part, own) for part in torch.split(g, d["sizes"], dim=1)]
        raise AssertionError(op.kind)


IN_PLACE_UNDER_AUTOGRAD = False  # True: the in-place updates also when autograd records


def _records(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


def _into_compute(u: torch.Tensor, dtype: torch.dtype,
                  fmt: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cotangents (NB, C, h, w) in the compute dtype and memory format, and, for float16
    (range 6e-8 … 65504), the per-item scale that put every maximum at 1 (the transpose
    is linear: `_out_of_compute()` puts it back)."""
    if dtype != torch.float16:
        return u.to(dtype).contiguous(memory_format=fmt), None
    dims = (1, 2, 3)
    scale = torch.maximum(u.amax(dim=dims, keepdim=True), -u.amin(dim=dims, keepdim=True))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    if _records(u):  # out= does not differentiate
        return (u / scale).to(dtype).contiguous(memory_format=fmt), scale
    g = torch.empty(u.shape, dtype=dtype, device=u.device, memory_format=fmt)
    return torch.mul(u, scale.reciprocal(), out=g), scale  # scale and cast in one pass


def _out_of_compute(gx: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype,
                    fmt: torch.memory_format) -> torch.Tensor:
    """The pulled-back cotangents in the caller's ``dtype``, rescaled by ``scale``."""
    if scale is None:
        return gx.to(dtype)
    if _records(gx):
        return gx.to(dtype) * scale
    out = torch.empty(gx.shape, dtype=dtype, device=gx.device, memory_format=fmt)
    return torch.mul(gx, scale, out=out)


def _relu_bounds(node: fx.Node, module: nn.Module | None) -> tuple[float, float | None]:
    if isinstance(module, nn.ReLU):
        return 0.0, None
    if isinstance(module, nn.Hardtanh):  # and ReLU6
        return float(module.min_val), float(module.max_val)
    if module is None and node.target in _RELU_FNS:
        return _RELU_FNS[node.target]
    if module is None and node.target is F.hardtanh:
        lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
        if not isinstance(lo, int | float) or not isinstance(hi, int | float):
            raise Unsupported("hardtanh with bounds computed in the graph")
        return float(lo), float(hi)
    raise AssertionError(f"not a clamp: {module if module is not None else node.target}")


def _src(node: fx.Node) -> fx.Node:
    """The node an op reads its (first) input from."""
    src = node.args[0] if node.args else None
    if not isinstance(src, fx.Node):
        raise Unsupported(f"{node.op} {node.target} on a constant")
    return src


def _mask(x: torch.Tensor, lo: float, hi: float | None) -> torch.Tensor:
    """The derivative of the clamp as autograd defines it (0 at the kinks)."""
    m = x > lo
    if hi is not None:
        m &= x < hi
    return m


def build_stage_adjoint(body: nn.Module, x: torch.Tensor, *, channels_last: bool = False,
                        dtype: torch.dtype | None = None,
                        kernels: str = "torch") -> tuple[torch.Tensor, StageAdjoint] | None:
    """Run stage ``body`` on ``x`` and return its output with the explicit transpose of
    its Jacobian there, or ``None`` if the stage has an op without one.

    ``dtype`` (default: ``x``'s) is the precision the transpose computes in (float16:
    see [`adjinv.core.precision`][adjinv.core.precision]); ``channels_last`` stores its maps in that memory
    format; ``kernels="triton"`` fuses masks with residual sums (`StageAdjoint.use_triton()`)."""
    graph = _trace(body)
    if graph is None:
        return None
    try:
        with torch.no_grad():
            built = _build(body, graph, x, channels_last, dtype or x.dtype)
            if kernels == "triton":
                built[1].use_triton()
            return built
    except Unsupported:
        return None


def _build(body: nn.Module, graph: fx.Graph, x: torch.Tensor, channels_last: bool,
           dtype: torch.dtype) -> tuple[torch.Tensor, StageAdjoint]:
    modules = dict(body.named_modules())
    env: dict[fx.Node, Any] = {}
    ops: dict[fx.Node, _Op] = {}
    placeholder = output = None
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    for node in graph.nodes:
        args = fx.node.map_arg(node.args, env.__getitem__)
        if node.op == "placeholder":
            if placeholder is not None:
                raise Unsupported("more than one input")
            placeholder = node
            env[node] = x.clone()
            continue
        if node.op == "output":
            output = node.args[0]
            if not isinstance(output, fx.Node):
                raise Unsupported("stage output is not a single tensor")
            break
        if node.op == "call_module":
            m = modules[node.target]
            env[node] = _module_op(node, m, args, ops, fmt, dtype)
        elif node.op == "call_function":
            env[node] = _function_op(node, args, ops, dtype)
        elif node.op == "call_method" and node.target in _PASS_METHODS:
            env[node] = getattr(args[0], node.target)()
            ops[node] = _Op("fanout", (_src(node),), {})
        elif node.op == "call_method" and node.target in _RELU_METHODS:
            src = args[0]
            ops[node] = _Op("mask", (_src(node),), {"mask": _mask(src, 0.0, None).to(dtype)})
            env[node] = torch.relu(src)
        else:
            raise Unsupported(f"{node.op} {node.target}")
    if placeholder is None or output is None:
        raise Unsupported("no input or output")
    _finalize(ops, fmt)
    y = env[output]
    widest = max((v[0].numel() for v in env.values() if isinstance(v, torch.Tensor) and v.dim() > 1),
                 default=0)
    return y, StageAdjoint(graph, ops, placeholder, output, x.shape, channels_last, dtype, widest)


def _module_op(node: fx.Node, m: nn.Module, args: tuple, ops: dict[fx.Node, _Op],
               fmt: torch.memory_format, dtype: torch.dtype) -> torch.Tensor:
    src = node.args[0]
    if len(node.args) != 1 or node.kwargs or not isinstance(src, fx.Node):
        raise Unsupported("module called with extra arguments")
    a = args[0]
    kind = known_type(m)
    if kind is None:
        raise Unsupported(type(m).__name__)
    if kind in (nn.Conv2d, Conv2dSame) and isinstance(m, nn.Conv2d):
        if not _conv_ok(m):
            raise Unsupported("convolution with non-zero padding mode or string padding")
        h, w = a.shape[-2:]
        pad = _same_padding(m, kind, h, w)
        y = m(a)
        kh, kw = m.kernel_size
        sh, sw = m.stride
        dh, dw = m.dilation
        if pad is not None and pad[0] == pad[1] and pad[2] == pad[3]:
            hin, win = h, w  # symmetric "SAME" padding is ordinary zero padding
            ph, pw = pad[2], pad[0]
            crop = None
        elif pad is not None:
            hin, win = h + pad[2] + pad[3], w + pad[0] + pad[1]
            ph = pw = 0
            crop = (pad[0], pad[2], w, h)
        else:
            hin, win = h, w
            ph, pw = cast(tuple[int, int], m.padding)  # _conv_ok refused string padding
            crop = None
        oh, ow = y.shape[-2:]
        op_h = hin - ((oh - 1) * sh - 2 * ph + dh * (kh - 1) + 1)
        op_w = win - ((ow - 1) * sw - 2 * pw + dw * (kw - 1) + 1)
        ops[node] = _Op("conv", (src,), {
            "weight": m.weight.detach(), "stride": m.stride, "padding": (ph, pw),
            "output_padding": (op_h, op_w), "groups": m.groups, "dilation": m.dilation,
            "crop": crop, "dtype": dtype, "fmt": fmt, "in_size": (h, w),
            "fwd_pad": tuple(pad) if crop is not None and pad is not None else None})
        return y
    if kind is nn.BatchNorm2d and isinstance(m, nn.BatchNorm2d):
        if m.training or m.running_var is None or m.running_mean is None:
            raise Unsupported("BatchNorm in training mode has no fixed linearisation here")
        scale = torch.rsqrt(m.running_var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight.detach()
        ops[node] = _Op("scale", (src,), {"scale": scale.view(-1, 1, 1), "dtype": dtype})
        return m(a)
    if kind in (nn.ReLU, nn.ReLU6, nn.Hardtanh):
        lo, hi = _relu_bounds(node, m)
        ops[node] = _Op("mask", (src,), {"mask": _mask(a, lo, hi).to(dtype)})
        # an in-place activation must not overwrite a map another node still reads
        return m(a.clone()) if getattr(m, "inplace", False) else m(a)
    if kind is nn.MaxPool2d and isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            raise Unsupported("max-pool returning indices")
        y, idx = F.max_pool2d(a, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                              return_indices=True)
        ops[node] = _Op("maxpool", (src,), {"indices": idx, "shape": tuple(a.shape[1:])})
        return y
    if kind in (nn.Identity, nn.Dropout):
        if kind is nn.Dropout and m.training:
            raise Unsupported("dropout in training mode")
        ops[node] = _Op("fanout", (src,), {})
        return a
    raise Unsupported(type(m).__name__)


def _function_op(node: fx.Node, args: tuple, ops: dict[fx.Node, _Op],
                 dtype: torch.dtype) -> torch.Tensor:
    t = node.target
    if t in _RELU_FNS or t is F.hardtanh:
        lo, hi = _relu_bounds(node, None)
        a = args[0]
        ops[node] = _Op("mask", (_src(node),), {"mask": _mask(a, lo, hi).to(dtype)})
        return torch.clamp(a, lo, hi) if hi is not None else torch.relu(a)
    if t in _ADD_FNS:
        if node.kwargs or len(args) != 2:
            raise Unsupported("add with alpha or extra arguments")
        srcs = tuple(a for a in node.args if isinstance(a, fx.Node))
        y = args[0] + args[1]
        if any(not isinstance(v, torch.Tensor) or v.shape != y.shape
               for v, a in zip(args, node.args, strict=True) if isinstance(a, fx.Node)):
            raise Unsupported("broadcasting add")
        ops[node] = _Op("fanout", srcs, {})
        return y
    if t is torch.cat:
        seq = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        srcs = tuple(a for a in seq if isinstance(a, fx.Node)) if isinstance(seq, list | tuple) else ()
        if dim not in (1, -3) or not isinstance(seq, list | tuple) or len(srcs) != len(seq):
            raise Unsupported("concatenation other than along channels")
        parts = list(args[0])
        ops[node] = _Op("split", srcs, {"sizes": [p.shape[1] for p in parts]})
        return torch.cat(parts, 1)
    raise Unsupported(str(t))


# A strided transposed convolution onto few channels (a stem's 3 input colours) runs
# 4-5x below the forward rate in oneDNN; as s² stride-1 sub-convolutions (one per
# output phase, stacked as output channels) and a pixel shuffle it runs at about
# the forward rate, for (ceil(k/s)·s/k)² more multiply-adds.
POLYPHASE_MAX_CHANNELS = 16


def _prefer_polyphase(d: dict) -> bool:
    w = d["weight"]
    return (d["groups"] == 1 and d["dilation"] == (1, 1) and d["stride"][0] == d["stride"][1] > 1
            and w.shape[1] <= POLYPHASE_MAX_CHANNELS and w.shape[-1] == w.shape[-2])


def _to_polyphase(op: _Op) -> None:
    """Rewrite ``conv_transpose2d(g, W, stride=s)`` as ``pixel_shuffle(conv2d(g, K), s)``
    cropped: phase ``r`` of the output is ``Σ_j g[q − j] · W[r + s·j]`` (a plain
    convolution with the flipped sub-kernel), ``K`` stacks the ``s²`` sub-kernels."""
    d = op.data
    w, s = d["weight"], d["stride"][0]
    cout, cin, k, _ = w.shape
    j = -(-k // s)
    kern = w.new_zeros(cin, s, s, cout, j, j)
    for ry in range(s):
        for rx in range(s):
            sub = w[:, :, ry::s, rx::s]  # (cout, cin, jy, jx): taps r + s·j
            jy, jx = sub.shape[-2:]
            sub = sub.flip(-2, -1).permute(1, 0, 2, 3)
            kern[:, ry, rx, :, j - jy:, j - jx:] = sub
    ph, pw = d["padding"]
    crop = d["crop"]
    if crop is not None:  # TF-"SAME": the transpose lands on the padded input, then crops
        shift, size = (crop[1], crop[0]), (crop[3], crop[2])
    else:
        hin, win = d.pop("in_size")
        shift, size = (ph, pw), (hin, win)
    op.kind = "polyphase"
    op.data = {"weight": kern.reshape(cin * s * s, cout, j, j), "stride": s, "pad": j - 1,
               "shift": shift, "size": size, "dtype": d["dtype"], "fmt": d["fmt"],
               "fwd": d.get("fwd")}


# float16 weights carry 11 bits; as two terms W_hi + W_lo (two convolutions, the small
# one added into the large one) they carry ~21 and the error is about that of rounding
# the cotangents alone. 1 = a single float16 term (faster, about the error of TF32).
FP16_WEIGHT_TERMS = 2


def _store_weight(w: torch.Tensor, dtype: torch.dtype,
                  fmt: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``w`` in the compute dtype and memory format; for float16 also ``W_lo``, the
    rounding error of ``W_hi = fp16(w)`` in float16 (``None`` otherwise)."""
    if dtype != torch.float16:
        return w.to(dtype).contiguous(memory_format=fmt), None
    if w.abs().max() > 6e4:  # float16 overflows: this stage computes in float32 instead
        raise Unsupported("weights beyond the float16 range")
    hi = w.to(torch.float16)
    lo = (w - hi.to(w.dtype)).to(torch.float16) if FP16_WEIGHT_TERMS == 2 else None
    return (hi.contiguous(memory_format=fmt),
            lo.contiguous(memory_format=fmt) if lo is not None else None)


# A 1×1 stride-1 convolution's transpose on a channels-last CPU cotangent is one matrix
# product (nb·h·w, C_out) @ (C_out, C_in) over rows already contiguous in memory, which
# ran faster than oneDNN's transposed convolution on Lite0 (docs/speed.md) and equals it
# (the same float32 sums; tests/test_fast_paths.py checks 1e-6).
MATMUL_1X1 = True  # False: always conv_transpose2d (for ablations and the equality test)


def _as_matrix(d: dict) -> torch.Tensor | None:
    """The (C_out, C_in) matrix of a 1×1, stride-1, unpadded, ungrouped float32/float64
    convolution with nothing to crop or add (else ``None``)."""
    w = d["weight"]
    if (w.shape[-2:] != (1, 1) or tuple(d["stride"]) != (1, 1) or tuple(d["padding"]) != (0, 0)
            or tuple(d["output_padding"]) != (0, 0) or d["groups"] != 1
            or tuple(d["dilation"]) != (1, 1) or d["crop"] is not None
            or d["weight_lo"] is not None or w.dtype not in (torch.float32, torch.float64)):
        return None
    return w.reshape(w.shape[0], w.shape[1]).contiguous()


def _finalize(ops: dict[fx.Node, _Op], fmt: torch.memory_format) -> None:
    """Fold each eval BatchNorm's scale into the convolution feeding only it (exact:
    ``(s ⊙ conv_W)ᵀ g = conv_{W·s}ᵀ g``), pick each convolution's form, and store
    weights and masks in the compute dtype and memory format."""
    for op in ops.values():
        if op.kind != "scale":
            continue
        src = op.args[0]
        if src in ops and ops[src].kind == "conv" and len(src.users) == 1:
            conv = ops[src].data
            conv["weight"] = conv["weight"] * op.data["scale"].view(-1, 1, 1, 1).to(conv["weight"])
            op.kind, op.data = "fanout", {}
    for op in ops.values():
        if op.kind == "conv":
            d = op.data
            pad = d.pop("fwd_pad", None)
            # the convolution itself, for `StageAdjoint.jacobian()` (float32/float64 only)
            d["fwd"] = None if d["dtype"] not in (torch.float32, torch.float64) else {
                "weight": d["weight"].to(d["dtype"]).contiguous(memory_format=d["fmt"]),
                "stride": d["stride"], "padding": d["padding"], "dilation": d["dilation"],
                "groups": d["groups"], "pad": pad}
            if _prefer_polyphase(op.data):
                _to_polyphase(op)
            d = op.data
            d.pop("in_size", None)
            d["weight"], d["weight_lo"] = _store_weight(d["weight"], d.pop("dtype"), d.pop("fmt"))
            if op.kind == "conv":
                d["matrix"] = _as_matrix(d)
        elif op.kind == "scale":
            op.data["scale"] = op.data["scale"].to(op.data.pop("dtype"))
        elif op.kind == "mask":
            m = op.data["mask"].contiguous(memory_format=fmt)
            cl = fmt == torch.channels_last
            op.data.update(mask=m, bits=_mask_bits(m, cl), channels_last=cl)


# A ReLU mask multiplies every cotangent of a chunk by the same 0/1 map: a broadcast,
# which PyTorch's CUDA kernels run unvectorised, one element per load. As a bitwise AND
# with all-ones/zero patterns, two float32 (or float16) elements per 64 (32)-bit integer,
# the same kernel moves twice the bytes per load. Exact: x AND ones = x, x AND 0 = +0.
_INTS = {2: torch.int16, 4: torch.int32, 8: torch.int64}
MASK_AS_BITS = True  # False: multiply (for ablations)


def _memory_order(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` (…, C, h, w) permuted so that its last dimension is the one contiguous in memory."""
    return t.permute(*range(t.dim() - 3), -2, -1, -3) if channels_last else t


def _mask_bits(mask: torch.Tensor, channels_last: bool) -> torch.Tensor | None:
    """The mask as integer bit patterns in memory order, two elements per integer when
    the contiguous dimension is even (``None`` for dtypes without a same-size integer)."""
    size = mask.element_size()
    if size not in _INTS or not MASK_AS_BITS:
        return None
    v = _memory_order(mask, channels_last)
    bits = torch.empty(v.shape, dtype=_INTS[size], device=v.device)  # plain strides, for .view
    bits.copy_(torch.where(v != 0, -1, 0))
    if size <= 4 and v.shape[-1] % 2 == 0:
        bits = bits.view(_INTS[2 * size])
    return bits


def _and_bits(g: torch.Tensor, bits: torch.Tensor | None, channels_last: bool, own: bool,
              n: int) -> torch.Tensor | None:
    """``g ⊙ mask`` as a bitwise AND (in place when ``g`` is owned), or ``None`` when
    ``g``'s memory layout does not allow the integer view (then multiply)."""
    if bits is None or _records(g):  # integers carry no grad
        return None
    v = _memory_order(g, channels_last)
    try:
        gi = v.view(bits.dtype)
    except RuntimeError:
        return None
    if gi.shape[1:] != bits.shape[1:]:
        return None
    if bits.shape[0] != 1:
        gi = gi.view(n, *bits.shape)
    out = gi.bitwise_and_(bits) if own else gi & bits
    out = out.view(-1, *bits.shape[1:]).view(g.dtype)
    return out.permute(0, 3, 1, 2) if channels_last else out
