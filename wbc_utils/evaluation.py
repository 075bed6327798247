"""Metrics of one model's predictions, counted on the dataset's true source cells.

TEST's 2,487 images are augmented copies of 71 original slides that show 68
independent white cells; 6 of those cells are also in TRAIN (202 images). The
manifest gives every image its ``slide``, its same-cell cluster ``cell`` and
whether that cell is ``shared`` with TRAIN (:mod:`wbc_utils.slides`). Every
figure here is computed twice: on **all of TEST** (comparable with the 2020
report, which used all of it) and on TEST's **unseen** cells (without the 6
shared ones: the headline, since a model has seen those cells in training).

* image-level accuracy, with an interval over TEST's same-cell clusters, stratified
  by class (the method: :mod:`wbc_utils.stats`; the unstratified one is kept as a check);
* cell-level accuracy: one vote per cell, the majority of its images' predicted
  classes (ties: the higher mean probability); the same rule gives each cell's
  confidence (the mean probability of the voted class), used for abstention;
* TEST_SIMPLE, scored per **distinct slide** (two slides appear twice: their
  files are averaged, so each slide counts once);
* per-class recall with its number of cells and interval;
* **collapse**, one definition used everywhere: a run has collapsed when its
  training loss (the finished model's, on its training images in inference
  mode) is no better than the best *constant* prediction's
  (within 2%: for cross-entropy on balanced classes that constant loss is
  ln 4 = 1.386) **and** its outputs barely vary across TEST images (their
  spread is under a fifth of the targets'). The share of TEST predicted as the
  most frequent class is reported beside it: a collapsed run can split its
  near-constant outputs between classes by rounding alone;
* calibration (ECE with its interval and per-bin counts) and risk-coverage.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from . import CLASSES, registry
from .stats import BOOT_SEED, N_BOOT, Clusters, mean_interval

#: Bumped when a metric's definition changes; `python -m wbc_utils reevaluate` recomputes old runs.
#: 4: true source cells (slides, same-cell clusters), unseen-cell scope, stratified two-stage intervals,
#: the one collapse definition, TEST_SIMPLE per distinct slide. 5: collapse's spread threshold 0.05 -> 0.2.
#: 6: t intervals with Satterthwaite degrees of freedom; collapse's loss measured in inference mode.
EVALUATION_VERSION = 6
SCORE_COLUMNS = [f"score_{c}" for c in CLASSES]
#: A final training loss within this fraction of the best constant prediction's loss counts as "no better".
COLLAPSE_LOSS_TOL = 0.02
#: Outputs whose spread across TEST images is under this fraction of the targets' spread count as near-constant.
#: A convention, shown against the data in the report's collapse figure: runs that learn sit well above it
#: (0.15-0.6 at the quick profile's size), runs held at the constant loss below it.
COLLAPSE_SPREAD_MAX = 0.2
CALIBRATION_BINS = 10
#: The evaluation scopes of TEST: (key prefix, words).
SCOPES = (("unseen", "TEST without the cells shared with TRAIN"), ("test", "all of TEST"))


def softmax(scores) -> np.ndarray:
    s = np.asarray(scores, float)
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def regression_outputs(loss: str | None, encoding: str | None) -> bool:
    """True for a loss that regresses integer labels (MSE, Huber: ``LossSpec.regresses_integer_labels``) trained
    on them: its outputs regress onto the class index."""
    return loss is not None and registry.get(loss).regresses(encoding)


def decision_outputs(scores, loss: str | None = None, encoding: str | None = None) -> np.ndarray:
    """What the loss compared with the target: softmax probabilities, or the raw outputs for a loss that
    regresses integer labels (MSE, Huber) trained on them."""
    return np.asarray(scores, float) if regression_outputs(loss, encoding) else softmax(scores)


def scores_of(frame) -> np.ndarray:
    """The (N, 4) raw scores of a predictions frame."""
    return frame[SCORE_COLUMNS].to_numpy(np.float64)


# ----------------------------------------------------------------------------- cells


@dataclasses.dataclass
class CellVotes:
    """One vote per same-cell cluster: the majority of its images' predicted classes."""

    ids: np.ndarray
    true: np.ndarray
    voted: np.ndarray
    confidence: np.ndarray  # mean probability of the voted class over the cell's images
    images: np.ndarray
    shared: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.true == self.voted


def cell_votes(probs, labels, cells, shared=None) -> CellVotes:
    """Majority vote per cell; ties go to the class with the higher mean probability.

    A cell's true label is its first image's (two TRAIN slides show one cell under two labels).
    """
    probs = np.asarray(probs, float)
    c = Clusters.of(cells, labels)
    pred = probs.argmax(1)
    votes = np.zeros((len(c), probs.shape[1]))
    np.add.at(votes, (c.index, pred), 1)
    mean_p = np.zeros_like(votes)
    np.add.at(mean_p, c.index, probs)
    mean_p /= c.sizes[:, None]
    voted = (votes + 1e-3 * mean_p).argmax(1)  # a mean probability (< 1) only ever breaks a tie
    sh = np.zeros(len(c), bool)
    if shared is not None:
        np.logical_or.at(sh, c.index, np.asarray(shared, bool))
    return CellVotes(ids=c.ids, true=c.strata, voted=voted, confidence=mean_p[np.arange(len(c)), voted],
                     images=c.sizes, shared=sh)


def per_slide(frame) -> tuple[Any, np.ndarray]:
    """Distinct slides of a frame (first row of each) and each row's slide position.

    Rows without a known slide count as slides of their own.
    """
    key = frame["slide"].astype("string").fillna("?" + frame["relpath"].astype("string")).to_numpy()
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return frame.iloc[first].reset_index(drop=True), inv.reshape(-1)


def slide_means(values, index: np.ndarray) -> np.ndarray:
    """Average per-row values ((N,) or (S, N)) within each slide: (n_slides,) or (S, n_slides)."""
    v = np.asarray(values, float)
    n = np.bincount(index)
    if v.ndim == 1:
        return np.bincount(index, weights=v, minlength=len(n)) / n
    return np.stack([np.bincount(index, weights=r, minlength=len(n)) / n for r in v])


# ----------------------------------------------------------------------------- collapse


def constant_loss(loss: str, encoding: str, class_counts, label_smoothing: float = 0.0) -> float:
    """The lowest training loss a model that ignores its input can reach, for these class counts.

    Found numerically by minimising the registered loss's NumPy twin (``LossSpec.numpy_loss``, the same function
    as the one that trains) over one constant output for every image (cross-entropy on balanced classes: ln 4;
    integer-label MSE: the variance of the labels).
    """
    spec = registry.get(loss)
    p = np.asarray(class_counts, float)
    p = p / p.sum()
    k = len(p)
    y = np.arange(k)

    def f(z):
        per_class = spec.numpy_loss(y, np.tile(z, (k, 1)), encoding, label_smoothing)
        return float((p * np.asarray(per_class, float)).sum())

    starts = [np.zeros(k), np.log(np.maximum(p, 1e-9)), np.full(k, float((p * y).sum()))]
    return min(minimize(f, s, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000}).fun
               for s in starts)


def output_spread(scores, labels, loss: str | None = None, encoding: str | None = None) -> float:
    """Spread of the outputs across images, relative to the targets' (0: a constant output; ~1: as varied
    as the targets). Outputs are what the loss compared: probabilities, or raw integer-label regressions."""
    out = decision_outputs(scores, loss, encoding)
    labels = np.asarray(labels)
    target = (np.repeat(labels[:, None].astype(float), out.shape[1], 1) if regression_outputs(loss, encoding)
              else np.eye(out.shape[1])[labels])
    t = target.std(0).mean()
    return float(out.std(0).mean() / t) if t > 0 else float("nan")


def collapse_verdict(final_train_loss: float | None, const_loss: float | None, spread: float) -> dict:
    """The one collapse definition (see the module doc), with both criteria recorded."""
    ratio = (final_train_loss / const_loss if final_train_loss is not None and const_loss
             and math.isfinite(final_train_loss) else None)
    held = None if ratio is None else bool(ratio >= 1 - COLLAPSE_LOSS_TOL)
    flat = bool(spread < COLLAPSE_SPREAD_MAX) if math.isfinite(spread) else False
    return {"collapsed": bool(flat if held is None else (held and flat)), "train_loss_vs_constant": ratio,
            "held_at_constant_loss": held, "output_spread": spread}


def held_from_epoch(train_losses, const_loss: float) -> int | None:
    """First epoch (1-based) from which the training loss stays no better than a constant's, else None."""
    losses = list(train_losses)
    for i in range(len(losses)):
        if all(v >= (1 - COLLAPSE_LOSS_TOL) * const_loss for v in losses[i:]):
            return i + 1
    return None


# ----------------------------------------------------------------------------- metrics


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
    if regression_outputs(loss, encoding):
        return float((pred == 0).mean())
    return float((pred == np.asarray(labels)).mean())


def _ci(r: dict) -> list:
    return [r["lo"], r["hi"]]


def accuracy_block(prefix: str, correct, labels, cells, shared=None, probs=None) -> dict:
    """``<prefix>_accuracy`` (images, with intervals) and ``<prefix>_cell_accuracy`` (one vote per cell)."""
    correct = np.asarray(correct, float)
    c = Clusters.of(cells, labels)
    strat, plain = mean_interval(correct, c), mean_interval(correct, c, stratified=False)
    out = {f"{prefix}_accuracy": strat["value"], f"{prefix}_accuracy_ci": _ci(strat),
           f"{prefix}_accuracy_ci_unstratified": _ci(plain), f"{prefix}_accuracy_ci_method": strat["method"],
           f"{prefix}_images": int(len(correct)), f"{prefix}_cells": int(len(c))}
    if probs is not None:
        v = cell_votes(probs, labels, cells, shared)
        cc = mean_interval(v.correct, Clusters.of(v.ids, v.true))
        out.update({f"{prefix}_cell_accuracy": cc["value"], f"{prefix}_cell_accuracy_ci": _ci(cc)})
    return out


def evaluate_predictions(test, simple=None, loss: str | None = None, encoding: str | None = None,
                         regression: bool | None = None, final_train_loss: float | None = None,
                         train_class_counts=None, label_smoothing: float = 0.0) -> dict:
    """All the metrics of one model on TEST (and TEST_SIMPLE when given).

    ``test`` and ``simple`` are predictions frames: ``label, cell, slide, shared, relpath`` and the four
    ``score_*`` columns. With ``loss`` and ``encoding``, also the 2020 metric and the collapse verdict
    (which needs ``final_train_loss`` and ``train_class_counts`` for its training-loss half).
    ``regression`` adds the accuracy of reading the outputs as a regression onto the class index; by
    default for MSE and Huber trained on integer labels.
    """
    if regression is None:
        regression = regression_outputs(loss, encoding)
    scores, labels = scores_of(test), test["label"].to_numpy()
    cells, shared = test["cell"].astype(str).to_numpy(), test["shared"].to_numpy(bool)
    probs = softmax(scores)
    pred = scores.argmax(1)
    correct = pred == labels
    out: dict = {"evaluation_version": EVALUATION_VERSION,
                 "shared_cells": int(len(np.unique(cells[shared]))), "shared_images": int(shared.sum()),
                 "unmapped_images": int(test["slide"].isna().sum())}
    unseen = ~shared
    out.update(accuracy_block("test", correct, labels, cells, shared, probs))
    out.update(accuracy_block("unseen", correct[unseen], labels[unseen], cells[unseen], None, probs[unseen]))
    out["per_class"] = {}
    for k, name in enumerate(CLASSES):
        m = unseen & (labels == k)
        if not m.any():
            out["per_class"][name] = {"recall": None, "images": 0, "cells": 0}
            continue
        r = mean_interval(correct[m], Clusters.of(cells[m]))
        v = cell_votes(probs[m], labels[m], cells[m])
        out["per_class"][name] = {"recall": r["value"], "recall_ci": _ci(r), "images": int(m.sum()),
                                  "cells": int(len(v.ids)), "cell_recall": float(v.correct.mean())}
    share = np.bincount(pred, minlength=len(CLASSES)) / len(pred)
    out["predicted_share"] = {name: float(share[k]) for k, name in enumerate(CLASSES)}
    out["top_class_share"] = float(share.max())
    out["argmax_class0_share"] = float(share[0])
    out["confusion"] = confusion(labels[unseen], pred[unseen]).tolist()
    out["confusion_all"] = confusion(labels, pred).tolist()
    votes = cell_votes(probs, labels, cells, shared)
    out["misclassified_cells"] = [str(c) for c in votes.ids[~votes.correct]]
    if loss is not None:
        out["paper_metric_test"] = paper_metric(loss, encoding, labels, scores)
        spread = output_spread(scores, labels, loss, encoding)
        const = (constant_loss(loss, encoding, train_class_counts, label_smoothing)
                 if train_class_counts is not None else None)
        out["constant_loss"] = const
        out.update(collapse_verdict(final_train_loss, const, spread))
    if regression:
        rok = regression_decoded(scores) == labels
        for prefix, m in (("test", np.ones(len(rok), bool)), ("unseen", unseen)):
            r = mean_interval(rok[m], Clusters.of(cells[m], labels[m]))
            out[f"{prefix}_regression_accuracy"], out[f"{prefix}_regression_accuracy_ci"] = r["value"], _ci(r)
    if not regression_outputs(loss, encoding):
        cal = calibration(probs[unseen], labels[unseen], cells[unseen])
        out.update({"ece": cal["ece"], "ece_ci": cal["ece_ci"], "calibration_bins": cal["bins"]})
    if simple is not None and len(simple):
        out.update(simple_metrics(simple))
    return out


def simple_metrics(simple, scores=None) -> dict:
    """TEST_SIMPLE per distinct slide (duplicates averaged), all of it and its unseen cells."""
    scores = scores_of(simple) if scores is None else np.asarray(scores, float)
    ok = (scores.argmax(1) == simple["label"].to_numpy()).astype(float)
    slides, idx = per_slide(simple)
    v = slide_means(ok, idx)
    out = {"test_simple_files": int(len(simple)), "test_simple_slides": int(len(slides))}
    unseen = ~slides["shared"].to_numpy(bool)
    for prefix, m in (("test_simple", np.ones(len(slides), bool)), ("test_simple_unseen", unseen)):
        r = mean_interval(v[m], Clusters.of(slides["cell"].astype(str).to_numpy()[m], slides["label"].to_numpy()[m]))
        out.update({f"{prefix}_accuracy": r["value"], f"{prefix}_accuracy_ci": _ci(r),
                    f"{prefix}_cells": r["n_clusters"], f"{prefix}_n": int(m.sum())})
    return out


def validation_metrics(val) -> dict:
    """Accuracy on a validation frame (held-out TRAIN cells, with scores): what the lab's choices rest on."""
    scores, labels = scores_of(val), val["label"].to_numpy()
    cells = val["cell"].astype(str).to_numpy()
    b = accuracy_block("val", scores.argmax(1) == labels, labels, cells, None, softmax(scores))
    v = cell_votes(softmax(scores), labels, cells)
    b["val_cells_per_class"] = {c: int((v.true == i).sum()) for i, c in enumerate(CLASSES)}
    return b


# ----------------------------------------------------------------------------- calibration and abstention


def calibration(probs, labels, cells=None, bins: int = CALIBRATION_BINS, n_boot: int | None = None) -> dict:
    """Reliability of the predicted class's probability: per-bin confidence, accuracy and count, and the
    expected calibration error (the image-weighted mean |accuracy - confidence| over equal-width bins;
    Guo et al., 2017) with a cluster-bootstrap interval over ``cells`` (each image its own when None)."""

    probs = np.asarray(probs, float)
    labels = np.asarray(labels)
    conf = probs.max(1)
    ok = (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                         "confidence": float(conf[m].mean()), "accuracy": float(ok[m].mean())})
    gaps = np.zeros((len(conf), bins))
    gaps[np.arange(len(conf)), which] = ok - conf
    ece = float(np.abs(gaps.sum(0)).sum() / len(conf))
    c = Clusters.of(np.arange(len(conf)) if cells is None else np.asarray(cells).astype(str), labels)
    d = np.stack([c.sums(gaps[:, b]) for b in range(bins)], 1)  # (C, bins)
    draws = c.draw(n_boot or N_BOOT, np.random.default_rng(BOOT_SEED))
    boot = np.abs(draws @ d).sum(1) / (draws @ c.sizes)
    return {"ece": ece, "ece_ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "bins": rows, "mean_confidence": float(conf.mean()), "accuracy": float(ok.mean())}


def risk_coverage(confidence, correct, points: int = 21) -> Any:
    """Accuracy on what is kept when the least confident items are set aside, at coverages 100% ... 5%.

    Ties in confidence are broken by order, so the curve is deterministic. Setting items aside at random
    would keep the overall accuracy at every coverage: that is the baseline to beat.
    """

    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    order = np.argsort(-confidence, kind="stable")
    cum = np.cumsum(correct[order])
    rows = []
    for cov in np.linspace(1, 0.05, points):
        k = max(1, int(round(cov * len(order))))
        rows.append({"coverage": k / len(order), "accuracy": cum[k - 1] / k, "kept": k,
                     "random_baseline": float(correct.mean())})
    return pd.DataFrame(rows)


def abstention(confidence, correct, share: float = 0.10) -> dict:
    """Accuracy on the items kept when the ``share`` least confident ones are set aside (sent to a person)."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    n_drop = int(round(share * len(confidence)))
    keep = np.argsort(-confidence, kind="stable")[:len(confidence) - n_drop]
    return {"share": share, "abstained": n_drop, "kept": int(len(keep)), "accuracy_all": float(correct.mean()),
            "accuracy_kept": float(correct[keep].mean()) if len(keep) else float("nan"),
            "errors_abstained": int((~correct).sum() - (~correct[keep]).sum())}
