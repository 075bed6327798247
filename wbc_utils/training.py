"""One training run, start to finish, with its artifacts.

``train_run(params, run_dir)`` writes, in ``run_dir``:

=====================  ====================================================
``params.json``        the run's parameters (written first)
``history.csv``        one row per finished epoch (rewritten atomically)
``checkpoint/``        model + optimizer state after the last finished epoch
``diagnostics.json``   dead-ReLU fractions and gradient norms (collapse study)
``model.keras``        the trained model
``predictions.csv``    scores for every TEST and TEST_SIMPLE image
``metrics.json``       written last: a run without it is *incomplete*
=====================  ====================================================

A run killed part-way is resumed from its last finished epoch when started
again with the same parameters. A finished run is never overwritten silently:
``reuse=True`` returns its metrics, ``force=True`` replaces it, and otherwise
:class:`~wbc_utils.errors.RunExistsError` says what to do.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from . import CLASSES, __version__
from .artifacts import atomic_path, read_json, write_csv, write_json
from .data import Manifest, SplitData, build_manifest, grouped_split, load_split, stratified_subset
from .errors import ParameterError, RunExistsError
from .evaluation import evaluate_predictions, held_from_epoch, validation_metrics
from .params import RunParams
from .runs import PREDICTION_COLUMNS, run_status  # noqa: F401  (run_status: re-exported)

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "paper_metric", "val_loss", "val_accuracy", "val_paper_metric",
                   "train_seconds", "epoch_seconds"]


@dataclasses.dataclass
class RunData:
    manifest: Manifest
    train: SplitData
    val: SplitData | None
    test: SplitData
    test_simple: SplitData | None


def prepare_data(params: RunParams, data_dir=None, cache_dir=None, progress: bool = True) -> RunData:
    """Load the splits a run needs at its image size, and carve train/validation."""
    manifest = build_manifest(data_dir)
    size, view = params.image_size, params.view
    train_all = load_split(manifest, "TRAIN", size, cache_dir, progress, view=view)
    test = load_split(manifest, "TEST", size, cache_dir, progress, view=view)
    simple = None
    if (manifest.frame["split"] == "TEST_SIMPLE").any():
        simple = load_split(manifest, "TEST_SIMPLE", size, cache_dir, progress, view=view)
    if params.validation == "grouped":
        tr_idx, va_idx = grouped_split(train_all.frame, params.val_fraction, params.seed)
        train, val = train_all.subset(tr_idx), train_all.subset(va_idx)
    elif params.validation == "none":
        train, val = train_all, None
    else:
        train, val = train_all, test
    if params.train_subset:
        if params.train_subset > len(train):
            raise ParameterError(f"train_subset={params.train_subset} is larger than the {len(train)} training "
                                 f"images available; use 0 for all of them or a smaller number.")
        train = train.subset(stratified_subset(train.frame, params.train_subset, params.seed))
    return RunData(manifest, train, val, test, simple)


def make_dataset(split: SplitData, batch_size: int, seed: int | None = None, epoch: int = 0,
                 augment: str = "none", view: int = 0):
    """A tf.data pipeline of (uint8 images, int labels) batches, streamed from the cached array (read on demand).

    With ``seed``, the order is a permutation drawn from (seed, epoch): the same
    on every machine and after a resume; ``augment`` (see :mod:`wbc_utils.augment`)
    draws from (seed, epoch, batch). ``view`` (0-7) applies one fixed flip/rotation
    to every image, for test-time augmentation.
    """
    from .augment import augment_batch, dihedral
    from .tfenv import import_tf

    tf = import_tf()
    n = len(split)
    order = np.arange(n) if seed is None else np.random.default_rng([seed, epoch]).permutation(n)
    images, labels = split.images, split.labels
    h, w = images.shape[1:3]
    if view % 4 in (1, 3):
        h, w = w, h

    def gen():
        for j, i in enumerate(range(0, n, batch_size)):
            b = np.sort(order[i:i + batch_size])
            x = np.asarray(images[b])
            if augment != "none":
                x = augment_batch(x, np.random.default_rng([seed or 0, epoch, j]), augment)
            if view:
                x = np.ascontiguousarray(dihedral(x, view))
            yield x, labels[b]

    sig = (tf.TensorSpec((None, h, w, 3), tf.uint8), tf.TensorSpec((None,), tf.int32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    return ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size))).prefetch(2)


def compile_model(model, params: RunParams, steps_per_epoch: int = 1):
    import keras

    from .losses import PaperMetric, make_loss, true_accuracy_metric

    lr = params.learning_rate
    if params.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, params.epochs * steps_per_epoch),
                                                    alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=make_loss(params.loss, params.target_encoding, params.label_smoothing),
                  metrics=[true_accuracy_metric(), PaperMetric(params.loss, params.target_encoding)])
    return model


def _check_existing(run_dir: Path, params: RunParams, reuse: bool, force: bool) -> str:
    """Decide what to do with an existing run directory: 'new', 'reuse' or 'resume'."""
    pfile, mfile = run_dir / "params.json", run_dir / "metrics.json"
    if not pfile.exists():
        return "new"
    same = params.same_as(read_json(pfile))
    if force:
        for p in run_dir.iterdir():
            if p.name == "train.ipynb":  # papermill's output notebook for *this* execution
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return "new"
    if mfile.exists():
        if reuse and same:
            return "reuse"
        why = "with the same parameters" if same else "with different parameters"
        raise RunExistsError(f"{run_dir} already holds a finished run {why}. Pass --reuse (reuse=True) to use it, "
                             f"--force (force=True) to replace it, or choose another output directory.")
    if not same:
        raise RunExistsError(f"{run_dir} holds an unfinished run with different parameters. Pass --force "
                             f"(force=True) to discard it, or choose another output directory.")
    return "resume"


def _predict(model, split: SplitData, batch_size: int, tta: bool = False) -> np.ndarray:
    """Raw scores (N, 4); with ``tta``, the log of the softmax averaged over the image's flips/rotations."""
    from .augment import valid_views
    from .evaluation import softmax

    if split is None or len(split) == 0:
        return np.zeros((0, len(CLASSES)), np.float32)
    bs = max(batch_size, 64)
    if not tta:
        return np.asarray(model.predict(make_dataset(split, bs), verbose=0), np.float32)
    probs = np.mean([softmax(model.predict(make_dataset(split, bs, view=k), verbose=0))
                     for k in valid_views(split.images.shape)], axis=0)
    return np.log(np.maximum(probs, 1e-12)).astype(np.float32)


def software_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "wbc_utils": __version__, "platform": platform.platform()}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "pillow", "pandas", "matplotlib", "seaborn",
                "papermill", "nbconvert"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class _EpochLogger:
    """Keras callback: time each epoch, write history and checkpoint atomically after it."""

    def __new__(cls, *a, **kw):
        import keras

        class Impl(keras.callbacks.Callback):
            def __init__(self, run_dir: Path, history: list, diag_fn):
                super().__init__()
                self.run_dir, self.history, self.diag_fn = run_dir, history, diag_fn

            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()
                self.t_test = None

            def on_test_begin(self, logs=None):
                if self.t_test is None:
                    self.t_test = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                t1 = time.perf_counter()
                logs = logs or {}
                row = {"epoch": epoch + 1, **{k: float(logs.get(k, math.nan)) for k in HISTORY_COLUMNS[1:7]},
                       "train_seconds": (self.t_test or t1) - self.t0, "epoch_seconds": t1 - self.t0}
                self.history.append(row)
                _save_state(self.model, self.run_dir, self.history)
                if self.diag_fn is not None and epoch == 0:
                    self.diag_fn("after_epoch_1")

        return Impl(*a, **kw)


def _save_state(model, run_dir: Path, history: list) -> None:
    import pandas as pd

    ck = run_dir / "checkpoint"
    ck.mkdir(exist_ok=True)
    with atomic_path(ck / "model.keras") as tmp:
        model.save(tmp)
    write_csv(run_dir / "history.csv", pd.DataFrame(history, columns=HISTORY_COLUMNS))
    write_json(ck / "state.json", {"completed_epochs": len(history)})


def train_run(params: RunParams, run_dir: str | os.PathLike, data_dir=None, cache_dir=None, reuse: bool = False,
              force: bool = False, verbose: int = 2, data: RunData | None = None) -> dict:
    """Train one run and write its artifacts; returns its metrics (see module doc)."""
    import pandas as pd

    from .diagnostics import Diagnostics
    from .model import build_model
    from .tfenv import import_tf, seed_everything, set_precision

    params.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mode = _check_existing(run_dir, params, reuse, force)
    if mode == "reuse":
        log.info("reusing finished run %s", run_dir)
        return read_json(run_dir / "metrics.json")
    write_json(run_dir / "params.json", params.to_dict())

    import_tf()
    import keras

    policy = set_precision(params.precision)
    seed_everything(params.seed)
    data = data or prepare_data(params, data_dir, cache_dir)
    history: list[dict] = []
    start_epoch = 0
    ck = run_dir / "checkpoint" / "model.keras"
    if mode == "resume" and ck.exists() and (run_dir / "history.csv").exists():
        from . import losses  # noqa: F401  (registers the custom loss and metric for loading)

        model = keras.models.load_model(ck)
        history = pd.read_csv(run_dir / "history.csv").to_dict("records")
        start_epoch = len(history)
        log.info("resuming %s after epoch %d", run_dir, start_epoch)
        print(f"Resuming {run_dir.name} after epoch {start_epoch} of {params.epochs}.")
    else:
        steps = -(-len(data.train) // params.batch_size)
        model = compile_model(build_model(params.image_size, params.arch, params.input_scaling, width=params.width),
                              params, steps)

    probe_idx = stratified_subset(data.train.frame, min(64, len(data.train)), 12345)
    probe, probe_y = np.asarray(data.train.images[probe_idx]), data.train.labels[probe_idx]
    diag = Diagnostics(run_dir / "diagnostics.json", model, params, probe, probe_y)
    if start_epoch == 0:
        diag("init")
    logger = _EpochLogger(run_dir, history, diag)
    val_ds = make_dataset(data.val, max(params.batch_size, 64)) if data.val is not None else None
    best = {"val_loss": math.inf, "epoch": 0, "weights": None}
    stopped_early = False
    for epoch in range(start_epoch, params.epochs):
        model.fit(make_dataset(data.train, params.batch_size, params.seed, epoch, params.augment),
                  validation_data=val_ds,
                  epochs=epoch + 1, initial_epoch=epoch, verbose=verbose, callbacks=[logger], shuffle=False)
        if params.early_stopping_patience:
            vl = history[-1]["val_loss"]
            if vl < best["val_loss"]:
                best = {"val_loss": vl, "epoch": epoch + 1, "weights": model.get_weights()}
            elif epoch + 1 - best["epoch"] >= params.early_stopping_patience:
                stopped_early = True
                break
    if params.early_stopping_patience and best["weights"] is not None:
        model.set_weights(best["weights"])

    with atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)
    train_eval_loss = inference_loss(model, data.train, params)
    test_scores = _predict(model, data.test, params.batch_size, params.tta)
    simple_scores = (_predict(model, data.test_simple, params.batch_size, params.tta)
                     if data.test_simple is not None else None)
    test_pred = predictions_frame(data.test, test_scores)
    simple_pred = predictions_frame(data.test_simple, simple_scores) if simple_scores is not None else None
    write_csv(run_dir / "predictions.csv", pd.concat([f for f in (test_pred, simple_pred) if f is not None],
                                                      ignore_index=True))

    hist = pd.DataFrame(history)
    train_seconds = float(hist["train_seconds"].sum())
    n_epochs_run = len(hist)
    class_counts = np.bincount(data.train.labels, minlength=len(CLASSES)).tolist()
    metrics = {
        **{k: v for k, v in params.to_dict().items()},
        "run_name": params.run_name, "run_dir": str(run_dir), "precision_policy": policy,
        "validation_label": {"paper": "TEST used as validation (paper mode)",
                             "grouped": f"grouped: {params.val_fraction:.0%} of TRAIN's same-cell clusters held out",
                             "none": "none: trained on all of TRAIN; TEST scored once at the end"}[params.validation],
        "train_images": len(data.train), "val_images": len(data.val) if data.val is not None else 0,
        "train_cells": int(data.train.frame["cell"].nunique()),
        "train_slides": int(data.train.frame["slide"].nunique()),
        "train_class_counts": class_counts,
        "epochs_run": n_epochs_run, "stopped_early": stopped_early,
        "chosen_epoch": best["epoch"] if params.early_stopping_patience else n_epochs_run,
        "train_seconds": train_seconds,
        "images_per_second": len(data.train) * n_epochs_run / train_seconds if train_seconds else None,
        "final_train_loss": float(hist["loss"].iloc[-1]), "final_train_accuracy": float(hist["accuracy"].iloc[-1]),
        "train_loss_inference": train_eval_loss,
        "final_train_paper_metric": float(hist["paper_metric"].iloc[-1]),
        "final_val_accuracy": _finite(hist["val_accuracy"].iloc[-1]),
        "final_val_paper_metric": _finite(hist["val_paper_metric"].iloc[-1]),
        "skipped_files": len(data.manifest.skipped), "sources": data.manifest.sources,
        "software": software_versions(),
    }
    metrics.update(evaluate_predictions(
        test_pred, simple_pred, loss=params.loss, encoding=params.target_encoding,
        final_train_loss=train_eval_loss, train_class_counts=class_counts,
        label_smoothing=params.label_smoothing))
    metrics["held_from_epoch"] = held_from_epoch(hist["loss"], metrics["constant_loss"])
    if params.validation == "grouped":  # both ways, so the lab can decide on test-time augmentation on validation
        plain = predictions_frame(data.val, _predict(model, data.val, params.batch_size, False))
        tta = predictions_frame(data.val, _predict(model, data.val, params.batch_size, True))
        metrics.update(validation_metrics(plain))
        metrics.update({f"{k}_tta": v for k, v in validation_metrics(tta).items() if k.startswith("val_accuracy")
                        or k.startswith("val_cell_accuracy")})
        write_csv(run_dir / "val_predictions.csv", tta if params.tta else plain)
    write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    return metrics


#: Training images on which the finished model's loss is measured in inference mode (a fixed, class-balanced
#: sample): the training-loss half of the collapse definition.
INFERENCE_LOSS_IMAGES = 2000


def inference_loss(model, train: SplitData, params: RunParams) -> float:
    """The finished model's loss on (a fixed sample of) its training images, in inference mode and without
    augmentation: what the collapse definition compares with a constant prediction's. The epoch's running
    training loss is measured in training mode (BatchNorm on batch statistics, dropout on), where a model can
    look fine and still give one output for every image at inference."""
    from .losses import make_loss

    idx = stratified_subset(train.frame, min(INFERENCE_LOSS_IMAGES, len(train)), 4242)
    sample = train.subset(idx)
    scores = _predict(model, sample, params.batch_size)
    loss = make_loss(params.loss, params.target_encoding, params.label_smoothing)
    return float(np.mean(np.asarray(loss.call(sample.labels, scores))))


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def predictions_frame(split: SplitData, scores) -> object:
    """One row per image of ``split``: its source (slide, same-cell cluster, shared with TRAIN), label,
    predicted class and the four raw scores."""
    f = split.frame[PREDICTION_COLUMNS].copy()
    f["pred"] = np.asarray(scores).argmax(1)
    for i, c in enumerate(CLASSES):
        f[f"score_{c}"] = np.asarray(scores)[:, i]
    return f


