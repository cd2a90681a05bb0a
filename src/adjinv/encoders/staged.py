"""StagedEncoder: a frozen CNN as a chain of stages plus a head on the deepest map (docs/method.md §0)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import AdjinvError
from ..records import Record
from ..state import frozen, to_module

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class StageInfo(Record):
    """Static facts about one stage ``f_l`` (measured with a probe input); ``to_dict`` is
    the form checkpoint metadata records."""

    name: str
    channels: int
    reduction: int
    decimates: bool


class Stage(nn.Module):
    """One stage ``f_l``. The input is cloned so that an in-place activation at
    the stage boundary can neither corrupt the stored ``A_{l-1}`` nor break the
    per-stage VJP (docs/method.md §14)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.clone())


class LinearHead(nn.Module):
    """``z = W · norm(g) + b`` with ``g = GAP(A_L)``.

    ``norm`` is optional and may only be a LayerNorm over channels (ConvNeXt);
    for a fixed image it is affine in ``g``, so [`effective_weights()`][effective_weights] gives
    the exact per-image linear form ``z = W_eff g + b_eff`` used by Eq. 12.
    """

    def __init__(self, linear: nn.Linear, norm: nn.LayerNorm | None = None) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise AdjinvError(f"the head must end in nn.Linear, got {type(linear).__name__}")
        if norm is not None and not isinstance(norm, nn.LayerNorm):
            raise AdjinvError(
                f"only a LayerNorm may sit between GAP and the linear head, got "
                f"{type(norm).__name__}; pass head=LinearHead(linear) for a plain head"
            )
        self.linear = linear
        self.norm = norm

    @property
    def num_classes(self) -> int:
        """Number of logits K."""
        return self.linear.out_features

    def from_gap(self, g: torch.Tensor) -> torch.Tensor:
        """Logits from GAP features ``g`` of shape (B, C)."""
        if self.norm is not None:
            g = torch.nn.functional.layer_norm(
                g, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps
            )
        return self.linear(g)

    def forward(self, a_last: torch.Tensor) -> torch.Tensor:
        return self.from_gap(a_last.mean(dim=(-2, -1)))

    def effective_weights(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image ``(W_eff, b_eff)`` of shapes (B, K, C), (B, K) with
        ``z = W_eff g + b_eff`` exactly at this ``g``."""
        w, b = self.linear.weight, self.linear.bias
        bsz = g.shape[0]
        if b is None:
            b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        if self.norm is None:
            return w.expand(bsz, *w.shape), b.expand(bsz, *b.shape)
        # LN(g) = gamma*(g - m)/s + beta with the per-image m, s held fixed; the
        # mean subtraction is itself linear in g, so fold it into the weights.
        s = torch.sqrt(g.var(dim=1, unbiased=False) + self.norm.eps)  # (B,)
        gamma = self.norm.weight if self.norm.weight is not None else torch.ones_like(g[0])
        beta = self.norm.bias if self.norm.bias is not None else torch.zeros_like(g[0])
        wg = w * gamma  # (K, C)
        w_eff = (wg.unsqueeze(0) - wg.mean(dim=1, keepdim=True).unsqueeze(0)) / s[:, None, None]
        b_eff = (b + w @ beta).expand(bsz, -1)
        return w_eff, b_eff


class ModuleHead(nn.Module):
    """Any differentiable head ``z = h(A_L)`` on the deepest map: an MLP after pooling
    (VGG, MobileNetV3, AlexNet), a convolutional classifier (SqueezeNet), pooling done in
    the model's forward. Class-directional weights then come from the logit's gradient
    ([`adjinv.methods.class_directional.class_directional_weights()`][adjinv.methods.class_directional.class_directional_weights])."""

    module: nn.Module

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if isinstance(module, ModuleHead):
            module = module.module
        self.module = module
        self._num_classes: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of logits K (measured when the encoder is built)."""
        if self._num_classes is None:
            raise AdjinvError("the head has not been run yet: build a StagedEncoder with it first")
        return self._num_classes

    def forward(self, a_last: torch.Tensor) -> torch.Tensor:
        z = self.module(a_last)
        if not isinstance(z, torch.Tensor) or z.dim() != 2:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise AdjinvError(f"the head {type(self.module).__name__} returned {shape}, not logits "
                              "(B, K); pass head=<module mapping the deepest map to (B, K) logits>")
        self._num_classes = int(z.shape[1])
        return z


class StagedEncoder(nn.Module):
    """A frozen classifier as stages ``f_0 … f_L`` and a head on ``A_L``.

    Parameters
    ----------
    stages: the stage modules in order; ``stage_names`` names them.
    head: the linear head over GAP of the deepest stage ([`LinearHead`][LinearHead], or an
        ``nn.Linear``), or any differentiable head on the deepest map ([`ModuleHead`][ModuleHead],
        or any other module).
    mean, std: the input normalisation the weights expect (image in [0, 1]).
    name: registry name (stored in LAC checkpoints).
    categories: class names, if known.
    probe_size: side of the zero image used to measure channels and strides.

    The encoder never changes the modules' state permanently: every operation
    of adjinv runs inside [`frozen()`][frozen], which restores train/eval modes and
    ``requires_grad`` flags on exit, even after an error.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        stages: Sequence[nn.Module],
        head: LinearHead | ModuleHead | nn.Module,
        *,
        stage_names: Sequence[str] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        name: str = "custom",
        categories: Sequence[str] | None = None,
        probe_size: int = 128,
    ) -> None:
        super().__init__()
        if len(stages) == 0:
            raise AdjinvError("a staged encoder needs at least one stage")
        self.stages = nn.ModuleList(Stage(s) for s in stages)
        if isinstance(head, nn.Linear):
            head = LinearHead(head)
        elif not isinstance(head, LinearHead | ModuleHead):
            head = ModuleHead(head)
        self.head = head
        self.name = name
        self.categories = list(categories) if categories is not None else None
        names = list(stage_names) if stage_names is not None else [f"stage{i}" for i in range(len(stages))]
        if len(names) != len(stages):
            raise AdjinvError("stage_names must have one name per stage")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.infos = self._probe(names, probe_size)
        self.split_method = "given"  # how encoder_from_module found the stages, if it did
        # per stage, the module paths of the wrapped model whose output is the stage's
        # output (set by encoder_from_module); stage lookups accept them as names
        self.stage_aliases: list[tuple[str, ...]] = [() for _ in names]
        self._hash: tuple[tuple, str] | None = None

    # ------------------------------------------------------------------ layout
    def _probe(self, names: list[str], size: int) -> list[StageInfo]:
        x = to_module(torch.zeros(1, 3, size, size), self)
        infos = []
        with self.frozen(), torch.no_grad():
            for i, st in enumerate(self.stages):
                try:
                    y = st(x)
                except RuntimeError as e:
                    raise AdjinvError(
                        f"stage {names[i]!r} fails on the {size}x{size} probe image with input "
                        f"{tuple(x.shape)} ({str(e).splitlines()[0][:120]}); check the stage order, "
                        "or pass a larger probe_size"
                    ) from e
                if y.dim() != 4:
                    raise AdjinvError(
                        f"stage {names[i]!r} returned a {y.dim()}-D tensor; every stage must map "
                        "(B,C,H,W) to (B,C',H',W'). Pass an explicit list of stage modules."
                    )
                dec = y.shape[-1] < x.shape[-1] or y.shape[-2] < x.shape[-2]
                infos.append(StageInfo(names[i], int(y.shape[1]), max(1, size // int(y.shape[-1])), dec))
                x = y
            if isinstance(self.head, ModuleHead):
                try:
                    self.head(x)
                except AdjinvError:
                    raise
                except Exception as e:
                    raise AdjinvError(
                        f"the head {type(self.head.module).__name__} fails on the deepest map "
                        f"{tuple(x.shape)} ({type(e).__name__}: {str(e)[:120]}); the stages and "
                        "head do not belong together"
                    ) from e
        if isinstance(self.head, LinearHead) and infos[-1].channels != self.head.linear.in_features:
            raise AdjinvError(
                f"the deepest stage has {infos[-1].channels} channels but the head expects "
                f"{self.head.linear.in_features}: the stages and head do not belong together"
            )
        return infos

    @property
    def num_stages(self) -> int:
        """Number of stages L+1."""
        return len(self.stages)

    @property
    def total_stride(self) -> int:
        """Reduction of the deepest stage w.r.t. the input (smallest valid image side)."""
        return self.infos[-1].reduction

    @property
    def lac_boundaries(self) -> list[int]:
        """Stage indices ``k`` whose output gradient gets a LAC: stage ``k+1`` decimates
        (docs/method.md §3)."""
        return [k for k in range(self.num_stages - 1) if self.infos[k + 1].decimates]

    def layout(self) -> dict:
        """JSON-ready description used to match LAC checkpoints to encoders."""
        return {"name": self.name, "stages": [i.to_dict() for i in self.infos],
                "num_classes": self.head.num_classes}

    # ------------------------------------------------------------------ state
    def frozen(self) -> AbstractContextManager[StagedEncoder]:
        """Eval mode and no parameter gradients inside; the previous state outside."""
        return frozen(self)

    def weights_hash(self) -> str:
        """SHA-256 (first 16 hex digits) over every parameter and buffer of stages and head."""
        state = sorted(self.state_dict().items())
        # The modules are shared with the user's model, so the cache is keyed on
        # every tensor's storage and version counter: any in-place update or
        # load_state_dict invalidates it.
        key = tuple((k, v.data_ptr(), v._version) for k, v in state)
        if self._hash is None or self._hash[0] != key:
            h = hashlib.sha256()
            for k, v in state:
                h.update(k.encode())
                h.update(str(tuple(v.shape)).encode())
                h.update(v.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
            self._hash = (key, h.hexdigest()[:16])
        return self._hash[1]

    # ------------------------------------------------------------------ data
    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] → encoder input space."""
        return (img - self.mean.view(3, 1, 1).to(img)) / self.std.view(3, 1, 1).to(img)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder input space → image space (not clipped)."""
        return x * self.std.view(3, 1, 1).to(x) + self.mean.view(3, 1, 1).to(x)

    def to_display(self, x: torch.Tensor) -> torch.Tensor:
        """De-normalise and clip to [0, 1] (docs/method.md §4 display convention)."""
        return self.denormalize(x).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ forward
    def forward_stages(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """``[A_0, …, A_upto]`` for a normalised batch ``x`` (B,3,H,W)."""
        last = self.num_stages - 1 if upto is None else upto
        acts = []
        a = x
        for st in self.stages[: last + 1]:
            a = st(a)
            acts.append(a)
        return acts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.head(self.forward_stages(x)[-1])

    def class_name(self, k: int) -> str:
        """Human-readable name of class ``k`` (its index if names are unknown)."""
        if self.categories is not None and 0 <= k < len(self.categories):
            return self.categories[k]
        return str(k)
