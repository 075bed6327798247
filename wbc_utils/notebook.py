"""Small helpers that keep the notebooks thin and friendly to students.

Every notebook cell that uses what an earlier cell made starts with ``need(globals(), ..., cell="...")``, imported
in that same cell: run out of order, it says which cell to run first instead of a bare ``NameError``
(``tests/test_notebook_guards.py`` checks every cell).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

from .config import profile_dir
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


def need(namespace: dict, *names: str, cell: str) -> None:
    """Raise a clear message if ``names`` are not defined yet: which cell to run first."""
    missing = [n for n in names if n not in namespace]
    if missing:
        raise CellOrderError(f"{', '.join(missing)} is not defined yet: run the cell '{cell}' first "
                             f"(or Run All from the top).")


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
    from pathlib import Path

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
