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
from .errors import ParameterError
from .params import DESIGN_PARAMS, Profile, RunParams
from .runs import LAB_STORAGE, LAB_TRIALS, Run, import_exported_run
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


def fix(profile: Profile, values: dict) -> Profile:
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


def ended(study) -> list:
    """The trials that have ended (complete, pruned or failed); not those queued or running, nor those the budget
    stopped (queued again: they count once they end)."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not t.user_attrs.get("stopped")]


def open_search(profile: Profile, runs_root=None, results_root=None):
    """The profile's Optuna study (created, or resumed from ``<runs>/<profile>/lab.sqlite3``)."""
    import optuna

    s = search_of(profile)
    pdir = profile_dir(profile.name, runs_root)
    pdir.mkdir(parents=True, exist_ok=True)
    exported = Path(results_root or RESULTS) / profile.name / STORAGE
    if not (pdir / STORAGE).exists() and exported.exists() and exported.resolve() != (pdir / STORAGE).resolve():
        copy_file(exported, pdir / STORAGE)  # an earlier session's search, exported: resumed, not restarted
        print(f"lab: resuming the search exported to {exported}", flush=True)
    sampler = optuna.samplers.TPESampler(seed=int(s.get("seed", 0)), n_startup_trials=int(s.get("startup", 4)))
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=int(s.get("reduction", 2)),
                                                    min_early_stopping_rate=0)
    study = optuna.create_study(study_name=f"{profile.name}-lab", storage=_storage_url(profile, runs_root),
                                sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # left running by a killed process: stopped (its finished folds stay on disk and are reused)
        study._storage.set_trial_user_attr(t._trial_id, "stopped", "the process running it ended")
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    queued = {_queue_key(t.params) for t in trials if not t.user_attrs.get("stopped")}
    queued |= {_queue_key(t.system_attrs.get("fixed_params", {})) for t in trials
               if t.state == optuna.trial.TrialState.WAITING}
    again = [t.params for t in trials if t.user_attrs.get("stopped") and t.params]
    for choices in [_full_choices(profile, first) for first in s.get("first", ())] + again:
        if _queue_key(choices) not in queued:
            study.enqueue_trial(choices)
            queued.add(_queue_key(choices))
    return study


def _full_choices(profile: Profile, changes: dict) -> dict:
    """Every searched parameter's choice for a candidate that changes ``changes`` from the profile's design."""
    base = base_params(profile)
    space = search_of(profile)["space"]
    return {k: _choice_key(changes.get(k, base[k])) for k in space}


def _queue_key(choices: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in choices.items()))


def _objective(profile: Profile, runs_root, data_dir, env: dict, results_root=None, budget: _Budget | None = None):
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
            run, exported = Run(pdir / name), Path(results_root or RESULTS) / profile.name / name
            if run.status != "finished" and run.lock_owner() is None and Run(exported).status == "finished" \
                    and RunParams.from_dict(p).same_as(Run(exported).params()) \
                    and exported.resolve() != run.path.resolve():
                import_exported_run(exported, run.path)  # a fold an earlier session trained and exported
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
            if fold + 1 < params["folds"] and _queue_key(choices) != reference and trial.should_prune():
                raise optuna.TrialPruned(f"after {fold + 1} fold(s): mean {100 * sum(scores) / len(scores):.1f}%")
        return sum(scores) / len(scores)

    return objective


def run_lab(profile: Profile, runs_root=None, data_dir=None, jobs: int | None = None,
            budget_minutes: float | None = None, results_root=None) -> list[dict]:
    """Run the profile's search until its budget is spent (resuming an earlier one); returns the trials' record.

    ``jobs`` trials train at once, each in a thread that runs its folds one after another; new trials are asked
    for (and finished ones told) in this thread only (Optuna's ask-and-tell interface), so no two threads ever
    draw the same queued candidate. Once the budget is spent no trial starts a new fold: a trial stopped so is
    recorded as failed with ``stopped``, and queued again by the next session (its finished folds reused)."""
    import optuna

    s = search_of(profile)
    study = open_search(profile, runs_root, results_root)
    budget = _Budget(study, float(budget_minutes if budget_minutes is not None else s.get("budget_minutes", 120)),
                     int(s.get("max_trials", 30)))
    jobs = max(1, int(jobs or profile.jobs))
    pdir = profile_dir(profile.name, runs_root)
    if budget.exhausted():
        print(f"lab: budget spent ({budget.spent() / 60:.0f} of {budget.seconds / 60:.0f} min, "
              f"{len(ended(study))} trials): nothing to run", flush=True)
        return write_trials(profile, runs_root, study)
    env = {k: os.environ[k] for k in os.environ if k.startswith("WBC_")}
    if data_dir is not None:
        env["WBC_DATA_DIR"] = str(Path(data_dir).resolve())
    old = os.environ.get(THREADS)
    os.environ[THREADS] = str(max(1, (os.cpu_count() or 1) // jobs))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = _objective(profile, runs_root, data_dir, env, results_root, budget)
    space = s["space"]
    running: dict = {}
    try:
        with ThreadPoolExecutor(jobs) as ex:
            while True:
                while len(running) < jobs and not budget.exhausted() \
                        and len(running) + len(ended(study)) < budget.max_trials:
                    trial = study.ask()
                    # the candidate is drawn here, in one thread: a queued one, else the sampler's proposal
                    choices = {k: trial.suggest_categorical(k, [_choice_key(c) for c in v]) for k, v in space.items()}
                    twin = next((t for t in running.values() if _queue_key(t.params) == _queue_key(choices)), None)
                    if twin is not None:  # the sampler proposed a candidate being trained now: not twice at once
                        trial.set_user_attr("duplicate_of", twin.number)
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
                    except RuntimeError as e:
                        print(f"lab trial {trial.number} failed: {e}", flush=True)
                        trial.set_user_attr("error", str(e))
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    budget.save()
                    write_trials(profile, runs_root, study)
    finally:
        budget.save()
        if old is None:
            os.environ.pop(THREADS, None)
        else:
            os.environ[THREADS] = old
    print(f"lab: {(time.time() - budget.t0) / 60:.0f} min this session; {budget.spent() / 60:.0f} of "
          f"{budget.seconds / 60:.0f} min spent over {len(ended(study))} trials ({pdir / TRIALS})", flush=True)
    return write_trials(profile, runs_root, study)


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
                     "note": t.user_attrs.get("stopped") or t.user_attrs.get("error") or (
                         f"proposed while trial {t.user_attrs['duplicate_of']} trained the same candidate"
                         if "duplicate_of" in t.user_attrs else ""),
                     "seconds": (end - t.datetime_start).total_seconds() if end and t.datetime_start else None,
                     "started": t.datetime_start.isoformat() if t.datetime_start else None})
    return rows


def write_trials(profile: Profile, runs_root, study) -> list[dict]:
    """Write ``lab_trials.json`` (every trial, pruned and failed ones included) and return its rows."""
    s = search_of(profile)
    rows = trial_rows(study)
    spent = float(study.user_attrs.get("wall_seconds", 0.0))
    write_json(profile_dir(profile.name, runs_root) / TRIALS,
               {"profile": profile.name, "space": {k: [_choice_key(c) for c in v] for k, v in s["space"].items()},
                "first": s.get("first", []), "folds": int(s.get("folds", 5)), "seed": int(s.get("seed", 0)),
                "budget_minutes": float(s.get("budget_minutes", 120)), "wall_minutes": spent / 60,
                "sampler": "TPE (seeded), after the listed first candidates",
                "pruner": f"successive halving over folds (reduction factor {int(s.get('reduction', 2))})",
                "trials": rows})
    return rows


