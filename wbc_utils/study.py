"""A study: every run of a profile, each executed as the training notebook with papermill.

The study folder's files (``summary.csv``, ``study.json``, ``original-2020.json``) and each run's are named
in :mod:`wbc_utils.runs`; this module is the only writer of ``summary.csv``.

A failing run does not stop the others: the study carries on, then exits
non-zero listing what failed (with the failing cell's full output), and the
report marks those runs. While runs train, one line per finished epoch shows
which run, its epoch, loss and accuracy, and the time elapsed and left.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import papermill as pm
from distributed import Client, as_completed

from .artifacts import write_csv, write_json
from .config import DATA_DIR, LOSS_PLUGINS, PATH_VARIABLES, RESULTS, THREADS, TRAIN_NOTEBOOK, absolute_env, profile_dir
from .data import Manifest, build_manifest, check_files, load_split
from .errors import RunExistsError
from .evaluation import EVALUATION_VERSION
from .locks import OWNER_VARIABLE, RunLockedError, describe, identity
from .locks import is_stale as lock_is_stale
from .original import find_original, parse_log, rescore
from .params import Profile, RunParams
from .reevaluate import reevaluate_run
from .runs import (
    IMPORTED,
    NOTEBOOK,
    STUDY_LOG,
    Run,
    check_no_legacy,
    check_runs_folder,
    import_exported_run,
    original_path,
    original_record,
    resource_message,
    study_record,
    summary_frame,
    summary_path,
    write_study_record,
)
from .tfenv import quiet_tensorflow
from .training import epoch_line

log = logging.getLogger(__name__)


#: Seconds a training kernel may take to answer once started (papermill's default, 60 s, is too short for a kernel
#: that imports the package on a busy machine: "Kernel didn't respond in 60 seconds").
KERNEL_START_TIMEOUT = 300
#: Kernels started for one run, when the first ones do not start, before the run counts as failed.
KERNEL_START_ATTEMPTS = 3
#: Seconds waited before starting another kernel (times the attempt): a port race settles, a busy machine breathes.
KERNEL_RETRY_PAUSE = 2.0
#: What a kernel that never started says (jupyter_client, nbclient); a kernel that died mid-run says "Kernel died".
KERNEL_START_FAILURES = ("Kernel didn't respond", "Kernel died before replying to kernel_info",
                         "Address already in use")


def kernel_start_failure(error: BaseException) -> str | None:
    """Why a kernel did not start, when ``error`` says it did not (no cell ran: another kernel may be started for
    the same run safely); None for any other error (a failing cell, a kernel that died while training)."""
    if isinstance(error, pm.PapermillExecutionError):
        return None
    if type(error).__name__ == "ZMQError" and getattr(error, "errno", None) == errno.EADDRINUSE:
        return _short_error(error)  # pyzmq's, raised here: a port another kernel had just taken
    if isinstance(error, (RuntimeError, TimeoutError)) and any(s in str(error) for s in KERNEL_START_FAILURES):
        return _short_error(error)
    return None


def execute_notebook(notebook: Path, output: Path, parameters: dict, log_path: Path | None = None,
                     log_output: bool = False, kernel_name: str = "python3",
                     start_timeout: float = KERNEL_START_TIMEOUT, attempts: int = KERNEL_START_ATTEMPTS) -> None:
    """Execute ``notebook`` into ``output`` with papermill, in a kernel started in the notebook's folder.

    A kernel that does not answer within ``start_timeout`` seconds, or dies before answering (a port that another
    kernel took between being chosen and being bound: ``ZMQError: Address already in use``), is replaced by a fresh
    one (new ports), up to ``attempts`` kernels, with a note in ``log_path`` (the run's ``train.log``) for each; the
    run fails only when the last does not start either. Any other error is raised as it is.
    """
    for attempt in range(1, attempts + 1):
        try:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(notebook.parent),
                                log_output=log_output, progress_bar=False, kernel_name=kernel_name,
                                start_timeout=int(start_timeout))
            return
        except Exception as e:
            why = kernel_start_failure(e)
            if why is None or attempt == attempts:
                raise
            note = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} kernel {attempt} of {attempts} did not start ({why}); "
                    f"starting a fresh kernel")
            log.info("%s: %s", output.parent.name, note)
            if log_path is not None:
                _append_line(log_path, note)
            time.sleep(KERNEL_RETRY_PAUSE * attempt)


def _append_line(path: Path, line: str) -> None:
    """Add one line to a log file; a log that cannot be written is no reason to stop."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass


def execute_run(params: RunParams, run_dir: Path, data_dir=None, reuse: bool = False, force: bool = False,
                log_output: bool = False) -> None:
    """Execute the training notebook for one run; its executed copy is ``run_dir/train.ipynb``.

    ``log_output`` streams the notebook's own output; by default the study's progress display reports the
    run instead, and a failure's full output is raised (and printed by :func:`run_study`). A kernel that does not
    start is retried with a fresh one (:func:`execute_notebook`), noted in the run's ``train.log``.
    """
    logging.getLogger("papermill").setLevel(logging.WARNING)
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = {**params.to_dict(), "output_dir": str(run_dir), "data_dir": str(data_dir or ""),
                  "reuse": reuse, "force": force}
    execute_notebook(TRAIN_NOTEBOOK, run_dir / NOTEBOOK, parameters, log_path=Run(run_dir).log_path,
                     log_output=log_output)


def check_study_inputs(data_dir=None) -> Manifest:
    """What a study checks once, before any run starts: the dataset is there, in a known layout, with TRAIN and
    TEST and every class (else a :class:`~wbc_utils.errors.DataError` with its one-line message), and which of its
    files the guarded image reader refuses from the header alone (each printed with its reason: every run will
    skip them). Returns the manifest (files only, no slide sources)."""
    manifest = build_manifest(data_dir, sources=False)
    refused = check_files(manifest)
    if refused:
        print(f"warning: {len(refused)} image file(s) of the dataset cannot be read; every run skips them "
              f"(the report lists them):", flush=True)
        for s in refused:
            print(f"  {s.path}: {s.reason}", flush=True)
    return manifest


def plan(profile: Profile, runs_root=None, reuse: bool = False, force: bool = False,
         results_root=None) -> list[tuple[RunParams, Path, str]]:
    """Each run with its directory and what will happen to it; raises before any work if a run is in the way.

    With ``reuse``, a run that this runs folder lacks (or holds unfinished, with no live owner) but that was
    exported finished with the same parameters to ``results_root/<profile>/`` (default: the tracked ``results/``,
    where another session or machine left it) is copied in and reused: a long profile goes on across sessions and
    trains only what is missing."""
    out, blocked = [], []
    exported_root = Path(results_root or RESULTS) / profile.name
    check_no_legacy(profile_dir(profile.name, runs_root))
    if reuse:
        check_no_legacy(exported_root)
    for p in profile.runs():
        run = Run(profile_dir(profile.name, runs_root) / p.run_name)
        status = run.status
        exported = exported_root / p.run_name
        if reuse and not force and status != "finished" and run.lock_owner() is None \
                and Run(exported).status == "finished" and p.same_as(Run(exported).params()) \
                and exported.resolve() != run.path.resolve():
            import_exported_run(exported, run.path)
            status = run.status
        if status == "finished" and not force:
            same = p.same_as(run.params())
            if reuse and same:
                out.append((p, run.path, "reuse"))
                continue
            blocked.append(f"{run.path}" + ("" if same else " (other parameters under the same name: --reuse does "
                                                             "not keep it; remove it or pass --force)"))
        out.append((p, run.path, "resume" if status == "incomplete" and not force else "train"))
    if blocked:
        raise RunExistsError("finished runs are in the way:\n  " + "\n  ".join(blocked) +
                             "\nPass --reuse to keep them (make report does), --force to retrain them, "
                             "or remove the folders.")
    return out


class Progress:
    """The study's one progress display: a line when a run starts, ends or fails, and one per finished epoch
    of every run in flight (read from its ``history.csv``, so it works for notebooks run by papermill)."""

    def __init__(self, total: int, poll: float = 2.0, printer=print) -> None:
        self.total, self.poll, self.print = total, poll, printer
        self.done = 0
        self.active: dict[str, tuple[RunParams, Path, int]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="wbc-study-progress", daemon=True)

    def __enter__(self) -> Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def say(self, text: str) -> None:
        with self.lock:
            self.print(text, flush=True)

    def start(self, i: int, params: RunParams, run_dir: Path, action: str) -> None:
        seen = len(self._history(run_dir)) if action == "resume" else 0
        with self.lock:
            self.active[params.run_name] = (params, run_dir, seen)
        self.say(f"[{i}/{self.total}] {params.run_name}: {action}" +
                 (f" after epoch {seen} of {params.epochs}" if action == "resume" and seen else ""))

    def finish(self, params: RunParams) -> None:
        """Count a run that needed no training (reused, or finished by another process)."""
        with self.lock:
            self.active.pop(params.run_name, None)
            self.done += 1

    def end(self, params: RunParams, seconds: float, error: str | None = None) -> None:
        self._check(params.run_name)
        with self.lock:
            self.active.pop(params.run_name, None)
            self.done += 1
            done = self.done
        status = f"FAILED: {error}" if error else f"finished in {seconds:.0f} s"
        self.say(f"    {params.run_name} {status} ({done}/{self.total} runs done)")

    @staticmethod
    def _history(run_dir: Path) -> list[dict]:
        try:
            return Run(run_dir).history().to_dict("records")
        except (OSError, ValueError):  # not written yet, or being replaced
            return []

    def _check(self, name: str) -> None:
        with self.lock:
            item = self.active.get(name)
        if item is None:
            return
        params, run_dir, seen = item
        hist = self._history(run_dir)
        for row in hist[seen:]:
            self.say(f"    {params.run_name}  {epoch_line(row, params.epochs, hist[: int(row['epoch'])])}")
        with self.lock:
            if name in self.active:
                self.active[name] = (params, run_dir, max(seen, len(hist)))

    def _watch(self) -> None:
        while not self.stop.wait(self.poll):
            for name in list(self.active):
                self._check(name)


def run_study(profile: Profile, runs_root=None, data_dir=None, reuse: bool = False, force: bool = False,
              rescore: bool = True, jobs: int | None = None, scheduler: str | None = None,
              gpus_per_run: int = 0, results_root=None) -> dict:
    """Run (or reuse) every run of ``profile``; write summary.csv and study.json. Returns the study record.

    ``jobs`` runs that many notebooks at once here (default: the profile's); each
    then gets ``cpu_count // jobs`` TensorFlow threads. With ``scheduler`` (a Dask
    scheduler's address, e.g. ``tcp://host:8786``) the runs execute on that cluster's
    workers instead, ``gpus_per_run`` of a worker's ``GPU`` resource each; the runs
    folder and the dataset must be at the same paths on every worker.
    """
    absolute_env()  # the notebooks run with notebooks/ as their working directory
    runs_root = Path(runs_root).resolve() if runs_root else None
    data_dir = Path(data_dir).expanduser().resolve() if data_dir else None
    pdir = profile_dir(profile.name, runs_root)
    # checked once, before anything is started or written: the dataset (one line when it is missing), the runs folder
    check_study_inputs(data_dir)
    check_runs_folder(pdir, 0)
    quiet_tensorflow(pdir / STUDY_LOG)  # kernels' start-up lines: to study.log
    steps = plan(profile, runs_root, reuse, force, results_root)
    warning = check_runs_folder(pdir, sum(action != "reuse" for _, _, action in steps))
    if warning:
        print(warning, flush=True)
    stale = [d for _, d, action in steps if action == "reuse" and Run(d).is_stale()]
    if stale:  # a reused run is counted with today's definitions, never yesterday's
        manifest = build_manifest(data_dir)
        for d in stale:
            print(f"re-evaluating {d.name} (its metrics predate evaluation version {EVALUATION_VERSION})", flush=True)
            reevaluate_run(d, manifest)
    jobs = max(1, int(jobs or profile.jobs))
    record = {"profile": profile.name, "profile_settings": _profile_dict(profile), "jobs": jobs, "runs": [],
              "failed": [], "scheduler": scheduler}
    prev = study_record(profile.name, runs_root)
    write_study_record(profile.name, {**record, "in_progress": True}, runs_root)
    t0 = time.time()
    if jobs > 1:
        os.environ[THREADS] = str(max(1, (os.cpu_count() or 1) // jobs))
    reused = sum(action == "reuse" for _, _, action in steps)
    if reused:
        imported = sum(action == "reuse" and (d / IMPORTED).exists() for _, d, action in steps)
        print(f"{reused} of {len(steps)} runs already finished with the same parameters: reused" +
              (f" ({imported} of them exported earlier, read from {Path(results_root or RESULTS) / profile.name})"
               if imported else ""), flush=True)

    # what a Dask worker needs to see this study's folders and losses (kernels started here inherit os.environ)
    env = {k: os.environ[k] for k in (*PATH_VARIABLES, DATA_DIR, LOSS_PLUGINS) if os.environ.get(k)}
    if data_dir is not None:
        env[DATA_DIR] = str(data_dir)
    os.environ[OWNER_VARIABLE] = identity()  # the kernels started here train under this study's locks
    try:
        with Progress(len(steps)) as progress:
            if scheduler:
                record["runs"] = _run_on_cluster(steps, scheduler, env, force, progress, gpus_per_run)
            else:
                with ThreadPoolExecutor(jobs) as ex:
                    record["runs"] = list(ex.map(lambda step: _run_here(step, env, force, progress),
                                                 enumerate(steps, 1)))
            held = [(i, e) for i, e in enumerate(record["runs"]) if e["action"] == "held"]
            if held:
                progress.say(f"waiting for {len(held)} run(s) that another process is training")
            for i, e in held:  # when the other process lets go: finished there (kept), or ours to train
                p, d, _ = steps[i]
                _wait_for_lock(Run(d))
                record["runs"][i] = {**_run_here((i + 1, (p, d, "train")), env, force, progress),
                                     "was_held_by": e["held_by"]}
                if record["runs"][i]["action"] == "reuse":
                    progress.say(f"    {p.run_name}: finished by the other process; kept")
    finally:
        os.environ.pop(THREADS, None) if jobs > 1 else None
        os.environ.pop(OWNER_VARIABLE, None)
    record["failed"] = [e["run_name"] for e in record["runs"] if "error" in e]
    record["train_wall_seconds"] = round(time.time() - t0, 1)
    if rescore:
        t = time.time()
        try:
            rescore_original(profile, runs_root, data_dir)
        except Exception as e:  # the 2020 files are optional; say so and go on
            record["rescore_error"] = _short_error(e)
        record["rescore_seconds"] = round(time.time() - t, 1)
    try:
        summarize(profile.name, runs_root,
                  failed={r["run_name"]: r.get("error") for r in record["runs"] if "error" in r})
        if prev and not prev.get("in_progress"):
            record["previous"] = {k: v for k, v in prev.items() if k != "previous"}
        write_study_record(profile.name, record, runs_root)
    except OSError as e:  # a full or read-only disk: say so in one line; the runs' own state is already safe
        record["write_error"] = resource_message(e, pdir)
    return record


def train_one(params: dict, run_dir: str, data_dir: str | None, force: bool, env: dict, announce=None,
              wait: bool = False) -> dict:
    """One run, wherever it executes (a thread of the study, or a Dask worker): take the run's lock, leave the
    run to a live process that holds it, keep it if it finished meanwhile, else execute the training notebook
    (resuming from the last epoch a killed attempt saved). Returns the run's entry for study.json.
    ``announce(action)`` is called once the lock is held, before training starts (the local progress display).
    ``wait`` (a cluster worker) waits for a held lock to be released or to go stale (a dead worker's, on another
    host: no heartbeat for a while) instead of leaving the run, so the retry of a dead worker's task resumes the run
    on a worker, never on the client."""
    if env:  # a Dask worker (a process of its own): the study's folders, and this process as the lock owner
        os.environ.update(env)
        os.environ[OWNER_VARIABLE] = identity()
    p = RunParams.from_dict(params)
    run = Run(Path(run_dir))
    entry = {"run_name": p.run_name, "host": socket.gethostname()}
    while True:
        try:
            lock = run.lock().acquire()
            break
        except RunLockedError as e:
            if not wait:
                return {**entry, "action": "held", "held_by": describe(e.owner)}
            time.sleep(5.0)
    try:
        if lock.taken_over:
            entry["took_over"] = describe(lock.taken_over)
        if run.status == "finished" and not force:
            if not p.same_as(run.params()):  # never take another run's results for this one's
                return {**entry, "action": "train", "seconds": 0.0,
                        "error": f"RunExistsError: {run.path} holds a finished run with different parameters"}
            return {**entry, "action": "reuse", "seconds": 0.0}
        entry["action"] = "resume" if run.status == "incomplete" and run.completed_epochs() else "train"
        if announce is not None:
            announce(entry["action"])
        t = time.time()
        try:
            execute_run(p, run.path, data_dir, reuse=False, force=force)
        except Exception as e:  # a failing run must not stop the others
            entry["error"] = _short_error(e)
            entry["output"] = str(e)
            if "No space left on device" in str(e):
                entry["error"] = resource_message(OSError(errno.ENOSPC, "No space left on device"), run.path)
        entry["seconds"] = round(time.time() - t, 1)
        return entry
    finally:
        lock.release()


def _report(i: int, total: int, p: RunParams, d: Path, entry: dict, progress: Progress) -> dict:
    """Say what happened to one run (the study's console), and keep its entry without the full output."""
    if entry["action"] == "held":
        progress.say(f"[{i}/{total}] {p.run_name}: held by {entry['held_by']}; left to it for now")
        return entry
    if entry.get("took_over"):
        progress.say(f"    {p.run_name}: took over the lock of {entry['took_over']} (stale)")
    if entry["action"] == "reuse":
        progress.finish(p)
        return entry
    if "output" in entry:
        progress.say(f"    {p.run_name}: the training notebook failed ({d / NOTEBOOK} holds its output):\n"
                     + _indent(entry.pop("output")))
    progress.end(p, entry.get("seconds", 0.0), entry.get("error"))
    return entry


def _run_here(i_step, env: dict, force: bool, progress: Progress) -> dict:
    i, (p, d, action) = i_step
    if action == "reuse":
        progress.finish(p)
        return {"run_name": p.run_name, "action": "reuse", "seconds": 0.0}
    entry = train_one(p.to_dict(), str(d), env.get(DATA_DIR), force, {},
                      announce=lambda what: progress.start(i, p, d, what))
    return _report(i, progress.total, p, d, entry, progress)


def _run_on_cluster(steps, scheduler: str, env: dict, force: bool, progress: Progress,
                    gpus_per_run: int = 0) -> list[dict]:
    """Submit every run to a Dask cluster (one task per run; a worker started with ``--resources GPU=1``
    takes one GPU run at a time) and collect the entries as they finish. A worker that dies mid-run is
    replaced by Dask's own retry on another worker, which takes over the dead worker's lock and resumes the
    run from its last saved epoch. Progress is read from the runs folder, which every worker shares."""
    entries: list[dict | None] = [None] * len(steps)
    resources = {"GPU": gpus_per_run} if gpus_per_run else None
    with Client(scheduler, timeout="30s") as client:
        progress.say(f"cluster {scheduler}: {len(client.scheduler_info().get('workers', {}))} worker(s)")
        futures = {}
        for i, (p, d, action) in enumerate(steps):
            if action == "reuse":
                progress.finish(p)
                entries[i] = {"run_name": p.run_name, "action": "reuse", "seconds": 0.0}
                continue
            progress.start(i + 1, p, d, "submitted")
            fut = client.submit(train_one, p.to_dict(), str(d), env.get(DATA_DIR), force, env, wait=True,
                                key=f"wbc-run-{p.run_name}-{uuid.uuid4().hex[:6]}", pure=False, retries=2,
                                resources=resources)
            futures[fut] = i
        for fut in as_completed(list(futures)):
            i = futures[fut]
            p, d, _ = steps[i]
            try:
                entry = fut.result()
            except Exception as e:  # the task itself failed on every attempt (not the notebook)
                entry = {"run_name": p.run_name, "action": "train", "error": _short_error(e)}
            entries[i] = _report(i + 1, len(steps), p, d, entry, progress)
    return entries


def _wait_for_lock(run: Run, poll: float = 2.0) -> None:
    """Until no live process holds the run's lock (a stale lock counts as free: it will be taken over)."""
    while (owner := run.lock_owner()) is not None and not lock_is_stale(owner):
        time.sleep(poll)


def _indent(text: str, pad: str = "      ") -> str:
    return "\n".join(pad + line for line in text.strip().splitlines())


def _profile_dict(profile: Profile) -> dict:
    """The profile as study.json records it: its losses by name (every registered loss resolved now)."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(profile).items()}
    out["losses"] = list(profile.loss_names)
    return out


def _short_error(e: BaseException) -> str:
    name = type(e).__name__
    msg = str(e).strip().splitlines()
    # papermill wraps the notebook's exception: keep its last meaningful line
    lines = [l for l in msg if l.strip() and not l.startswith("-")]
    return f"{name}: {lines[-1] if lines else ''}"[:500]


def summarize(profile: str, runs_root=None, failed: dict | None = None):
    """Write runs/<profile>/summary.csv from every run directory there; returns the DataFrame."""
    check_no_legacy(profile_dir(profile, runs_root))  # else the old folders would read as runs it does not plan
    frame = summary_frame(profile, runs_root, failed)
    write_csv(summary_path(profile, runs_root), frame)
    return frame


def rescore_original(profile: Profile, runs_root=None, data_dir=None, original_dir=None) -> dict:
    """Re-score the 2020 weights on ``profile.rescore_split`` at 240x320; cached in original-2020.json."""
    found = find_original(original_dir)
    cached = original_record(profile.name, runs_root)
    if cached is not None:
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
    write_json(original_path(profile.name, runs_root), result)
    return result
