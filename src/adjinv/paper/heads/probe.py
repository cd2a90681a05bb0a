"""Linear probe on (selected) GAP channels: multinomial logistic regression (Sec. 3.2.5).

The compression protocol (docs/method.md §8) trains one probe per channel subset and
reports its test accuracy. The probe is deterministic given its seed: features
are standardised with the training set's mean and std, the weights start at
zero, full-batch L-BFGS (default) has no randomness, and the Adam option draws
its mini-batch order from a private generator seeded with ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import AdjinvError

OPTIMIZERS = ("lbfgs", "adam")


@dataclass
class ProbeConfig:
    """Training settings.

    ``weight_decay``: ``λ`` of the penalty ``λ/2 ‖W‖²`` added to the mean cross-entropy
    (the bias is not penalised); with standardised features and more channels than
    images the data are usually separable, and without it the weights diverge.
    ``max_iter``: L-BFGS iterations, or Adam epochs. ``lr``: Adam step (L-BFGS uses a
    strong-Wolfe line search with step 1). ``batch_size``: Adam mini-batch.
    """

    weight_decay: float = 1e-3
    optimizer: str = "lbfgs"
    max_iter: int = 200
    lr: float = 0.01
    batch_size: int = 256
    seed: int = 0
    tol: float = 1e-7


class LinearProbe:
    """``z = W·(g − μ)/s + b`` on the given channels; fit with [`fit()`][fit]."""

    def __init__(self, num_classes: int, config: ProbeConfig | None = None) -> None:
        if num_classes < 2:
            raise AdjinvError(f"a probe needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.config = config or ProbeConfig()
        if self.config.optimizer not in OPTIMIZERS:
            raise AdjinvError(f"optimizer must be one of {OPTIMIZERS}, got {self.config.optimizer!r}")
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.final_loss: float = float("nan")

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        mean, std, _, _ = self._state()
        return (x.to(torch.float64) - mean) / std

    def _state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean, std, weight, bias)``; the standardisation is set before the weights."""
        if self.mean is None or self.std is None:
            raise AdjinvError("the probe is not trained: call fit() first")
        z = self.mean.new_zeros(0)
        return (self.mean, self.std, self.weight if self.weight is not None else z,
                self.bias if self.bias is not None else z)

    def _loss(self, xs: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor
              ) -> torch.Tensor:
        return F.cross_entropy(xs @ w.T + b, y) + 0.5 * self.config.weight_decay * w.pow(2).sum()

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> LinearProbe:
        """Train on features ``x`` (N, C) and integer labels ``y`` (N,)."""
        if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise AdjinvError(f"expected x (N, C) and y (N,), got {tuple(x.shape)}, {tuple(y.shape)}")
        y = y.to(device=x.device, dtype=torch.long)
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise AdjinvError(f"labels must lie in [0, {self.num_classes}), got "
                              f"[{int(y.min())}, {int(y.max())}]")
        x64 = x.to(torch.float64)
        self.mean = x64.mean(0)
        std = x64.std(0, unbiased=False)
        # constant (e.g. dead ReLU) channels carry nothing; dividing by 1 keeps them 0
        self.std = torch.where(std > 1e-12, std, torch.ones_like(std))
        xs = self._standardise(x64)
        cfg = self.config
        w = torch.zeros(self.num_classes, x.shape[1], dtype=torch.float64, device=x.device,
                        requires_grad=True)
        b = torch.zeros(self.num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
        with torch.enable_grad():
            if cfg.optimizer == "lbfgs":
                lbfgs = torch.optim.LBFGS([w, b], lr=1, max_iter=cfg.max_iter, history_size=20,
                                        tolerance_grad=cfg.tol, tolerance_change=cfg.tol * 1e-2,
                                        line_search_fn="strong_wolfe")

                def closure() -> torch.Tensor:
                    lbfgs.zero_grad()
                    loss = self._loss(xs, y, w, b)
                    loss.backward()
                    return loss

                lbfgs.step(closure)
            else:
                g = torch.Generator().manual_seed(cfg.seed)
                opt = torch.optim.Adam([w, b], lr=cfg.lr)
                for _ in range(cfg.max_iter):
                    perm = torch.randperm(xs.shape[0], generator=g).to(x.device)
                    for idx in perm.split(cfg.batch_size):
                        opt.zero_grad()
                        self._loss(xs[idx], y[idx], w, b).backward()
                        opt.step()
            with torch.no_grad():
                self.final_loss = float(self._loss(xs, y, w, b))
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) of features ``x`` (N, C), in float64."""
        if self.weight is None:
            raise AdjinvError("the probe is not trained: call fit() first")
        _, _, weight, bias = self._state()
        return self._standardise(x.to(weight.device)) @ weight.T + bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class per row."""
        return self.logits(x).argmax(1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of rows of ``x`` classified as ``y``."""
        pred = self.predict(x)
        return float((pred == y.to(pred.device)).to(torch.float64).mean())

    def effective_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_eff, b_eff)`` with ``z = W_eff g + b_eff`` on the raw features: the linear
        form a class-directional inversion (Eq. 12) needs."""
        if self.weight is None:
            raise AdjinvError("the probe is not trained: call fit() first")
        mean, std, weight, bias = self._state()
        w = weight / std
        return w, bias - w @ mean


def probe_accuracy(train: tuple[torch.Tensor, torch.Tensor],
                   tests: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   channels: torch.Tensor | None, num_classes: int,
                   config: ProbeConfig | None = None) -> dict[str, float]:
    """Train a probe on ``train = (features, labels)`` restricted to ``channels`` (all if
    None) and return its accuracy on each named test set."""
    xtr, ytr = train
    sel = (lambda f: f) if channels is None else (lambda f: f[:, channels.to(f.device)])
    probe = LinearProbe(num_classes, config).fit(sel(xtr), ytr)
    return {name: probe.accuracy(sel(x), y) for name, (x, y) in tests.items()}
