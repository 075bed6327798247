"""The run folder: what one training run leaves behind, and how to read it back.

``runs/<profile>/<run_name>/`` holds:

=======================  ===================================================
``params.json``          the run's parameters (written first)
``history.csv``          one row per finished epoch
``checkpoint/``          model + optimizer state after the last finished epoch (removed when finished)
``diagnostics.json``     dead-ReLU fractions and gradient norms
``model.keras``          the trained model
``predictions.csv``      per TEST and TEST_SIMPLE image: source, label, prediction, raw scores
``val_predictions.csv``  the same on held-out TRAIN cells (grouped validation only)
``metrics.json``         written last: a run without it is *incomplete*
``train.ipynb``          the executed training notebook (studies run through papermill)
=======================  ===================================================

This module owns those names and the readers; it imports nothing heavy.
"""
from __future__ import annotations

import os
from pathlib import Path

PARAMS = "params.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint"
DIAGNOSTICS = "diagnostics.json"
MODEL = "model.keras"
PREDICTIONS = "predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
METRICS = "metrics.json"
NOTEBOOK = "train.ipynb"

#: The columns of ``predictions.csv`` before the scores: where each image comes from, and its label.
PREDICTION_COLUMNS = ["split", "relpath", "class", "label", "slide", "cell", "shared"]


def run_status(run_dir: str | os.PathLike) -> str:
    """'finished' (metrics.json), 'incomplete' (started, no metrics) or 'missing'."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS).exists():
        return "finished"
    if (run_dir / PARAMS).exists() or (run_dir / NOTEBOOK).exists():
        return "incomplete"
    return "missing"


def read_predictions(run_dir: str | os.PathLike, split: str | None = None, name: str = PREDICTIONS):
    """A run's predictions (one split, sorted by path, when ``split`` is given) as a DataFrame."""
    import pandas as pd

    f = pd.read_csv(Path(run_dir) / name, dtype={"cell": str, "relpath": str})
    if "slide" in f.columns:
        f["slide"] = f["slide"].astype("Int64")
    if split is not None:
        f = f[f["split"] == split].sort_values("relpath").reset_index(drop=True)
    return f


def read_metrics(run_dir: str | os.PathLike) -> dict:
    from .artifacts import read_json

    return read_json(Path(run_dir) / METRICS)


def read_params(run_dir: str | os.PathLike) -> dict:
    from .artifacts import read_json

    return read_json(Path(run_dir) / PARAMS)


def read_history(run_dir: str | os.PathLike):
    import pandas as pd

    return pd.read_csv(Path(run_dir) / HISTORY)


def read_diagnostics(run_dir: str | os.PathLike) -> dict:
    from .artifacts import read_json

    p = Path(run_dir) / DIAGNOSTICS
    return read_json(p) if p.exists() else {}
