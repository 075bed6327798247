"""What a study checks before its first run (the dataset, once: one line, exit 1, nothing started), and kernels
that do not start (a slow start, a port race): retried with a fresh kernel and noted in the run's log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import budget, make_dataset

from wbc_utils import study
from wbc_utils.config import REPO_ROOT

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], tmp_path: Path, data: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WBC_DATA_DIR"}
    env.update(WBC_RUNS_DIR=str(tmp_path / "runs"), WBC_CACHE_DIR=str(tmp_path / "cache"),
               WBC_OUTPUT_DIR=str(tmp_path / "out"), PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    if data is not None:
        env["WBC_DATA_DIR"] = data
    return subprocess.run([sys.executable, "-m", "wbc_utils", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=budget(120))


def _assert_one_line_and_nothing_started(res: subprocess.CompletedProcess, tmp_path: Path, words: str) -> None:
    err = res.stderr.strip()
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert words in err, err
    assert "[1/" not in res.stdout  # no run announced
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()  # nothing written


def test_no_dataset_is_one_line_exit_1_and_nothing_started(tmp_path):
    """What `make report` runs (`all --profile quick --reuse`), pointed at a dataset folder that does not exist."""
    res = _cli(["all", "--profile", "quick", "--reuse"], tmp_path, str(tmp_path / "nowhere"))
    _assert_one_line_and_nothing_started(res, tmp_path, "does not exist")


@pytest.mark.skipif((REPO_ROOT / "data" / "blood-cells").exists(), reason="this checkout holds data/blood-cells/")
def test_make_report_on_a_fresh_clone_without_wbc_data_dir(tmp_path):
    res = _cli(["all", "--profile", "quick", "--reuse"], tmp_path, None)
    _assert_one_line_and_nothing_started(res, tmp_path, "WBC_DATA_DIR")


@pytest.mark.parametrize("command", ["study", "all"])
def test_an_empty_dataset_or_one_without_test_is_one_line_in_process_too(tmp_path, monkeypatch, capsys, command):
    from wbc_utils.cli import main

    for k, v in (("WBC_RUNS_DIR", "runs"), ("WBC_CACHE_DIR", "cache"), ("WBC_OUTPUT_DIR", "out")):
        monkeypatch.setenv(k, str(tmp_path / v))
    (tmp_path / "empty").mkdir()
    no_test = make_dataset(tmp_path / "no-test", cells=(2, 1), copies=1, splits=("TRAIN",))
    for data, words in ((tmp_path / "empty", "is empty"), (no_test, "split TEST is missing")):
        rc = main([command, "--profile", "smoke", "--data-dir", str(data)])
        res = subprocess.CompletedProcess([], rc, *capsys.readouterr())
        _assert_one_line_and_nothing_started(res, tmp_path, words)


def test_unreadable_dataset_files_are_named_before_the_first_run(tmp_path, capsys, monkeypatch):
    from image_corpus import blank_png

    root = make_dataset(tmp_path / "blood-cells", cells=(2, 1), copies=1)
    blank_png(root / "images" / "TRAIN" / "MONOCYTE" / "_5_5.png", 20000, 20000)
    monkeypatch.setenv("WBC_CACHE_DIR", str(tmp_path / "cache"))
    manifest = study.check_study_inputs(root)
    out = capsys.readouterr().out
    assert "1 image file(s) of the dataset cannot be read" in out and "_5_5.png: refused" in out
    assert any("decompression bomb" in s.reason for s in manifest.skipped)


# ----------------------------------------------------------------------------- kernels that do not start

class _FakePapermill:
    """Stands in for papermill.execute_notebook: raises the given errors in turn, then succeeds."""

    def __init__(self, errors):
        self.errors, self.calls = list(errors), []

    def __call__(self, src, out, **kw):
        self.calls.append(kw)
        if self.errors:
            raise self.errors.pop(0)


@pytest.fixture
def no_pause(monkeypatch):
    monkeypatch.setattr(study, "KERNEL_RETRY_PAUSE", 0.0)


def test_a_kernel_that_does_not_start_is_replaced_and_noted_in_the_runs_log(tmp_path, monkeypatch, no_pause):
    import zmq

    fake = _FakePapermill([RuntimeError("Kernel didn't respond in 300 seconds"),
                           zmq.ZMQError(zmq.EADDRINUSE)])
    monkeypatch.setattr(study.pm, "execute_notebook", fake)
    log = tmp_path / "run" / "train.log"
    study.execute_notebook(tmp_path / "nb.ipynb", tmp_path / "run" / "out.ipynb", {}, log_path=log)
    assert len(fake.calls) == 3 and all(c["start_timeout"] == study.KERNEL_START_TIMEOUT for c in fake.calls)
    notes = log.read_text().splitlines()
    assert len(notes) == 2
    assert "kernel 1 of 3 did not start (RuntimeError: Kernel didn't respond in 300 seconds)" in notes[0]
    assert "Address already in use" in notes[1] and "starting a fresh kernel" in notes[1]


def test_a_run_fails_when_no_kernel_starts_and_a_failing_cell_is_never_retried(tmp_path, monkeypatch, no_pause):
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    fake = _FakePapermill([RuntimeError("Kernel died before replying to kernel_info")] * 3)
    monkeypatch.setattr(study.pm, "execute_notebook", fake)
    with pytest.raises(RuntimeError, match="kernel_info"):
        study.execute_notebook(tmp_path / "nb.ipynb", tmp_path / "out.ipynb", {}, log_path=tmp_path / "log")
    assert len(fake.calls) == study.KERNEL_START_ATTEMPTS
    for error in (pm.PapermillExecutionError(0, 1, "x", "ValueError", "bad", []),
                  DeadKernelError("Kernel died"), RuntimeError("something else")):
        fake = _FakePapermill([error])
        monkeypatch.setattr(study.pm, "execute_notebook", fake)
        with pytest.raises(type(error)):
            study.execute_notebook(tmp_path / "nb.ipynb", tmp_path / "out.ipynb", {}, log_path=tmp_path / "log")
        assert len(fake.calls) == 1, error  # a cell that failed, a kernel that died mid-run: the run's own error


#: A kernel launcher that misbehaves once (the first kernel started for a marker file), then starts ipykernel.
#: "slow": sleeps past the start time-out (a kernel on a busy machine); "port": dies with ZMQError's message before
#: answering (a port another kernel took between being chosen and being bound).
LAUNCHER = """
import os, sys, time
connection, marker, mode = sys.argv[1:4]
if not os.path.exists(marker):
    open(marker, "w").close()
    if mode == "slow":
        time.sleep(120)
    else:
        sys.stderr.write("zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:5555')\\n")
        sys.exit(1)
from ipykernel.kernelapp import launch_new_instance
sys.argv = [sys.argv[0], "-f", connection]
launch_new_instance()
"""


@pytest.mark.slow  # starts real kernels (seconds), trains nothing
@pytest.mark.parametrize("mode", ["slow", "port"])
def test_real_kernels_a_slow_start_and_a_port_race_are_retried(tmp_path, monkeypatch, no_pause, mode):
    kernels = tmp_path / "jupyter" / "kernels" / "flaky"
    kernels.mkdir(parents=True)
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(tmp_path / "launcher.py"), "{connection_file}", str(tmp_path / "started"), mode],
        "display_name": "flaky", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("answer = 6 * 7\nprint(answer)")]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    (tmp_path / "run").mkdir()
    log = tmp_path / "run" / "train.log"
    study.execute_notebook(tmp_path / "nb.ipynb", tmp_path / "run" / "out.ipynb", {}, log_path=log,
                           kernel_name="flaky", start_timeout=20)
    out = nbformat.read(tmp_path / "run" / "out.ipynb", as_version=4)
    assert out.cells[0].outputs[0]["text"].strip() == "42"
    note = log.read_text()
    assert "kernel 1 of 3 did not start" in note
    assert ("didn't respond in 20 seconds" if mode == "slow" else "Kernel died before replying") in note
