"""Intervals for a study whose images are not independent and whose models vary from seed to seed.

Two sources of uncertainty sit under every accuracy this study quotes:

* **the cells.** TEST's 2,487 images are augmented copies of 71 slides, which
  show 68 independent white cells (see :mod:`wbc_utils.slides`). Images of
  one cell succeed or fail together, so the unit of resampling is the
  *same-cell cluster*, never the image. The class mix is fixed by the
  dataset's design (13 eosinophil, 6 lymphocyte, 4 monocyte and 48
  neutrophil cells in TEST), so clusters are resampled *within their class*
  (a stratified cluster bootstrap); the unstratified interval is kept beside
  it as a check.
* **the training run.** Trained again with another seed, the same recipe
  reaches another accuracy; at the quick profile's size the spread is larger
  than most differences between losses. A figure pooled over seeds therefore
  resamples the seeds as well: a **two-stage bootstrap** draws the seeds with
  replacement, then the clusters, and recomputes the pooled accuracy on each
  draw. Comparisons draw each arm's seeds independently and the *same*
  clusters for both (paired on cells).

At the boundary the percentile bootstrap collapses to a point: a class
whose cells were all read right (or all wrong) cannot vary under
resampling, and neither can an accuracy of exactly 0 or 1. There the class's
share is drawn instead from its Jeffreys posterior with one observation per
cell, which is what the data can support: 4 monocyte cells all right still
leave the monocyte recall uncertain. ``wilson`` gives the classical interval
for a proportion of independent units (cells) where one is wanted.

Everything is vectorised: a 2,000-draw two-stage bootstrap over 5 seeds and 68
clusters is a few matrix products. Draws are seeded (``BOOT_SEED``), so every
interval is reproducible.
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

        Stratified: each stratum's clusters are resampled among themselves, so every
        resample keeps the design's number of clusters per class.
        """
        counts = np.zeros((n_boot, len(self)), np.int64)
        groups = [np.flatnonzero(self.strata == s) for s in np.unique(self.strata)] if stratified \
            else [np.arange(len(self))]
        for g in groups:
            counts[:, g] = rng.multinomial(len(g), np.full(len(g), 1 / len(g)), size=n_boot)
        return counts


def seed_draws(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, S) counts of each seed in each resample of the seeds (with replacement)."""
    if n_seeds < 1:
        raise ValueError("at least one seed is needed")
    return rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)


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


def _stratum_means(k: np.ndarray, n: np.ndarray, g: np.ndarray, w: np.ndarray, n_boot: int,
                   rng: np.random.Generator, smooth: bool) -> tuple[np.ndarray, bool]:
    """(n_boot,) resampled means of one stratum: its clusters ``g`` drawn with replacement, the seeds as ``w``.

    With ``smooth``, a stratum in which every cluster of every seed has the same mean (all right, say) cannot
    vary under resampling; its mean is then drawn from the Jeffreys posterior Beta(c m + 1/2, (1 - c) m + 1/2)
    for its m clusters, one observation per cluster. Returns the draws and whether that happened.
    """
    vals = k[:, g] / n[g]
    if smooth and np.ptp(vals) == 0:
        c, m = float(vals.flat[0]), len(g)
        return rng.beta(c * m + 0.5, (1 - c) * m + 0.5, size=n_boot), True
    v = rng.multinomial(len(g), np.full(len(g), 1 / len(g)), size=n_boot)        # (B, |g|)
    return np.einsum("bs,sc,bc->b", w, k[:, g], v) / w.sum(1) / (v @ n[g]), False


def mean_interval(values, clusters: Clusters, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                  level: float = LEVEL, stratified: bool = True) -> dict:
    """The mean of per-observation ``values`` (e.g. 1 = correct), pooled over seeds, with its interval.

    ``values`` is (N,) for one model, or (S, N) for S seeds of one recipe: the estimate is then the mean over
    seeds, and the interval comes from the two-stage bootstrap (seeds, then clusters). Stratified, each
    stratum (class) keeps its number of clusters and its share of observations, as the design fixes them,
    and a stratum with no variation at all is drawn from its Jeffreys posterior (see :func:`_stratum_means`),
    so a class read right on all of its few cells still widens the interval. Returns ``value, lo, hi, method,
    n_obs, n_clusters, n_seeds, smoothed_strata``.
    """
    v = _as_seeds(values)
    n_seeds = v.shape[0]
    k = clusters.sums(v)                                  # (S, C)
    n = clusters.sizes.astype(float)                      # (C,)
    value = float(k.sum() / (n_seeds * n.sum()))
    rng = np.random.default_rng(seed)
    w = seed_draws(n_seeds, n_boot, rng)                  # (B, S)
    boot = np.zeros(n_boot)
    smoothed = 0
    for g in _groups(clusters, stratified):
        means, sm = _stratum_means(k, n, g, w, n_boot, rng, smooth=True)
        boot += n[g].sum() / n.sum() * means
        smoothed += sm
    lo, hi = _percentiles(boot, level)
    method = ("two-stage bootstrap" if n_seeds > 1 else "cluster bootstrap") + (", stratified" if stratified else "")
    return {"value": value, "lo": min(lo, value), "hi": max(hi, value), "method": method,
            "n_obs": clusters.n_obs, "n_clusters": len(clusters), "n_seeds": n_seeds, "n_boot": n_boot,
            "stratified": stratified, "smoothed_strata": smoothed}


def difference_interval(values_a, values_b, clusters: Clusters, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                        level: float = LEVEL, stratified: bool = True) -> dict:
    """Mean of A minus mean of B on the same observations, each pooled over its own seeds.

    Each draw resamples A's seeds and B's seeds independently and the same clusters for both (paired on
    cells; stratified as in :func:`mean_interval`). ``resolved`` is True only when the interval excludes 0;
    ``verdict`` says which is better, or "not resolved".
    """
    a, b = _as_seeds(values_a), _as_seeds(values_b)
    if a.shape[1] != b.shape[1] or a.shape[1] != clusters.n_obs:
        raise ValueError("a paired comparison needs both arms scored on the same observations")
    ka, kb = clusters.sums(a), clusters.sums(b)
    n = clusters.sizes.astype(float)
    sa, sb = a.shape[0], b.shape[0]
    diff = float(ka.sum() / (sa * n.sum()) - kb.sum() / (sb * n.sum()))
    rng = np.random.default_rng(seed)
    wa, wb = seed_draws(sa, n_boot, rng), seed_draws(sb, n_boot, rng)
    boot = np.zeros(n_boot)
    for g in _groups(clusters, stratified):
        v = rng.multinomial(len(g), np.full(len(g), 1 / len(g)), size=n_boot)
        den = v @ n[g]
        d = (np.einsum("bs,sc,bc->b", wa, ka[:, g], v) / sa - np.einsum("bs,sc,bc->b", wb, kb[:, g], v) / sb) / den
        boot += n[g].sum() / n.sum() * d
    lo, hi = _percentiles(boot, level)
    lo, hi = min(lo, diff), max(hi, diff)
    resolved = bool(lo > 0 or hi < 0)
    return {"diff": diff, "lo": lo, "hi": hi, "resolved": resolved,
            "verdict": ("A better" if lo > 0 else "B better") if resolved else "not resolved",
            "n_seeds_a": sa, "n_seeds_b": sb, "n_clusters": len(clusters), "n_boot": n_boot,
            "stratified": stratified}


def fisher_exact(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided Fisher exact test p-value for k_a/n_a against k_b/n_b (e.g. runs that collapsed)."""
    from scipy.stats import fisher_exact as _fisher

    if min(n_a, n_b) < 1:
        return float("nan")
    return float(_fisher([[k_a, n_a - k_a], [k_b, n_b - k_b]]).pvalue)
