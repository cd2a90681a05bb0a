"""Tensors → displayable images in [0, 1] (the mappings live in
[`adjinv.core.display`][adjinv.core.display], so that results can display themselves)."""

from ..core.display import centred_display, robust_minmax

__all__ = ["centred_display", "robust_minmax"]
