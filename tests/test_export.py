"""export: a study's small artifacts, without the models, readable as a runs folder (the shipped paper results)."""
from __future__ import annotations

import pytest

from wbc_utils.artifacts import write_json
from wbc_utils.errors import WBCError
from wbc_utils.evaluation import EVALUATION_VERSION
from wbc_utils.params import RunParams
from wbc_utils.runs import Run, export_study, summary_frame


def _fake_run(root, name_seed: int, finished: bool = True):
    p = RunParams(loss="mse", target_encoding="onehot", seed=name_seed, profile="paper")
    run = Run(root / "paper" / p.run_name)
    run.write_params(p.to_dict())
    run.write_history([{"epoch": 1, "loss": 0.5, "accuracy": 0.4}])
    (run.path / "model.keras").write_bytes(b"x" * 1000)
    if finished:
        (run.path / "predictions.csv").write_text("split,relpath\nTEST,a.jpeg\n")
        run.write_metrics({"evaluation_version": EVALUATION_VERSION, "unseen_accuracy": 0.5})
    return run


def test_export_keeps_what_the_report_reads_and_not_the_models(tmp_path):
    runs = tmp_path / "runs"
    done = _fake_run(runs, 0)
    _fake_run(runs, 1, finished=False)
    write_json(runs / "paper" / "study.json", {"profile": "paper", "runs": []})
    written = export_study("paper", tmp_path / "results", runs)
    out = tmp_path / "results" / "paper"
    assert (out / done.name / "metrics.json").exists() and (out / done.name / "predictions.csv").exists()
    assert not list(out.rglob("model.keras")), "models are not exported"
    assert (out / "study.json") in written
    s = summary_frame("paper", tmp_path / "results")
    assert s["status"].tolist() == ["finished"]  # the unfinished run is not exported
    # a run retrained here and not finished (yet) does not take the finished export's place: an export never
    # drops a finished run it cannot replace
    (done.path / "metrics.json").unlink()
    export_study("paper", tmp_path / "results", runs)
    assert (out / done.name / "metrics.json").exists() and (out / "study.json").exists()
    with pytest.raises(WBCError, match="no study at"):
        export_study("nothing", tmp_path / "results", runs)


def test_an_earlier_export_the_runs_folder_lacks_is_kept(tmp_path):
    """Session 1 exported seed 0; session 2, on another machine, trained seed 1 only: its export keeps seed 0."""
    first, second = tmp_path / "runs1", tmp_path / "runs2"
    s0 = _fake_run(first, 0)
    export_study("paper", tmp_path / "results", first)
    s1 = _fake_run(second, 1)
    export_study("paper", tmp_path / "results", second)
    out = tmp_path / "results" / "paper"
    assert (out / s0.name / "metrics.json").exists() and (out / s1.name / "metrics.json").exists()


def test_study_reuse_takes_exported_runs_as_finished_and_trains_only_the_rest(tmp_path):
    from wbc_utils.params import Profile
    from wbc_utils.runs import IMPORTED
    from wbc_utils.study import plan

    prof = Profile(name="paper", description="", kind="study", image_size=[240, 320], epochs=100, seeds=[0, 1, 2],
                   losses=("mse",), encodings=("onehot",))
    exported_runs = tmp_path / "elsewhere"
    for seed in (0, 1):
        _fake_run(exported_runs, seed)
    export_study("paper", tmp_path / "results", exported_runs)
    # an exported run whose parameters differ from the profile's is not taken
    other = RunParams(loss="mse", target_encoding="onehot", seed=1, profile="paper", epochs=3).to_dict()
    write_json(tmp_path / "results" / "paper" / RunParams(**{**other, "epochs": 100}).run_name / "params.json",
               other)
    runs = tmp_path / "runs"
    _fake_run(runs, 0, finished=False)  # an unfinished attempt here is replaced by the finished export
    steps = plan(prof, runs, reuse=True, results_root=tmp_path / "results")
    actions = {p.seed: action for p, _, action in steps}
    assert actions == {0: "reuse", 1: "train", 2: "train"}
    d0 = steps[0][1]
    assert Run(d0).status == "finished" and (d0 / IMPORTED).exists() and not (d0 / "model.keras").exists()
    from wbc_utils.errors import DataError
    from wbc_utils.runs import load_model

    with pytest.raises(DataError, match="copied from an export"):  # its weights were never exported: say so
        load_model(d0)
    # without --reuse nothing is read from results/
    assert {a for _, _, a in plan(prof, tmp_path / "runs_b", results_root=tmp_path / "results")} == {"train"}


def test_a_finished_run_with_other_parameters_is_never_taken_for_this_one(tmp_path):
    """Two runs of one study that map to one folder (before names carried the image size, a pilot's 60x80 and
    120x160 candidates did): the second must not reuse the first's results."""
    from wbc_utils.study import train_one

    done = _fake_run(tmp_path / "runs", 0)
    other = RunParams(**{**done.params(), "image_size": [120, 160]})
    entry = train_one(other.to_dict(), str(done.path), None, False, {})
    assert entry["action"] == "train" and "different parameters" in entry["error"]
    assert done.status == "finished" and done.params()["image_size"] == [240, 320]


def test_a_run_folder_the_profile_does_not_plan_is_kept_out_of_the_tables(tmp_path):
    """A folder left by an older version of a profile (another naming of a run) is 'other': not
    pooled with the planned seeds."""
    from wbc_utils.params import PROFILES
    from wbc_utils.runs import OTHER, load_study
    from wbc_utils.study import _profile_dict

    runs = tmp_path / "runs"
    planned = _fake_run(runs, 0)
    old = Run(runs / "paper" / "mse_onehot_lr0.001_s0_v1")  # an older naming of the same run
    old.write_params(planned.params())
    write_json(runs / "paper" / "study.json", {"profile": "paper", "runs": [],
                                               "profile_settings": _profile_dict(PROFILES["paper"])})
    st = load_study("paper", runs, check_current=False)
    roles = dict(zip(st.runs["run_name"], st.runs["role"]))
    assert roles[planned.name] == "main" and roles[old.name] == OTHER
    assert list(st.others["run_name"]) == [old.name] and old.name not in set(st.main["run_name"])


def test_a_study_grown_after_its_record_plans_the_built_in_runs(tmp_path):
    """Seeds added to a profile after its study.json was written (the full profile, 10 -> 20 seeds): the report
    counts the built-in profile's runs as planned; a record the built-in does not extend keeps its own plan."""
    import dataclasses

    from wbc_utils.params import PROFILES
    from wbc_utils.runs import load_study
    from wbc_utils.study import _profile_dict

    runs = tmp_path / "runs"
    (runs / "quick").mkdir(parents=True)
    record = {"profile": "quick", "runs": [],
              "profile_settings": _profile_dict(dataclasses.replace(PROFILES["quick"], seeds=[0]))}
    write_json(runs / "quick" / "study.json", record)
    st = load_study("quick", runs, check_current=False)
    assert st.profile.seeds == [0] and st.plan is PROFILES["quick"]
    other = _profile_dict(dataclasses.replace(PROFILES["quick"], seeds=[7], epochs=3))
    write_json(runs / "quick" / "study.json", {**record, "profile_settings": other})
    st = load_study("quick", runs, check_current=False)
    assert st.plan.seeds == [7] and st.plan is not PROFILES["quick"]
