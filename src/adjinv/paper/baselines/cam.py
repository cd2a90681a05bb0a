"""Saliency methods behind one call shape (Sec. 3.3, Table 3; docs/method.md §11).

Like Captum, every method is an object with ``attribute(x, target=None) -> (B, H, W)``:
``x`` a normalised batch (B, 3, H, W), ``target`` a class index or (B,) tensor
(default: each image's top-1 prediction), the result a saliency at input resolution on
``x``'s device. The metrics in [`adjinv.metrics.faithfulness`][adjinv.metrics.faithfulness] and
[`adjinv.metrics.localisation`][adjinv.metrics.localisation] take any of them.

- [`AdjointSaliency`][AdjointSaliency]: ours, the per-pixel magnitude of the class-directional
  inversion ``x̂^(k)`` (Eq. 12), ``Σ_rgb |x̂^(k)|`` — unnormalised (the metrics rank or
  min-max it themselves).
- [`CAMSaliency`][CAMSaliency]: Grad-CAM, Grad-CAM++ and Score-CAM from ``pytorch-grad-cam``
  (the official-style implementations the paper compared with; version pinned in
  pyproject, recorded in [`CAM_LIBRARY`][CAM_LIBRARY]) on the **deepest stage's output** ``A_L``
  of the same encoder. Their maps come back ReLU'd and min-max normalised to [0, 1] per
  image and bilinearly upsampled (``cv2.resize``) to the input size — that is what the
  library does, recorded in [`CAMSaliency.postprocess`][CAMSaliency.postprocess]. Score-CAM's forward
  batch size is set explicitly (``score_batch_size``, default 32) instead of the
  library's hidden default of 16.
"""

from __future__ import annotations

import contextlib
import io
from typing import Protocol

import torch

from ..._optional import require
from ...core.inverter import AdjointInverter
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...methods.saliency import AdjointSaliency as LibraryAdjointSaliency

CAM_METHODS = ("gradcam", "gradcam++", "scorecam")
CAM_LIBRARY = "grad-cam==1.5.7 (pytorch-grad-cam)"


class Attribution(Protocol):
    """The one call shape of every saliency method."""

    name: str

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """Saliency (B, H, W) at input resolution."""


def _targets(logits: torch.Tensor, target: int | torch.Tensor | None) -> torch.Tensor:
    if target is None:
        return logits.argmax(1)
    return torch.as_tensor(target, device=logits.device).long().expand(logits.shape[0])


class AdjointSaliency:
    """``Σ_rgb |x̂^(k)|`` of the class-directional inversion (Eq. 12, docs/method.md §6/§11):
    the library's [`adjinv.methods.saliency.AdjointSaliency`][adjinv.methods.saliency.AdjointSaliency] in
    this harness's
    (B, H, W) call shape.

    ``mode`` is the [choice] of α of docs/method.md §6 (default the logit contribution ``W_{k,c} g_c``)."""

    def __init__(self, inverter: AdjointInverter, mode: str = "contribution") -> None:
        self.method = LibraryAdjointSaliency(inverter, mode)
        self.inverter = inverter
        self.mode = mode
        self.name = "ours"
        self.postprocess = self.method.postprocess

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """Saliency (B, H, W) for class ``target`` (default top-1)."""
        return self.method.saliency(x, target)


class CentredAdjointSaliency(AdjointSaliency):
    """``Σ_rgb |x̂^(k) − mean_rgb x̂^(k)|``: [`AdjointSaliency`][AdjointSaliency] on the per-RGB zero-mean
    reconstruction, without the uniform ``(Σ α) β_pix`` term (docs/method.md §15)."""

    def __init__(self, inverter: AdjointInverter, mode: str = "contribution") -> None:
        super().__init__(inverter, mode)
        self.name = "ours_zero_mean"
        self.postprocess = "sum over RGB of |x̂^(k) minus its per-RGB spatial mean|"

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """Saliency (B, H, W) for class ``target`` (default top-1)."""
        xc = self.method.attribute(x, target, abs=False)
        assert isinstance(xc, torch.Tensor)
        return (xc - xc.mean(dim=(-2, -1), keepdim=True)).abs().sum(1)


class RandomSaliency:
    """Sanity row (docs/method.md §11): a map of independent uniform noise, seeded per call
    count, that knows nothing about the image or the model."""

    postprocess = "uniform noise in [0, 1)"

    def __init__(self, seed: int = 0) -> None:
        self.name = "random"
        self.seed = seed
        self.calls = 0

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """Noise (B, H, W), a new draw for every call, reproducible from ``seed``."""
        g = torch.Generator().manual_seed(self.seed + self.calls)
        self.calls += 1
        return torch.rand(x.shape[0], *x.shape[-2:], generator=g).to(x.device)


class EdgeSaliency:
    """Sanity row (docs/method.md §11): the Sobel gradient magnitude of the input, summed
    over RGB: an edge detector that uses no model at all (Adebayo et al. 2018)."""

    postprocess = "sum over RGB of the Sobel gradient magnitude of the normalised input"

    def __init__(self) -> None:
        self.name = "edge"

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """Edge map (B, H, W)."""
        return sobel_magnitude(x)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``Σ_rgb sqrt(Gx² + Gy²)`` with 3×3 Sobel kernels and replicate padding: (B, C, H, W) → (B, H, W)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype,
                      device=x.device)
    k = torch.stack([kx, kx.T])[:, None]  # (2, 1, 3, 3)
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    g = torch.nn.functional.conv2d(xp, k)  # (B·C, 2, H, W)
    return g.pow(2).sum(1).sqrt().reshape(b, c, h, w).sum(1)


class CAMSaliency:
    """Grad-CAM / Grad-CAM++ / Score-CAM through ``pytorch-grad-cam`` on ``encoder``.

    ``target_layer`` defaults to the deepest stage (its output is ``A_L``, the layer the
    head pools). Hooks are released and the encoder's train/eval modes and
    ``requires_grad`` flags are restored after every call, even after an error.
    """

    postprocess = ("ReLU, then per-image min-max to [0, 1] (x - min) / (max + 1e-7), then "
                   "bilinear cv2.resize to the input size — pytorch-grad-cam's own scaling")

    def __init__(self, encoder: StagedEncoder, method: str = "gradcam", *,
                 target_layer: torch.nn.Module | None = None, score_batch_size: int = 32) -> None:
        if method not in CAM_METHODS:
            raise AdjinvError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
        if score_batch_size < 1:
            raise AdjinvError("score_batch_size must be at least 1")
        self.encoder = encoder
        self.method = method
        self.name = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}[method]
        self.target_layer = target_layer if target_layer is not None else encoder.stages[-1]
        self.score_batch_size = score_batch_size

    def _cam_class(self) -> type:
        cams = require("pytorch_grad_cam", f"the {self.name} baseline")
        return {"gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus,
                "scorecam": cams.ScoreCAM}[self.method]

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """Saliency (B, H, W) in [0, 1] for class ``target`` (default top-1)."""
        target_cls = require("pytorch_grad_cam.utils.model_targets",
                             f"the {self.name} baseline").ClassifierOutputTarget
        if x.dim() != 4:
            raise AdjinvError(f"x must be a (B, 3, H, W) batch, got {tuple(x.shape)}")
        with self.encoder.frozen():
            with torch.no_grad():
                k = _targets(self.encoder(x), target)
            targets = [target_cls(int(c)) for c in k.tolist()]
            # the encoder's weights are frozen: the input carries the graph instead
            inp = x.detach().clone().requires_grad_(True)
            cam = self._cam_class()(model=self.encoder, target_layers=[self.target_layer])
            if self.method == "scorecam":
                cam.batch_size = self.score_batch_size
            try:
                # Score-CAM draws an unconditional tqdm bar per image; keep stderr for ours
                quiet = (contextlib.redirect_stderr(io.StringIO()) if self.method == "scorecam"
                         else contextlib.nullcontext())
                with quiet, torch.enable_grad():
                    maps = cam(input_tensor=inp, targets=targets)
            finally:
                cam.activations_and_grads.release()
        return torch.from_numpy(maps).to(device=x.device, dtype=torch.float32)


def make_saliency(name: str, encoder: StagedEncoder, inverter: AdjointInverter | None = None,
                  **kw: object) -> Attribution:
    """A method by name: ``ours``, ``gradcam``, ``gradcam++`` or ``scorecam``."""
    if name == "ours":
        if inverter is None:
            raise AdjinvError("the 'ours' saliency needs an AdjointInverter (trained LACs)")
        return AdjointSaliency(inverter, **kw)  # type: ignore[arg-type]
    return CAMSaliency(encoder, name, **kw)  # type: ignore[arg-type]
