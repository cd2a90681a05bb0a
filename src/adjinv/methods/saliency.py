"""Captum's and Quantus's shapes for the class-directional inversion (Eq. 12,
docs/method.md §6 and §11).

[`AdjointSaliency`][AdjointSaliency] has Captum's one verb, ``attribute(inputs, target=…)``: a
tensor (or a tuple holding one) in, attributions of the same shape out, so Captum's
metrics (``sensitivity_max``, ``infidelity``) and anything written for Captum take it
as it is. [`quantus_explain()`][quantus_explain] is the ``explain_func`` Quantus calls (numpy arrays
in and out, as Quantus wants).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import AdjinvError
from .class_directional import class_directional_inversion
from .resolve import Target, resolve


class AdjointSaliency:
    """Attribution by the class-directional inversion ``x̂^(k)`` (Eq. 12, docs/method.md §6).

    ``attribute`` returns ``|x̂^(k)|`` per input channel (``abs=False``: the signed
    ``x̂^(k)``), in the encoder's input space, shaped like the input: Captum's
    ``Saliency(model).attribute(x, target=k)`` shape. [`saliency()`][saliency] sums it over RGB
    into one (B, H, W) map, the saliency of docs/method.md §11 (unnormalised).

    Args:
        model: ``adjinv.Inverter(model, …)`` (then inputs as it takes them: in [0, 1]
            with ``normalize=True``), an [`AdjointInverter`][adjinv.core.inverter.AdjointInverter],
            a [`StagedEncoder`][adjinv.encoders.staged.StagedEncoder] or a CNN ``nn.Module`` (inputs
            in its own input space; its bundled LACs or identity ones,
            [`adjinv.methods.resolve.resolve()`][adjinv.methods.resolve.resolve]).
        mode: the class direction ``α`` ([choice] of docs/method.md §6, default the logit
            contribution ``W_{k,c} g_c``).
    """

    def __init__(self, model: Any, mode: str = "contribution") -> None:
        self.resolved = resolve(model)
        self.mode = mode
        self.name = "ours"
        self.postprocess = "sum over RGB of |x̂^(k)| (raw magnitude, no normalisation)"

    @property
    def inverter(self) -> Any:
        """The [`AdjointInverter`][adjinv.core.inverter.AdjointInverter] behind this method."""
        return self.resolved.inverter

    def _x_class(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        if isinstance(target, list | tuple) and len(target) == 1 and x.shape[0] != 1:
            target = target[0]  # Captum passes [k] for one class of the whole batch
        cd = class_directional_inversion(self.resolved.inverter, self.resolved.prepare(x),
                                         target, self.mode)
        return cd.x_class.to(device=x.device, dtype=x.dtype)

    def attribute(self, inputs: torch.Tensor | tuple[torch.Tensor, ...], target: Target = None,
                  additional_forward_args: Any = None, abs: bool = True,
                  **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Attributions shaped like ``inputs`` for class ``target``.

        Args:
            inputs: images (B, 3, H, W), or a tuple holding them (Captum's form; the
                result is then a tuple too).
            target: a class index, a class name, one per image (list or (B,) tensor), or
                ``None`` for each image's top-1 prediction.
            additional_forward_args: must be ``None``: a classifier takes the images alone.
            abs: ``|x̂^(k)|`` (default, as Captum's ``Saliency``) or the signed ``x̂^(k)``.
            **kwargs: other Captum keywords are not supported and raise.

        Returns:
            A tensor (or one-tensor tuple) of ``inputs``' shape, dtype and device.
        """
        extra = list(kwargs) + (["additional_forward_args"] if additional_forward_args is not None else [])
        if extra:
            raise AdjinvError(f"AdjointSaliency.attribute takes inputs and target only; drop {extra}")
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise AdjinvError(f"a classifier takes one image batch; got a tuple of {len(inputs)} "
                                  "inputs: pass (images,)")
            return (self.attribute(inputs[0], target, abs=abs),)  # type: ignore[return-value]
        xc = self._x_class(inputs, target)
        return xc.abs() if abs else xc

    def saliency(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """``Σ_rgb |x̂^(k)|`` (B, H, W) at input resolution (docs/method.md §11)."""
        return self._x_class(x, target).abs().sum(1)


def quantus_explain(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
    """The ``explain_func`` of Quantus (``metric(model, x, y, explain_func=quantus_explain)``).

    Args:
        model: what Quantus passes (the ``nn.Module``, or a randomised copy of it), or
            anything [`AdjointSaliency`][AdjointSaliency] takes.
        inputs: images (B, 3, H, W) as a numpy array or tensor, in the model's input space.
        targets: class indices (B,) (numpy, tensor or list).
        **kwargs: ``mode`` (the class direction of Eq. 12), ``channels="sum"`` (default:
            Σ_rgb |x̂^(k)|, shape (B, 1, H, W)) or ``"keep"`` (|x̂^(k)| per channel,
            shape (B, 3, H, W)), and ``device``; other Quantus keywords are ignored.

    Returns:
        Attributions as a float32 numpy array.
    """
    device = kwargs.get("device")
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    x = x.float().to(device) if device is not None else x.float()
    k = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
    a = AdjointSaliency(model, kwargs.get("mode", "contribution")).attribute(x, k.long().reshape(-1))
    assert isinstance(a, torch.Tensor)
    channels = kwargs.get("channels", "sum")
    if channels not in ("sum", "keep"):
        raise AdjinvError(f"channels must be 'sum' or 'keep', got {channels!r}")
    if channels == "sum":
        a = a.sum(1, keepdim=True)
    return a.detach().cpu().numpy().astype(np.float32)
