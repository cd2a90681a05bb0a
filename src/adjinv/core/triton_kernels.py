"""Triton kernels for the cascade's elementwise passes (opt-in: ``kernels="triton"``).

Two passes dominate the elementwise time of a chunk on a GPU (docs/speed.md):

- **ReLU masks and the residual sums around them.** [`pack_mask()`][pack_mask] stores a mask as
  1 bit per element (in the memory order of the cotangents); [`mask_add()`][mask_add] applies it
  together with the sums next to it in one pass: ``acc + (g + g2) ⊙ mask`` — ``g2`` the
  second gradient of a map read twice (a residual block's output, summed before its
  ReLU's mask), ``acc`` a gradient already pending at the mask's input — reading 1/32 of
  a float per element for the mask and writing once, where PyTorch makes a pass for
  each sum and one for the mask.
- **The LAC (Eq. 6).** [`lac_apply()`][lac_apply] makes one statistics pass (per item and channel:
  mean and centred second moment, combined over blocks with Chan's update, and the
  max/min for the scale) and one apply pass ``(u − mean)·(a·γ) + β``; the few per-channel
  numbers in between are computed exactly as [`LocalAdjointCorrector`][adjinv.core.lac.LocalAdjointCorrector]
  does.

The PyTorch path stays the reference and the CPU path: these kernels run on CUDA tensors,
or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, for tests). Whenever
a kernel cannot reproduce the reference — autograd recording, a memory layout it does
not handle, a LAC signal whose squares leave the dtype's range — the caller gets ``None``
and uses the PyTorch op. The mask pass is bit-exact against the reference; the LAC agrees
to rounding (the statistics are summed in another order; see
[`LAC_RTOL`][LAC_RTOL]).
"""

from __future__ import annotations

import logging
import os

import torch

from .lac import LocalAdjointCorrector

log = logging.getLogger(__name__)

KERNELS = ("torch", "triton")
# max |triton − torch| / max |torch| of a LAC output, as tested: float32 sums of up to
# 10^5 elements in another order (float64: 1e-12).
LAC_RTOL = {torch.float64: 1e-12, torch.float32: 2e-6}

try:  # Triton ships with CUDA builds of torch; without it only the PyTorch path exists
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def check_kernels(kernels: str) -> str:
    """Validate the ``kernels`` option."""
    from ..errors import AdjinvError

    if kernels not in KERNELS:
        raise AdjinvError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if kernels == "triton" and triton is None:
        raise AdjinvError("kernels='triton' needs the triton package (it comes with CUDA "
                          "builds of torch); use kernels='torch'")
    return kernels


def usable(t: torch.Tensor) -> bool:
    """Whether the kernels can run on ``t``: a CUDA tensor, or any under the interpreter."""
    if triton is None:
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def _records(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


# --------------------------------------------------------------------------- masks
def memory_flat(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` (B, C, h, w) flattened in the memory order of ``channels_last``."""
    return (t.permute(0, 2, 3, 1) if channels_last else t).reshape(-1)


def pack_mask(mask: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 0/1 mask (B, C, h, w) as bits, 8 per byte, element ``i`` of the memory order at
    bit ``i % 8`` of byte ``i // 8``."""
    flat = memory_flat(mask != 0, channels_last)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8).to(torch.uint8) * weights).sum(1, dtype=torch.uint8)


def _dense(t: torch.Tensor, channels_last: bool) -> bool:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return t.dim() == 4 and t.is_contiguous(memory_format=fmt)


def mask_add(g: torch.Tensor, bits: torch.Tensor, mask_shape: torch.Size, channels_last: bool,
             acc: torch.Tensor | None, out: torch.Tensor | None,
             g2: torch.Tensor | None = None) -> torch.Tensor | None:
    """``acc + (g + g2) ⊙ mask`` (without ``acc``: no sum after; without ``g2``: no sum
    before) in one pass, written to ``out`` (which may be ``g`` or ``acc``; a fresh tensor
    if ``None``). ``g`` (N·B, C, h, w) holds N cotangents per image of the mask's batch
    (B, C, h, w). ``None`` when the kernel does not apply (then use the PyTorch ops)."""
    if not usable(g) or _records(g) or not _dense(g, channels_last):
        return None
    if g.shape[1:] != mask_shape[1:] or g.shape[0] % mask_shape[0]:
        return None
    for t in (acc, g2):
        if t is not None and (t.shape != g.shape or t.dtype != g.dtype
                              or not _dense(t, channels_last) or _records(t)):
            return None
    if out is None:
        out = torch.empty_like(g)
    n = g.numel()
    block = 1024 if g.is_cuda else 1 << 16  # the interpreter pays per op, not per element
    _mask_add_kernel[(triton.cdiv(n, block),)](
        g, g2 if g2 is not None else g, bits, acc if acc is not None else g, out, n,
        mask_shape.numel(), HAS_G2=g2 is not None, HAS_ACC=acc is not None, BLOCK=block)
    return out


if triton is not None:
    @triton.jit
    def _mask_add_kernel(g_ptr, g2_ptr, bits_ptr, acc_ptr, out_ptr, n, m,  # noqa: ANN001
                         HAS_G2: tl.constexpr, HAS_ACC: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = offs < n
        mo = offs % m  # the N cotangents of a chunk share one mask
        word = tl.load(bits_ptr + mo // 8, mask=inside, other=0).to(tl.int32)
        on = ((word >> (mo % 8).to(tl.int32)) & 1) != 0
        g = tl.load(g_ptr + offs, mask=inside, other=0.0)
        if HAS_G2:
            g = g + tl.load(g2_ptr + offs, mask=inside, other=0.0)
        y = tl.where(on, g, 0.0)
        if HAS_ACC:
            y = tl.load(acc_ptr + offs, mask=inside, other=0.0) + y
        tl.store(out_ptr + offs, y, mask=inside)


# --------------------------------------------------------------------------- LAC
def _rows(u: torch.Tensor) -> torch.Tensor | None:
    """``u`` (..., C, h, w) as a (R, C, h, w) view (any strides), if the leading dimensions merge."""
    try:
        return u.view(-1, *u.shape[-3:])
    except RuntimeError:
        return None


def lac_apply(lac: LocalAdjointCorrector, u: torch.Tensor) -> torch.Tensor | None:
    """``lac(u)`` in one statistics pass and one apply pass, or ``None`` where the kernels
    cannot match the reference (autograd, layouts, out-of-range squares)."""
    if not usable(u) or _records(u) or (lac.gamma.requires_grad and torch.is_grad_enabled()):
        return None
    if u.dtype not in (torch.float32, torch.float64) or u.shape[-3] != lac.num_channels:
        return None
    v = _rows(u)
    if v is None:
        return None
    r, c, h, w = v.shape
    if u.numel() == 0:
        return None
    hw = h * w
    mean = torch.empty(r, c, dtype=u.dtype, device=u.device)
    m2, amax, amin = torch.empty_like(mean), torch.empty_like(mean), torch.empty_like(mean)
    if u.is_cuda:
        bc, bs = 16, 64
    else:  # the interpreter pays per op, not per element: few, large tiles
        bc, bs = min(64, triton.next_power_of_2(c)), min(4096, triton.next_power_of_2(hw))
    grid = (r, triton.cdiv(c, bc))
    _lac_stats_kernel[grid](v, mean, m2, amax, amin, c, hw, w, *v.stride(), BC=bc, BS=bs)
    fi = torch.finfo(u.dtype)
    scale = torch.maximum(amax, -amin)
    zero = scale == 0
    scale = torch.where(zero, torch.ones_like(scale), scale)
    lo, hi = fi.tiny ** 0.5 * 1e4, fi.max ** 0.5 * 1e-4
    if lac.eps_mode != "fixed" and bool(((scale < lo) | (scale > hi)).any()):
        return None  # the reference rescales first; its squares would leave the range here
    var = m2 / hw
    if lac.eps_mode == "fixed":
        eps = lac.eps
    else:
        second = var + mean * mean
        if lac.eps_mode == "layer":
            second = second.mean(dim=-1, keepdim=True)
        eps = lac.eps * second + fi.tiny ** 0.5 * scale * scale
    a = torch.where(zero, torch.zeros_like(var), torch.rsqrt(var + eps))
    k = (a * lac.gamma.detach().to(u.dtype)).contiguous()
    beta = lac.beta.detach().to(u.dtype).contiguous()
    out = torch.empty_like(u)  # u's layout if dense, else contiguous
    vo = out.view(-1, *u.shape[-3:])
    _lac_apply_kernel[grid](v, vo, mean, k, beta, c, hw, w, *v.stride(), *vo.stride(),
                            BC=bc, BS=bs)
    return out


if triton is not None:
    # Reductions name triton.language's own combine functions (what tl.sum/tl.max/tl.min
    # use) through tl.reduce: torch may import triton before TRITON_INTERPRET is set, and
    # the jit helpers of triton.language then cannot be called under the interpreter,
    # while tl.reduce with these combine functions runs as numpy there.
    _add = tl.standard._sum_combine
    _max = tl.standard._elementwise_max
    _min = tl.standard._elementwise_min

    @triton.jit
    def _lac_stats_kernel(u_ptr, mean_ptr, m2_ptr, max_ptr, min_ptr, c, hw, w,  # noqa: ANN001
                          s_row, s_ch, s_h, s_w, BC: tl.constexpr, BS: tl.constexpr):  # noqa: ANN001
        row = tl.program_id(0).to(tl.int64)
        ch = tl.program_id(1) * BC + tl.arange(0, BC)
        ch_ok = ch < c
        base = u_ptr + row * s_row + ch.to(tl.int64) * s_ch  # (BC,)
        first = tl.load(base, mask=ch_ok, other=0.0)
        mean = tl.full([BC], 0.0, u_ptr.dtype.element_ty)
        m2 = tl.full([BC], 0.0, u_ptr.dtype.element_ty)
        hi = first
        lo = first
        cnt = tl.full([BC], 0.0, u_ptr.dtype.element_ty)  # in the data's dtype: float64 stays exact
        for start in range(0, hw, BS):
            sp = start + tl.arange(0, BS)
            sp_ok = sp < hw
            ok = sp_ok[:, None] & ch_ok[None, :]
            at = (sp // w).to(tl.int64) * s_h + (sp % w).to(tl.int64) * s_w
            x = tl.load(base[None, :] + at[:, None], mask=ok, other=0.0)
            nb = cnt * 0 + tl.minimum(hw - start, BS)
            mb = tl.reduce(x, 0, _add) / nb
            d = tl.where(ok, x - mb[None, :], 0.0)
            m2b = tl.reduce(d * d, 0, _add)
            tot = cnt + nb
            delta = mb - mean
            mean = mean + delta * (nb / tot)
            m2 = m2 + m2b + delta * delta * (cnt * nb / tot)
            cnt = tot
            hi = tl.maximum(hi, tl.reduce(tl.where(ok, x, first[None, :]), 0, _max))
            lo = tl.minimum(lo, tl.reduce(tl.where(ok, x, first[None, :]), 0, _min))
        out = row * c + ch
        tl.store(mean_ptr + out, mean, mask=ch_ok)
        tl.store(m2_ptr + out, m2, mask=ch_ok)
        tl.store(max_ptr + out, hi, mask=ch_ok)
        tl.store(min_ptr + out, lo, mask=ch_ok)

    @triton.jit
    def _lac_apply_kernel(u_ptr, out_ptr, mean_ptr, k_ptr, beta_ptr, c, hw, w,  # noqa: ANN001
                          s_row, s_ch, s_h, s_w, o_row, o_ch, o_h, o_w,  # noqa: ANN001
                          BC: tl.constexpr, BS: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        ch = tl.program_id(1) * BC + tl.arange(0, BC)
        ch_ok = ch < c
        mean = tl.load(mean_ptr + row * c + ch, mask=ch_ok, other=0.0)
        k = tl.load(k_ptr + row * c + ch, mask=ch_ok, other=0.0)
        beta = tl.load(beta_ptr + ch, mask=ch_ok, other=0.0)
        c64 = ch.to(tl.int64)
        off = row * s_row + c64 * s_ch
        off_o = row * o_row + c64 * o_ch
        for start in range(0, hw, BS):
            sp = start + tl.arange(0, BS)
            ok = (sp < hw)[:, None] & ch_ok[None, :]
            y_, x_ = (sp // w).to(tl.int64), (sp % w).to(tl.int64)
            x = tl.load(u_ptr + off[None, :] + (y_ * s_h + x_ * s_w)[:, None], mask=ok, other=0.0)
            y = (x - mean[None, :]) * k[None, :] + beta[None, :]
            tl.store(out_ptr + off_o[None, :] + (y_ * o_h + x_ * o_w)[:, None], y, mask=ok)
