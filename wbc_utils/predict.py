"""Classify new images with a trained model: ``python -m wbc_utils predict [MODEL] IMAGES... [--csv [FILE]]``.

Images (JPEG or PNG, any size, or folders of them, searched recursively) are
prepared exactly as the model's training images were: resized to the 320x240
field, then, for a model trained on cell crops, cropped around the white cell;
or resized to the model's input size. A file that cannot be read is reported
on its own row and the others are still classified.

Without a model, the best shipped model (``models/best/``) is used.

**Not a diagnostic tool.** The models have only seen one lab's images: the
BCCD smears (640x480, resized to 320x240), four classes, stained one way. On
other microscopes, stains or cell types their output means nothing.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import CLASSES
from .augment import dihedral, valid_views
from .config import SHIPPED_MODEL
from .data import IMAGE_EXTENSIONS, decode_image
from .errors import DataError, RunExistsError
from .evaluation import softmax
from .runs import MODEL, Run, load_run, read_shipped, write_shipped

DISCLAIMER = ("Research code, not a diagnostic tool: trained on one lab's BCCD smears (320x240, four classes); "
              "its output on other images means nothing.")


def default_model() -> Path:
    if (SHIPPED_MODEL / MODEL).exists():
        return SHIPPED_MODEL
    raise DataError(f"no model given and no shipped model at {SHIPPED_MODEL}. Pass a trained run folder "
                    f"(runs/<profile>/<run>/) or a .keras file, or train one with `make report PROFILE=best`.")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Files to classify, in order: (path, error or None). Folders are searched recursively for images."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not f.name.startswith("."))
            if not found:
                out.append((str(p), "folder holds no .jpg, .jpeg or .png files"))
            out.extend((str(f), None) for f in found)
        elif p.is_file():
            out.append((str(p), None))
        else:
            out.append((str(p), "no such file or folder"))
    return out


def prepare(path: str, image_size: Sequence[int], view: str) -> np.ndarray | str:
    """One file as the model's input (uint8 H x W x 3), or the reason it cannot be read."""
    return decode_image(path, tuple(int(v) for v in image_size), view)


def predict_arrays(run, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, 4) for prepared uint8 images; averaged over flips/rotations if the model used TTA."""
    images = np.asarray(images, np.uint8)
    if len(images) == 0:
        return np.zeros((0, len(CLASSES)), np.float32)

    def scores(x):
        return np.concatenate([np.asarray(run.model(x[i:i + batch_size], training=False), np.float64)
                               for i in range(0, len(x), batch_size)])

    views = valid_views(images.shape) if run.tta else (0,)
    probs = np.mean([softmax(scores(np.ascontiguousarray(dihedral(images, k)) if k else images)) for k in views],
                    axis=0)
    return probs.astype(np.float32)


def predict_files(inputs: Iterable[str | os.PathLike], model: str | os.PathLike | None = None, run=None):
    """Classify image files and folders; returns a DataFrame, one row per file.

    Columns: ``file``, ``predicted``, ``confidence``, ``p_<CLASS>`` for each
    class, and ``error`` (empty when the file was classified).
    """
    run = run or load_run(model or default_model())
    items = expand_inputs(list(inputs))
    rows, batch, where = [], [], []
    for path, err in items:
        row = {"file": path, "predicted": "", "confidence": np.nan,
               **{f"p_{c}": np.nan for c in CLASSES}, "error": err or ""}
        if not err:
            arr = prepare(path, run.image_size, run.view)
            if isinstance(arr, str):
                row["error"] = arr
            else:
                batch.append(arr)
                where.append(len(rows))
        rows.append(row)
    if batch:
        probs = predict_arrays(run, np.stack(batch))
        for i, pr in zip(where, probs):
            rows[i].update({f"p_{c}": float(v) for c, v in zip(CLASSES, pr)})
            rows[i]["predicted"] = CLASSES[int(pr.argmax())]
            rows[i]["confidence"] = float(pr.max())
    frame = pd.DataFrame(rows, columns=["file", "predicted", "confidence", *[f"p_{c}" for c in CLASSES], "error"])
    frame.attrs["model"] = str(run.path)
    return frame


def format_table(frame) -> str:
    """A plain-text table for the terminal."""
    shown = frame.copy()
    for c in ["confidence", *[f"p_{c}" for c in CLASSES]]:
        shown[c] = shown[c].map(lambda v: "" if v != v else f"{v:.3f}")
    shown.columns = [c.replace("p_", "") for c in shown.columns]
    return shown.to_string(index=False)


def ship_model(run_dir: str | os.PathLike, dest: str | os.PathLike = SHIPPED_MODEL, force: bool = False,
               max_bytes: int = 5 * 1024 * 1024) -> Path:
    """Copy a finished run's model to ``dest`` (``models/best/`` by default) with ``model.json``: its
    parameters, its TEST figures and where it came from. Refuses to replace a different model without ``force``."""
    run, dest = Run(Path(run_dir)), Path(dest)
    src = run.model_path
    if run.status != "finished" or not src.exists():
        raise DataError(f"{run.path} is not a finished run (no metrics.json or model.keras): finish it first.")
    size = src.stat().st_size
    if size > max_bytes:
        raise DataError(f"{src} is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB a shipped model may be.")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    try:
        prev = read_shipped(dest)
    except (OSError, ValueError):
        prev = {}
    if prev is not None and not force:
        if prev.get("source_sha256") == digest:
            return dest
        raise RunExistsError(f"{dest} already holds another model (from {prev.get('source_run', '?')}). "
                             f"Pass --force to replace it.")
    m = run.metrics()
    keep = ("unseen_accuracy", "unseen_accuracy_ci", "unseen_cells", "test_accuracy", "test_accuracy_ci",
            "unseen_cell_accuracy", "unseen_cell_accuracy_ci", "test_simple_accuracy", "test_simple_accuracy_ci",
            "test_simple_slides", "ece", "ece_ci", "evaluation_version", "train_seconds", "software")
    meta = {"params": run.params(), "metrics": {k: m.get(k) for k in keep},
            "source_run": f"{run.path.parent.name}/{run.name}", "source_sha256": digest,
            "shipped": datetime.date.today().isoformat(), "classes": list(CLASSES), "disclaimer": DISCLAIMER}
    # without the optimizer's state: a third of the size, the same predictions
    write_shipped(dest, load_run(run.path).model, meta)
    return dest
