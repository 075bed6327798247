"""Runs written when "paper" named three things (integer labels, TEST as validation, the 2020 network) still load,
and `python -m wbc_utils migrate` renames them once, so a study finds them under today's names."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wbc_utils.artifacts import read_json, write_json
from wbc_utils.cli import main
from wbc_utils.config import RESULTS
from wbc_utils.errors import ParameterError, WBCError
from wbc_utils.evaluation import EVALUATION_VERSION
from wbc_utils.params import ARCH_2020, PROFILES, TEST_AS_VALIDATION, RunParams
from wbc_utils.registry import INTEGER, numpy_targets
from wbc_utils.runs import Run, legacy_folders, load_study, migrate, summary_frame
from wbc_utils.study import _profile_dict, plan

OLD = {"target_encoding": "paper", "validation": "paper", "arch": "paper"}


def _old_run(root, seed: int, loss: str = "mse") -> Run:
    """A finished run as the version before the rename wrote it: "paper" values, "<loss>_paper_..." folder."""
    p = RunParams(loss=loss, target_encoding=INTEGER, seed=seed, profile="quick", image_size=[60, 80], epochs=6,
                  train_subset=3000, learning_rate=3e-4)
    params = {**p.to_dict(), **OLD}
    run = Run(root / "quick" / p.legacy_run_name)
    run.write_params(params)
    run.write_history([{"epoch": 1, "loss": 0.5, "accuracy": 0.4}])
    (run.path / "predictions.csv").write_text("split,relpath\nTEST,a.jpeg\n")
    run.write_metrics({**params, "evaluation_version": EVALUATION_VERSION, "unseen_accuracy": 0.5,
                       "run_name": run.name, "run_dir": str(run.path)})
    return run


def _old_study(root) -> list[Run]:
    runs = [_old_run(root, s) for s in (0, 1)]
    settings = _profile_dict(PROFILES["quick"])
    settings.update(encodings=["paper", "onehot"], validation="paper", arch="paper",
                    controls=[{**c, "target_encoding": "paper"} for c in settings["controls"]])
    write_json(root / "quick" / "study.json", {"profile": "quick", "profile_settings": settings,
                                               "runs": [{"run_name": r.name, "action": "train"} for r in runs]})
    pd.DataFrame({"run_name": [r.name for r in runs], "run_dir": [str(r.path) for r in runs],
                  "target_encoding": ["paper", "paper"], "validation": ["paper", "paper"]}
                 ).to_csv(root / "quick" / "summary.csv", index=False)
    return runs


def test_old_values_read_as_todays():
    p = RunParams.from_dict({**RunParams().to_dict(), **OLD})
    assert (p.target_encoding, p.validation, p.arch) == (INTEGER, TEST_AS_VALIDATION, ARCH_2020) == \
        ("integer", "test", "unet_encoder")
    assert p.same_as({**p.to_dict(), **OLD}), "an old params.json describes the same run"
    assert p.run_name.startswith("crossentropy_integer_") and p.legacy_run_name.startswith("crossentropy_paper_")
    assert RunParams(target_encoding="onehot").legacy_run_name is None
    # below the parameters (a saved model's loss, the NumPy twins), the old value reads as today's and an
    # encoding nobody knows is refused rather than read as one-hot
    np.testing.assert_array_equal(numpy_targets([2], np.zeros((1, 4)), "paper")[1], [[2.0, 2.0, 2.0, 2.0]])
    with pytest.raises(ParameterError, match="target_encoding='ordinal'.*integer, onehot"):
        numpy_targets([0], np.zeros((1, 4)), "ordinal")


def test_a_checkpoint_saved_when_integer_labels_were_paper_loads():
    from wbc_utils.losses import PaperMetric, _EncodedLoss

    loss = _EncodedLoss.from_config(_EncodedLoss(loss="mse").get_config() | {"encoding": "paper"})
    assert loss.encoding == INTEGER
    assert PaperMetric.from_config({"loss": "mse", "encoding": "paper", "name": "paper_metric"}).encoding == INTEGER


def test_a_study_refuses_old_folders_and_says_what_to_run(tmp_path):
    _old_study(tmp_path)
    with pytest.raises(WBCError, match=r"2 run folder\(s\).*written before 'paper' was renamed.*wbc_utils migrate"):
        load_study("quick", tmp_path, check_current=False)
    with pytest.raises(WBCError, match="wbc_utils migrate"):
        plan(PROFILES["quick"], tmp_path, reuse=True, results_root=tmp_path / "results")


def test_migrate_renames_the_folders_and_their_records_once(tmp_path):
    old = _old_study(tmp_path)
    lines: list[str] = []
    (old[1].path / "imported_from.txt").write_text(f"/elsewhere/results/quick/{old[1].name}\n")
    moved = migrate(tmp_path, printer=lines.append)
    renamed = {a.name: b.name for a, b in moved}
    assert renamed == {r.name: r.name.replace("mse_paper_", "mse_integer_") for r in old}
    assert len(lines) == 2 and legacy_folders(tmp_path) == []
    assert (tmp_path / "quick" / renamed[old[1].name] / "imported_from.txt").read_text() == \
        f"/elsewhere/results/quick/{renamed[old[1].name]}\n"
    new = Run(tmp_path / "quick" / "mse_integer_60x80_lr0.0003_s0")
    assert not old[0].path.exists() and new.status == "finished"
    raw = read_json(new.path / "params.json")
    assert (raw["target_encoding"], raw["validation"], raw["arch"]) == ("integer", "test", "unet_encoder")
    m = new.metrics()
    assert m["target_encoding"] == "integer" and m["run_name"] == new.name and m["run_dir"].endswith(new.name)
    record = read_json(tmp_path / "quick" / "study.json")
    assert record["profile_settings"]["encodings"] == ["integer", "onehot"]
    assert record["profile_settings"]["controls"][0]["target_encoding"] == "integer"
    assert {r["run_name"] for r in record["runs"]} == set(renamed.values())
    csv = pd.read_csv(tmp_path / "quick" / "summary.csv")
    assert set(csv["run_name"]) == set(renamed.values()) and set(csv["target_encoding"]) == {"integer"}
    st = load_study("quick", tmp_path, check_current=False)  # now it loads, and the runs are the profile's own
    assert set(st.main["run_name"]) == set(renamed.values())
    assert migrate(tmp_path, printer=lines.append) == [] and len(lines) == 2, "a second migrate has nothing to do"
    assert main(["migrate", str(tmp_path)]) == 0


def test_migrate_leaves_a_run_in_training_and_a_taken_name(tmp_path):
    a, b = _old_study(tmp_path)
    lock = a.lock().acquire()
    taken = tmp_path / "quick" / b.name.replace("mse_paper_", "mse_integer_")
    taken.mkdir()
    try:
        lines: list[str] = []
        assert migrate(tmp_path, printer=lines.append) == []
        assert any("a study is running it" in x for x in lines) and any("exists" in x for x in lines)
        assert a.path.exists() and b.path.exists()
        assert main(["migrate", str(tmp_path)]) == 1, "folders left as they were make the command fail"
    finally:
        lock.release()
    assert summary_frame("quick", tmp_path)["target_encoding"].tolist().count("integer") == 2
    record = read_json(tmp_path / "quick" / "study.json")  # the records keep the names of folders left as they were
    assert {r["run_name"] for r in record["runs"]} == {a.name, b.name}


def test_a_migration_stopped_part_way_is_finished_by_the_next(tmp_path):
    """Stopped after renaming a folder, before rewriting its files: the next call finds it by its values and
    brings its own names and the study's records to the new name."""
    a, b = _old_study(tmp_path)
    record = read_json(tmp_path / "quick" / "study.json")
    write_json(tmp_path / "quick" / "study.json", {**record, "previous": dict(record)})
    new_a = a.path.with_name(a.name.replace("mse_paper_", "mse_integer_"))
    a.path.rename(new_a)  # the first step of a migration, then a crash
    assert new_a in legacy_folders(tmp_path)
    assert [x.name for _, x in migrate(tmp_path, printer=lambda _: None)] == [b.name.replace("paper", "integer")]
    assert Run(new_a).metrics()["run_name"] == new_a.name and legacy_folders(tmp_path) == []
    record = read_json(tmp_path / "quick" / "study.json")
    names = {new_a.name, b.name.replace("paper", "integer")}
    assert {r["run_name"] for r in record["runs"]} == names
    assert {r["run_name"] for r in record["previous"]["runs"]} == names
    assert record["previous"]["profile_settings"]["encodings"] == ["integer", "onehot"]


def test_the_shipped_results_are_migrated():
    """Every run folder under results/ carries today's names and values (`python -m wbc_utils migrate results`)."""
    assert legacy_folders(RESULTS) == []
