"""The intervals: seeds and same-cell clusters, stratification, the boundary, paired differences, Fisher."""
import numpy as np
import pytest

from wbc_utils.stats import (
    Clusters,
    difference_interval,
    equivalence_margin,
    fisher_exact,
    holm,
    mean_interval,
    wilson,
)


def _design(n_clusters=40, per=10, classes=4):
    cells = np.repeat(np.arange(n_clusters), per)
    strata = cells % classes
    return cells, strata


def test_clusters_sums_and_sizes():
    c = Clusters.of(["b", "a", "b", "c"], strata=[1, 0, 1, 2])
    assert list(c.ids) == ["a", "b", "c"] and list(c.sizes) == [1, 2, 1] and list(c.strata) == [0, 1, 2]
    assert list(c.sums([1, 1, 0, 1])) == [1, 1, 1]
    assert c.sums(np.array([[1, 1, 0, 1], [0, 0, 1, 1]])).tolist() == [[1, 1, 1], [0, 1, 1]]


def test_stratified_draws_keep_the_class_mix():
    cells, strata = _design()
    c = Clusters.of(cells, strata)
    d = c.draw(500, np.random.default_rng(0), stratified=True)
    for s in range(4):
        assert (d[:, c.strata == s].sum(1) == 9).all()  # m - 1 of each class's 10 cells (rescaled bootstrap)
    u = c.draw(500, np.random.default_rng(0), stratified=False)
    assert (u.sum(1) == 39).all() and u[:, c.strata == 0].sum(1).std() > 0


def test_seeds_that_disagree_widen_the_interval():
    """Same pooled accuracy; when the seeds disagree, the interval must be wider, and wider than the old way
    (average each image over seeds, then resample cells only)."""
    cells, strata = _design()
    rng = np.random.default_rng(1)
    base = (rng.random(len(cells)) < 0.5).astype(float)
    agree = np.stack([base, base, base, base])
    # seed-to-seed: two seeds far better than the other two, as at the quick profile's size
    hi_ = (rng.random(len(cells)) < 0.8).astype(float)
    lo_ = (rng.random(len(cells)) < 0.2).astype(float)
    disagree = np.stack([hi_, lo_, hi_, lo_])
    c = Clusters.of(cells, strata)
    r_agree, r_dis = mean_interval(agree, c), mean_interval(disagree, c)
    old_way = mean_interval(disagree.mean(0), c)
    assert r_dis["n_seeds"] == 4 and r_dis["method"].startswith("seeds and cells")
    width = lambda r: r["hi"] - r["lo"]  # noqa: E731
    assert width(r_dis) > 1.5 * width(r_agree)
    assert width(r_dis) > 1.5 * width(old_way)
    assert abs(r_dis["value"] - disagree.mean()) < 1e-12


def test_images_in_a_cell_move_together():
    cells, strata = _design(n_clusters=20, per=50)
    c = Clusters.of(cells, strata)
    # whole cells right or wrong: the interval must reflect 20 units, not 1,000 images
    per_cell = (np.arange(20) % 3 != 0).astype(float)
    r = mean_interval(per_cell[cells], c, stratified=False)
    p = r["value"]
    naive_half = 1.96 * np.sqrt(p * (1 - p) / len(cells))
    assert r["method"] == "cells"
    assert (r["hi"] - r["lo"]) / 2 > 2.5 * naive_half


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_boundary_never_gives_a_point_interval(value):
    """All right (or all wrong): cells cannot vary, yet a few dozen cells leave the accuracy uncertain."""
    cells, strata = _design(n_clusters=30)
    c = Clusters.of(cells, strata)
    for stratified in (True, False):
        r = mean_interval(np.full(len(cells), value), c, stratified=stratified)
        assert r["hi"] - r["lo"] > 0.03  # never "100.0% [100.0, 100.0]"
        if value == 1.0:
            assert r["hi"] == 1.0 and 0.75 < r["lo"] < 0.99
        else:
            assert r["lo"] == 0.0 and 0.01 < r["hi"] < 0.25


def test_one_wrong_image_does_not_make_the_interval_jump():
    """4 cells of 155 images all right, then one image wrong: the two intervals must be close."""
    cells = np.repeat(np.arange(4), 155)
    c = Clusters.of(cells)
    right = np.ones(len(cells))
    one_wrong = right.copy()
    one_wrong[0] = 0
    a, b = mean_interval(right, c), mean_interval(one_wrong, c)
    assert a["lo"] < 0.7 and b["lo"] < 0.7 and abs(a["lo"] - b["lo"]) < 0.1  # not from a range to a point


def test_a_class_without_variation_still_widens_the_stratified_interval():
    """A model that reads every cell of one class right and every other cell wrong: within each class
    nothing varies, yet the interval must not collapse onto the value."""
    cells, strata = _design(n_clusters=24, per=20)
    c = Clusters.of(cells, strata)
    v = (strata == 0).astype(float)
    r = mean_interval(v, c)
    assert r["value"] == pytest.approx(0.25)
    assert r["hi"] - r["lo"] > 0.05


def test_wilson_known_values():
    lo, hi = wilson(68, 68)
    assert hi == 1.0 and abs(lo - 0.9466) < 1e-3
    lo, hi = wilson(5, 10)
    assert abs(lo - 0.2366) < 1e-3 and abs(hi - 0.7634) < 1e-3


def test_difference_paired_and_resolved_only_when_interval_excludes_zero():
    cells, strata = _design()
    c = Clusters.of(cells, strata)
    rng = np.random.default_rng(2)
    a = (rng.random((3, len(cells))) < 0.5).astype(float)
    same = difference_interval(a, a, c)
    assert same["diff"] == 0 and not same["resolved"] and same["verdict"] == "not resolved"
    better = np.minimum(1, a + (rng.random((3, len(cells))) < 0.6))
    d = difference_interval(better, a, c)
    assert d["resolved"] and d["verdict"] == "A better" and d["lo"] > 0
    assert difference_interval(a, better, c)["verdict"] == "B better"
    with pytest.raises(ValueError):
        difference_interval(a, a[:, :-1], c)


def _test_like_design():
    """TEST's unseen cells: 12 / 5 / 4 / 41 cells per class with 48 / 104 / 155 / 14 images each."""
    per, imgs = [12, 5, 4, 41], [48, 104, 155, 14]
    cls = np.concatenate([np.full(c * i, k) for k, (c, i) in enumerate(zip(per, imgs))])
    cell = np.concatenate([np.repeat(np.arange(c) + 100 * k, i) for k, (c, i) in enumerate(zip(per, imgs))])
    return cls, cell


@pytest.mark.parametrize("n_seeds,seed_sd", [(5, 0.5), (3, 0.5), (1, 0.0)])
def test_intervals_cover_the_recipe_on_tests_design(n_seeds, seed_sd):
    """Simulated recipes on TEST's unbalanced design (4 monocyte cells carry a quarter of the images): the 95%
    interval must contain the recipe's true accuracy at least 92% of the time (300 repetitions: about 1.3
    points of noise). A percentile bootstrap covered 82-90% here."""
    cls, cell = _test_like_design()
    c = Clusters.of(cell, cls)
    base = np.array([0.0, 0.5, 0.3, -0.5])
    rng = np.random.default_rng(7)
    z, zs = rng.normal(0, 1.5, 200000), rng.normal(0, seed_sd, 200000)
    w = np.bincount(cls) / len(cls)
    truth = float(sum(w[h] * np.mean(1 / (1 + np.exp(-(base[h] + z + zs)))) for h in range(4)))
    ids = np.unique(cell)
    reps, hits = 300, 0
    for _ in range(reps):
        effect = dict(zip(ids, rng.normal(0, 1.5, len(ids))))
        logit = base[cls] + np.array([effect[x] for x in cell])
        p = 1 / (1 + np.exp(-(logit[None, :] + rng.normal(0, seed_sd, n_seeds)[:, None])))
        r = mean_interval((rng.random(p.shape) < p).astype(float), c)
        hits += r["lo"] <= truth <= r["hi"]
    assert hits / reps >= 0.92


def test_fisher_exact_and_holm():
    assert abs(fisher_exact(5, 5, 0, 5) - 0.00794) < 1e-4
    assert fisher_exact(2, 3, 0, 3) == pytest.approx(0.4, abs=1e-9)
    assert fisher_exact(1, 5, 1, 5) == 1.0
    adj = holm([0.01, 0.04, np.nan, 0.03])
    assert adj[0] == pytest.approx(0.03) and adj[3] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06)
    assert np.isnan(adj[2])


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("shared", [True, False])
def test_paired_differences_cover_and_narrow_when_the_seed_is_shared(shared):
    """Two settings trained on the same 5 seeds, on TEST's unbalanced design. With the seed's effect shared by
    both settings (what a seed does here: same weights, images and batch order), the paired interval must
    cover the true difference at least 92% of the time and be clearly narrower than the unpaired one; with
    no shared part, pairing must not undercover."""
    cls, cell = _test_like_design()
    c = Clusters.of(cell, cls)
    base, delta, n_seeds = np.array([0.0, 0.5, 0.3, -0.5]), 0.3, 5
    shared_sd, own_sd = (0.6, 0.15) if shared else (0.0, 0.6)
    rng = np.random.default_rng(11)
    big = 400000
    u = rng.normal(0, 1.5, big) + rng.normal(0, 0.4, big) + rng.normal(0, np.hypot(shared_sd, own_sd), big)
    w = np.bincount(cls) / len(cls)
    truth = float(sum(w[h] * np.mean(_sigmoid(base[h] + delta + u) - _sigmoid(base[h] + u)) for h in range(4)))
    ids = np.unique(cell)
    pos = np.searchsorted(ids, cell)
    reps, hits, hits_unpaired, widths = 300, 0, 0, []
    for _ in range(reps):
        cell_fx = rng.normal(0, 1.5, len(ids))[pos]
        seed_fx = rng.normal(0, shared_sd, n_seeds)[:, None]
        arms = []
        for shift in (delta, 0.0):
            logit = base[cls] + shift + cell_fx + rng.normal(0, 0.4, len(ids))[pos]
            p = _sigmoid(logit[None, :] + seed_fx + rng.normal(0, own_sd, n_seeds)[:, None])
            arms.append((rng.random(p.shape) < p).astype(float))
        pr = difference_interval(*arms, c, paired=True)
        un = difference_interval(*arms, c, paired=False)
        assert pr["paired"] and not un["paired"] and pr["diff"] == un["diff"]
        hits += pr["lo"] <= truth <= pr["hi"]
        hits_unpaired += un["lo"] <= truth <= un["hi"]
        widths.append((pr["hi"] - pr["lo"]) / (un["hi"] - un["lo"]))
    assert hits / reps >= 0.92
    assert hits_unpaired / reps >= 0.92
    if shared:
        assert np.median(widths) < 0.8


def test_paired_needs_matched_seeds_and_equivalence_names_the_smallest_margin():
    cells, strata = _design()
    c = Clusters.of(cells, strata)
    rng = np.random.default_rng(3)
    a = (rng.random((3, len(cells))) < 0.7).astype(float)
    with pytest.raises(ValueError, match="same seeds"):
        difference_interval(a, a[:2], c, paired=True)
    same = difference_interval(a, a, c, paired=True)
    assert same["equivalence"] == 2.0 and same["se"] == 0
    assert same["mde"] == 0
    d = difference_interval(a, np.flipud(a), c, paired=True)
    assert d["mde"] > d["hi"] - d["diff"] > 0  # 80% power needs more than the half-width
    assert equivalence_margin(-0.04, 0.049) == 5.0
    assert equivalence_margin(-0.04, 0.06) == 10.0
    assert equivalence_margin(-0.12, 0.01) is None
    far = np.minimum(1, a + (rng.random(a.shape) < 0.6))
    assert difference_interval(far, a, c, paired=True)["equivalence"] is None


def test_clopper_pearson_known_values():
    from wbc_utils.stats import clopper_pearson

    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and abs(hi - (1 - 0.025 ** (1 / 10))) < 1e-9  # the closed form at 0 successes
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and abs(lo - 0.025 ** (1 / 10)) < 1e-9
    lo, hi = clopper_pearson(5, 14)
    lo2, hi2 = clopper_pearson(9, 14)
    assert abs(lo - (1 - hi2)) < 1e-9 and abs(hi - (1 - lo2)) < 1e-9  # symmetric in successes and failures
    assert 0.12 < lo < 0.14 and 0.63 < hi < 0.66  # 5/14: 0.128 to 0.649
