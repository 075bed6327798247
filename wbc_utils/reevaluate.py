"""Recompute a finished run's evaluation from its saved predictions, without retraining.

When a metric's definition changes (``evaluation.EVALUATION_VERSION``), or the
source of images is corrected (the slide mapping), the runs already trained
keep their ``predictions.csv``; this re-attaches each image's source from the
current manifest (by its path in the dataset), rewrites ``predictions.csv``
with it, and rewrites the evaluation fields of ``metrics.json``, atomically.
The training fields are left alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import build_manifest
from .evaluation import EVALUATION_VERSION, evaluate_predictions, validation_metrics
from .runs import PREDICTION_COLUMNS, PREDICTIONS, VAL_PREDICTIONS, Run, check_no_legacy


def with_sources(pred, manifest):
    """``pred`` with ``slide``, ``cell`` and ``shared`` taken from ``manifest`` (matched on split and path)."""
    src = manifest.frame[["split", "relpath", "slide", "cell", "shared"]]
    base = pred.drop(columns=[c for c in ("slide", "cell", "shared") if c in pred.columns])
    out = base.merge(src, on=["split", "relpath"], how="left", validate="one_to_one")
    if out["cell"].isna().any():
        missing = out.loc[out["cell"].isna(), "relpath"].head(3).tolist()
        raise ValueError(f"{int(out['cell'].isna().sum())} predicted image(s) are not in the dataset at "
                         f"{manifest.images_root} (e.g. {missing}): point --data-dir at the dataset the run used.")
    rest = [c for c in out.columns if c not in PREDICTION_COLUMNS]
    return out[PREDICTION_COLUMNS + rest]


def reevaluate_run(run_dir: str | Path, manifest=None, force: bool = False) -> bool:
    """Re-evaluate one finished run; returns True if its metrics.json was rewritten."""
    run = Run(Path(run_dir))
    if not (run.status == "finished" and run.has(PREDICTIONS)):
        return False
    metrics = run.metrics()
    if metrics.get("evaluation_version") == EVALUATION_VERSION and not force:
        return False
    pred = run.predictions()
    if manifest is not None:
        pred = with_sources(pred, manifest)
        run.write_predictions(pred)
    elif "shared" not in pred.columns:
        raise ValueError(f"{run.file(PREDICTIONS)} predates the slide mapping: re-evaluating it needs the dataset "
                         f"(--data-dir).")
    if metrics.get("train_class_counts") is None and manifest is not None:
        # runs from before the class counts were recorded: TRAIN's, so collapse is judged on both criteria
        metrics["train_class_counts"] = np.bincount(manifest.split("TRAIN")["label"], minlength=4).tolist()
        metrics["train_class_counts_source"] = "manifest (all of TRAIN)"
    test, simple = pred[pred["split"] == "TEST"], pred[pred["split"] == "TEST_SIMPLE"]
    for old in ("cell_accuracy", "cell_accuracy_ci", "test_accuracy_ci_stratified", "ce_collapse_epoch",
                "regression_decoded_accuracy", "regression_decoded_accuracy_ci", "test_simple_images"):
        metrics.pop(old, None)
    metrics.update(evaluate_predictions(test, simple if len(simple) else None, loss=metrics["loss"],
                                        encoding=metrics["target_encoding"],
                                        final_train_loss=metrics.get("train_loss_inference",
                                                                     metrics.get("final_train_loss")),
                                        train_class_counts=metrics.get("train_class_counts"),
                                        label_smoothing=metrics.get("label_smoothing", 0.0)))
    if run.has(VAL_PREDICTIONS):  # the lab's validation figures (with test-time augmentation when the run used it)
        val = run.predictions(name=VAL_PREDICTIONS)
        if manifest is not None:
            val = with_sources(val, manifest)
            run.write_predictions(val, VAL_PREDICTIONS)
        fresh = validation_metrics(val)
        if metrics.get("tta"):
            fresh = {f"{k}_tta": v for k, v in fresh.items() if k.startswith(("val_accuracy", "val_cell_accuracy"))}
        metrics.update(fresh)
    run.write_metrics(metrics)
    return True


def reevaluate_profile(profile_dir: str | Path, data_dir=None, force: bool = False) -> int:
    """Re-evaluate every finished run of a study; returns how many were rewritten."""
    check_no_legacy(Path(profile_dir))
    manifest = build_manifest(data_dir)
    return sum(reevaluate_run(d, manifest, force) for d in sorted(Path(profile_dir).iterdir()) if d.is_dir())
