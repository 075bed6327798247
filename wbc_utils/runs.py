"""The run folder and the study folder: what training leaves behind, and the only code that names those files.

``<runs>/<profile>/<run_name>/`` (a :class:`Run`) holds:

=======================  ===================================================
``params.json``          the run's parameters (written first)
``history.csv``          one row per finished epoch
``checkpoint/``          model + optimizer state after the last finished epoch (removed when finished)
``diagnostics.json``     dead-ReLU fractions and gradient norms
``model.keras``          the trained model
``predictions.csv``      per TEST and TEST_SIMPLE image: source, label, prediction, raw scores
``val_predictions.csv``  the same on held-out TRAIN cells (grouped validation only)
``train.log``            TensorFlow's own start-up and warning lines (kept out of the console)
``metrics.json``         written last: a run without it is *incomplete*
``train.ipynb``          the executed training notebook (studies run through papermill)
``lock.json``            while a process trains the run: its host, pid and heartbeat (:mod:`wbc_utils.locks`)
``ood.json``             what ``predict`` calls unlike TRAIN for this model (:mod:`wbc_utils.ood`), once used
=======================  ===================================================

``<runs>/<profile>/`` (a study) holds ``summary.csv`` (one row per run; written by
:mod:`wbc_utils.study` only), ``study.json`` (the profile, timings, failures) and
``original-2020.json`` (the 2020 weights re-scored) and ``study.log`` (the kernels' start-up lines). A shipped model
(``models/best/``) holds ``model.keras`` and ``model.json``.

A study is read whole by :func:`load_study`: a :class:`Study` holds its main and control runs (each run's role
is decided here once, by the profile it ran with), their metrics and histories, and the profile's ``kind``;
the report, the figures, the notebooks and the command line all read a study through it. A run's files are
read through :class:`Run`'s methods.

Everything here reads or writes files; nothing trains. TensorFlow is imported
only inside :func:`load_model`, which needs Keras to open a model.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from . import CLASSES, registry
from .artifacts import atomic_path, copy_file, read_json, write_csv, write_json, write_text
from .config import profile_dir
from .errors import DataError, WBCError
from .evaluation import EVALUATION_VERSION, SCORE_COLUMNS
from .locks import FolderLock, read_owner
from .params import LEGACY_VALUES, PROFILES, Profile, RunParams, upgrade, upgrade_profile_settings

PARAMS = "params.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint"
CHECKPOINT_STATE = "state.json"
DIAGNOSTICS = "diagnostics.json"
MODEL = "model.keras"
PREDICTIONS = "predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
METRICS = "metrics.json"
NOTEBOOK = "train.ipynb"
LOG = "train.log"
LOCK = "lock.json"
#: The model's out-of-distribution thresholds, fitted on TRAIN the first time ``predict`` uses the run.
OOD = "ood.json"
#: marks a run folder filled from an exported run (results/): it names where from; the run has no model
IMPORTED = "imported_from.txt"
#: What one run's folder takes on disk, for the free-space check before a study: a quick-profile run measured
#: 1.4 MB, a best-profile one 3.5 MB; a checkpoint doubles the model while the run trains.
RUN_BYTES = 8 * 2**20
#: A shipped model's description (parameters and headline metrics), beside its model.keras.
SHIPPED_META = "model.json"
SUMMARY = "summary.csv"
STUDY = "study.json"
ORIGINAL = "original-2020.json"
#: The kernels' own start-up lines, kept off the console while a study runs.
STUDY_LOG = "study.log"

#: The columns of ``predictions.csv`` before the scores: where each image comes from, and its label.
PREDICTION_COLUMNS = ["split", "relpath", "class", "label", "slide", "cell", "shared"]
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "paper_metric", "val_loss", "val_accuracy", "val_paper_metric",
                   "train_seconds", "epoch_seconds"]


@dataclasses.dataclass(frozen=True)
class Run:
    """One run's folder: paths, status, readers and (atomic) writers."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def checkpoint_model(self) -> Path:
        return self.path / CHECKPOINT / MODEL

    @property
    def notebook_path(self) -> Path:
        return self.path / NOTEBOOK

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def diagnostics_path(self) -> Path:
        return self.path / DIAGNOSTICS

    @property
    def status(self) -> str:
        """'finished' (metrics.json), 'incomplete' (started, no metrics) or 'missing'."""
        if (self.path / METRICS).exists():
            return "finished"
        if (self.path / PARAMS).exists() or (self.path / NOTEBOOK).exists():
            return "incomplete"
        return "missing"

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    # readers
    def params(self) -> dict:
        """params.json, values an earlier version wrote read as today's (:func:`~wbc_utils.params.upgrade`)."""
        return upgrade(read_json(self.path / PARAMS))

    def metrics(self) -> dict:
        return read_json(self.path / METRICS)

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / HISTORY)

    def diagnostics(self) -> dict:
        p = self.path / DIAGNOSTICS
        return read_json(p) if p.exists() else {}

    def predictions(self, split: str | None = None, name: str = PREDICTIONS) -> pd.DataFrame:
        """Predictions (one split, sorted by path, when ``split`` is given)."""
        f = pd.read_csv(self.path / name, dtype={"cell": str, "relpath": str})
        if "slide" in f.columns:
            f["slide"] = f["slide"].astype("Int64")
        if split is not None:
            f = f[f["split"] == split].sort_values("relpath").reset_index(drop=True)
        return f

    def ood(self) -> dict | None:
        p = self.path / OOD
        return read_json(p) if p.exists() else None

    def write_ood(self, reference: dict) -> Path:
        return write_json(self.path / OOD, reference)

    def is_stale(self) -> bool:
        """True when a finished run's metrics were computed with an older evaluation definition."""
        return self.metrics().get("evaluation_version") != EVALUATION_VERSION

    def completed_epochs(self) -> int:
        """Epochs saved in the checkpoint (0 when there is none)."""
        p = self.path / CHECKPOINT / CHECKPOINT_STATE
        return int(read_json(p).get("completed_epochs", 0)) if p.exists() else 0

    # writers (each atomic)
    def write_params(self, params: dict) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return write_json(self.path / PARAMS, params)

    def write_metrics(self, metrics: dict) -> Path:
        return write_json(self.path / METRICS, metrics)

    def write_history(self, history: list[dict]) -> Path:
        return write_csv(self.path / HISTORY, pd.DataFrame(history, columns=HISTORY_COLUMNS))

    def write_predictions(self, frame: pd.DataFrame, name: str = PREDICTIONS) -> Path:
        return write_csv(self.path / name, frame)

    def save_model(self, model, checkpoint: bool = False) -> Path:
        """``model.keras`` (or the checkpoint's copy, with the count of finished epochs)."""
        dest = self.checkpoint_model if checkpoint else self.model_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            model.save(tmp)
        return dest

    def write_checkpoint(self, model, history: list[dict]) -> None:
        """After an epoch: the model with its optimizer state, the history, and how many epochs they hold."""
        self.save_model(model, checkpoint=True)
        self.write_history(history)
        write_json(self.path / CHECKPOINT / CHECKPOINT_STATE, {"completed_epochs": len(history)})

    def remove_checkpoint(self) -> None:
        shutil.rmtree(self.path / CHECKPOINT, ignore_errors=True)

    def lock(self, owner: str | None = None) -> FolderLock:
        """The run's lock (``with run.lock(): ...``); see :mod:`wbc_utils.locks`."""
        return FolderLock(self.path / LOCK, owner)

    def lock_owner(self) -> dict | None:
        return read_owner(self.path / LOCK)

    def clear(self) -> None:
        """Remove everything but the executed notebook papermill is writing for *this* execution, and the lock."""
        for p in self.path.iterdir():
            if p.name in (NOTEBOOK, LOCK):
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()


#: What ``export`` keeps of a finished run: everything the report reads, not the models (``model.keras`` is
#: megabytes; the paper model at 240x320 with its optimizer state, about 1.8 MB a run).
EXPORTED = (PARAMS, HISTORY, METRICS, PREDICTIONS, VAL_PREDICTIONS, DIAGNOSTICS)
#: A lab profile's study folder (wbc_utils.lab, wbc_utils.shifts): every trial of its search, Optuna's storage (what a
#: later session resumes), the final models on the shift grid.
LAB_TRIALS, LAB_STORAGE, SHIFT_GRID = "lab_trials.json", "lab.sqlite3", "shift_grid.json"
#: held while a process runs a profile's lab (one at a time)
LAB_LOCK = "lab.lock"
#: the study's own files; a lab's are small and go with them
EXPORTED_STUDY = (SUMMARY, STUDY, ORIGINAL, LAB_TRIALS, LAB_STORAGE, SHIFT_GRID)


def read_lab_trials(profile: str, runs_root=None) -> dict | None:
    """A lab profile's search record (``lab_trials.json``), or None when its lab has not run."""
    path = profile_dir(profile, runs_root) / LAB_TRIALS
    return read_json(path) if path.exists() else None


def read_shift_grid(profile: str, runs_root=None) -> dict | None:
    """A lab profile's final models on the shift grid (``shift_grid.json``), or None when not scored yet."""
    path = profile_dir(profile, runs_root) / SHIFT_GRID
    return read_json(path) if path.exists() else None


def export_study(profile: str, dest_root: Path, runs_root=None) -> list[Path]:
    """Copy a study's small artifacts (:data:`EXPORTED` of each finished run, and the study's own files) to
    ``dest_root/<profile>/``; returns what was written. The copy is made beside the destination and swapped in
    whole; earlier exported runs that this runs folder does not hold finished are kept (an export never drops a
    finished run it cannot replace). ``dest_root`` then reads as a runs folder: the
    report builds from it without the models, and ``study --reuse`` takes its runs as finished
    (:func:`import_exported_run`)."""
    src = profile_dir(profile, runs_root)
    if not src.is_dir():
        raise WBCError(f"no study at {src}: nothing to export.")
    check_no_legacy(src)
    dest = Path(dest_root) / profile
    fresh = dest.with_name(f".{profile}.export-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    out = []
    finished = [x for x in src.iterdir() if x.is_dir() and Run(x).status == "finished"]
    # a run exported earlier (another session, another machine) that this runs folder does not hold finished is
    # kept: an export never drops a finished run it cannot replace
    kept = [x for x in dest.iterdir() if x.is_dir() and Run(x).status == "finished"
            and Run(src / x.name).status != "finished"] if dest.is_dir() else []
    for d in sorted(finished + kept):
        for name in EXPORTED:
            if (d / name).exists():
                out.append(copy_file(d / name, fresh / d.name / name))
    for name in EXPORTED_STUDY:
        if (src / name).exists():
            out.append(copy_file(src / name, fresh / name))
    old = dest.with_name(f".{profile}.old-{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    fresh.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return [dest / p.relative_to(fresh) for p in out]


def import_exported_run(exported: Path, run_dir: Path) -> bool:
    """Copy a finished run's exported artifacts (``results/<profile>/<run>/``) into an empty or unfinished run
    folder, swapped in whole, so the study counts it as finished without training it again (its model is not
    exported: :func:`load_model` says so for such a run). Returns False, copying nothing,
    when there is no finished export there."""
    if Run(exported).status != "finished":
        return False
    run_dir = Path(run_dir)
    fresh = run_dir.with_name(f".{run_dir.name}.import-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    for name in EXPORTED:
        if (exported / name).exists():
            copy_file(exported / name, fresh / name)
    (fresh / IMPORTED).write_text(f"{exported}\n")
    old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
    if run_dir.exists():
        run_dir.rename(old)
    fresh.rename(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return True


def predictions_frame(frame: pd.DataFrame, scores) -> pd.DataFrame:
    """One row per image of ``frame`` (a split's manifest rows): its source (slide, same-cell cluster, shared with
    TRAIN), label, predicted class and the four raw scores: the rows of ``predictions.csv``."""
    f = frame[PREDICTION_COLUMNS].copy()
    scores = np.asarray(scores)
    f["pred"] = scores.argmax(1) if len(scores) else np.zeros(0, int)
    for i, c in enumerate(SCORE_COLUMNS):
        f[c] = scores[:, i] if len(scores) else np.zeros(0)
    return f


# ----------------------------------------------------------------------------- models: a run's and shipped ones

@dataclasses.dataclass
class LoadedModel:
    """A trained model and how its inputs are prepared."""

    model: object
    params: dict
    path: Path

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.params.get("image_size", (240, 320)))

    @property
    def view(self) -> str:
        return self.params.get("view", "full")

    @property
    def tta(self) -> bool:
        return bool(self.params.get("tta", False))

    @property
    def name(self) -> str:
        return self.params.get("run_name") or self.path.name


def is_model_path(path: str | os.PathLike) -> bool:
    """True for a .keras file or a folder holding model.keras (a finished run, a shipped model)."""
    p = Path(path).expanduser()
    return p.suffix == ".keras" or (p.is_dir() and (p / MODEL).exists())


def model_params(folder: Path) -> dict | None:
    """The parameters a model was trained with: ``model.json`` (a shipped model) or ``params.json`` (a run)."""
    for name in (SHIPPED_META, PARAMS):
        if (folder / name).exists():
            meta = read_json(folder / name)
            return meta.get("params", meta)
    return None


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load ``model.keras`` and its parameters from a run folder, a shipped-model folder or a .keras file."""
    path = Path(path).expanduser()
    model_file = path / MODEL if path.is_dir() else path
    if not model_file.exists():
        if path.is_dir() and (path / IMPORTED).exists():
            hint = (f"it was copied from an export ({(path / IMPORTED).read_text().strip()}), which keeps no models: "
                    "its predictions and metrics are here, its weights are not. Train it here to have them "
                    "(remove the folder, then run the study again), or use a run trained on this machine")
        elif path.is_dir() and Run(path).status == "finished":
            hint = "it holds no model.keras (a finished run whose model was removed or never exported)"
        elif path.is_dir():
            hint = "it holds no model.keras: is the run finished? (a run folder without metrics.json is not)"
        else:
            hint = "the file does not exist"
        raise DataError(f"cannot load a model from {path}: {hint}.")
    params = model_params(model_file.parent)
    if params is None:
        raise DataError(f"{model_file.parent} has no params.json or model.json: without it the input size and "
                        f"view the model expects are unknown. Point at a run folder or at models/best/.")
    # Keras (and so TensorFlow, seconds to import) only when a model is really opened; the losses module
    # registers the custom loss and metric the saved model names.
    from .losses import load_keras_model

    return LoadedModel(load_keras_model(model_file), params, model_file.parent)


def write_shipped(dest: Path, model, meta: dict) -> Path:
    """A shipped model folder: ``model.keras`` saved atomically, then ``model.json`` (``meta`` with the model
    file's size and SHA-256), so a folder with both is complete."""
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / MODEL) as tmp:
        model.save(tmp)
    data = (dest / MODEL).read_bytes()
    write_json(dest / SHIPPED_META, {**meta, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    return dest / MODEL


def read_shipped(dest: Path) -> dict | None:
    p = dest / SHIPPED_META
    return read_json(p) if p.exists() else None


# ----------------------------------------------------------------------------- disk faults, said plainly

def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} KB"


def resource_message(e: OSError, folder: Path | None = None) -> str:
    """One line for a disk fault: what happened, where, what a run needs, what to do."""
    where = Path(e.filename).parent if e.filename else folder
    if e.errno == errno.ENOSPC:
        free = _free_bytes(where) if where else None
        return (f"no space left on the device of {where}" + (f" ({_mb(free)} free)" if free is not None else "")
                + f": a run's folder needs about {_mb(RUN_BYTES)}. Free some space, or point --runs-dir "
                f"(WBC_RUNS_DIR) at a disk with room; the runs that could not finish are listed as incomplete "
                f"and resume when started again.")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "is read-only" if e.errno == errno.EROFS else "is not writable by this user"
        return (f"the runs folder {where} {why} ({e.strerror}): point --runs-dir (WBC_RUNS_DIR) at a folder you "
                f"can write, or fix its permissions.")
    return f"{e.strerror or e} ({e.filename or where}): check that the folder exists and can be written."


def _free_bytes(folder: Path) -> int | None:
    for f in (folder, *folder.parents):
        if f.exists():
            try:
                return shutil.disk_usage(f).free
            except OSError:
                return None
    return None


def check_runs_folder(folder: Path, runs_to_train: int) -> str | None:
    """Make ``folder`` (a study's) and prove it can be written; raise a :class:`WBCError` that says what to do
    when it cannot. Returns a warning when its disk looks too small for ``runs_to_train`` runs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise WBCError(resource_message(e, folder)) from None
    free = _free_bytes(folder)
    need = runs_to_train * RUN_BYTES
    if free is not None and runs_to_train and free < need:
        return (f"warning: {folder} has {_mb(free)} free; {runs_to_train} run(s) need about {_mb(need)} "
                f"({_mb(RUN_BYTES)} each). Runs that run out of space stop without metrics.json (incomplete) "
                f"and resume later.")
    return None


# ----------------------------------------------------------------------------- the study folder

def study_record(profile: str, runs_root=None) -> dict | None:
    p = profile_dir(profile, runs_root) / STUDY
    return read_json(p) if p.exists() else None


def write_study_record(profile: str, record: dict, runs_root=None) -> Path:
    return write_json(profile_dir(profile, runs_root) / STUDY, record)


def original_record(profile: str, runs_root=None) -> dict | None:
    """The 2020 weights re-scored by a study (``original-2020.json``), or None."""
    p = profile_dir(profile, runs_root) / ORIGINAL
    return read_json(p) if p.exists() else None


def original_path(profile: str, runs_root=None) -> Path:
    return profile_dir(profile, runs_root) / ORIGINAL


def summary_path(profile: str, runs_root=None) -> Path:
    return profile_dir(profile, runs_root) / SUMMARY


#: Per-run figures copied from metrics.json into summary.csv (intervals as <key>_lo, <key>_hi).
SUMMARY_INTERVALS = ("unseen_accuracy", "test_accuracy", "unseen_cell_accuracy", "test_cell_accuracy",
                     "test_simple_accuracy")
SUMMARY_VALUES = ("paper_metric_test", "test_regression_accuracy", "final_train_accuracy", "final_train_paper_metric",
                  "final_val_accuracy", "final_val_paper_metric", "final_train_loss", "constant_loss",
                  "train_loss_vs_constant", "output_spread", "collapsed", "top_class_share", "held_from_epoch", "ece",
                  "train_seconds", "images_per_second", "evaluation_version")
SUMMARY_COLUMNS = (
    ["run_name", "status", "role", "loss", "target_encoding", "seed", "arch", "input_scaling", "learning_rate",
     "validation", "image_size", "epochs", "train_subset"]
    + [f"{k}{x}" for k in SUMMARY_INTERVALS for x in ("", "_lo", "_hi")] + list(SUMMARY_VALUES)
    + [f"recall_{c}" for c in CLASSES] + [f"cells_{c}" for c in CLASSES] + ["error", "run_dir"])


#: A run's role in its study (summary.csv's ``role``): one of the profile's main runs, a control run, or a folder
#: the profile does not plan (``OTHER``: an older version's run, kept on disk but out of every table).
MAIN, CONTROL, OTHER = "main", "control", "other"


def summary_row(run_dir: Path, error: str | None = None, profile: Profile | None = None) -> dict:
    run = Run(run_dir)
    status = run.status
    row = {"run_name": run.name, "status": "failed" if error else status, "error": error or "",
           "run_dir": str(run_dir), "role": MAIN if profile is None else profile.role_of(run.name)}
    if run.has(PARAMS):
        p = run.params()
        row.update({k: p.get(k) for k in ("loss", "target_encoding", "seed", "arch", "input_scaling",
                                           "learning_rate", "validation", "epochs", "train_subset")})
        row["image_size"] = "x".join(str(v) for v in p.get("image_size", []))
    if status == "finished":
        m = run.metrics()
        for k in SUMMARY_INTERVALS:
            row[k] = m.get(k)
            row[f"{k}_lo"], row[f"{k}_hi"] = m.get(f"{k}_ci") or [None, None]
        for k in SUMMARY_VALUES:
            row[k] = m.get(k)
        for c, v in m.get("per_class", {}).items():
            row[f"recall_{c}"] = v.get("recall")
            row[f"cells_{c}"] = v.get("cells")
    return row


def profile_of(name: str, study: dict | None) -> Profile | None:
    """The profile a study ran with: as recorded in study.json, else the named built-in one. A record written
    before profiles had a ``kind`` takes the built-in profile's of the same name (else "study")."""
    settings = (study or {}).get("profile_settings")
    if settings:
        fields = {f.name for f in dataclasses.fields(Profile)}
        kw = {k: (tuple(v) if k in ("losses", "encodings", "controls") and isinstance(v, list) else v)
              for k, v in upgrade_profile_settings(settings).items() if k in fields}
        kw.setdefault("kind", PROFILES[name].kind if name in PROFILES else "study")
        return Profile(**kw)
    return PROFILES.get(name)


def summary_frame(profile: str, runs_root=None, failed: dict | None = None) -> pd.DataFrame:
    """One row per run directory of a study (finished, failed or incomplete), read from its artifacts."""
    pdir = profile_dir(profile, runs_root)
    study = study_record(profile, runs_root) or {}
    failed = failed or {r["run_name"]: r["error"] for r in study.get("runs", []) if r.get("error")}
    prof = profile_of(profile, study)
    rows = [summary_row(d, failed.get(d.name), prof) for d in sorted(pdir.iterdir())
            if d.is_dir() and ((d / PARAMS).exists() or d.name in failed)]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


@dataclasses.dataclass
class Study:
    """A study as everything downstream reads it (:func:`load_study`): its runs, main and control, with their
    metrics and histories, and the profile it ran with.

    ``runs`` has one row per run folder (:func:`summary_frame`: finished, failed or incomplete); its ``role``
    column says whether the run is one of the profile's main runs or a control run, decided once, in
    :func:`summary_row`. ``main`` and ``controls`` are its two parts; ``metrics`` (finished runs) and
    ``histories`` are keyed by run name and cover both."""

    name: str
    path: Path
    profile: Profile | None
    record: dict
    runs: pd.DataFrame
    metrics: dict
    histories: dict
    runs_root: Path | None = None

    @property
    def kind(self) -> str:
        """What the profile is for (``Profile.kind``): "study", "collapse", "lab" or "pilot"."""
        return self.profile.kind if self.profile is not None else "study"

    @property
    def main(self) -> pd.DataFrame:
        """The profile's main runs (what a loss study's tables and figures show)."""
        return self.runs[self.runs["role"] == MAIN].reset_index(drop=True)

    @property
    def controls(self) -> pd.DataFrame:
        """The control runs (the quick profile's 2020 rate, the collapse study's changes, the lab's candidates)."""
        return self.runs[self.runs["role"] == CONTROL].reset_index(drop=True)

    @property
    def others(self) -> pd.DataFrame:
        """Run folders the profile does not plan (an older version's runs): in no table or figure."""
        return self.runs[self.runs["role"] == OTHER].reset_index(drop=True)

    @property
    def settings(self) -> dict:
        """The profile's settings as study.json recorded them ({} without a record)."""
        return self.record.get("profile_settings", {})

    @property
    def plan(self) -> Profile | None:
        """The runs the study is meant to have: the built-in profile of its name where it plans every recorded
        run (the same runs, described in today's words, or more: seeds added after the record was written), else
        the recorded profile. A report of a study part-way says how many of these have finished."""
        built_in = PROFILES.get(self.name)
        if self.profile is None or built_in is None:
            return self.profile or built_in
        recorded = {p.run_name for p in self.profile.runs()}
        return built_in if recorded <= {p.run_name for p in built_in.runs()} else self.profile

    def finished(self, role: str | None = MAIN) -> pd.DataFrame:
        """The finished runs of one role (None: both)."""
        rows = self.runs if role is None else self.runs[self.runs["role"] == role]
        return rows[rows["status"] == "finished"].reset_index(drop=True)

    def losses(self) -> list[str]:
        """The losses of the main runs, in registry order."""
        return registry.ordered(self.main["loss"].dropna())

    def original(self) -> dict | None:
        """The 2020 weights re-scored by this study (``original-2020.json``), or None."""
        return original_record(self.name, self.runs_root)


def legacy_folders(folder: Path) -> list[Path]:
    """The run folders under ``folder`` (a runs or results folder, or one study of it) that an earlier version
    wrote with a value since renamed (:data:`~wbc_utils.params.LEGACY_VALUES`: "paper" for integer labels, TEST
    as validation or the 2020 network): :func:`migrate` brings them up to date."""
    folder = Path(folder)
    return sorted(f.parent for f in folder.glob(f"**/{PARAMS}")
                  if not f.parent.name.startswith(".") and _is_legacy(f.parent))


def _is_legacy(run_dir: Path) -> bool:
    raw = read_json(run_dir / PARAMS)
    # old values, or today's values under the old folder name (a migration stopped between the two)
    return upgrade(raw) != raw or run_dir.name == _names(run_dir)[0]


def check_no_legacy(folder: Path) -> None:
    """Raise a WBCError that says what to run when a study folder holds runs named by an earlier version (they
    would read as runs the profile does not plan, and a study would train them again under today's names)."""
    old = legacy_folders(folder) if Path(folder).is_dir() else []
    if old:
        raise WBCError(f"{len(old)} run folder(s) under {folder} were written before 'paper' was renamed "
                       f"(e.g. {old[0].name}): run `python -m wbc_utils migrate {folder}` once (it renames them and "
                       f"their recorded values; nothing is trained again), then run this again.")


def _upgrade_csv(path: Path, renamed: dict[str, str]) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    before = frame.copy()
    for key, values in LEGACY_VALUES.items():
        if key in frame.columns:
            frame[key] = frame[key].replace(values)
    if "run_name" in frame.columns:
        frame["run_name"] = [renamed.get(v, v) for v in frame["run_name"]]
    if "run_dir" in frame.columns:
        frame["run_dir"] = [str(Path(v).with_name(renamed[Path(v).name])) if v and Path(v).name in renamed else v
                            for v in frame["run_dir"]]
    if not frame.equals(before):
        write_csv(path, frame)


def _upgrade_record(record: dict, renamed: dict[str, str]) -> dict:
    out = dict(record)
    if isinstance(out.get("profile_settings"), dict):
        out["profile_settings"] = upgrade_profile_settings(out["profile_settings"])
    if "runs" in out:
        out["runs"] = [{**r, "run_name": renamed.get(r.get("run_name"), r.get("run_name"))} for r in out["runs"]]
    for key in ("failed", "in_progress"):
        if isinstance(out.get(key), dict):
            out[key] = {renamed.get(k, k): v for k, v in out[key].items()}
        elif isinstance(out.get(key), list):
            out[key] = [renamed.get(k, k) if isinstance(k, str) else k for k in out[key]]
    if isinstance(out.get("previous"), dict):  # the record of the study's previous invocation
        out["previous"] = _upgrade_record(out["previous"], renamed)
    return out


def _names(run_dir: Path) -> tuple[str, str] | tuple[None, None]:
    """(the name an earlier version gave this run, today's name), or (None, None) where they are the same."""
    try:
        p = RunParams.from_dict({k: v for k, v in Run(run_dir).params().items() if k in RunParams.defaults()})
    except WBCError:
        return None, None
    return (p.legacy_run_name, p.run_name) if p.legacy_run_name else (None, None)


def _renamed_on_disk(study: Path) -> dict[str, str]:
    """{old name: today's name} for the runs of one study folder that carry today's name, read from the folders
    themselves (so a migration stopped part-way still updates the records on its next call); a name whose old
    folder is still there is left out (two folders would claim one record)."""
    out = {}
    for d in study.iterdir():
        if d.is_dir() and not d.name.startswith(".") and (d / PARAMS).exists():
            old, new = _names(d)
            if old and d.name == new and not (study / old).exists():
                out[old] = new
    return out


def migrate(folder: Path, printer=print) -> list[tuple[Path, Path]]:
    """Bring run folders written before "paper" was renamed up to date, under ``folder`` (a runs folder, a
    results folder or one study of either): a folder named for integer labels the old way ("mse_paper_...") is
    renamed ("mse_integer_...") first, then its params.json and metrics.json take today's values (and names),
    its ``imported_from.txt`` its new path, and each study's summary.csv and study.json follow. Nothing is
    trained or evaluated again; every file is rewritten atomically, and a second call finishes what a stopped
    one left; a run a study holds, or whose new name is taken, is left as it is and named. Returns the folders
    renamed, (old path, new path)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WBCError(f"{folder} is not a folder: give a runs folder (runs/), a results folder (results/) or "
                       f"one study of either (runs/quick).")
    moved: list[tuple[Path, Path]] = []
    for run_dir in legacy_folders(folder):
        run = Run(run_dir)
        if run.lock_owner() is not None:
            printer(f"  {run_dir}: left as it is (a study is running it: migrate after it ends)")
            continue
        old, new = _names(run_dir)
        if old and run_dir.name == old:  # rename first: a second call finds the run by its values
            target = run_dir.with_name(new)
            if target.exists():
                printer(f"  {run_dir}: left under its old name ({target.name} exists)")
                continue
            run_dir.rename(target)
            moved.append((run_dir, target))
            printer(f"  {run_dir.parent.name}/{run_dir.name} -> {target.name}")
            run = Run(target)
        else:
            printer(f"  {run_dir.parent.name}/{run_dir.name}: values updated")
        if run.has(METRICS):
            m = upgrade(run.metrics())
            if old and m.get("run_name") == old and run.name == new:  # the names a run records of itself
                m["run_name"] = new
                m["run_dir"] = str(Path(m.get("run_dir") or run.path).with_name(new))
            run.write_metrics(m)
        source = Path((run.path / IMPORTED).read_text().strip()) if old and run.has(IMPORTED) else None
        if source is not None and source.name == old:
            write_text(run.path / IMPORTED, f"{source.with_name(new)}\n")
        run.write_params(run.params())
    studies = {f.parent for f in folder.glob(f"**/{STUDY}")} | {f.parent for f in folder.glob(f"**/{SUMMARY}")}
    for study in sorted(studies):
        renamed = _renamed_on_disk(study)
        if (study / STUDY).exists():
            before = read_json(study / STUDY)
            after = _upgrade_record(before, renamed)
            if after != before:
                write_json(study / STUDY, after)
        if (study / SUMMARY).exists():
            _upgrade_csv(study / SUMMARY, renamed)
    return moved


def load_study(profile: str, runs_root=None, check_current: bool = True) -> Study:
    """Read a study (``<runs>/<profile>/``): every run folder, the metrics of the finished ones, the histories.
    Reads only. With ``check_current``, finished runs evaluated with an older definition are refused (``python -m
    wbc_utils reevaluate`` brings them up to date)."""
    pdir = profile_dir(profile, runs_root)
    if not pdir.exists():
        raise FileNotFoundError(f"no study at {pdir}: run `python -m wbc_utils study --profile {profile}` first")
    check_no_legacy(pdir)
    record = study_record(profile, runs_root) or {}
    summary = summary_frame(profile, runs_root)
    stale = [r.run_name for r in summary.itertuples()
             if r.status == "finished" and r.evaluation_version != EVALUATION_VERSION]
    if stale and check_current:
        raise WBCError(f"{len(stale)} run(s) of {pdir} were evaluated with an older definition (e.g. {stale[0]}): "
                       f"run `python -m wbc_utils reevaluate --profile {profile}` (or `make report`, which does).")
    metrics, histories = {}, {}
    for row in summary.itertuples():
        run = Run(Path(row.run_dir))
        if row.status == "finished":
            metrics[row.run_name] = run.metrics()
        if run.has(HISTORY):
            histories[row.run_name] = run.history()
    return Study(name=profile, path=pdir, profile=profile_of(profile, record), record=record, runs=summary,
                 metrics=metrics, histories=histories, runs_root=Path(runs_root) if runs_root else None)
