"""A loss of one's own, added without editing the package: focal loss (gamma 2), registered by this file alone.

This module is also the plugin. ``WBC_LOSS_PLUGINS=<path of this file>`` makes every process of a study import it
and register its ``LOSS_SPECS`` (:mod:`wbc_utils.registry`): the command line, each training kernel papermill
starts, the report's kernel. The end-to-end test runs the smoke profile (which trains every registered loss) with
it, as ``make report PROFILE=smoke`` does, and checks that focal loss is in the summary, the figures' legends, the
paired comparisons and the report. The package itself never names it.

Only NumPy, pytest and the registry are imported at the top: a kernel imports this file too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wbc_utils import registry
from wbc_utils.errors import ParameterError
from wbc_utils.registry import INTEGER, ONEHOT, LossSpec, numpy_log_softmax

GAMMA = 2.0
HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]


def focal_numpy(y, scores, encoding, label_smoothing=0.0):
    """Focal loss (Lin et al., 2017): cross-entropy weighted by (1 - p_true)^gamma. It reads the integer label as
    a class, so it is the same function under both encodings."""
    logp = numpy_log_softmax(scores)
    log_pt = logp[np.arange(len(logp)), np.asarray(y).reshape(-1).astype(int)]
    return -((1.0 - np.exp(log_pt)) ** GAMMA) * log_pt


def focal_keras(y, scores, encoding, label_smoothing=0.0):
    from keras import ops

    logp = ops.log_softmax(scores, axis=-1)
    log_pt = ops.sum(logp * ops.one_hot(y, 4), axis=-1)
    return -ops.power(1.0 - ops.exp(log_pt), GAMMA) * log_pt


FOCAL = LossSpec(name="focal", title="Focal loss (gamma 2)", short="Focal", words="focal loss", colour="#e7298a",
                 numpy_loss=focal_numpy, keras_loss=focal_keras, encodings_coincide=True)
#: What the registry registers when WBC_LOSS_PLUGINS names this file.
LOSS_SPECS = [FOCAL]


@pytest.fixture
def plugin(monkeypatch):
    """Focal loss registered the way a study's processes register it: through WBC_LOSS_PLUGINS."""
    monkeypatch.setenv("WBC_LOSS_PLUGINS", str(HERE))
    registry.reset()
    yield registry.get("focal")
    registry.reset()  # monkeypatch then restores the variable: the next question loads only what it names


def test_the_plugin_variable_registers_it_after_the_2020_losses(plugin):
    assert registry.names() == ("crossentropy", "mse", "huber", "focal")
    assert plugin.title == FOCAL.title and not plugin.is_2020 and plugin.encodings_coincide
    with pytest.raises(ParameterError, match="loss='hinge' is not valid; valid values: crossentropy, mse, huber, "
                                             "focal"):
        registry.get("hinge")


def test_its_keras_loss_and_numpy_twin_agree(plugin):
    from test_losses import assert_twins_agree

    assert_twins_agree(plugin)


def test_its_constant_prediction_and_collapse_verdict_are_its_own(plugin):
    """The collapse verdict's best constant prediction is found from the loss itself, not from another's: on
    balanced classes the uniform output, (3/4)^2 ln 4."""
    from wbc_utils.evaluation import constant_loss

    assert constant_loss("focal", INTEGER, [10, 10, 10, 10]) == pytest.approx(0.5625 * np.log(4), abs=1e-6)
    assert constant_loss("focal", INTEGER, [30, 10, 10, 10]) < 0.5625 * np.log(4)


def test_profiles_name_their_losses_and_the_smoke_profile_takes_every_one(plugin):
    from wbc_utils.params import get_profile

    smoke = get_profile("smoke")
    main = [(r.loss, r.target_encoding) for r in smoke.runs() if smoke.is_main(r.to_dict())]
    assert ("focal", INTEGER) in main and ("focal", ONEHOT) not in main  # its encodings coincide: trained once
    for name in ("quick", "paper", "collapse", "best", "pilot"):
        assert all(r.loss != "focal" for r in get_profile(name).runs()), name
    assert registry.pairs(["focal", "mse", "crossentropy"]) == [("crossentropy", "mse"), ("crossentropy", "focal"),
                                                                ("mse", "focal")]


def test_a_study_records_it_and_a_process_without_it_says_what_to_do(plugin, monkeypatch):
    """study.json records the losses by name; a process that has not registered the loss (the plugin variable
    unset) refuses its runs and names the variable."""
    from wbc_utils.params import RunParams, get_profile
    from wbc_utils.study import _profile_dict

    assert _profile_dict(get_profile("smoke"))["losses"] == ["crossentropy", "mse", "huber", "focal"]
    monkeypatch.delenv("WBC_LOSS_PLUGINS")
    registry.reset()
    with pytest.raises(ParameterError, match="loss='focal' is not valid.*WBC_LOSS_PLUGINS"):
        RunParams(loss="focal")


# ----------------------------------------------------------------------------- end to end


def _real_data_dir():
    from conftest import real_data_dir  # tests/ is on sys.path under pytest only; a kernel never calls this

    return real_data_dir()


@pytest.fixture(scope="module")
def smoke_with_focal(tmp_path_factory):
    if _real_data_dir() is None:
        pytest.skip("the dataset is not available (set WBC_DATA_DIR)")
    out = tmp_path_factory.mktemp("focal")
    env = {**os.environ, "WBC_DATA_DIR": str(_real_data_dir()), "WBC_RUNS_DIR": str(out / "runs"),
           "WBC_OUTPUT_DIR": str(out), "WBC_LOSS_PLUGINS": str(HERE)}
    # what `make report PROFILE=smoke` runs (without the PDF, which shows nothing the HTML does not)
    res = subprocess.run([sys.executable, "-m", "wbc_utils", "all", "--profile", "smoke", "--reuse", "--no-pdf"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return out


@pytest.mark.e2e
@pytest.mark.slow
def test_smoke_report_shows_a_registered_loss_everywhere(smoke_with_focal, plugin):
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from wbc_utils.figures.study import comparison_figure, confusion_figure
    from wbc_utils.runs import load_study

    out = smoke_with_focal
    # the summary: focal loss trained once (its encodings coincide), a main run, finished
    summary = pd.read_csv(out / "runs" / "smoke" / "summary.csv")
    focal = summary[summary["loss"] == "focal"]
    assert list(zip(focal["target_encoding"], focal["role"], focal["status"])) == [(INTEGER, "main", "finished")]
    assert (summary["status"] == "finished").all() and len(summary) == 7  # 6 main runs + the 2020-rate control
    # the figures: its own curves figure, and its legend entry and panel in the study's figures
    assert (out / "figures" / "smoke" / "curves_focal.png").stat().st_size > 1000
    study = load_study("smoke", out / "runs")
    fig = comparison_figure(study.main, study.histories)
    legends = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "Focal loss (gamma 2), 1 seeds" in legends and "Focal loss (gamma 2), 1 seeds (same runs)" in legends
    fig = confusion_figure(study.metrics, study.main)
    assert any(ax.get_title().startswith("Focal loss (gamma 2), integer labels") for ax in fig.axes)
    # the paired comparisons, under both encodings (its integer-label runs stand for one-hot)
    results = json.loads((out / "report" / "smoke" / "results.json").read_text())
    compared = {(c["encoding"], c["comparison"]) for c in results["comparisons"]}
    assert {(e, f"{a} - Focal") for e in (INTEGER, ONEHOT) for a in ("CE", "MSE", "Huber")} <= compared
    assert any(r["loss"] == "focal" for r in results["recipes"])
    # the report: methods, the accuracy table, the curves figure, the comparisons, the abstract
    html = (out / "report" / "smoke" / "report.html").read_text()
    for text in ("focal loss (not in the 2020 study)", "Focal loss (gamma 2), integer labels, per epoch",
                 "<td>Focal</td>", "CE - Focal", "MSE - Focal", "Huber - Focal", "CE - Focal is"):
        assert text in html, text
    assert "Traceback" not in html
