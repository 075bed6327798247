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


def explorer(summary, split: str = "TEST", data_dir=None):
    """Notebook 04's 'explore one prediction' cell: a static figure always (so exported HTML shows it), and,
    when ipywidgets is installed, a run picker and an image slider that redraw it."""
    from IPython.display import display

    from .figures_inside import explore, run_split
    from .saliency import load_run

    fin = summary[summary["status"] == "finished"]
    if fin.empty:
        print("No finished run to explore yet: run a study first (make report PROFILE=smoke).")
        return
    cache: dict = {}

    def get(run_dir):
        if run_dir not in cache:
            run = load_run(run_dir)
            cache[run_dir] = (run, run_split(run, split, data_dir))
        return cache[run_dir]

    first = fin.iloc[0]["run_dir"]
    run, data = get(first)
    show(explore(run, data, None, 0))
    try:
        import ipywidgets as w
    except ImportError:
        print("(ipywidgets is not installed: `pip install ipywidgets` for the interactive version)")
        return
    pick = w.Dropdown(options=list(zip(fin["run_name"], fin["run_dir"])), value=first, description="run")
    index = w.IntSlider(value=0, min=0, max=len(data) - 1, description="image", continuous_update=False)

    def draw(run_dir, i):
        r, d = get(run_dir)
        show(explore(r, d, None, i))

    out = w.interactive_output(draw, {"run_dir": pick, "i": index})
    print("Interactive version (in a live notebook; exported pages keep the static figure above):")
    display(w.VBox([w.HBox([pick, index]), out]))
