"""Mahendran & Vedaldi (2015) inversion and Robust inversion (Sec. 3.1, C.1; docs/method.md §13).

Optimise an image ``x`` so that the features of one stage of the frozen encoder (the
deepest by default, [`MVConfig.stage`][MVConfig]) match the target's, ``Φ₀ = A_k(x₀)``,
under the natural-image priors of M&V 2015 (Eq. 1–5 there):

    E(x) = C · ‖Φ(x) − Φ₀‖² / ‖Φ₀‖²  +  λ_α · ‖x‖_α^α  +  λ_TV · TV^β(x)
    TV^β(x) = Σ_{i,j,c} ((x_{i,j+1,c} − x_{ijc})² + (x_{i+1,j,c} − x_{ijc})²)^{β/2}

``x`` is the mean-subtracted image in [0, 1] units (the encoder sees
``normalize(x + mean_rgb)``). Defaults, from M&V 2015 §3 as we read it: ``α = 6``,
``β = 2``, the feature-scale normalisation ``‖Φ₀‖²`` of the data term, the normalisation
of the priors by the image size and the typical pixel range ``B = 80/255`` and
``V = B/6.5``, i.e. ``λ_α = 1/(H·W·B^α)`` and ``λ_TV = 1/(H·W·V^β)``, gradient descent
with momentum 0.9 from a small random start, the learning rate held and then divided by
10 for the last quarter of the steps. ``alpha_scale`` and ``tv_scale`` multiply the prior
weights in effect (M&V's normalised values unless ``lambda_alpha``/``lambda_tv`` are
given), so a sweep of the weights reads as multiples of M&V's.

[choice] The step count (200), base learning rate and data weight ``C`` (1) are ours:
M&V tuned them per layer, and the paper under reproduction does not give them.

Optimisers and stopping (every setting is a field of [`MVConfig`][MVConfig]):

- ``optimizer="sgd"`` (default): M&V's momentum gradient descent; the learning rate
  (default 0.05) drops by 10 at ``lr_drop_at`` of ``steps``, the cap (the stopping rule
  may end the run before the drop).
- ``optimizer="adam"``: Adam (default learning rate 0.01, pixel units of ``x``).
  [choice] Cosine decay of the learning rate from ``lr`` to 0 over ``steps``, the cap.
- Stopping rule: with ``tol > 0`` the run stops when the energy has changed by less
  than ``tol`` (relative) over the last ``window`` steps; ``steps`` caps it. ``tol = 0``
  (default) runs all ``steps``, as before. [choice] Precisely: with ``Ē_last`` the mean
  energy of the last ``window`` steps, ``Ē_prev`` that of the ``window`` steps before
  and ``E_1`` the first step's energy, the run stops when
  ``|Ē_prev − Ē_last| < tol · (E_1 − Ē_last)``, i.e. when the last window gained less
  than ``tol`` of the decrease made so far; not before ``2·window`` steps, nor before
  ``min_steps``, nor while ``Ē_last ≥ E_1``. Why not the plain
  ``(E_{t−window} − E_t) / E_{t−window} < tol``: momentum SGD and Adam energies oscillate
  from step to step (hence window means); early on they can rise well above the start
  for a hundred steps or more (Lite0 at 64 px, Adam: 1.0 → 2.3 within 30 steps, back
  below 1 after about 90), where a rule that stops on "no decrease" ends the run; and
  from the near-zero start momentum SGD can sit on a plateau (Lite0 at 224 px, lr 0.05
  or 0.15: 1.006 → 1.000 within 40 steps, then flat to four decimals), where a rule
  relative to ``E`` itself reports convergence with nothing reconstructed. This rule too
  stops on such a plateau (the lr-0.05 run at step 243, ``E = 0.99998``) if SGD stays
  there long enough; ``min_steps`` holds the rule off for that long. A run that never
  gets below its start ends unconverged at the cap.
- [choice] The energy is per image; the rule reads the mean over the batch, so a batch
  stops together: invert one image per call for a per-image rule. After a run the config
  holds ``history`` (the batch-mean energy before each update), ``steps_run`` and
  ``converged``, and ``diverged`` when a non-finite energy ended the run (seen with
  momentum SGD, lr 0.05, 64 × M&V's TV weight at 64 px: a gradient step on the TV term is
  an explicit diffusion step, unstable past a weight × learning-rate bound)
  ([`MVConfig.run_info()`][MVConfig.run_info]).

Robust inversion (Engstrom et al. 2019) is the *same optimisation* on an adversarially
robust encoder whose weights the user supplies (``load_encoder(name, weights=...)``):
[`robust_inversion()`][robust_inversion] only checks that a weights file was given.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.05, "adam": 0.01}
_RUN_FIELDS = ("history", "steps_run", "converged", "diverged")


def _real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass
class MVConfig:
    """Weights, optimiser and stopping rule of the M&V objective (JSON-ready)."""

    steps: int = 200
    lr: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    lr_drop_at: float = 0.75
    tol: float = 0.0
    window: int = 50
    min_steps: int = 0
    stage: int = -1
    data_weight: float = 1.0
    alpha: float = 6.0
    beta: float = 2.0
    pixel_range: float = 80 / 255
    tv_range_ratio: float = 6.5
    lambda_alpha: float | None = None
    lambda_tv: float | None = None
    alpha_scale: float = 1.0
    tv_scale: float = 1.0
    init_std: float = 1e-3
    seed: int = 0
    history: list[float] = field(default_factory=list, init=False, repr=False)
    steps_run: int = field(default=0, init=False, repr=False)
    converged: bool = field(default=False, init=False, repr=False)
    diverged: bool = field(default=False, init=False, repr=False)

    def validate(self) -> None:
        """Reject impossible settings."""
        if not _int(self.steps) or self.steps < 1:
            raise AdjinvError(f"M&V needs an integer steps >= 1, got {self.steps!r}")
        if self.optimizer not in OPTIMIZERS:
            raise AdjinvError(f"unknown M&V optimizer {self.optimizer!r}; choose one of "
                              f"{', '.join(OPTIMIZERS)}")
        if self.lr is not None and (not _real(self.lr) or self.lr <= 0):
            raise AdjinvError(f"M&V needs lr > 0 (or None: {DEFAULT_LR}), got {self.lr!r}")
        if not _real(self.momentum) or not 0 <= self.momentum < 1:
            raise AdjinvError(f"M&V needs momentum in [0, 1), got {self.momentum!r}")
        if not _real(self.lr_drop_at) or not 0 <= self.lr_drop_at <= 1:
            raise AdjinvError(f"M&V needs lr_drop_at in [0, 1], got {self.lr_drop_at!r}")
        if not _real(self.tol) or self.tol < 0:
            raise AdjinvError(f"M&V needs a stopping tolerance tol >= 0 (0: run all steps), "
                              f"got {self.tol!r}")
        if not _int(self.window) or self.window < 1:
            raise AdjinvError(f"M&V needs an integer stopping window >= 1 (steps), got {self.window!r}")
        if not _int(self.min_steps) or self.min_steps < 0:
            raise AdjinvError(f"M&V needs an integer min_steps >= 0 (steps before the stopping rule "
                              f"is read), got {self.min_steps!r}")
        if not _int(self.stage):
            raise AdjinvError(f"M&V stage must be an integer stage index (-1: deepest), got {self.stage!r}")
        if not all(_real(v) and v > 0 for v in (self.alpha, self.beta, self.pixel_range,
                                                self.tv_range_ratio, self.data_weight)):
            raise AdjinvError("M&V needs alpha, beta, pixel_range, tv_range_ratio and data_weight "
                              "> 0 (finite)")
        for name in ("lambda_alpha", "lambda_tv", "alpha_scale", "tv_scale", "init_std"):
            v = getattr(self, name)
            if v is None and name.startswith("lambda_"):
                continue  # M&V's normalised weight
            if not _real(v) or v < 0:
                raise AdjinvError(f"M&V needs {name} >= 0 (finite), got {v!r}")

    def learning_rate(self) -> float:
        """The base learning rate: ``lr``, else the optimiser's default."""
        if self.lr is not None:
            return float(self.lr)
        if self.optimizer not in DEFAULT_LR:
            raise AdjinvError(f"unknown M&V optimizer {self.optimizer!r}; choose one of "
                              f"{', '.join(OPTIMIZERS)}")
        return DEFAULT_LR[self.optimizer]

    def stage_index(self, encoder: StagedEncoder) -> int:
        """``stage`` as an index in ``[0, num_stages)`` of ``encoder``."""
        n = encoder.num_stages
        if not -n <= self.stage < n:
            raise AdjinvError(f"M&V stage {self.stage} is out of range for {encoder.name} "
                              f"({n} stages: 0..{n - 1}, or -1 for the deepest)")
        return self.stage % n

    def weights(self, h: int, w: int) -> tuple[float, float]:
        """``(λ_α, λ_TV)``: the given values, else M&V's size/range normalisation, times
        ``alpha_scale`` and ``tv_scale``."""
        b = self.pixel_range
        v = b / self.tv_range_ratio
        la = self.lambda_alpha if self.lambda_alpha is not None else 1.0 / (h * w * b**self.alpha)
        lt = self.lambda_tv if self.lambda_tv is not None else 1.0 / (h * w * v**self.beta)
        return la * self.alpha_scale, lt * self.tv_scale

    def to_dict(self) -> dict:
        """Settings without the run's record, the learning rate resolved
        (``MVConfig(**cfg.to_dict())`` copies them)."""
        d = asdict(self)
        for k in _RUN_FIELDS:
            d.pop(k)
        d["lr"] = self.learning_rate()
        return d

    def run_info(self) -> dict:
        """The last run's record: steps run, whether the stopping rule ended it, whether a
        non-finite energy did, the last batch-mean energy and the learning rate used."""
        return {"steps_run": self.steps_run, "converged": self.converged, "diverged": self.diverged,
                "energy_final": self.history[-1] if self.history else None,
                "lr": self.learning_rate()}


def total_variation(x: torch.Tensor, beta: float) -> torch.Tensor:
    """``TV^β`` per image (M&V Eq. 5; replicate border): (B, C, H, W) → (B,)."""
    dx = torch.diff(x, dim=-1, append=x[..., -1:])
    dy = torch.diff(x, dim=-2, append=x[..., -1:, :])
    sq = dx.pow(2) + dy.pow(2)
    # (·)^{β/2} has an infinite derivative at 0 for β < 2: keep the gradient finite
    p = sq if beta == 2 else (sq + 1e-12).pow(beta / 2)
    return p.flatten(1).sum(1)


def mv_objective(encoder: StagedEncoder, z: torch.Tensor, phi0: torch.Tensor, cfg: MVConfig
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-image energy ``E`` (B,) of the mean-subtracted images ``z`` and its three terms;
    ``phi0`` are the target features of stage ``cfg.stage``."""
    k = cfg.stage_index(encoder)
    mean = encoder.mean.view(1, 3, 1, 1).to(z)
    x = encoder.normalize(z + mean)
    phi = encoder.forward_stages(x, upto=k)[k]
    h, w = z.shape[-2:]
    la, lt = cfg.weights(h, w)
    data = (phi - phi0).pow(2).flatten(1).sum(1) / phi0.pow(2).flatten(1).sum(1).clamp_min(1e-30)
    norm = z.abs().pow(cfg.alpha).flatten(1).sum(1)
    tv = total_variation(z, cfg.beta)
    terms = {"data": cfg.data_weight * data, "alpha": la * norm, "tv": lt * tv}
    return terms["data"] + terms["alpha"] + terms["tv"], terms


def _converged(history: list[float], window: int, tol: float, min_steps: int = 0) -> bool:
    """The stopping rule: the mean energy of the last ``window`` steps differs from the mean
    of the ``window`` steps before by less than ``tol`` times the decrease from the first
    step; never while that mean is not below the first step's energy, nor before
    ``min_steps`` steps."""
    if tol <= 0 or len(history) < max(2 * window, min_steps):
        return False
    old = sum(history[-2 * window:-window]) / window
    new = sum(history[-window:]) / window
    gained = history[0] - new
    return gained > 0 and abs(old - new) < tol * gained


def mahendran_vedaldi(encoder: StagedEncoder, x0: torch.Tensor, cfg: MVConfig | None = None, *,
                      progress: Callable[[int, int, float], None] | None = None) -> torch.Tensor:
    """Invert ``A_k(x0)`` (``k = cfg.stage``, the deepest by default) of the normalised batch
    ``x0`` (B, 3, H, W); return the reconstruction in the encoder's normalised space
    (B, 3, H, W). The energy per step (mean over the batch), the steps run, whether the
    stopping rule ended the run and whether a non-finite energy did are kept in ``cfg``
    (``history``, ``steps_run``, ``converged``, ``diverged``)."""
    cfg = cfg or MVConfig()
    cfg.validate()
    k = cfg.stage_index(encoder)
    cfg.history, cfg.steps_run, cfg.converged, cfg.diverged = [], 0, False, False
    lr = cfg.learning_rate()
    with encoder.frozen():
        with torch.no_grad():
            phi0 = encoder.forward_stages(x0, upto=k)[k]
        g = torch.Generator().manual_seed(cfg.seed)
        z = (cfg.init_std * torch.randn(x0.shape, generator=g, dtype=torch.float32)).to(x0)
        z.requires_grad_(True)
        opt: torch.optim.Optimizer
        sched: torch.optim.lr_scheduler.LRScheduler
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD([z], lr=lr, momentum=cfg.momentum)
            drop = max(1, math.ceil(cfg.lr_drop_at * cfg.steps))
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, [drop], gamma=0.1)
        else:
            opt = torch.optim.Adam([z], lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
        for step in range(cfg.steps):
            opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                energy, _ = mv_objective(encoder, z, phi0, cfg)
                loss = energy.sum()
                loss.backward()
            opt.step()
            sched.step()
            cfg.history.append(loss.item() / x0.shape[0])
            cfg.steps_run = step + 1
            if progress is not None:
                progress(step + 1, cfg.steps, cfg.history[-1])
            if not math.isfinite(cfg.history[-1]):
                cfg.diverged = True  # the image is no longer finite: nothing more to gain
                break
            if _converged(cfg.history, cfg.window, cfg.tol, cfg.min_steps):
                cfg.converged = True
                break
        mean = encoder.mean.view(1, 3, 1, 1).to(z)
        return encoder.normalize(z.detach() + mean)


def robust_inversion(robust_encoder: StagedEncoder, x0: torch.Tensor, cfg: MVConfig | None = None,
                     *, weights: str | os.PathLike | None) -> torch.Tensor:
    """The M&V optimisation on an adversarially robust encoder (Engstrom et al. 2019).

    ``weights`` names the robust weights file ``robust_encoder`` was loaded from; it is
    required so that a run never silently inverts a standard encoder under this name."""
    if weights is None:
        raise AdjinvError("robust inversion needs adversarially robust encoder weights: load them "
                          "with adjinv.load_encoder(name, weights=PATH) and pass weights=PATH "
                          "(--robust NAME=PATH)")
    return mahendran_vedaldi(robust_encoder, x0, cfg)
