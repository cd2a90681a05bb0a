"""Causal concept localisation: the Energy Concentration Ratio and channel ablation
over GAP features (Sec. 3.4, Eq. 17, Supp. C.8, docs/method.md §10)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..._optional import require
from ...encoders.staged import LinearHead
from ...errors import AdjinvError

ORDERS = ("descending", "ascending", "random")


def energy_concentration_ratio(phi: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``ECR_c = ‖φ_c ⊙ R‖² / ‖φ_c‖²`` (Eq. 17) for channel inversions ``phi`` (C, 3, H, W)
    and a region mask ``region`` (H, W). A channel with no energy has no ECR: NaN."""
    if phi.dim() != 4 or phi.shape[1] != 3:
        raise AdjinvError(f"expected channel inversions (C, 3, H, W), got {tuple(phi.shape)}")
    if region.shape != phi.shape[-2:]:
        raise AdjinvError(f"the region is {tuple(region.shape)} but the inversions are "
                          f"{tuple(phi.shape[-2:])}")
    e = phi.detach().double().pow(2).sum(1)
    num = (e * region.to(e)).flatten(1).sum(1)
    den = e.flatten(1).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


def ablation_order(ecr: torch.Tensor, order: str, seed: int = 0) -> torch.Tensor:
    """A permutation of the C channels: the order in which they are ablated.

    ``descending``: high ECR first; ``ascending``: low ECR first; ``random``: a uniform
    permutation from ``torch.Generator().manual_seed(seed)`` (reproducible). [choice]
    Channels without an ECR (NaN: dead on the reference image) come last in both ranked
    orders, in index order; ties keep index order (stable sort)."""
    if order not in ORDERS:
        raise AdjinvError(f"order must be one of {ORDERS}, got {order!r}")
    c = ecr.numel()
    if order == "random":
        return torch.randperm(c, generator=torch.Generator().manual_seed(seed))
    v = ecr.detach().double().flatten().cpu()
    ok = ~torch.isnan(v)
    key = torch.where(ok, v if order == "ascending" else -v, torch.full_like(v, float("inf")))
    return torch.sort(key, stable=True).indices


def n_ablated(fraction: float, c: int) -> int:
    """``round(p·C)`` channels for fraction ``p`` in [0, 1]."""
    if not 0.0 <= fraction <= 1.0:
        raise AdjinvError(f"ablation fraction must be in [0, 1], got {fraction}")
    return int(round(fraction * c))


def ablate_gap(g: torch.Tensor, order: torch.Tensor, fraction: float) -> torch.Tensor:
    """GAP features ``g`` (B, C) with the first ``round(p·C)`` channels of ``order`` zeroed."""
    out = g.clone()
    out[:, order[: n_ablated(fraction, g.shape[1])].to(g.device)] = 0
    return out


def ablation_curve(head: LinearHead, g: torch.Tensor, target: int, order: torch.Tensor,
                   fractions: list[float]) -> torch.Tensor:
    """Softmax probability of class ``target`` after ablating each fraction: (F, B)."""
    with torch.no_grad():
        return torch.stack([head.from_gap(ablate_gap(g, order, p)).softmax(1)[:, target]
                            for p in fractions])


@dataclass
class ECRAblation:
    """The three ablation curves of Sec. 3.4, averaged over the test images.

    ``descending``/``ascending`` (F,), ``random_mean``/``random_std`` (F,) over the
    ``random_all`` (S, F) seeds; ``per_image`` holds the (F, B) curves of the ranked orders.
    """

    fractions: list[float]
    descending: torch.Tensor
    ascending: torch.Tensor
    random_mean: torch.Tensor
    random_std: torch.Tensor
    random_all: torch.Tensor
    per_image: dict[str, torch.Tensor]

    def to_dict(self) -> dict:
        """JSON-ready form (the per-seed random curves included)."""
        return {"fractions": self.fractions, "descending": self.descending.tolist(),
                "ascending": self.ascending.tolist(), "random_mean": self.random_mean.tolist(),
                "random_std": self.random_std.tolist(), "random_seeds": len(self.random_all)}


def ecr_ablation(head: LinearHead, g: torch.Tensor, target: int, ecr: torch.Tensor,
                 fractions: list[float], seeds: int = 50, seed: int = 0) -> ECRAblation:
    """Descending / Ascending / Random (``seeds`` permutations, seeds ``seed … seed+S-1``)
    ablation of the GAP features ``g`` (B, C) of the test images, ranked by ``ecr`` (C,)
    from the reference image alone (docs/method.md §10). Random is mean ± std (population) over seeds."""
    if g.dim() != 2 or g.shape[1] != ecr.numel():
        raise AdjinvError(f"GAP features {tuple(g.shape)} do not match {ecr.numel()} ECR values")
    if seeds < 1:
        raise AdjinvError("need at least one random seed")
    curves = {o: ablation_curve(head, g, target, ablation_order(ecr, o), fractions)
              for o in ("descending", "ascending")}
    rnd = torch.stack([ablation_curve(head, g, target, ablation_order(ecr, "random", seed + s),
                                      fractions).mean(1) for s in range(seeds)])
    return ECRAblation(list(fractions), curves["descending"].mean(1), curves["ascending"].mean(1),
                       rnd.mean(0), rnd.std(0, unbiased=False), rnd, curves)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two score vectors over the entries finite in both
    (``scipy.stats.spearmanr``: tied scores share their average rank). NaN when fewer
    than two entries remain or either vector is constant there."""
    stats = require("scipy.stats", "the Spearman rank correlation")
    a, b = a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()
    ok = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[ok], b[ok]
    if a.numel() < 2 or bool((a == a[0]).all()) or bool((b == b[0]).all()):
        return float("nan")
    return float(stats.spearmanr(a.numpy(), b.numpy()).statistic)
