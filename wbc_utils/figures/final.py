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
from ..params import cell_window, crop_border
from .common import A4_WIDTH, epoch_axis, image_panel, save_all, style


def reliability_figure(probs_list, labels, cells=None, bins: int = 10,
                       title: str = "Reliability on TEST's unseen cells"):
    """Top: confidence against accuracy per bin, one line per seed, with each seed's ECE and its interval
    (resampling cells). Bottom: how many images fall in each bin (all seeds together). Drawn at the report's
    62% of A4 width, the legend below the panels."""
    style()

    fig, (ax, axc) = plt.subplots(2, 1, figsize=(0.62 * A4_WIDTH, 4.6), sharex=True, layout="constrained",
                                  gridspec_kw={"height_ratios": [3, 1.2]})
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfect calibration", zorder=1)
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
    ax.set_title(title)
    axc.bar(edges[:-1] + 0.05, counts, width=0.09, color="#7f7f7f")
    for x_, n in zip(edges[:-1] + 0.05, counts):
        if n:
            axc.text(x_, n, f"{int(n)}", ha="center", va="bottom", fontsize=8)
    axc.set_ylabel("images")
    axc.set_xlabel("confidence (probability of the predicted class)")
    axc.set_ylim(0, counts.max() * 1.35 if counts.max() else 1)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=1, frameon=False)
    return fig


def risk_coverage_figure(curves):
    """Cell-level accuracy on the cells kept against the share of cells kept (most confident first), one line
    per seed; the dashed lines are what setting cells aside at random would keep (each seed's accuracy). Drawn
    at the report's 62% of A4 width, the legend below the axes."""
    style()

    fig, ax = plt.subplots(figsize=(0.62 * A4_WIDTH, 3.5), layout="constrained")
    for seed, g in curves.groupby("seed"):
        line, = ax.plot(100 * g["coverage"], 100 * g["accuracy"], lw=1.4, label=f"seed {seed}")
        ax.axhline(100 * g["random_baseline"].iloc[0], color=line.get_color(), ls="--", lw=0.9, zorder=1)
    ax.plot([], [], color="black", ls="--", lw=0.9, label="random abstention")
    ax.set_xlabel("cells kept (%), least confident set aside first")
    ax.set_ylabel("accuracy on the kept cells (%)")
    ax.set_xlim(101, 0)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), frameon=False,
               handlelength=1.8, columnspacing=1.0)
    return fig


def confusion_pair_figure(image_cm, cell_cm, seeds: int):
    """Image-level and cell-level (one vote per cell) confusion matrices on TEST's unseen cells, summed over
    seeds: colour = the row's share (each true class's row sums to 1), number = the count."""
    style()

    fig, axes = plt.subplots(1, 2, figsize=(A4_WIDTH, 3.4), layout="constrained")
    short = [c[:3].capitalize() for c in CLASSES]
    for ax, cm, what in ((axes[0], image_cm, "images"), (axes[1], cell_cm, "cells (one vote per cell)")):
        cm = np.asarray(cm)
        rate = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        sns.heatmap(rate, annot=cm, fmt="d", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax, square=True,
                    xticklabels=short, yticklabels=short, annot_kws={"fontsize": 9})
        ax.set_xlabel("predicted"), ax.set_ylabel("true")
        ax.tick_params(axis="y", rotation=0)
        ax.set_title(f"{what}, {seeds} seed{'s' * (seeds != 1)} summed")
    return fig


def wrong_cells_figure(wrong, manifest, input_size=(64, 64), view: str = "cell", per_row: int = 2):
    """Each misread TEST cell: its un-augmented TEST_SIMPLE image and the model's input made from it, ``per_row``
    cells (two panels each) a row at A4 width, so that the cell can be seen on paper."""
    style(grid=False)

    rows = wrong[wrong["simple_relpath"] != ""] if len(wrong) and "simple_relpath" in wrong else wrong.iloc[:0]
    n = len(rows)
    if n == 0:
        fig, ax = plt.subplots(figsize=(0.6 * A4_WIDTH, 0.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "every TEST cell is read right by every seed", ha="center", va="center")
        return fig
    paths = dict(zip(manifest.frame["relpath"], manifest.frame["path"]))
    cols = max(1, min(per_row, n))
    nrows = -(-n // cols)
    aspect = NATIVE_SIZE[0] / NATIVE_SIZE[1]  # the field's height / width
    panel = A4_WIDTH / (2 * cols)
    fig = plt.figure(figsize=(A4_WIDTH, nrows * (0.92 * panel * aspect + 0.42) + 0.45), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.03, wspace=0.02, hspace=0.02)
    grid = fig.add_gridspec(nrows, 2 * cols)
    for k in range(n):
        i, j = divmod(k, cols)
        a0, a1 = fig.add_subplot(grid[i, 2 * j]), fig.add_subplot(grid[i, 2 * j + 1])
        r = rows.iloc[k]
        field = decode_image(paths[r["simple_relpath"]], NATIVE_SIZE)  # the guarded reader, as the model read it
        if isinstance(field, str):
            field = np.full((*NATIVE_SIZE, 3), 200, np.uint8)  # a grey placeholder for a file that cannot be read
        shared = ", also in TRAIN" if r.get("shared") else ""
        image_panel(a0, field, f"cell {r['cell']}: {r['class'].lower()}\nTEST_SIMPLE image{shared}")
        if view != "full":
            seen = crop_cell(field, input_size, cell_window(view), crop_border(view))
        else:
            seen = np.asarray(Image.fromarray(field).resize((input_size[1], input_size[0]), Image.BILINEAR))
        image_panel(a1, seen, f"read as {r['voted'].lower()}\nby {r['seeds_wrong']} of {r['seeds']} seeds")
        a1.title.set_color("#c62828")
    fig.suptitle("TEST cells the final models still misread (by the vote of the cell's TEST images, or on its\n"
                 "un-augmented TEST_SIMPLE image): each cell's image and the model's input made from it")
    return fig


def lab_curves_figure(summary, histories):
    """Each lab candidate's accuracy per epoch, the mean over its folds with their range shaded: on the training
    images (augmented) and on the held-out TRAIN cells. Candidates scored on every fold are drawn in colour, one
    legend line each, below the panels; those the pruner or the budget stopped, in thin grey under one line."""
    style()
    runs = lab_runs(summary)
    groups = [(g, [histories[n] for n in g["run_name"] if n in histories]) for _, g in runs.groupby("key", sort=False)]
    groups = [(g, hs) for g, hs in groups if hs]
    full = [(g, hs) for g, hs in groups if len(hs) >= int(g["folds"].iloc[0] or 1)]
    fig, axes = plt.subplots(1, 2, figsize=(A4_WIDTH, 2.9 + 0.2 * (len(full) + 1)), sharey=True,
                             layout="constrained")
    most, grey = 0, None
    for g, hs in groups:
        epochs = min(len(h) for h in hs)
        most = max(most, epochs)
        complete = any(g is f for f, _ in full)
        label = f"{g['design'].iloc[0]} ({len(hs)} folds)" if complete else None
        for ax, col in zip(axes, ("accuracy", "val_accuracy")):
            v = np.stack([h[col].to_numpy(float)[:epochs] for h in hs])
            x = np.arange(1, epochs + 1)
            if complete:
                line, = ax.plot(x, v.mean(0), marker="o", ms=3, label=label)
                ax.fill_between(x, v.min(0), v.max(0), color=line.get_color(), alpha=0.15, lw=0)
            else:
                grey, = ax.plot(x, v.mean(0), color="0.6", lw=0.8, zorder=1)
    axes[0].set_title("training accuracy\n(augmented images)")
    axes[1].set_title("validation accuracy\n(the held-out fold's TRAIN cells)")
    for ax in axes:
        epoch_axis(ax, most or None)
    axes[0].set_ylabel("accuracy, mean over folds\n(shaded: their range)")
    handles, labels = axes[1].get_legend_handles_labels()
    if grey is not None:
        handles.append(grey)
        labels.append(f"{len(groups) - len(full)} candidate(s) with folds missing (pruned or stopped by the budget)")
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=1, frameon=False)
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
