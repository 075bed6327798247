"""Recompute a finished run's evaluation from its saved predictions, without retraining.

When a metric's definition changes (``evaluation.EVALUATION_VERSION``), the runs
already trained keep their ``predictions.csv``; this rewrites the evaluation
fields of their ``metrics.json`` (atomically) and leaves the training fields alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import CLASSES
from .artifacts import read_json, write_json
from .evaluation import EVALUATION_VERSION, evaluate_predictions


def reevaluate_run(run_dir: str | Path, force: bool = False) -> bool:
    """Re-evaluate one finished run; returns True if its metrics.json was rewritten."""
    import pandas as pd

    run_dir = Path(run_dir)
    mfile, pfile = run_dir / "metrics.json", run_dir / "predictions.csv"
    if not (mfile.exists() and pfile.exists()):
        return False
    metrics = read_json(mfile)
    if metrics.get("evaluation_version") == EVALUATION_VERSION and not force:
        return False
    pred = pd.read_csv(pfile)
    cols = [f"score_{c}" for c in CLASSES]
    test, simple = pred[pred["split"] == "TEST"], pred[pred["split"] == "TEST_SIMPLE"]
    scores = test[cols].to_numpy(np.float32)
    labels = test["label"].to_numpy()
    new = evaluate_predictions(scores, labels, test["cell"].to_numpy(),
                               simple[cols].to_numpy(np.float32) if len(simple) else None,
                               simple["label"].to_numpy() if len(simple) else None,
                               loss=metrics["loss"], encoding=metrics["target_encoding"])
    metrics.update(new)
    write_json(mfile, metrics)
    return True


def reevaluate_profile(profile_dir: str | Path, force: bool = False) -> int:
    """Re-evaluate every finished run of a study; returns how many were rewritten."""
    return sum(reevaluate_run(d, force) for d in sorted(Path(profile_dir).iterdir()) if d.is_dir())
