"""Metrics that respect the data: TEST is 2,487 images but only 71 source cells.

* image-level accuracy with a 95% interval from a **cluster bootstrap**: source
  cells are resampled with replacement, never single images. The headline
  interval resamples all 71 cells together, so the class mix varies too; a
  class-stratified interval (cells resampled within their class, holding the
  design's class mix fixed) is recorded beside it as ``*_ci_stratified``. With
  4 monocyte and 6 lymphocyte cells, the stratified one is optimistic: a
  bootstrap cannot see more between-cell variation than its few cells show;
* cell-level accuracy: the majority vote of each cell's augmented images, and
  the accuracy on TEST_SIMPLE's 71 un-augmented images;
* per-class recall with the number of cells behind it;
* ``collapsed``: the run predicts one class for at least 95% of TEST.
"""
from __future__ import annotations

import numpy as np

from . import CLASSES

N_BOOT = 2000
BOOT_SEED = 20200503  # the original report's date: fixed, so intervals are reproducible
COLLAPSE_SHARE = 0.95
#: Bumped when a metric's definition changes; `python -m wbc_utils reevaluate` recomputes old runs.
EVALUATION_VERSION = 3


def _cell_index(cells, labels=None):
    cells = np.asarray(cells)
    uniq, inv = np.unique(cells, return_inverse=True)
    strata = None
    if labels is not None:
        labels = np.asarray(labels)
        strata = np.zeros(len(uniq), int)
        strata[inv] = labels
    return uniq, inv, strata


def bootstrap_draws(cells, labels=None, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Cell-resampling weights: (n_boot, n_cells) counts of each cell in each resample.

    With ``labels``, cells are resampled within their class (stratified cluster
    bootstrap); without, over all cells. Returns (counts, inverse index image->cell).
    """
    uniq, inv, strata = _cell_index(cells, labels)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, len(uniq)), np.int32)
    groups = [np.arange(len(uniq))] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for g in groups:
        picks = rng.integers(0, len(g), size=(n_boot, len(g)))
        np.add.at(counts, (np.arange(n_boot)[:, None], g[picks]), 1)
    return counts, inv


def cluster_bootstrap(correct, cells, labels=None, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                      level: float = 0.95) -> dict:
    """Image-level accuracy and its cluster-bootstrap interval (percentile method).

    Cells are resampled over all cells, or within their class when ``labels`` is given.
    """
    correct = np.asarray(correct, float)
    counts, inv = bootstrap_draws(cells, labels, n_boot, seed)
    k = np.bincount(inv, weights=correct, minlength=counts.shape[1])
    n = np.bincount(inv, minlength=counts.shape[1]).astype(float)
    boot = (counts @ k) / (counts @ n)
    a = (1 - level) / 2
    return {"value": float(correct.mean()), "lo": float(np.quantile(boot, a)), "hi": float(np.quantile(boot, 1 - a)),
            "n_images": int(len(correct)), "n_cells": int(len(n)), "n_boot": int(n_boot), "seed": int(seed)}


def paired_difference(correct_a, correct_b, cells, labels=None, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                      level: float = 0.95) -> dict:
    """Accuracy of A minus B on the same images, with a paired cluster-bootstrap interval.

    ``resolved`` is False when the interval includes 0.
    """
    a_, b_ = np.asarray(correct_a, float), np.asarray(correct_b, float)
    if a_.shape != b_.shape:
        raise ValueError("paired comparison needs predictions on the same images")
    counts, inv = bootstrap_draws(cells, labels, n_boot, seed)
    n = np.bincount(inv, minlength=counts.shape[1]).astype(float)
    d = np.bincount(inv, weights=a_ - b_, minlength=counts.shape[1])
    boot = (counts @ d) / (counts @ n)
    a = (1 - level) / 2
    lo, hi = float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))
    return {"diff": float(a_.mean() - b_.mean()), "lo": lo, "hi": hi, "resolved": bool(lo > 0 or hi < 0)}


def cell_majority(pred, labels, cells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority vote per source cell: (cell ids, true label, voted label). Ties go to the lowest class."""
    uniq, inv, strata = _cell_index(cells, labels)
    votes = np.zeros((len(uniq), len(CLASSES)), int)
    np.add.at(votes, (inv, np.asarray(pred)), 1)
    return uniq, strata, votes.argmax(1)


def confusion(y, pred, n: int = len(CLASSES)) -> np.ndarray:
    m = np.zeros((n, n), int)
    np.add.at(m, (np.asarray(y), np.asarray(pred)), 1)
    return m


def regression_decoded(scores) -> np.ndarray:
    """The 'regression' reading of paper-encoded MSE/Huber: the outputs' mean, rounded to a class index."""
    return np.clip(np.rint(np.asarray(scores, float).mean(1)), 0, len(CLASSES) - 1).astype(int)


def paper_metric(loss: str, encoding: str, labels, scores) -> float:
    """What the 2020 code's ``metrics=['accuracy']`` printed (see :mod:`wbc_utils.losses`)."""
    pred = np.asarray(scores).argmax(1)
    if loss != "crossentropy" and encoding == "paper":
        return float((pred == 0).mean())
    return float((pred == np.asarray(labels)).mean())


def evaluate_predictions(scores, labels, cells, simple_scores=None, simple_labels=None, loss: str | None = None,
                         encoding: str | None = None, regression: bool | None = None) -> dict:
    """All the metrics of one run on TEST (and TEST_SIMPLE when given).

    With ``loss`` and ``encoding``, also the 2020 metric (``paper_metric_test``).
    ``regression`` adds the accuracy of reading the outputs as a regression onto the
    class index, with its interval; by default for MSE and Huber trained on integer labels.
    """
    if regression is None:
        regression = loss is not None and loss != "crossentropy" and encoding == "paper"
    scores = np.asarray(scores, float)
    labels = np.asarray(labels)
    pred = scores.argmax(1)
    correct = pred == labels
    share = np.bincount(pred, minlength=len(CLASSES)) / len(pred)
    out: dict = {"test_accuracy": float(correct.mean()), "evaluation_version": EVALUATION_VERSION}
    ci = cluster_bootstrap(correct, cells)
    sci_ = cluster_bootstrap(correct, cells, labels)
    out["test_accuracy_ci"] = [ci["lo"], ci["hi"]]
    out["test_accuracy_ci_stratified"] = [sci_["lo"], sci_["hi"]]
    out["test_images"], out["test_cells"] = ci["n_images"], ci["n_cells"]
    ucells, ctrue, cvote = cell_majority(pred, labels, cells)
    cell_ok = ctrue == cvote
    cci = cluster_bootstrap(cell_ok, ucells)
    out["cell_accuracy"] = float(cell_ok.mean())
    out["cell_accuracy_ci"] = [cci["lo"], cci["hi"]]
    out["per_class"] = {}
    for c, name in enumerate(CLASSES):
        m = labels == c
        mc = ctrue == c
        out["per_class"][name] = {"recall": float(correct[m].mean()) if m.any() else None,
                                  "images": int(m.sum()), "cells": int(mc.sum()),
                                  "cell_recall": float(cell_ok[mc].mean()) if mc.any() else None}
    out["predicted_share"] = {name: float(share[c]) for c, name in enumerate(CLASSES)}
    out["top_class_share"] = float(share.max())
    out["argmax_class0_share"] = float(share[0])
    out["collapsed"] = bool(share.max() >= COLLAPSE_SHARE)
    out["confusion"] = confusion(labels, pred).tolist()
    out["misclassified_cells"] = [str(c) for c in ucells[~cell_ok]]
    if loss is not None:
        out["paper_metric_test"] = paper_metric(loss, encoding, labels, scores)
    if regression:
        rok = regression_decoded(scores) == labels
        rci = cluster_bootstrap(rok, cells)
        out["regression_decoded_accuracy"] = float(rok.mean())
        out["regression_decoded_accuracy_ci"] = [rci["lo"], rci["hi"]]
    if simple_scores is not None and len(simple_scores):
        sp = np.asarray(simple_scores).argmax(1)
        sok = sp == np.asarray(simple_labels)
        sci = cluster_bootstrap(sok, np.arange(len(sok)))
        out["test_simple_accuracy"] = float(sok.mean())
        out["test_simple_accuracy_ci"] = [sci["lo"], sci["hi"]]
        out["test_simple_images"] = int(len(sok))
    return out


def collapse_epoch(history, threshold: float = 0.02) -> int | None:
    """First epoch (1-based) from which the CE training loss stays within ``threshold`` of ln 4, else None."""
    import math

    losses = list(history)
    for i in range(len(losses)):
        if all(abs(v - math.log(4)) < threshold for v in losses[i:]):
            return i + 1
    return None


def softmax(scores) -> np.ndarray:
    s = np.asarray(scores, float)
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def calibration(probs, labels, bins: int = 10) -> dict:
    """Reliability of the predicted class's probability: per-bin confidence against accuracy, and the ECE.

    The expected calibration error is the image-weighted mean gap |accuracy - confidence| over
    ``bins`` equal-width confidence bins (Guo et al., 2017).
    """
    probs = np.asarray(probs, float)
    conf = probs.max(1)
    ok = probs.argmax(1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            gap = abs(ok[m].mean() - conf[m].mean())
            ece += m.mean() * gap
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                         "confidence": float(conf[m].mean()), "accuracy": float(ok[m].mean())})
    return {"ece": float(ece), "bins": rows, "mean_confidence": float(conf.mean()), "accuracy": float(ok.mean())}


def cell_probabilities(probs, labels, cells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per source cell: (cell ids, true label, mean probability vector over its images)."""
    uniq, inv, strata = _cell_index(cells, labels)
    probs = np.asarray(probs, float)
    total = np.zeros((len(uniq), probs.shape[1]))
    np.add.at(total, inv, probs)
    return uniq, strata, total / np.bincount(inv, minlength=len(uniq))[:, None]


def abstention(probs, labels, share: float = 0.10) -> dict:
    """Accuracy on the items kept when the ``share`` least confident ones are set aside (sent to a person)."""
    probs = np.asarray(probs, float)
    labels = np.asarray(labels)
    conf = probs.max(1)
    n_drop = int(round(share * len(conf)))
    keep = np.argsort(-conf, kind="stable")[:len(conf) - n_drop]
    ok = probs.argmax(1) == labels
    return {"share": share, "abstained": n_drop, "kept": int(len(keep)), "accuracy_all": float(ok.mean()),
            "accuracy_kept": float(ok[keep].mean()) if len(keep) else float("nan"),
            "errors_abstained": int((~ok).sum() - (~ok[keep]).sum())}
