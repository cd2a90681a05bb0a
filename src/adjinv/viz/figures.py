"""Matplotlib figures, built with the object-oriented API and saved atomically as PNG.

No pyplot state and no ``matplotlib.use``: a figure made here never appears in (or
changes the backend of) a notebook's inline plots.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._optional import require
from ..fileio import atomic_write_bytes


def subplots(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    """``pyplot.subplots`` without pyplot: a ``Figure`` on its own Agg canvas and its axes.

    Args:
        nrows: rows of axes.
        ncols: columns of axes.
        **kw: ``figsize``/``dpi`` go to the figure, the rest (``squeeze``, ``sharex``, …)
            to ``Figure.subplots``.

    Returns:
        ``(figure, axes)`` as ``pyplot.subplots`` returns them.
    """
    require("matplotlib", "drawing figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=kw.pop("figsize", None), dpi=kw.pop("dpi", None))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Render a matplotlib figure to PNG atomically (a pyplot figure is also closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if "matplotlib.pyplot" in sys.modules:  # a figure from pyplot would stay open otherwise
        sys.modules["matplotlib.pyplot"].close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def image_row(path: str | os.PathLike, images: Sequence[torch.Tensor], titles: Sequence[str],
              heat: Sequence[torch.Tensor | None] | None = None) -> Path:
    """One row of (3, H, W) images in [0, 1], optionally a second row of (H, W) heatmaps."""
    rows = 2 if heat is not None else 1
    n = len(images)
    fig, axes = subplots(rows, n, figsize=(2.2 * n, 2.3 * rows), squeeze=False)
    for i, (img, t) in enumerate(zip(images, titles, strict=True)):
        axes[0, i].imshow(img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        axes[0, i].set_title(t, fontsize=8)
        if heat is not None:
            h = heat[i]
            if h is not None:
                axes[1, i].imshow(h.detach().float().cpu().numpy(), cmap="inferno")
            axes[1, i].set_title("energy" if h is not None else "", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    return save_figure(fig, path)


def token_mosaic(path: str | os.PathLike, energy: torch.Tensor, grid: tuple[int, int],
                 peaks: torch.Tensor, title: str) -> Path:
    """The ``h×w`` per-token energy maps (T, H, W) laid out on the token grid, each with
    its own cell outlined (cyan) and its energy peak (white ×)."""
    from matplotlib.patches import Rectangle

    h, w = grid
    _, hh, ww = energy.shape
    fig, axes = subplots(h, w, figsize=(1.6 * w, 1.6 * h + 0.4), squeeze=False)
    for t in range(h * w):
        i, j = divmod(t, w)
        ax = axes[i, j]
        ax.imshow(energy[t].detach().float().cpu().numpy(), cmap="inferno")
        ax.add_patch(Rectangle((j * ww / w - 0.5, i * hh / h - 0.5), ww / w, hh / h, fill=False,
                               edgecolor="cyan", linewidth=1))
        ax.plot([float(peaks[t, 1])], [float(peaks[t, 0])], "x", color="white", markersize=5)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
