"""The shift grid (wbc_utils.shifts): each shift does what its name says, and the scoring counts what it should."""
from __future__ import annotations

import types

import numpy as np
import pytest

from wbc_utils import ood, shifts


def smear(seed: int = 0, n: int = 8) -> np.ndarray:
    """n pink 'fields' at 240x320 with a purple disc each and some texture."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 240, 320, 3), np.uint8)
    yy, xx = np.mgrid[:240, :320]
    for i in range(n):
        f = np.clip(rng.normal((215, 170, 175), 12, (240, 320, 3)), 0, 255)
        cy, cx = rng.integers(60, 180), rng.integers(60, 260)
        f[(yy - cy) ** 2 + (xx - cx) ** 2 < 30 ** 2] = (120, 60, 200)
        out[i] = f.astype(np.uint8)
    return out


def test_the_grid_is_fixed_named_once_and_covers_every_kind_of_lab_change():
    names = [s.name for s in shifts.GRID]
    assert len(names) == len(set(names)) >= 15
    assert {s.family for s in shifts.GRID} == {"stain", "light", "focus", "scale", "scanner"}
    assert all(s.level in ("mild", "strong") for s in shifts.GRID)
    assert [r["shift"] for r in shifts.grid_table()] == names


@pytest.mark.parametrize("shift", shifts.GRID, ids=lambda s: s.name)
def test_every_shift_keeps_the_field_and_changes_it(shift):
    f = smear(1, 2)
    out = shifts.apply_shift(shift, f)
    assert out.shape == f.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - f).mean() > 0.5, "a shift of the grid must change the image"


def test_shifts_move_what_they_name():
    f = smear(2, 1)
    by = {s.name: s for s in shifts.GRID}
    lap = lambda x: np.var(np.diff(x.astype(float), axis=1))  # noqa: E731
    assert shifts.apply_shift(by["darker 25%"], f).mean() < 0.8 * f.mean()
    assert lap(shifts.apply_shift(by["blur 2 px"], f)) < 0.3 * lap(f)
    assert shifts.apply_shift(by["contrast +25%"], f).std() > f.std()
    # zooming in enlarges the disc: more stained pixels
    stained = lambda x: (x[..., 2].astype(int) - x[..., 1] > 60).mean()  # noqa: E731
    assert stained(shifts.apply_shift(by["zoom x1.25"], f)) > 1.3 * stained(f)
    assert stained(shifts.apply_shift(by["zoom x0.8"], f)) < 0.8 * stained(f)


class BrightnessModel:
    """A stand-in classifier of whole fields: class = the field's mean brightness band (so darkening breaks it)."""

    image_size, view = (24, 32), "full"

    def model(self, x, training=False):
        b = np.asarray(x, float).mean(axis=(1, 2, 3))
        centres = np.array([150.0, 170.0, 190.0, 210.0])
        return -np.abs(b[:, None] - centres[None, :]) / 5.0


def test_scoring_pairs_each_shift_with_clean_and_marks_what_is_beyond_competence():
    fields = smear(3, 16)
    m = BrightnessModel()
    labels = m.model(shifts._inputs(fields, m.image_size, m.view)).argmax(1)  # right on every clean image
    cells = np.arange(16) // 2
    grid = (shifts.GRID[[s.name for s in shifts.GRID].index("darker 25%")],
            shifts.GRID[[s.name for s in shifts.GRID].index("JPEG q50")])
    feats = np.stack([ood.image_features(f) for f in fields])
    logits = m.model(shifts._inputs(fields, m.image_size, m.view))
    ref = ood.fit_reference(np.concatenate([feats, feats + 1e-3]), np.concatenate([logits, logits]), tail=0.0)
    out = shifts.score_fields([m], [ref], fields, labels, cells, grid)
    assert out["clean"]["accuracy"] == 1.0 and out["images"] == 16 and out["cells"] == 8
    dark, jpeg = out["rows"]
    assert dark["accuracy"] < 0.5 and not dark["within"] and dark["difference"] < -0.5
    assert dark["difference_ci"][1] < 0 and dark["flagged"] == 1.0  # far from TRAIN's statistics: flagged
    assert jpeg["within"] and abs(jpeg["difference"]) <= shifts.TOLERANCE
    s = shifts.flag_summary({**out, "flag": None})
    assert s["lowest_detection"] == 1.0 and s["beyond"] == [("darker 25%", 1.0)]
    # without a reference the flag is not measured, and says so
    none = shifts.score_fields([m], [None], fields, labels, cells, grid[:1])
    assert none["clean"]["flagged"] is None and none["rows"][0]["flagged"] is None


def test_score_grid_refuses_models_of_different_inputs():
    a = types.SimpleNamespace(image_size=(64, 64), view="cell")
    b = types.SimpleNamespace(image_size=(96, 96), view="cell")
    with pytest.raises(ValueError, match="differ in input"):
        shifts.score_grid([a, b], [None, None])


def test_the_interval_says_whether_a_shift_is_settled():
    fields = smear(4, 16)
    m = BrightnessModel()
    labels = m.model(shifts._inputs(fields, m.image_size, m.view)).argmax(1)
    by = {s.name: s for s in shifts.GRID}
    out = shifts.score_fields([m], [None], fields, labels, np.arange(16) // 2, (by["darker 25%"], by["JPEG q50"]))
    assert [r["interval_says"] for r in out["rows"]] == ["beyond", "within"]
