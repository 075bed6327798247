"""Intervals for a study whose images are not independent and whose models vary from seed to seed.

Two sources of uncertainty sit under every accuracy this study quotes:

* **the cells.** TEST's 2,487 images are augmented copies of 71 slides, which
  show 68 independent white cells (see :mod:`wbc_utils.slides`). Images of
  one cell succeed or fail together, so the unit of resampling is the
  *same-cell cluster*, never the image. The class mix is fixed by the
  dataset's design (TEST's unseen cells: 12 eosinophils, 5 lymphocytes, 4
  monocytes, 41 neutrophils), so the clusters' spread is taken *within their
  class* (stratified); the unstratified interval is kept beside it as a check.
* **the training run.** Trained again with another seed, the same recipe
  reaches another accuracy; at the quick profile's size the spread is larger
  than most differences between losses. A figure pooled over seeds therefore
  counts the seeds' spread as well as the cells'. Comparisons pair the
  settings on the *same* cells, and on the same seeds where both settings were
  trained from the same seeds (a seed fixes the initial weights, the training
  images and the batch order, so its shared part cancels in the difference).

The interval of a pooled figure is design-based: its variance adds the
seeds' part (the spread of the per-seed estimates) and the cells' part (the
spread of the clusters within each class, the classes weighted by their fixed
share), and it uses Student's t with Satterthwaite's degrees of freedom. With
4 monocyte cells or 3 seeds, a percentile bootstrap undercovers (82-90% on
TEST's design, measured by the simulation in ``tests/test_stats.py``, which
requires at least 92%). A class whose cells were all read right cannot vary
among its cells; cells read entirely right or wrong are treated as the
Bernoulli trials they are, with a Jeffreys estimate, so 4 monocyte cells all
right still leave the monocyte recall uncertain. ``wilson`` gives the
classical interval for a proportion of independent units where one is
wanted. The cluster bootstrap (:meth:`Clusters.draw`) remains for statistics
without a closed-form variance (calibration error, ensembles).

The t intervals are closed-form; the bootstrap's draws are seeded (``BOOT_SEED``), so every interval is
reproducible.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

N_BOOT = 2000
#: The original report's date: fixed, so intervals are reproducible.
BOOT_SEED = 20200503
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Clusters:
    """Observations grouped into independent clusters, each in one stratum (its class).

    ``index[i]`` is the position of observation ``i``'s cluster in ``ids``;
    ``strata[j]`` and ``sizes[j]`` are cluster ``j``'s stratum and number of
    observations.
    """

    ids: np.ndarray
    index: np.ndarray
    strata: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, cells: Sequence[Any], strata: Sequence[Any] | None = None) -> Clusters:
        """Clusters from one cluster id per observation (and its stratum: the first observation's)."""
        cells = np.asarray(cells)
        if cells.ndim != 1 or len(cells) == 0:
            raise ValueError("clusters need a non-empty 1-D array of cluster ids")
        ids, first, index = np.unique(cells, return_index=True, return_inverse=True)
        st = np.zeros(len(ids), int) if strata is None else np.asarray(strata)[first]
        return cls(ids=ids, index=index.reshape(-1), strata=st, sizes=np.bincount(index.reshape(-1)))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_obs(self) -> int:
        return len(self.index)

    def sums(self, values) -> np.ndarray:
        """Per-cluster sums of ``values`` ((N,) -> (C,), or (S, N) -> (S, C))."""
        v = np.asarray(values, float)
        if v.shape[-1] != self.n_obs:
            raise ValueError(f"{v.shape[-1]} values for {self.n_obs} observations")
        if v.ndim == 1:
            return np.bincount(self.index, weights=v, minlength=len(self))
        return np.stack([np.bincount(self.index, weights=row, minlength=len(self)) for row in v])

    def draw(self, n_boot: int, rng: np.random.Generator, stratified: bool = True) -> np.ndarray:
        """(n_boot, C) counts: how often each cluster is drawn in each resample (with replacement).

        Each stratum's m clusters are resampled among themselves (stratified; one stratum otherwise), m - 1 per
        resample: the rescaled bootstrap of Rao and Wu (1988), whose variance is the unbiased one where drawing
        m gives (m - 1)/m of it. Ratio statistics (accuracies, calibration error) need no rescaling of weights.
        """
        counts = np.zeros((n_boot, len(self)), np.int64)
        groups = [np.flatnonzero(self.strata == s) for s in np.unique(self.strata)] if stratified \
            else [np.arange(len(self))]
        for g in groups:
            counts[:, g] = rng.multinomial(max(1, len(g) - 1), np.full(len(g), 1 / len(g)), size=n_boot)
        return counts


def wilson(successes: float, n: float, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``successes`` out of ``n`` (fractional counts allowed)."""
    from scipy.stats import norm

    if n <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return float(lo), float(hi)


def clopper_pearson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval for a proportion of independent trials, e.g. runs that collapsed."""
    from scipy.stats import beta

    if n <= 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(a, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - a, successes + 1, n - successes))
    return lo, hi


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """The exact (binomial) McNemar test for paired yes/no outcomes: ``only_a`` pairs where only A said yes,
    ``only_b`` where only B did; two-sided p (1.0 when no pair disagrees)."""
    from scipy.stats import binomtest

    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(min(only_a, only_b), n, 0.5).pvalue)


def _as_seeds(values) -> np.ndarray:
    v = np.asarray(values, float)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2:
        raise ValueError(f"expected (N,) or (seeds, N) values, got shape {v.shape}")
    return v


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    return float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def _groups(clusters: Clusters, stratified: bool) -> list[np.ndarray]:
    if not stratified:
        return [np.arange(len(clusters))]
    return [np.flatnonzero(clusters.strata == s) for s in np.unique(clusters.strata)]


def _stratum_parts(y: np.ndarray, n: np.ndarray, g: np.ndarray) -> tuple[float, np.ndarray]:
    """A stratum's image-weighted mean of the per-cluster values ``y[g]`` (pooled over seeds), and each
    cluster's linearised residual (the ratio estimator's influence), whose variance / m is the stratum's."""
    ng, yg = n[g], y[g]
    r = float((ng * yg).sum() / ng.sum())
    return r, ng * (yg - r) / ng.mean()


def _t_interval(value: float, var: float, df: float, level: float) -> tuple[float, float]:
    from scipy.stats import t as student

    if var <= 0:
        return value, value
    half = float(student.ppf(1 - (1 - level) / 2, max(df, 1.0))) * float(np.sqrt(var))
    return value - half, value + half


def _per_seed(k: np.ndarray, n: np.ndarray, groups: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    """Each seed's stratified estimate: (S,)."""
    return np.array([sum(wh * (row[g].sum() / n[g].sum()) for wh, g in zip(w, groups)) for row in k])


def mean_interval(values, clusters: Clusters, level: float = LEVEL, stratified: bool = True, **_) -> dict:
    """The mean of per-observation ``values`` (e.g. 1 = correct), pooled over seeds, with its interval.

    ``values`` is (N,) for one model, or (S, N) for S seeds of one recipe: the estimate is the mean over seeds.
    Its variance has two parts, as the design has two sources: the seeds (the spread of the S per-seed
    estimates, / S) and the cells (within each stratum, the spread of the clusters' seed-pooled values, / m,
    with the stratum weighted by its fixed share of observations). Cells read entirely right (or entirely
    wrong) behave as Bernoulli trials: a stratum's spread is at least the binomial variance p(1 - p) of its
    Jeffreys estimate p = (s + 1/2) / (m + 1), in the proportion of such cells. A class whose few cells were
    all read right therefore still varies (4 of 4 gives about the Wilson interval), and one wrong image among
    them moves the interval a little, not from a point to a range. The interval is estimate +- t * sd, with
    Satterthwaite's degrees of freedom: 4 monocyte cells or 3 seeds give few, and wide t quantiles, where a
    normal or percentile-bootstrap interval undercovers (82-90% in the simulation of ``tests/test_stats.py``).
    With one seed the interval is about that trained model, not its recipe. Returns ``value, lo, hi, method,
    se, df, n_obs, n_clusters, n_seeds``.
    """
    v = _as_seeds(values)
    n_seeds = v.shape[0]
    k = clusters.sums(v)                                  # (S, C)
    n = clusters.sizes.astype(float)                      # (C,)
    y = k.sum(0) / (n_seeds * n)                          # seed-pooled value of each cluster
    groups = _groups(clusters, stratified)
    w = np.array([n[g].sum() / n.sum() for g in groups])
    value = float(k.sum() / (n_seeds * n.sum()))
    parts, dfs = [], []
    for wh, g in zip(w, groups):
        _, e = _stratum_parts(y, n, g)
        m = len(g)
        p = (float(y[g].sum()) + 0.5) / (m + 1)
        whole = float(np.mean((y[g] <= 0) | (y[g] >= 1)))   # cells read entirely wrong or entirely right
        s2 = max(float((e ** 2).sum()) / (m - 1) if m > 1 else 0.0, whole * p * (1 - p))
        parts.append(wh * wh * s2 / m)
        dfs.append(max(m - 1, 1))
    if n_seeds > 1:
        parts.append(float(np.var(_per_seed(k, n, groups, w), ddof=1)) / n_seeds)
        dfs.append(n_seeds - 1)
    var = float(sum(parts))
    df = var * var / sum(p_ * p_ / d for p_, d in zip(parts, dfs)) if var > 0 else 1.0
    lo, hi = _t_interval(value, var, df, level)
    method = ("seeds and cells" if n_seeds > 1 else "cells") + (", stratified" if stratified else "")
    return {"value": value, "lo": max(0.0, min(lo, value)), "hi": min(1.0, max(hi, value)), "method": method,
            "se": float(np.sqrt(var)), "df": float(df), "n_obs": clusters.n_obs, "n_clusters": len(clusters),
            "n_seeds": n_seeds, "stratified": stratified}


#: The equivalence margins fixed before the full profile ran (percentage points): a comparison whose whole
#: interval lies inside +-X of zero shows that the two settings differ by no more than X (the smallest X is quoted).
EQUIVALENCE_MARGINS = (2.0, 5.0, 10.0)


def equivalence_margin(lo: float, hi: float, margins: Sequence[float] = EQUIVALENCE_MARGINS) -> float | None:
    """The smallest margin X (in points) with -X < lo and hi < X (``lo``, ``hi`` as fractions), or None."""
    for x in sorted(margins):
        if -x / 100 < lo and hi < x / 100:
            return float(x)
    return None


def detectable_difference(se: float, df: float, level: float = LEVEL, power: float = 0.8) -> float:
    """The smallest true difference that a design with this standard error and these degrees of freedom resolves
    (its interval excludes 0) with probability ``power``: (t_{1-a/2} + t_power) * se."""
    from scipy.stats import t as student

    d = max(float(df), 1.0)
    return float((student.ppf(1 - (1 - level) / 2, d) + student.ppf(power, d)) * se)


def difference_interval(values_a, values_b, clusters: Clusters, level: float = LEVEL, stratified: bool = True,
                        paired: bool = False, **_) -> dict:
    """Mean of A minus mean of B on the same observations, each pooled over its seeds.

    Always paired on cells: the cell part of the variance is the spread of the clusters' seed-pooled paired
    differences within each stratum (/ m). The seed part depends on the design:

    * ``paired=False``: the arms' seeds are independent runs; the seed part is each arm's spread of per-seed
      estimates (/ its seeds).
    * ``paired=True``: row s of A and row s of B were trained from the same seed (the same initial weights,
      training images and batch order), so the seed's shared part cancels in their difference; the seed part
      is the spread of the S per-seed differences (/ S), with S - 1 degrees of freedom.

    The interval is difference +- t * sd with Satterthwaite's degrees of freedom. ``resolved`` is True only when
    it excludes 0; ``verdict`` says which is better, or "not resolved"; ``equivalence`` is the smallest margin of
    :data:`EQUIVALENCE_MARGINS` (points) that the whole interval lies inside, or None; ``mde`` is the smallest true
    difference this design detects with 80% power (:func:`detectable_difference`). With one seed on a side,
    the comparison is between trained models, not recipes.
    """
    a, b = _as_seeds(values_a), _as_seeds(values_b)
    if a.shape[1] != b.shape[1] or a.shape[1] != clusters.n_obs:
        raise ValueError("a paired comparison needs both arms scored on the same observations")
    if paired and a.shape[0] != b.shape[0]:
        raise ValueError(f"paired=True needs the same seeds in both arms, in the same order; got {a.shape[0]} and "
                         f"{b.shape[0]} seeds (use paired=False for independent seeds)")
    ka, kb = clusters.sums(a), clusters.sums(b)
    n = clusters.sizes.astype(float)
    sa, sb = a.shape[0], b.shape[0]
    diff = float(ka.sum() / (sa * n.sum()) - kb.sum() / (sb * n.sum()))
    d = ka.sum(0) / (sa * n) - kb.sum(0) / (sb * n)
    groups = _groups(clusters, stratified)
    w = np.array([n[g].sum() / n.sum() for g in groups])
    parts, dfs = [], []
    for wh, g in zip(w, groups):
        if len(g) > 1:
            _, e = _stratum_parts(d, n, g)
            parts.append(wh * wh * float((e ** 2).sum()) / (len(g) - 1) / len(g))
            dfs.append(len(g) - 1)
    if paired:
        if sa > 1:
            per_seed = _per_seed(ka, n, groups, w) - _per_seed(kb, n, groups, w)
            parts.append(float(np.var(per_seed, ddof=1)) / sa)
            dfs.append(sa - 1)
    else:
        for kk, ss in ((ka, sa), (kb, sb)):
            if ss > 1:
                parts.append(float(np.var(_per_seed(kk, n, groups, w), ddof=1)) / ss)
                dfs.append(ss - 1)
    var = float(sum(parts))
    df = var * var / sum(p_ * p_ / d_ for p_, d_ in zip(parts, dfs)) if var > 0 else 1.0
    lo, hi = _t_interval(diff, var, df, level)
    lo, hi = min(lo, diff), max(hi, diff)
    resolved = bool(lo > 0 or hi < 0)
    return {"diff": diff, "lo": lo, "hi": hi, "resolved": resolved, "se": float(np.sqrt(var)), "df": float(df),
            "mde": detectable_difference(float(np.sqrt(var)), df, level),
            "verdict": ("A better" if lo > 0 else "B better") if resolved else "not resolved",
            "equivalence": None if resolved else equivalence_margin(lo, hi), "paired": bool(paired),
            "n_seeds_a": sa, "n_seeds_b": sb, "n_clusters": len(clusters), "stratified": stratified}


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are left out and kept as NaN)."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p[j]))
        out[j] = running
    return out


def fisher_exact(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided Fisher exact test p-value for k_a/n_a against k_b/n_b (e.g. runs that collapsed)."""
    from scipy.stats import fisher_exact as _fisher

    if min(n_a, n_b) < 1:
        return float("nan")
    return float(_fisher([[k_a, n_a - k_a], [k_b, n_b - k_b]]).pvalue)
