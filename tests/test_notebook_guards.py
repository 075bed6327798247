"""The notebooks as a student meets them, checked without a browser (tests/test_browser.py runs them in one).

* Every code cell that uses what an earlier cell made starts with ``need(globals(), ..., cell="...")`` imported
  in that same cell, so running it first says which cell to run instead of a bare NameError; the cell it names
  is a heading of the notebook, and the section under it defines what is missing.
* Solutions are tagged, their code and their outputs collapsed; every notebook names the project's kernel.
* The explorer's filters.
"""
from __future__ import annotations

import ast
import builtins
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BUILTINS = set(dir(builtins)) | {"display", "get_ipython", "__name__"}


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _tags(cell: dict) -> list:
    return cell.get("metadata", {}).get("tags", [])


def _labels(markdown: str) -> list[str]:
    """The headings of a markdown cell as `need` names them: "## 2. The model: the encoder" -> "The model"."""
    out = []
    for line in markdown.splitlines():
        if line.startswith("#"):
            text = re.sub(r"^\d+\.\s*", "", line.lstrip("#").strip())
            out.append(text.split(":")[0].strip())
    return out


def _bound(tree) -> set:
    """Names a cell binds at top level (assignments, imports, loops, with, def, class)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):  # lambda and function arguments
            names.add(node.arg)
    return names


def _used(tree) -> set:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _need_calls(tree) -> list[tuple[list, str]]:
    calls = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                getattr(node.value.func, "id", None) == "need":
            names = [a.value for a in node.value.args[1:]]
            cell = next(k.value.value for k in node.value.keywords if k.arg == "cell")
            calls.append((names, cell))
    return calls


def _analyse(path: Path) -> list[dict]:
    """One entry per code cell: its index, source, section label, names bound, used and guarded."""
    out, label = [], None
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "markdown":
            label = (_labels(_source(cell)) or [label])[-1]
            continue
        tree = ast.parse(_source(cell))
        out.append({"index": i, "source": _source(cell), "section": label, "tree": tree, "bound": _bound(tree),
                    "used": _used(tree), "needs": _need_calls(tree), "parameters": "parameters" in _tags(cell)})
    return out


def _guarded(path: Path) -> list[dict]:
    return [c for c in _analyse(path) if c["needs"]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_guards_what_earlier_cells_made(path):
    cells = _analyse(path)
    made: dict[str, dict] = {}  # name -> the first cell that binds it
    problems = []
    for c in cells:
        param_names = {n for n, d in made.items() if d["parameters"]}
        needed = {n for names, _ in c["needs"] for n in names}
        deps = {n for n in c["used"] - c["bound"] - BUILTINS if n in made}
        if needed - param_names:  # a guard on something computed after the parameters covers them too
            deps -= param_names
        if deps - needed:
            problems.append(f"cell {c['index']} uses {sorted(deps - needed)} from earlier cells without "
                            f"need(globals(), ...) naming them:\n{c['source'][:200]}")
        # the guards come first, after the cell's own imports
        body = c["tree"].body
        is_need = [isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                   and getattr(node.value.func, "id", None) == "need" for node in body]
        last = max((k for k, yes in enumerate(is_need) if yes), default=0)
        for node, yes in zip(body[:last], is_need[:last]):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) and not yes:
                problems.append(f"cell {c['index']}: need(...) must come before any work")
                break
        if needed and "need" not in c["bound"]:
            problems.append(f"cell {c['index']} calls need without importing it in the same cell")
        for name in c["bound"]:
            made.setdefault(name, c)
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_cell_a_guard_names_exists_and_defines_what_is_missing(path):
    cells = _analyse(path)
    labels = [lab for cell in _cells(path) if cell["cell_type"] == "markdown" for lab in _labels(_source(cell))]
    for c in cells:
        for names, label in c["needs"]:
            assert label in labels, f"{path.name} cell {c['index']}: need(cell={label!r}) names no heading"
            section = [d for d in cells if d["section"] == label and d["index"] < c["index"]]
            assert any(set(names) & d["bound"] for d in section), \
                f"{path.name} cell {c['index']}: the section {label!r} defines none of {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_guarded_cells_run_out_of_order_say_which_cell_to_run_first(path):
    from wbc_utils.notebook import CellOrderError

    guarded = _guarded(path)
    assert guarded, f"{path.name} has no guarded cell"
    for c in guarded:
        first_label = c["needs"][0][1]
        with pytest.raises(CellOrderError, match=re.escape(f"run the cell '{first_label}' first")):
            exec(compile(c["source"], f"{path.name}[{c['index']}]", "exec"), {})  # a fresh kernel's namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_solutions_hide_their_code_and_their_answers(path):
    cells = _cells(path)
    exercises = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Exercises" in _source(c)]
    assert exercises, f"{path.name} has no exercises"
    solutions = [c for c in cells if "solution" in _tags(c)]
    assert solutions, f"{path.name} has no solution cells"
    for c in cells:
        if c["cell_type"] == "code" and _source(c).lstrip().startswith("# Solution"):
            assert "solution" in _tags(c), f"{path.name}: an untagged solution: {_source(c)[:60]}"
    for c in solutions:
        hidden = c["metadata"].get("jupyter", {})
        assert hidden.get("source_hidden") is True and hidden.get("outputs_hidden") is True, \
            f"{path.name}: solution not collapsed (code and outputs): {_source(c)[:60]}"


def test_notebooks_name_the_kernel_that_make_setup_registers():
    makefile = (ROOT / "Makefile").read_text()
    setup = makefile.split("\nsetup:", 1)[1].split("\n\n", 1)[0]
    assert "ipykernel install" in setup and "--name wbc" in setup, "make setup must register the kernel 'wbc'"
    assert re.search(r"^lab:", makefile, re.M) and "lab" in re.search(r"^\.PHONY:.*$", makefile, re.M).group(0)
    for path in NOTEBOOKS:
        spec = json.loads(path.read_text())["metadata"]["kernelspec"]
        assert spec["name"] == "wbc" and spec["display_name"] == "Python (wbc)", path.name


def test_explorer_filters_by_class_and_outcome():
    import pandas as pd

    from wbc_utils.explorer import matching

    p = pd.DataFrame({"class": ["EOSINOPHIL", "EOSINOPHIL", "MONOCYTE", "NEUTROPHIL"], "label": [0, 0, 2, 3],
                      "pred": [0, 3, 2, 0]})
    assert matching(p).tolist() == [0, 1, 2, 3]
    assert matching(p, "EOSINOPHIL").tolist() == [0, 1]
    assert matching(p, "all", "wrong").tolist() == [1, 3]
    assert matching(p, "EOSINOPHIL", "right").tolist() == [0]
    assert matching(p, "LYMPHOCYTE").tolist() == []
    with pytest.raises(ValueError, match="outcome='bad'"):
        matching(p, None, "bad")
    with pytest.raises(ValueError, match="cls='BASOPHIL'"):
        matching(p, "BASOPHIL")
