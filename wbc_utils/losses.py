"""The three losses under two target encodings, and the two accuracies.

The model always outputs 4 raw scores. The *encoding* decides what the loss compares them with:

``paper``
    what the 2020 code did: the integer label ``y`` (0-3) goes to every loss.
    Sparse cross-entropy reads it correctly. MSE and Huber broadcast it against
    all four outputs, so each output regresses towards the class *index*: the
    four scores become equal and their argmax carries no information.
``onehot``
    the correct formulation: MSE and Huber compare ``softmax(scores)`` with the
    one-hot target; cross-entropy compares it with the one-hot target, which is
    the same function as sparse cross-entropy from logits.

``accuracy`` is always the true argmax accuracy against the true class.
``paper_metric`` is what the original code's ``metrics=['accuracy']`` printed
under TF 2.1: sparse categorical accuracy for cross-entropy, but for MSE and
Huber, Keras picked ``categorical_accuracy``, which takes the argmax of the
(N, 1) integer label, always 0, so it printed the share of predictions whose
argmax is class 0 (EOSINOPHIL): about 25% whatever the model learned.
"""
from __future__ import annotations

from .params import ENCODINGS, LOSS_TITLES, LOSSES, PAPER_LOSS_NAMES, check_encoding, check_loss  # noqa: F401
from .tfenv import import_tf


def make_loss(loss: str, encoding: str, label_smoothing: float = 0.0):
    """A Keras loss taking integer labels (N,) and raw scores (N, 4)."""
    check_loss(loss), check_encoding(encoding)
    return _EncodedLoss(loss=loss, encoding=encoding, label_smoothing=float(label_smoothing))


def loss_value(loss: str, encoding: str, y, scores, label_smoothing: float = 0.0):
    """Per-example loss (N,) for integer labels ``y`` and raw scores, under an encoding.

    ``label_smoothing`` (cross-entropy only) mixes the one-hot target with the
    uniform one: 1 - e + e/4 on the true class, e/4 elsewhere.
    """
    import keras
    from keras import ops

    scores = ops.cast(scores, "float32")
    y = ops.reshape(ops.cast(y, "int32"), (-1,))
    if loss == "crossentropy":
        if label_smoothing:
            return keras.losses.categorical_crossentropy(ops.one_hot(y, 4), scores, from_logits=True,
                                                         label_smoothing=label_smoothing)
        return keras.losses.sparse_categorical_crossentropy(y, scores, from_logits=True)
    if encoding == "paper":
        target = ops.cast(ops.reshape(y, (-1, 1)), "float32")  # broadcast against all 4 outputs
        pred = scores
    else:
        target = ops.one_hot(y, 4)
        pred = ops.softmax(scores, axis=-1)
    diff = pred - target
    if loss == "mse":
        return ops.mean(ops.square(diff), axis=-1)
    abs_d = ops.abs(diff)  # Huber with delta = 1, Keras's default
    return ops.mean(ops.where(abs_d <= 1.0, 0.5 * ops.square(diff), abs_d - 0.5), axis=-1)


def paper_metric_value(loss: str, encoding: str, y, scores):
    """Per-example 0/1 of what the original code's 'accuracy' printed."""
    from keras import ops

    pred = ops.argmax(scores, axis=-1)
    y = ops.reshape(ops.cast(y, "int32"), (-1,))
    if loss != "crossentropy" and encoding == "paper":
        return ops.cast(ops.equal(pred, 0), "float32")
    return ops.cast(ops.equal(ops.cast(pred, "int32"), y), "float32")


def _keras():
    import_tf()
    import keras
    return keras


keras = _keras()


@keras.saving.register_keras_serializable(package="wbc_utils")
class _EncodedLoss(keras.losses.Loss):
    def __init__(self, loss: str = "crossentropy", encoding: str = "paper", label_smoothing: float = 0.0,
                 name: str | None = None, **kw):
        super().__init__(name=name or f"{loss}_{encoding}", **kw)
        self.loss, self.encoding, self.label_smoothing = loss, encoding, float(label_smoothing)

    def call(self, y_true, y_pred):
        return loss_value(self.loss, self.encoding, y_true, y_pred, self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "loss": self.loss, "encoding": self.encoding,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="wbc_utils")
class PaperMetric(keras.metrics.MeanMetricWrapper):
    """What the 2020 code's ``metrics=['accuracy']`` printed for this loss."""

    def __init__(self, loss: str = "crossentropy", encoding: str = "paper", name: str = "paper_metric", **kw):
        kw.pop("fn", None)
        super().__init__(fn=lambda y, s: paper_metric_value(loss, encoding, y, s), name=name, **kw)
        self.loss, self.encoding = loss, encoding

    def get_config(self):
        return {"loss": self.loss, "encoding": self.encoding, "name": self.name, "dtype": self.dtype}


def true_accuracy_metric():
    keras = _keras()
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def load_keras_model(path, compile: bool = False):
    """Open a saved model; this module registers the custom loss and metric it may name."""
    return keras.models.load_model(path, compile=compile)
