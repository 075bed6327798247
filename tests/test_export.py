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
    # an exported run that is no longer finished does not linger in a later export
    (done.path / "metrics.json").unlink()
    export_study("paper", tmp_path / "results", runs)
    assert not (out / done.name).exists() and (out / "study.json").exists()
    with pytest.raises(WBCError, match="no study at"):
        export_study("nothing", tmp_path / "results", runs)
