"""Classify new images with a trained model: ``python -m wbc_utils predict [MODEL] IMAGES... [--csv [FILE]]``.

Images (any format Pillow reads: JPEG, PNG, BMP, TIFF, ...; or folders of them, searched
recursively) are opened through the package's guarded reader (:mod:`wbc_utils.images`: EXIF orientation applied,
every colour mode converted one way, a large JPEG decoded reduced) and
prepared exactly as the model's training images were: resized to the 320x240
field, then, for a model trained on cell crops, cropped around the white cell;
or resized to the model's input size. A file that cannot be read, or that the reader refuses from its header (a
decompression bomb, or an image too large to decode), is reported
on its own row with the reason and the others are still classified. Every image is also checked against TRAIN
(:mod:`wbc_utils.ood`): the ``ood`` column flags one unlike the training images, and ``ood_reason`` says why. A
model with a competence region (:mod:`wbc_utils.competence`: a lab profile's final model, fitted by its shift grid
and kept in a shipped model's ``model.json``) also gets ``unreliable``: the image lies where the model's accuracy
was measured to drop (a darker lamp, another magnification, ...), with ``unreliable_reason`` naming the statistic.

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
from PIL import Image

from . import CLASSES, NATIVE_SIZE, competence, ood
from .artifacts import read_json, write_json
from .augment import dihedral, valid_views
from .config import SHIPPED_MODEL, cache_dir
from .data import build_manifest, decode_image, decode_images, stratified_subset
from .errors import DataError, RunExistsError
from .evaluation import SCORE_COLUMNS, softmax
from .params import design_key
from .runs import (
    MODEL,
    PARAMS,
    VAL_PREDICTIONS,
    LoadedModel,
    Run,
    load_model,
    read_shift_grid,
    read_shipped,
    write_shipped,
)

DISCLAIMER = ("Research code, not a diagnostic tool: trained on one lab's BCCD smears (320x240, four classes); "
              "its output on other images means nothing.")


def default_model() -> Path:
    if (SHIPPED_MODEL / MODEL).exists():
        return SHIPPED_MODEL
    raise DataError(f"no model given and no shipped model at {SHIPPED_MODEL}. Pass a trained run folder "
                    f"(runs/<profile>/<run>/) or a .keras file, or train one with `make report PROFILE=best`.")


#: What predict reads: every extension Pillow can open (the dataset itself is JPEG only).
PREDICT_EXTENSIONS = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)
#: TRAIN images the out-of-distribution reference is fitted on (a class-balanced sample).
OOD_SAMPLE = 2000


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Files to classify, in order: (path, error or None). Folders are searched recursively for images."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in PREDICT_EXTENSIONS
                           and not f.name.startswith("."))
            if not found:
                out.append((str(p), "folder holds no image file Pillow can read (.jpg, .png, .bmp, .tif, ...)"))
            out.extend((str(f), None) for f in found)
        elif p.is_file():
            out.append((str(p), None))
        else:
            out.append((str(p), "no such file or folder"))
    return out


def prepare(path: str, image_size: Sequence[int], view: str) -> np.ndarray | str:
    """One file as the model's input (uint8 H x W x 3), or the reason it cannot be read."""
    return decode_image(path, tuple(int(v) for v in image_size), view)


def logits_of(run, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Raw scores (N, 4) of prepared uint8 images, as given (no test-time augmentation)."""
    images = np.asarray(images, np.uint8)
    if len(images) == 0:
        return np.zeros((0, len(CLASSES)), np.float64)
    return np.concatenate([np.asarray(run.model(images[i:i + batch_size], training=False), np.float64)
                           for i in range(0, len(images), batch_size)])


def ood_reference(run: LoadedModel, data_dir=None) -> dict | None:
    """The model's out-of-distribution thresholds: from a shipped model's ``model.json``, a run folder's
    ``ood.json``, or fitted now on TRAIN when the dataset is there (cached in the run folder, or for a model file
    elsewhere in the cache folder under its SHA-256); None when there is none and no dataset to fit one."""
    shipped = read_shipped(run.path)
    if shipped and shipped.get("ood"):
        return shipped["ood"]
    run_folder = Run(run.path)
    cached = run_folder.ood()
    if cached is not None:
        return cached
    digest = hashlib.sha256((run.path / MODEL).read_bytes()).hexdigest()[:16] if (run.path / MODEL).exists() \
        else None
    other = cache_dir() / "ood" / f"{digest}.json" if digest else None
    if other is not None and other.exists():
        return read_json(other)
    try:
        ref = fit_ood_reference(run, data_dir)
    except DataError:
        return None
    try:  # a cache only: a read-only run folder or cache still classifies
        if run_folder.has(PARAMS):
            run_folder.write_ood(ref)
        elif other is not None:
            write_json(other, ref)
    except OSError:
        pass
    return ref


def fit_ood_reference(run: LoadedModel, data_dir=None, n: int = OOD_SAMPLE, held_out_logits=None) -> dict:
    """Fit :func:`wbc_utils.ood.fit_reference` on a class-balanced sample of TRAIN, prepared as the model's inputs
    and as 240x320 fields. ``held_out_logits`` (the scores the same design gave images it had not trained on: the
    lab's folds) set the energy threshold instead of TRAIN's, on which a trained model is over-confident."""
    train = build_manifest(data_dir).split("TRAIN")
    idx = stratified_subset(train, min(n, len(train)), 0)
    feats, logits = _ood_inputs(run, train["path"].iloc[idx].tolist())
    ref = ood.fit_reference(feats, logits)
    ref["energy_from"] = f"TRAIN ({len(feats)} images the model trained on)"
    if held_out_logits is not None and len(held_out_logits) >= 200:
        ref["energy_max"] = float(np.quantile(ood.energy(held_out_logits), 1 - ref["tail"]))
        ref["energy_from"] = (f"held-out TRAIN cells: {len(held_out_logits)} images scored by the same design's "
                              "lab models, each on the fold it did not train on")
    return ref


def _ood_inputs(run: LoadedModel, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(image statistics of each 240x320 field, the model's scores) for the files that decode."""
    fields, bad = decode_images(paths, NATIVE_SIZE, view="full")
    inputs, bad2 = decode_images(paths, run.image_size, view=run.view)
    keep = np.array([i not in bad and i not in bad2 for i in range(len(paths))])
    return np.stack([ood.image_features(f) for f in fields[keep]]), logits_of(run, inputs[keep])


def held_out_logits(run_dir: Path) -> np.ndarray | None:
    """The scores the run's design gave the images it was validated on in its profile's lab (every grouped-
    validation sibling run with the same design), or None when there is no such run."""
    me = Run(run_dir).params()
    frames = [Run(d).predictions(name=VAL_PREDICTIONS) for d in sorted(run_dir.parent.iterdir())
              if d.is_dir() and Run(d).status == "finished" and Run(d).has(VAL_PREDICTIONS)
              and design_key(Run(d).params()) == design_key(me)]
    if not frames:
        return None
    return np.concatenate([f[SCORE_COLUMNS].to_numpy(np.float64) for f in frames])


def ood_rate(run: LoadedModel, reference: dict, split: str = "TEST", data_dir=None) -> dict:
    """How often the flag fires on a split the model was not trained on but that is like TRAIN (TEST): the
    in-distribution false-alarm rate, with how often each test fired."""
    feats, logits = _ood_inputs(run, build_manifest(data_dir).split(split)["path"].tolist())
    flags, reasons = ood.flag(reference, feats, logits)
    return {"split": split, "images": len(feats), "flagged": float(np.mean(flags)),
            "by_statistics": float(np.mean(["statistics" in r for r in reasons])),
            "by_energy": float(np.mean(["no class fits" in r for r in reasons]))}


#: What a shipped model keeps of its competence region: the region, the ladder's drop per rung (on held-out TRAIN
#: cells), and the rates the shift grid measured on TEST (its detail stays in ``shift_grid.json`` and the report).
COMPETENCE_KEYS = ("statistics", "low", "high", "tolerance", "drops", "folds", "per_cell", "clean_accuracy")
NO_REGION = ("no competence region: fitted by the shift grid for a lab profile's final models "
             "(`python -m wbc_utils shifts --profile best`), kept by `make ship-model`")


def competence_region(run: LoadedModel) -> dict | None:
    """The model's competence region (:mod:`wbc_utils.competence`): a shipped model's, from its ``model.json``; a run
    folder's, from its profile's ``shift_grid.json`` when the run is one of the final models scored there; else
    None (the ``unreliable`` column stays empty)."""
    shipped = read_shipped(run.path)
    if shipped is not None:
        return shipped.get("competence")
    folder = Run(run.path)
    if not folder.has(PARAMS):
        return None
    grid = read_shift_grid(folder.path.parent.name, folder.path.parent.parent)
    c = grid.get("competence") if grid else None
    if not c or folder.path.name not in grid.get("runs", []):
        return None
    # in the grid's entry, "beyond" is the flag's detection per grid shift (the ladder's verdicts are in "drops")
    return {**{k: c[k] for k in COMPETENCE_KEYS if k in c},
            "measured": {"false_alarms_test": c.get("false_alarms_clean"),
                         "false_alarms_test_simple": c.get("false_alarms_simple"),
                         "detection": dict(c.get("beyond", [])), "lowest_detection": c.get("lowest_detection"),
                         "from": f"shift grid of {folder.path.parent.name}: {grid.get('images')} images, "
                                 f"{grid.get('models')} model(s)"}}


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


def predict_files(inputs: Iterable[str | os.PathLike], model: str | os.PathLike | None = None, run=None,
                  data_dir=None):
    """Classify image files and folders; returns a DataFrame, one row per file.

    Columns: ``file``, ``predicted``, ``confidence``, ``p_<CLASS>`` for each
    class, ``ood`` (True when the image looks unlike TRAIN; empty without a reference), ``ood_reason``,
    ``unreliable`` (True when the image lies outside the model's competence region; empty without one, see
    :func:`competence_region`), ``unreliable_reason``, and ``error`` (empty when the file was classified).
    """
    run = run or load_model(model or default_model())
    reference = ood_reference(run, data_dir)
    region = competence_region(run)
    items = expand_inputs(list(inputs))
    rows, batch, features, stats, where = [], [], [], [], []
    for path, err in items:
        row = {"file": path, "predicted": "", "confidence": np.nan, **{f"p_{c}": np.nan for c in CLASSES},
               "ood": None, "ood_reason": "", "unreliable": None, "unreliable_reason": "", "error": err or ""}
        if not err:
            arr = prepare(path, run.image_size, run.view)
            if isinstance(arr, str):
                row["error"] = arr
            else:
                batch.append(arr)
                field = decode_image(path, NATIVE_SIZE, "full")
                features.append(ood.image_features(field))
                if region is not None:
                    stats.append(competence.field_statistics(field))
                where.append(len(rows))
        rows.append(row)
    if batch:
        x = np.stack(batch)
        probs = predict_arrays(run, x)
        flags, reasons = (ood.flag(reference, np.stack(features), logits_of(run, x)) if reference is not None
                          else ([None] * len(x), ["no reference: the dataset was not found to fit one"] * len(x)))
        unreliable, why_unreliable = (competence.flag(region, np.stack(stats)) if region is not None
                                      else ([None] * len(x), [NO_REGION] * len(x)))
        for i, pr, fl, why, un, why_un in zip(where, probs, flags, reasons, unreliable, why_unreliable):
            rows[i].update({f"p_{c}": float(v) for c, v in zip(CLASSES, pr)})
            rows[i]["predicted"] = CLASSES[int(pr.argmax())]
            rows[i]["confidence"] = float(pr.max())
            rows[i]["ood"], rows[i]["ood_reason"] = (None if fl is None else bool(fl)), why
            rows[i]["unreliable"], rows[i]["unreliable_reason"] = (None if un is None else bool(un)), why_un
    frame = pd.DataFrame(rows, columns=["file", "predicted", "confidence", *[f"p_{c}" for c in CLASSES], "ood",
                                        "ood_reason", "unreliable", "unreliable_reason", "error"])
    frame.attrs["model"] = str(run.path)
    return frame


def format_table(frame) -> str:
    """A plain-text table for the terminal: paths relative to the folder the files share, probabilities to three
    places, and the reasons for each flag (out-of-distribution, outside the model's competence) as numbered notes
    below the table."""
    shown = frame.copy()
    files = [Path(f) for f in shown["file"]]
    try:
        base = Path(os.path.commonpath([f.parent for f in files])) if files else Path(".")
    except ValueError:
        base = Path(".")
    shown["file"] = [str(f.relative_to(base)) if f.is_relative_to(base) and f != base else str(f) for f in files]
    for c in ["confidence", *[f"p_{c}" for c in CLASSES]]:
        shown[c] = shown[c].map(lambda v: "" if v != v else f"{v:.3f}")
    notes: dict[str, list[str]] = {}
    marked: dict[str, list[str]] = {}
    for column, label in (("ood", "unlike TRAIN"), ("unreliable", "unreliable")):
        marks, said = marked.setdefault(label, []), notes.setdefault(label, [])
        for f, flagged, why in zip(shown["file"], shown[column], shown[f"{column}_reason"]):
            if flagged is not None and flagged == flagged and bool(flagged):  # None or NaN: not judged
                said.append(f"  [{len(said) + 1}] {f}: {why}")
                marks.append(f"yes [{len(said)}]")
            else:
                marks.append("" if flagged is None or flagged != flagged else "no")
    shown = shown.drop(columns=["ood", "ood_reason", "unreliable", "unreliable_reason"])
    for label, marks in marked.items():
        if label == "unlike TRAIN" or any(marks):  # without a competence region: no column of blanks
            shown[label] = marks
    shown.columns = [c.replace("p_", "")[:4] if c.startswith("p_") else c for c in shown.columns]
    text = (f"files in {base}\n" if str(base) not in ("", ".") else "") + shown.to_string(index=False)
    if notes["unlike TRAIN"]:
        text += "\nunlike the training images (do not trust these answers):\n" + "\n".join(notes["unlike TRAIN"])
    if notes["unreliable"]:
        text += ("\noutside the model's competence (where its accuracy was measured to drop; do not trust these "
                 "answers):\n" + "\n".join(notes["unreliable"]))
    return text


def ship_model(run_dir: str | os.PathLike, dest: str | os.PathLike = SHIPPED_MODEL, force: bool = False,
               max_bytes: int = 5 * 1024 * 1024, data_dir=None) -> Path:
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
    loaded = load_model(run.path)
    # what predict calls unlike TRAIN: image statistics from TRAIN, the energy threshold from the lab's held-out folds
    meta["ood"] = fit_ood_reference(loaded, data_dir, held_out_logits=held_out_logits(run.path))
    # its false alarms on TEST (augmented copies, like TRAIN) and on TEST_SIMPLE (un-augmented original fields)
    meta["ood"]["test"] = ood_rate(loaded, meta["ood"], "TEST", data_dir)
    meta["ood"]["test_simple"] = ood_rate(loaded, meta["ood"], "TEST_SIMPLE", data_dir)
    # what predict calls unreliable: the competence region the profile's shift grid fitted for this model's design
    region = competence_region(loaded)
    if region is not None:
        meta["competence"] = region
    # without the optimizer's state: a third of the size, the same predictions
    write_shipped(dest, loaded.model, meta)
    return dest
