"""The loss registry: one :class:`LossSpec` per loss, and the only place a loss is spelled out.

Everything else iterates over it: the run parameter's choices (:mod:`wbc_utils.params`), the Keras loss that
trains (:mod:`wbc_utils.losses`), the best constant prediction of the collapse verdict
(:mod:`wbc_utils.evaluation`), the tables and the comparisons between losses (:mod:`wbc_utils.analysis`), the
figures' colours and legends, the report's prose and the 2020 artefacts (:mod:`wbc_utils.original`). A loss
unknown here is a :class:`~wbc_utils.errors.ParameterError` that names the choices, never a silent fallback.

**Target encodings.** The model always outputs 4 raw scores; the encoding decides what a loss compares them
with. ``INTEGER`` (``"integer"``; runs written before the rename stored ``"paper"``, which still loads:
:func:`wbc_utils.params.upgrade`) is what the 2020 code did: the integer label ``y`` (0-3) goes to every loss;
a loss that reads it as a class (cross-entropy) is unaffected, a regression loss (MSE, Huber) broadcasts it
against all four outputs, which then regress onto the class *index*.
``ONEHOT`` compares ``softmax(scores)`` with the one-hot target, the correct formulation.

**A loss of your own** is a :class:`LossSpec` passed to :func:`register`. So that the training kernels a
study starts (each run is the training notebook executed in a kernel process of its own) and a Dask worker
see it too, put it in a module and name that module in ``WBC_LOSS_PLUGINS`` (:mod:`wbc_utils.config`): a
comma-separated list of importable module names or paths to ``.py`` files. Each is imported the first time the
registry is asked anything in a process; a module's ``LOSS_SPECS`` (a sequence of ``LossSpec``) is
registered, or the module calls :func:`register` itself. Profiles name their losses: a new loss joins the
``smoke`` profile (which checks the pipeline with every registered loss) and no other.

Nothing here imports TensorFlow: the Keras half of each loss imports Keras inside its function.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

from . import CLASSES
from .config import LOSS_PLUGINS, loss_plugins
from .errors import ParameterError

#: The encoding values (each run folder's name carries its run's).
INTEGER = "integer"  # the integer class label given to every loss, as the 2020 code did
ONEHOT = "onehot"    # one-hot targets against the softmax of the outputs
ENCODINGS = (INTEGER, ONEHOT)
#: Encoding values an earlier version wrote ("paper": integer labels), read as today's: a params.json, a study
#: record or a saved model's loss written before the rename still loads.
LEGACY_ENCODINGS = {"paper": INTEGER}


def check_encoding(encoding: str) -> str:
    """``encoding`` (an old value renamed), else a ParameterError naming the choices (never a silent one-hot)."""
    encoding = LEGACY_ENCODINGS.get(encoding, encoding) if isinstance(encoding, str) else encoding
    if encoding not in ENCODINGS:
        raise ParameterError(f"target_encoding={encoding!r} is not valid; valid values: {', '.join(ENCODINGS)}")
    return encoding
#: How the encodings read: in a sentence, in a setting's name ("CE, one-hot, lr 0.001"), in a table cell, as a
#: panel title.
ENCODING_WORDS = {INTEGER: "integer labels", ONEHOT: "one-hot targets"}
ENCODING_LABELS = {INTEGER: "integer labels", ONEHOT: "one-hot"}
ENCODING_SHORT = {INTEGER: "integer", ONEHOT: "one-hot"}
ENCODING_TITLES = {INTEGER: "integer labels (as in 2020)", ONEHOT: "one-hot targets vs softmax"}

#: A loss's name: lower-case letters and digits (it starts every run folder's name, parts joined by "_").
NAME = re.compile(r"[a-z][a-z0-9]*")


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Everything the package knows about one loss.

    ``numpy_loss(y, scores, encoding, label_smoothing)`` and ``keras_loss(...)`` are the same per-example loss:
    ``y`` the integer labels (N,), ``scores`` the model's raw outputs (N, 4), the result (N,). The NumPy one
    scores a prediction without TensorFlow (the best constant prediction's loss minimises it); the Keras one
    trains (it gets ``y`` as int32 and ``scores`` as float32 tensors, and imports Keras inside).
    ``tests/test_losses.py`` checks that the two agree for every registered loss.
    """

    name: str                  # the run parameter's value; starts every run folder's name
    title: str                 # figure legends and table headers: "Mean squared error"
    short: str                 # tables and comparisons: "MSE"
    words: str                 # inside a sentence: "mean squared error"
    colour: str                # its colour in every figure
    numpy_loss: Callable
    keras_loss: Callable
    #: Under integer labels every output regresses onto the class index (MSE, Huber): the outputs, not their
    #: softmax, are what the loss compares, and the 2020 code's 'accuracy' counted predictions of class 0.
    regresses_integer_labels: bool = False
    #: The same function under both encodings (it reads the integer label as a class): a profile trains it once,
    #: with integer labels, and those runs stand for both encodings.
    encodings_coincide: bool = False
    #: Accepts ``label_smoothing`` > 0 (the one-hot target mixed with the uniform one).
    label_smoothing: bool = False
    #: The 2020 study's own: its code's name (its checkpoints and logs are named by it), the validation accuracy
    #: its report stated, and the number of the report's figure that showed it. None for a loss it did not train.
    name_2020: str | None = None
    reported_2020: float | None = None
    figure_2020: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise ParameterError(f"a loss's name must be lower-case letters and digits, starting with a letter "
                                 f"(it starts every run folder's name), got {self.name!r}")
        if self.regresses_integer_labels and self.encodings_coincide:
            raise ParameterError(f"loss {self.name!r}: a loss that regresses integer labels cannot be the same "
                                 "function under both encodings")
        if not (callable(self.numpy_loss) and callable(self.keras_loss)):
            raise ParameterError(f"loss {self.name!r}: numpy_loss and keras_loss must both be functions")

    @property
    def is_2020(self) -> bool:
        """True for the three losses the 2020 study trained."""
        return self.name_2020 is not None

    def regresses(self, encoding: str | None) -> bool:
        """True when, under ``encoding``, the loss compares the raw outputs with the class index."""
        return self.regresses_integer_labels and encoding is not None and check_encoding(encoding) == INTEGER


# ----------------------------------------------------------------------------- shared pieces of a loss


def numpy_softmax(scores) -> np.ndarray:
    s = np.asarray(scores, float)
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def numpy_log_softmax(scores) -> np.ndarray:
    s = np.asarray(scores, float)
    z = s - s.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def numpy_targets(y, scores, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(what the loss compares, the target) for a regression loss: the raw outputs against the label broadcast
    to all four (integer labels), or the softmax against the one-hot target."""
    y = np.asarray(y).reshape(-1).astype(int)
    scores = np.asarray(scores, float)
    if check_encoding(encoding) == INTEGER:
        return scores, np.broadcast_to(y[:, None].astype(float), scores.shape)
    return numpy_softmax(scores), np.eye(scores.shape[1])[y]


def keras_targets(y, scores, encoding: str) -> tuple:
    """The Keras twin of :func:`numpy_targets`."""
    from keras import ops

    if check_encoding(encoding) == INTEGER:
        return scores, ops.cast(ops.reshape(y, (-1, 1)), "float32")  # broadcast against all 4 outputs
    return ops.softmax(scores, axis=-1), ops.one_hot(y, len(CLASSES))


def _smoothed(y, k: int, label_smoothing: float) -> np.ndarray:
    return (1 - label_smoothing) * np.eye(k)[np.asarray(y).reshape(-1).astype(int)] + label_smoothing / k


def _crossentropy_numpy(y, scores, encoding, label_smoothing=0.0):
    scores = np.asarray(scores, float)
    return -(_smoothed(y, scores.shape[1], label_smoothing) * numpy_log_softmax(scores)).sum(1)


def _crossentropy_keras(y, scores, encoding, label_smoothing=0.0):
    import keras
    from keras import ops

    if label_smoothing:
        return keras.losses.categorical_crossentropy(ops.one_hot(y, len(CLASSES)), scores,
                                                     from_logits=True, label_smoothing=label_smoothing)
    return keras.losses.sparse_categorical_crossentropy(y, scores, from_logits=True)


def _mse_numpy(y, scores, encoding, label_smoothing=0.0):
    pred, target = numpy_targets(y, scores, encoding)
    return ((pred - target) ** 2).mean(1)


def _mse_keras(y, scores, encoding, label_smoothing=0.0):
    from keras import ops

    pred, target = keras_targets(y, scores, encoding)
    return ops.mean(ops.square(pred - target), axis=-1)


def _huber_numpy(y, scores, encoding, label_smoothing=0.0):
    pred, target = numpy_targets(y, scores, encoding)
    d = pred - target
    a = np.abs(d)
    return np.where(a <= 1.0, 0.5 * d * d, a - 0.5).mean(1)  # delta = 1, Keras's default


def _huber_keras(y, scores, encoding, label_smoothing=0.0):
    from keras import ops

    pred, target = keras_targets(y, scores, encoding)
    diff = pred - target
    abs_d = ops.abs(diff)
    return ops.mean(ops.where(abs_d <= 1.0, 0.5 * ops.square(diff), abs_d - 0.5), axis=-1)


#: The three losses of the 2020 study, in its order (its Figures 1-3).
BUILTIN = (
    LossSpec(name="crossentropy", title="Sparse categorical cross-entropy", short="CE", words="cross-entropy",
             colour="#1b9e77", numpy_loss=_crossentropy_numpy, keras_loss=_crossentropy_keras,
             encodings_coincide=True, label_smoothing=True,
             name_2020="sparse_categorical_crossentropy", reported_2020=0.70, figure_2020=1),
    LossSpec(name="mse", title="Mean squared error", short="MSE", words="mean squared error", colour="#d95f02",
             numpy_loss=_mse_numpy, keras_loss=_mse_keras, regresses_integer_labels=True,
             name_2020="mean_squared_error", reported_2020=0.25, figure_2020=2),
    LossSpec(name="huber", title="Huber", short="Huber", words="Huber", colour="#7570b3",
             numpy_loss=_huber_numpy, keras_loss=_huber_keras, regresses_integer_labels=True,
             name_2020="huber", reported_2020=0.25, figure_2020=3),
)

_REGISTRY: dict[str, LossSpec] = {s.name: s for s in BUILTIN}
_PLUGINS_LOADED: set[str] = set()


# ----------------------------------------------------------------------------- the registry


def register(spec: LossSpec) -> LossSpec:
    """Add a loss (after those already registered: the order of tables, legends and comparisons). Registering
    the same spec again does nothing; another loss under a taken name is a ParameterError."""
    if not isinstance(spec, LossSpec):
        raise ParameterError(f"register() takes a LossSpec, got {type(spec).__name__}")
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec:
        raise ParameterError(f"a loss named {spec.name!r} is already registered; choose another name")
    _REGISTRY[spec.name] = spec
    return spec


def reset() -> None:
    """Back to the built-in losses, every plugin forgotten (tests): the next question imports the plugins
    ``WBC_LOSS_PLUGINS`` names then."""
    _REGISTRY.clear()
    _REGISTRY.update((s.name, s) for s in BUILTIN)
    _PLUGINS_LOADED.clear()


def load_plugins() -> None:
    """Import the modules ``WBC_LOSS_PLUGINS`` names (each once) and register their ``LOSS_SPECS``."""
    for entry in loss_plugins():
        if entry in _PLUGINS_LOADED:
            continue
        _PLUGINS_LOADED.add(entry)
        try:
            module = _import_plugin(entry)
        except Exception as e:
            _PLUGINS_LOADED.discard(entry)
            raise ParameterError(f"{LOSS_PLUGINS} names {entry!r}, which could not be imported: "
                                 f"{type(e).__name__}: {e}") from e
        for spec in getattr(module, "LOSS_SPECS", ()):
            register(spec)


def _import_plugin(entry: str):
    if entry.endswith(".py"):
        path = Path(entry).expanduser().resolve()
        name = f"wbc_loss_plugin_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    return importlib.import_module(entry)


def specs() -> tuple[LossSpec, ...]:
    """Every registered loss, in registry order (the 2020 losses first)."""
    load_plugins()
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    """The registered losses' names, in registry order."""
    return tuple(s.name for s in specs())


def get(name: str) -> LossSpec:
    """The loss called ``name``; a ParameterError naming the choices when there is none."""
    load_plugins()
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    raise ParameterError(f"loss={name!r} is not valid; valid values: {', '.join(_REGISTRY)} (a loss of your own: "
                         f"a LossSpec given to wbc_utils.registry.register, in a module named in {LOSS_PLUGINS})")


def ordered(losses: Iterable[str]) -> list[str]:
    """``losses`` (names, repeats allowed) once each, in registry order; an unknown name is a ParameterError."""
    present = set(losses)
    for name in present:
        get(name)
    return [n for n in names() if n in present]


def pairs(losses: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of ``losses`` to compare, each once, the earlier loss in registry order first."""
    return list(combinations(ordered(losses), 2))


def losses_2020() -> tuple[LossSpec, ...]:
    """The losses the 2020 study trained, in its order."""
    return tuple(sorted((s for s in specs() if s.is_2020), key=lambda s: s.figure_2020 or 0))


def recipes(losses: Iterable[str], encodings: Iterable[str] = ENCODINGS) -> list[tuple[str, str]]:
    """The (loss, encoding) settings of a loss study, in the order of its tables and figures: every loss under
    integer labels, then under one-hot targets; a loss whose encodings coincide appears once, under integer
    labels."""
    losses, encodings = ordered(losses), [e for e in ENCODINGS if e in set(encodings)]
    return [(l, e) for e in encodings for l in losses
            if not (e == ONEHOT and INTEGER in encodings and get(l).encodings_coincide)]
