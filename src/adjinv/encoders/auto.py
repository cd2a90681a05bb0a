"""``encoder_from_module``: split an arbitrary CNN where its resolution drops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import AdjinvError
from ..state import eval_mode
from .staged import IMAGENET_MEAN, IMAGENET_STD, LinearHead, StagedEncoder

_HEAD_PASSTHROUGH = (nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)


def _is_leaf(m: nn.Module) -> bool:
    return next(m.children(), None) is None


def _count_decimations(m: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    n = 0
    for c in m.children():
        y = c(x.clone())
        if y.dim() != 4:
            return n, y
        n += int(y.shape[-1] < x.shape[-1] or y.shape[-2] < x.shape[-2])
        x = y
    return n, x


def _trunk_and_head(model: nn.Module, probe: torch.Tensor) -> tuple[list[nn.Module], list[nn.Module]]:
    """Top-level children, with containers unrolled where they hold more than one
    decimation (``features``, RegNet's ``trunk_output``), cut at the first module
    that pools globally, flattens or is linear: trunk before, head modules after."""
    seq: list[nn.Module] = []
    todo = list(model.children())
    x = probe
    with torch.no_grad():
        while todo:
            m = todo.pop(0)
            if isinstance(m, _HEAD_PASSTHROUGH + (nn.Linear,)):
                return seq, [m, *todo]
            if isinstance(m, nn.Sequential) and not _is_leaf(m):
                n, _ = _count_decimations(m, x)
                if n > 1:
                    todo = list(m.children()) + todo
                    continue
            y = m(x.clone())
            if y.dim() != 4:
                return seq, [m, *todo]
            seq.append(m)
            x = y
    return seq, []


def _split_head(rest: list[nn.Module]) -> LinearHead:
    leaves = [s for m in rest for s in ([m] if _is_leaf(m) else m.modules()) if _is_leaf(s)]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    norms = [m for m in leaves if isinstance(m, nn.LayerNorm)]
    other = [m for m in leaves if not isinstance(m, _HEAD_PASSTHROUGH + (nn.Linear, nn.LayerNorm))]
    if len(linears) != 1 or len(norms) > 1 or other:
        found = ", ".join(type(m).__name__ for m in leaves) or "nothing"
        raise AdjinvError(
            "the classifier is not GAP -> [LayerNorm] -> Linear (found: " + found + "); adjinv "
            "inverts classifiers whose head is linear over global-average-pooled features "
            "(docs/method.md §0): pass stages=[…] and head=LinearHead(nn.Linear) for such a head"
        )
    return LinearHead(linears[0], norm=norms[0] if norms else None)


def _group_by_decimation(trunk: list[nn.Module], probe: torch.Tensor) -> list[list[nn.Module]]:
    """A new stage starts at every container child and at every decimating child;
    a leading run of leaf modules (conv, norm, act, pool) forms the stem."""
    has_containers = any(not _is_leaf(m) for m in trunk)
    first_container = next((i for i, m in enumerate(trunk) if not _is_leaf(m)), len(trunk))
    groups: list[list[nn.Module]] = []
    x = probe
    with torch.no_grad():
        for i, m in enumerate(trunk):
            y = m(x.clone())
            if y.dim() != 4:
                raise AdjinvError(
                    f"child {i} ({type(m).__name__}) of the trunk returned a {y.dim()}-D tensor; "
                    "cannot split automatically: pass stages=[module, …] explicitly"
                )
            dec = y.shape[-1] < x.shape[-1] or y.shape[-2] < x.shape[-2]
            in_stem = has_containers and i < first_container
            new = not groups or (not in_stem and (dec or not _is_leaf(m)))
            if new and not (in_stem and groups):
                groups.append([m])
            else:
                groups[-1].append(m)
            x = y
    return groups


def encoder_from_module(
    model: nn.Module,
    *,
    stages: Sequence[nn.Module] | None = None,
    head: LinearHead | nn.Linear | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    name: str | None = None,
    categories: Sequence[str] | None = None,
    probe_size: int = 224,
    check: bool = True,
) -> StagedEncoder:
    """Wrap a torchvision/timm-style CNN as a :class:`StagedEncoder`.

    Without ``stages``, the model's top-level children (``features`` unrolled)
    are run on a probe image and grouped so that a stage begins wherever the
    spatial resolution drops. The head must be ``GAP -> [LayerNorm] -> Linear``.
    With ``check`` the staged chain must reproduce ``model(x)`` on a probe
    image, otherwise a clear error asks for an explicit ``stages`` list.

    The modules are shared, not copied; the model's train/eval mode and
    ``requires_grad`` flags are restored after every adjinv call.
    """
    with eval_mode(model):
        p = next(iter(model.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
        probe = torch.randn(1, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
        dt = p.dtype if p is not None and p.is_floating_point() else torch.float32
        probe = probe.to(device=dev, dtype=dt)
        trunk, rest = _trunk_and_head(model, probe)
        if head is None:
            lin_head = _split_head(rest)
        else:
            lin_head = head if isinstance(head, LinearHead) else LinearHead(head)
        if stages is None:
            if not trunk:
                raise AdjinvError(
                    f"found no convolutional trunk in {type(model).__name__}; "
                    "pass stages=[module, …] explicitly"
                )
            groups = _group_by_decimation(trunk, probe)
            stage_mods: list[nn.Module] = [g[0] if len(g) == 1 else nn.Sequential(*g) for g in groups]
        else:
            stage_mods = list(stages)
        enc = StagedEncoder(stage_mods, lin_head, mean=mean, std=std,
                            name=name or type(model).__name__.lower(),
                            categories=categories, probe_size=min(probe_size, 128))
        if check:
            with torch.no_grad():
                ref = model(probe)
                got = enc(probe)
            if ref.shape != got.shape or not torch.allclose(ref, got, rtol=1e-3, atol=1e-4):
                raise AdjinvError(
                    f"the automatic split of {type(model).__name__} does not reproduce its output "
                    "(its forward does more than chain its children); pass stages=[module, …] "
                    "and head= explicitly"
                )
    return enc
