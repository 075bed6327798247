"""Training runs on a tiny dataset the tests make: artifacts, determinism, refusal, resume after a kill."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from wbc_utils.errors import RunExistsError
from wbc_utils.params import RunParams
from wbc_utils.runs import HISTORY_COLUMNS, Run
from wbc_utils.training import train_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _params(**kw):
    base = dict(loss="crossentropy", target_encoding="integer", seed=3, epochs=2, image_size=[16, 20],
                train_subset=0, batch_size=16, learning_rate=1e-3, profile="test")
    base.update(kw)
    return RunParams(**base)


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.getbasetemp() / "train-cache"
    monkeypatch.setenv("WBC_CACHE_DIR", str(d))
    return d


def test_run_writes_every_artifact(train_dataset, cache, tmp_path):
    run = tmp_path / "run"
    m = train_run(_params(loss="mse", target_encoding="onehot"), run, data_dir=train_dataset, verbose=0)
    for name in ("params.json", "history.csv", "metrics.json", "model.keras", "predictions.csv", "diagnostics.json"):
        assert (run / name).exists(), name
    assert not (run / "checkpoint").exists()
    h = pd.read_csv(run / "history.csv")
    assert list(h.columns) == HISTORY_COLUMNS and list(h["epoch"]) == [1, 2]
    saved = json.loads((run / "metrics.json").read_text())
    for k in ("loss", "target_encoding", "seed", "epochs", "image_size", "test_accuracy", "test_accuracy_ci",
              "unseen_accuracy", "unseen_accuracy_ci", "per_class", "train_seconds", "images_per_second",
              "collapsed", "output_spread", "train_loss_vs_constant", "constant_loss", "top_class_share",
              "unseen_cell_accuracy", "test_simple_accuracy", "test_simple_slides", "paper_metric_test",
              "evaluation_version", "train_class_counts", "sources"):
        assert k in saved, k
    assert saved == json.loads(json.dumps(m))
    assert saved["per_class"]["MONOCYTE"]["cells"] == 2 and saved["test_cells"] == 8
    assert saved["constant_loss"] == pytest.approx(0.1875, abs=1e-4)  # one-hot MSE on balanced classes
    p = pd.read_csv(run / "predictions.csv")
    assert set(p["split"]) == {"TEST", "TEST_SIMPLE"} and len(p) == 48 + 8
    assert list(p.columns[:7]) == ["split", "relpath", "class", "label", "slide", "cell", "shared"]
    d = json.loads((run / "diagnostics.json").read_text())
    assert set(d) == {"init", "after_epoch_1"} and len(d["init"]["zero_fraction"]) == 8


def test_same_seed_same_results(train_dataset, cache, tmp_path):
    a = train_run(_params(), tmp_path / "a", data_dir=train_dataset, verbose=0)
    b = train_run(_params(), tmp_path / "b", data_dir=train_dataset, verbose=0)
    ha, hb = pd.read_csv(tmp_path / "a" / "history.csv"), pd.read_csv(tmp_path / "b" / "history.csv")
    cols = ["loss", "accuracy", "val_loss", "val_accuracy"]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], atol=1e-6, rtol=0)  # tolerance: 1e-6 on CPU
    assert a["test_accuracy"] == b["test_accuracy"]


def test_finished_run_is_not_overwritten_silently(train_dataset, cache, tmp_path):
    p = _params(epochs=1)
    run = tmp_path / "run"
    first = train_run(p, run, data_dir=train_dataset, verbose=0)
    with pytest.raises(RunExistsError, match="--reuse.*--force"):
        train_run(p, run, data_dir=train_dataset, verbose=0)
    assert train_run(p, run, data_dir=train_dataset, reuse=True, verbose=0) == first
    with pytest.raises(RunExistsError, match="different parameters"):
        train_run(_params(epochs=2), run, data_dir=train_dataset, reuse=True, verbose=0)
    again = train_run(_params(epochs=2), run, data_dir=train_dataset, force=True, verbose=0)
    assert again["epochs"] == 2


def _train_cmd(data_dir, out, epochs):
    return [sys.executable, "-m", "wbc_utils", "train", "--data-dir", str(data_dir), "--output-dir", str(out),
            "--epochs", str(epochs), "--image-size", "16x20", "--train-subset", "0", "--batch-size", "16",
            "--seed", "5", "--profile", "test"]


def test_killed_run_resumes_from_its_last_epoch(train_dataset, cache, tmp_path):
    epochs = 30
    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(train_dataset, run, epochs), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        h = run / "history.csv"
        if h.exists() and len(pd.read_csv(h)) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(pd.read_csv(run / "history.csv"))
    assert done < epochs, "the run finished before it could be killed"
    assert Run(run).status == "incomplete" and not (run / "metrics.json").exists()

    res = subprocess.run(_train_cmd(train_dataset, run, epochs), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"Resuming killed after epoch {done}" in res.stdout
    h = pd.read_csv(run / "history.csv")
    assert list(h["epoch"]) == list(range(1, epochs + 1))

    ref = tmp_path / "uninterrupted"
    res = subprocess.run(_train_cmd(train_dataset, ref, epochs), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    href = pd.read_csv(ref / "history.csv")
    pd.testing.assert_frame_equal(h[["loss", "val_loss"]], href[["loss", "val_loss"]], atol=1e-4, rtol=0)


def test_study_marks_incomplete_and_failed_runs(tmp_path, monkeypatch):
    """The summary lists an unfinished run as incomplete and a failed one as failed, never as finished."""
    from wbc_utils.artifacts import write_json
    from wbc_utils.study import summarize

    monkeypatch.setenv("WBC_RUNS_DIR", str(tmp_path))
    inc = tmp_path / "p" / "mse_integer_s0"
    inc.mkdir(parents=True)
    write_json(inc / "params.json", _params(loss="mse").to_dict())
    f = summarize("p", failed={"mse_integer_s0": "ValueError: boom"})
    assert f.loc[0, "status"] == "failed" and f.loc[0, "error"] == "ValueError: boom"
    f = summarize("p")
    assert f.loc[0, "status"] == "incomplete" and pd.isna(f.loc[0, "test_accuracy"])


def test_grouped_validation_holds_out_whole_cells(train_dataset, cache, tmp_path):
    from wbc_utils.training import prepare_data

    p = _params(validation="grouped", val_fraction=0.25, early_stopping_patience=1, epochs=3)
    data = prepare_data(p, train_dataset, progress=False)
    assert set(data.train.cells).isdisjoint(set(data.val.cells))
    assert set(data.train.frame["slide"]).isdisjoint(set(data.val.frame["slide"]))
    assert data.val.split == "TRAIN" and len(data.val) == 4 * 6  # one of 4 cells per class, 6 copies each
    m = train_run(p, tmp_path / "g", data_dir=train_dataset, verbose=0)
    assert m["validation"] == "grouped" and m["val_images"] == 24
    assert 1 <= m["chosen_epoch"] <= m["epochs_run"] <= 3
    assert m["test_images"] == 48  # TEST is evaluated once, at the end
