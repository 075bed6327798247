"""Small helpers that keep the notebooks thin and friendly to students.

Every notebook's first code cell imports what the notebook uses and calls :func:`setup` with the notebook's file
name. ``setup`` registers an IPython handler for ``NameError``: a cell run before the cell that makes what it
needs stops with the heading of that cell ("manifest is not defined yet: run the cell 'The manifest' first ...")
instead of a bare ``NameError``. Which cell makes which name is read from the notebook file itself (the names
each code cell binds at top level, the nearest heading above it), so no cell carries a guard of its own
(``tests/test_notebook_guards.py`` checks every notebook, in an IPython shell and in a real kernel).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from .config import NOTEBOOKS, profile_dir
from .errors import WBCError
from .explorer import explorer as _explorer
from .params import ARCH_2020, RunParams
from .registry import INTEGER
from .runs import load_study

#: What a solution cell prints while its answer is hidden.
HIDDEN_ANSWER = ("(The answer is hidden. Try the exercise first; then set SHOW_SOLUTIONS = True in the cell under "
                 "'Exercises', run that cell, and run this one again. Click the ... above to see the code.)")


class CellOrderError(WBCError, NameError):
    """A notebook cell ran before the cell that defines what it needs."""


def order_message(names: Iterable[str], cell: str) -> str:
    """What a student reads when ``names`` are used before the cell under the heading ``cell`` has run."""
    return (f"{', '.join(names)} is not defined yet: run the cell '{cell}' first (the code cell under that "
            f"heading; Run > Run All Above Selected Cell runs it and everything before it).")


def need(namespace: dict, *names: str, cell: str) -> None:
    """Raise :class:`CellOrderError` if ``names`` are not in ``namespace``: which cell to run first. The
    notebooks need no such call (``setup`` covers every cell); library code that reads a notebook's variables
    (``params_from``) uses it."""
    missing = [n for n in names if n not in namespace]
    if missing:
        raise CellOrderError(order_message(missing, cell))


# ----------------------------------------------------------------------------- which cell makes which name

def heading_label(line: str) -> str:
    """A markdown heading as messages name it: ``"## 2. The model: the encoder"`` -> ``"The model"``."""
    text = re.sub(r"^\d+(\.\d+)*\.?\s+", "", line.lstrip("#").strip())
    return text.split(":")[0].strip()


def markdown_headings(markdown: str) -> list[str]:
    """The headings of a markdown cell (outside fenced code), as :func:`heading_label` names them."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6}\s", line):
            out.append(heading_label(line))
    return out


def _python(source: str) -> str:
    """A cell's source as plain Python (IPython's magics and shell escapes transformed)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return source
    return TransformerManager().transform_cell(source)


#: Nodes whose names stay in a scope of their own: never the notebook's namespace.
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)


def _module_scope(node):
    """``node`` and every node under it that runs in the module's scope (not inside functions, classes,
    lambdas or comprehensions; a ``def`` or ``class`` itself is yielded, as it binds its name)."""
    yield node
    if not isinstance(node, _SCOPES):
        for child in ast.iter_child_nodes(node):
            yield from _module_scope(child)


def bound_names(source: str) -> list[str]:
    """The names a code cell binds in the notebook's namespace: assignments, imports, ``for``, ``with`` and
    ``except`` targets, ``def`` and ``class``, at top level or inside ``if``/``for``/``with``/``try`` blocks."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    names: dict[str, None] = {}
    for node in _module_scope(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name.split(".")[0]): None for a in node.names if a.name != "*"})
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = None
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names[node.id] = None
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names[node.name] = None
    return list(names)


def definitions(notebook: str | os.PathLike) -> dict[str, str]:
    """For each name a code cell of ``notebook`` binds at top level: the heading of the first cell that binds
    it (the nearest markdown heading above that cell)."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    made: dict[str, str] = {}
    heading = ""
    for cell in cells:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown":
            heading = (markdown_headings(source) or [heading])[-1]
        elif cell["cell_type"] == "code":
            for name in bound_names(source):
                made.setdefault(name, heading)
    return made


def find_notebook(notebook: str | os.PathLike) -> Path | None:
    """The notebook file: as given (relative to the kernel's working folder, which Jupyter and papermill set to
    the notebook's), else under the package's ``notebooks/``; None when neither exists."""
    for cand in (Path(notebook), NOTEBOOKS / Path(notebook).name):
        if cand.is_file():
            return cand.resolve()
    return None


def explain_name_error(error: BaseException, notebook: str | os.PathLike | None,
                       namespace: dict | None = None) -> str | None:
    """The message for a ``NameError`` of a name that a cell of ``notebook`` makes (and ``namespace`` lacks):
    which cell to run first. None for any other error (it is shown as it is)."""
    name = getattr(error, "name", None)
    if type(error) is not NameError or not name or notebook is None or name in (namespace or {}):
        return None
    cell = definitions(notebook).get(name)
    return order_message([name], cell) if cell else None


def _in_notebook_code(shell, tb) -> bool:
    """Whether the error was raised by the notebook's own code (a cell, or a comprehension in one), not inside
    a library function that happens to lack a name a cell makes."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals is shell.user_global_ns


def _cell_order_handler(notebook: Path | None):
    def handler(shell, etype, value, tb, tb_offset=None):
        try:  # the notebook is read again at each error, so a student's saved edits count
            message = explain_name_error(value, notebook, shell.user_ns) if _in_notebook_code(shell, tb) else None
        except Exception:  # an unreadable notebook, say: the plain error is better than none
            message = None
        if message is None:
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        else:
            shell.showtraceback((CellOrderError, CellOrderError(message), tb), tb_offset=tb_offset)
        return None  # shown above: IPython does not show what a custom handler returns

    return handler


def setup(notebook: str | os.PathLike) -> None:
    """A notebook's set-up, called once from its first code cell with its file name (``setup("01_data.ipynb")``).

    In IPython (JupyterLab, papermill), it registers a handler for ``NameError``: when a cell uses a name that
    another cell of this notebook makes and that is not defined yet, the error is a :class:`CellOrderError`
    naming the heading above that cell (:func:`order_message`); every other error is shown unchanged, and a
    failing cell fails as before (papermill still stops there). Outside IPython it does nothing. Running it
    again replaces the handler. The set-up cell itself cannot be covered: nothing of the package runs before
    it, which is why it comes first and notebooks/README.md says to run it first."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((NameError,), _cell_order_handler(find_notebook(notebook)))


@contextlib.contextmanager
def solution(namespace: dict):
    """Run a solution cell's code, but show what it prints only when the notebook's ``SHOW_SOLUTIONS`` is True
    (or the environment's ``WBC_SHOW_SOLUTIONS`` is 1): *Run All* checks that every solution works without
    giving its answer away. Output is shown anyway when the solution fails."""
    from IPython.utils.capture import capture_output

    show = bool(namespace.get("SHOW_SOLUTIONS")) or os.environ.get("WBC_SHOW_SOLUTIONS") == "1"
    captured, ok = None, False
    try:
        with capture_output() as captured:
            yield
        ok = True
    finally:
        if captured is not None and (show or not ok):
            captured.show()
        elif ok:
            print(HIDDEN_ANSWER)


def params_from(namespace: dict):
    """Build and validate RunParams from the notebook's parameter variables."""
    fields = [f.name for f in dataclasses.fields(RunParams)]
    need(namespace, *fields, cell="Parameters")
    return RunParams.from_dict({f: namespace[f] for f in fields})


def show_table(frame, floatfmt: str = "{:.3f}"):
    """Display a DataFrame with floats formatted, in notebooks and exported HTML alike."""
    from IPython.display import display

    display(frame.style.format(floatfmt, subset=frame.select_dtypes("float").columns).hide(axis="index"))


def md(text: str):
    from IPython.display import Markdown, display

    display(Markdown(text))


def show(fig):
    """Display a Figure now (also inside loops) and release it."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    if fig is not None:
        display(fig)
        plt.close(fig)


# ----------------------------------------------------------------------------- runs (a study: runs.load_study)

def run_dir_for(params, output_dir: str = ""):
    """Notebook 03's run folder: ``output_dir`` when given, else ``runs/<profile>/<run name>/``."""
    return Path(output_dir) if output_dir else profile_dir(params.profile) / params.run_name


def paper_model_run(profile: str, runs_root=None):
    """The study's run of the 2020 recipe, for notebook 05: a finished main run of cross-entropy on integer
    labels with the paper architecture, lowest seed first. Returns its summary row, or None."""
    if not profile or not profile_dir(profile, runs_root).exists():
        return None
    runs = load_study(profile, runs_root).finished()
    pick = runs[(runs["loss"] == "crossentropy") & (runs["target_encoding"] == INTEGER) & (runs["arch"] == ARCH_2020)]
    return None if pick.empty else pick.sort_values("seed").iloc[0]


# ----------------------------------------------------------------------------- the data's surprises

def identical_files(frame):
    """Groups of byte-identical files among ``frame``'s rows (a manifest frame): one row per file that has a
    twin, with ``group`` numbering the sets of identical files."""
    import hashlib

    digests = []
    for path in frame["path"]:
        with open(path, "rb") as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())
    f = frame.assign(sha256=digests)
    twins = f[f.duplicated("sha256", keep=False)].sort_values(["sha256", "relpath"])
    twins = twins.assign(group=twins.groupby("sha256", sort=False).ngroup() + 1)
    return twins[["group", "relpath", "class", "slide", "cell"]].reset_index(drop=True)


def overlapping_fields(manifest, pairs):
    """Pairs of original slides that photograph overlapping fields of one smear (``slides.load_pairs()``),
    with each slide's label and splits; ``same_cell`` says whether the white cell in both is the same one.
    Slides no image of this dataset comes from are left out."""
    import pandas as pd

    f = manifest.frame if hasattr(manifest, "frame") else manifest
    f = f[f["slide"].notna()]
    per_slide = f.groupby("slide").agg(label=("class", "first"),
                                       splits=("split", lambda s: "+".join(sorted(set(s)))))
    out = pairs.join(per_slide.add_suffix("_a"), on="slide_a").join(per_slide.add_suffix("_b"), on="slide_b")
    out = out.dropna(subset=["label_a", "label_b"])
    return pd.DataFrame(out[["slide_a", "label_a", "splits_a", "slide_b", "label_b", "splits_b", "same_cell",
                             "overlap_frac"]]).reset_index(drop=True)


def overlap_note(rows, manifest, pairs) -> list:
    """For each predictions row (with ``slide`` and ``predicted``): the overlapping slides labelled with the
    class the model predicted, as text ("" when none): the model may be reading the other cell in the field."""
    fields = overlapping_fields(manifest, pairs)
    notes = []
    for r in rows.itertuples():
        hits = []
        for a, b in (("a", "b"), ("b", "a")):
            m = fields[(fields[f"slide_{a}"] == r.slide) & (fields[f"label_{b}"] == r.predicted)]
            hits += [f"slide {int(s)} ({sp}) labelled {r.predicted}" for s, sp in zip(m[f"slide_{b}"],
                                                                                      m[f"splits_{b}"])]
        notes.append("; ".join(hits))
    return notes


# ----------------------------------------------------------------------------- notebook 04's explorer

def explorer(summary, split: str = "TEST", data_dir=None, **choice):
    """Notebook 04's 'explore one prediction' cell: see :func:`wbc_utils.explorer.explorer`."""
    return _explorer(summary, split, data_dir, **choice)
