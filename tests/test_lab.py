"""The lab's search (wbc_utils.lab): its checks, its pruning and control, its budget, and resuming a stopped search.

Training is replaced by a stand-in that writes a finished run's metrics at once (a score from the candidate's
design and the fold), so the search's own logic is what these tests exercise, in seconds."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from wbc_utils import lab
from wbc_utils.errors import ParameterError
from wbc_utils.params import RunParams, get_profile

SPACE = {"view": ["cell", "cell-reflect", "cell-black"], "augment": ["geometric+color", "geometric+hed"]}
#: the stand-in's accuracy per design: reflect best, black worst; HED a little better; folds differ a little
SCORE = {"cell": 0.80, "cell-reflect": 0.88, "cell-black": 0.60}


def profile(**search):
    s = {"folds": 3, "seed": 0, "budget_minutes": 60, "max_trials": 6, "startup": 2, "space": SPACE,
         "first": [{}, {"view": "cell-reflect"}]}
    s.update(search)
    return dataclasses.replace(get_profile("best"), name="labtest", search=s)


@pytest.fixture
def fake_training(monkeypatch):
    """Replace the study's runner: a run 'trains' by writing params.json and metrics.json; returns the calls
    (``calls.seconds``: how long one 'training' takes)."""

    class Calls(list):
        seconds = 0.05

    calls = Calls()

    def train_one(params, run_dir, data_dir, force, env, announce=None, wait=False):
        d = Path(run_dir)
        p = RunParams.from_dict(params)
        if (d / "metrics.json").exists():
            return {"run_name": p.run_name, "action": "reuse"}
        calls.append(p.run_name)
        time.sleep(calls.seconds)
        d.mkdir(parents=True, exist_ok=True)
        acc = SCORE[p.view] + (0.02 if p.augment == "geometric+hed" else 0.0) + 0.01 * p.fold
        (d / "params.json").write_text(json.dumps(p.to_dict()))
        (d / "metrics.json").write_text(json.dumps({"val_accuracy": acc, "status": "finished"}))
        return {"run_name": p.run_name, "action": "train"}

    monkeypatch.setattr("wbc_utils.lab.train_one", train_one)
    return calls


def test_search_is_checked_before_anything_runs():
    with pytest.raises(ParameterError, match="not design parameters"):
        lab.search_of(profile(space={"seed": [0, 1]}))
    with pytest.raises(ParameterError, match="outside the search space"):
        lab.search_of(profile(first=[{"view": "cell77"}]))
    with pytest.raises(ParameterError, match="must list its choices"):
        lab.search_of(profile(space={"view": []}))
    with pytest.raises(ParameterError, match="has no lab search"):
        lab.search_of(get_profile("quick"))


def test_candidates_are_the_profile_design_with_the_choices(tmp_path):
    prof = profile(space={**SPACE, "image_size": [[64, 64], [96, 96]]})
    c = lab.candidate(prof, {"view": "cell-reflect", "augment": "geometric+hed", "image_size": "96x96"})
    assert (c["view"], c["augment"], c["image_size"]) == ("cell-reflect", "geometric+hed", [96, 96])
    assert c["validation"] == "grouped" and c["folds"] == 3 and c["fold"] == 0
    assert lab._full_choices(prof, {})["image_size"] == "64x64"


def test_search_prunes_keeps_its_control_and_records_every_trial(tmp_path, fake_training):
    prof = profile()
    rows = lab.run_lab(prof, tmp_path, jobs=2)
    rec = json.loads((tmp_path / "labtest" / lab.TRIALS).read_text())
    assert [r["number"] for r in rec["trials"]] == [r["number"] for r in rows]
    tried = [r for r in rows if r["params"] and r["duplicate_of"] is None]
    control = tried[0]
    assert control["params"] == lab._full_choices(prof, {}) and control["state"] == "complete"
    assert len(control["fold_accuracies"]) == 3  # the control is never pruned
    assert tried[1]["params"]["view"] == "cell-reflect"
    for r in rows:
        if r["state"] == "pruned":
            assert 0 < len(r["fold_accuracies"]) < 3
        if r["state"] == "complete":
            assert r["value"] == pytest.approx(sum(r["fold_accuracies"]) / 3)
    assert any(r["state"] == "pruned" for r in rows), "the worse half is stopped after its first folds"
    assert len(fake_training) == len(set(fake_training)), "no fold is trained twice"
    keys = [tuple(sorted(r["params"].items())) for r in tried]
    assert len(keys) == len(set(keys)), "a candidate proposed again is recorded as a duplicate, not trained"
    # the control is asked too, so the pruner ranks the others against its folds (its rung values are recorded)
    import optuna

    study = optuna.load_study(study_name="labtest-lab", storage=f"sqlite:///{tmp_path / 'labtest' / lab.STORAGE}")
    assert "completed_rung_0" in study.trials[control["number"]].system_attrs
    # a second call with the budget's trials used up runs nothing more
    n = len(fake_training)
    lab.run_lab(prof, tmp_path, jobs=2)
    assert len(fake_training) == n


def test_a_search_stopped_by_its_budget_resumes_where_it_stopped(tmp_path, fake_training):
    prof = profile(first=[{}], max_trials=1)
    fake_training.seconds = 3.0
    lab.run_lab(prof, tmp_path, jobs=1, budget_minutes=2 / 60)  # time to start one fold, not a second
    fake_training.seconds = 0.05
    rows = json.loads((tmp_path / "labtest" / lab.TRIALS).read_text())["trials"]
    assert rows[0]["state"] == "fail" and "budget" in rows[0]["note"] and len(fake_training) == 1
    rows = lab.run_lab(prof, tmp_path, jobs=1, budget_minutes=60)
    done = [r for r in rows if r["state"] == "complete"]
    assert len(done) == 1 and len(done[0]["fold_accuracies"]) == 3
    assert len(fake_training) == 3, "the stopped trial's finished fold was reused, not retrained"


def test_a_spent_budget_starts_nothing(tmp_path, fake_training, capsys):
    lab.run_lab(profile(), tmp_path, jobs=1, budget_minutes=0)
    assert fake_training == [] and "budget spent" in capsys.readouterr().out


def test_the_final_runs_train_the_best_complete_candidate(tmp_path, fake_training):
    prof = profile(max_trials=4)
    assert lab.pick(prof, tmp_path) is None and lab.with_pick(prof, tmp_path) == (prof, None)
    rows = lab.run_lab(prof, tmp_path, jobs=1)
    chosen = lab.pick(prof, tmp_path)
    complete = [r for r in rows if r["state"] == "complete"]
    assert chosen["value"] == max(r["value"] for r in complete)
    final, same = lab.with_pick(prof, tmp_path)
    assert same == chosen and final.extra["view"] == chosen["design"]["view"]
    assert all(r.view == chosen["design"]["view"] and r.validation == "none" for r in final.main_runs())
    assert final.epochs == chosen["design"]["epochs"] and final.search == prof.search


def test_a_command_line_override_fixes_that_parameter_for_every_candidate():
    prof = profile(space={**SPACE, "epochs": [10, 16]}, first=[{}, {"epochs": 16}, {"view": "cell-reflect"}])
    fixed = lab.fix_params(dataclasses.replace(prof, epochs=1), {"epochs": 1})
    assert "epochs" not in fixed.search["space"] and fixed.search["first"] == [{}, {"view": "cell-reflect"}]
    assert lab.candidate(fixed, lab._full_choices(fixed, {}))["epochs"] == 1


def test_a_search_with_other_settings_is_refused_and_an_exported_one_resumed(tmp_path, fake_training):
    prof = profile(first=[{}], max_trials=1)
    lab.run_lab(prof, tmp_path / "first", jobs=1)
    other = lab.fix_params(dataclasses.replace(prof, epochs=1), {"epochs": 1})
    with pytest.raises(ParameterError, match="other choices or settings"):
        lab.run_lab(dataclasses.replace(prof, search={**prof.search, "space": {"view": ["cell"]}}),
                    tmp_path / "first", jobs=1)
    # a later session elsewhere: the export (runs folder "first", read as results/) is resumed, folds imported
    n = len(fake_training)
    rows = lab.run_lab(dataclasses.replace(prof, search={**prof.search, "max_trials": 2}), tmp_path / "second",
                       jobs=1, results_root=tmp_path / "first")
    assert [r["state"] for r in rows][:1] == ["complete"] and len(fake_training) > n
    assert (tmp_path / "second" / "labtest" / Path(rows[0]["run_name_fold0"]).name / "imported_from.txt").exists()
    # another search's export is not resumed, nor its folds imported: a new search starts
    rows = lab.run_lab(other, tmp_path / "third", jobs=1, results_root=tmp_path / "first")
    assert rows[0]["number"] == 0 and len(rows) == 1
    assert not list((tmp_path / "third" / "labtest").glob("*/imported_from.txt"))


def test_one_lab_at_a_time(tmp_path, fake_training):
    from wbc_utils.errors import WBCError
    from wbc_utils.locks import FolderLock
    from wbc_utils.runs import LAB_LOCK

    (tmp_path / "labtest").mkdir()
    with FolderLock(tmp_path / "labtest" / LAB_LOCK, owner="otherhost:1:x"):
        with pytest.raises(WBCError, match="running in another process"):
            lab.run_lab(profile(), tmp_path, jobs=1)
    assert fake_training == []
