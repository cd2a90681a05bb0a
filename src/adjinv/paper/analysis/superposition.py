"""Holographic superposition, H1 (Sec. 3.2.3, Eq. 13, Supp. C.4, docs/method.md §7).

Stack one image's channel inversions as rows ``Φ ∈ R^{C×P}`` and form ``G = ΦΦᵀ``.
H1 says ``φ_c ≈ a_c u + r_c`` with one shared direction ``u``; the statistics below
measure how much of ``Φ`` that one direction explains and what is left without it.
All computations are in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import AdjinvError
from ...records import Record


@dataclass
class SuperpositionStats(Record):
    """The H1 statistics of one image (docs/method.md §7).

    ``energy_fraction``: ``λ₁ / tr(G)``; ``variance_before`` / ``variance_after``:
    ``V = mean_c ‖φ_c − φ̄‖² / mean_c ‖φ_c‖²`` of the rows before and after rank-one
    subtraction, [choice] each normalised by its own rows' energy (docs/method.md §7 applied to
    ``r`` as written); ``variance_after_of_original`` is the after-numerator over the
    *original* mean energy; ``expansion = variance_after / variance_before``;
    ``cos_before`` / ``cos_after``: min, 5th, 95th percentile and max of the pairwise
    cosine similarities (rows with zero energy are left out)."""

    n_channels: int
    energy_fraction: float
    variance_before: float
    variance_after: float
    variance_after_of_original: float
    expansion: float
    cos_before: dict[str, float]
    cos_after: dict[str, float]


def _rows(phi: torch.Tensor) -> torch.Tensor:
    if phi.dim() < 2:
        raise AdjinvError(f"expected channel inversions (C, ...), got shape {tuple(phi.shape)}")
    if phi.shape[0] < 2:
        raise AdjinvError("superposition statistics need at least two channels")
    return phi.detach().flatten(1).to(torch.float64)


def leading_direction(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, eigenvalues)``: the unit leading right singular vector ``u`` (P,) of ``Φ``
    (from the leading eigenvector of ``G = ΦΦᵀ``, cheaper when C ≪ P) and the
    eigenvalues of ``G`` in descending order."""
    f = _rows(phi)
    g = f @ f.T
    evals, evecs = torch.linalg.eigh(g)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    u = f.T @ evecs[:, 0]
    norm = u.norm()
    if norm == 0:
        raise AdjinvError("every channel inversion is zero: there is no leading direction")
    return u / norm, evals


def rank_one_subtract(phi: torch.Tensor, u: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``r_c = φ_c − ⟨φ_c, u⟩ u`` (Eq. 13 with ``a_c = ⟨φ_c, u⟩``). Returns ``(r, u, a)``
    with ``r`` in ``phi``'s shape (float64), ``u`` (P,), ``a`` (C,)."""
    f = _rows(phi)
    if u is None:
        u, _ = leading_direction(phi)
    u = u.to(f).flatten()
    a = f @ u
    r = f - a[:, None] * u[None, :]
    return r.reshape(phi.shape), u, a


def inter_channel_variance(phi: torch.Tensor) -> float:
    """``V = mean_c ‖φ_c − φ̄‖² / mean_c ‖φ_c‖²`` (docs/method.md §7): 0 when every channel is the
    same image, 1 when the channels average to zero."""
    f = _rows(phi)
    den = f.pow(2).sum(1).mean()
    if den == 0:
        return float("nan")
    return float((f - f.mean(0, keepdim=True)).pow(2).sum(1).mean() / den)


def cosine_range(phi: torch.Tensor) -> dict[str, float]:
    """Min, 5th/95th percentile and max of the pairwise cosine similarities of the rows
    (each unordered pair once; zero rows left out)."""
    f = _rows(phi)
    n = f.norm(dim=1)
    f = f[n > 0] / n[n > 0, None]
    if f.shape[0] < 2:
        nan = float("nan")
        return {"min": nan, "p5": nan, "p95": nan, "max": nan, "pairs": 0}
    c = f @ f.T
    i, j = torch.triu_indices(c.shape[0], c.shape[0], 1)
    v = c[i, j]
    q = torch.quantile(v, torch.tensor([0.05, 0.95], dtype=v.dtype)) if v.numel() < 16_000_000 \
        else torch.quantile(v[:16_000_000], torch.tensor([0.05, 0.95], dtype=v.dtype))
    return {"min": float(v.min()), "p5": float(q[0]), "p95": float(q[1]), "max": float(v.max()),
            "pairs": int(v.numel())}


def superposition_statistics(phi: torch.Tensor) -> SuperpositionStats:
    """The H1 statistics (docs/method.md §7) of one image's channel inversions ``phi`` (C, ...)."""
    f = _rows(phi)
    u, evals = leading_direction(f)
    tr = float(evals.sum())
    r, _, _ = rank_one_subtract(f, u)
    vb = inter_channel_variance(f)
    va = inter_channel_variance(r)
    num_after = float((r - r.mean(0, keepdim=True)).pow(2).sum(1).mean())
    va_orig = num_after / float(f.pow(2).sum(1).mean())
    return SuperpositionStats(
        n_channels=int(f.shape[0]),
        energy_fraction=float(evals[0]) / tr if tr > 0 else float("nan"),
        variance_before=vb, variance_after=va, variance_after_of_original=va_orig,
        expansion=va / vb if vb > 0 else float("nan"),
        cos_before=cosine_range(f), cos_after=cosine_range(r))


def direction_cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    """``|⟨u, v⟩| / (‖u‖‖v‖)`` of two images flattened (sign-free: ``u`` is defined up to
    sign); NaN when either is zero."""
    a, b = u.detach().flatten().double(), v.detach().flatten().double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    return float((a @ b).abs() / (na * nb))


# ----------------------------------------------------------------------------- the LAC_pix bias
VARIANTS = ("raw", "zero_mean", "psi0_projected")


def centre_rgb(x: torch.Tensor) -> torch.Tensor:
    """Per-RGB zero-mean images: every ``(..., 3, H, W)`` map minus its spatial mean per
    colour channel (docs/method.md §15). On a channel inversion ``φ_c = s_c + b`` this
    removes the ``LAC_pix`` bias ``b`` exactly and leaves ``s_c``; on ``x̂ = Σ α_c φ_c``
    it removes ``(Σ α_c) b``."""
    return x - x.mean(dim=(-2, -1), keepdim=True)


def project_out(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor | None:
    """Every image of ``x`` (..., 3, H, W) with its component along ``direction``
    (3, H, W; normally the seed-zero image ``Ψ(0)``) removed, docs/method.md §15.
    ``None`` when ``direction`` is zero (identity LACs: ``Ψ(0) = 0``, nothing to remove)."""
    d = direction.detach().flatten().to(torch.float64)
    n = d.norm()
    if n == 0:
        return None
    d = d / n
    f = x.detach().to(torch.float64).reshape(-1, d.numel())
    return (f - (f @ d)[:, None] * d[None, :]).reshape(x.shape)


def variants(x: torch.Tensor, psi0: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """``{"raw", "zero_mean", "psi0_projected"}`` of ``x`` (docs/method.md §15): the
    three ways the H1 and FG statistics are reported."""
    out = {"raw": x, "zero_mean": centre_rgb(x), "psi0_projected": project_out(x, psi0)}
    return {k: (v if k == "raw" or v is None else _zero_residue(v, x)) for k, v in out.items()}


def _zero_residue(v: torch.Tensor, x: torch.Tensor, rel: float = 1e-10) -> torch.Tensor:
    """Images whose energy after centring or projection is below ``rel`` of their raw
    energy are set to exactly zero: a dead seed gives ``φ_c = Ψ(0)``, which centring turns
    into rounding residue (float32 means), and residues of constant images are constant
    images whose pairwise cosines are 1 — an artefact, not structure."""
    e_v = v.detach().pow(2).flatten(-3).sum(-1)
    e_x = x.detach().pow(2).flatten(-3).sum(-1).to(e_v.dtype)
    dead = (e_v <= rel * e_x)[..., None, None, None]
    return torch.where(dead, torch.zeros_like(v), v)


def lac_pix_floor(gamma: torch.Tensor, beta: torch.Tensor) -> dict[str, float]:
    """The analytic floor of docs/method.md §15 from ``LAC_pix``'s ``γ`` and ``β``.

    Every channel inversion is ``φ_c = s_c + b`` with ``‖s_c‖² = P Σ_rgb γ²`` (the
    normalisation gives unit second moment; exact up to ε) and ``‖b‖² = P Σ_rgb β²``,
    ``⟨s_c, b⟩ = 0``. Then ``G = S Sᵀ + ‖b‖² 𝟙𝟙ᵀ`` and, for any image, seed and encoder,
    ``λ₁(G)/tr G ≥ ‖b‖²/(‖b‖² + ‖s‖²)`` and ``V_before ≤ ‖s‖²/(‖b‖² + ‖s‖²)``.
    Returns ``bias_share`` (the floor), ``v_before_ceiling`` and the per-pixel
    energies ``b2`` and ``s2``."""
    b2 = float(beta.detach().double().pow(2).sum())
    s2 = float(gamma.detach().double().pow(2).sum())
    tot = b2 + s2
    share = b2 / tot if tot > 0 else float("nan")
    return {"bias_share": share, "v_before_ceiling": 1 - share, "b2": b2, "s2": s2}


def measured_floor(phi: torch.Tensor) -> float:
    """The exact per-image floor under ``λ₁(G)/tr G`` set by the per-RGB means of the rows.

    Split every row into its per-RGB spatial mean ``b_c`` (constant image) and the rest
    ``s_c``; constants are orthogonal to zero-mean images, so ``G = S Sᵀ + B Bᵀ`` with
    both terms positive semi-definite and ``λ₁(G) ≥ λ₁(B Bᵀ)`` (Weyl). This returns
    ``λ₁(B Bᵀ) / tr G`` (docs/method.md §15): it needs no assumption about the LACs, and
    equals [`lac_pix_floor()`][lac_pix_floor] when every ``b_c = β_pix`` and every ``‖s_c‖²`` is equal."""
    f = _rows(phi)
    b = _rows(phi - centre_rgb(phi))
    tr = float(f.pow(2).sum())
    if tr == 0:
        return float("nan")
    lam = float(torch.linalg.eigvalsh(b @ b.T)[-1].clamp_min(0))
    return lam / tr


# ----------------------------------------------------------------------------- H2
def interference_terms(phi: torch.Tensor, alpha: torch.Tensor, sign: torch.Tensor,
                       u: torch.Tensor | None = None) -> dict[str, float]:
    """H2 from the rank-one coefficients ``a_c = ⟨φ_c, u⟩`` (docs/method.md §7, §15).

    ``x̂ = Σ α_c φ_c = (Σ α_c a_c) u + Σ α_c r_c``; the hemispheres split the sum by
    ``sign`` (the sign of ``W_{k,c}``). [choice] Since the repository does not hold the
    paper's text, the two conditions are made measurable as:

    - ``B1`` (the shared direction cancels in the class sum):
      ``|Σ_c α_c a_c| / (|Σ_+ α_c a_c| + |Σ_− α_c a_c|)``: 0 when the hemispheres'
      shared components cancel exactly, 1 when they do not cancel at all;
    - ``B2`` (each hemisphere is dominated by the shared direction): the mean over the
      two hemispheres of ``(Σ_± α_c a_c)² / ‖x̂_±‖²``, the share of each hemisphere's
      energy along ``u``.

    ``sum_abs_ratio`` is ``|Σ α a| / Σ |α a|``, the same cancellation over channels.
    NaN where a denominator is zero."""
    f = _rows(phi)
    if u is None:
        u, _ = leading_direction(f)
    a = f @ u.to(f).flatten()
    al = alpha.detach().to(f).flatten()
    pos = sign.detach().flatten().to(f.device) > 0
    neg = sign.detach().flatten().to(f.device) < 0
    tp, tn, tot = float((al * a)[pos].sum()), float((al * a)[neg].sum()), float((al * a).sum())
    nan = float("nan")
    den = abs(tp) + abs(tn)
    shares = []
    for m, t in ((pos, tp), (neg, tn)):
        e = float((al[m, None] * f[m]).sum(0).pow(2).sum())
        shares.append(t * t / e if e > 0 else nan)
    sa = float((al * a).abs().sum())
    return {"B1": abs(tot) / den if den > 0 else nan, "B2": sum(shares) / 2,
            "sum_abs_ratio": abs(tot) / sa if sa > 0 else nan,
            "shared_pos": tp, "shared_neg": tn}
