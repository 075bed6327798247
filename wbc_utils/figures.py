"""Figures of a study, drawn from its run artifacts only; saved as PNG and SVG.

Every function takes what :func:`wbc_utils.study.load_runs` returns and gives a
matplotlib Figure; :func:`save_all` writes them to ``figures/<profile>/``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import CLASSES
from .data import output_root
from .params import ENCODING_TITLES, LOSS_TITLES, LOSSES

PALETTE = {"crossentropy": "#1b9e77", "mse": "#d95f02", "huber": "#7570b3"}


def _style():
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)


def _runs_of(summary, loss: str, encoding: str, finished_only: bool = True):
    s = summary[(summary["loss"] == loss) & (summary["target_encoding"] == encoding)]
    return s[s["status"] == "finished"] if finished_only else s


def _progress(h, epochs: int):
    return h["epoch"].to_numpy() / max(epochs, 1) * 100


def curves_figure(summary, histories, loss: str, encoding: str, original_log=None, title_prefix: str = ""):
    """Training vs validation accuracy for one loss: as the 2020 code printed it, and the true accuracy.

    Each seed is drawn faintly, the mean across seeds boldly. ``original_log``
    (the 2020 per-epoch curves, a DataFrame) is overlaid on the left panel.
    """
    _style()
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    runs = _runs_of(summary, loss, encoding, finished_only=False)
    panels = (("paper_metric", "'accuracy' as the 2020 code printed it"), ("accuracy", "true accuracy (argmax = class)"))
    for ax, (col, title) in zip(axes, panels):
        for split, color in (("", "#1f77b4"), ("val_", "#d62728")):
            stack = []
            for r in runs.itertuples():
                h = histories.get(r.run_name)
                if h is None or f"{split}{col}" not in h:
                    continue
                x = _progress(h, int(r.epochs))
                ax.plot(x, h[f"{split}{col}"], color=color, alpha=0.3, lw=0.9)
                if r.status == "finished":
                    stack.append(h[f"{split}{col}"].to_numpy())
            if stack and len({len(s) for s in stack}) == 1:
                x = np.arange(1, len(stack[0]) + 1) / len(stack[0]) * 100
                ax.plot(x, np.mean(stack, 0), color=color, lw=2.2,
                        label=f"{'validation' if split else 'training'} (mean of {len(stack)} seed{'s' * (len(stack) > 1)})")
        if col == "paper_metric" and original_log is not None:
            x = original_log["epoch"] / len(original_log) * 100
            ax.plot(x, original_log["accuracy"], color="#1f77b4", ls="--", lw=1.2, label="training, 2020 log")
            ax.plot(x, original_log["val_accuracy"], color="#d62728", ls="--", lw=1.2, label="validation, 2020 log")
        ax.axhline(0.25, color="grey", lw=0.8, ls=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training progress (% of epochs)")
        ax.set_xlim(0, 101)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("accuracy")
    fig.suptitle(f"{title_prefix}{LOSS_TITLES[loss]}: {ENCODING_TITLES[encoding]}", fontsize=11)
    fig.tight_layout()
    return fig


def comparison_figure(summary, histories):
    """True validation accuracy across losses, one panel per encoding (mean and seed band)."""
    _style()
    import matplotlib.pyplot as plt

    encs = [e for e in ("paper", "onehot") if (summary["target_encoding"] == e).any()]
    fig, axes = plt.subplots(1, max(1, len(encs)), figsize=(5.5 * max(1, len(encs)), 3.8), sharey=True, squeeze=False)
    for ax, enc in zip(axes[0], encs):
        for loss in LOSSES:
            stack = [histories[r.run_name]["val_accuracy"].to_numpy() for r in _runs_of(summary, loss, enc).itertuples()
                     if r.run_name in histories]
            if not stack or len({len(s) for s in stack}) != 1:
                continue
            a = np.array(stack)
            x = np.arange(1, a.shape[1] + 1)
            ax.plot(x, a.mean(0), color=PALETTE[loss], lw=2, label=f"{LOSS_TITLES[loss]} (n={len(a)})")
            if len(a) > 1:
                ax.fill_between(x, a.min(0), a.max(0), color=PALETTE[loss], alpha=0.15)
        ax.axhline(0.25, color="grey", lw=0.8, ls=":")
        ax.set_title(ENCODING_TITLES[enc], fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("validation accuracy (true)")
    fig.tight_layout()
    return fig


def confusion_figure(metrics: dict, summary):
    """Row-normalised TEST confusion matrices, summed over seeds, per encoding (rows) and loss (columns)."""
    _style()
    import matplotlib.pyplot as plt
    import seaborn as sns

    encs = [e for e in ("paper", "onehot") if (summary["target_encoding"] == e).any()]
    fig, axes = plt.subplots(len(encs), 3, figsize=(12, 3.6 * len(encs)), squeeze=False)
    short = [c[:3] for c in CLASSES]
    for i, enc in enumerate(encs):
        for j, loss in enumerate(LOSSES):
            ax = axes[i][j]
            mats = [np.array(metrics[r.run_name]["confusion"]) for r in _runs_of(summary, loss, enc).itertuples()
                    if r.run_name in metrics]
            if not mats:
                ax.set_axis_off()
                continue
            m = np.sum(mats, 0).astype(float)
            m = m / np.maximum(m.sum(1, keepdims=True), 1)
            sns.heatmap(m, vmin=0, vmax=1, annot=True, fmt=".2f", cmap="Blues", cbar=False, ax=ax,
                        xticklabels=short, yticklabels=short, annot_kws={"fontsize": 8})
            ax.set_title(f"{LOSS_TITLES[loss]}\n{enc} encoding, {len(mats)} seed(s)", fontsize=9)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
    fig.tight_layout()
    return fig


def _setting(r) -> str:
    parts = [f"lr {r.learning_rate:g}"]
    if r.arch != "paper":
        parts.append(f"{r.arch} init" if r.arch == "he" else "BatchNorm")
    if r.input_scaling != "raw":
        parts.append("0-1 inputs")
    return ", ".join(parts)


def collapse_figure(summary, histories, diagnostics: dict):
    """Cross-entropy runs with integer labels. Left: training loss against ln 4, one colour per setting.
    Right: share of zero ReLU outputs per layer, at init and after epoch 1, for runs held at ln 4 and the rest."""
    _style()
    import matplotlib.pyplot as plt
    import seaborn as sns

    ce = summary[(summary["loss"] == "crossentropy") & (summary["target_encoding"] == "paper")].copy()
    ce["setting"] = [_setting(r) for r in ce.itertuples()]
    settings = sorted(ce["setting"].unique())
    colors = dict(zip(settings, sns.color_palette("tab10", len(settings))))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    for r in ce.itertuples():
        h = histories.get(r.run_name)
        if h is not None:
            ax.plot(h["epoch"], h["loss"], color=colors[r.setting], alpha=0.75, lw=1.2)
    for st in settings:
        n = int((ce["setting"] == st).sum())
        held = int(ce.loc[ce["setting"] == st, "ce_collapse_epoch"].notna().sum())
        ax.plot([], [], color=colors[st], label=f"{st}: {held}/{n} held at ln 4")
    ax.axhline(math.log(4), color="black", ls="--", lw=1, label="ln 4 = 1.386 (equal outputs)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_ylim(0, 2.5)
    ax.legend(fontsize=7)
    ax.set_title("cross-entropy, integer labels: every run", fontsize=10)
    ax = axes[1]
    held = ce["ce_collapse_epoch"].notna()
    for when, ls in (("init", ":"), ("after_epoch_1", "-")):
        for is_held, color in ((True, "#d62728"), (False, "#1b9e77")):
            vals, layers = [], None
            for r in ce[held == is_held].itertuples():
                d = diagnostics.get(r.run_name, {}).get(when)
                if d:
                    layers = list(d["zero_fraction"])
                    vals.append([d["zero_fraction"][l] for l in layers])
            if vals:
                ax.plot(range(1, len(layers) + 1), np.mean(vals, 0), color=color, ls=ls, marker="o", ms=3,
                        label=f"{'held at ln 4' if is_held else 'learning'}, {when.replace('_', ' ')} (n={len(vals)})")
    ax.set_xlabel("convolution layer")
    ax.set_ylabel("share of ReLU outputs that are 0")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("dead ReLUs on a fixed probe batch", fontsize=10)
    fig.tight_layout()
    return fig


def save(fig, name: str, out_dir: Path) -> list[Path]:
    from .artifacts import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches="tight", format=ext)
        paths.append(p)
    return paths


def figures_dir(profile: str) -> Path:
    return output_root() / "figures" / profile


def build_all(profile: str, runs_root=None, out_dir: Path | None = None) -> dict:
    """Draw and save every figure of a study; returns {name: Figure}."""
    import matplotlib

    if "inline" not in matplotlib.get_backend():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .artifacts import read_json
    from .study import load_runs, profile_dir

    allruns, metrics, histories = load_runs(profile, runs_root)
    summary = allruns[allruns["role"] == "main"]  # control runs appear in the collapse figure only
    if (summary["arch"] == "wbcnet").any():  # a beyond-the-paper study: its own figures
        from .figures_inside import build_beyond

        return build_beyond(profile, runs_root, out_dir)
    out_dir = out_dir or figures_dir(profile)
    orig = profile_dir(profile, runs_root) / "original-2020.json"
    logs = read_json(orig).get("logs", {}) if orig.exists() else {}
    import pandas as pd

    figs = {}
    for n, loss in enumerate(LOSSES, 1):
        for enc in ("paper", "onehot"):
            if _runs_of(summary, loss, enc, finished_only=False).empty:
                continue
            log = pd.DataFrame(logs[loss]) if enc == "paper" and loss in logs else None
            figs[f"figure{n}_{loss}_{enc}"] = curves_figure(summary, histories, loss, enc, log,
                                                             title_prefix=f"Figure {n}{'' if enc == 'paper' else 'b'}. ")
    figs["validation_comparison"] = comparison_figure(summary, histories)
    if metrics:
        figs["confusion_matrices"] = confusion_figure(metrics, summary)
    diags = {}
    for r in allruns.itertuples():
        p = Path(r.run_dir) / "diagnostics.json"
        if p.exists():
            diags[r.run_name] = read_json(p)
    figs["collapse"] = collapse_figure(allruns, histories, diags)
    for name, fig in figs.items():
        save(fig, name, out_dir)
        plt.close(fig)
    return figs


# ----------------------------------------------------------------------------- the data (notebook 01)

def class_balance_figure(manifest):
    """Images and source cells per class and split: balanced images, very unbalanced cells."""
    _style()
    import matplotlib.pyplot as plt
    import seaborn as sns

    f = manifest.frame
    files = f.groupby(["split", "class"]).size().rename("images").reset_index()
    cells = f.groupby(["split", "class"])["cell"].nunique().rename("source cells").reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.barplot(files, x="class", y="images", hue="split", ax=axes[0])
    sns.barplot(cells, x="class", y="source cells", hue="split", ax=axes[1])
    axes[0].set_title("images per class (augmented copies)", fontsize=10)
    axes[1].set_title("independent source cells per class", fontsize=10)
    for ax in axes:
        ax.set_xlabel("")
        for c in ax.containers:
            ax.bar_label(c, fontsize=7)
    fig.tight_layout()
    return fig


def sample_grid_figure(manifest, split: str = "TRAIN", per_class: int = 6, seed: int = 0):
    """A few images of each class, with their source cell."""
    _style()
    import matplotlib.pyplot as plt
    from PIL import Image

    f = manifest.split(split)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(per_class * 1.8, len(CLASSES) * 1.5))
    for i, cls in enumerate(CLASSES):
        rows = f[f["class"] == cls]
        pick = rows.iloc[rng.choice(len(rows), size=min(per_class, len(rows)), replace=False)]
        for j, r in enumerate(pick.itertuples()):
            ax = axes[i][j]
            with Image.open(r.path) as im:
                ax.imshow(im.convert("RGB"))
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"cell {r.cell.split('/')[1]}", fontsize=7)
            if j == 0:
                ax.set_ylabel(cls, fontsize=8)
    fig.suptitle(f"{split}: {per_class} random images per class (title: source cell)", fontsize=10)
    fig.tight_layout()
    return fig


def copies_per_cell_figure(manifest):
    """How many augmented copies each source cell has, per split and class."""
    _style()
    import matplotlib.pyplot as plt
    import seaborn as sns

    f = manifest.frame[manifest.frame["split"].isin(["TRAIN", "TEST"])]
    per = f.groupby(["split", "class", "cell"]).size().rename("copies").reset_index()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    sns.stripplot(per, x="class", y="copies", hue="split", dodge=True, ax=ax, size=3, jitter=0.25)
    ax.set_ylabel("augmented images per source cell")
    ax.set_xlabel("")
    fig.tight_layout()
    return fig
