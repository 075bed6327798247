"""Metrics over source cells, checked against cases that can be worked out by hand."""
from __future__ import annotations

import math

import numpy as np

from wbc_utils.evaluation import (cell_majority, cluster_bootstrap, collapse_epoch, evaluate_predictions,
                                  paired_difference)


def test_all_correct_gives_interval_1_1():
    cells = np.repeat(np.arange(10), 5)
    r = cluster_bootstrap(np.ones(50), cells, np.zeros(50, int))
    assert r["value"] == 1 and r["lo"] == 1 and r["hi"] == 1 and r["n_cells"] == 10


def test_two_cells_exact_distribution():
    # cell A: 3 images all right; cell B: 1 image wrong. Resampling 2 cells with replacement:
    # AA (p=1/4) -> 1; BB (1/4) -> 0; AB or BA (1/2) -> 3/4.
    correct = np.array([1, 1, 1, 0])
    cells = np.array(["A", "A", "A", "B"])
    from wbc_utils.evaluation import bootstrap_draws

    counts, inv = bootstrap_draws(cells, np.zeros(4, int), n_boot=20000, seed=1)
    k = np.bincount(inv, weights=correct)
    n = np.bincount(inv).astype(float)
    boot = (counts @ k) / (counts @ n)
    vals, freq = np.unique(np.round(boot, 6), return_counts=True)
    assert list(vals) == [0.0, 0.75, 1.0]
    np.testing.assert_allclose(freq / freq.sum(), [0.25, 0.5, 0.25], atol=0.015)
    r = cluster_bootstrap(correct, cells, np.zeros(4, int))
    assert r["lo"] == 0.0 and r["hi"] == 1.0 and r["value"] == 0.75


def test_bootstrap_resamples_cells_not_images():
    # 2 cells of 100 images each, one all right, one all wrong: an image bootstrap would give ~[0.43, 0.57];
    # the cell bootstrap must span [0, 1].
    correct = np.r_[np.ones(100), np.zeros(100)]
    cells = np.r_[np.zeros(100), np.ones(100)]
    r = cluster_bootstrap(correct, cells, np.zeros(200, int))
    assert r["lo"] == 0 and r["hi"] == 1


def test_stratified_bootstrap_keeps_each_class():
    # class 0: one cell, right; class 1: one cell, wrong. Stratified resampling keeps one of each: always 0.5.
    r = cluster_bootstrap(np.array([1, 1, 0, 0]), np.array(["a", "a", "b", "b"]), np.array([0, 0, 1, 1]))
    assert r["lo"] == r["hi"] == 0.5


def test_paired_difference_resolution():
    cells = np.repeat(np.arange(30), 4)
    a = np.ones(120)
    b = np.zeros(120)
    d = paired_difference(a, b, cells)
    assert d["diff"] == 1 and d["lo"] == 1 and d["resolved"]
    same = paired_difference(a, a, cells)
    assert same["diff"] == 0 and not same["resolved"]


def test_cell_majority_vote():
    pred = np.array([0, 0, 1, 2, 2, 2])
    labels = np.array([0, 0, 0, 2, 2, 2])
    cells = np.array(["x", "x", "x", "y", "y", "y"])
    ids, true, vote = cell_majority(pred, labels, cells)
    assert list(ids) == ["x", "y"] and list(true) == [0, 2] and list(vote) == [0, 2]


def test_evaluate_predictions_collapse_and_recall():
    labels = np.repeat([0, 1, 2, 3], 25)
    cells = np.array([f"{l}/{i % 5}" for i, l in enumerate(labels)])
    scores = np.zeros((100, 4))
    scores[:, 3] = 1  # always NEUTROPHIL
    m = evaluate_predictions(scores, labels, cells)
    assert m["collapsed"] and m["top_class_share"] == 1.0 and m["test_accuracy"] == 0.25
    assert m["per_class"]["NEUTROPHIL"]["recall"] == 1.0 and m["per_class"]["MONOCYTE"]["recall"] == 0.0
    assert m["per_class"]["MONOCYTE"]["cells"] == 5
    assert m["argmax_class0_share"] == 0.0
    good = np.eye(4)[labels]
    m2 = evaluate_predictions(good, labels, cells, good[:8], labels[:8])
    assert not m2["collapsed"] and m2["test_accuracy"] == 1 and m2["cell_accuracy"] == 1
    assert m2["test_accuracy_ci"] == [1.0, 1.0] and m2["test_simple_accuracy"] == 1
    assert m2["test_accuracy_ci_stratified"] == [1.0, 1.0]


def test_headline_interval_resamples_all_cells_together():
    # class 0: one cell right; class 1: one cell wrong. Over all cells the mix varies: [0, 1];
    # within class (stratified) it cannot: always 0.5.
    labels = np.repeat([0, 1, 2, 3], 10)
    cells = np.array([f"{l}/{i % 2}" for i, l in enumerate(labels)])
    scores = np.eye(4)[np.where(labels < 2, labels, 0)]
    m = evaluate_predictions(scores, labels, cells)
    lo, hi = m["test_accuracy_ci"]
    slo, shi = m["test_accuracy_ci_stratified"]
    assert m["test_accuracy"] == 0.5 + 0.25 * 0  # classes 0, 1 right (20), 2 wrong, 3 wrong
    assert slo == shi == 0.5 and lo < 0.5 < hi


def test_collapse_epoch():
    ln4 = math.log(4)
    assert collapse_epoch([1.5, 1.39, ln4, ln4]) == 2
    assert collapse_epoch([1.5, 1.0, 0.5]) is None
