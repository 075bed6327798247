"""Run locks: two studies on one runs folder train each run once; a killed owner's lock is taken over; a full or
unwritable runs folder ends with one clear line, never a traceback or a finished-looking partial run."""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import budget

from wbc_utils.errors import WBCError
from wbc_utils.locks import FolderLock, RunLockedError, identity, is_stale
from wbc_utils.runs import RUN_BYTES, Run, check_runs_folder, resource_message

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(path: Path, owner: str, heartbeat: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"owner": owner, "started": heartbeat, "heartbeat": heartbeat}))


def test_a_held_lock_excludes_another_owner_and_says_who_holds_it(tmp_path):
    path = tmp_path / "run" / "lock.json"
    with FolderLock(path, owner="hostA:1"):
        assert json.loads(path.read_text())["owner"] == "hostA:1"
        with pytest.raises(RunLockedError, match=r"being trained by hostA:1 since \d{4}-\d\d-\d\d"):
            FolderLock(path, owner="hostB:2").acquire()
    assert not path.exists()  # released
    with FolderLock(path, owner="hostB:2"):
        pass


def test_the_study_s_own_lock_lets_its_kernels_in_without_taking_it(tmp_path):
    path = tmp_path / "lock.json"
    with FolderLock(path, owner="study:7"):
        with FolderLock(path, owner="study:7"):  # what a kernel started by that study does
            pass
        assert path.exists(), "the kernel must not release the study's lock"


def test_a_lock_left_by_a_killed_process_on_this_host_is_taken_over(tmp_path):
    path = tmp_path / "lock.json"
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    _write_lock(path, dead, time.time())  # a fresh heartbeat, but its process is gone
    assert is_stale(json.loads(path.read_text()))
    with FolderLock(path) as lock:
        assert lock.taken_over["owner"] == dead
        assert json.loads(path.read_text())["owner"] == identity()
    live = f"{socket.gethostname()}:{os.getpid()}"
    assert not is_stale({"owner": live, "heartbeat": 0})  # alive here: never stale, however old its heartbeat


def test_another_host_s_lock_is_stale_only_without_a_heartbeat(tmp_path):
    path = tmp_path / "lock.json"
    _write_lock(path, "elsewhere:123", time.time())
    with pytest.raises(RunLockedError):
        FolderLock(path, stale_after=60).acquire()
    _write_lock(path, "elsewhere:123", time.time() - 3600)
    with FolderLock(path, stale_after=60) as lock:
        assert lock.taken_over["owner"] == "elsewhere:123"


def test_the_heartbeat_is_refreshed_while_the_lock_is_held(tmp_path):
    path = tmp_path / "lock.json"
    with FolderLock(path, heartbeat=0.05):
        first = json.loads(path.read_text())["heartbeat"]
        time.sleep(0.3)
        assert json.loads(path.read_text())["heartbeat"] > first


def test_clearing_a_run_keeps_its_lock(tmp_path):
    run = Run(tmp_path / "r")
    run.write_params({"loss": "mse"})
    with run.lock():
        run.clear()
        assert run.has("lock.json") and not run.has("params.json")


def test_disk_faults_are_one_line_naming_the_folder_and_what_a_run_needs(tmp_path):
    msg = resource_message(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x" / "summary.csv")))
    assert "no space left on the device of" in msg and str(tmp_path / "x") in msg
    assert f"{RUN_BYTES / 2**20:,.0f} MB" in msg and "--runs-dir" in msg and "\n" not in msg
    ro = resource_message(OSError(errno.EROFS, "Read-only file system", str(tmp_path / "runs" / "a.json")))
    assert "read-only" in ro and "--runs-dir" in ro


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write a read-only folder")
def test_an_unwritable_runs_folder_is_refused_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(WBCError, match="not writable"):
            check_runs_folder(ro / "smoke", 3)
    finally:
        ro.chmod(0o700)


def test_a_runs_folder_that_cannot_exist_is_refused_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(WBCError, match=r"afile.*check that the folder exists"):
        check_runs_folder(tmp_path / "afile" / "smoke", 3)


def test_a_small_disk_is_warned_about_before_the_study(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    warning = check_runs_folder(tmp_path / "smoke", 4)
    assert warning and "1 MB free" in warning and "4 run(s)" in warning
    assert check_runs_folder(tmp_path / "smoke", 0) is None


def _study_env(tmp_path, runs):
    return {**os.environ, "WBC_RUNS_DIR": str(runs), "WBC_CACHE_DIR": str(tmp_path / "cache"),
            "WBC_OUTPUT_DIR": str(tmp_path)}


STUDY_ARGS = ["--profile", "smoke", "--losses", "mse,huber", "--encodings", "integer,onehot", "--seeds", "0",
              "--epochs", "1", "--image-size", "16x20", "--train-subset", "0", "--jobs", "1"]


@pytest.mark.slow
def test_two_studies_on_one_runs_folder_train_each_run_once(train_dataset, tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "wbc_utils", "study", *STUDY_ARGS, "--data-dir", str(train_dataset), "--reuse"]
    env = _study_env(tmp_path, runs)
    subprocess.run([sys.executable, "-m", "wbc_utils", "data", "--data-dir", str(train_dataset),
                    "--image-size", "16x20"], cwd=ROOT, env=env, capture_output=True, check=True)  # warm cache
    a = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    b = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_a, _ = a.communicate(timeout=budget(900))
    out_b, _ = b.communicate(timeout=budget(900))
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    trained = re.findall(r"\] (\S+): (?:train|resume)\b", out_a) + re.findall(r"\] (\S+): (?:train|resume)\b", out_b)
    names = sorted(d.name for d in (runs / "smoke").iterdir() if d.is_dir())
    assert len(names) == 4  # 2 losses x 2 encodings (the smoke control is cross-entropy, not asked for)
    assert sorted(trained) == names, f"each run trained exactly once:\nA:\n{out_a}\nB:\n{out_b}"
    assert "held by" in out_a + out_b  # the later study said which runs it left to the other
    s = pd.read_csv(runs / "smoke" / "summary.csv")
    assert (s["status"] == "finished").all(), s[["run_name", "status"]]
    assert not list((runs / "smoke").glob("*/lock.json"))  # every lock released


@pytest.mark.slow
def test_a_full_disk_ends_with_a_clear_message_and_no_finished_looking_run(train_dataset, tmp_path, monkeypatch,
                                                                          capsys):
    """The runs folder's disk fills up while the study writes: a kernel cannot be run out of space portably,
    so the fault is injected where the study writes (the run's own writes go through the same atomic helpers)."""
    from wbc_utils import study
    from wbc_utils.cli import main

    monkeypatch.setenv("WBC_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WBC_CACHE_DIR", str(tmp_path / "cache"))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs" / "smoke" / "x.tmp"))

    def failing_run(params, run_dir, *a, **k):  # the kernel's own ENOSPC, as papermill reports it
        Run(run_dir).write_params(params.to_dict())
        raise RuntimeError("OSError: [Errno 28] No space left on device: 'history.csv'")

    monkeypatch.setattr(study, "execute_run", failing_run)
    monkeypatch.setattr(study, "write_csv", full)
    status = main(["study", *STUDY_ARGS[:-2], "--losses", "mse", "--encodings", "integer",
                   "--data-dir", str(train_dataset)])
    err = capsys.readouterr()
    assert status == 1
    assert "Traceback" not in err.err + err.out
    assert "no space left on the device of" in err.err and "--runs-dir" in err.err
    assert "During handling" not in err.err
    assert not list((tmp_path / "runs" / "smoke").glob("*/metrics.json"))  # nothing passes for finished


def test_an_empty_lock_file_goes_stale_with_its_age(tmp_path):
    path = tmp_path / "lock.json"
    path.write_text("")  # a process killed between creating the lock and writing it
    with pytest.raises(RunLockedError):
        FolderLock(path, stale_after=60).acquire()  # fresh: maybe being written right now
    old = time.time() - 3600
    os.utime(path, (old, old))
    with FolderLock(path, stale_after=60) as lock:
        assert lock.taken_over["owner"] == "?"


def test_breaking_a_stale_lock_never_moves_a_fresh_one(tmp_path, monkeypatch):
    """Two processes find the same stale lock; the first breaks it and takes the run; the second, renaming what
    it believes is the stale file, finds the first one's fresh lock instead: it puts it back and stays out."""
    from wbc_utils import locks

    path = tmp_path / "lock.json"
    _write_lock(path, "elsewhere:1", time.time() - 3600)
    stale = json.loads(path.read_text())
    real_rename = os.rename

    def first_wins(src, dst):  # just before our rename, the other process replaces the stale lock with its own
        _write_lock(path, "other:2", time.time())
        monkeypatch.setattr(locks.os, "rename", real_rename)
        real_rename(src, dst)

    monkeypatch.setattr(locks, "read_owner", lambda p, _r=locks.read_owner: stale if p == path else _r(p))
    monkeypatch.setattr(locks.os, "rename", first_wins)
    with pytest.raises(RunLockedError, match="other:2"):
        FolderLock(path, owner="me:3", stale_after=60).acquire()
    monkeypatch.undo()
    assert json.loads(path.read_text())["owner"] == "other:2"
    assert not list(tmp_path.glob("lock.json.stale-*"))
