"""Metrics of one model on true source cells, checked against cases that can be worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from wbc_utils.evaluation import (
    abstention,
    calibration,
    cell_votes,
    collapse_verdict,
    constant_loss,
    evaluate_predictions,
    held_from_epoch,
    output_spread,
    per_slide,
    risk_coverage,
    slide_means,
)


def frame(scores, labels, cells, shared=None, slides=None, split="TEST"):
    """A predictions frame as training writes it."""
    scores = np.asarray(scores, float)
    n = len(labels)
    f = pd.DataFrame({"split": split, "relpath": [f"{split}/x/{i:04d}.jpeg" for i in range(n)],
                      "class": "x", "label": labels, "cell": [str(c) for c in cells],
                      "slide": pd.array(slides if slides is not None else pd.factorize(np.asarray(cells))[0],
                                        dtype="Int64"),
                      "shared": np.zeros(n, bool) if shared is None else shared})
    f["pred"] = scores.argmax(1)
    for i, c in enumerate(("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")):
        f[f"score_{c}"] = scores[:, i]
    return f


def test_cell_vote_majority_ties_and_confidence():
    probs = np.array([[.9, .1, 0, 0], [.6, .4, 0, 0], [.2, .8, 0, 0],      # cell a: 2 votes for 0
                      [.45, .55, 0, 0], [.9, .1, 0, 0]])                    # cell b: tie 1-1, mean p favours 0
    v = cell_votes(probs, [0, 0, 0, 1, 1], ["a", "a", "a", "b", "b"])
    assert list(v.ids) == ["a", "b"] and list(v.voted) == [0, 0] and list(v.true) == [0, 1]
    assert v.confidence[0] == pytest.approx((.9 + .6 + .2) / 3)
    assert list(v.correct) == [True, False] and list(v.images) == [3, 2]


def test_test_simple_counts_each_distinct_slide_once():
    # slide 7 appears twice (both wrong), slides 8 and 9 once (right): per file 1/2, per slide 2/3
    scores = np.eye(4)[[1, 1, 0, 0]]
    f = frame(scores, [0, 0, 0, 0], cells=[7, 7, 8, 9], slides=[7, 7, 8, 9], split="TEST_SIMPLE")
    slides, idx = per_slide(f)
    assert len(slides) == 3
    np.testing.assert_allclose(slide_means((scores.argmax(1) == 0).astype(float), idx), [0, 1, 1])
    m = evaluate_predictions(frame(scores, [0] * 4, [1, 2, 3, 4]), f)
    assert m["test_simple_accuracy"] == pytest.approx(2 / 3) and m["test_simple_slides"] == 3
    assert m["test_simple_files"] == 4


def test_headline_leaves_shared_cells_out_and_reports_all_of_test():
    labels = np.repeat([0, 1, 2, 3], 12)
    cells = np.array([f"{l}-{i % 3}" for i, l in enumerate(labels)])
    shared = np.array([c.endswith("-0") for c in cells])
    scores = np.eye(4)[np.where(shared, labels, (labels + 1) % 4)]  # right only on the shared cells
    m = evaluate_predictions(frame(scores, labels, cells, shared))
    assert m["test_accuracy"] == pytest.approx(1 / 3) and m["unseen_accuracy"] == 0.0
    assert m["shared_cells"] == 4 and m["shared_images"] == 16
    assert m["unseen_cells"] == 8 and m["test_cells"] == 12
    assert m["unseen_accuracy_ci"][0] == 0.0 and m["unseen_accuracy_ci"][1] > 0.05  # boundary: not [0, 0]
    assert m["per_class"]["MONOCYTE"]["cells"] == 2  # per-class figures are on unseen cells


def test_images_of_one_cell_count_as_one_unit():
    # 10 cells x 40 images: a cell is all right or all wrong. The interval must be that of ~10 units.
    labels = np.repeat([0, 1, 2, 3], 100)
    cells = np.array([f"{l}-{(i // 40) % 10}" for i, l in enumerate(labels)])
    right = np.array([int(c.split("-")[1]) % 2 == 0 for c in cells])
    scores = np.eye(4)[np.where(right, labels, (labels + 1) % 4)]
    m = evaluate_predictions(frame(scores, labels, cells))
    lo, hi = m["unseen_accuracy_ci_unstratified"]
    p = m["unseen_accuracy"]
    assert hi - lo > 4 * 1.96 * math.sqrt(p * (1 - p) / len(labels))


def test_constant_loss_closed_forms():
    assert constant_loss("crossentropy", "integer", [10, 10, 10, 10]) == pytest.approx(math.log(4), abs=1e-6)
    # integer-label MSE: every output predicts the mean label; the loss is the labels' variance
    assert constant_loss("mse", "integer", [1, 1, 1, 1]) == pytest.approx(1.25, abs=1e-5)
    # one-hot MSE against a softmax: the best constant is the class prior: mean_k p_k(1-p_k) ... = 0.1875
    assert constant_loss("mse", "onehot", [5, 5, 5, 5]) == pytest.approx(0.1875, abs=1e-5)
    assert constant_loss("huber", "onehot", [5, 5, 5, 5]) == pytest.approx(0.1875 / 2, abs=1e-5)
    unbalanced = constant_loss("crossentropy", "integer", [30, 10, 10, 10])
    p = np.array([.5, 1 / 6, 1 / 6, 1 / 6])
    assert unbalanced == pytest.approx(-(p * np.log(p)).sum(), abs=1e-5)


def test_one_collapse_definition_catches_runs_held_at_ln4_that_split_their_votes():
    """A run held at ln 4 whose near-constant outputs still split between classes (top-class share ~45%)
    was missed by the old 'one class for 95% of TEST' rule; the one definition catches it."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], 50)
    flat = rng.normal(0, 1e-3, (200, 4)) + np.array([0.0, 0.0, 1e-3, 0.0])
    assert np.bincount(flat.argmax(1)).max() / 200 < 0.6
    spread = output_spread(flat, labels, "crossentropy", "integer")
    v = collapse_verdict(math.log(4) + 0.001, math.log(4), spread)
    assert v["collapsed"] and v["held_at_constant_loss"] and spread < 0.01
    learning = np.eye(4)[labels] * 3 + rng.normal(0, 1, (200, 4))
    v2 = collapse_verdict(0.6, math.log(4), output_spread(learning, labels, "crossentropy", "integer"))
    assert not v2["collapsed"] and not v2["held_at_constant_loss"]
    # held but with varied outputs (a diverging run) is not 'collapsed'
    assert not collapse_verdict(2.0, math.log(4), 0.8)["collapsed"]


def test_regression_outputs_spread_uses_raw_outputs():
    labels = np.repeat([0, 1, 2, 3], 10)
    regress = np.repeat(labels[:, None].astype(float), 4, 1) + 0.01  # perfect regression onto the index
    assert output_spread(regress, labels, "mse", "integer") == pytest.approx(1.0)
    # as probabilities (softmax of four equal outputs) they would look constant
    assert output_spread(regress, labels, "mse", "onehot") < 1e-6


def test_evaluate_predictions_collapse_needs_training_loss():
    labels = np.repeat([0, 1, 2, 3], 25)
    cells = [f"{l}/{i % 5}" for i, l in enumerate(labels)]
    scores = np.zeros((100, 4))
    scores[:, 3] = 1e-6
    m = evaluate_predictions(frame(scores, labels, cells), loss="crossentropy", encoding="integer",
                             final_train_loss=1.3863, train_class_counts=[10, 10, 10, 10])
    assert m["collapsed"] and m["top_class_share"] == 1.0 and m["unseen_accuracy"] == 0.25
    assert m["constant_loss"] == pytest.approx(math.log(4), abs=1e-6)
    good = np.eye(4)[labels] * 5
    m2 = evaluate_predictions(frame(good, labels, cells), frame(good[:8], labels[:8], cells[:8]), loss="mse",
                              encoding="onehot", final_train_loss=0.01, train_class_counts=[10] * 4)
    assert not m2["collapsed"] and m2["unseen_accuracy"] == 1 and m2["unseen_cell_accuracy"] == 1
    assert m2["unseen_accuracy_ci"][1] == 1.0 and m2["unseen_accuracy_ci"][0] < 1.0  # never [100, 100]
    assert m2["test_simple_accuracy"] == 1


def test_held_from_epoch():
    ln4 = math.log(4)
    assert held_from_epoch([1.5, 1.0, ln4, ln4], ln4) == 3
    assert held_from_epoch([1.5, 1.39, ln4, ln4], ln4) == 1  # worse than a constant counts as held too
    assert held_from_epoch([1.5, 1.0, 0.5], ln4) is None


def test_calibration_ece_interval_and_bins():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 400)
    conf = rng.uniform(0.4, 1.0, 400)
    right = rng.random(400) < conf  # calibrated by construction
    pred = np.where(right, labels, (labels + 1) % 4)
    probs = np.repeat(((1 - conf) / 3)[:, None], 4, 1)
    probs[np.arange(400), pred] = conf
    cal = calibration(probs, labels, cells=np.arange(400) // 4)
    assert cal["ece"] < 0.08 and cal["ece_ci"][0] <= cal["ece"] <= cal["ece_ci"][1]
    assert sum(b["n"] for b in cal["bins"]) == 400
    over = probs.copy()
    over[np.arange(400), pred] = 0.99
    assert calibration(over, labels)["ece"] > 0.2


def test_abstention_and_risk_coverage():
    conf = np.array([.9, .8, .7, .6, .5, .4, .3, .2, .1, .05])
    ok = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0], bool)
    a = abstention(conf, ok, 0.3)
    assert a["abstained"] == 3 and a["accuracy_kept"] == pytest.approx(6 / 7) and a["errors_abstained"] == 3
    rc = risk_coverage(conf, ok, points=3)
    assert rc["accuracy"].iloc[0] == pytest.approx(0.6) and rc["random_baseline"].iloc[0] == pytest.approx(0.6)
    assert rc["accuracy"].iloc[-1] == 1.0
