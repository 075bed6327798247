"""The final model's figures (report section 6, the ``best`` profile): the lab's curves, calibration,
accuracy against coverage, confusions by image and by cell, and the cells it gets wrong.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from PIL import Image

from .. import CLASSES, NATIVE_SIZE
from ..beyond import lab_and_final, lab_runs
from ..cellcrop import crop_cell
from ..config import figures_dir
from ..data import build_manifest, decode_image
from ..evaluation import calibration
from ..params import cell_window
from .common import save_all, style


def reliability_figure(probs_list, labels, cells=None, bins: int = 10,
                       title: str = "Reliability on TEST's unseen cells"):
    """Top: confidence against accuracy per bin, one line per seed, with each seed's ECE and its interval
    (resampling cells). Bottom: how many images fall in each bin (all seeds together)."""
    style()


    fig, (ax, axc) = plt.subplots(2, 1, figsize=(4.6, 4.8), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfect calibration")
    counts = np.zeros(bins)
    edges = np.linspace(0, 1, bins + 1)
    for i, probs in enumerate(probs_list):
        cal = calibration(probs, labels, cells, bins)
        x = [b["confidence"] for b in cal["bins"]]
        y = [b["accuracy"] for b in cal["bins"]]
        lo, hi = cal["ece_ci"]
        ax.plot(x, y, marker="o", ms=3, lw=1.2,
                label=f"seed {i}: ECE {100 * cal['ece']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
        for b in cal["bins"]:
            counts[int(round(b["lo"] * bins))] += b["n"]
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.2, 1.01), ax.set_ylim(0, 1.01)
    ax.legend(fontsize=6.5, loc="upper left")
    ax.set_title(title, fontsize=9)
    axc.bar(edges[:-1] + 0.05, counts, width=0.09, color="#7f7f7f")
    for x_, n in zip(edges[:-1] + 0.05, counts):
        if n:
            axc.text(x_, n, f"{int(n)}", ha="center", va="bottom", fontsize=6)
    axc.set_ylabel("images", fontsize=8)
    axc.set_xlabel("confidence (probability of the predicted class)")
    axc.set_ylim(0, counts.max() * 1.3 if counts.max() else 1)
    fig.tight_layout()
    return fig


def risk_coverage_figure(curves):
    """Cell-level accuracy on the cells kept against the share of cells kept (most confident first), one line
    per seed; the dashed lines are what setting cells aside at random would keep (each seed's accuracy)."""
    style()

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for seed, g in curves.groupby("seed"):
        line, = ax.plot(100 * g["coverage"], 100 * g["accuracy"], lw=1.4, label=f"seed {seed}")
        ax.axhline(100 * g["random_baseline"].iloc[0], color=line.get_color(), ls="--", lw=0.9)
    ax.plot([], [], color="black", ls="--", lw=0.9, label="random abstention")
    ax.set_xlabel("cells kept (%), least confident set aside first")
    ax.set_ylabel("accuracy on the kept cells (%)")
    ax.set_xlim(101, 0)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def confusion_pair_figure(image_cm, cell_cm, seeds: int):
    """Image-level and cell-level (one vote per cell) confusion matrices on TEST's unseen cells, summed over
    seeds: colour = the row's share (each true class's row sums to 1), number = the count."""
    style()

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.9))
    short = [c[:3] for c in CLASSES]
    for ax, cm, what in ((axes[0], image_cm, "images"), (axes[1], cell_cm, "cells (one vote per cell)")):
        cm = np.asarray(cm)
        rate = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        sns.heatmap(rate, annot=cm, fmt="d", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                    xticklabels=short, yticklabels=short, annot_kws={"fontsize": 8})
        ax.set_xlabel("predicted"), ax.set_ylabel("true")
        ax.set_title(f"{what}, {seeds} seed(s) summed", fontsize=9)
    fig.tight_layout()
    return fig


def wrong_cells_figure(wrong, manifest, input_size=(64, 64), view: str = "cell"):
    """Each misread TEST cell: its un-augmented TEST_SIMPLE image and the model's input made from it."""
    style()


    rows = wrong[wrong["simple_relpath"] != ""] if len(wrong) and "simple_relpath" in wrong else wrong.iloc[:0]
    n = len(rows)
    if n == 0:
        fig, ax = plt.subplots(figsize=(4, 0.8))
        ax.axis("off")
        ax.text(0.5, 0.5, "every TEST cell is read right by every seed", ha="center", va="center", fontsize=9)
        return fig
    paths = dict(zip(manifest.frame["relpath"], manifest.frame["path"]))
    cols = min(3, n)  # three pairs a row: readable at print size
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols * 2, figsize=(cols * 3.2, nrows * 1.9), squeeze=False)
    for k in range(nrows * cols):
        i, j = divmod(k, cols)
        a0, a1 = axes[i][2 * j], axes[i][2 * j + 1]
        for ax in (a0, a1):
            ax.set_xticks([]), ax.set_yticks([])
        if k >= n:
            a0.axis("off"), a1.axis("off")
            continue
        r = rows.iloc[k]
        field = decode_image(paths[r["simple_relpath"]], NATIVE_SIZE)  # the guarded reader, as the model read it
        if isinstance(field, str):
            field = np.full((*NATIVE_SIZE, 3), 200, np.uint8)  # a grey placeholder for a file that cannot be read
        a0.imshow(field)
        a0.set_title(f"cell {r['cell']} ({r['class'][:3]})" + (", also in TRAIN" if r.get("shared") else ""),
                     fontsize=8)
        if view != "full":
            a1.imshow(crop_cell(field, input_size, cell_window(view)))
        else:
            a1.imshow(np.asarray(Image.fromarray(field).resize((input_size[1], input_size[0]), Image.BILINEAR)))
        a1.set_title(f"read {r['voted'][:24]}\n{r['seeds_wrong']}/{r['seeds']} seeds", fontsize=8, color="#c62828")
    fig.suptitle("TEST cells the final models still misread (on the un-augmented TEST_SIMPLE image, or by the "
                 "vote of the cell's TEST images): the image and the model's input", fontsize=9)
    fig.tight_layout()
    return fig


def lab_curves_figure(summary, histories):
    """Each lab candidate's accuracy per epoch, the mean over its folds with their range shaded: on the training
    images (augmented) and on the held-out TRAIN cells."""
    style()
    runs = lab_runs(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for _, g in runs.groupby("key", sort=False):
        hs = [histories[n] for n in g["run_name"] if n in histories]
        if not hs:
            continue
        epochs = min(len(h) for h in hs)
        label = f"{g['design'].iloc[0]} ({len(hs)} folds)"
        for ax, col in zip(axes, ("accuracy", "val_accuracy")):
            v = np.stack([h[col].to_numpy(float)[:epochs] for h in hs])
            x = np.arange(1, epochs + 1)
            line, = ax.plot(x, v.mean(0), marker="o", ms=3, label=label)
            ax.fill_between(x, v.min(0), v.max(0), color=line.get_color(), alpha=0.15, lw=0)
    axes[0].set_title("training accuracy (augmented images)", fontsize=9)
    axes[1].set_title("validation accuracy (the held-out fold's TRAIN cells)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("accuracy (mean over folds; shaded: their range)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def build_beyond(profile: str, runs_root=None, out_dir=None, data_dir=None) -> dict:
    """Every figure of a beyond-the-paper study (the ``best`` profile), saved as PNG and SVG."""
    res = lab_and_final(profile, runs_root)
    out_dir = out_dir or figures_dir(profile)
    figs = {"lab_curves": lab_curves_figure(res["summary"], res["study"].histories)}
    if len(res["final_runs"]):
        cms = res["confusions"]
        figs["confusion_image_and_cell"] = confusion_pair_figure(cms["image"], cms["cell"], len(res["final_runs"]))
        figs["reliability"] = reliability_figure(res["pooled_probs"], res["pooled_labels"], res["pooled_cells"])
        figs["risk_coverage"] = risk_coverage_figure(res["risk_coverage"])
        figs["wrong_cells"] = wrong_cells_figure(res["wrong_cells"], build_manifest(data_dir),
                                                 tuple(res["chosen"]["image_size"]), res["chosen"].get("view", "full"))
    return save_all(figs, out_dir)
