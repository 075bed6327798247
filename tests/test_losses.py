"""Losses under both encodings, and the two accuracies, against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from wbc_utils.losses import loss_value, paper_metric_value


def _np(x):
    return np.asarray(x, dtype=np.float64)


Y = np.array([0, 1, 2, 3, 2])
S = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def _softmax(s):
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_paper_mse_broadcasts_the_integer_label_against_all_outputs():
    expected = ((Y[:, None] - S) ** 2).mean(1)
    np.testing.assert_allclose(_np(loss_value("mse", "paper", Y, S)), expected, rtol=1e-5)


def test_onehot_mse_compares_softmax_with_onehot():
    expected = ((_softmax(S) - np.eye(4)[Y]) ** 2).mean(1)
    np.testing.assert_allclose(_np(loss_value("mse", "onehot", Y, S)), expected, rtol=1e-5)


def test_huber_delta_1():
    d = Y[:, None] - S
    a = np.abs(d)
    expected = np.where(a <= 1, 0.5 * d * d, a - 0.5).mean(1)
    np.testing.assert_allclose(_np(loss_value("huber", "paper", Y, S)), expected, rtol=1e-5)


@pytest.mark.parametrize("enc", ["paper", "onehot"])
def test_crossentropy_is_the_same_under_both_encodings(enc):
    expected = -np.log(_softmax(S)[np.arange(5), Y])
    np.testing.assert_allclose(_np(loss_value("crossentropy", enc, Y, S)), expected, rtol=1e-5)


def test_paper_metric_for_mse_is_the_share_of_argmax_0():
    scores = np.eye(4, dtype=np.float32)[[0, 0, 1, 3, 2]]
    y = np.array([3, 0, 1, 3, 2])  # true accuracy 4/5, argmax==0 share 2/5
    assert _np(paper_metric_value("mse", "paper", y, scores)).mean() == pytest.approx(0.4)
    assert _np(paper_metric_value("huber", "paper", y, scores)).mean() == pytest.approx(0.4)
    assert _np(paper_metric_value("mse", "onehot", y, scores)).mean() == pytest.approx(0.8)
    assert _np(paper_metric_value("crossentropy", "paper", y, scores)).mean() == pytest.approx(0.8)


def test_keras_training_uses_the_loss(tmp_path):
    """The compiled model's reported loss equals the hand-computed paper-encoded MSE."""
    import keras

    from wbc_utils.model import build_model
    from wbc_utils.params import RunParams
    from wbc_utils.training import compile_model

    model = compile_model(build_model((16, 16)), RunParams(loss="mse", image_size=[16, 16]))
    x = np.random.default_rng(1).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 3, 1, 2])
    res = model.evaluate(x, y, verbose=0, return_dict=True)
    s = np.asarray(model.predict(x, verbose=0))
    assert res["loss"] == pytest.approx(((y[:, None] - s) ** 2).mean(), rel=1e-4)
    assert res["paper_metric"] == pytest.approx((s.argmax(1) == 0).mean())
    assert res["accuracy"] == pytest.approx((s.argmax(1) == y).mean())
    assert isinstance(keras.__version__, str)
