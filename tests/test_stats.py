"""The intervals: two-stage (seeds, then cells) bootstrap, stratification, the boundary, Fisher."""
import numpy as np
import pytest

from wbc_utils.stats import Clusters, difference_interval, fisher_exact, mean_interval, wilson


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
        assert (d[:, c.strata == s].sum(1) == 10).all()
    u = c.draw(500, np.random.default_rng(0), stratified=False)
    assert (u.sum(1) == 40).all() and u[:, c.strata == 0].sum(1).std() > 0


def test_seeds_that_disagree_widen_the_interval():
    """Same pooled accuracy; when the seeds disagree, the two-stage interval must be wider, and wider than
    the old way (average each image over seeds, then resample cells only)."""
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
    assert r_dis["n_seeds"] == 4 and r_dis["method"].startswith("two-stage bootstrap")
    width = lambda r: r["hi"] - r["lo"]  # noqa: E731
    assert width(r_dis) > 1.5 * width(r_agree)
    assert width(r_dis) > 1.5 * width(old_way)
    assert abs(r_dis["value"] - disagree.mean()) < 1e-12


def test_one_seed_is_a_cluster_bootstrap_and_images_in_a_cell_move_together():
    cells, strata = _design(n_clusters=20, per=50)
    c = Clusters.of(cells, strata)
    # whole cells right or wrong: the interval must reflect 20 units, not 1,000 images
    per_cell = (np.arange(20) % 3 != 0).astype(float)
    r = mean_interval(per_cell[cells], c)
    p = r["value"]
    naive_half = 1.96 * np.sqrt(p * (1 - p) / len(cells))
    assert r["method"].startswith("cluster bootstrap")
    assert (r["hi"] - r["lo"]) / 2 > 2.5 * naive_half


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_boundary_never_gives_a_point_interval(value):
    """All right (or all wrong): resampling cannot vary; each class is drawn from its Jeffreys posterior."""
    cells, strata = _design(n_clusters=30)
    c = Clusters.of(cells, strata)
    for stratified in (True, False):
        r = mean_interval(np.full(len(cells), value), c, stratified=stratified)
        assert r["smoothed_strata"] == (4 if stratified else 1)
        assert r["hi"] - r["lo"] > 0.03  # never "100.0% [100.0, 100.0]"
        if value == 1.0:
            assert r["hi"] == 1.0 and 0.75 < r["lo"] < 0.99
        else:
            assert r["lo"] == 0.0 and 0.01 < r["hi"] < 0.25
    # one observation per cell and one stratum: close to the Wilson interval
    r = mean_interval(np.ones(30), Clusters.of(np.arange(30)), stratified=False)
    assert abs(r["lo"] - wilson(30, 30)[0]) < 0.05


def test_a_class_without_variation_still_widens_the_stratified_interval():
    """A model that reads every cell of one class right and every other cell wrong: within each class
    nothing varies, yet the interval must not collapse onto the value."""
    cells, strata = _design(n_clusters=24, per=20)
    c = Clusters.of(cells, strata)
    v = (strata == 0).astype(float)
    r = mean_interval(v, c)
    assert r["value"] == pytest.approx(0.25)
    assert r["smoothed_strata"] == 4 and r["hi"] - r["lo"] > 0.1


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


def test_two_stage_interval_covers_the_truth():
    """A small simulation: cells with random difficulty, seeds with a random offset; the 95% interval of the
    pooled accuracy should contain the recipe's true accuracy in most repetitions."""
    rng = np.random.default_rng(3)
    n_cells, per, n_seeds, reps = 30, 8, 4, 120
    cells = np.repeat(np.arange(n_cells), per)
    c = Clusters.of(cells, cells % 3)
    hits = 0
    truth = 0.6
    for r in range(reps):
        cell_effect = rng.normal(0, 1.0, n_cells)
        seed_effect = rng.normal(0, 0.6, n_seeds)
        logit = np.log(truth / (1 - truth)) + cell_effect[None, cells] + seed_effect[:, None]
        p = 1 / (1 + np.exp(-logit))
        v = (rng.random(p.shape) < p).astype(float)
        # the recipe's truth in this population is close to `truth`; allow the marginal's shift
        res = mean_interval(v, c, n_boot=600, seed=r)
        hits += res["lo"] <= truth + 0.03 and res["hi"] >= truth - 0.03
    assert hits / reps > 0.8


def test_fisher_exact():
    assert abs(fisher_exact(5, 5, 0, 5) - 0.00794) < 1e-4
    assert fisher_exact(2, 3, 0, 3) == pytest.approx(0.4, abs=1e-9)
    assert fisher_exact(1, 5, 1, 5) == 1.0
