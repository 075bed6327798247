"""Notebooks are stored clean: no outputs, no execution counts (so diffs show code)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "report" / "report.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} is stored with outputs: clear them (README: Development)"
            assert cell.get("execution_count") is None, f"{path.name} is stored with execution counts"


def test_notebooks_are_numbered():
    names = [p.name for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    assert names == ["01_data.ipynb", "02_model.ipynb", "03_training.ipynb", "04_analysis.ipynb",
                     "05_inside_the_network.ipynb"]
