"""The figures are legible on a printed A4 page: every text at least MIN_FONT pt once the figure is shown at its
report width, no two identical panels, no empty panel, legends off the data, curves inside their axes, whole
epochs on training axes, runs named in words. Drawn from small synthetic studies (no run artifacts needed)."""
from __future__ import annotations

import math
import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402

from wbc_utils import CLASSES  # noqa: E402
from wbc_utils.figures import final as final_figures  # noqa: E402
from wbc_utils.figures import model as model_figures  # noqa: E402
from wbc_utils.figures import study as study_figures  # noqa: E402
from wbc_utils.figures.common import A4_WIDTH, MIN_FONT, fit_lines, print_font_sizes, text_width  # noqa: E402
from wbc_utils.params import ARCH_2020  # noqa: E402

EPOCHS = 6
RECIPES = [("crossentropy", "integer"), ("mse", "integer"), ("huber", "integer"), ("mse", "onehot"),
           ("huber", "onehot")]


def _study(recipes=RECIPES, seeds: int = 3, epochs: int = EPOCHS, seed: int = 0):
    """A summary, histories and metrics like a loss study's, for ``recipes`` x ``seeds``."""
    rng = np.random.default_rng(seed)
    rows, hist, metrics = [], {}, {}
    for loss, enc in recipes:
        for s in range(seeds):
            name = f"{loss}_{enc}_60x80_lr0.0003_s{s}"
            collapsed = loss == "crossentropy" and s == 0
            rows.append({"run_name": name, "status": "finished", "role": "main", "loss": loss,
                         "target_encoding": enc, "seed": s, "arch": ARCH_2020, "input_scaling": "raw",
                         "learning_rate": 3e-4, "validation": "test", "epochs": epochs, "collapsed": collapsed,
                         "output_spread": 0.0 if collapsed else rng.uniform(0.3, 1.0),
                         "train_loss_vs_constant": 1.0 if collapsed else rng.uniform(0.1, 0.7)})
            ep = np.arange(1, epochs + 1)
            acc = 0.25 + 0.5 * (1 - np.exp(-ep / 3)) + 0.02 * rng.standard_normal(epochs)
            regresses = loss != "crossentropy" and enc == "integer"
            paper = acc if not regresses else 0.25 + 0.05 * rng.standard_normal(epochs)
            loss_curve = np.full(epochs, math.log(4)) if collapsed else 1.4 * np.exp(-ep / 4)
            hist[name] = pd.DataFrame({"epoch": ep, "loss": loss_curve, "accuracy": acc, "paper_metric": paper,
                                       "val_accuracy": acc - 0.1, "val_paper_metric": paper - 0.1 * (not regresses)})
            metrics[name] = {"confusion": (rng.integers(0, 50, (4, 4)) + 100 * np.eye(4, dtype=int)).tolist()}
    return pd.DataFrame(rows), hist, metrics


def _log(epochs: int = 100):
    ep = np.arange(1, epochs + 1)
    return pd.DataFrame({"epoch": ep, "accuracy": 1 - 0.7 * np.exp(-ep / 5), "val_accuracy": 0.7 - 0.4 * np.exp(-ep)})


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _small_texts(fig, width: float = 1.0) -> dict:
    return {t: round(pt, 1) for t, pt in print_font_sizes(fig, width).items() if pt < MIN_FONT - 0.05}


def _panels(fig):
    """The axes a reader sees (visible, not a colour bar)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def _identical_panels(fig) -> list[tuple[int, int]]:
    """Pairs of panels that draw the same lines (same data, point for point)."""
    def lines(ax):
        return sorted((tuple(np.round(np.asarray(ln.get_xdata(), float), 6)),
                       tuple(np.round(np.asarray(ln.get_ydata(), float), 6)))
                      for ln in ax.get_lines() if len(ln.get_xdata()) > 2)
    data = [lines(ax) for ax in _panels(fig)]
    return [(i, j) for i in range(len(data)) for j in range(i + 1, len(data)) if data[i] and data[i] == data[j]]


def _legends_on_data(fig) -> list[str]:
    """Legends whose box overlaps a panel's plotting area."""
    fig.canvas.draw()
    legends = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if lg is not None]
    return [lg.get_texts()[0].get_text() for lg in legends for ax in _panels(fig)
            if lg.get_window_extent().overlaps(ax.get_window_extent())]


# ----------------------------------------------------------------------------- the curves figure

def test_curves_figure_draws_one_accuracy_panel_where_the_2020_metric_is_the_true_accuracy():
    summary, hist, _ = _study()
    ce = study_figures.curves_figure(summary, hist, "crossentropy", _log())
    assert _identical_panels(ce) == []
    assert len(_panels(ce)) == 2  # the accuracy and the 2020 log
    mse = study_figures.curves_figure(summary, hist, "mse", _log())
    assert len(_panels(mse)) == 3 and _identical_panels(mse) == []
    # without the log too, and with one-hot targets (the 2020 metric is then the true accuracy for every loss)
    assert len(_panels(study_figures.curves_figure(summary, hist, "crossentropy"))) == 1
    assert len(_panels(study_figures.curves_figure(summary, hist, "mse", encoding="onehot"))) == 1


def test_identical_panels_are_found():
    """The check above can fail: two panels drawing the same curves are reported."""
    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        ax.plot([1, 2, 3], [0.2, 0.5, 0.6])
    assert _identical_panels(fig) == [(0, 1)]


@pytest.mark.parametrize("loss", ["crossentropy", "mse"])
def test_curves_figure_is_legible_with_whole_epochs_and_its_legend_off_the_data(loss):
    summary, hist, _ = _study()
    fig = study_figures.curves_figure(summary, hist, loss, _log())
    assert _small_texts(fig) == {}
    assert _legends_on_data(fig) == []
    for ax in _panels(fig):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ax.get_title()


# ----------------------------------------------------------------------------- the study's other figures

@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_confusion_figure_has_one_panel_per_recipe_and_no_empty_one(n):
    summary, _, metrics = _study(RECIPES[:n])
    fig = study_figures.confusion_figure(metrics, summary)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == n  # no slot left empty (an axes turned off is one)
    panels = _panels(fig)
    assert all(any(isinstance(c, QuadMesh) for c in ax.collections) for ax in panels)  # every panel is a matrix
    assert _small_texts(fig) == {}
    numbers = [t for ax in panels for t in ax.texts]
    assert len(numbers) == 16 * n and min(t.get_fontsize() for t in numbers) >= MIN_FONT


def test_confusion_titles_name_the_loss_and_encoding_on_their_first_line():
    """The loss's title and its encoding stay together where they fit (what the report's readers and
    test_focal_loss look for), and the title stays within its panel's share of the page."""
    summary, _, metrics = _study()
    fig = study_figures.confusion_figure(metrics, summary)
    titles = [ax.get_title() for ax in _panels(fig)]
    assert titles[1].startswith("Mean squared error, integer labels")
    assert all(text_width(line, 8.5) <= A4_WIDTH / 3 for t in titles for line in t.splitlines())
    assert fit_lines(["a", "b"], 10, 8) == "a, b" and fit_lines(["a" * 60, "b"], 1, 8) == "a" * 60 + ",\nb"


def test_comparison_figure_is_legible_and_its_legends_are_off_the_data():
    summary, hist, _ = _study()
    fig = study_figures.comparison_figure(summary, hist)
    assert _small_texts(fig) == {}
    assert _legends_on_data(fig) == []


def _collapse_study():
    """Cross-entropy runs of three settings: one diverging far above ln 4 (He init), some collapsed on it."""
    rows, hist, diags = [], {}, {}
    for k, (arch, scaling) in enumerate(((ARCH_2020, "raw"), ("he", "raw"), ("bn", "unit"))):
        for s in range(4):
            name = f"crossentropy_integer_{arch}_{scaling}_s{s}"
            collapsed = s < 2 and arch != "bn"
            ep = np.arange(1, 11)
            loss = np.full(10, math.log(4)) if collapsed else (6 if arch == "he" else 1.3) * np.exp(-ep / 4) + 0.2
            hist[name] = pd.DataFrame({"epoch": ep, "loss": loss})
            rows.append({"run_name": name, "status": "finished", "loss": "crossentropy", "target_encoding": "integer",
                         "learning_rate": 1e-3, "arch": arch, "input_scaling": scaling, "collapsed": collapsed,
                         "output_spread": 0.0 if collapsed else 0.5 + 0.1 * s + 0.01 * k,
                         "train_loss_vs_constant": 1.0 if collapsed else 0.3})
            diags[name] = {w: {"zero_fraction": {f"conv{i}": 0.5 for i in range(4)}} for w in ("init", "after_epoch_1")}
    return pd.DataFrame(rows), hist, diags


def test_collapse_curves_stay_inside_the_axes_above_a_thin_reference_line():
    summary, hist, diags = _collapse_study()
    fig = study_figures.collapse_figure(summary, hist, diags)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    runs = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    assert len(runs) == len(summary)
    assert all(lo <= np.nanmin(ln.get_ydata()) and np.nanmax(ln.get_ydata()) <= hi for ln in runs)
    ref = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [math.log(4)] * 2]
    assert len(ref) == 1 and ref[0].get_zorder() < min(ln.get_zorder() for ln in runs)
    assert ref[0].get_linewidth() < min(ln.get_linewidth() for ln in runs) and ref[0].get_linestyle() != "-"
    assert _small_texts(fig) == {}
    assert _legends_on_data(fig) == []


def test_collapse_map_spreads_runs_that_would_sit_on_one_point_and_names_settings_in_words():
    summary, _, _ = _collapse_study()
    fig = study_figures.collapse_map_figure(summary)
    ax = fig.axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())
                             and c.get_label() and "runs" in c.get_label()])
    assert len(points) == len(summary)
    # the four collapsed runs (spread 0, loss ratio 1) no longer sit on one spot
    assert len({tuple(p) for p in np.round(points, 9)}) == len(points)
    labels = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "cross-entropy, integer labels, lr 0.001, He initialisation (4 runs)" in labels
    assert any("inputs scaled to 0-1" in label and "batch normalisation" in label for label in labels)
    assert _small_texts(fig) == {}
    assert _legends_on_data(fig) == []


# ----------------------------------------------------------------------------- the final model's figures

def test_final_figures_are_legible_at_their_report_widths(monkeypatch):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 400)
    probs = [rng.dirichlet(np.ones(4), 400) for _ in range(3)]
    fig = final_figures.reliability_figure(probs, labels)
    assert _small_texts(fig, 0.62) == {} and _legends_on_data(fig) == []
    cov = np.linspace(1, 0.05, 21)
    curves = pd.concat([pd.DataFrame({"coverage": cov, "accuracy": 0.8 + 0.1 * (1 - cov), "random_baseline": 0.8,
                                      "seed": s}) for s in range(3)])
    fig = final_figures.risk_coverage_figure(curves)
    assert _small_texts(fig, 0.62) == {} and _legends_on_data(fig) == []
    cm = rng.integers(0, 900, (4, 4))
    assert _small_texts(final_figures.confusion_pair_figure(cm, cm // 10, 3)) == {}

    lab = pd.DataFrame([{"run_name": f"d{d}_f{f}", "key": f"d{d}", "folds": 3, "design": f"cell crops (128 px) "
                         f"64x64, design {d}, geometric+color aug, cosine lr, 10 epochs"}
                        for d in range(4) for f in range(3 if d < 3 else 1)])  # design 3: pruned after a fold
    hist = {n: pd.DataFrame({"epoch": np.arange(1, 11), "accuracy": np.linspace(0.4, 0.99, 10),
                             "val_accuracy": np.linspace(0.3, 0.9, 10)}) for n in lab["run_name"]}
    monkeypatch.setattr(final_figures, "lab_runs", lambda summary: lab)
    fig = final_figures.lab_curves_figure(None, hist)
    assert _small_texts(fig) == {} and _legends_on_data(fig) == []
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(legend) == 4 and legend[-1].startswith("1 candidate(s) with folds missing")
    fig.canvas.draw()
    ax = fig.axes[0]  # the y label fits beside its axes, not clipped or past them
    assert ax.yaxis.label.get_window_extent().height <= ax.get_window_extent().height


def test_gradcam_is_titled_in_words_and_legible(monkeypatch):
    rng = np.random.default_rng(2)
    n = 8
    images = rng.random((n, 64, 64, 3))
    monkeypatch.setattr(model_figures, "grad_cam", lambda model, imgs: (rng.random((len(imgs), 64, 64)),
                                                                        rng.random((len(imgs), 4))))
    name = "crossentropy_integer_60x80_lr0.0003_s4"
    run = types.SimpleNamespace(model=None, name=name, params={"loss": "crossentropy", "target_encoding": "integer",
                                                               "seed": 4, "run_name": name})
    rows = pd.DataFrame({"class": [CLASSES[i % 4] for i in range(n)], "cell": range(n), "correct": True})
    fig = model_figures.gradcam_figure(run, rows, images, per_row=3)
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    assert not any(name in t for t in texts)
    assert any("Sparse categorical cross-entropy, integer labels, seed 4" in t for t in texts)
    assert _small_texts(fig) == {}
    assert len(_panels(fig)) == 2 * n  # no empty panel
