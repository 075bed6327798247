"""A study fanned out on a Dask cluster: real worker processes, the real scheduler, and a worker killed mid-run."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pandas as pd
import pytest

from wbc_utils.params import get_profile
from wbc_utils.runs import Run
from wbc_utils.study import run_study

pytestmark = pytest.mark.slow


def _kill_a_worker_mid_run(runs_dir, killed: dict, stop: threading.Event, min_epochs: int = 3) -> None:
    """Wait until a run has saved a few epochs, then SIGKILL the worker process that holds its lock."""
    while not stop.is_set():
        for lock in runs_dir.glob("*/lock.json"):
            run = Run(lock.parent)
            if run.status == "finished" or run.completed_epochs() < min_epochs:
                continue
            try:
                owner = json.loads(lock.read_text())["owner"]
            except (OSError, ValueError, KeyError):
                continue
            pid = int(owner.split(":")[1])
            killed.update(run=lock.parent.name, pid=pid, epochs=run.completed_epochs())
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.2)


def test_study_on_a_local_dask_cluster_survives_a_killed_worker(train_dataset, tmp_path, monkeypatch):
    from distributed import LocalCluster

    runs = tmp_path / "runs"
    monkeypatch.setenv("WBC_RUNS_DIR", str(runs))
    monkeypatch.setenv("WBC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WBC_THREADS", "1")
    profile = get_profile("smoke").with_overrides(losses="mse,huber", encodings="integer", seeds="0", epochs=40,
                                                  image_size=[16, 20], train_subset=0)
    killed: dict = {}
    stop = threading.Event()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        killer = threading.Thread(target=_kill_a_worker_mid_run, args=(runs / "smoke", killed, stop), daemon=True)
        killer.start()
        try:
            record = run_study(profile, data_dir=train_dataset, scheduler=cluster.scheduler_address, rescore=False)
        finally:
            stop.set()
    assert killed, "no run was caught mid-training to kill its worker"
    assert record["failed"] == [] and record["scheduler"] == cluster.scheduler_address
    summary = pd.read_csv(runs / "smoke" / "summary.csv").set_index("run_name")
    assert (summary["status"] == "finished").all() and len(summary) == 2
    entry = next(e for e in record["runs"] if e["run_name"] == killed["run"])
    assert entry["action"] == "resume", entry  # the retry resumed from the dead worker's last saved epoch
    assert str(killed["pid"]) in entry["took_over"]  # after taking over the dead worker's lock
    hist = Run(runs / "smoke" / killed["run"]).history()
    assert hist["epoch"].tolist() == list(range(1, 41))  # every epoch once: none lost, none repeated
    assert not list((runs / "smoke").glob("*/lock.json"))
