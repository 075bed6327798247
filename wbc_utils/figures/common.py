"""What every figure shares: the theme, saving as PNG and SVG, and image panels. (A loss's colour is its
``LossSpec.colour``, :mod:`wbc_utils.registry`.)"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ..artifacts import atomic_path

#: Width of a figure that fills an A4 page between margins (inches).
A4_WIDTH = 7.2


def style(grid: bool = True) -> None:
    """The seaborn theme every figure uses (no grid for image panels)."""
    if grid:
        sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)
    else:
        sns.set_theme(style="white")


def save(fig, name: str, out_dir: Path) -> list[Path]:
    """``<out_dir>/<name>.png`` and ``.svg``, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches="tight", format=ext)
        paths.append(p)
    return paths


def save_all(figs: dict, out_dir: Path) -> dict:
    """Save every figure of ``figs`` ({name: Figure}) and close it."""
    for name, fig in figs.items():
        save(fig, name, out_dir)
        plt.close(fig)
    return figs


def image_panel(ax, img: np.ndarray, title: str, fontsize: float = 7) -> None:
    """An image without ticks, with a small title."""
    ax.imshow(img)
    ax.set_title(title, fontsize=fontsize, pad=2)
    ax.set_xticks([])
    ax.set_yticks([])
