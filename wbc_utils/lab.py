"""The lab: a budgeted search for the beyond-the-paper design, scored on TRAIN alone (Optuna).

A *trial* is one candidate design (a choice per parameter of the profile's
``search["space"]``, on top of the profile's fixed settings). It is scored by
k-fold validation over TRAIN's same-cell clusters: fold 0 is trained and scored
on its held-out cells, then fold 1, and so on; after each fold the trial reports
the mean over its folds so far. Every candidate uses the same folds and the same
seed, so two candidates' fold accuracies are paired. TEST is never read here.

Why Optuna: it owns what a search with a budget needs and we would otherwise
write and test ourselves: a sampler that proposes the next candidate from the
ones scored (TPE), a pruner that stops a candidate whose first folds already
trail the others (successive halving, with folds as the resource: a candidate
earns its next folds by ranking in the top half at each rung), a trial log that
survives a killed process (SQLite), and resumption in a later session.

The candidates listed in ``search["first"]`` (the previous design and one change
at a time from it) are tried before the sampler proposes its own. The first of
them is the control: it is never pruned, so every candidate's folds can be
compared with its folds, pair by pair. The lab stops
when its time budget (wall-clock minutes, summed over every session) is
spent or ``max_trials`` have run. Each fold is an ordinary run folder of the
profile (``<runs>/<profile>/<run name with cv<k>of<K>>``), trained by the
training notebook like any study run; the trials' record is written to
``<runs>/<profile>/lab_trials.json`` after every trial (atomically) and read by
the report (:mod:`wbc_utils.beyond`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from .artifacts import copy_file, write_json
from .config import RESULTS, THREADS, profile_dir
from .errors import ParameterError, WBCError
from .locks import OWNER_VARIABLE, FolderLock, RunLockedError, describe
from .params import DESIGN_PARAMS, Profile, RunParams
from .runs import LAB_LOCK, LAB_STORAGE, LAB_TRIALS, Run, import_exported_run
from .study import train_one  # the study's runner: locks, resume, the training notebook

log = logging.getLogger(__name__)

#: The trials' record beside the runs (read by the report; exported with the study), and Optuna's own storage
#: (SQLite): what lets a later session resume the search. Named in wbc_utils.runs, the owner of folder names.
TRIALS, STORAGE = LAB_TRIALS, LAB_STORAGE


def search_of(profile: Profile) -> dict:
    """The profile's search, checked: its space names design parameters only, each with at least one choice."""
    search = dict(profile.search or {})
    if not search:
        raise ParameterError(f"profile {profile.name!r} has no lab search (Profile.search is empty)")
    space = search.get("space") or {}
    unknown = sorted(set(space) - set(DESIGN_PARAMS))
    if unknown:
        raise ParameterError(f"profile {profile.name!r}: search space names {', '.join(unknown)}, which are not "
                             f"design parameters ({', '.join(DESIGN_PARAMS)})")
    for k, v in space.items():
        if not isinstance(v, (list, tuple)) or not v:
            raise ParameterError(f"profile {profile.name!r}: search space {k!r} must list its choices, got {v!r}")
    for i, c in enumerate(search.get("first", ())):
        bad = sorted(k for k in c if k not in space or c[k] not in space[k])
        if bad:
            raise ParameterError(f"profile {profile.name!r}: search['first'][{i}] sets {', '.join(bad)} to a value "
                                 f"outside the search space")
    return search


def fix_params(profile: Profile, values: dict) -> Profile:
    """The profile with these design parameters fixed (a command-line override: ``--epochs 1``): taken out of the
    search space and out of the listed first candidates, so every candidate uses the given value."""
    s = dict(search_of(profile))
    s["space"] = {k: v for k, v in s["space"].items() if k not in values}
    first = []
    for c in s.get("first", ()):
        c = {k: v for k, v in c.items() if k not in values}
        if c not in first:
            first.append(c)
    s["first"] = first
    return dataclasses.replace(profile, search=s)


def base_params(profile: Profile) -> dict:
    """The settings every candidate shares (the profile's main-run settings on one fold of TRAIN)."""
    s = search_of(profile)
    p = profile.main_runs()[0].to_dict()
    p.update(seed=int(s.get("seed", 0)), validation="grouped", folds=int(s.get("folds", 5)), fold=0)
    return p


def _choice_key(value) -> str:
    """A choice as Optuna stores it (categorical choices must be plain scalars): lists become '96x96'."""
    return "x".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def candidate(profile: Profile, choices: dict) -> dict:
    """A candidate's run parameters (fold 0): the shared settings, the profile's design, then ``choices``."""
    p = base_params(profile)
    space = search_of(profile)["space"]
    for k, v in choices.items():
        by_key = {_choice_key(c): c for c in space[k]}
        p[k] = by_key.get(_choice_key(v), v)
    return RunParams.from_dict(p).to_dict()


def fold_params(params: dict, fold: int) -> dict:
    return RunParams.from_dict({**params, "fold": fold}).to_dict()


class _Budget:
    """The lab's budget: wall-clock minutes over every session (kept in the Optuna study's ``wall_seconds``
    attribute; trials run side by side, so the sum of their times would count the machine twice) and a number of
    trials."""

    def __init__(self, study, minutes: float, max_trials: int):
        self.study, self.seconds, self.max_trials = study, 60.0 * minutes, max_trials
        self.before = float(study.user_attrs.get("wall_seconds", 0.0))
        self.t0 = time.time()

    def spent(self) -> float:
        return self.before + time.time() - self.t0

    def save(self) -> None:
        self.study.set_user_attr("wall_seconds", self.spent())

    def exhausted(self) -> bool:
        return self.spent() >= self.seconds or len(ended(self.study)) >= self.max_trials


class BudgetSpent(Exception):
    """Raised in a trial before a fold it would start after the budget is spent (its finished folds are kept)."""


def stopped(study, trial) -> bool:
    """True for a trial the budget, or the end of the process running it, stopped before its last fold."""
    return bool(trial.user_attrs.get("stopped")) or trial.number in study.user_attrs.get("stopped_trials", [])


def ended(study) -> list:
    """The trials that have ended (complete, pruned or failed); not those queued or running, nor those stopped
    (queued again: they count once they end)."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not stopped(study, t)]


def signature(profile: Profile) -> dict:
    """What makes two searches the same: the space's choices and every setting the candidates share."""
    s = search_of(profile)
    base = base_params(profile)
    return {"space": {k: [_choice_key(c) for c in v] for k, v in s["space"].items()},
            "fixed": {k: _choice_key(v) for k, v in sorted(base.items()) if k not in s["space"] and k != "fold"}}


def open_search(profile: Profile, runs_root=None, results_root=None):
    """The profile's Optuna study: created, resumed from ``<runs>/<profile>/lab.sqlite3``, or (when the runs folder
    has none) resumed from the one exported to ``results/<profile>/`` when it is the same search. A database of
    another search (other choices, or other shared settings such as a command-line ``--epochs``) is refused."""
    import optuna

    s = search_of(profile)
    pdir = profile_dir(profile.name, runs_root)
    pdir.mkdir(parents=True, exist_ok=True)
    here = pdir / STORAGE
    exported = Path(results_root or RESULTS) / profile.name / STORAGE
    if not here.exists() and exported.exists() and exported.resolve() != here.resolve():
        trial_copy = copy_file(exported, pdir / f".{STORAGE}.check")
        try:
            other = optuna.load_study(study_name=f"{profile.name}-lab", storage=f"sqlite:///{trial_copy}")
            same = other.user_attrs.get("signature") in (None, signature(profile))
        except KeyError:  # no study of that name in it
            same = False
        if same:
            os.replace(trial_copy, here)  # an earlier session's search, exported: resumed, not restarted
            print(f"lab: resuming the search exported to {exported}", flush=True)
        else:
            trial_copy.unlink(missing_ok=True)
            print(f"lab: {exported} holds another search (other choices or settings): a new search starts here",
                  flush=True)
    sampler = optuna.samplers.TPESampler(seed=int(s.get("seed", 0)), n_startup_trials=int(s.get("startup", 4)))
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=int(s.get("reduction", 2)),
                                                    min_early_stopping_rate=0)
    study = optuna.create_study(study_name=f"{profile.name}-lab", storage=_storage_url(profile, runs_root),
                                sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True)
    sig = study.user_attrs.get("signature")
    if sig is None:
        study.set_user_attr("signature", signature(profile))
    elif sig != signature(profile):
        raise ParameterError(f"{here} holds a search with other choices or settings than profile "
                             f"{profile.name!r} now has (a command-line override such as --epochs changes them): "
                             f"run it with the settings it was started with, or move {here} aside to start anew")
    # left running by a process that ended (the lab's lock is ours, so none is alive): stopped, queued again
    dead = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    # the queue is rebuilt in the order wanted (Optuna draws the oldest waiting trial first): stopped trials
    # first (the control among them), then the listed candidates not yet tried; the waiting trials of the last
    # session are drawn and closed here (recorded as stopped, with no fold), then queued again in that order
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    for _ in waiting:
        dead.append(study.ask().number)
    if dead:
        study.set_user_attr("stopped_trials", sorted(set(study.user_attrs.get("stopped_trials", [])) | set(dead)))
        for n in dead:
            study.tell(n, state=optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    done = {_queue_key(t.params) for t in trials if not stopped(study, t) and t.params}
    again = [t.params for t in trials if stopped(study, t) and t.params]
    queued: set = set()
    for choices in again + [_full_choices(profile, first) for first in s.get("first", ())]:
        key = _queue_key(choices)
        if key not in done and key not in queued:
            study.enqueue_trial(choices)
            queued.add(key)
    return study


def import_exported_folds(profile: Profile, runs_root=None, results_root=None) -> int:
    """Copy every finished lab fold exported to ``results/<profile>/`` that the runs folder lacks (a later session
    on another machine): the report's lab table and the flag's held-out scores need them even when the budget is
    spent. Returns how many were imported."""
    src = Path(results_root or RESULTS) / profile.name
    pdir = profile_dir(profile.name, runs_root)
    if not src.is_dir() or src.resolve() == pdir.resolve():
        return 0
    n = 0
    for d in sorted(src.iterdir()):
        run = Run(pdir / d.name)
        if d.is_dir() and profile.role_of(d.name) == "control" and Run(d).status == "finished" \
                and in_search(profile, Run(d).params()) and run.status != "finished" and run.lock_owner() is None:
            n += import_exported_run(d, run.path)
    return n


def in_search(profile: Profile, params: dict) -> bool:
    """True when a run's parameters are a fold of one of this search's candidates: every setting outside the
    search space as the candidates share it (another search's folds, e.g. at other epochs, are not)."""
    fixed = signature(profile)["fixed"]
    p = RunParams.from_dict({k: v for k, v in params.items() if k in RunParams.defaults()}).to_dict()
    return all(_choice_key(p.get(k)) == v for k, v in fixed.items())


def _full_choices(profile: Profile, changes: dict) -> dict:
    """Every searched parameter's choice for a candidate that changes ``changes`` from the profile's design."""
    base = base_params(profile)
    space = search_of(profile)["space"]
    return {k: _choice_key(changes.get(k, base[k])) for k in space}


def _queue_key(choices: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in choices.items()))


def _objective(profile: Profile, runs_root, data_dir, env: dict, budget: _Budget | None = None):
    import optuna

    pdir = profile_dir(profile.name, runs_root)
    # the first listed candidate (the previous design) is the lab's control: never pruned, so every other
    # candidate's folds have its folds to be compared with, pair by pair
    reference = _queue_key(_full_choices(profile, (search_of(profile).get("first") or [{}])[0]))

    def objective(trial, choices: dict) -> float:
        params = candidate(profile, choices)
        trial.set_user_attr("run_name_fold0", RunParams.from_dict(params).run_name)
        scores = []
        for fold in range(params["folds"]):
            p = fold_params(params, fold)
            name = RunParams.from_dict(p).run_name
            if budget is not None and budget.spent() >= budget.seconds and Run(pdir / name).status != "finished":
                raise BudgetSpent(f"budget spent before fold {fold}")
            entry = train_one(p, str(pdir / name), data_dir, False, env)
            if "error" in entry:
                raise RuntimeError(f"lab run {name} failed: {entry['error']}")
            if entry["action"] == "held":
                raise RuntimeError(f"lab run {name} is being trained by another process ({entry['held_by']})")
            m = Run(pdir / name).metrics()
            scores.append(float(m["val_accuracy"]))
            trial.set_user_attr("fold_accuracies", scores)
            trial.report(sum(scores) / len(scores), step=fold + 1)
            print(f"lab trial {trial.number} fold {fold}: {100 * scores[-1]:.1f}% ({name})", flush=True)
            if fold + 1 < params["folds"]:
                # asked for the control too: the pruner records a trial's value at a rung only when asked, and the
                # others must be ranked against the control's folds as well; the control's answer is ignored
                prune = trial.should_prune()
                if prune and _queue_key(choices) != reference:
                    raise optuna.TrialPruned(f"after {fold + 1} fold(s): mean {100 * sum(scores) / len(scores):.1f}%")
        return sum(scores) / len(scores)

    return objective


def run_lab(profile: Profile, runs_root=None, data_dir=None, jobs: int | None = None,
            budget_minutes: float | None = None, results_root=None) -> list[dict]:
    """Run the profile's search until its budget is spent (resuming an earlier one); returns the trials' record.

    ``jobs`` trials train at once, each in a thread that runs its folds one after another; new trials are asked
    for (and finished ones told) in this thread only (Optuna's ask-and-tell interface), so no two threads ever
    draw the same queued candidate. Once the budget is spent no trial starts a new fold: a trial stopped so is
    recorded as failed with ``stopped``, and queued again by the next session (its finished folds reused). One
    process at a time runs a profile's lab (``lab.lock`` in its folder)."""
    import optuna

    s = search_of(profile)
    pdir = profile_dir(profile.name, runs_root)
    pdir.mkdir(parents=True, exist_ok=True)
    try:
        lock = FolderLock(pdir / LAB_LOCK).acquire()
    except RunLockedError as e:
        raise WBCError(f"the lab of profile {profile.name!r} is running in another process ({describe(e.owner)}): "
                       f"wait for it, or stop it (its finished folds are kept)") from None
    old_owner, old_threads = os.environ.get(OWNER_VARIABLE), os.environ.get(THREADS)
    try:
        imported = import_exported_folds(profile, runs_root, results_root)
        if imported:
            print(f"lab: {imported} fold(s) exported earlier, read from {Path(results_root or RESULTS) / profile.name}",
                  flush=True)
        study = open_search(profile, runs_root, results_root)
        minutes = float(budget_minutes if budget_minutes is not None else s.get("budget_minutes", 120))
        budget = _Budget(study, minutes, int(s.get("max_trials", 30)))
        if budget.exhausted():
            print(f"lab: budget spent ({budget.before / 60:.0f} of {minutes:.0f} min, {len(ended(study))} trials "
                  "ended, those the budget stopped aside): nothing to run", flush=True)
            return write_trials(profile, runs_root, study, minutes)
        jobs = max(1, int(jobs or profile.jobs))
        os.environ[OWNER_VARIABLE] = lock.owner  # the kernels started here train under the lab's run locks
        os.environ[THREADS] = str(max(1, (os.cpu_count() or 1) // jobs))
        env = {k: os.environ[k] for k in os.environ if k.startswith("WBC_")}
        if data_dir is not None:
            env["WBC_DATA_DIR"] = str(Path(data_dir).resolve())
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _search(profile, study, budget, _objective(profile, runs_root, data_dir, env, budget), jobs, runs_root)
        print(f"lab: {(time.time() - budget.t0) / 60:.0f} min this session; {budget.spent() / 60:.0f} of "
              f"{minutes:.0f} min spent; {len(ended(study))} trials ended, those the budget stopped aside "
              f"({pdir / TRIALS})", flush=True)
        return write_trials(profile, runs_root, study, minutes)
    finally:
        for var, value in ((OWNER_VARIABLE, old_owner), (THREADS, old_threads)):
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        lock.release()


def _search(profile: Profile, study, budget: _Budget, objective, jobs: int, runs_root) -> None:
    """The ask-and-tell loop: keep ``jobs`` trials training until the budget is spent; tell each as it ends."""
    import optuna

    space = search_of(profile)["space"]
    minutes = budget.seconds / 60
    running: dict = {}
    try:
        with ThreadPoolExecutor(jobs) as ex:
            while True:
                while len(running) < jobs and not budget.exhausted() \
                        and len(running) + len(ended(study)) < budget.max_trials:
                    trial = study.ask()
                    # the candidate is drawn here, in one thread: a queued one, else the sampler's proposal
                    choices = {k: trial.suggest_categorical(k, [_choice_key(c) for c in v]) for k, v in space.items()}
                    key = _queue_key(choices)
                    twin = next((t.number for t in running.values() if _queue_key(t.params) == key), None)
                    if twin is None:  # a candidate that ended already is not trained again (nor its pruning undone)
                        twin = next((t.number for t in ended(study) if t.params and _queue_key(t.params) == key
                                     and t.number != trial.number), None)
                    if twin is not None:
                        trial.set_user_attr("duplicate_of", twin)
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                        continue
                    running[ex.submit(objective, trial, choices)] = trial
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    trial = running.pop(f)
                    try:
                        study.tell(trial, f.result())
                    except optuna.TrialPruned:
                        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    except BudgetSpent as e:
                        trial.set_user_attr("stopped", str(e))
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    except Exception as e:  # a failed candidate must not stop the others
                        print(f"lab trial {trial.number} failed: {e}", flush=True)
                        trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    budget.save()
                    write_trials(profile, runs_root, study, minutes)
    finally:
        budget.save()


#: Profile fields that hold a design parameter (the rest of a design goes in the profile's ``extra``).
_PROFILE_FIELDS = ("image_size", "epochs", "learning_rate", "arch")


def pick(profile: Profile, runs_root=None) -> dict | None:
    """The rule fixed before the lab ran: the candidate with the highest mean validation accuracy over all of its
    folds (Optuna's best complete trial: a pruned or stopped one is not ranked). {"trial", "value", "choices",
    "design"} or None when no candidate has finished every fold."""
    import optuna

    if not (profile_dir(profile.name, runs_root) / STORAGE).exists():
        return None
    study = optuna.load_study(study_name=f"{profile.name}-lab", storage=_storage_url(profile, runs_root))
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not done:
        return None
    best = max(done, key=lambda t: (t.value, -t.number))  # a tie goes to the earlier trial
    params = candidate(profile, best.params)
    return {"trial": best.number, "value": best.value, "choices": dict(best.params),
            "design": {k: params[k] for k in DESIGN_PARAMS}}


def with_pick(profile: Profile, runs_root=None) -> tuple[Profile, dict | None]:
    """The profile whose main (final) runs use the lab's pick (:func:`pick`); unchanged when there is none yet."""
    p = pick(profile, runs_root)
    if p is None:
        return profile, None
    design = p["design"]
    extra = {**profile.extra, **{k: v for k, v in design.items() if k not in _PROFILE_FIELDS}}
    return dataclasses.replace(profile, extra=extra, **{k: design[k] for k in _PROFILE_FIELDS}), p


def _storage_url(profile: Profile, runs_root=None) -> str:
    return f"sqlite:///{profile_dir(profile.name, runs_root) / STORAGE}"


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        end = t.datetime_complete
        rows.append({"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
                     "value": t.value, "fold_accuracies": list(t.user_attrs.get("fold_accuracies", [])),
                     "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                     "run_name_fold0": t.user_attrs.get("run_name_fold0"),
                     "stopped": stopped(study, t), "duplicate_of": t.user_attrs.get("duplicate_of"),
                     "note": t.user_attrs.get("stopped") or t.user_attrs.get("error") or (
                         "stopped: the process running it ended" if stopped(study, t) else "") or (
                         f"proposed again after trial {t.user_attrs['duplicate_of']}: not trained twice"
                         if "duplicate_of" in t.user_attrs else ""),
                     "seconds": (end - t.datetime_start).total_seconds() if end and t.datetime_start else None,
                     "started": t.datetime_start.isoformat() if t.datetime_start else None})
    return rows


def write_trials(profile: Profile, runs_root, study, budget_minutes: float | None = None) -> list[dict]:
    """Write ``lab_trials.json`` (every trial, pruned, stopped and failed ones included) and return its rows."""
    s = search_of(profile)
    rows = trial_rows(study)
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: (r["value"], -r["number"])) if complete else None
    write_json(profile_dir(profile.name, runs_root) / TRIALS,
               {"profile": profile.name, "space": {k: [_choice_key(c) for c in v] for k, v in s["space"].items()},
                "first": s.get("first", []), "folds": int(s.get("folds", 5)), "seed": int(s.get("seed", 0)),
                "budget_minutes": float(budget_minutes if budget_minutes is not None else s.get("budget_minutes", 120)),
                "wall_minutes": float(study.user_attrs.get("wall_seconds", 0.0)) / 60,
                "sampler": "TPE (seeded), after the listed first candidates",
                "pruner": f"successive halving over folds (reduction factor {int(s.get('reduction', 2))})",
                "pick": best["number"] if best else None, "trials": rows})
    return rows
