"""Notebook 04's explorer: one TEST image of one run at a time, its probabilities and its Grad-CAM map.

One figure, drawn once. Without ipywidgets it is a static figure (choose the image with the arguments of
:func:`explorer`). With ipywidgets, the controls (run, true class, right or wrong, image) redraw that same
figure in place; the widget also carries the first figure as a PNG fallback, so a page exported without the
widgets' state (nbconvert HTML, GitHub) shows the figure instead of a blank widget.
"""
from __future__ import annotations

import base64
import io

import numpy as np

from . import CLASSES
from .data import run_split
from .evaluation import scores_of, softmax
from .runs import Run
from .saliency import grad_cam, load_model

#: Filters on the prediction: every image, the ones the run reads right, the ones it reads wrong.
OUTCOMES = ("all", "right", "wrong")
TRUE_COLOR, WRONG_COLOR, OTHER_COLOR = "#1a7f37", "#c62828", "#9e9e9e"


def matching(predictions, cls: str | None = None, outcome: str = "all") -> np.ndarray:
    """Positions (into ``predictions``' rows) of the images of true class ``cls`` (None or "all": every class)
    that the run reads right, wrong, or either (``outcome``: one of :data:`OUTCOMES`)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome={outcome!r} is not valid; valid values: {', '.join(OUTCOMES)}")
    if cls not in (None, "all") and cls not in CLASSES:
        raise ValueError(f"cls={cls!r} is not valid; valid values: all, {', '.join(CLASSES)}")
    keep = np.ones(len(predictions), bool)
    if cls not in (None, "all"):
        keep &= (predictions["class"] == cls).to_numpy()
    right = (predictions["pred"].to_numpy() == predictions["label"].to_numpy())
    if outcome == "right":
        keep &= right
    elif outcome == "wrong":
        keep &= ~right
    return np.flatnonzero(keep)


class _Explorable:
    """One finished run: its model, its decoded split and its saved predictions, in the same row order."""

    def __init__(self, run_dir, split: str = "TEST", data_dir=None):
        self.run = load_model(run_dir)
        self.data = run_split(self.run, split, data_dir)
        pred = Run(run_dir).predictions(split)
        pos = {r: i for i, r in enumerate(self.data.frame["relpath"])}
        pred = pred[pred["relpath"].isin(pos)]
        self.rows = np.array([pos[r] for r in pred["relpath"]], int)
        self.pred = pred.reset_index(drop=True)
        self.split = split

    def probabilities(self, i: int) -> np.ndarray:
        return softmax(scores_of(self.pred.iloc[[i]]))[0]

    def figure(self, i: int, shown: str = ""):
        """The figure for the ``i``-th prediction row: the image, its Grad-CAM, the probabilities with a legend."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        row = self.pred.iloc[i]
        image = np.asarray(self.data.images[self.rows[i]])
        probs = self.probabilities(i)
        pred = CLASSES[int(row["pred"])]
        right = pred == row["class"]
        cam, _ = grad_cam(self.run.model, image[None], class_index=int(row["pred"]))
        fig, axes = plt.subplots(1, 3, figsize=(10, 2.9), gridspec_kw={"width_ratios": [1, 1, 1.35]})
        for ax in axes[:2]:
            ax.imshow(image)
            ax.set_xticks([]), ax.set_yticks([])
        axes[0].set_title(f"true: {row['class']}\n(slide {row['slide']}, cell {row['cell']}"
                          f"{', also in TRAIN' if bool(row['shared']) else ''})", fontsize=8)
        axes[1].imshow(cam[0], cmap="jet", alpha=0.4, vmin=0, vmax=1,
                       extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        axes[1].set_title(f"Grad-CAM for the predicted {pred}\n(red: where its evidence lies)", fontsize=8,
                          color=TRUE_COLOR if right else WRONG_COLOR)
        colors = [TRUE_COLOR if c == row["class"] else WRONG_COLOR if c == pred else OTHER_COLOR for c in CLASSES]
        ax = axes[2]
        ax.barh(CLASSES, probs, color=colors)
        for y, p in enumerate(probs):
            ax.text(min(p + 0.02, 0.83), y, f"{p:.0%}", va="center", fontsize=7)
        ax.set_xlim(0, 1), ax.invert_yaxis()
        ax.tick_params(labelsize=7)
        ax.set_xlabel("probability (softmax of the outputs)", fontsize=7)
        handles = [Patch(color=TRUE_COLOR, label="true class"), Patch(color=OTHER_COLOR, label="other classes")]
        if not right:
            handles.insert(1, Patch(color=WRONG_COLOR, label="predicted (wrong)"))
        ax.legend(handles=handles, fontsize=6.5, loc="lower right", frameon=True)
        verdict = "RIGHT" if right else "WRONG"
        fig.suptitle(f"{self.run.name}: {self.split} image {row['relpath']} - read {verdict}"
                     + (f"  [{shown}]" if shown else ""), fontsize=9, color=TRUE_COLOR if right else WRONG_COLOR)
        fig.tight_layout()
        return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


class _WithFallback:
    """A widget that also carries a PNG: live front ends draw the widget, exported pages the picture."""

    def __init__(self, widget, png: bytes):
        self.widget, self.png = widget, png

    def _repr_mimebundle_(self, include=None, exclude=None):
        data = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        data["image/png"] = base64.b64encode(self.png).decode("ascii")
        return data


def explorer(summary, split: str = "TEST", data_dir=None, run: str | None = None, cls: str | None = None,
             outcome: str = "all", index: int = 0, interactive: bool = True):
    """Explore one prediction of a study's finished runs (``summary``: a study's summary rows).

    ``run`` (a run name; default: the first finished run), ``cls`` (a true class or None), ``outcome``
    ("all", "right" or "wrong") and ``index`` (among the matching images) choose what the figure shows; with
    ipywidgets (and ``interactive``), controls for the same follow and redraw it in place.
    """
    import matplotlib.pyplot as plt
    from IPython.display import display

    fin = summary[summary["status"] == "finished"]
    if fin.empty:
        print("No finished run to explore yet: run a study first (make report PROFILE=smoke).")
        return None
    names = list(fin["run_name"])
    dirs = dict(zip(fin["run_name"], fin["run_dir"]))
    if run is not None and run not in dirs:
        raise ValueError(f"run={run!r} is not a finished run of this study; valid values: {', '.join(names)}")
    cache: dict = {}

    def get(name):
        if name not in cache:
            cache[name] = _Explorable(dirs[name], split, data_dir)
        return cache[name]

    def render(name, c, o, k):
        ex = get(name)
        idx = matching(ex.pred, c, o)
        if len(idx) == 0:
            return None, 0
        k = int(np.clip(k, 0, len(idx) - 1))
        what = ", ".join(x for x in (c if c not in (None, "all") else "", o if o != "all" else "") if x)
        return ex.figure(int(idx[k]), f"{k + 1} of {len(idx)} {what or 'images'}"), len(idx)

    state = {"run": run or names[0], "cls": cls or "all", "outcome": outcome, "index": index}
    fig, n = render(state["run"], state["cls"], state["outcome"], state["index"])
    try:
        if not interactive:
            raise ImportError
        import ipywidgets as w
    except ImportError:
        if fig is None:
            print(f"No {split} image of {state['run']} matches class={state['cls']}, outcome={state['outcome']}.")
        else:
            display(fig)
            plt.close(fig)
        if interactive:
            print("(ipywidgets is not installed: `pip install ipywidgets` for the interactive version; until then "
                  "choose with explorer(summary, run=..., cls=..., outcome=..., index=...))")
        return None

    pick = w.Dropdown(options=names, value=state["run"], description="run", layout=w.Layout(width="360px"))
    klass = w.Dropdown(options=["all", *CLASSES], value=state["cls"], description="true class")
    kind = w.ToggleButtons(options=list(OUTCOMES), value=state["outcome"], description="read",
                           style={"button_width": "72px"})
    image = w.IntSlider(value=0, min=0, max=max(n - 1, 0), description="image", continuous_update=False)
    note = w.HTML()
    out = w.Output()
    busy = {"on": False}

    def draw(*_):
        if busy["on"]:
            return
        f, count = render(pick.value, klass.value, kind.value, image.value)
        busy["on"] = True
        try:
            image.max = max(count - 1, 0)
        finally:
            busy["on"] = False
        note.value = f"{count} matching image(s)" if count else "<b>no image matches these filters</b>"
        out.clear_output(wait=True)
        with out:
            if f is not None:
                display(f)
                plt.close(f)

    def refilter(*_):
        busy["on"] = True
        image.value = 0
        busy["on"] = False
        draw()

    for control in (pick, klass, kind):
        control.observe(refilter, names="value")
    image.observe(draw, names="value")
    note.value = f"{n} matching image(s)" if n else "<b>no image matches these filters</b>"
    with out:
        if fig is not None:
            display(fig)
    box = w.VBox([w.HBox([pick, klass]), w.HBox([kind, image, note]), out])
    png = _png(fig) if fig is not None else b""
    if fig is not None:
        plt.close(fig)
    display(_WithFallback(box, png) if png else box)
    return box
