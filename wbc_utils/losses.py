"""The registered losses as Keras objects, and the two accuracies.

Each loss is defined once, in :mod:`wbc_utils.registry` (its ``LossSpec``: the Keras function that trains and its
NumPy twin); this module wraps it in the Keras loss class that training compiles and that saved models name
(``_EncodedLoss``, serialised with the keys ``loss``, ``encoding`` and ``label_smoothing``: models saved by
finished runs load unchanged).

``accuracy`` is always the true argmax accuracy against the true class.
``paper_metric`` is what the original code's ``metrics=['accuracy']`` printed
under TF 2.1: sparse categorical accuracy for a loss that reads the integer label
as a class, but for one that regresses it (MSE and Huber: ``LossSpec.regresses_integer_labels``),
Keras picked ``categorical_accuracy``, which takes the argmax of the (N, 1) integer label,
always 0, so it printed the share of predictions whose argmax is class 0
(EOSINOPHIL): about 25% whatever the model learned.
"""
from __future__ import annotations

from . import registry
from .params import check_encoding, check_loss
from .tfenv import import_tf


def make_loss(loss: str, encoding: str, label_smoothing: float = 0.0):
    """A Keras loss taking integer labels (N,) and raw scores (N, 4)."""
    check_loss(loss), check_encoding(encoding)
    return _EncodedLoss(loss=loss, encoding=encoding, label_smoothing=float(label_smoothing))


def loss_value(loss: str, encoding: str, y, scores, label_smoothing: float = 0.0):
    """Per-example loss (N,) for integer labels ``y`` and raw scores, under an encoding: the registered loss's
    Keras function (``LossSpec.keras_loss``).

    ``label_smoothing`` (losses that accept it) mixes the one-hot target with the
    uniform one: 1 - e + e/4 on the true class, e/4 elsewhere.
    """
    from keras import ops

    spec = registry.get(loss)
    scores = ops.cast(scores, "float32")
    y = ops.reshape(ops.cast(y, "int32"), (-1,))
    return spec.keras_loss(y, scores, encoding, float(label_smoothing))


def paper_metric_value(loss: str, encoding: str, y, scores):
    """Per-example 0/1 of what the original code's 'accuracy' printed."""
    from keras import ops

    pred = ops.argmax(scores, axis=-1)
    y = ops.reshape(ops.cast(y, "int32"), (-1,))
    if registry.get(loss).regresses(encoding):
        return ops.cast(ops.equal(pred, 0), "float32")
    return ops.cast(ops.equal(ops.cast(pred, "int32"), y), "float32")


def _keras():
    import_tf()
    import keras
    return keras


keras = _keras()


@keras.saving.register_keras_serializable(package="wbc_utils")
class _EncodedLoss(keras.losses.Loss):
    def __init__(self, loss: str = "crossentropy", encoding: str = registry.INTEGER, label_smoothing: float = 0.0,
                 name: str | None = None, **kw):
        encoding = registry.check_encoding(encoding)  # a checkpoint saved when integer labels were "paper" loads
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

    def __init__(self, loss: str = "crossentropy", encoding: str = registry.INTEGER, name: str = "paper_metric", **kw):
        kw.pop("fn", None)
        encoding = registry.check_encoding(encoding)
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
