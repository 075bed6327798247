"""Batch behaviour: a failing run does not stop the others; papermill parameters are type-checked."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import budget

from wbc_utils.artifacts import write_json
from wbc_utils.params import RunParams

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_failed_run_does_not_stop_the_batch(train_dataset, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "WBC_RUNS_DIR": str(runs), "WBC_CACHE_DIR": str(tmp_path / "cache"),
           "WBC_OUTPUT_DIR": str(tmp_path)}
    args = ["--profile", "smoke", "--losses", "mse", "--encodings", "integer,onehot", "--seeds", "0", "--epochs", "1",
            "--image-size", "16x20", "--train-subset", "0", "--data-dir", str(train_dataset)]
    # an unfinished run with other parameters is in the way of the second run: it must fail, the first must not
    blocked = runs / "smoke" / "mse_onehot_16x20_lr0.0003_s0"
    blocked.mkdir(parents=True)
    write_json(blocked / "params.json", RunParams(loss="mse", target_encoding="onehot", epochs=7).to_dict())
    res = subprocess.run([sys.executable, "-m", "wbc_utils", "study", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=budget(600))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 run(s) FAILED: mse_onehot_16x20_lr0.0003_s0" in res.stderr
    assert "RunExistsError" in res.stdout
    s = pd.read_csv(runs / "smoke" / "summary.csv").set_index("run_name")
    assert s.loc["mse_integer_16x20_lr0.0003_s0", "status"] == "finished"
    assert s.loc["mse_onehot_16x20_lr0.0003_s0", "status"] == "failed"
    assert "different parameters" in s.loc["mse_onehot_16x20_lr0.0003_s0", "error"]


def test_papermill_parameter_of_the_wrong_type(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match=r"epochs must be an integer, got 'ten' \(str\)"):
        pm.execute_notebook(str(ROOT / "notebooks" / "03_training.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"epochs": "ten"}, cwd=str(ROOT / "notebooks"), progress_bar=False,
                            kernel_name="python3")


def test_cells_run_out_of_order_say_which_cell_to_run():
    from wbc_utils.notebook import CellOrderError, need

    with pytest.raises(CellOrderError, match="run the cell 'Load the data' first"):
        need({}, "data", cell="Load the data")
