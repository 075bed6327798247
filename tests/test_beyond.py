"""The 'beyond the paper' pieces: cell crop, augmentation, new run parameters, calibration and abstention."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wbc_utils import augment, cellcrop, evaluation
from wbc_utils.errors import ParameterError
from wbc_utils.params import PROFILES, RunParams, get_profile


def field_with(blobs, size=(240, 320)) -> np.ndarray:
    """A pink 'smear' with purple discs: blobs = [(row, col, radius)]."""
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (215, 170, 175)  # pink-grey background: red above blue, no stain
    yy, xx = np.mgrid[:h, :w]
    for r, c, rad in blobs:
        img[(yy - r) ** 2 + (xx - c) ** 2 < rad * rad] = (120, 60, 200)  # purple: blue far above green
    return img


# ----------------------------------------------------------------------------- cell crop

def test_locate_cell_finds_the_nucleus_not_a_platelet():
    img = field_with([(60, 250, 28), (180, 40, 5)])  # a nucleus and a small platelet
    cy, cx, strength = cellcrop.locate_cell(img)
    assert abs(cy - 60) <= 3 and abs(cx - 250) <= 3 and strength > 0


def test_locate_cell_without_stain_falls_back_to_the_centre():
    cy, cx, strength = cellcrop.locate_cell(field_with([]))
    assert (cy, cx, strength) == (120, 160, 0.0)


def test_crop_cell_is_centred_and_sized():
    img = field_with([(25, 292, 20)])  # near a corner: the window runs past the edge
    out = cellcrop.crop_cell(img, (64, 64))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    stain = cellcrop.stain_map(out) > 0
    rows, cols = np.nonzero(stain)
    assert abs(rows.mean() - 32) < 3 and abs(cols.mean() - 32) < 3


def test_stain_map_rejects_grayscale():
    with pytest.raises(ValueError, match="RGB"):
        cellcrop.stain_map(np.zeros((10, 10), np.uint8))


# ----------------------------------------------------------------------------- augmentation

def test_dihedral_gives_eight_distinct_views_of_an_asymmetric_image():
    x = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(1, 16, 16, 3)
    views = {augment.dihedral(x, k).tobytes() for k in range(8)}
    assert len(views) == 8
    assert augment.n_views(x.shape) == 8 and augment.n_views((1, 16, 20, 3)) == 4


def test_augment_batch_is_reproducible_and_keeps_shape():
    x = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    a = augment.augment_batch(x, np.random.default_rng([1, 2, 3]), "geometric+color")
    b = augment.augment_batch(x, np.random.default_rng([1, 2, 3]), "geometric+color")
    c = augment.augment_batch(x, np.random.default_rng([1, 2, 4]), "geometric+color")
    assert a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(augment.augment_batch(x, np.random.default_rng(0), "none"), x)
    with pytest.raises(ValueError, match="augment"):
        augment.augment_batch(x, np.random.default_rng(0), "mixup")


def test_geometric_augmentation_keeps_the_pixels_of_a_centred_cell():
    """Flips, turns and small shifts move the cell but keep its colours (no stain jitter)."""
    x = cellcrop.crop_cell(field_with([(120, 160, 20)]), (64, 64))[None].repeat(4, 0)
    y = augment.augment_batch(x, np.random.default_rng(5), "geometric")
    assert set(map(tuple, y.reshape(-1, 3))) <= set(map(tuple, x.reshape(-1, 3)))


# ----------------------------------------------------------------------------- parameters and profile

def test_new_parameters_are_validated():
    with pytest.raises(ParameterError, match="label_smoothing"):
        RunParams(loss="mse", label_smoothing=0.1)
    with pytest.raises(ParameterError, match="view"):
        RunParams(view="nucleus")
    with pytest.raises(ParameterError, match="tta"):
        RunParams(tta="yes")
    with pytest.raises(ParameterError, match="augment"):
        RunParams(augment="lots")


def test_run_name_names_the_design():
    p = RunParams(arch="wbcnet", view="cell", augment="geometric+color", lr_schedule="cosine",
                  label_smoothing=0.1, tta=True, validation="none", target_encoding="onehot")
    assert p.run_name == "crossentropy_onehot_wbcnet16e100_cell_augc_cosine_ls0.1_tta_lr0.001_noval_s0"
    q = RunParams(arch="wbcnet", view="cell96", validation="grouped", folds=5, fold=3, epochs=16)
    assert q.run_name == "crossentropy_integer_wbcnet16e16_cell96_cv3of5_lr0.001_gval_s0"


def test_params_written_before_new_parameters_still_match():
    old = {k: v for k, v in RunParams().to_dict().items()
           if k not in ("view", "augment", "lr_schedule", "label_smoothing", "tta", "width")}
    assert RunParams().same_as(old)
    assert not RunParams(view="cell").same_as(old)


def test_best_profile_runs_its_lab_first_with_one_seed_each():
    prof = get_profile("best")
    runs = prof.runs()
    lab = [r for r in runs if r.validation == "grouped"]
    final = [r for r in runs if r.validation == "none"]
    assert runs[:len(lab)] == lab, "the lab candidates run before the final runs"
    assert {r.seed for r in lab} == {0} and sorted(r.seed for r in final) == [0, 1, 2]
    assert all(prof.is_main(r.to_dict()) for r in final) and not any(prof.is_main(r.to_dict()) for r in lab)
    assert len({r.run_name for r in runs}) == len(runs)
    assert "best" in PROFILES


# ----------------------------------------------------------------------------- calibration and abstention

def test_ece_is_zero_for_a_calibrated_model_and_large_for_an_overconfident_one():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.3, 1.0, n)
    labels = np.zeros(n, int)
    right = rng.uniform(size=n) < conf
    probs = np.zeros((n, 4))
    probs[:, 0] = conf
    probs[:, 1:] = ((1 - conf) / 3)[:, None]
    labels[~right] = 1  # wrong where the coin says so: accuracy matches confidence
    assert evaluation.calibration(probs, labels)["ece"] < 0.02
    over = np.zeros((n, 4))
    over[:, 0] = 0.99
    over[:, 1:] = 0.01 / 3
    assert evaluation.calibration(over, labels)["ece"] > 0.2


def test_abstention_sets_aside_the_least_confident():
    probs = np.array([[0.9, 0.1, 0, 0], [0.8, 0.2, 0, 0], [0.4, 0.6, 0, 0], [0.55, 0.45, 0, 0]] * 5)
    labels = np.array([0, 0, 0, 1] * 5)  # the wrong ones are the least confident
    out = evaluation.abstention(probs.max(1), probs.argmax(1) == labels, 0.5)
    assert out["abstained"] == 10 and out["accuracy_kept"] == 1.0 and out["accuracy_all"] == 0.5
    assert out["errors_abstained"] == 10


def test_best_profile_settings_are_json_serialisable():
    import dataclasses

    json.dumps(dataclasses.asdict(get_profile("best")))


# ----------------------------------------------------------------------------- the k-fold lab

def test_fold_parameters_are_validated():
    with pytest.raises(ParameterError, match="folds=5 needs validation='grouped'"):
        RunParams(folds=5)
    with pytest.raises(ParameterError, match="fold=5 must be below folds=5"):
        RunParams(validation="grouped", folds=5, fold=5)
    with pytest.raises(ParameterError, match="view='cell20'"):
        RunParams(view="cell20")
    assert RunParams(view="cell96").view == "cell96"


def test_kfold_holds_each_cell_out_exactly_once_and_never_on_both_sides(tiny_dataset):
    from wbc_utils.data import build_manifest, kfold_split

    train = build_manifest(tiny_dataset).split("TRAIN")
    held = []
    for f in range(2):
        tr, va = kfold_split(train, 2, f)
        assert not set(train.iloc[tr]["cell"]) & set(train.iloc[va]["cell"])
        assert set(train.iloc[va]["class"]) == set(train["class"])  # stratified: every class in every fold
        held += sorted(set(train.iloc[va]["cell"]))
    assert sorted(held) == sorted(set(train["cell"]))  # the tiny dataset's cells each carry one class
    assert (kfold_split(train, 2, 0)[1] == kfold_split(train, 2, 0)[1]).all()  # the same folds every time
    with pytest.raises(ParameterError, match="too few for 9 folds"):
        kfold_split(train, 9, 0)


def test_kfold_never_puts_a_cell_labelled_with_two_classes_on_both_sides():
    """A cell whose images carry two class labels is dealt with each class: it may be held out in two folds (the
    lab counts and reports such cells), but it is never in training and validation at once."""
    import pandas as pd

    from wbc_utils.data import kfold_split

    rows = [{"cell": f"{c}{i}", "class": c} for c in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
            for i in range(6) for _ in range(3)]
    rows += [{"cell": "mixed", "class": "LYMPHOCYTE"}] * 2 + [{"cell": "mixed", "class": "MONOCYTE"}] * 5
    frame = pd.DataFrame(rows)
    for k in (2, 3):
        held = []
        for f in range(k):
            tr, va = kfold_split(frame, k, f)
            assert not set(frame.iloc[tr]["cell"]) & set(frame.iloc[va]["cell"])
            held += sorted(set(frame.iloc[va]["cell"]))
        assert set(held) == set(frame["cell"])
        assert all(held.count(c) == 1 for c in set(frame["cell"]) - {"mixed"}) and 1 <= held.count("mixed") <= 2


def test_best_profile_lab_is_every_candidate_on_every_fold():
    lab = [r for r in get_profile("best").runs() if r.validation == "grouped"]
    by_design = {}
    for r in lab:
        by_design.setdefault((r.view, r.epochs, r.augment), []).append(r.fold)
    assert len(by_design) >= 2 and all(sorted(f) == list(range(5)) for f in by_design.values())


def test_candidates_whose_folds_overlap_are_tied_not_ranked():
    import pandas as pd

    from wbc_utils.beyond import choose_design, mark_ties

    lab = mark_ties(pd.DataFrame([
        {"design": "a", "val_accuracy": 0.80, "val_min": 0.74, "val_max": 0.86, "params": {"view": "cell"}},
        {"design": "b", "val_accuracy": 0.83, "val_min": 0.79, "val_max": 0.88, "params": {"view": "cell96"}},
        {"design": "c", "val_accuracy": 0.70, "val_min": 0.66, "val_max": 0.78, "params": {"view": "full"}},
    ]))
    assert list(lab["design"]) == ["b", "a", "c"]
    assert list(lab["tied"]) == [False, True, False]  # a overlaps b's folds; c's best fold is below b's worst
    assert choose_design(lab) == {"view": "cell96"}
