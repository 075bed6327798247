"""The report's verdicts: pure functions of its facts (:mod:`wbc_utils.facts`) that the templates word.

A template never decides whether a claim stands, which side is better or which way a difference points: it asks
one of these and words the answer. Each is tested on hand-made facts (``tests/test_report.py``).
"""
from __future__ import annotations

import math

from .facts import CollapseRow, Comparison, OriginalModel, Recipe

#: Re-scoring the 2020 weights on the same images is deterministic; it gives the logged figure again when it is
#: within this much of it (the log rounds, and the 2020 code predicted in batches with another TensorFlow).
REPRODUCE_TOLERANCE = 0.01


def weights_reproduce_log(m: OriginalModel | None, split: str = "TEST") -> bool | None:
    """Does the re-score of the 2020 weights give the figure its log printed, within
    :data:`REPRODUCE_TOLERANCE`? (None: no weights or no log, or re-scored on another ``split`` than the log's
    TEST.) Not an interval check: the same weights on the same images vary with nothing but arithmetic."""
    if m is None or not m.true.known or math.isnan(m.logged_val) or split != "TEST":
        return None
    return abs(m.true.value - m.logged_val) <= REPRODUCE_TOLERANCE


def trained_holds_claim(r: Recipe | None, claimed: float) -> bool:
    """Does training here (all of TEST, pooled over seeds) leave the 2020 claim inside its interval?"""
    return r is not None and r.test.known and r.test.holds(claimed)


def better_than(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons in which A is resolved better than B."""
    return [c for c in comparisons if c.resolved and c.diff.value > 0]


def collapse_p(c: Comparison) -> float:
    """The test that decides a difference in collapse counts: McNemar's, paired on the seeds both sides trained,
    where there is one (the seeds are matched, as for accuracy); else Fisher's, the sides as independent runs."""
    return c.fisher_p if math.isnan(c.mcnemar_p) else c.mcnemar_p


def collapses_more(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons in which B collapsed resolvedly more often than A (:func:`collapse_p` < 0.05)."""
    return [c for c in comparisons
            if collapse_p(c) < 0.05 and c.collapsed_b / max(c.n_b, 1) > c.collapsed_a / max(c.n_a, 1)]


def collapses_differ(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons whose collapse counts differ without being resolved (:func:`collapse_p` >= 0.05)."""
    return [c for c in comparisons if c.collapsed_a * c.n_b != c.collapsed_b * c.n_a and collapse_p(c) >= 0.05]


def loss_ranking_verdict(integer: list[Comparison], onehot: list[Comparison]) -> str:
    """Does 'cross-entropy is the loss to use' hold? 'both' (every comparison with either encoding resolved in
    its favour), 'integer' (with integer labels only), 'none' (in neither: not resolved), 'mixed' (anything else)."""
    bi, bo = len(better_than(integer)), len(better_than(onehot))
    if integer and bi == len(integer):
        return "both" if onehot and bo == len(onehot) else "integer" if bo == 0 else "mixed"
    return "none" if bi == 0 and bo == 0 else "mixed"


def diagnostic_direction(t) -> str:
    """'higher' or 'lower': the collapsed runs' median against the others'."""
    return "higher" if t.median_collapsed > t.median_rest else "lower"


def later_seeds_agree(full: list[Comparison], later: list[Comparison]) -> int:
    """How many comparisons' later-seeds interval holds the all-seeds estimate."""
    est = {(c.encoding, c.name): c.diff.value for c in full}
    return sum(1 for c in later if (c.encoding, c.name) in est and c.diff.holds(est[(c.encoding, c.name)]))


def collapse_lr_supported(rows: list[CollapseRow]) -> bool:
    """Does a lower rate collapse resolvedly less often than the 2020 recipe (Holm-adjusted Fisher < 0.05)?"""
    ref = next((r for r in rows if r.is_2020), None)
    return ref is not None and any(r.change.startswith("lr") and r.p_holm < 0.05 and r.rate < ref.rate
                                   for r in rows if not r.is_2020)


def resolved_changes(rows: list[CollapseRow]) -> list[tuple[CollapseRow, str]]:
    """Settings whose collapse count differs from the 2020 recipe's (Holm < 0.05), with 'less' or 'more'."""
    ref = next((r for r in rows if r.is_2020), None)
    if ref is None:
        return []
    return [(r, "less" if r.rate < ref.rate else "more") for r in rows if not r.is_2020 and r.p_holm < 0.05]


def same_collapse_seeds(recipes: list[Recipe]) -> list[tuple[Recipe, Recipe]]:
    """Pairs of settings (same encoding) whose runs collapsed on exactly the same seeds."""
    pairs = [(a, b) for i, a in enumerate(recipes) for b in recipes[i + 1:]
             if len(a.collapsed_seeds) > 1 and a.collapsed_seeds == b.collapsed_seeds and a.encoding == b.encoding]
    return sorted(pairs, key=lambda p: -len(p[0].collapsed_seeds))


def seed_span(seeds) -> str:
    """'0-9' for a run of consecutive seeds, else '0, 2, 5'."""
    v = sorted({int(x) for x in seeds})
    if not v:
        return "none"
    return f"{v[0]}-{v[-1]}" if len(v) > 2 and v == list(range(v[0], v[-1] + 1)) else ", ".join(map(str, v))


def _vs_ce(f, encoding: str) -> list[Comparison]:
    """Cross-entropy against every other loss with ``encoding``."""
    return [c for o in f.losses if o != "crossentropy" and (c := f.comparison(encoding, "crossentropy", o))]


def ranking(f) -> tuple[str, list[Comparison], list[Comparison]]:
    """'Cross-entropy is the loss to use': :func:`loss_ranking_verdict` with the comparisons it read."""
    ints, ohs = _vs_ce(f, "integer"), _vs_ce(f, "onehot")
    return loss_ranking_verdict(ints, ohs), ints, ohs


def metric_is_class0_share(m: OriginalModel | None) -> bool:
    """The 2020 'accuracy' of a model is the share of its predictions of class 0 (within half a point)."""
    return m is not None and abs(m.recomputed_metric - m.class0_share) <= 0.005


def near_chance(i, classes: int = 4, within: float = 0.05) -> bool:
    """An accuracy whose interval lies within ``within`` of chance (1 / classes)."""
    return i.known and abs(i.lo - 1 / classes) <= within and abs(i.hi - 1 / classes) <= within


def raw_pixels(m: OriginalModel | None) -> bool | None:
    """Do the 2020 weights read raw 0-255 pixels (on 0-1 pixels they fall below their re-score's interval)?"""
    if m is None or math.isnan(m.unit_inputs):
        return None
    return m.unit_inputs < m.true.lo


def argmax_by_noise(m: OriginalModel | None, spread: float = 0.01) -> bool:
    """The four outputs of a model differ within an image by less than ``spread``: its argmax is noise."""
    return m is not None and m.spread_within_image < spread


def regression_learned(m: OriginalModel | None) -> bool:
    """Read as the regression it was trained for, the model does better than chance (its interval above 25%)."""
    return m is not None and m.regression.known and m.regression.lo > 0.25


def smaller_than(comparisons: list[Comparison], sd: float) -> int:
    """How many differences between settings are smaller in size than ``sd`` (a single run's spread)."""
    return sum(1 for c in comparisons if abs(c.diff.value) < sd)
