"""Matplotlib figures, saved atomically as PNG."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..io import atomic_write_bytes


def save_figure(fig: object, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Render a matplotlib figure to PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def image_row(path: str | os.PathLike, images: Sequence[torch.Tensor], titles: Sequence[str],
              heat: Sequence[torch.Tensor] | None = None) -> Path:
    """One row of (3, H, W) images in [0, 1], optionally a second row of (H, W) heatmaps."""
    plt = _plt()
    rows = 2 if heat is not None else 1
    n = len(images)
    fig, axes = plt.subplots(rows, n, figsize=(2.2 * n, 2.3 * rows), squeeze=False)
    for i, (img, t) in enumerate(zip(images, titles, strict=True)):
        axes[0, i].imshow(img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        axes[0, i].set_title(t, fontsize=8)
        if heat is not None:
            if heat[i] is not None:
                axes[1, i].imshow(heat[i].detach().float().cpu().numpy(), cmap="inferno")
            axes[1, i].set_title("energy" if heat[i] is not None else "", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    return save_figure(fig, path)


def token_mosaic(path: str | os.PathLike, energy: torch.Tensor, grid: tuple[int, int],
                 peaks: torch.Tensor, title: str) -> Path:
    """The ``h×w`` per-token energy maps (T, H, W) laid out on the token grid, each with
    its own cell outlined (cyan) and its energy peak (white ×)."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    h, w = grid
    _, hh, ww = energy.shape
    fig, axes = plt.subplots(h, w, figsize=(1.6 * w, 1.6 * h + 0.4), squeeze=False)
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
