"""Figures that look inside one trained model (notebook 05, the report): saliency, filters, activations, errors.

Each function takes a :class:`~wbc_utils.saliency.LoadedRun` and the images it
was scored on, prepared the way it was trained (:func:`run_split`).
"""
from __future__ import annotations

import numpy as np

from . import CLASSES
from .figures import _style


def run_split(run, split: str = "TEST", data_dir=None, cache_dir=None):
    """A split decoded at the run's input size and view (cached like training's)."""
    from .data import build_manifest, load_split

    return load_split(build_manifest(data_dir), split, run.image_size, cache_dir, progress=False, view=run.view)


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
    _style()
    import matplotlib.pyplot as plt

    from .saliency import grad_cam

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
    _style()
    import matplotlib.pyplot as plt

    from .saliency import first_layer_filters

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
    _style()
    import matplotlib.pyplot as plt

    from .saliency import activations

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
    _style()
    import matplotlib.pyplot as plt

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


def explore(run, split_data, predictions, index: int = 0):
    """One image of a split: its prediction, probabilities and Grad-CAM (the interactive cell's view)."""
    _style()
    import matplotlib.pyplot as plt

    from .predict import predict_arrays
    from .saliency import grad_cam

    index = int(np.clip(index, 0, len(split_data) - 1))
    image = np.asarray(split_data.images[index])
    row = split_data.frame.iloc[index]
    probs = predict_arrays(run, image[None])[0]
    cam, _ = grad_cam(run.model, image[None])
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.8), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    axes[0].imshow(image), axes[0].set_xticks([]), axes[0].set_yticks([])
    axes[0].set_title(f"{row['class']} (cell {row['cell']})", fontsize=8)
    _overlay(axes[1], image, cam[0], f"Grad-CAM for {CLASSES[int(probs.argmax())]}")
    colors = ["#1a7f37" if c == row["class"] else "#888888" for c in CLASSES]
    axes[2].barh(CLASSES, probs, color=colors)
    axes[2].set_xlim(0, 1), axes[2].set_xlabel("probability")
    axes[2].invert_yaxis()
    fig.suptitle(f"{run.name}: image {index} of {split_data.split}", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the final model (report section 6)

def reliability_figure(probs_list, labels, cells=None, bins: int = 10,
                       title: str = "Reliability on TEST's unseen cells"):
    """Top: confidence against accuracy per bin, one line per seed, with each seed's ECE and its interval
    (resampling cells). Bottom: how many images fall in each bin (all seeds together)."""
    _style()
    import matplotlib.pyplot as plt

    from .evaluation import calibration

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
    _style()
    import matplotlib.pyplot as plt

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
    _style()
    import matplotlib.pyplot as plt
    import seaborn as sns

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
    _style()
    import matplotlib.pyplot as plt
    from PIL import Image

    from .cellcrop import crop_cell

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
        with Image.open(paths[r["simple_relpath"]]) as im:
            field = np.asarray(im.convert("RGB").resize((320, 240)))
        a0.imshow(field)
        a0.set_title(f"cell {r['cell']} ({r['class'][:3]})" + (", also in TRAIN" if r.get("shared") else ""),
                     fontsize=8)
        if view == "cell":
            a1.imshow(crop_cell(field, input_size))
        else:
            a1.imshow(np.asarray(Image.fromarray(field).resize((input_size[1], input_size[0]), Image.BILINEAR)))
        a1.set_title(f"read {r['voted'][:24]}\n{r['seeds_wrong']}/{r['seeds']} seeds", fontsize=8, color="#c62828")
    fig.suptitle("TEST cells the final models still misread (on the un-augmented TEST_SIMPLE image, or by the "
                 "vote of the cell's TEST images): the image and the model's input", fontsize=9)
    fig.tight_layout()
    return fig


def lab_curves_figure(summary, histories):
    """Validation accuracy per epoch of each lab candidate (held-out TRAIN cells), and training accuracy."""
    _style()
    from pathlib import Path

    import matplotlib.pyplot as plt

    from .artifacts import read_json
    from .beyond import describe

    lab = summary[(summary["validation"] == "grouped")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for r in lab.itertuples():
        h = histories.get(r.run_name)
        if h is None:
            continue
        label = describe(read_json(Path(r.run_dir) / "params.json"))
        axes[0].plot(h["epoch"], h["accuracy"], marker="o", ms=3, label=label)
        axes[1].plot(h["epoch"], h["val_accuracy"], marker="o", ms=3, label=label)
    axes[0].set_title("training accuracy (augmented images)", fontsize=9)
    axes[1].set_title("validation accuracy (held-out TRAIN cells)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def build_beyond(profile: str, runs_root=None, out_dir=None) -> dict:
    """Every figure of a beyond-the-paper study (the ``best`` profile), saved as PNG and SVG."""
    import matplotlib.pyplot as plt

    from .beyond import lab_and_final
    from .data import build_manifest
    from .figures import figures_dir, save
    from .study import load_runs

    res = lab_and_final(profile, runs_root)
    _, _, histories = load_runs(profile, runs_root)
    out_dir = out_dir or figures_dir(profile)
    figs = {"lab_curves": lab_curves_figure(res["summary"], histories)}
    if len(res["final_runs"]):
        cms = res["confusions"]
        figs["confusion_image_and_cell"] = confusion_pair_figure(cms["image"], cms["cell"], len(res["final_runs"]))
        figs["reliability"] = reliability_figure(res["pooled_probs"], res["pooled_labels"], res["pooled_cells"])
        figs["risk_coverage"] = risk_coverage_figure(res["risk_coverage"])
        figs["wrong_cells"] = wrong_cells_figure(res["wrong_cells"], build_manifest(),
                                                 tuple(res["chosen"]["image_size"]), res["chosen"].get("view", "full"))
    for name, fig in figs.items():
        save(fig, name, out_dir)
        plt.close(fig)
    return figs
