"""The figure registry: every figure the report shows, by name, drawn from the report's facts.

A report template places one with ``{% call figure("fig:curves-mse", "curves", loss="mse") %}caption{% endcall %}``;
:func:`wbc_utils.figures.build_all` saves the same figures to ``figures/<profile>/``. Each function returns a
matplotlib figure, or None when its artifacts are missing (the report then shows nothing in its place).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..config import figures_dir
from ..data import run_split
from ..facts import ReportFacts
from ..gather import build_facts
from ..registry import INTEGER
from ..runs import Run, load_study
from ..saliency import examples_per_class, load_model
from ..slides import find_originals, load_pairs
from .common import save_all
from .data import kgroup_figure, overlap_figure, slide_and_copies_figure
from .final import (
    build_beyond,
    confusion_pair_figure,
    lab_curves_figure,
    reliability_figure,
    risk_coverage_figure,
    wrong_cells_figure,
)
from .model import gradcam_figure, images_for
from .study import collapse_figure, collapse_map_figure, comparison_figure, confusion_figure, curves_figure, curves_name

FIGURES: dict[str, Callable] = {}


def _figure(fn: Callable) -> Callable:
    FIGURES[fn.__name__] = fn
    return fn


def _mapping(f: ReportFacts):
    man = f.artifacts.manifest
    return man.frame.rename(columns={"match_score": "score"})[["split", "class", "file", "slide", "score"]]


@_figure
def slide_copies(f: ReportFacts):
    man = f.artifacts.manifest
    originals = find_originals(man.images_root)
    return None if originals is None else slide_and_copies_figure(_mapping(f), man.images_root, originals)


@_figure
def kgroup(f: ReportFacts):
    man = f.artifacts.manifest
    if not ((man.frame["class"] == "NEUTROPHIL").any() and man.frame["k"].notna().any()):
        return None
    return kgroup_figure(_mapping(f), man.images_root)


@_figure
def overlaps(f: ReportFacts):
    originals = find_originals(f.artifacts.manifest.images_root)
    pairs = load_pairs()
    return overlap_figure(pairs, originals) if originals is not None and len(pairs) else None


@_figure
def curves(f: ReportFacts, loss: str = "crossentropy"):
    s = f.artifacts.summary
    if s is None or s[(s.loss == loss) & (s.target_encoding == INTEGER)].empty:
        return None
    orig = f.artifacts.orig
    log = pd.DataFrame(orig["logs"][loss]) if orig and loss in orig.get("logs", {}) else None
    return curves_figure(s, f.artifacts.histories, loss, log)


@_figure
def comparison(f: ReportFacts):
    return comparison_figure(f.artifacts.summary, f.artifacts.histories)


@_figure
def confusion(f: ReportFacts):
    return confusion_figure(f.artifacts.metrics, f.artifacts.summary)


def _collapse_runs(f: ReportFacts):
    """The runs the collapse figures show: the collapse study's where it exists, else this profile's."""
    col = f.artifacts.collapse
    return (col["allruns"], col["histories"]) if col else (f.artifacts.allruns, f.artifacts.histories)


@_figure
def collapse_map(f: ReportFacts):
    runs, _ = _collapse_runs(f)
    if f.artifacts.collapse and f.artifacts.allruns is not None:
        runs = pd.concat([f.artifacts.allruns, runs], ignore_index=True)
    return collapse_map_figure(runs)


def collapse_ce_runs(f: ReportFacts):
    runs, _ = _collapse_runs(f)
    return runs[(runs.loss == "crossentropy") & (runs.target_encoding == INTEGER) & (runs.status == "finished")]


@_figure
def collapse(f: ReportFacts):
    ce = collapse_ce_runs(f)
    _, histories = _collapse_runs(f)
    diags = {r.run_name: Run(r.run_dir).diagnostics() for r in ce.itertuples()}
    return collapse_figure(ce, histories, diags)


@_figure
def lab_curves(f: ReportFacts):
    b = f.artifacts.best
    return lab_curves_figure(b["summary"], b["study"].histories) if b else None


@_figure
def final_confusion(f: ReportFacts):
    b = f.artifacts.best
    if not b:
        return None
    cms = b["confusions"]
    return confusion_pair_figure(cms["image"], cms["cell"], len(b["final_runs"]))


@_figure
def wrong_cells(f: ReportFacts):
    b = f.artifacts.best
    if not b or not len(b["wrong_cells"]):
        return None
    return wrong_cells_figure(b["wrong_cells"], f.artifacts.manifest, tuple(b["chosen"]["image_size"]),
                                            b["chosen"].get("view", "full"))


@_figure
def reliability(f: ReportFacts):
    b = f.artifacts.best
    return reliability_figure(b["pooled_probs"], b["pooled_labels"], b["pooled_cells"]) if b else None


@_figure
def risk_coverage(f: ReportFacts):
    b = f.artifacts.best
    return risk_coverage_figure(b["risk_coverage"]) if b else None


@_figure
def gradcam(f: ReportFacts):
    b = f.artifacts.best
    if not b:
        return None
    r0 = b["final_runs"].iloc[0]
    brun = load_model(r0.run_dir)
    ex = examples_per_class(Run(r0.run_dir).predictions())
    return gradcam_figure(brun, ex, images_for(ex, run_split(brun, "TEST")), per_row=2)


def study_figures_of(f: ReportFacts) -> list[tuple[str, str, dict]]:
    """The figures a loss study saves: (file name, registry name, keyword arguments), in the report's order."""
    out = [(curves_name(loss), "curves", {"loss": loss}) for loss in f.losses
           if f.recipe(loss, INTEGER) is not None]
    return out + [("validation_comparison", "comparison", {}), ("confusion_matrices", "confusion", {}),
                  ("collapse", "collapse", {}), ("collapse_map", "collapse_map", {})]


def build_all(profile: str, runs_root=None, out_dir: Path | None = None, data_dir=None) -> dict:
    """Draw and save every figure of a study into ``figures/<profile>/`` (PNG and SVG), from the same registry
    and facts as the report; returns {file name: Figure}."""
    if load_study(profile, runs_root).kind == "lab":  # a beyond-the-paper study: its own figures
        return build_beyond(profile, runs_root, out_dir, data_dir)
    facts = build_facts(profile, runs_root, best_profile="")
    figs = {name: FIGURES[fig](facts, **kw) for name, fig, kw in study_figures_of(facts)}
    return save_all({k: v for k, v in figs.items() if v is not None}, out_dir or figures_dir(profile))
