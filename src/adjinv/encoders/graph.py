"""Stages cut from a model's FX graph, for models whose forward is not a chain of children.

The model is traced with ``torch.fx`` (node names as
``torchvision.models.feature_extraction.get_graph_node_names`` prints them), the
graph is run once on a probe image, and a node is a *cut* when it is the only value
that later nodes read from earlier ones. Stages end at cuts: where the user names
them (``stage_nodes``), at the modules of timm's ``feature_info`` (``feature_modules``),
or just before every drop of resolution. The deepest map ``A_L`` is the last
four-dimensional cut before the classifier (global pooling is left to the head); the
head is the rest of the graph, any differentiable function of ``A_L``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import AdjinvError

# Top-level module names that begin a classifier head (torchvision and timm conventions).
HEAD_NAMES = ("fc", "classifier", "head", "heads", "last_linear", "global_pool", "avgpool",
              "head_drop", "pre_logits")
_POOL_FUNCTIONS = ("adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "max_pool2d",
                   "mean", "amax", "flatten")


@dataclass
class GraphSplit:
    """Stage modules (``GraphModule`` s sharing the model's layers), their names (the FX
    node each ends at) and the head, a module from ``A_L`` to the logits."""

    stages: list[nn.Module]
    names: list[str]
    head: nn.Module


def _timm_tracer_args() -> dict:
    """timm's own leaf modules and functions FX must not trace into, if timm is installed."""
    try:
        from timm.layers import _fx
    except ImportError:  # timm is optional
        return {}
    return {"leaf_modules": list(getattr(_fx, "_leaf_modules", ())),
            "autowrap_functions": tuple(getattr(_fx, "_autowrap_functions", ()))}


def trace(model: nn.Module) -> tuple[fx.Graph, dict[fx.Node, str]]:
    """The model's graph (eval-mode branches) and each node's qualified name."""
    from torchvision.models.feature_extraction import NodePathTracer  # 1.5 s: only when tracing

    tracer = NodePathTracer(**_timm_tracer_args())
    try:
        graph = tracer.trace(model)
    except Exception as e:  # data-dependent control flow, unsupported Python
        raise AdjinvError(
            f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: {str(e)[:160]}); "
            "pass stages=[module, …] and head=<module mapping the deepest map to logits>"
        ) from e
    return graph, dict(tracer.node_to_qualname)


def _spatial(node: fx.Node) -> tuple[int, int] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    if shape is None or len(shape) != 4:
        return None
    return int(shape[-2]), int(shape[-1])


def _cuts(nodes: list[fx.Node]) -> list[int]:
    """Positions ``i`` where node ``i`` is the only value read after ``i`` (attribute
    fetches are copied into each piece) and is a 4-D tensor."""
    pos = {n: i for i, n in enumerate(nodes)}
    last_use = {}
    for n in nodes:
        if n.op == "get_attr":
            continue
        last_use[n] = max((pos[u] for u in n.users), default=pos[n])
    ends_at: dict[int, int] = {}
    for n, lu in last_use.items():
        if lu > pos[n]:
            ends_at[lu] = ends_at.get(lu, 0) + 1
    live = 0
    out = []
    for i, n in enumerate(nodes):
        alive = n in last_use and last_use[n] > i
        live += int(alive) - ends_at.get(i, 0)
        if live == 1 and alive and _spatial(n) is not None:
            out.append(i)
    return out


def _is_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return "pool" in type(modules[str(node.target)]).__name__.lower()
    name = getattr(node.target, "__name__", str(node.target))
    return any(p in name for p in _POOL_FUNCTIONS)


def _resolve(name: str, nodes: list[fx.Node], names: dict[fx.Node, str]) -> int:
    """Position of the node called ``name``, or of the last node inside module ``name``."""
    exact = [i for i, n in enumerate(nodes) if names.get(n) == name]
    if exact:
        return exact[-1]
    inside = [i for i, n in enumerate(nodes) if names.get(n, "").startswith(name + ".")]
    if inside:
        return inside[-1]
    raise AdjinvError(f"no FX node or module named {name!r}; list the names with "
                      "torchvision.models.feature_extraction.get_graph_node_names(model)")


def _piece(root: nn.Module, nodes: list[fx.Node], start: fx.Node, stop: int, begin: int,
           graph_out: bool) -> fx.GraphModule:
    """A GraphModule computing nodes ``begin..stop`` from the value of ``start``."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {start: g.placeholder("x")}

    def arg(n: fx.Node) -> fx.Node:
        if n not in env:
            if n.op != "get_attr":
                raise AdjinvError(f"internal: node {n.name} read across a cut")
            env[n] = g.node_copy(n)
        return env[n]

    last = None
    for n in nodes[begin: stop + 1]:
        if n.op == "output":
            g.output(fx.node.map_arg(n.args[0], arg))
            last = None
            break
        if n.op == "get_attr":
            continue
        env[n] = last = g.node_copy(n, arg)
    if not graph_out:
        g.output(last)
    g.lint()
    return fx.GraphModule(root, g, class_name="Stage")


def split_graph(model: nn.Module, probe: torch.Tensor, *, stage_nodes: Sequence[str] | None = None,
                feature_modules: Sequence[str] | None = None) -> GraphSplit:
    """Cut ``model`` (in eval mode) into stages and a head; see the module docstring.

    ``stage_nodes``: FX node (or module) names where stages end, the last one ``A_L``;
    ``feature_modules``: module names ending stages (timm's ``feature_info``), the last
    stage then runs on to ``A_L``.
    """
    graph, names = trace(model)
    gm = fx.GraphModule(model, graph)
    with torch.no_grad():
        try:
            ShapeProp(gm).propagate(probe)
        except Exception as e:
            first = (str(e.__cause__ or e).strip().splitlines() or [""])[-1][:160]
            raise AdjinvError(f"the traced graph of {type(model).__name__} does not run on a "
                              f"{tuple(probe.shape)} probe ({first}); pass stages=[…] and head=") from e
    nodes = list(graph.nodes)
    if sum(n.op == "placeholder" for n in nodes) != 1:
        raise AdjinvError(f"{type(model).__name__}.forward takes more than one input; pass stages=[…]")
    modules = dict(model.named_modules())
    cuts = _cuts(nodes)
    if not cuts:
        raise AdjinvError(f"{type(model).__name__} has no single 4-D map that all later layers "
                          "read (no cut in its graph); pass stages=[…] and head=")

    def describe(i: int) -> str:
        return names.get(nodes[i], nodes[i].name)

    if stage_nodes:
        ends = [_resolve(s, nodes, names) for s in stage_nodes]
        for s, i in zip(stage_nodes, ends, strict=True):
            if i not in cuts:
                raise AdjinvError(f"stage end {s!r} is not a cut of the graph: later layers also "
                                  "read earlier values (a skip connection crosses it), or it is "
                                  "not a 4-D map; choose a node between blocks")
        if ends != sorted(ends) or len(set(ends)) != len(ends):
            raise AdjinvError(f"stage_nodes must follow the forward order: {list(stage_nodes)}")
        a_last = ends[-1]
    else:
        a_last = _deepest(nodes, names, cuts, modules, model)
        if feature_modules:
            ends = sorted({_resolve(m, nodes, names) for m in feature_modules})
            bad = [describe(i) for i in ends if i not in cuts]
            if bad:
                raise AdjinvError(f"feature_info modules {bad} are not cuts of the graph")
            ends = [i for i in ends if i < a_last]
            if ends and _spatial(nodes[ends[-1]]) == _spatial(nodes[a_last]):
                ends.pop()  # layers after the last feature (a final 1x1 conv) join its stage
            ends.append(a_last)
        else:
            ends = _by_resolution(nodes, [c for c in cuts if c <= a_last])
    stages: list[nn.Module] = []
    for start, end in zip([0, *ends[:-1]], ends, strict=True):
        stages.append(_piece(model, nodes, nodes[start], end, start + 1, graph_out=False))
    head = _piece(model, nodes, nodes[a_last], len(nodes) - 1, a_last + 1, graph_out=True)
    return GraphSplit(stages, [describe(i) for i in ends], head)


def _deepest(nodes: list[fx.Node], names: dict[fx.Node, str], cuts: list[int],
             modules: dict[str, nn.Module], model: nn.Module) -> int:
    """Position of ``A_L``: the last 4-D cut before the classifier, global pooling excluded."""
    head_at = next((i for i, n in enumerate(nodes)
                    if names.get(n, "").split(".")[0] in HEAD_NAMES
                    or len(getattr(n.meta.get("tensor_meta"), "shape", ())) == 2),
                   len(nodes) - 1)
    cands = [c for c in cuts if c < head_at]
    while len(cands) > 1 and _is_pool(nodes[cands[-1]], modules) and _spatial(nodes[cands[-1]]) == (1, 1):
        cands.pop()
    if not cands or cands[-1] == 0:
        raise AdjinvError(f"found no convolutional trunk before the classifier of {type(model).__name__}; "
                          "pass stages=[…] and head=")
    return cands[-1]


def _by_resolution(nodes: list[fx.Node], cuts: list[int]) -> list[int]:
    """Stage ends: the cut before every drop of resolution but the first, and ``A_L``."""
    ends = []
    prev = 0
    seen_drop = False
    for c in cuts[1:] if cuts and cuts[0] == 0 else cuts:
        before, after = _spatial(nodes[prev]), _spatial(nodes[c])
        drop = before is not None and after is not None and (after[0] < before[0] or after[1] < before[1])
        if drop:
            if seen_drop and prev != 0:
                ends.append(prev)
            seen_drop = True
        prev = c
    ends.append(cuts[-1])
    return sorted(set(ends))
