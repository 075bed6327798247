"""A study: every run of a profile, each executed as the training notebook with papermill.

``runs/<profile>/<run_name>/`` holds each run (see :mod:`wbc_utils.training`);
``runs/<profile>/summary.csv`` has one row per run, finished or not;
``runs/<profile>/study.json`` records the profile, timings and failures;
``runs/<profile>/original-2020.json`` holds the re-scored 2020 models.

A failing run does not stop the others: the study carries on, then exits
non-zero listing what failed, and the report marks those runs.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from . import CLASSES
from .artifacts import read_json, write_csv, write_json
from .data import REPO_ROOT
from .errors import RunExistsError, WBCError
from .evaluation import EVALUATION_VERSION
from .params import Profile, RunParams
from .runs import run_status

log = logging.getLogger(__name__)

TRAIN_NOTEBOOK = REPO_ROOT / "notebooks" / "03_training.ipynb"


def default_runs_root() -> Path:
    env = os.environ.get("WBC_RUNS_DIR")
    return Path(env).expanduser() if env else REPO_ROOT / "runs"


def profile_dir(profile: str, runs_root=None) -> Path:
    return Path(runs_root or default_runs_root()) / profile


def execute_run(params: RunParams, run_dir: Path, data_dir=None, reuse: bool = False, force: bool = False,
                log_output: bool = True) -> None:
    """Execute the training notebook for one run; its executed copy is ``run_dir/train.ipynb``."""
    import papermill as pm

    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = {**params.to_dict(), "output_dir": str(run_dir), "data_dir": str(data_dir or ""),
                  "reuse": reuse, "force": force}
    pm.execute_notebook(str(TRAIN_NOTEBOOK), str(run_dir / "train.ipynb"), parameters=parameters,
                        cwd=str(TRAIN_NOTEBOOK.parent), log_output=log_output, progress_bar=False,
                        kernel_name="python3")


def plan(profile: Profile, runs_root=None, reuse: bool = False,
         force: bool = False) -> list[tuple[RunParams, Path, str]]:
    """Each run with its directory and what will happen to it; raises before any work if a run is in the way."""
    out, blocked = [], []
    for p in profile.runs():
        d = profile_dir(profile.name, runs_root) / p.run_name
        status = run_status(d)
        if status == "finished" and not force:
            same = p.same_as(read_json(d / "params.json"))
            if reuse and same:
                out.append((p, d, "reuse"))
                continue
            blocked.append(f"{d}" + ("" if same else " (different parameters)"))
        out.append((p, d, "resume" if status == "incomplete" and not force else "train"))
    if blocked:
        raise RunExistsError("finished runs are in the way:\n  " + "\n  ".join(blocked) +
                             "\nPass --reuse to keep them (make report does), --force to retrain them, "
                             "or remove the folders.")
    return out


def run_study(profile: Profile, runs_root=None, data_dir=None, reuse: bool = False, force: bool = False,
              rescore: bool = True, jobs: int | None = None) -> dict:
    """Run (or reuse) every run of ``profile``; write summary.csv and study.json. Returns the study record.

    ``jobs`` runs that many notebooks at once (default: the profile's); each
    then gets ``cpu_count // jobs`` TensorFlow threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    _absolute_env()  # the notebooks run with notebooks/ as their working directory
    runs_root = Path(runs_root).resolve() if runs_root else None
    data_dir = Path(data_dir).expanduser().resolve() if data_dir else None
    pdir = profile_dir(profile.name, runs_root)
    pdir.mkdir(parents=True, exist_ok=True)
    steps = plan(profile, runs_root, reuse, force)
    stale = [d for _, d, action in steps if action == "reuse" and _stale(d)]
    if stale:  # a reused run is counted with today's definitions, never yesterday's
        from .data import build_manifest
        from .reevaluate import reevaluate_run

        manifest = build_manifest(data_dir)
        for d in stale:
            print(f"re-evaluating {d.name} (its metrics predate evaluation version {EVALUATION_VERSION})", flush=True)
            reevaluate_run(d, manifest)
    jobs = max(1, int(jobs or profile.jobs))
    record = {"profile": profile.name, "profile_settings": _profile_dict(profile), "jobs": jobs, "runs": [],
              "failed": []}
    prev = read_json(pdir / "study.json") if (pdir / "study.json").exists() else None
    write_json(pdir / "study.json", {**record, "in_progress": True})
    t0 = time.time()
    if jobs > 1:
        os.environ["WBC_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))

    def one(i_step):
        i, (p, d, action) = i_step
        print(f"[{i}/{len(steps)}] {p.run_name}: {action}", flush=True)
        t = time.time()
        entry = {"run_name": p.run_name, "action": action}
        if action != "reuse":
            try:
                execute_run(p, d, data_dir, reuse=False, force=force, log_output=jobs == 1)
            except Exception as e:  # a failing run must not stop the others
                entry["error"] = _short_error(e)
                print(f"    {p.run_name} FAILED: {entry['error']}", flush=True)
        entry["seconds"] = round(time.time() - t, 1)
        return entry

    try:
        with ThreadPoolExecutor(jobs) as ex:
            record["runs"] = list(ex.map(one, enumerate(steps, 1)))
    finally:
        os.environ.pop("WBC_THREADS", None) if jobs > 1 else None
    record["failed"] = [e["run_name"] for e in record["runs"] if "error" in e]
    record["train_wall_seconds"] = round(time.time() - t0, 1)
    if rescore:
        t = time.time()
        try:
            rescore_original(profile, runs_root, data_dir)
        except Exception as e:  # the 2020 files are optional; say so and go on
            record["rescore_error"] = _short_error(e)
        record["rescore_seconds"] = round(time.time() - t, 1)
    summarize(profile.name, runs_root, failed={r["run_name"]: r.get("error") for r in record["runs"] if "error" in r})
    if prev and not prev.get("in_progress"):
        record["previous"] = {k: v for k, v in prev.items() if k != "previous"}
    write_json(pdir / "study.json", record)
    return record


def _stale(run_dir: Path) -> bool:
    return read_json(run_dir / "metrics.json").get("evaluation_version") != EVALUATION_VERSION


PATH_VARIABLES = ("WBC_DATA_DIR", "WBC_RUNS_DIR", "WBC_CACHE_DIR", "WBC_OUTPUT_DIR", "WBC_ORIGINAL_DIR")


def _absolute_env() -> None:
    """Make relative path settings absolute, as the user meant them from their working directory."""
    for name in PATH_VARIABLES:
        v = os.environ.get(name)
        if v and not os.path.isabs(os.path.expanduser(v)):
            os.environ[name] = str(Path(v).expanduser().resolve())


def _profile_dict(profile: Profile) -> dict:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(profile).items()}


def _short_error(e: BaseException) -> str:
    name = type(e).__name__
    msg = str(e).strip().splitlines()
    # papermill wraps the notebook's exception: keep its last meaningful line
    lines = [l for l in msg if l.strip() and not l.startswith("-")]
    return f"{name}: {lines[-1] if lines else ''}"[:500]


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


def summary_row(run_dir: Path, error: str | None = None, profile: Profile | None = None) -> dict:
    status = run_status(run_dir)
    row = {"run_name": run_dir.name, "status": "failed" if error else status, "error": error or "",
           "run_dir": str(run_dir), "role": "main"}
    if (run_dir / "params.json").exists():
        p = read_json(run_dir / "params.json")
        if profile is not None and not profile.is_main(p):
            row["role"] = "control"
        row.update({k: p.get(k) for k in ("loss", "target_encoding", "seed", "arch", "input_scaling",
                                           "learning_rate", "validation", "epochs", "train_subset")})
        row["image_size"] = "x".join(str(v) for v in p.get("image_size", []))
    if status == "finished":
        m = read_json(run_dir / "metrics.json")
        for k in SUMMARY_INTERVALS:
            row[k] = m.get(k)
            row[f"{k}_lo"], row[f"{k}_hi"] = m.get(f"{k}_ci") or [None, None]
        for k in SUMMARY_VALUES:
            row[k] = m.get(k)
        for c, v in m.get("per_class", {}).items():
            row[f"recall_{c}"] = v.get("recall")
            row[f"cells_{c}"] = v.get("cells")
    return row


def summary_frame(profile: str, runs_root=None, failed: dict | None = None):
    """One row per run directory of a study (finished, failed or incomplete), read from its artifacts."""
    import pandas as pd

    pdir = profile_dir(profile, runs_root)
    failed = failed or {}
    study = read_json(pdir / "study.json") if (pdir / "study.json").exists() else {}
    if not failed:
        failed = {r["run_name"]: r["error"] for r in study.get("runs", []) if r.get("error")}
    prof = _profile_of(profile, study)
    rows = [summary_row(d, failed.get(d.name), prof) for d in sorted(pdir.iterdir())
            if d.is_dir() and (d / "params.json").exists() or (d.is_dir() and d.name in failed)]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summarize(profile: str, runs_root=None, failed: dict | None = None):
    """Write runs/<profile>/summary.csv from every run directory there; returns the DataFrame."""
    frame = summary_frame(profile, runs_root, failed)
    write_csv(profile_dir(profile, runs_root) / "summary.csv", frame)
    return frame


def _profile_of(name: str, study: dict) -> Profile | None:
    """The profile a study ran with: as recorded in study.json, else the named built-in one."""
    import dataclasses

    from .params import PROFILES

    settings = study.get("profile_settings")
    if settings:
        fields = {f.name for f in dataclasses.fields(Profile)}
        kw = {k: (tuple(v) if k in ("losses", "encodings", "controls") else v)
              for k, v in settings.items() if k in fields}
        return Profile(**kw)
    return PROFILES.get(name)


def rescore_original(profile: Profile, runs_root=None, data_dir=None, original_dir=None) -> dict:
    """Re-score the 2020 weights on ``profile.rescore_split`` at 240x320; cached in original-2020.json."""
    from .data import build_manifest, load_split
    from .original import find_original, parse_log, rescore

    pdir = profile_dir(profile.name, runs_root)
    out_path = pdir / "original-2020.json"
    found = find_original(original_dir)
    if out_path.exists():
        from .evaluation import EVALUATION_VERSION

        cached = read_json(out_path)
        if cached.get("split") == profile.rescore_split and all(
                (l in cached["models"]) == (found[l]["checkpoint"] is not None) for l in found) and all(
                m.get("evaluation_version") == EVALUATION_VERSION for m in cached["models"].values()):
            return cached
    result = {"split": profile.rescore_split, "models": {}, "logs": {}, "missing": []}
    logs = {}
    for loss, f in found.items():
        if f["log"] is not None:
            logs[loss] = parse_log(f["log"])
            result["logs"][loss] = logs[loss].to_dict("list")
        if f["checkpoint"] is None:
            result["missing"].append(loss)
    if any(f["checkpoint"] for f in found.values()):
        import numpy as np

        manifest = build_manifest(data_dir)
        split = load_split(manifest, profile.rescore_split, (240, 320))
        counts = np.bincount(manifest.split("TRAIN")["label"], minlength=4).tolist()
        simple = None
        if profile.rescore_split != "TEST_SIMPLE" and (manifest.frame["split"] == "TEST_SIMPLE").any():
            simple = load_split(manifest, "TEST_SIMPLE", (240, 320))
        for loss, f in found.items():
            if f["checkpoint"] is not None:
                print(f"re-scoring the 2020 {loss} model on {profile.rescore_split}", flush=True)
                result["models"][loss] = rescore(loss, f["checkpoint"], split, simple, log=logs.get(loss),
                                                 train_class_counts=counts)
    write_json(out_path, result)
    return result


def load_runs(profile: str, runs_root=None):
    """(summary DataFrame, {run_name: metrics}, {run_name: history DataFrame}) for the analysis."""
    import pandas as pd

    pdir = profile_dir(profile, runs_root)
    if not pdir.exists():
        raise FileNotFoundError(f"no study at {pdir}: run `python -m wbc_utils study --profile {profile}` first")
    summary = summary_frame(profile, runs_root)
    stale = [r.run_name for r in summary.itertuples()
             if r.status == "finished" and r.evaluation_version != EVALUATION_VERSION]
    if stale:
        raise WBCError(f"{len(stale)} run(s) of {pdir} were evaluated with an older definition (e.g. {stale[0]}): "
                       f"run `python -m wbc_utils reevaluate --profile {profile}` (or `make report`, which does).")
    metrics, histories = {}, {}
    for row in summary.itertuples():
        d = Path(row.run_dir)
        if row.status == "finished":
            metrics[row.run_name] = read_json(d / "metrics.json")
        if (d / "history.csv").exists():
            histories[row.run_name] = pd.read_csv(d / "history.csv")
    return summary, metrics, histories
