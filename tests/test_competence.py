"""The competence flag (wbc_utils.competence): statistics that move with the change they name, a region fitted
to what the model reads, and a flag that fires outside it only."""
from __future__ import annotations

import numpy as np

from tests.test_shifts import BrightnessModel, smear
from wbc_utils import competence, shifts

BY = {s.name: s for s in shifts.GRID}


def test_each_statistic_moves_with_the_change_it_stands_for():
    f = smear(5, 3)
    base = competence.statistics(f)
    moved = {name: competence.statistics(shifts.apply_shift(BY[name], f)) for name in
             ("darker 25%", "contrast +25%", "haematoxylin +50%", "eosin -50%", "blur 2 px", "zoom x1.25",
              "JPEG q20")}
    i = {n: k for k, n in enumerate(competence.STATISTICS)}
    assert (moved["darker 25%"][:, i["brightness"]] < base[:, i["brightness"]] - 20).all()
    assert (moved["contrast +25%"][:, i["contrast"]] > base[:, i["contrast"]]).all()
    assert (moved["haematoxylin +50%"][:, i["haematoxylin"]] > base[:, i["haematoxylin"]]).all()
    assert (moved["eosin -50%"][:, i["eosin"]] < base[:, i["eosin"]]).all()
    assert (moved["blur 2 px"][:, i["sharpness"]] < base[:, i["sharpness"]] - 0.3).all()
    assert (moved["zoom x1.25"][:, i["stained share"]] > base[:, i["stained share"]]).all()
    assert (moved["JPEG q20"][:, i["blockiness"]] > base[:, i["blockiness"]]).all()
    assert base.shape == (3, len(competence.STATISTICS)) and np.isfinite(base).all()


def test_the_region_covers_clean_images_and_the_changes_the_model_reads_and_nothing_else():
    clean = np.random.default_rng(0).normal(0, 1, (1000, 7))
    rungs = [{"name": "read well", "drop": 0.01, "stats": clean + np.r_[3.0, np.zeros(6)]},
             {"name": "read badly", "drop": 0.20, "stats": clean - np.r_[5.0, np.zeros(6)]}]
    region = competence.fit_region(clean, rungs, tolerance=0.03)
    assert region["within"] == ["read well"] and region["beyond"] == ["read badly"]
    flagged, why = competence.flag(region, clean)
    assert flagged.mean() <= 0.02  # about 0.2% per statistic on clean images
    assert competence.flag(region, rungs[0]["stats"])[0].mean() < 0.1  # what the model reads: rarely flagged
    bad, why = competence.flag(region, rungs[1]["stats"])
    assert bad.mean() > 0.9 and np.mean(["brightness" in w for w in why]) > 0.9  # and it names the statistic


def test_calibration_finds_the_changes_that_cost_accuracy():
    fields = smear(6, 12)
    m = BrightnessModel()
    labels = m.model(shifts._inputs(fields, m.image_size, m.view)).argmax(1)
    readers = [(fields, labels, lambda f: m.model(shifts._inputs(f, m.image_size, m.view)).argmax(1))]
    ladder = (BY["darker 25%"], BY["blur 1 px"])
    region = competence.calibrate(readers, ladder, shifts.apply_shift, tolerance=0.03)
    assert region["beyond"] == ["darker 25%"] and region["within"] == ["blur 1 px"]
    assert region["clean_accuracy"] == 1.0
    dark = shifts.apply_shift(BY["darker 25%"], smear(7, 6))
    assert competence.flag(region, competence.statistics(dark))[0].all()


def test_the_ladder_is_not_the_grid():
    assert not {s.name for s in shifts.LADDER} & {s.name for s in shifts.GRID}
    assert {s.family for s in shifts.LADDER} == {s.family for s in shifts.GRID}


def test_the_grid_rows_carry_the_competence_flag_when_a_region_is_given():
    fields = smear(8, 8)
    m = BrightnessModel()
    labels = m.model(shifts._inputs(fields, m.image_size, m.view)).argmax(1)
    region = competence.fit_region(competence.statistics(fields), [], tolerance=0.03)
    out = shifts.score_fields([m], [None], fields, labels, np.arange(8) // 2, (BY["darker 25%"],), region=region)
    assert out["clean"]["competence_flagged"] == 0.0
    assert out["rows"][0]["competence_flagged"] == 1.0
    s = shifts.flag_summary(out, "competence_flagged")
    assert s["lowest_detection"] == 1.0
