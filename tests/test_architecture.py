"""The package's shape: no import loops, one owner per file name (notebooks included), one definition of the run
parameters."""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "wbc_utils"

spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)

#: The run folder's and study folder's file names: each is spelled in wbc_utils/runs.py only.
RUN_FILES = ("params.json", "metrics.json", "model.keras", "history.csv", "predictions.csv", "val_predictions.csv",
             "diagnostics.json", "train.ipynb", "train.log", "summary.csv", "study.json", "original-2020.json",
             "model.json", "state.json", "study.log", "lock.json", "ood.json", "lab_trials.json", "lab.sqlite3",
             "shift_grid.json", "lab.lock")


def test_import_graph_has_no_cycles():
    g = import_graph.graph()
    assert "wbc_utils.runs" in g and "wbc_utils.figures.study" in g  # the graph is read from the real package
    assert import_graph.cycles(g) == []


def test_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "wbc_utils"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from .a import y\n")  # a loop held by an import inside a function
    assert import_graph.cycles(import_graph.graph(pkg)) == [["wbc_utils.a", "wbc_utils.b"]]


def _code_cells(notebook: Path) -> str:
    """A notebook's code, its code cells joined (its prose may name the files it teaches about)."""
    cells = json.loads(notebook.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_each_run_folder_file_name_is_spelled_in_one_module():
    """The package's modules and the notebooks' code cells (the five teaching notebooks and the report's source)
    read and write run folders through wbc_utils.runs (``Run(path).history()``, ``read_predictions``, ...)."""
    sources = {path.relative_to(ROOT).as_posix(): path.read_text() for path in PKG.rglob("*.py")}
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "report" / "report.ipynb"]
    assert len(notebooks) == 6
    sources |= {path.relative_to(ROOT).as_posix(): _code_cells(path) for path in notebooks}
    owners: dict[str, set[str]] = {n: set() for n in RUN_FILES}
    for where, text in sources.items():
        for n in RUN_FILES:
            if re.search(rf"[\"']{re.escape(n)}[\"']", text):
                owners[n].add(where)
    spread = {n: sorted(o) for n, o in owners.items() if o != {"wbc_utils/runs.py"}}
    assert not spread, f"run-folder file names spelled outside wbc_utils/runs.py: {spread}"


def _imports_tensorflow_at_top(module: Path) -> bool:
    tree = ast.parse(module.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("tensorflow", "keras") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("tensorflow", "keras"):
            return True
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                getattr(node.value.func, "id", "") in ("_keras", "import_tf"):
            return True
    return False


def test_package_imports_sit_at_the_top_except_those_that_bring_tensorflow():
    """An import of a package module inside a function is allowed only where that module imports TensorFlow
    when loaded (so the caller stays light); anything else belongs at the top of the file."""
    heavy = {p.stem for p in PKG.glob("*.py") if _imports_tensorflow_at_top(p)}
    assert heavy == {"losses"}, heavy
    late = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level and (node.module or "").split(".")[-1] not in heavy:
                    late.append(f"{path.relative_to(ROOT)}:{node.lineno} from {'.' * node.level}{node.module}")
    assert not late, "package imports inside functions:\n" + "\n".join(late)


def test_train_command_offers_every_run_parameter():
    from wbc_utils.params import RunParams

    out = subprocess.run([sys.executable, "-m", "wbc_utils", "train", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    missing = [f.name for f in dataclasses.fields(RunParams) if f"--{f.name.replace('_', '-')}" not in out]
    assert not missing, f"train --help lacks {missing}"
    assert all(f.metadata.get("help") for f in dataclasses.fields(RunParams)), "every run parameter says what it does"


def test_train_options_become_run_params():
    from wbc_utils.cli import build_parser
    from wbc_utils.params import RunParams

    args = build_parser().parse_args(["train", "--view", "cell", "--augment", "geometric", "--tta", "true",
                                      "--image-size", "64x64", "--label-smoothing", "0.1", "--width", "8"])
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunParams) if getattr(args, f.name) is not None}
    p = RunParams(**given)
    assert (p.view, p.augment, p.tta, p.image_size, p.label_smoothing, p.width) == \
        ("cell", "geometric", True, [64, 64], 0.1, 8)
    assert p.epochs == RunParams().epochs  # what is not given keeps RunParams' default


def test_training_notebook_parameters_are_the_run_parameters():
    """Notebook 03's papermill parameters cell names every RunParams field (and only those, plus where to write
    and read), so a study can pass any run's parameters to it."""
    import nbformat

    from wbc_utils.params import RunParams

    nb = nbformat.read(ROOT / "notebooks" / "03_training.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = {t.id for node in ast.parse(cell.source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    fields = {f.name for f in dataclasses.fields(RunParams)}
    assert names - {"output_dir", "data_dir", "reuse", "force"} == fields
