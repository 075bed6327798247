"""One training run, start to finish, with its artifacts.

``train_run(params, run_dir)`` fills the run folder that :mod:`wbc_utils.runs`
describes (parameters first, metrics last), printing one line per epoch.

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
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import CLASSES, __version__
from .augment import augment_batch, dihedral, valid_views
from .data import Manifest, SplitData, build_manifest, grouped_split, kfold_split, load_split, stratified_subset
from .diagnostics import Diagnostics
from .errors import ParameterError, RunExistsError
from .evaluation import evaluate_predictions, held_from_epoch, softmax, validation_metrics
from .locks import OWNER_VARIABLE
from .model import build_model
from .params import TEST_AS_VALIDATION, RunParams
from .runs import HISTORY, HISTORY_COLUMNS, PARAMS, VAL_PREDICTIONS, Run, predictions_frame
from .tfenv import device_description, import_tf, quiet_tensorflow, seed_everything, set_precision

log = logging.getLogger(__name__)

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
        tr_idx, va_idx = (kfold_split(train_all.frame, params.folds, params.fold) if params.folds else
                          grouped_split(train_all.frame, params.val_fraction, params.seed))
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
    import keras  # TensorFlow stays out of `import wbc_utils.training` (the CLI's --help, papermill's start)

    from .losses import PaperMetric, make_loss, true_accuracy_metric  # imports TensorFlow

    lr = params.learning_rate
    if params.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, params.epochs * steps_per_epoch),
                                                    alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=make_loss(params.loss, params.target_encoding, params.label_smoothing),
                  metrics=[true_accuracy_metric(), PaperMetric(params.loss, params.target_encoding)])
    return model


def _check_existing(run: Run, params: RunParams, reuse: bool, force: bool) -> str:
    """Decide what to do with an existing run directory: 'new', 'reuse' or 'resume'."""
    if not run.has(PARAMS):
        return "new"
    same = params.same_as(run.params())
    if force:
        run.clear()
        return "new"
    if run.status == "finished":
        if reuse and same:
            return "reuse"
        why = "with the same parameters" if same else "with different parameters"
        raise RunExistsError(f"{run.path} already holds a finished run {why}. Pass --reuse (reuse=True) to use it, "
                             f"--force (force=True) to replace it, or choose another output directory.")
    if not same:
        raise RunExistsError(f"{run.path} holds an unfinished run with different parameters. Pass --force "
                             f"(force=True) to discard it, or choose another output directory.")
    return "resume"


def predict_scores(model, split: SplitData, batch_size: int, tta: bool = False) -> np.ndarray:
    """Raw scores (N, 4); with ``tta``, the log of the softmax averaged over the image's flips/rotations."""
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


def epoch_line(row: dict, epochs: int, history: list[dict]) -> str:
    """One line per finished epoch: where the run is, its loss and accuracies, elapsed and remaining time."""
    done = int(row["epoch"])
    elapsed = sum(h["epoch_seconds"] for h in history)
    left = elapsed / len(history) * (epochs - done) if history else math.nan
    parts = [f"epoch {done}/{epochs}", f"loss {row['loss']:.4f}", f"accuracy {row['accuracy']:.3f}"]
    if math.isfinite(row.get("val_accuracy", math.nan)):
        parts.append(f"val_accuracy {row['val_accuracy']:.3f}")
    parts.append(f"{row['epoch_seconds']:.0f} s")
    parts.append(f"elapsed {format_seconds(elapsed)}, about {format_seconds(left)} left")
    return "  ".join(parts)


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def _epoch_logger(run: Run, history: list, epochs: int, diag_fn, verbose: bool):
    """Keras callback: time each epoch, checkpoint it atomically, print its line."""
    import keras  # TensorFlow stays out of `import wbc_utils.training`

    class EpochLogger(keras.callbacks.Callback):
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
            history.append(row)
            run.write_checkpoint(self.model, history)
            if verbose:
                print(epoch_line(row, epochs, history), flush=True)
            if diag_fn is not None and epoch == 0:
                diag_fn("after_epoch_1")

    return EpochLogger()


def train_run(params: RunParams, run_dir: str | os.PathLike, data_dir=None, cache_dir=None, reuse: bool = False,
              force: bool = False, verbose: int = 1, data: RunData | None = None) -> dict:
    """Train one run and write its artifacts; returns its metrics (see module doc).

    ``verbose``: 1 prints one line per epoch (what the study's progress shows), 0 nothing.
    """
    params.validate()
    run = Run(Path(run_dir))
    run.path.mkdir(parents=True, exist_ok=True)
    quiet_tensorflow(run.log_path)  # TensorFlow's own start-up lines go to the run's train.log
    # a study holds the lock for the kernels it starts (WBC_LOCK_OWNER); run alone, this process takes it
    with run.lock(owner=os.environ.get(OWNER_VARIABLE)):
        return _train(params, run, data_dir, cache_dir, reuse, force, verbose, data)


def _train(params: RunParams, run: Run, data_dir, cache_dir, reuse: bool, force: bool, verbose: int,
           data: RunData | None) -> dict:
    mode = _check_existing(run, params, reuse, force)
    if mode == "reuse":
        log.info("reusing finished run %s", run.path)
        return run.metrics()
    run.write_params(params.to_dict())

    import_tf()
    policy = set_precision(params.precision)
    seed_everything(params.seed)
    data = data or prepare_data(params, data_dir, cache_dir)
    history: list[dict] = []
    start_epoch = 0
    if mode == "resume" and run.checkpoint_model.exists() and run.has(HISTORY):
        from .losses import load_keras_model  # imports TensorFlow

        model = load_keras_model(run.checkpoint_model, compile=True)
        history = run.history().to_dict("records")
        start_epoch = len(history)
        log.info("resuming %s after epoch %d", run.path, start_epoch)
        print(f"Resuming {run.name} after epoch {start_epoch} of {params.epochs}.", flush=True)
    else:
        steps = -(-len(data.train) // params.batch_size)
        model = compile_model(build_model(params.image_size, params.arch, params.input_scaling, width=params.width),
                              params, steps)

    probe_idx = stratified_subset(data.train.frame, min(64, len(data.train)), 12345)
    probe, probe_y = np.asarray(data.train.images[probe_idx]), data.train.labels[probe_idx]
    diag = Diagnostics(run.diagnostics_path, model, params, probe, probe_y)
    if start_epoch == 0:
        diag("init")
    logger = _epoch_logger(run, history, params.epochs, diag, bool(verbose))
    val_ds = make_dataset(data.val, max(params.batch_size, 64)) if data.val is not None else None
    best = {"val_loss": math.inf, "epoch": 0, "weights": None}
    stopped_early = False
    for epoch in range(start_epoch, params.epochs):
        model.fit(make_dataset(data.train, params.batch_size, params.seed, epoch, params.augment),
                  validation_data=val_ds,
                  epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=[logger], shuffle=False)
        if params.early_stopping_patience:
            vl = history[-1]["val_loss"]
            if vl < best["val_loss"]:
                best = {"val_loss": vl, "epoch": epoch + 1, "weights": model.get_weights()}
            elif epoch + 1 - best["epoch"] >= params.early_stopping_patience:
                stopped_early = True
                break
    if params.early_stopping_patience and best["weights"] is not None:
        model.set_weights(best["weights"])

    run.save_model(model)
    train_eval_loss = inference_loss(model, data.train, params)
    test_scores = predict_scores(model, data.test, params.batch_size, params.tta)
    simple_scores = (predict_scores(model, data.test_simple, params.batch_size, params.tta)
                     if data.test_simple is not None else None)
    test_pred = predictions_frame(data.test.frame, test_scores)
    simple_pred = predictions_frame(data.test_simple.frame, simple_scores) if simple_scores is not None else None
    run.write_predictions(pd.concat([f for f in (test_pred, simple_pred) if f is not None], ignore_index=True))

    hist = pd.DataFrame(history)
    train_seconds = float(hist["train_seconds"].sum())
    n_epochs_run = len(hist)
    class_counts = np.bincount(data.train.labels, minlength=len(CLASSES)).tolist()
    metrics = {
        **{k: v for k, v in params.to_dict().items()},
        "run_name": params.run_name, "run_dir": str(run.path), "precision_policy": policy,
        "validation_label": {TEST_AS_VALIDATION: "TEST used as validation (as in 2020)",
                             "grouped": (f"grouped: fold {params.fold} of {params.folds} of TRAIN's same-cell clusters "
                                         f"held out" if params.folds else
                                         f"grouped: {params.val_fraction:.0%} of TRAIN's same-cell clusters held out"),
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
        "software": {**software_versions(), "device": device_description()},
    }
    metrics.update(evaluate_predictions(
        test_pred, simple_pred, loss=params.loss, encoding=params.target_encoding,
        final_train_loss=train_eval_loss, train_class_counts=class_counts,
        label_smoothing=params.label_smoothing))
    metrics["held_from_epoch"] = held_from_epoch(hist["loss"], metrics["constant_loss"])
    if params.validation == "grouped":  # both ways, so the lab can decide on test-time augmentation on validation
        plain = predictions_frame(data.val.frame, predict_scores(model, data.val, params.batch_size, False))
        tta = predictions_frame(data.val.frame, predict_scores(model, data.val, params.batch_size, True))
        metrics.update(validation_metrics(plain))
        metrics.update({f"{k}_tta": v for k, v in validation_metrics(tta).items() if k.startswith("val_accuracy")
                        or k.startswith("val_cell_accuracy")})
        run.write_predictions(tta if params.tta else plain, VAL_PREDICTIONS)
    run.write_metrics(metrics)
    run.remove_checkpoint()
    return metrics


#: Training images on which the finished model's loss is measured in inference mode (a fixed, class-balanced
#: sample): the training-loss half of the collapse definition.
INFERENCE_LOSS_IMAGES = 2000


def inference_loss(model, train: SplitData, params: RunParams) -> float:
    """The finished model's loss on (a fixed sample of) its training images, in inference mode and without
    augmentation: what the collapse definition compares with a constant prediction's. The epoch's running
    training loss is measured in training mode (BatchNorm on batch statistics, dropout on), where a model can
    look fine and still give one output for every image at inference."""
    from .losses import make_loss  # imports TensorFlow

    idx = stratified_subset(train.frame, min(INFERENCE_LOSS_IMAGES, len(train)), 4242)
    sample = train.subset(idx)
    scores = predict_scores(model, sample, params.batch_size)
    loss = make_loss(params.loss, params.target_encoding, params.label_smoothing)
    return float(np.mean(np.asarray(loss.call(sample.labels, scores))))


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
