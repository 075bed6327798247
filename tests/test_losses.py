"""Losses under both encodings, and the two accuracies, against hand computations; every registered loss's Keras
function against its NumPy twin; models saved with the loss class still load."""
from __future__ import annotations

import numpy as np
import pytest

from wbc_utils import registry
from wbc_utils.evaluation import paper_metric
from wbc_utils.losses import loss_value, make_loss, paper_metric_value


def _np(x):
    return np.asarray(x, dtype=np.float64)


Y = np.array([0, 1, 2, 3, 2])
S = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def _softmax(s):
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_paper_mse_broadcasts_the_integer_label_against_all_outputs():
    expected = ((Y[:, None] - S) ** 2).mean(1)
    np.testing.assert_allclose(_np(loss_value("mse", "integer", Y, S)), expected, rtol=1e-5)


def test_onehot_mse_compares_softmax_with_onehot():
    expected = ((_softmax(S) - np.eye(4)[Y]) ** 2).mean(1)
    np.testing.assert_allclose(_np(loss_value("mse", "onehot", Y, S)), expected, rtol=1e-5)


def test_huber_delta_1():
    d = Y[:, None] - S
    a = np.abs(d)
    expected = np.where(a <= 1, 0.5 * d * d, a - 0.5).mean(1)
    np.testing.assert_allclose(_np(loss_value("huber", "integer", Y, S)), expected, rtol=1e-5)


@pytest.mark.parametrize("enc", ["integer", "onehot"])
def test_crossentropy_is_the_same_under_both_encodings(enc):
    expected = -np.log(_softmax(S)[np.arange(5), Y])
    np.testing.assert_allclose(_np(loss_value("crossentropy", enc, Y, S)), expected, rtol=1e-5)


def test_paper_metric_for_mse_is_the_share_of_argmax_0():
    scores = np.eye(4, dtype=np.float32)[[0, 0, 1, 3, 2]]
    y = np.array([3, 0, 1, 3, 2])  # true accuracy 4/5, argmax==0 share 2/5
    assert _np(paper_metric_value("mse", "integer", y, scores)).mean() == pytest.approx(0.4)
    assert _np(paper_metric_value("huber", "integer", y, scores)).mean() == pytest.approx(0.4)
    assert _np(paper_metric_value("mse", "onehot", y, scores)).mean() == pytest.approx(0.8)
    assert _np(paper_metric_value("crossentropy", "integer", y, scores)).mean() == pytest.approx(0.8)


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


def assert_twins_agree(spec, seed: int = 0) -> None:
    """The Keras loss that trains and the NumPy twin that scores (the collapse verdict's constant prediction) are
    one function, under both encodings, with label smoothing where the loss takes it; and the 2020 metric's two
    implementations agree."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 64)
    scores = (rng.normal(size=(64, 4)) * 3).astype(np.float32)
    for enc in registry.ENCODINGS:
        for ls in (0.0, 0.1) if spec.label_smoothing else (0.0,):
            got = _np(loss_value(spec.name, enc, y, scores, ls))
            want = np.asarray(spec.numpy_loss(y, scores.astype(np.float64), enc, ls), float)
            assert got.shape == want.shape == (64,), (spec.name, enc)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=f"{spec.name} {enc} ls={ls}")
        assert _np(paper_metric_value(spec.name, enc, y, scores)).mean() == pytest.approx(
            paper_metric(spec.name, enc, y, scores))
    if spec.encodings_coincide:
        np.testing.assert_allclose(spec.numpy_loss(y, scores, registry.INTEGER, 0.0),
                                   spec.numpy_loss(y, scores, registry.ONEHOT, 0.0), rtol=1e-12)


@pytest.mark.parametrize("spec", registry.BUILTIN, ids=lambda s: s.name)
def test_every_registered_loss_has_one_definition_in_keras_and_numpy(spec):
    assert_twins_agree(spec)


def test_a_model_saved_with_the_loss_class_loads_with_its_config():
    """Finished runs' model.keras files name ``wbc_utils>_EncodedLoss`` with the keys loss, encoding and
    label_smoothing: they must keep loading, and compute the same loss."""
    import keras

    y = np.array([0, 1, 2, 3])
    s = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    for loss, enc, ls in (("mse", "integer", 0.0), ("crossentropy", "onehot", 0.1), ("huber", "onehot", 0.0)):
        config = keras.saving.serialize_keras_object(make_loss(loss, enc, ls))
        assert config["registered_name"] == "wbc_utils>_EncodedLoss"
        assert {k: config["config"][k] for k in ("loss", "encoding", "label_smoothing")} == \
            {"loss": loss, "encoding": enc, "label_smoothing": ls}
        back = keras.saving.deserialize_keras_object(config)
        np.testing.assert_allclose(_np(back(y, s)), _np(make_loss(loss, enc, ls)(y, s)), rtol=1e-6)
