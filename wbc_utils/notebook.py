"""Small helpers that keep the notebooks thin and friendly to students."""
from __future__ import annotations

import dataclasses

from .errors import WBCError


class CellOrderError(WBCError, NameError):
    """A notebook cell ran before the cell that defines what it needs."""


def need(namespace: dict, *names: str, cell: str) -> None:
    """Raise a clear message if ``names`` are not defined yet: which cell to run first."""
    missing = [n for n in names if n not in namespace]
    if missing:
        raise CellOrderError(f"{', '.join(missing)} is not defined yet: run the cell '{cell}' first "
                             f"(or Run All from the top).")


def params_from(namespace: dict):
    """Build and validate RunParams from the notebook's parameter variables."""
    from .params import RunParams

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
