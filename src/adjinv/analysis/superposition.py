"""Holographic superposition, H1 (Sec. 3.2.3, Eq. 13, Supp. C.4, docs/method.md §7).

Stack one image's channel inversions as rows ``Φ ∈ R^{C×P}`` and form ``G = ΦΦᵀ``.
H1 says ``φ_c ≈ a_c u + r_c`` with one shared direction ``u``; the statistics below
measure how much of ``Φ`` that one direction explains and what is left without it.
All computations are in float64.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import AdjinvError


@dataclass
class SuperpositionStats:
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

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


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
