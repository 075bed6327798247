"""The data's figures (notebook 01, report section 2): classes, copies per cell, and where images come from:
original slides, their augmented copies, overlapping fields.

Drawn from the manifest (:func:`wbc_utils.data.build_manifest`), the slide mapping
(:func:`wbc_utils.slides.load_mapping`), the pairs table (:func:`wbc_utils.slides.load_pairs`) and the image files;
sized to stay readable at A4 width.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Circle

from .. import CLASSES
from ..cellcrop import locate_cell
from ..images import read_array
from ..slides import slide_files
from .common import A4_WIDTH, MIN_FONT, image_panel, style

_K_RE = re.compile(r"^_(\d+)_\d+\.")


def class_balance_figure(manifest):
    """Images and source cells per class and split: balanced images, very unbalanced cells."""
    style()

    f = manifest.frame
    files = f.groupby(["split", "class"]).size().rename("images").reset_index()
    cells = f.groupby(["split", "class"])["cell"].nunique().rename("source cells").reset_index()
    fig, axes = plt.subplots(2, 1, figsize=(A4_WIDTH, 5.2), layout="constrained")
    sns.barplot(files, x="class", y="images", hue="split", ax=axes[0])
    sns.barplot(cells, x="class", y="source cells", hue="split", ax=axes[1])
    axes[0].set_title("images per class (augmented copies)")
    axes[1].set_title("independent source cells per class")
    for ax in axes:
        ax.set_xlabel("")
        ax.margins(y=0.15)
        for c in ax.containers:
            ax.bar_label(c, fontsize=MIN_FONT, padding=1)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="split")
    return fig


def sample_grid_figure(manifest, split: str = "TRAIN", per_class: int = 6, seed: int = 0):
    """A few images of each class, with their source cell."""
    style()

    f = manifest.split(split)
    rng = np.random.default_rng(seed)
    side = A4_WIDTH / per_class
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(A4_WIDTH, len(CLASSES) * (0.75 * side + 0.3) + 0.4),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_visible(False)
    for i, cls in enumerate(CLASSES):
        rows = f[f["class"] == cls]
        pick = rows.iloc[rng.choice(len(rows), size=min(per_class, len(rows)), replace=False)]
        for j, r in enumerate(pick.itertuples()):
            ax = axes[i][j]
            ax.set_visible(True)
            image_panel(ax, _rgb(Path(r.path)), f"cell {r.cell}")
            if j == 0:
                ax.set_ylabel(cls.lower())
    fig.suptitle(f"{split}: {per_class} random images per class (title: source cell)")
    return fig


def copies_per_cell_figure(manifest):
    """How many augmented copies each source cell has, per split and class."""
    style()

    f = manifest.frame[manifest.frame["split"].isin(["TRAIN", "TEST"])]
    per = f.groupby(["split", "class", "cell"]).size().rename("copies").reset_index()
    fig, ax = plt.subplots(figsize=(A4_WIDTH, 3.2), layout="constrained")
    sns.stripplot(per, x="class", y="copies", hue="split", dodge=True, ax=ax, size=3, jitter=0.25)
    ax.set_ylabel("augmented images per source cell")
    ax.set_xlabel("")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="split")
    return fig


def _k(file: str) -> int | None:
    m = _K_RE.match(file)
    return int(m.group(1)) if m else None


def _rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as RGB uint8 through the package's guarded reader (a grey placeholder when it cannot be read),
    optionally resized (w, h) by area averaging."""

    rgb = read_array(path, reduce_to=(2 * size[0], 2 * size[1]) if size else (640, 480))
    if isinstance(rgb, str):
        return np.full((240, 320, 3), 200, np.uint8)
    if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return rgb


def _slide_path(originals_dir: Path, slide: int) -> Path:

    return dict(slide_files(originals_dir))[int(slide)]


def _centred_grid(fig, grid, row: int, k: int, cols: int, n: int):
    """The axes of the ``k``-th of ``n`` panels on ``row`` of ``grid`` (``2 * cols`` columns), the row centred."""
    left = cols - n
    return fig.add_subplot(grid[row, left + 2 * k:left + 2 * k + 2])


def slide_and_copies_figure(mapping, images_root: Path, originals_dir: Path, slide: int | None = None,
                            copies: int = 6, width: float = 0.85):
    """One original slide (top left, over two rows) beside ``copies`` of the augmented images made from it,
    titled split/class/k, four panels a row: drawn at ``width`` of A4 (the report's 85%), so that each copy's
    cell can be seen on paper.

    ``slide`` defaults to the slide with the most copies (ties: the lowest number). The copies are spread
    evenly over the slide's files in (split, class, file) order, so the choice is reproducible.
    """
    style(grid=False)

    m = mapping.dropna(subset=["slide"])
    if slide is None:
        counts = m.groupby("slide").size()
        slide = int(counts[counts == counts.max()].index.min())
    rows = m[m["slide"] == slide].sort_values(["split", "class", "file"])
    if rows.empty:
        raise ValueError(f"no image of the mapping comes from slide {slide}")
    pick = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, min(copies, len(rows))).round().astype(int))]
    cols = 4
    beside = min(len(pick), 4)  # the 2x2 slots right of the slide
    below = len(pick) - beside
    nrows = 2 + -(-below // cols)
    w = A4_WIDTH * width
    fig = plt.figure(figsize=(w, nrows * (0.75 * w / cols + 0.36) + 0.45), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    grid = fig.add_gridspec(nrows, 2 * cols)
    ax = fig.add_subplot(grid[:2, :4])
    splits = ", ".join(f"{n} {s}" for s, n in rows.groupby("split").size().items())
    image_panel(ax, _rgb(_slide_path(originals_dir, slide), (320, 240)),
                f"original slide {slide} (640x480, shown at 320x240)\n{len(rows)} images: {splits}", 8.5)
    for i, (split, cls, file, score) in enumerate(zip(pick["split"], pick["class"], pick["file"], pick["score"])):
        if i < beside:
            a = fig.add_subplot(grid[i // 2, 4 + 2 * (i % 2):6 + 2 * (i % 2)])
        else:
            j = i - beside
            a = _centred_grid(fig, grid, 2 + j // cols, j % cols, cols, min(cols, below - cols * (j // cols)))
        image_panel(a, _rgb(Path(images_root) / split / cls / file),
                    f"{split}, {cls.lower()}\nk={_k(file)}, NCC {score:.3f}")
    fig.suptitle(f"Every image is an augmented copy of one original slide:\nslide {slide} and {len(pick)} of "
                 f"its {len(rows)} copies")
    return fig


def kgroup_figure(mapping, images_root: Path, split: str = "TRAIN", cls: str = "NEUTROPHIL", k: int = 0,
                  n: int = 8, per_row: int = 3, width: float = 0.8):
    """The first ``n`` images of one ``(class, k)`` group, each titled with its slide: ``k`` is not a cell.
    ``per_row`` a row (a short last row centred) at ``width`` of A4 (the report's 80%), so that each cell can be
    seen on paper."""
    style(grid=False)

    g = mapping[(mapping["split"] == split) & (mapping["class"] == cls)]
    g = g[[_k(f) == k for f in g["file"]]].sort_values("file")
    if g.empty:
        raise ValueError(f"no {split} {cls} image has k={k}")
    pick = g.head(n)
    ncol = max(1, min(per_row, len(pick)))
    nrow = int(np.ceil(len(pick) / ncol))
    w = A4_WIDTH * width
    fig = plt.figure(figsize=(w, nrow * (0.75 * w / ncol + 0.36) + 0.45), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    grid = fig.add_gridspec(nrow, 2 * ncol)
    for i, r in enumerate(pick.itertuples()):
        ax = _centred_grid(fig, grid, i // ncol, i % ncol, ncol, min(ncol, len(pick) - ncol * (i // ncol)))
        slide = "no slide" if pd.isna(r.slide) else f"slide {int(r.slide)}"
        image_panel(ax, _rgb(Path(images_root) / split / cls / r.file), f"{r.file}\n{slide}")
    n_slides = int(g["slide"].nunique())
    fig.suptitle(f"{split} {cls.lower()}s, k = {k}: {len(g)} images from {n_slides} different slides\n"
                 f"(the first {len(pick)} shown)")
    return fig


def _pick_pairs(pairs, n: int):

    same = pairs[pairs["same_cell"]].sort_values(["ncc", "slide_a"], ascending=[False, True])
    other = pairs[~pairs["same_cell"]].sort_values(["ncc", "slide_a"], ascending=[False, True])
    n_other = min(len(other), n // 2)
    return pd.concat([same.head(n - n_other), other.head(n_other)])


def overlap_figure(pairs, originals_dir: Path, n: int = 4):
    """``n`` pairs of overlapping originals side by side, the white cell ringed, same cell or not in the title.

    Half are same-cell pairs and half not (when there are), each the best-correlated of its kind. The ring
    is where :func:`wbc_utils.cellcrop.locate_cell` finds the cell (on the slide shrunk to 240x320).
    """
    style(grid=False)


    chosen = _pick_pairs(pairs, n)
    per_row = 2  # two pairs (four slides) per row keeps each slide readable at A4 width
    nrow = int(np.ceil(len(chosen) / per_row))
    fig = plt.figure(figsize=(A4_WIDTH, 1.85 * nrow), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    subs = np.atleast_1d(fig.subfigures(nrow, per_row, wspace=0.04)).reshape(-1)
    for sub in subs[len(chosen):]:
        sub.set_visible(False)
    for sub, p in zip(subs, chosen.itertuples()):
        axes = sub.subplots(1, 2)
        for ax, s in zip(axes, (p.slide_a, p.slide_b)):
            img = _rgb(_slide_path(originals_dir, s), (320, 240))
            cy, cx, _ = locate_cell(img)
            image_panel(ax, img, f"slide {s}")
            ax.add_patch(Circle((cx, cy), 45, fill=False, lw=1.5, color="#ffd400"))
        verdict = "the SAME white cell" if p.same_cell else "different white cells"
        sub.suptitle(f"slides {p.slide_a} and {p.slide_b}: {verdict}\n(overlap {p.overlap_frac:.0%}, "
                     f"NCC {p.ncc:.3f})", fontsize=8.5, fontweight="bold" if p.same_cell else "normal")
    return fig


def provenance_table(mapping):
    """Per split: files, distinct slides, same-cell clusters, clusters shared with the other split.

    TRAIN's "other split" is TEST; TEST's and TEST_SIMPLE's is TRAIN. ``shared_files`` counts the split's
    files whose cell is in the other split too.
    """

    m = mapping.dropna(subset=["slide"])
    cells = {s: set(m.loc[m["split"] == s, "cell"].astype(int)) for s in m["split"].unique()}
    rows = []
    for split in [s for s in ("TRAIN", "TEST", "TEST_SIMPLE") if s in cells] + \
            sorted(s for s in cells if s not in ("TRAIN", "TEST", "TEST_SIMPLE")):
        other = cells.get("TEST" if split == "TRAIN" else "TRAIN", set())
        f = mapping[mapping["split"] == split]
        rows.append({"split": split, "files": len(f), "slides": int(f["slide"].nunique()),
                     "same_cell_clusters": len(cells[split]), "shared_clusters": len(cells[split] & other),
                     "shared_files": int(f["cell"].isin(other).sum()),
                     "unmatched_files": int(f["slide"].isna().sum())})
    return pd.DataFrame(rows).set_index("split")
