"""A study's figures (notebooks 03-04, report sections 3-5), drawn from its run artifacts only.

Every function takes the parts of a :class:`~wbc_utils.runs.Study` it draws (its main runs, their metrics or
histories) and gives a matplotlib Figure; each loss is drawn in its ``LossSpec.colour`` and named by its title
(:mod:`wbc_utils.registry`). :func:`build_all` writes them to ``figures/<profile>/`` as PNG and SVG.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .. import CLASSES, registry
from ..analysis import losses_of, recipes, runs_for, setting_name
from ..config import figures_dir
from ..evaluation import COLLAPSE_LOSS_TOL, COLLAPSE_SPREAD_MAX
from ..params import TEST_AS_VALIDATION
from ..registry import ENCODING_TITLES, ENCODING_WORDS, ENCODINGS, INTEGER
from ..runs import Run, load_study
from .common import save_all, style
from .final import build_beyond


def _runs_of(summary, loss: str, encoding: str, finished_only: bool = True):
    s = summary[(summary["loss"] == loss) & (summary["target_encoding"] == encoding)]
    return s[s["status"] == "finished"] if finished_only else s


def curves_figure(summary, histories, loss: str, original_log=None, title: str = "", encoding: str = INTEGER):
    """Training and validation accuracy of one loss trained on integer labels, as in 2020, per epoch: as the
    2020 code printed it (left) and the true accuracy (middle); beside them (right), the 2020 run's own log over
    its 100 epochs.

    Each seed is drawn faintly, the mean across seeds boldly. ``original_log`` (the 2020 per-epoch curves, a
    DataFrame) is also drawn dashed on the left panel over the epochs this study ran, so the two can be read
    epoch by epoch. (With one-hot targets the left and middle panels would be identical: the 2020 metric is
    then the true accuracy; see :func:`comparison_figure`.)
    """
    style()
    has_log = original_log is not None and len(original_log) > 0
    fig, axes = plt.subplots(1, 3 if has_log else 2, figsize=(13, 3.6) if has_log else (10, 3.6), sharey=True,
                             gridspec_kw={"width_ratios": [1, 1, 0.8]} if has_log else None)
    runs = _runs_of(summary, loss, encoding, finished_only=False)
    epochs = int(pd.to_numeric(runs["epochs"], errors="coerce").max()) if len(runs) else 1
    panels = (("paper_metric", "'accuracy' as the 2020 code printed it"),
              ("accuracy", "true accuracy (argmax = class)"))
    handles = {}
    for ax, (col, ptitle) in zip(axes, panels):
        for split, color in (("", "#1f77b4"), ("val_", "#d62728")):
            stack = []
            for r in runs.itertuples():
                h = histories.get(r.run_name)
                if h is None or f"{split}{col}" not in h:
                    continue
                ax.plot(h["epoch"], h[f"{split}{col}"], color=color, alpha=0.3, lw=0.9)
                if r.status == "finished":
                    stack.append(h[f"{split}{col}"].to_numpy())
            if stack and len({len(s) for s in stack}) == 1:
                grouped = "validation" in runs and (runs["validation"] != TEST_AS_VALIDATION).any()
                val = "held-out TRAIN cells" if grouped else "TEST"
                what = f"validation ({val})" if split else "training"
                line, = ax.plot(np.arange(1, len(stack[0]) + 1), np.mean(stack, 0), color=color, lw=2.2)
                handles[f"{what}, mean of {len(stack)} seed{'s' * (len(stack) > 1)}"] = line
        if col == "paper_metric" and has_log:
            head = original_log[original_log["epoch"] <= epochs]
            for key, color, what in (("accuracy", "#1f77b4", "training"), ("val_accuracy", "#d62728", "validation")):
                line, = ax.plot(head["epoch"], head[key], color=color, ls="--", lw=1.2)
                handles[f"{what}, 2020 log"] = line
        ax.axhline(0.25, color="grey", lw=0.8, ls=":")
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, epochs + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1.02)
    if has_log:
        ax = axes[2]
        ax.plot(original_log["epoch"], original_log["accuracy"], color="#1f77b4", ls="--", lw=1.2)
        ax.plot(original_log["epoch"], original_log["val_accuracy"], color="#d62728", ls="--", lw=1.2)
        ax.axvspan(0.5, epochs + 0.5, color="grey", alpha=0.12, lw=0)
        ax.axhline(0.25, color="grey", lw=0.8, ls=":")
        ax.set_title(f"the 2020 run's log, all {len(original_log)} epochs\n(shaded: the epochs run here)", fontsize=9)
        ax.set_xlabel("epoch (2020)")
    axes[0].set_ylabel("accuracy")
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 4), fontsize=7.5,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def comparison_figure(summary, histories):
    """True validation (TEST) accuracy per epoch across losses, one panel per target encoding: the mean over
    seeds (line) and the range from the lowest to the highest seed (band), one colour per loss. A loss whose
    encodings coincide (cross-entropy) is the same function under both; its one-hot panel shows its integer-label
    runs."""
    style()

    encs = [e for e in ENCODINGS if (summary["target_encoding"] == e).any()]
    fig, axes = plt.subplots(1, max(1, len(encs)), figsize=(5 * max(1, len(encs)), 3.5), sharey=True, squeeze=False)
    for ax, enc in zip(axes[0], encs):
        for loss in losses_of(summary):
            spec = registry.get(loss)
            rows = runs_for(summary, loss, enc)
            stack = [histories[r.run_name]["val_accuracy"].to_numpy() for r in rows.itertuples()
                     if r.run_name in histories]
            if not stack or len({len(s) for s in stack}) != 1:
                continue
            a = np.array(stack)
            x = np.arange(1, a.shape[1] + 1)
            same = " (same runs)" if enc != INTEGER and (rows["target_encoding"] == INTEGER).all() else ""
            ax.plot(x, a.mean(0), color=spec.colour, lw=2, label=f"{spec.title}, {len(a)} seeds{same}")
            if len(a) > 1:
                ax.fill_between(x, a.min(0), a.max(0), color=spec.colour, alpha=0.15)
        ax.axhline(0.25, color="grey", lw=0.8, ls=":")
        ax.set_title(ENCODING_TITLES[enc], fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("true validation accuracy")
    fig.tight_layout()
    return fig


def confusion_figure(metrics: dict, summary):
    """Confusion matrices on TEST's unseen cells, summed over seeds, each row divided by the number of images
    of its true class (rows sum to 1): one panel per recipe (:func:`wbc_utils.analysis.recipes`)."""
    style()

    settings = recipes(summary)
    cols = 3
    nrows = -(-len(settings) // cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(10, 3.1 * nrows), squeeze=False)
    short = [c[:3] for c in CLASSES]
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (loss, enc) in zip(axes.flat, settings):
        mats = [np.array(metrics[r.run_name]["confusion"]) for r in _runs_of(summary, loss, enc).itertuples()
                if r.run_name in metrics]
        if not mats:
            continue
        ax.set_axis_on()
        m = np.sum(mats, 0).astype(float)
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
        sns.heatmap(m, vmin=0, vmax=1, annot=True, fmt=".2f", cmap="Blues", cbar=False, ax=ax,
                    xticklabels=short, yticklabels=short, annot_kws={"fontsize": 8})
        ax.set_title(f"{registry.get(loss).title}, {ENCODING_WORDS[enc]}\n{len(mats)} seeds summed", fontsize=8.5)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.tight_layout()
    return fig


def collapse_figure(summary, histories, diagnostics: dict):
    """Cross-entropy runs with integer labels. Left: training loss against ln 4 (the loss of a constant
    output), one colour per setting, with how many runs collapsed. Right: share of zero ReLU outputs per
    layer, at initialisation and after epoch 1, for the runs that collapsed and the rest."""
    style()


    ce = summary[(summary["loss"] == "crossentropy") & (summary["target_encoding"] == INTEGER)].copy()
    ce["setting"] = [setting_name(r) for r in ce.itertuples()]
    ce["setting"] = ce["setting"].str.replace("CE, integer labels, ", "", regex=False)
    collapsed = ce["collapsed"] == True  # noqa: E712
    settings = sorted(ce["setting"].unique())
    colors = dict(zip(settings, sns.color_palette("tab10", len(settings))))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    for r in ce.itertuples():
        h = histories.get(r.run_name)
        if h is not None:
            ax.plot(h["epoch"], h["loss"], color=colors[r.setting], alpha=0.75, lw=1.2)
    for st in settings:
        sel = ce["setting"] == st
        ax.plot([], [], color=colors[st], label=f"{st}: {int(collapsed[sel].sum())}/{int(sel.sum())} collapsed")
    ax.axhline(math.log(4), color="black", ls="--", lw=1, label="ln 4 = 1.386 (a constant output)")

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_ylim(0, 2.5)
    ax.legend(fontsize=6.5)
    ax.set_title("every cross-entropy run on integer labels", fontsize=9.5)
    ax = axes[1]
    for when, ls in (("init", ":"), ("after_epoch_1", "-")):
        for is_col, color in ((True, "#d62728"), (False, "#1b9e77")):
            vals, layers = [], None
            for r in ce[collapsed == is_col].itertuples():
                d = diagnostics.get(r.run_name, {}).get(when)
                if d:
                    layers = list(d["zero_fraction"])
                    vals.append([d["zero_fraction"][l] for l in layers])
            if vals:
                ax.plot(range(1, len(layers) + 1), np.mean(vals, 0), color=color, ls=ls, marker="o", ms=3,
                        label=f"{'collapsed' if is_col else 'learning'}, {when.replace('_', ' ')} (n={len(vals)})")
    ax.set_xlabel("convolution layer")
    ax.set_ylabel("share of ReLU outputs that are 0")
    ax.set_ylim(0, 1.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6.5)
    ax.set_title("dead ReLUs on a fixed probe batch (mean over runs)", fontsize=9.5)
    fig.tight_layout()
    return fig


def collapse_map_figure(summary):
    """Every finished run placed by the two halves of the collapse definition: its final training loss
    relative to the best constant prediction's (up: no better than a constant) against the spread of its
    outputs across TEST images relative to the targets' (left: near-constant). Collapsed runs fall in the
    shaded corner."""
    style()


    fin = summary[summary["status"] == "finished"].copy()
    fin["setting"] = [setting_name(r) for r in fin.itertuples()]
    fin["x"] = pd.to_numeric(fin["output_spread"], errors="coerce").clip(lower=1e-3)
    fin["y"] = pd.to_numeric(fin["train_loss_vs_constant"], errors="coerce").clip(upper=2.0)  # above: drawn at 2
    settings = sorted(fin["setting"].unique())
    colors = dict(zip(settings, sns.color_palette("tab10", len(settings))))
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    ax.fill_between([8e-4, COLLAPSE_SPREAD_MAX], 1 - COLLAPSE_LOSS_TOL, 2.1, color="#d62728", alpha=0.08,
                    label="collapsed (both criteria)")
    ax.axvline(COLLAPSE_SPREAD_MAX, color="#d62728", lw=0.8, ls="--")
    ax.axhline(1 - COLLAPSE_LOSS_TOL, color="#d62728", lw=0.8, ls="--")
    for st in settings:
        g = fin[fin["setting"] == st]
        ax.scatter(g["x"], g["y"], s=22, color=colors[st], label=f"{st} ({len(g)})", alpha=0.85, edgecolor="white",
                   linewidth=0.4)
    ax.set_xscale("log")
    ax.set_xlim(8e-4, 1.5)
    ax.set_ylim(0, 2.1)
    ax.set_xlabel("spread of the outputs across TEST images / the targets' (log scale; < 0.001 drawn at 0.001)")
    ax.set_ylabel("training loss (inference) /\nbest constant's loss")
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def curves_name(loss: str) -> str:
    """The curves figure's file name: ``figure<n>_<loss>`` for the 2020 losses (the 2020 report's Figure n),
    ``curves_<loss>`` for any other."""
    n = registry.get(loss).figure_2020
    return f"figure{n}_{loss}" if n else f"curves_{loss}"


def build_all(profile: str, runs_root=None, out_dir: Path | None = None, data_dir=None) -> dict:
    """Draw and save every figure of a study into ``figures/<profile>/``; returns {name: Figure}."""
    study = load_study(profile, runs_root)
    if study.kind == "lab":  # a beyond-the-paper study: its own figures
        return build_beyond(profile, runs_root, out_dir, data_dir)
    summary, histories = study.main, study.histories  # control runs appear in the collapse figures only
    out_dir = out_dir or figures_dir(profile)
    logs = (study.original() or {}).get("logs", {})
    figs = {}
    for loss in losses_of(summary):
        if _runs_of(summary, loss, INTEGER, finished_only=False).empty:
            continue
        log = pd.DataFrame(logs[loss]) if loss in logs else None
        figs[curves_name(loss)] = curves_figure(summary, histories, loss, log)
    figs["validation_comparison"] = comparison_figure(summary, histories)
    if study.metrics:
        figs["confusion_matrices"] = confusion_figure(study.metrics, summary)
    diags = {r.run_name: d for r in study.runs.itertuples() if (d := Run(Path(r.run_dir)).diagnostics())}
    figs["collapse"] = collapse_figure(study.runs, histories, diags)
    figs["collapse_map"] = collapse_map_figure(study.runs)
    return save_all(figs, out_dir)
