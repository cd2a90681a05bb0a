"""``encoder_from_module``: split an arbitrary CNN where its resolution drops."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from ..errors import AdjinvError
from ..state import eval_mode, to_module
from .graph import HEAD_NAMES, split_graph
from .staged import IMAGENET_MEAN, IMAGENET_STD, LinearHead, ModuleHead, StagedEncoder

logger = logging.getLogger(__name__)

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


def _first_leaf(m: nn.Module) -> nn.Module:
    """The first leaf of ``m`` that computes something (dropout and identity skipped)."""
    return next((s for s in m.modules() if _is_leaf(s) and not isinstance(s, nn.Dropout | nn.Identity)), m)


def _trunk_and_head(model: nn.Module, probe: torch.Tensor) -> tuple[list[nn.Module], list[nn.Module]]:
    """Top-level children, with containers unrolled where they hold more than one
    decimation (``features``, RegNet's ``trunk_output``), cut at the first module
    that pools globally, flattens, is linear, is a top-level child named like a
    classifier (``fc``, ``classifier``, ``head``, …) or fails on a 4-D map: trunk
    before, head modules after."""
    seq: list[nn.Module] = []
    todo = [(name in HEAD_NAMES, m) for name, m in model.named_children()]
    x = probe
    with torch.no_grad():
        while todo:
            named_head, m = todo.pop(0)
            rest = [m, *(t[1] for t in todo)]
            if named_head or isinstance(m, _HEAD_PASSTHROUGH + (nn.Linear,)):
                return seq, rest
            try:
                if isinstance(m, nn.Sequential) and not _is_leaf(m):
                    n, _ = _count_decimations(m, x)
                    if n > 1:
                        todo = [(False, c) for c in m.children()] + todo
                        continue
                y = m(x.clone())
            except RuntimeError:  # e.g. a Linear fed a 4-D map: the head starts here
                return seq, rest
            if not isinstance(y, torch.Tensor) or y.dim() != 4:
                return seq, rest
            seq.append(m)
            x = y
    return seq, []


def _split_head(rest: list[nn.Module], a_last: torch.Tensor, model: nn.Module) -> LinearHead | ModuleHead:
    """``GAP -> [LayerNorm] -> Linear`` as a [`LinearHead`][LinearHead]; any other chain of head
    modules as a [`ModuleHead`][ModuleHead] (a flatten added before its first linear layer and
    after a final 1x1 map, as ``forward`` methods do functionally)."""
    leaves = [s for m in rest for s in ([m] if _is_leaf(m) else m.modules()) if _is_leaf(s)]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    norms = [m for m in leaves if isinstance(m, nn.LayerNorm)]
    other = [m for m in leaves if not isinstance(m, _HEAD_PASSTHROUGH + (nn.Linear, nn.LayerNorm))]
    if len(linears) == 1 and len(norms) <= 1 and not other:
        return LinearHead(linears[0], norm=norms[0] if norms else None)
    if not rest:
        raise AdjinvError(
            f"found no classifier after the convolutional trunk of {type(model).__name__} (every "
            "child maps a 4-D map to a 4-D map); pass head=<module mapping the deepest map to "
            "(B, K) logits> and stages=[…]"
        )
    mods: list[nn.Module] = []
    flat = False
    for m in rest:
        flat = flat or isinstance(m, nn.Flatten)
        if not flat and isinstance(_first_leaf(m), nn.Linear):
            mods.append(nn.Flatten(1))
            flat = True
        mods.append(m)
    head = nn.Sequential(*mods)
    try:
        with torch.no_grad():
            z = head(a_last)
    except Exception as e:
        found = ", ".join(type(m).__name__ for m in rest)
        raise AdjinvError(
            f"the head of {type(model).__name__} ({found}) does not run on the deepest map "
            f"{tuple(a_last.shape)} ({type(e).__name__}); pass head=<module mapping the deepest "
            "map to (B, K) logits>"
        ) from e
    if z.dim() == 4 and z.shape[-2:] == (1, 1):
        head.append(nn.Flatten(1))
    return ModuleHead(head)


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


def _check_output(model: nn.Module, enc: StagedEncoder, probe: torch.Tensor) -> None:
    with torch.no_grad():
        ref = model(probe)
        got = enc(probe)
    atol = 1e-4 * max(1.0, float(ref.abs().max())) if isinstance(ref, torch.Tensor) else 0.0
    if not isinstance(ref, torch.Tensor) or ref.shape != got.shape or \
            not torch.allclose(ref, got, rtol=1e-3, atol=atol):
        raise AdjinvError(f"the split of {type(model).__name__} does not reproduce its output")


# A head with more operations than this is not a classifier on a convolutional trunk but
# the model's body (a transformer after a patch-embedding convolution): refused.
MAX_HEAD_OPS = 40


def _head_ops(head: nn.Module) -> tuple[int, bool]:
    """Operations in the head, and whether it computes on tokens (3-D tensors)."""
    if isinstance(head, LinearHead):
        return 1, False
    inner = head.module if isinstance(head, ModuleHead) else head
    if isinstance(inner, fx.GraphModule):
        nodes = [n for n in inner.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
        tokens = any(len(getattr(n.meta.get("tensor_meta"), "shape", ())) == 3 for n in nodes)
        return len(nodes), tokens
    return sum(1 for m in inner.modules() if _is_leaf(m)), False


def _check_layout(model: nn.Module, enc: StagedEncoder, probe: torch.Tensor) -> None:
    """Refuse splits whose maps are not (B, C, H, W) and heads that hold the model's body."""
    n_ops, tokens = _head_ops(enc.head)
    if n_ops > MAX_HEAD_OPS or tokens:
        what = "computes on tokens (3-D tensors)" if tokens else f"runs {n_ops} more operations"
        raise AdjinvError(
            f"after the deepest convolutional map of {type(model).__name__} ({enc.infos[-1].name}) "
            f"its head {what}: a transformer or other non-convolutional body, and adjinv would "
            "invert only the stages before it; pass stage_nodes=[…] (or stages= and head=) to "
            "accept such a split explicitly"
        )
    bigger = torch.nn.functional.interpolate(probe, scale_factor=1.5, mode="bilinear")
    with torch.no_grad():
        for info, a, b in zip(enc.infos, enc.forward_stages(probe), enc.forward_stages(bigger), strict=True):
            if a.shape[1] != b.shape[1]:
                raise AdjinvError(
                    f"stage {info.name} of {type(model).__name__} returns maps whose dimension 1 "
                    f"changes with the image size ({a.shape[1]} vs {b.shape[1]}): they are not "
                    "(B, C, H, W) (a channels-last token layout); pass stage_nodes=[…] ending at "
                    "(B, C, H, W) maps"
                )


def _timm_feature_modules(model: nn.Module) -> list[str] | None:
    """Module names of a timm model's ``feature_info`` (stage outputs), if it has one."""
    info = getattr(model, "feature_info", None)
    if not type(model).__module__.startswith("timm.") or not info:
        return None
    if hasattr(info, "module_name"):
        return list(info.module_name())
    names = [d.get("module") for d in info if isinstance(d, dict)]
    return [n for n in names if n] or None


def stage_aliases(model: nn.Module, enc: StagedEncoder, probe: torch.Tensor) -> list[tuple[str, ...]]:
    """Per stage of ``enc``, the ``named_modules()`` paths of ``model`` whose output on
    ``probe`` is that stage's output (``"layer4"``, ``"layer4.1"``, ``"features.7"``),
    shortest first: the names a user knows the stages by (as torch-cam's target layers)."""
    with torch.no_grad(), enc.frozen():
        outs = enc.forward_stages(probe)
    found: list[list[str]] = [[] for _ in outs]

    def hook(name: str) -> Callable[..., None]:
        def match(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                for i, a in enumerate(outs):
                    if a.shape == out.shape and torch.allclose(a, out, rtol=1e-4, atol=1e-5):
                        found[i].append(name)
        return match

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    return [tuple(sorted(dict.fromkeys(f), key=lambda n: (n.count("."), n))) for f in found]


def pretrained_normalization(model: nn.Module, transform: Any = None
                             ) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """The ``(mean, std, source)`` a model was trained with, where it says: a torchvision
    weights transform (``weights.transforms()``, with ``.mean``/``.std``) or a timm data
    config passed as ``transform``, else the model's own timm ``pretrained_cfg`` (or
    ``default_cfg``). ``None`` when nothing says."""
    cands: list[tuple[str, Any]] = [("the given transform", transform)]
    cands += [(f"model.{a}", getattr(model, a, None)) for a in ("pretrained_cfg", "default_cfg")]
    for source, c in cands:
        if c is None:
            continue
        mean = c.get("mean") if isinstance(c, dict) else getattr(c, "mean", None)
        std = c.get("std") if isinstance(c, dict) else getattr(c, "std", None)
        if mean is not None and std is not None and len(mean) == 3 and len(std) == 3:
            return tuple(float(v) for v in mean), tuple(float(v) for v in std), source
    return None


def default_categories(num_classes: int) -> list[str] | None:
    """ImageNet's class names for a 1000-way head (shipped inside torchvision), else None."""
    if num_classes != 1000:
        return None
    import torchvision  # a core dependency; imported here to keep this module light

    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def encoder_from_module(
    model: nn.Module,
    *,
    stages: Sequence[nn.Module] | None = None,
    head: LinearHead | ModuleHead | nn.Module | None = None,
    stage_nodes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    transform: Any = None,
    name: str | None = None,
    categories: Sequence[str] | None = None,
    probe_size: int = 224,
    check: bool = True,
) -> StagedEncoder:
    """Wrap a torchvision/timm-style CNN as a [`StagedEncoder`][StagedEncoder].

    Without ``stages``, three splits are tried in turn, each accepted only if the staged
    chain reproduces ``model(x)`` on a probe image (with ``check``):

    1. timm models: stages end at the modules of ``model.feature_info`` (the last one runs
       on to the end of ``forward_features``), cut from the FX graph;
    2. the model's top-level children (``features`` unrolled), run on a probe image and
       grouped so that a stage begins wherever the spatial resolution drops;
    3. the FX graph ([`adjinv.encoders.graph`][adjinv.encoders.graph]), cut before every drop of resolution,
       for models whose forward is not a chain of children.

    ``stage_nodes`` names the FX nodes (or modules) where stages end, the last one the
    deepest map (names as ``torchvision.models.feature_extraction.get_graph_node_names``
    lists them). The head may be ``GAP -> [LayerNorm] -> Linear`` (a [`LinearHead`][LinearHead])
    or any differentiable map of the deepest map to logits (a [`ModuleHead`][ModuleHead]: MLP or
    convolutional classifiers, pooling done in ``forward``). If no split works the error
    lists why each failed and what to pass.

    The normalisation (``normalize=True`` of [`adjinv.Inverter`][adjinv.Inverter]) is, in this order:
    ``mean``/``std`` if given; the one of ``transform`` (torchvision's
    ``weights.transforms()``, or a timm data config); the model's timm ``pretrained_cfg``;
    else ImageNet's (logged). Class names: ``categories``, else ImageNet's for a
    1000-way head. The encoder's ``stage_aliases`` hold, per stage, the model's module
    paths that end there, so stages answer to ``"layer4"`` or ``"features.7"``.

    The modules are shared, not copied; the model's train/eval mode and
    ``requires_grad`` flags are restored after every adjinv call.
    """
    if not isinstance(model, nn.Module):
        raise AdjinvError(f"encoder_from_module takes a torch nn.Module, got "
                          f"{type(model).__name__}; for a registry name use load_encoder(name)")
    if (mean is None) != (std is None):
        raise AdjinvError("pass mean= and std= together (or neither, to take them from the model)")
    if mean is None or std is None:
        found = pretrained_normalization(model, transform)
        if found is None:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            logger.info("%s carries no normalisation (timm pretrained_cfg or transform=); "
                        "using ImageNet's mean/std", type(model).__name__)
        else:
            mean, std, source = found
            logger.info("normalisation of %s from %s: mean=%s std=%s", type(model).__name__,
                        source, mean, std)
    with eval_mode(model):
        probe = torch.randn(1, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
        probe = to_module(probe, model)
        kw: dict[str, Any] = {"mean": mean, "std": std, "name": name or type(model).__name__.lower(),
              "categories": categories, "probe_size": min(probe_size, 128)}

        def build(stage_mods: Sequence[nn.Module], hd: nn.Module, names: list[str] | None,
                  how: str) -> StagedEncoder:
            enc = StagedEncoder(stage_mods, hd if head is None else head, stage_names=names, **kw)
            if check:
                _check_output(model, enc, probe)
            if stages is None and stage_nodes is None:
                _check_layout(model, enc, probe)
            enc.split_method = how
            if categories is None:
                enc.categories = default_categories(enc.head.num_classes)
            enc.stage_aliases = stage_aliases(model, enc, probe)
            return enc

        def by_children() -> StagedEncoder:
            trunk, rest = _trunk_and_head(model, probe)
            if stages is not None:
                stage_mods = list(stages)
            else:
                if not trunk:
                    raise AdjinvError(f"found no convolutional trunk in {type(model).__name__}")
                groups = _group_by_decimation(trunk, probe)
                stage_mods = [g[0] if len(g) == 1 else nn.Sequential(*g) for g in groups]
            hd = head
            if hd is None:
                with torch.no_grad():
                    a_last = probe
                    for m in stage_mods:
                        a_last = m(a_last.clone())
                hd = _split_head(rest, a_last, model)
            return build(stage_mods, hd, None, "given" if stages is not None else "children")

        def by_graph(feature_modules: Sequence[str] | None = None) -> StagedEncoder:
            sp = split_graph(model, probe, stage_nodes=stage_nodes, feature_modules=feature_modules)
            how = "fx nodes" if stage_nodes else "timm feature_info" if feature_modules else "fx graph"
            return build(sp.stages, sp.head, sp.names, how)

        if stage_nodes is not None:
            if stages is not None:
                raise AdjinvError("pass either stages=[module, …] or stage_nodes=[node name, …], not both")
            return _reraise(by_graph)
        if stages is not None:
            return _reraise(by_children)
        attempts = []
        timm_modules = _timm_feature_modules(model)
        if timm_modules:
            attempts.append(("timm feature_info", lambda: by_graph(timm_modules)))
        attempts += [("children", by_children), ("fx graph", by_graph)]
        errors = []
        for how, fn in attempts:
            try:
                return fn()
            except AdjinvError as e:
                errors.append(f"{how}: {e}")
            except Exception as e:  # a model that breaks one way may split another way
                errors.append(f"{how}: {type(e).__name__}: {str(e)[:160]}")
        raise AdjinvError(
            f"cannot split {type(model).__name__} into stages that reproduce its output ("
            + "; ".join(errors) + "); pass stages=[module, …] and head=<module mapping the deepest "
            "map to (B, K) logits>, or stage_nodes=[FX node names, see "
            "torchvision.models.feature_extraction.get_graph_node_names]"
        )


def _reraise(fn: Callable[[], StagedEncoder]) -> StagedEncoder:
    """``fn()``, with a failure of the user's explicit split as an AdjinvError naming the fix."""
    try:
        return fn()
    except AdjinvError as e:
        raise AdjinvError(f"{e}; check stages=/stage_nodes= and head=") from e
    except Exception as e:
        raise AdjinvError(f"the given split fails ({type(e).__name__}: {str(e)[:200]}); check "
                          "stages=/stage_nodes= and head=") from e
