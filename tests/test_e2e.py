"""End to end: the smoke profile through papermill and nbconvert, on the real dataset.

Checks every artifact a user is promised: per-run folders, summary.csv, figures
(PNG and SVG), the self-contained HTML report and a PDF with pages. Then runs the
other notebooks in fresh kernels against the same study.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import budget, real_data_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(real_data_dir() is None, reason="the dataset is not available (set WBC_DATA_DIR)")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "WBC_DATA_DIR": str(real_data_dir()), "WBC_RUNS_DIR": str(out / "runs"),
           "WBC_OUTPUT_DIR": str(out)}
    res = subprocess.run([sys.executable, "-m", "wbc_utils", "all", "--profile", "smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=budget(900))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, env, res


def test_every_run_has_its_artifacts(smoke):
    out, _, _ = smoke
    summary = pd.read_csv(out / "runs" / "smoke" / "summary.csv")
    from wbc_utils.params import get_profile

    assert len(summary) == len(get_profile("smoke").runs())
    assert (summary["status"] == "finished").all()
    main = summary[summary["role"] == "main"]
    # cross-entropy's two encodings are one function: run once, with integer labels
    assert sorted(set(zip(main["loss"], main["target_encoding"]))) == sorted(
        (l, e) for l in ("crossentropy", "mse", "huber") for e in ("integer", "onehot")
        if (l, e) != ("crossentropy", "onehot"))
    for run in summary["run_dir"]:
        run = Path(run)
        for name in ("params.json", "history.csv", "metrics.json", "train.ipynb", "model.keras", "predictions.csv"):
            assert (run / name).exists(), f"{run.name}/{name}"
        h = pd.read_csv(run / "history.csv")
        assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"} <= set(h.columns)
        m = json.loads((run / "metrics.json").read_text())
        for k in ("loss", "target_encoding", "seed", "epochs", "image_size", "test_accuracy", "per_class",
                  "train_seconds", "images_per_second", "collapsed", "test_accuracy_ci", "unseen_accuracy",
                  "unseen_accuracy_ci", "unseen_cell_accuracy", "test_simple_accuracy", "output_spread"):
            assert k in m, f"{run.name}: {k}"
        assert m["test_cells"] == 68 and m["unseen_cells"] == 62 and m["shared_images"] == 202
        p = pd.read_csv(run / "predictions.csv")
        assert {"slide", "cell", "shared"} <= set(p.columns)
        nb = json.loads((run / "train.ipynb").read_text())
        assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    orig = json.loads((out / "runs" / "smoke" / "original-2020.json").read_text())
    assert orig["split"] == "TEST_SIMPLE"


def test_figures_in_png_and_svg(smoke):
    out, _, _ = smoke
    figs = out / "figures" / "smoke"
    for name in ("figure1_crossentropy", "figure2_mse", "figure3_huber", "validation_comparison",
                 "confusion_matrices", "collapse"):
        for ext in ("png", "svg"):
            assert (figs / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"


def test_report_html_is_self_contained_and_pdf_has_pages(smoke):
    out, _, _ = smoke
    html = (out / "report" / "report.html").read_text()
    assert "Loss functions for white-blood-cell classification" in html
    assert "<title>Loss functions for white-blood-cell classification" in html
    for section in ("Abstract", "1. Introduction and the questions", "2. Data", "3. Methods", "4. Results",
                    "4.1 The 2020 claims against the evidence", "5. Discussion", "6. Limitations", "References",
                    "Appendix A: every run", "Table 1.", "Figure 1."):
        assert section in html, section
    assert "What changed since" not in html  # the changelog lives in CHANGES.md
    assert 'src="http' not in html and "<script src=" not in html, "the HTML fetches something from a network"
    assert "data:image/png;base64" in html
    assert "Traceback" not in html and "import " not in html  # code hidden, no errors
    from pypdf import PdfReader

    pdf = out / "report" / "report.pdf"
    assert pdf.exists(), "PDF missing: is Chromium installed? (make setup installs it)"
    import unicodedata

    reader = PdfReader(pdf)
    pages = reader.pages
    assert len(pages) >= 3
    assert reader.metadata.title.startswith("Loss functions for white-blood-cell classification")
    first = unicodedata.normalize("NFKC", pages[0].extract_text())  # Chromium sets "fi" as a ligature
    assert "(profile smoke" in " ".join(first.split()) and "Software" in first
    results = json.loads((out / "report" / "smoke" / "results.json").read_text())
    assert results["counts"]["unseen_cells"] == 62 and results["recipes"]


def test_rerun_reuses_or_refuses(smoke):
    out, env, _ = smoke
    cmd = [sys.executable, "-m", "wbc_utils", "study", "--profile", "smoke"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget(300))
    assert res.returncode == 2 and "--reuse" in res.stderr
    res = subprocess.run(cmd + ["--reuse", "--losses", "mse", "--encodings", "integer"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=budget(300))
    assert res.returncode == 0 and ": reuse" in res.stdout


@pytest.mark.parametrize("notebook", ["01_data.ipynb", "02_model.ipynb", "04_analysis.ipynb"])
def test_notebooks_run_top_to_bottom(smoke, notebook, tmp_path):
    import papermill as pm

    out, env, _ = smoke
    old = dict(os.environ)
    os.environ.update(env)
    try:
        params = {"profile": "smoke"} if notebook.startswith("04") else {}
        pm.execute_notebook(str(ROOT / "notebooks" / notebook), str(tmp_path / notebook), parameters=params,
                            cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.fixture(scope="module")
def best(smoke):
    """The best profile at toy size (1 epoch, 128 images) in the same folders as the smoke study."""
    out, env, _ = smoke
    res = subprocess.run([sys.executable, "-m", "wbc_utils", "all", "--profile", "best", "--epochs", "1",
                          "--train-subset", "128", "--seeds", "0", "--lab-trials", "2", "--grid-per-cell", "1",
                          "--competence-folds", "1",
                          "--no-pdf"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=budget(900))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, env


def test_best_profile_lab_then_final_report_and_figures(best):
    out, env = best
    summary = pd.read_csv(out / "runs" / "best" / "summary.csv")
    lab = summary[summary["validation"] == "grouped"]
    assert len(lab) >= 3 and (summary["status"] == "finished").all()
    m = json.loads((Path(lab.iloc[0]["run_dir"]) / "metrics.json").read_text())
    for k in ("val_accuracy", "val_accuracy_ci", "val_cell_accuracy", "val_accuracy_tta", "val_cells"):
        assert k in m, k
    for name in ("lab_curves", "confusion_image_and_cell", "reliability", "risk_coverage", "wrong_cells"):
        assert (out / "figures" / "best" / f"{name}.png").stat().st_size > 1000, name
    html = (out / "report" / "best" / "report.html").read_text()
    # section numbers are generated: with no loss study beside it, the lab's section follows Data
    for section in (r"\d\. Beyond the paper", r"\d\.1 Lab notebook", r"\d\.2 The final model on TEST",
                    r"\d\.3 Smears stained and scanned elsewhere", r"\d\.5 Calibration"):
        assert re.search(section, html), section
    # the search's record and the shift grid, both written by `all` and shown in the report
    trials = json.loads((out / "runs" / "best" / "lab_trials.json").read_text())
    assert len([t for t in trials["trials"] if t["params"]]) == 2 and trials["wall_minutes"] > 0
    grid = json.loads((out / "runs" / "best" / "shift_grid.json").read_text())
    assert len(grid["rows"]) == len(grid["grid"]) >= 10 and grid["flag"]["false_alarms_clean"] is not None
    from wbc_utils.shifts import LADDER
    assert grid["competence"]["folds"] == 1 and len(grid["competence"]["drops"]) == len(LADDER)
    assert all(r["competence_flagged"] is not None for r in grid["rows"])
    assert "JPEG q20" in html and "Every trial of the lab's search" in html and "minus the first" in html
    assert "Traceback" not in html
    # the smoke report, re-made now that a best study exists, shows both
    res = subprocess.run([sys.executable, "-m", "wbc_utils", "report", "--profile", "smoke", "--no-pdf"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=budget(600))
    assert res.returncode == 0, res.stderr[-3000:]
    html = (out / "report" / "smoke" / "report.html").read_text()
    assert "4. Results" in html and "7.2 The final model on TEST" in html


def test_predict_and_inside_notebook_run(best, tmp_path):
    import papermill as pm

    out, env = best
    final = pd.read_csv(out / "runs" / "best" / "summary.csv").query("validation == 'none'").iloc[0]["run_dir"]
    res = subprocess.run([sys.executable, "-m", "wbc_utils", "predict", final,
                          str(real_data_dir() / "images" / "TEST_SIMPLE" / "MONOCYTE"), "--csv"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=budget(300))
    assert res.returncode == 0, res.stderr[-2000:]
    table = pd.read_csv(__import__("io").StringIO(res.stdout))
    assert len(table) == 4 and table["predicted"].notna().all()
    # a final model the shift grid scored carries its competence region: predict judges every image with it
    assert table["unreliable"].notna().all() and {"ood", "unreliable_reason"} <= set(table.columns)
    old = dict(os.environ)
    os.environ.update(env)
    try:
        pm.execute_notebook(str(ROOT / "notebooks" / "05_inside_the_network.ipynb"), str(tmp_path / "05.ipynb"),
                            parameters={"model": final, "compare_profile": "smoke"}, cwd=str(ROOT / "notebooks"),
                            progress_bar=False, kernel_name="python3")
    finally:
        os.environ.clear()
        os.environ.update(old)
