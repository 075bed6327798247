"""A study's figures (notebooks 03-04, the report's results), drawn from its run artifacts only.

Every function takes the parts of a :class:`~wbc_utils.runs.Study` it draws (its main runs, their metrics or
histories) and gives a matplotlib Figure; each loss is drawn in its ``LossSpec.colour`` and named by its title
(:mod:`wbc_utils.registry`). :func:`wbc_utils.figures.build_all` writes them to ``figures/<profile>/`` (PNG, SVG).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .. import CLASSES, registry
from ..analysis import losses_of, recipes, runs_for, setting_name
from ..evaluation import COLLAPSE_LOSS_TOL, COLLAPSE_SPREAD_MAX
from ..params import ARCH_2020, TEST_AS_VALIDATION
from ..registry import ENCODING_TITLES, ENCODING_WORDS, ENCODINGS, INTEGER
from .common import A4_WIDTH, epoch_axis, fit_lines, style, text_width


def _runs_of(summary, loss: str, encoding: str, finished_only: bool = True):
    s = summary[(summary["loss"] == loss) & (summary["target_encoding"] == encoding)]
    return s[s["status"] == "finished"] if finished_only else s


def _same_metric(loss: str, encoding: str) -> bool:
    """True when the 2020 code's 'accuracy' is the true accuracy for this loss and encoding (a loss that does not
    regress the integer labels, e.g. cross-entropy): its curves figure then draws one panel, not two."""
    return not registry.get(loss).regresses(encoding)


def curves_figure(summary, histories, loss: str, original_log=None, title: str = "", encoding: str = INTEGER):
    """Training and validation accuracy of one loss trained on integer labels, as in 2020, per epoch: as the
    2020 code printed it (left) and the true accuracy (middle); beside them (right), the 2020 run's own log over
    its 100 epochs.

    Each seed is drawn faintly, the mean across seeds boldly. ``original_log`` (the 2020 per-epoch curves, a
    DataFrame) is also drawn dashed on the left panel over the epochs this study ran, so the two can be read
    epoch by epoch. Where the 2020 metric is the true accuracy (a loss that does not regress the integer labels,
    such as cross-entropy, or one-hot targets) the two would be identical: one accuracy panel is drawn, with the
    2020 log on it. Drawn at A4 width, its legend below the panels.
    """
    style()
    has_log = original_log is not None and len(original_log) > 0
    if _same_metric(loss, encoding):
        panels = (("accuracy", "accuracy (for this loss the 2020\nmetric is the true accuracy)"),)
    else:
        panels = (("paper_metric", "'accuracy' as the 2020\ncode printed it"),
                  ("accuracy", "true accuracy\n(argmax = class)"))
    ratios = [1] * len(panels) + ([0.8] if has_log else [])
    fig, axes = plt.subplots(1, len(ratios), figsize=(A4_WIDTH, 3.2), sharey=True, squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": ratios})
    axes = axes[0]
    runs = _runs_of(summary, loss, encoding, finished_only=False)
    epochs = int(pd.to_numeric(runs["epochs"], errors="coerce").max()) if len(runs) else 1
    handles = {}
    for ax, (col, ptitle) in zip(axes, panels):
        for split, color in (("", "#1f77b4"), ("val_", "#d62728")):
            stack = []
            for r in runs.itertuples():
                h = histories.get(r.run_name)
                if h is None or f"{split}{col}" not in h:
                    continue
                ax.plot(h["epoch"], h[f"{split}{col}"], color=color, alpha=0.3, lw=0.8)
                if r.status == "finished":
                    stack.append(h[f"{split}{col}"].to_numpy())
            if stack and len({len(s) for s in stack}) == 1:
                grouped = "validation" in runs and (runs["validation"] != TEST_AS_VALIDATION).any()
                val = "held-out TRAIN cells" if grouped else "TEST"
                what = f"validation ({val})" if split else "training"
                line, = ax.plot(np.arange(1, len(stack[0]) + 1), np.mean(stack, 0), color=color, lw=2)
                handles[f"{what}, mean of {len(stack)} seed{'s' * (len(stack) > 1)}"] = line
        if ax is axes[0] and has_log:
            head = original_log[original_log["epoch"] <= epochs]
            for key, color, what in (("accuracy", "#1f77b4", "training"), ("val_accuracy", "#d62728", "validation")):
                line, = ax.plot(head["epoch"], head[key], color=color, ls="--", lw=1.2)
                handles[f"{what}, 2020 log"] = line
        chance = ax.axhline(0.25, color="grey", lw=0.8, ls=":", zorder=1)
        ax.set_title(ptitle)
        epoch_axis(ax, epochs)
        ax.set_ylim(0, 1.02)
    if handles:
        faint, = axes[0].plot([], [], color="grey", alpha=0.4, lw=0.8)
        handles["single seeds (faint)"] = faint
    handles["chance (one class in four)"] = chance
    if has_log:
        ax = axes[-1]
        ax.plot(original_log["epoch"], original_log["accuracy"], color="#1f77b4", ls="--", lw=1)
        ax.plot(original_log["epoch"], original_log["val_accuracy"], color="#d62728", ls="--", lw=1)
        ax.axvspan(0.5, epochs + 0.5, color="grey", alpha=0.15, lw=0)
        ax.axhline(0.25, color="grey", lw=0.8, ls=":", zorder=1)
        ax.set_title(f"2020 log, all {len(original_log)} epochs\n(shaded: the epochs run here)")
        epoch_axis(ax, None, "epoch (2020)")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True, steps=[1, 2, 2.5, 5, 10]))
    axes[0].set_ylabel("accuracy")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=3, frameon=False,
               columnspacing=1.2, handlelength=1.8)
    if title:
        fig.suptitle(title)
    return fig


def comparison_figure(summary, histories):
    """True validation (TEST) accuracy per epoch across losses, one panel per target encoding: the mean over
    seeds (line) and the range from the lowest to the highest seed (band), one colour per loss. A loss whose
    encodings coincide (cross-entropy) is the same function under both; its one-hot panel shows its integer-label
    runs. Each panel's legend sits below it, off the data."""
    style()

    encs = [e for e in ENCODINGS if (summary["target_encoding"] == e).any()]
    n = max(1, len(encs))
    fig, axes = plt.subplots(1, n, figsize=(A4_WIDTH if n > 1 else A4_WIDTH * 0.6, 3.3), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, enc in zip(axes[0], encs):
        epochs = 0
        for loss in losses_of(summary):
            spec = registry.get(loss)
            rows = runs_for(summary, loss, enc)
            stack = [histories[r.run_name]["val_accuracy"].to_numpy() for r in rows.itertuples()
                     if r.run_name in histories]
            if not stack or len({len(s) for s in stack}) != 1:
                continue
            a = np.array(stack)
            x = np.arange(1, a.shape[1] + 1)
            epochs = max(epochs, len(x))
            same = " (same runs)" if enc != INTEGER and (rows["target_encoding"] == INTEGER).all() else ""
            ax.plot(x, a.mean(0), color=spec.colour, lw=2, label=f"{spec.title}, {len(a)} seeds{same}")
            if len(a) > 1:
                ax.fill_between(x, a.min(0), a.max(0), color=spec.colour, alpha=0.15, lw=0)
        ax.axhline(0.25, color="grey", lw=0.8, ls=":", zorder=1, label="chance (one class in four)")
        ax.set_title(ENCODING_TITLES[enc])
        epoch_axis(ax, epochs or None)
        ax.set_ylim(0, 1.02)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, handlelength=1.8)
    axes[0][0].set_ylabel("true validation accuracy")
    return fig


def _small_multiples(fig, n: int, cols: int):
    """``n`` axes in rows of ``cols``, the last row centred: no empty slot."""
    rows = -(-n // cols)
    grid = fig.add_gridspec(rows, 2 * cols)
    axes = []
    for k in range(n):
        i, j = divmod(k, cols)
        left = cols - min(cols, n - i * cols)  # a short last row starts half a slot in per missing panel
        axes.append(fig.add_subplot(grid[i, left + 2 * j:left + 2 * j + 2]))
    return axes


def confusion_figure(metrics: dict, summary):
    """Confusion matrices on TEST's unseen cells, summed over seeds, each row divided by the number of images
    of its true class (rows sum to 1): one panel per recipe (:func:`wbc_utils.analysis.recipes`) that has
    metrics, three a row at most, a short last row centred (no empty panel)."""
    style()

    mats = {}
    for loss, enc in recipes(summary):
        m = [np.array(metrics[r.run_name]["confusion"]) for r in _runs_of(summary, loss, enc).itertuples()
             if r.run_name in metrics]
        if m:
            mats[(loss, enc)] = m
    n = len(mats)
    cols = 2 if n == 4 else min(3, max(n, 1))
    rows = max(1, -(-n // cols))
    fig = plt.figure(figsize=(A4_WIDTH * (0.4 + 0.6 * (cols > 1)) if cols < 3 else A4_WIDTH, 2.55 * rows),
                     layout="constrained")
    if not n:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no run has confusion matrices yet", ha="center", va="center")
        return fig
    short = [c[:3].capitalize() for c in CLASSES]
    for ax, ((loss, enc), ms) in zip(_small_multiples(fig, n, cols), mats.items()):
        m = np.sum(ms, 0).astype(float)
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
        sns.heatmap(m, vmin=0, vmax=1, annot=True, fmt=".2f", cmap="Blues", cbar=False, ax=ax, square=True,
                    xticklabels=short, yticklabels=short, annot_kws={"fontsize": 8.5})
        ax.set_title(fit_lines([registry.get(loss).title, ENCODING_WORDS[enc], f"{len(ms)} seeds"],
                               A4_WIDTH / 3 - 0.05, 8.5), fontsize=8.5)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.tick_params(axis="y", rotation=0)
    return fig


def collapse_figure(summary, histories, diagnostics: dict):
    """Cross-entropy runs with integer labels. Left: training loss against ln 4 (the loss of a constant
    output, drawn thin and beneath the runs), one colour per setting, with how many runs collapsed; its limits
    are the data's. Right: share of zero ReLU outputs per layer, at initialisation and after epoch 1, for the
    runs that collapsed and the rest. Legends sit below the panels."""
    style()

    ce = summary[(summary["loss"] == "crossentropy") & (summary["target_encoding"] == INTEGER)].copy()
    ce["setting"] = [setting_name(r) for r in ce.itertuples()]
    ce["setting"] = ce["setting"].str.replace("CE, integer labels, ", "", regex=False)
    collapsed = ce["collapsed"] == True  # noqa: E712
    settings = sorted(ce["setting"].unique())
    colors = dict(zip(settings, sns.color_palette("tab10", len(settings))))
    fig, axes = plt.subplots(1, 2, figsize=(A4_WIDTH, 3.6), layout="constrained")
    ax = axes[0]
    top, bottom, epochs = math.log(4), math.log(4), 0
    for r in ce.itertuples():
        h = histories.get(r.run_name)
        if h is not None and len(h):
            loss = pd.to_numeric(h["loss"], errors="coerce")
            ax.plot(h["epoch"], loss, color=colors[r.setting], alpha=0.8, lw=1.1, zorder=3)
            seen = loss[np.isfinite(loss) & (loss > 0)]
            if len(seen):
                top, bottom = max(top, float(seen.max())), min(bottom, float(seen.min()))
            epochs = max(epochs, int(h["epoch"].max()))
    for st in settings:
        sel = ce["setting"] == st
        ax.plot([], [], color=colors[st], lw=1.5,
                label=f"{st}: {int(collapsed[sel].sum())}/{int(sel.sum())} collapsed")
    ax.axhline(math.log(4), color="black", ls=(0, (4, 3)), lw=0.7, alpha=0.7, zorder=1,
               label="ln 4 = 1.386 (a constant output)")
    epoch_axis(ax, epochs or None)
    if top > 10 * math.log(4):  # a run that diverged far above the rest: a log scale keeps them all readable
        ax.set_yscale("log")
        ax.set_ylim(bottom / 1.2, top * 1.2)
        ax.set_ylabel("training loss (cross-entropy, log scale)")
    else:
        ax.set_ylim(0, top * 1.05)
        ax.set_ylabel("training loss (cross-entropy)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, handlelength=1.8)
    ax.set_title("every cross-entropy run on integer labels")
    ax = axes[1]
    layers_n = 0
    for when, ls in (("init", ":"), ("after_epoch_1", "-")):
        for is_col, color in ((True, "#d62728"), (False, "#1b9e77")):
            vals, layers = [], None
            for r in ce[collapsed == is_col].itertuples():
                d = diagnostics.get(r.run_name, {}).get(when)
                if d:
                    layers = list(d["zero_fraction"])
                    vals.append([d["zero_fraction"][l] for l in layers])
            if vals:
                layers_n = max(layers_n, len(layers))
                ax.plot(range(1, len(layers) + 1), np.mean(vals, 0), color=color, ls=ls, marker="o", ms=3,
                        label=f"{'collapsed' if is_col else 'learning'}, {when.replace('_', ' ')} (n={len(vals)})")
    epoch_axis(ax, layers_n or None, "convolution layer")
    ax.set_ylabel("share of ReLU outputs that are 0")
    ax.set_ylim(0, 1.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, handlelength=2.2)
    else:
        ax.set_xticks([])
        ax.text(0.5, 0.5, "no ReLU diagnostics\nrecorded for these runs", ha="center", va="center",
                transform=ax.transAxes, color="#555555")
    ax.set_title("dead ReLUs on a fixed probe batch\n(mean over runs)")
    return fig


#: Marker shapes for the settings of the collapse map, so that overlapping runs of different settings stay apart.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def _setting_words(r) -> str:
    """A setting in full words: 'cross-entropy, integer labels, lr 0.001, He initialisation'."""
    parts = [registry.get(r.loss).words, ENCODING_WORDS[r.target_encoding], f"lr {float(r.learning_rate):g}"]
    if r.arch not in (ARCH_2020, None) and r.arch == r.arch:
        parts.append({"he": "He initialisation", "bn": "batch normalisation"}.get(r.arch, str(r.arch)))
    if r.input_scaling not in ("raw", None) and r.input_scaling == r.input_scaling:
        parts.append("inputs scaled to 0-1")
    return ", ".join(parts)


def collapse_map_figure(summary):
    """Every finished run placed by the two halves of the collapse definition: its final training loss
    relative to the best constant prediction's (up: no better than a constant) against the spread of its
    outputs across TEST images relative to the targets' (left: near-constant). Collapsed runs fall in the
    shaded corner. One colour and marker per setting, hollow so that runs on top of each other show; runs with
    a spread under 0.001 (drawn at its edge) are spread out side by side. The legend, in words, is below."""
    style()

    fin = summary[summary["status"] == "finished"].copy()
    fin["setting"] = [setting_name(r) for r in fin.itertuples()]
    fin["words"] = [_setting_words(r) for r in fin.itertuples()]
    x = pd.to_numeric(fin["output_spread"], errors="coerce")
    fin["y"] = pd.to_numeric(fin["train_loss_vs_constant"], errors="coerce").clip(upper=2.0)  # above: drawn at 2
    settings = sorted(fin["setting"].unique())
    # the runs under the floor: side by side in a band left of 0.001, ordered by setting, instead of on one point
    floor = x < 1e-3
    fin["x"] = x.clip(lower=1e-3)
    order = fin[floor].sort_values(["setting", "y"]).index
    if len(order):
        fin.loc[order, "x"] = np.logspace(np.log10(3e-4), np.log10(9e-4), len(order)) if len(order) > 1 else 6e-4
    colors = dict(zip(settings, sns.color_palette("tab10", len(settings))))
    fig, ax = plt.subplots(figsize=(A4_WIDTH, 4.4), layout="constrained")
    ax.fill_between([2e-4, COLLAPSE_SPREAD_MAX], 1 - COLLAPSE_LOSS_TOL, 2.1, color="#d62728", alpha=0.08, lw=0,
                    label="collapsed (both criteria)", zorder=0)
    ax.axvline(COLLAPSE_SPREAD_MAX, color="#d62728", lw=0.7, ls="--", zorder=1)
    ax.axhline(1 - COLLAPSE_LOSS_TOL, color="#d62728", lw=0.7, ls="--", zorder=1)
    if len(order):
        ax.axvspan(2e-4, 1e-3, color="grey", alpha=0.08, lw=0, zorder=0)
        ax.text(5.5e-4, 0.04, "spread\n< 0.001:\nside by\nside", ha="center", va="bottom", fontsize=8,
                color="#555555")
    for i, st in enumerate(settings):
        g = fin[fin["setting"] == st]
        ax.scatter(g["x"], g["y"], s=30, marker=_MARKERS[i % len(_MARKERS)], facecolor="none",
                   edgecolor=colors[st], linewidth=1.1, label=f"{g['words'].iloc[0]} ({len(g)} runs)", zorder=3)
    ax.set_xscale("log")
    ax.set_xlim(2e-4, 1.5)
    ax.set_ylim(0, 2.1)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "\u2265 2" if v >= 2 else f"{v:g}"))
    ax.set_xlabel("spread of the outputs across TEST images / the targets' (log scale)")
    ax.set_ylabel("training loss (inference) /\nbest constant's loss")
    widest = max((text_width(t, plt.rcParams["legend.fontsize"]) for t in ax.get_legend_handles_labels()[1]),
                 default=0)
    fig.legend(loc="outside lower center", ncol=2 if 2 * (widest + 0.42) <= A4_WIDTH else 1, frameon=False,
               handletextpad=0.3, columnspacing=1.0)
    return fig


def curves_name(loss: str) -> str:
    """The curves figure's file name: ``figure<n>_<loss>`` for the 2020 losses (the 2020 report's Figure n),
    ``curves_<loss>`` for any other."""
    n = registry.get(loss).figure_2020
    return f"figure{n}_{loss}" if n else f"curves_{loss}"
