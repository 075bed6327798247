"""The report's facts: typed numbers computed once from a study's artifacts, and the verdicts read from them.

Every number the report, ``results.json`` and the README quote is a field here. :func:`wbc_utils.gather.build_facts`
reads the artifacts (through :mod:`wbc_utils.analysis`); the verdict functions below are pure (facts in, a verdict out),
so they are tested on hand-made facts. The templates (``templates/report/``) turn facts into sentences;
:func:`to_json` dumps them (``results.json``). Heavy frames the tables and figures draw from (predictions,
histories, the manifest) sit in :class:`Artifacts`, kept apart from the numbers and never dumped.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .analysis import fmt_ci, fmt_diff
from .registry import losses_2020
from .stats import EQUIVALENCE_MARGINS

NAN = float("nan")


def _f(v: Any) -> float:
    """A float (NaN for None or a missing value)."""
    try:
        return NAN if v is None else float(v)
    except (TypeError, ValueError):
        return NAN


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval (fractions; ``se`` and ``df`` where a t interval gave them)."""

    value: float = NAN
    lo: float = NAN
    hi: float = NAN
    se: float = NAN
    df: float = NAN

    @classmethod
    def of(cls, row: dict, key: str, lo: str = "", hi: str = "") -> Interval:
        return cls(_f(row.get(key)), _f(row.get(lo or f"{key}_lo")), _f(row.get(hi or f"{key}_hi")),
                   _f(row.get(f"{key}_se")), _f(row.get(f"{key}_df")))

    @property
    def known(self) -> bool:
        return not math.isnan(self.value)

    def __str__(self) -> str:
        return fmt_ci(self.value, self.lo, self.hi)

    def points(self) -> str:
        """A difference in percentage points: '+3.1 points [-1.0, +7.2]'."""
        return fmt_diff({"diff": self.value, "lo": self.lo, "hi": self.hi})

    def holds(self, x: float) -> bool:
        return self.lo <= x <= self.hi


@dataclasses.dataclass(frozen=True)
class SplitCounts:
    files: int
    slides: int
    cells: int
    per_class_cells: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Counts:
    """Files, slides and independent cells per split; the cells TRAIN and TEST share."""

    splits: dict[str, SplitCounts]
    shared_cells: int
    shared_images: int
    unseen_cells: int
    unseen_images: int
    unseen_per_class_cells: dict[str, int]
    two_label_cells: dict[str, int]  # split -> cells whose images carry two class labels
    kgroup_slides: list[int] | None
    unmapped_files: int

    @property
    def total_files(self) -> int:
        return sum(s.files for s in self.splits.values())


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One loss x target encoding, pooled over its seeds."""

    loss: str
    encoding: str
    same_runs_as: str
    seeds: int
    finished: int
    collapsed: int
    unseen: Interval
    test: Interval
    cell: Interval
    simple: Interval
    paper_metric: float
    train_accuracy: float
    unseen_sd: float
    top_class_share: float
    collapsed_seeds: tuple[int, ...] = ()

    @property
    def spec(self) -> registry.LossSpec:
        return registry.get(self.loss)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A minus B on unseen TEST cells: paired on cells and (where the seeds match) seeds; with collapse apart."""

    encoding: str
    a: str
    b: str
    name: str
    diff: Interval
    resolved: bool
    equivalence: float | None
    words: str
    paired: bool
    mde: float
    n_seeds_a: int
    n_seeds_b: int
    unpaired: Interval
    collapsed_a: int
    n_a: int
    collapsed_b: int
    n_b: int
    fisher_p: float
    learned: Interval
    learned_words: str
    learned_seeds: str
    mcnemar_p: float = NAN  # the collapses paired on the seeds both sides trained (exact McNemar)


@dataclasses.dataclass(frozen=True)
class OriginalModel:
    """One 2020 model (its weights and log), re-scored here."""

    loss: str
    logged_val: float
    logged_train: float
    recomputed_metric: float
    class0_share: float
    true: Interval
    unseen: Interval
    regression: Interval
    unit_inputs: float
    spread_within_image: float
    collapsed: bool | None


@dataclasses.dataclass(frozen=True)
class CollapseRow:
    setting: str
    runs: int
    collapsed: int
    top_class_share: float
    output_spread: float
    seeds: str
    is_2020: bool
    fisher_p: float
    p_holm: float

    @property
    def change(self) -> str:
        """The setting without the common part: 'lr 0.0003'."""
        return self.setting.split(", ", 2)[-1]

    @property
    def rate(self) -> float:
        return self.collapsed / self.runs if self.runs else NAN


@dataclasses.dataclass(frozen=True)
class DiagnosticTest:
    """One diagnostic after the first epoch, collapsed runs against the rest (Mann-Whitney)."""

    what: str
    median_collapsed: float
    n_collapsed: int
    median_rest: float
    n_rest: int
    p: float


@dataclasses.dataclass(frozen=True)
class CollapseDiagnostics:
    """What the cross-entropy runs that collapsed looked like after one epoch, against the others."""

    runs: int
    collapsed: int
    tests: list[DiagnosticTest]
    common_setting: str  # the setting most collapsed runs share, where more than half do
    common_count: int

    @property
    def all_resolved(self) -> bool:
        return bool(self.tests) and all(t.p < 0.05 for t in self.tests)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a profile trained: its scale, stated once at the top of the report."""

    profile: str
    description: str
    trades: str
    image_size: list[int]
    epochs: int
    learning_rate: float
    batch_size: int
    train_subset: int
    seeds: list[int]  # finished so far
    seeds_planned: list[int]
    planned: int
    finished: int
    failed: int
    incomplete: int
    controls: int
    precision: str
    devices: list[str]
    pilot: str

    @property
    def size(self) -> str:
        return "x".join(str(v) for v in self.image_size)


@dataclasses.dataclass
class Artifacts:
    """The frames tables and figures draw from (not dumped to results.json)."""

    manifest: Any = None
    study: Any = None
    summary: Any = None
    allruns: Any = None
    histories: Any = None
    metrics: Any = None
    orig: Any = None
    collapse: Any = None  # {"allruns", "histories", "table", "settings"} of the collapse study
    pilot: Any = None     # pilot_of(...)
    best: Any = None      # beyond.lab_and_final(...)


@dataclasses.dataclass
class ReportFacts:
    """Everything the report states, for one profile."""

    profile: str
    generated: str
    counts: Counts
    software: dict[str, str]
    settings: Settings | None = None
    losses: list[str] = dataclasses.field(default_factory=list)
    recipes: list[Recipe] = dataclasses.field(default_factory=list)
    comparisons: list[Comparison] = dataclasses.field(default_factory=list)
    encoding_effects: list[dict] = dataclasses.field(default_factory=list)
    original: dict[str, OriginalModel] = dataclasses.field(default_factory=dict)
    original_split: str = ""
    collapse_here: list[CollapseRow] = dataclasses.field(default_factory=list)
    collapse_study: list[CollapseRow] = dataclasses.field(default_factory=list)
    collapse_profile: str = ""
    best_profile: str = ""
    best: dict | None = None
    margins: tuple[float, ...] = EQUIVALENCE_MARGINS
    collapse_diagnostics: CollapseDiagnostics | None = None
    confirmatory: list[Comparison] = dataclasses.field(default_factory=list)  # on the seeds planned after a look
    confirmatory_seeds: list[int] = dataclasses.field(default_factory=list)
    per_class: dict[str, list[dict]] = dataclasses.field(default_factory=dict)  # setting -> recall per class
    per_seed: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict)  # setting -> seed -> unseen acc.
    has_originals: bool = False  # the dataset's original slides (BCCD) are there to draw from
    overlap_pairs: int = 0
    overlap_same_cell: int = 0
    paper_params: int = 0
    model_params: int = 0
    pilot_followed: bool = True
    decisions: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    pilot_revisions: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    artifacts: Artifacts = dataclasses.field(default_factory=Artifacts, repr=False, compare=False)

    # ------------------------------------------------------------------ lookups the templates use

    @property
    def has_losses(self) -> bool:
        return self.settings is not None and bool(self.recipes)

    def recipe(self, loss: str, encoding: str) -> Recipe | None:
        return next((r for r in self.recipes if r.loss == loss and r.encoding == encoding), None)

    def comparison(self, encoding: str, a: str, b: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.encoding == encoding and c.a == a and c.b == b), None)

    def orig(self, loss: str) -> OriginalModel | None:
        return self.original.get(loss)

    def spec(self, loss: str) -> registry.LossSpec:
        return registry.get(loss)

    @property
    def specs(self) -> list[registry.LossSpec]:
        return [registry.get(l) for l in self.losses]

    @property
    def trained_recipes(self) -> list[Recipe]:
        """The settings with runs of their own (a loss whose encodings coincide has one)."""
        return [r for r in self.recipes if r.same_runs_as != registry.INTEGER]

    @property
    def seeds_per_setting(self) -> str:
        """'20', or '14-15' while settings rest on different numbers of seeds."""
        n = sorted({r.seeds for r in self.trained_recipes})
        return "0" if not n else str(n[0]) if n[0] == n[-1] else f"{n[0]}-{n[-1]}"

    @property
    def seeds_common(self) -> bool:
        """Every setting rests on the same seeds."""
        return len({tuple(sorted(v)) for v in self.per_seed.values()}) <= 1


# ----------------------------------------------------------------------------- results.json


def _flat(i: Interval, key: str) -> dict:
    return {key: i.value, f"{key}_lo": i.lo, f"{key}_hi": i.hi, f"{key}_se": i.se, f"{key}_df": i.df}


def to_json(f: ReportFacts) -> dict:
    """The facts as ``results.json`` (the README's findings block is written from it)."""
    out: dict = {"profile": f.profile, "generated": f.generated, "counts": dataclasses.asdict(f.counts)}
    c = out["counts"]  # the keys earlier versions wrote, kept for readers of results.json
    for split, sc in c.pop("splits").items():
        c[split] = {**sc, "per_class_cells": sc["per_class_cells"]}
    if f.settings is not None:
        s = f.settings
        out["settings"] = {"image_size": s.image_size, "epochs": s.epochs, "train_subset": s.train_subset,
                           "learning_rate": s.learning_rate, "seeds": s.seeds, "seeds_planned": s.seeds_planned,
                           "devices": s.devices}
        out["recipes"] = [{"loss": r.loss, "encoding": r.encoding, "same_runs_as": r.same_runs_as, "seeds": r.seeds,
                           "finished": r.finished, "collapsed": r.collapsed, **_flat(r.unseen, "unseen"),
                           **_flat(r.test, "test"), "paper_metric_test_mean": r.paper_metric,
                           "final_train_accuracy_mean": r.train_accuracy, "unseen_sd": r.unseen_sd}
                          for r in f.recipes]
        out["comparisons"] = [{"encoding": x.encoding, "comparison": x.name, "diff": x.diff.value, "lo": x.diff.lo,
                               "hi": x.diff.hi, "se": x.diff.se, "df": x.diff.df, "resolved": x.resolved,
                               "words": x.words, "paired": x.paired, "equivalence": x.equivalence, "mde": x.mde,
                               "n_seeds_a": x.n_seeds_a, "n_seeds_b": x.n_seeds_b, "unpaired_lo": x.unpaired.lo,
                               "unpaired_hi": x.unpaired.hi, "collapsed_a": x.collapsed_a, "n_a": x.n_a,
                               "collapsed_b": x.collapsed_b, "n_b": x.n_b, "fisher_p": x.fisher_p,
                               "mcnemar_p": x.mcnemar_p,
                               "learned_diff": x.learned.value, "learned_lo": x.learned.lo,
                               "learned_hi": x.learned.hi, "learned_words": x.learned_words}
                              for x in f.comparisons]
        out["original"] = {k: {"logged_final_val_accuracy": m.logged_val, "logged_final_train_accuracy": m.logged_train,
                               "recomputed_2020_metric": m.recomputed_metric, "true_accuracy": m.true.value,
                               "true_lo": m.true.lo, "true_hi": m.true.hi, "unit_inputs_accuracy": m.unit_inputs,
                               "regression_accuracy": m.regression.value}
                           for k, m in f.original.items() if k in {s.name for s in losses_2020()}}
        out["original_split"] = f.original_split or None
        if len(f.collapse_here) > 1 and any(r.is_2020 for r in f.collapse_here):
            out["collapse_here"] = [_collapse_json(r) for r in f.collapse_here]
        p = f.artifacts.pilot
        if p:
            out["pilot"] = {"name": p["name"], "choice": p["choice"],
                            "candidates": p["table"][["candidate", "val_mean", "learned", "runs",
                                                      "plateau_epoch"]].to_dict("records")}
    if f.collapse_study:
        out["collapse"] = [_collapse_json(r) for r in f.collapse_study]
    if f.best:
        out["best"] = f.best
    # every fact, as the report rendered it (the keys above are the headline view the README block reads)
    out["facts"] = {k.name: getattr(f, k.name) for k in dataclasses.fields(f) if k.name != "artifacts"}
    return jsonable(out)


def _collapse_json(r: CollapseRow) -> dict:
    return {**dataclasses.asdict(r), "fisher_p_vs_2020": r.fisher_p, "collapse_rate": r.rate}


def jsonable(o):
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return jsonable({k.name: getattr(o, k.name) for k in dataclasses.fields(o)})
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    return o
