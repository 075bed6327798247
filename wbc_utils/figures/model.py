"""Figures that look inside one trained model (notebook 05, the report): saliency, filters, activations, errors.

Each function takes a :class:`~wbc_utils.runs.LoadedModel` and the images it
was scored on, prepared the way it was trained (:func:`wbc_utils.data.run_split`).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .. import CLASSES
from ..saliency import activations, first_layer_filters, grad_cam
from .common import style


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
    ax.set_title(title, fontsize=8, color=color)


def gradcam_figure(run, rows, images, title: str | None = None, per_row: int = 4):
    """For each row (a predictions.csv row with ``correct``): the image and its Grad-CAM for the predicted class."""
    style()


    cams, scores = grad_cam(run.model, images)
    n = len(rows)
    cols = min(per_row, n) or 1
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols * 2, figsize=(cols * 3.0, nrows * 1.75), squeeze=False)
    for k in range(n):
        i, j = divmod(k, cols)
        a0, a1 = axes[i][2 * j], axes[i][2 * j + 1]
        a0.imshow(images[k]), a0.set_xticks([]), a0.set_yticks([])
        pred = CLASSES[int(np.argmax(scores[k]))]
        truth = rows.iloc[k]["class"]
        a0.set_title(f"{truth[:3]}, cell {rows.iloc[k]['cell']}", fontsize=8)
        ok = pred == truth
        _overlay(a1, images[k], cams[k], f"saw {pred}" + ("" if ok else " (wrong)"),
                 "#1a7f37" if ok else "#c62828")
    for k in range(n, nrows * cols):
        i, j = divmod(k, cols)
        axes[i][2 * j].axis("off"), axes[i][2 * j + 1].axis("off")
    fig.suptitle(title or f"Grad-CAM of {run.name}: where the evidence for the predicted class lies "
                 "(red: most)", fontsize=9)
    fig.tight_layout()
    return fig


def filters_figure(run):
    """The first convolution's 3x3 RGB kernels, each scaled to its own range."""
    style()


    k = first_layer_filters(run.model)
    cols = min(8, len(k))
    nrows = -(-len(k) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 0.9, nrows * 0.95), squeeze=False)
    for idx, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if idx < len(k):
            ax.imshow(k[idx], interpolation="nearest")
            ax.set_title(str(idx), fontsize=6)
        else:
            ax.axis("off")
    fig.suptitle(f"First-layer filters of {run.name} (3x3 RGB, each scaled to its range)", fontsize=9)
    fig.tight_layout()
    return fig


def activations_figure(run, image, channels: int = 6):
    """One image and the most active channels of each convolution block's output."""
    style()


    acts = activations(run.model, image)
    fig, axes = plt.subplots(len(acts), channels + 1, figsize=((channels + 1) * 1.2, len(acts) * 1.25),
                             squeeze=False)
    for i, (name, a) in enumerate(acts):
        axes[i][0].imshow(image), axes[i][0].set_ylabel(name, fontsize=7)
        order = np.argsort(a.reshape(-1, a.shape[-1]).mean(0))[::-1][:channels]
        for j, c in enumerate(order, 1):
            axes[i][j].imshow(a[..., c], cmap="viridis")
            axes[i][j].set_title(f"ch {c}", fontsize=6)
        for ax in axes[i]:
            ax.set_xticks([]), ax.set_yticks([])
        dead = float((a.reshape(-1, a.shape[-1]).max(0) <= 0).mean())
        axes[i][0].set_title(f"{a.shape[0]}x{a.shape[1]}x{a.shape[2]}, {dead:.0%} silent", fontsize=6)
    fig.suptitle(f"Activations of {run.name}: the {channels} most active channels per block", fontsize=9)
    fig.tight_layout()
    return fig


def wrong_gallery_figure(run, rows, images):
    """The most confidently wrong images: true and predicted class, confidence, source cell."""
    style()

    n = len(rows)
    if n == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no wrong predictions", ha="center", va="center")
        return fig
    cols = min(6, n)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.9, nrows * 2.05), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        r = rows.iloc[k]
        ax.imshow(images[k])
        ax.set_title(f"{r['class'][:3]} -> {r['predicted'][:3]} {r['confidence']:.0%}\ncell {r['cell']}",
                     fontsize=7, color="#c62828")
    fig.suptitle(f"Most confidently wrong TEST images of {run.name} (true -> predicted, confidence; "
                 "one per source cell)", fontsize=9)
    fig.tight_layout()
    return fig
