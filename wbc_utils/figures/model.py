"""Figures that look inside one trained model (notebook 05, the report): saliency, filters, activations, errors.

Each function takes a :class:`~wbc_utils.runs.LoadedModel` and the images it
was scored on, prepared the way it was trained (:func:`wbc_utils.data.run_split`).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .. import CLASSES
from ..saliency import activations, first_layer_filters, grad_cam
from .common import A4_WIDTH, MIN_FONT, image_panel, run_title, style


def images_for(rows, split_data) -> np.ndarray:
    """The images of predictions.csv ``rows`` (matched on relpath) from a decoded split."""
    pos = {r: i for i, r in enumerate(split_data.frame["relpath"])}
    missing = [r for r in rows["relpath"] if r not in pos]
    if missing:
        raise KeyError(f"{len(missing)} image(s) not in the decoded {split_data.split} split, e.g. {missing[0]}")
    return np.asarray(split_data.images[[pos[r] for r in rows["relpath"]]])


def _overlay(ax, image, cam, title: str, color: str = "black"):
    ax.imshow(image)
    ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1, extent=(-0.5, image.shape[1] - 0.5,
                                                                  image.shape[0] - 0.5, -0.5))
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=MIN_FONT, color=color, pad=2)


def _named(run) -> str:
    """A model in words (its loss, encoding and seed), not its folder name."""
    return run_title(getattr(run, "params", None), getattr(run, "name", "the model"))


def gradcam_figure(run, rows, images, title: str | None = None, per_row: int = 4):
    """For each row (a predictions.csv row with ``correct``): the image and its Grad-CAM for the predicted class,
    ``per_row`` images (two panels each) a row, at A4 width."""
    style(grid=False)

    cams, scores = grad_cam(run.model, images)
    n = len(rows)
    cols = min(per_row, n) or 1
    nrows = -(-n // cols)
    h, w = np.asarray(images[0]).shape[:2] if n else (1, 1)
    panel = A4_WIDTH / (2 * cols)
    fig = plt.figure(figsize=(A4_WIDTH, nrows * (0.92 * panel * h / w + 0.4) + 0.45), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.03, wspace=0.02, hspace=0.02)
    grid = fig.add_gridspec(nrows, 2 * cols)
    for k in range(n):
        i, j = divmod(k, cols)
        a0, a1 = fig.add_subplot(grid[i, 2 * j]), fig.add_subplot(grid[i, 2 * j + 1])
        pred = CLASSES[int(np.argmax(scores[k]))]
        truth = rows.iloc[k]["class"]
        image_panel(a0, images[k], f"{truth.lower()}\ncell {rows.iloc[k]['cell']}")
        ok = pred == truth
        _overlay(a1, images[k], cams[k], f"read {pred.lower()}\n" + ("(right)" if ok else "(wrong)"),
                 "#1a7f37" if ok else "#c62828")
    fig.suptitle(title or f"Grad-CAM of {_named(run)}:\nwhere the evidence for the predicted class lies (red: most)")
    return fig


def filters_figure(run):
    """The first convolution's 3x3 RGB kernels, each scaled to its own range."""
    style(grid=False)

    k = first_layer_filters(run.model)
    cols = min(8, len(k))
    nrows = -(-len(k) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(A4_WIDTH * cols / 8, nrows * 1.0 + 0.5), squeeze=False,
                             layout="constrained")
    for idx, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if idx < len(k):
            ax.imshow(k[idx], interpolation="nearest")
            ax.set_title(str(idx), fontsize=MIN_FONT, pad=2)
        else:
            ax.set_visible(False)
    fig.suptitle(f"First-layer filters of {_named(run)}\n(3x3 RGB, each scaled to its range)")
    return fig


def activations_figure(run, image, channels: int = 6):
    """One image and the most active channels of each convolution block's output."""
    style(grid=False)

    acts = activations(run.model, image)
    side = A4_WIDTH / (channels + 1)
    fig, axes = plt.subplots(len(acts), channels + 1, figsize=(A4_WIDTH, len(acts) * (side * 0.7 + 0.4) + 0.5),
                             squeeze=False, layout="constrained")
    for i, (name, a) in enumerate(acts):
        axes[i][0].imshow(image), axes[i][0].set_ylabel(name, fontsize=MIN_FONT)
        order = np.argsort(a.reshape(-1, a.shape[-1]).mean(0))[::-1][:channels]
        for j, c in enumerate(order, 1):
            axes[i][j].imshow(a[..., c], cmap="viridis")
            axes[i][j].set_title(f"channel {c}", fontsize=MIN_FONT, pad=2)
        for ax in axes[i]:
            ax.set_xticks([]), ax.set_yticks([])
        for ax in axes[i][len(order) + 1:]:
            ax.set_visible(False)
        dead = float((a.reshape(-1, a.shape[-1]).max(0) <= 0).mean())
        axes[i][0].set_title(f"{a.shape[0]}x{a.shape[1]}x{a.shape[2]}\n{dead:.0%} silent", fontsize=MIN_FONT, pad=2)
    fig.suptitle(f"Activations of {_named(run)}: the {channels} most active channels per block")
    return fig


def wrong_gallery_figure(run, rows, images, per_row: int = 4):
    """The most confidently wrong images: true and predicted class, confidence, source cell; ``per_row`` a row at
    A4 width."""
    style(grid=False)

    n = len(rows)
    if n == 0:
        fig, ax = plt.subplots(figsize=(0.5 * A4_WIDTH, 0.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "no wrong predictions", ha="center", va="center")
        return fig
    cols = max(1, min(per_row, n))
    nrows = -(-n // cols)
    h, w = np.asarray(images[0]).shape[:2]
    side = A4_WIDTH / cols
    fig, axes = plt.subplots(nrows, cols, figsize=(A4_WIDTH, nrows * (0.92 * side * h / w + 0.4) + 0.45), squeeze=False,
                             layout="constrained")
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_visible(False)
            continue
        r = rows.iloc[k]
        image_panel(ax, images[k], f"{r['class'].lower()} read as {r['predicted'].lower()}\n"
                                   f"{r['confidence']:.0%} sure, cell {r['cell']}")
        ax.title.set_color("#c62828")
    fig.suptitle(f"Most confidently wrong TEST images of {_named(run)}\n(true class read as the predicted one, "
                 "its confidence; one per source cell)")
    return fig
