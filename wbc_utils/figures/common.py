"""What every figure shares: the theme, saving as PNG and SVG, image panels, and the check that a figure is legible
on the page. (A loss's colour is its ``LossSpec.colour``, :mod:`wbc_utils.registry`.)

Every figure is drawn at the size it is shown in the report (:data:`A4_WIDTH` times the share of the text width it
is given), so that its font sizes are its sizes on paper: none under :data:`MIN_FONT`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from .. import registry
from ..artifacts import atomic_path
from ..errors import ParameterError
from ..registry import ENCODING_WORDS

#: Width of a figure that fills an A4 page between margins (inches).
A4_WIDTH = 7.2

#: The smallest font size (pt) of any text once a figure is shown at its width on the page.
MIN_FONT = 8.0

#: The theme's font sizes (pt), at print size: ticks and legends at the minimum, labels and titles above it.
FONTS = {"font.size": 8.5, "axes.labelsize": 8.5, "axes.titlesize": 9.0, "xtick.labelsize": 8.0,
         "ytick.labelsize": 8.0, "legend.fontsize": 8.0, "legend.title_fontsize": 8.5, "figure.titlesize": 9.5}


def style(grid: bool = True) -> None:
    """The seaborn theme every figure uses (no grid for image panels), its fonts sized for print."""
    sns.set_theme(context="paper", style="whitegrid" if grid else "white", rc=FONTS)


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


def image_panel(ax, img: np.ndarray, title: str, fontsize: float = MIN_FONT) -> None:
    """An image without ticks, with a small title."""
    ax.imshow(img)
    ax.set_title(title, fontsize=fontsize, pad=2)
    ax.set_xticks([])
    ax.set_yticks([])


def epoch_axis(ax, epochs: int | None = None, label: str = "epoch") -> None:
    """An x axis of whole epochs (1 ... ``epochs`` when given)."""
    ax.set_xlabel(label)
    if epochs:
        ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def run_title(params: dict | None, fallback: str = "") -> str:
    """A run in words from its parameters: 'Sparse categorical cross-entropy, integer labels, seed 0' (never its
    folder name, unless its parameters do not say what it trained)."""
    params = params or {}
    loss, enc = params.get("loss"), params.get("target_encoding")
    try:
        parts = [registry.get(loss).title] if loss else []
    except ParameterError:  # a loss this version does not know: its name as given
        parts = [str(loss)]
    if enc in ENCODING_WORDS:
        parts.append(ENCODING_WORDS[enc])
    if params.get("seed") is not None and parts:
        parts.append(f"seed {params['seed']}")
    return ", ".join(parts) if parts else fallback


def text_width(text: str, size: float) -> float:
    """The width (inches) of one line of ``text`` at ``size`` pt in the theme's font."""
    w, _, _ = RendererAgg(10, 10, 720).get_text_width_height_descent(text, FontProperties(size=size), ismath=False)
    return w / 720


def fit_lines(parts: list[str], width: float, size: float) -> str:
    """``parts`` joined by ", ", a new line started wherever the next part would make a line wider than ``width``
    inches at ``size`` pt (a title that stays over its panel)."""
    lines: list[str] = []
    for part in parts:
        if lines and text_width(f"{lines[-1]}, {part}", size) <= width:
            lines[-1] = f"{lines[-1]}, {part}"
        else:
            lines.append(part)
    return ",\n".join(lines)


def print_scale(fig, width: float = 1.0) -> float:
    """How much ``fig`` is scaled when saved with ``bbox_inches="tight"`` and shown at ``width`` (a share of
    :data:`A4_WIDTH`): 1 when drawn at its printed size."""
    fig.canvas.draw()
    return A4_WIDTH * width / fig.get_tightbbox(fig.canvas.get_renderer()).width


def print_font_sizes(fig, width: float = 1.0) -> dict[str, float]:
    """Each visible text of ``fig`` (its first 40 characters) and its size in pt on paper at ``width``."""
    scale = print_scale(fig, width)
    out: dict[str, float] = {}
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and (t.axes is None or t.axes.get_visible()):
            key = t.get_text().strip()[:40]
            out[key] = min(out.get(key, np.inf), t.get_fontsize() * scale)
    return out
