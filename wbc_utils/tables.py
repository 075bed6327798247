"""The report's tables, built from its facts (:mod:`wbc_utils.facts`): one function per table, registered by name.

A template places a table with ``{% call table("tab:accuracy", "accuracy") %}caption{% endcall %}``; the
function returns a DataFrame of display strings (or None when there is nothing to show). Cell text may hold
Markdown (**bold**, `code`).
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from . import beyond, registry
from .analysis import fmt_ci, fmt_p, fmt_pct, fmt_said_2020
from .facts import ReportFacts
from .registry import ENCODING_SHORT, INTEGER, ONEHOT
from .stats import clopper_pearson
from .verdicts import seed_span

TABLES: dict[str, Callable[..., pd.DataFrame | None]] = {}


def _table(fn: Callable[..., pd.DataFrame | None]) -> Callable[..., pd.DataFrame | None]:
    TABLES[fn.__name__] = fn
    return fn


def _points(v: float) -> str:
    return "-" if v != v else f"{100 * v:.1f}"


def _name(f: ReportFacts, loss: str, enc: str) -> dict:
    spec = registry.get(loss)
    targets = ENCODING_SHORT[enc]
    if spec.encodings_coincide and f.recipe(loss, ONEHOT) is not None:
        targets = f"{ENCODING_SHORT[INTEGER]} = {ENCODING_SHORT[ONEHOT]}"
    return {"loss": spec.short, "targets": targets}


def _reported(f: ReportFacts, r) -> str:
    """What the 2020 report said of a setting it trained: 'about 70% (log 68.8%)'."""
    if r.encoding != INTEGER:
        return "-"
    m = f.orig(r.loss)
    return fmt_said_2020(r.spec.reported_2020, m.logged_val if m else None)


def _main_recipes(f: ReportFacts):
    """Recipes with runs of their own (a loss whose encodings coincide has one row)."""
    return [r for r in f.recipes if r.same_runs_as != INTEGER]


@_table
def counts(f: ReportFacts) -> pd.DataFrame:
    rows = []
    for split in ("TRAIN", "TEST", "TEST_SIMPLE"):
        sc = f.counts.splits.get(split)
        if sc is not None:
            rows.append({"split": split, "images": f"{sc.files:,}", "slides": sc.slides, "independent cells": sc.cells,
                         **{f"{k.lower()[:4]}. cells": v for k, v in sc.per_class_cells.items()}})
    return pd.DataFrame(rows)


@_table
def pilot(f: ReportFacts) -> pd.DataFrame | None:
    p = f.artifacts.pilot
    if not p:
        return None
    return pd.DataFrame([{
        "candidate": r.candidate,
        "validation per seed (" + ", ".join(str(v) for v in r.seeds) + ")": ", ".join(f"{100 * v:.1f}"
                                                                                  for v in r.val_per_seed),
        "mean [min, max]": f"{100 * r.val_mean:.1f}% [{100 * r.val_min:.1f}, {100 * r.val_max:.1f}]",
        "plateau": f"epoch {int(r.plateau_epoch)} of {r.epochs}" if r.plateau_epoch == r.plateau_epoch else "-",
        "learned": f"{r.learned}/{r.runs}" + (f" ({r.collapsed} collapsed)" if r.collapsed else ""),
        "train acc.": fmt_pct(r.train_accuracy),
        "s/epoch": f"{r.seconds_per_epoch:.0f}" if r.seconds_per_epoch == r.seconds_per_epoch else "-"}
        for r in p["table"].itertuples()])


@_table
def accuracy(f: ReportFacts) -> pd.DataFrame:
    return pd.DataFrame([{**_name(f, r.loss, r.encoding),
                          "2020 text (log)": _reported(f, r),
                          "2020 metric, ours": fmt_pct(r.paper_metric),
                          "all of TEST": str(r.test), "unseen cells": str(r.unseen),
                          "sd over seeds (points)": _points(r.unseen_sd), "train acc.": fmt_pct(r.train_accuracy),
                          "collapsed": f"{r.collapsed}/{r.finished}"} for r in _main_recipes(f)])


@_table
def cells(f: ReportFacts) -> pd.DataFrame:
    return pd.DataFrame([{**_name(f, r.loss, r.encoding), "unseen cells, one vote each": str(r.cell),
                          "TEST_SIMPLE, per distinct slide": str(r.simple)} for r in _main_recipes(f)])


@_table
def original(f: ReportFacts) -> pd.DataFrame | None:
    if not f.original:
        return None
    return pd.DataFrame([{
        "loss": registry.get(m.loss).title, "logged val. 'accuracy'": fmt_pct(m.logged_val),
        "2020 metric, recomputed": fmt_pct(m.recomputed_metric), "share of class 0": fmt_pct(m.class0_share),
        "true accuracy, all of TEST": str(m.true), "unseen cells": str(m.unseen),
        "as a regression": str(m.regression) if registry.get(m.loss).regresses_integer_labels else "-"}
        for m in f.original.values()])


@_table
def comparisons(f: ReportFacts) -> pd.DataFrame:
    return pd.DataFrame([{"targets": ENCODING_SHORT[c.encoding], "comparison": c.name, "difference [95% CI]":
                          c.diff.points(), "SE, df": f"{100 * c.diff.se:.1f}, {c.diff.df:.1f}",
                          "verdict": c.words, "detectable": f"{100 * c.mde:.1f} points"} for c in f.comparisons])


@_table
def confirmatory(f: ReportFacts) -> pd.DataFrame:
    full = {(c.encoding, c.name): c.diff.points() for c in f.comparisons}
    return pd.DataFrame([{"targets": ENCODING_SHORT[c.encoding], "comparison": c.name,
                          "all seeds": full.get((c.encoding, c.name), "-"),
                          "later seeds alone": c.diff.points(), "verdict (later seeds)": c.words,
                          "collapsed (later seeds)": f"{c.collapsed_a}/{c.n_a} vs {c.collapsed_b}/{c.n_b}"}
                         for c in f.confirmatory])


def _rate(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} [{100 * lo:.0f}, {100 * hi:.0f}%]"


@_table
def comparisons_more(f: ReportFacts) -> pd.DataFrame:
    return pd.DataFrame([{"targets": ENCODING_SHORT[c.encoding], "comparison": c.name,
                          "unpaired [95% CI]": c.unpaired.points() if c.paired else "(not paired)",
                          "collapsed [95% CI]": f"{_rate(c.collapsed_a, c.n_a)} vs {_rate(c.collapsed_b, c.n_b)}",
                          "McNemar": fmt_p(c.mcnemar_p), "Fisher": fmt_p(c.fisher_p),
                          "runs that did not collapse [95% CI] (seeds)":
                          f"{c.learned.points()} ({c.learned_seeds})" if c.learned.known else "-"}
                         for c in f.comparisons])


@_table
def per_class(f: ReportFacts) -> pd.DataFrame:
    rows = []
    for setting, classes in f.per_class.items():
        row = {"setting": setting}
        for r in classes:
            row[f"{r['class'].lower()} ({r['cells']} cells)"] = fmt_ci(r["recall"], r["lo"], r["hi"])
        rows.append(row)
    return pd.DataFrame(rows)


@_table
def collapse(f: ReportFacts, which: str = "here") -> pd.DataFrame:
    rows = f.collapse_here if which == "here" else f.collapse_study
    return pd.DataFrame([{"setting": r.setting, "collapsed [95% CI]": _rate(r.collapsed, r.runs),
                          "top-class share": fmt_pct(r.top_class_share),
                          "output spread (median)": f"{r.output_spread:.3f}",
                          "vs 2020 recipe: Fisher, Holm": "reference" if r.is_2020 else
                          f"{fmt_p(r.fisher_p)}; {fmt_p(r.p_holm).replace('p ', 'adj. ')}",
                          "seeds": seed_span(r.seeds.split(", ")) if r.seeds else "-"}
                         for r in rows])


@_table
def intervals(f: ReportFacts) -> pd.DataFrame:
    """What each headline interval is made of: estimate, standard error and degrees of freedom."""
    return pd.DataFrame([{**_name(f, r.loss, r.encoding), "seeds": r.seeds, "unseen cells": f.counts.unseen_cells,
                          "estimate (%)": _points(r.unseen.value), "SE (points)": _points(r.unseen.se),
                          "df": f"{r.unseen.df:.1f}", "95% CI": str(r.unseen)} for r in _main_recipes(f)])


@_table
def per_seed(f: ReportFacts) -> pd.DataFrame:
    """Each setting's accuracy on unseen TEST cells, seed by seed: the pairing behind every comparison."""
    seeds = sorted({s for c in f.per_seed.values() for s in c})
    return pd.DataFrame([{"seed": s, **{name: "-" if c.get(s) is None else f"{100 * c[s]:.1f}"
                                         for name, c in f.per_seed.items()}} for s in seeds])


@_table
def runs(f: ReportFacts) -> pd.DataFrame | None:
    ar = f.artifacts.allruns
    if ar is None or not len(ar):
        return None
    ar = ar.assign(_seed=ar["seed"].astype(int)).sort_values(["loss", "target_encoding", "role", "learning_rate",
                                                              "_seed"])
    return pd.DataFrame({
        "run": ar.run_name, "role": ar.role, "status": ar.status,
        "unseen TEST [95% CI]": [fmt_ci(r.unseen_accuracy, r.unseen_accuracy_lo, r.unseen_accuracy_hi)
                                 for r in ar.itertuples()],
        "2020 metric": [fmt_pct(v) for v in ar.paper_metric_test],
        "train acc.": [fmt_pct(v) for v in ar.final_train_accuracy],
        "collapsed": ar.collapsed.map({True: "yes", False: "no"}).fillna("-"),
        "top class": [fmt_pct(v) for v in ar.top_class_share]})


@_table
def lab(f: ReportFacts) -> pd.DataFrame | None:
    return beyond.lab_frame(f.artifacts.best) if f.artifacts.best else None


@_table
def final(f: ReportFacts) -> pd.DataFrame | None:
    return beyond.final_frame(f.artifacts.best) if f.artifacts.best else None




@_table
def lab_trials(f: ReportFacts) -> pd.DataFrame | None:
    return beyond.trials_frame(f.artifacts.best) if f.artifacts.best else None


@_table
def shift_grid(f: ReportFacts) -> pd.DataFrame | None:
    return beyond.grid_frame(f.artifacts.best) if f.artifacts.best else None
