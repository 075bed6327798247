"""The report's building blocks and the README's generated findings block."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from wbc_utils.config import SHIPPED_RESULTS  # noqa: E402
from wbc_utils.report import BLOCK_END, BLOCK_START, readme_block, update_readme  # noqa: E402
from wbc_utils.sections import Doc, _inline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _committed_results(tmp_path) -> Path:
    """The results.json shipped with the reference report (report/shipped/, which `make report` never writes)."""
    return SHIPPED_RESULTS


def test_readme_findings_match_the_shipped_report(tmp_path):
    """The README quotes the shipped report's numbers, generated from its results.json, never typed by hand."""
    assert SHIPPED_RESULTS.exists(), "report/shipped/quick/results.json is shipped with the report"
    assert update_readme(_committed_results(tmp_path), ROOT / "README.md", check=True), \
        "README's findings block is out of date: run `make readme` (and commit report/shipped/quick/results.json " \
        "with it)"


def _results():
    return {"profile": "quick", "counts": {"unseen_cells": 62},
            "settings": {"image_size": [60, 80], "epochs": 6, "seeds": [0, 1, 2, 3, 4]},
            "recipes": [{"loss": "mse", "encoding": "onehot", "same_runs_as": "", "seeds": 5, "finished": 5,
                         "collapsed": 1, "unseen": 0.395, "unseen_lo": 0.274, "unseen_hi": 0.532, "test": 0.388,
                         "test_lo": 0.267, "test_hi": 0.529, "paper_metric_test_mean": 0.388}],
            "comparisons": [{"encoding": "onehot", "comparison": "CE - MSE", "diff": -0.004, "lo": -0.164,
                             "hi": 0.155, "resolved": False, "words": "not resolved (5 seeds each)"}]}


def test_readme_block_is_written_from_the_numbers(tmp_path):
    block = readme_block(_results())
    assert block.startswith(BLOCK_START) and block.endswith(BLOCK_END)
    assert "| MSE | one-hot | - | 38.8% | 39.5% [27.4, 53.2] | 38.8% [26.7, 52.9] | 1/5 |" in block
    assert "CE - MSE: -0.4 points [-16.4, +15.5], not resolved (5 seeds each)" in block
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BLOCK_START} -->\nold\n{BLOCK_END}\noutro\n")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()))
    assert not update_readme(results, readme, check=True)
    assert not update_readme(results, readme)  # rewrites
    assert update_readme(results, readme, check=True)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text
    changed = _results()
    changed["recipes"][0]["unseen"] = 0.5
    results.write_text(json.dumps(changed))
    assert not update_readme(results, readme, check=True)


def test_readme_without_markers_is_a_clear_error(tmp_path):
    from wbc_utils.errors import WBCError

    readme = tmp_path / "README.md"
    readme.write_text("no block here\n")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()))
    with pytest.raises(WBCError, match="findings block"):
        update_readme(results, readme)


def test_doc_numbers_figures_and_tables_and_keeps_each_heading_with_what_follows():
    import matplotlib.pyplot as plt
    import pandas as pd

    doc = Doc()
    doc.section("a")
    doc.h(2, "A section")
    assert doc.table(pd.DataFrame({"x": ["-", "1.0% [0.5, 2.0]"]}), "first") == 1
    fig, _ = plt.subplots()
    assert doc.figure(fig, "a picture") == 1
    doc.h(3, "Heading at the end")
    out = doc.html("a")
    assert ('<div class="keep"><h2>A section</h2><div class="keep"><div class="caption"><p><strong>Table 1.</strong>'
            in out)
    assert "<strong>Figure 1.</strong> a picture" in out and "data:image/png;base64," in out
    assert "<td>-</td>" in out and "<li>" not in out  # a dash is not a list
    assert "<td class=num>1.0% [0.5, 2.0]</td>" in out
    assert out.endswith("<h3>Heading at the end</h3></div>")


def test_table_cells_keep_bold_and_code():
    assert _inline("**Reproduced** by `x`") == "<strong>Reproduced</strong> by <code>x</code>"
