"""Study tables and the report's conditional prose, on a study made of synthetic runs (nothing trained)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_dataset

from wbc_utils import analysis as an
from wbc_utils.artifacts import write_json
from wbc_utils.config import profile_dir
from wbc_utils.data import build_manifest
from wbc_utils.evaluation import EVALUATION_VERSION, evaluate_predictions
from wbc_utils.params import RunParams
from wbc_utils.runs import PREDICTION_COLUMNS, Run, load_study, summary_frame


def _fake_run(root, profile, manifest, loss, enc, seed, skill, collapsed=False, simple=True, lr=3e-4):
    """A finished run folder whose predictions are right with probability ``skill`` (constant when collapsed)."""
    rng = np.random.default_rng(hash((loss, enc, seed)) % 2**32)
    p = RunParams(loss=loss, target_encoding=enc, seed=seed, epochs=2, image_size=[48, 64], learning_rate=lr,
                  profile=profile)
    d = profile_dir(profile, root) / p.run_name
    frames = []
    for split in ("TEST", "TEST_SIMPLE") if simple else ("TEST",):
        f = manifest.split(split)[PREDICTION_COLUMNS].copy()
        y = f["label"].to_numpy()
        if collapsed:
            scores = np.tile([0.0, 0.0, 0.0, 1e-4], (len(f), 1))
        else:
            pred = np.where(rng.random(len(f)) < skill, y, (y + 1) % 4)
            scores = np.eye(4)[pred] * 3 + rng.normal(0, 0.1, (len(f), 4))
        f["pred"] = scores.argmax(1)
        for i, c in enumerate(("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")):
            f[f"score_{c}"] = scores[:, i]
        frames.append(f)
    d.mkdir(parents=True)
    pd.concat(frames).to_csv(d / "predictions.csv", index=False)
    m = evaluate_predictions(frames[0], frames[1] if simple else None, loss=loss, encoding=enc,
                             final_train_loss=1.386 if collapsed else 0.5, train_class_counts=[10] * 4)
    m.update(p.to_dict(), final_train_accuracy=skill, final_train_paper_metric=skill, train_seconds=1.0)
    write_json(d / "params.json", p.to_dict())
    pd.DataFrame({"epoch": [1, 2], "loss": [1.4, 1.0], "accuracy": [0.3, skill], "val_accuracy": [0.3, skill],
                  "paper_metric": [0.3, skill], "val_paper_metric": [0.3, skill]}).to_csv(d / "history.csv",
                                                                                           index=False)
    write_json(d / "metrics.json", m)
    return d


@pytest.fixture
def study(tmp_path):
    data = make_dataset(tmp_path / "blood-cells", cells=(3, 3), copies=3)
    manifest = build_manifest(data)
    root = tmp_path / "runs"

    def make(seeds=(0, 1, 2), simple=True, profile="fake"):
        for s in seeds:
            _fake_run(root, profile, manifest, "crossentropy", "integer", s, 0.8, simple=simple)
            _fake_run(root, profile, manifest, "mse", "integer", s, 0.3, simple=simple)
            _fake_run(root, profile, manifest, "mse", "onehot", s, 0.7, simple=simple)
            _fake_run(root, profile, manifest, "crossentropy", "integer", s, 0.25, collapsed=True, simple=simple,
                      lr=1e-3)
        return summary_frame(profile, root)
    return make, root, data


def test_a_study_holds_its_main_and_control_runs_split_once_by_its_profile(study):
    import dataclasses

    from wbc_utils.params import get_profile
    from wbc_utils.study import _profile_dict

    make, root, _ = study
    make(seeds=(0, 1))
    prof = dataclasses.replace(get_profile("smoke"), name="fake", seeds=[0, 1])  # main runs at lr 0.0003
    write_json(profile_dir("fake", root) / "study.json", {"profile": "fake", "profile_settings": _profile_dict(prof)})
    st = load_study("fake", root)
    assert st.kind == "study" and st.settings["losses"] == ["crossentropy", "mse", "huber"]
    assert set(st.main["learning_rate"]) == {3e-4} and set(st.controls["learning_rate"]) == {1e-3}
    assert len(st.main) + len(st.controls) == len(st.runs) == len(st.metrics) == len(st.histories) == 8
    assert st.losses() == ["crossentropy", "mse"] and st.original() is None
    # comparisons are generated from the losses present, in registry order
    assert list(an.paired_table(st.main)["comparison"]) == ["CE - MSE", "CE - MSE"]
    assert an.recipes(st.main) == [("crossentropy", "integer"), ("mse", "integer"), ("mse", "onehot")]


def test_group_table_pools_seeds_and_stands_cross_entropy_for_both_encodings(study):
    make, _, _ = study
    s = make()
    main = s[s["learning_rate"] == 3e-4]
    g = an.group_table(main)
    ce = g[(g["loss"] == "crossentropy")].set_index("encoding")
    assert ce.loc["onehot", "same_runs_as"] == "integer" and ce.loc["onehot", "unseen"] == ce.loc["integer", "unseen"]
    for r in g.itertuples():
        assert r.seeds == 3 and r.unseen_lo <= r.unseen <= r.unseen_hi and r.simple_slides > 0
    mse = g[(g["loss"] == "mse")].set_index("encoding")
    assert mse.loc["onehot", "unseen"] > mse.loc["integer", "unseen"] + 0.2


def test_without_test_simple_the_tables_still_build(study):
    make, _, _ = study
    s = make(simple=False)
    main = s[s["learning_rate"] == 3e-4]
    assert not an._has_simple(main)
    g = an.group_table(main)
    assert "simple" not in g.columns or g["simple"].isna().all()


def test_one_seed_verdicts_speak_of_models_not_recipes(study):
    make, _, _ = study
    s = make(seeds=(0,))
    pt = an.paired_table(s[s["learning_rate"] == 3e-4])
    assert len(pt) and all("two trained models compared, not two recipes" in w for w in pt["words"])


def test_same_seeds_are_paired_and_the_unpaired_interval_stands_beside(study):
    make, _, _ = study
    s = make(seeds=(0, 1, 2))
    main = s[s["learning_rate"] == 3e-4]
    pt = an.paired_table(main).set_index(["encoding", "comparison"])
    r = pt.loc[("integer", "CE - MSE")]
    assert r["paired"] and r["pairing"] == "paired on seeds" and r["seeds_a"] == [0, 1, 2]
    assert r["diff"] == pytest.approx(r["unpaired_diff"]) and "paired" in r["words"]
    assert r["collapsed_a"] == 0 and r["n_a"] == 3 and r["fisher_p"] == 1.0
    assert r["learned_diff"] == pytest.approx(r["diff"])  # nothing collapsed: the learned runs are all the runs
    ce, mse = an.runs_for(main, "crossentropy", "integer"), an.runs_for(main, "mse", "integer")
    # a study stopped part-way: seed 2 trained on one side only is left out, the rest stays paired
    d = an.compare(ce, mse[mse["seed"] != 2])
    assert d["paired"] and d["dropped_seeds"] == [2] and d["seeds_a"] == [0, 1] and d["n_seeds_a"] == 2
    assert "seed 2, trained on one side only, left out" in an.verdict_words(d, "CE", "MSE")
    assert d["diff"] == pytest.approx(an.compare(ce[ce["seed"] != 2], mse[mse["seed"] != 2])["diff"])
    d1 = an.compare(ce, mse[mse["seed"] == 0])
    assert not d1["paired"] and d1["pairing"] == "unpaired: fewer than two seeds on both sides"
    with pytest.raises(ValueError, match="at least two seeds"):
        an.compare(ce, mse[mse["seed"] == 0], paired=True)


def test_a_collapsed_run_leaves_the_learned_comparison_and_counts_in_fisher(study):
    make, root, data = study
    s = make(seeds=(0, 1, 2))
    main = s[s["learning_rate"] == 3e-4].copy()
    ce = an.runs_for(main, "crossentropy", "integer").copy()
    ce.loc[ce["seed"] == 1, "collapsed"] = True
    mse = an.runs_for(main, "mse", "onehot")
    d = an.compare_with_collapse(ce, mse, "CE", "MSE")
    assert (d["collapsed_a"], d["n_a"], d["collapsed_b"]) == (1, 3, 0)
    assert d["learned_seeds"] == "2 vs 2" and "paired" in d["learned_words"]
    assert d["learned_diff"] != pytest.approx(d["diff"])


def test_verdict_words_state_equivalence_inside_a_margin_fixed_in_advance():
    d = {"resolved": False, "diff": 0.01, "equivalence": 5.0, "n_seeds_a": 8, "n_seeds_b": 8, "paired": True,
         "pairing": "paired on seeds"}
    assert an.verdict_words(d, "CE", "MSE") == "no difference larger than 5 points (8 seeds each, paired)"
    assert an.verdict_words({**d, "equivalence": None}, "CE", "MSE") == "not resolved (8 seeds each, paired)"
    # from a table row (pandas gives NaN where no margin holds): the shipped abstract once said "nan points"
    assert an.verdict_words({**d, "equivalence": float("nan")}, "CE", "MSE") == "not resolved (8 seeds each, paired)"
    assert an.verdict_words({**d, "resolved": True}, "CE", "MSE") == "CE is better (8 seeds each, paired)"


def test_collapse_table_counts_the_one_definition_with_holm_adjusted_fisher(study):
    make, _, _ = study
    s = make(seeds=(0, 1, 2, 3, 4))
    t = an.collapse_table(s[s["loss"] == "crossentropy"]).set_index("setting")
    ref = t.loc["CE, integer labels, lr 0.001"]
    other = t.loc["CE, integer labels, lr 0.0003"]
    assert ref["is_2020"] and ref["collapsed"] == 5 and other["collapsed"] == 0
    assert other["fisher_p_vs_2020"] == pytest.approx(0.00794, abs=1e-4) and other["p_holm"] <= 0.05 * 2


def test_stale_evaluations_are_refused_until_re_evaluated(study):
    from wbc_utils.errors import WBCError
    from wbc_utils.reevaluate import reevaluate_run
    make, root, data = study
    s = make(seeds=(0,))
    run = s.iloc[0]["run_dir"]
    m = Run(run).metrics()
    m["evaluation_version"] = EVALUATION_VERSION - 1
    write_json(f"{run}/metrics.json", m)
    with pytest.raises(WBCError, match="reevaluate --profile fake"):
        load_study("fake", root)
    assert reevaluate_run(run, build_manifest(data))
    assert Run(run).metrics()["evaluation_version"] == EVALUATION_VERSION
    load_study("fake", root)


def test_report_sections_render_without_2020_weights_or_other_studies(study, monkeypatch):
    """A report on a study with one seed, no 2020 weights, no collapse or best study: every section renders
    and says what is missing instead of asserting it."""
    import matplotlib

    matplotlib.use("Agg")
    from wbc_utils.sections import Report

    make, root, data = study
    make(seeds=(0,))
    monkeypatch.setenv("WBC_DATA_DIR", str(data))
    import dataclasses

    from wbc_utils.params import get_profile
    from wbc_utils.study import _profile_dict

    prof = dataclasses.replace(get_profile("smoke"), name="fake", seeds=[0], train_subset=0)
    write_json(profile_dir("fake", root) / "study.json", {"profile": "fake", "profile_settings": _profile_dict(prof)})
    rep = Report.load("fake", root, best_profile="", collapse_profile="")
    html = rep.html()
    assert "The 2020 weights were not found" in html and "Its cross-entropy figure stands" not in html
    assert "With one seed, an interval is about one trained model" in html
    assert "two trained models compared, not two recipes" in html
    assert "adds a section on a from-scratch model" in html and "Traceback" not in html
    assert rep.doc.counters["tab"] >= 4 and rep.doc.counters["fig"] >= 3 and rep.doc.unresolved() == []


def test_pilot_arithmetic_plateau_and_seeds_for_a_margin():
    assert an.plateau_epoch([0.3, 0.5, 0.69, 0.7, 0.68, 0.71], window=1) == 3
    assert an.plateau_epoch([0.3, 0.5, 0.69, 0.5, 0.68, 0.71, 0.70, 0.70]) == 6  # one lucky epoch is not a plateau
    assert an.plateau_epoch([0.3, 0.5, 0.69, 0.7, 0.68, 0.71], tol=0.005, window=1) == 6
    d = an.seeds_for_margin(0.05, margin=0.05)
    # t(n-1) * 0.05 / sqrt(n) < 0.05 first at n = 7 (2.447 / sqrt(7) = 0.925)
    assert d["seeds"] == 7 and d["half_width"][6] >= 0.05 > d["half_width"][7]
    assert d["mde"][10] > d["half_width"][10]
    assert an.seeds_for_margin(0.05, margin=0.05, cell_se=0.015)["seeds"] > 7
    assert an.seeds_for_margin(0.05, margin=0.05, cell_se=0.03)["seeds"] is None  # the cells alone exceed it
    assert an.seeds_for_margin(0.5, margin=0.05)["seeds"] is None


def _pilot_row(size, lr, vals, plateau, epochs=15, loss="crossentropy", collapsed=0):
    learned = sum(v >= 0.35 for v in vals)  # a collapsed seed sits near chance
    return {"candidate": f"{loss} {size} {lr}", "loss": loss, "encoding": "integer", "image_size": size,
            "learning_rate": lr, "val_per_seed": vals,
            "val_mean": float(np.mean(vals)), "plateau_epoch": plateau, "epochs": epochs, "collapsed": collapsed,
            "learned": learned, "runs": len(vals)}


def test_the_pilot_rule_picks_rate_size_epochs_and_seeds():
    t = pd.DataFrame([_pilot_row("60x80", 3e-4, [0.70, 0.66, 0.72], 9),
                      _pilot_row("60x80", 1e-3, [0.25, 0.70, 0.68], 8, collapsed=1),
                      _pilot_row("120x160", 3e-4, [0.71, 0.69, 0.73], 10)])
    spread = {"sd": 0.05, "diffs": [0.02, -0.03, 0.07]}
    c = an.choose_design(t, spread)
    assert c["learning_rate"] == 3e-4 and c["image_size"] == [60, 80] and c["epochs"] == 9
    assert c["seeds"] == 7 and len(c["reasons"]) == 4
    # a clearly better larger size wins; a plateau not reached keeps the pilot's epochs; every seed learning at
    # the 2020 rate keeps it; a wide spread plans the most seeds
    t2 = pd.DataFrame([_pilot_row("60x80", 1e-3, [0.60, 0.61, 0.62], 15),
                       _pilot_row("120x160", 1e-3, [0.70, 0.69, 0.73], 15)])
    c2 = an.choose_design(t2, {"sd": 0.2, "diffs": [0.2, -0.2, 0.1]})
    assert c2["learning_rate"] == 1e-3 and c2["image_size"] == [120, 160] and c2["epochs"] == 15
    assert c2["seeds"] == an.MAX_SEEDS and "still rises" in c2["reasons"][2]


def test_the_pilot_rule_breaks_a_tie_by_validation_and_keeps_the_other_rate_as_control():
    t = pd.DataFrame([_pilot_row("60x80", 3e-4, [0.60, 0.27, 0.63], 9),
                      _pilot_row("60x80", 1e-3, [0.25, 0.62, 0.36], 8, collapsed=1)])
    c = an.choose_design(t)
    assert c["learning_rate"] == 3e-4 and c["control_rates"] == [1e-3]
    t.loc[1, "val_mean"] = 0.55
    assert an.choose_design(t)["learning_rate"] == 1e-3
    t.loc[1, "learned"] = 1
    assert an.choose_design(t)["learning_rate"] == 3e-4
