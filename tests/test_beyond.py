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


def test_best_profile_lab_is_a_search_and_its_folds_are_control_runs():
    from wbc_utils import lab

    prof = get_profile("best")
    final = prof.runs()
    assert sorted(r.seed for r in final) == [0, 1, 2] and all(r.validation == "none" for r in final)
    assert all(prof.is_main(r.to_dict()) for r in final)
    first = lab.candidate(prof, lab._full_choices(prof, {}))
    assert first["validation"] == "grouped" and first["folds"] == 5 and first["seed"] == 0
    fold = RunParams.from_dict(lab.fold_params(first, 3))
    assert prof.role_of(fold.run_name) == "control" and fold.fold == 3
    # the first candidate is the final runs' design: the lab's control is what the profile trained before
    from wbc_utils.params import design_key
    assert design_key(first) == design_key(final[0].to_dict())
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


# ----------------------------------------------------------------------------- crop border and stain jitter

def test_crop_border_fills_past_the_edge_as_named_and_leaves_the_inside_alone():
    img = field_with([(25, 292, 20)])  # near a corner: the window runs past the edge
    img[:, -1] = (0, 200, 0)  # a green last column: edge replication smears it into a band of streaks
    edge, reflect, black = (cellcrop.crop_cell(img, (128, 128), border=b) for b in ("edge", "reflect", "black"))
    green = lambda x: ((x[..., 1] > 150) & (x[..., 0] < 50)).mean()  # noqa: E731
    assert green(edge) > 4 * green(reflect) > 0  # streaks vs the one mirrored column
    assert (black.sum(2) == 0).mean() > 0.2 and (reflect.sum(2) == 0).mean() == 0
    centred = field_with([(120, 160, 20)])  # a window inside the field: the border changes nothing
    assert all(np.array_equal(cellcrop.crop_cell(centred, (64, 64), border=b), cellcrop.crop_cell(centred, (64, 64)))
               for b in ("reflect", "black"))
    with pytest.raises(ValueError, match="border"):
        cellcrop.crop_cell(img, border="wrap")


def test_cell_views_name_their_window_and_border():
    from wbc_utils.params import cell_window, crop_border

    assert (cell_window("cell"), crop_border("cell")) == (128, "edge")
    assert (cell_window("cell96-reflect"), crop_border("cell96-reflect")) == (96, "reflect")
    assert (cell_window("cell-black"), crop_border("cell-black")) == (128, "black")
    assert crop_border("full") is None
    for bad in ("cell-mirror", "cell96reflect", "cell20-reflect"):
        with pytest.raises(ParameterError, match="view"):
            RunParams(view=bad)
    assert "cell160-reflect" in RunParams(view="cell160-reflect", arch="wbcnet").run_name


def test_hed_jitter_is_exact_at_identity_and_moves_the_named_stain():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    same = augment.hed_jitter(x, np.ones((4, 3)), np.zeros((4, 3)))
    assert np.abs(same.astype(int) - x).max() <= 1
    purple = np.full((1, 8, 8, 3), (120, 60, 200), np.uint8)  # a nucleus: haematoxylin
    darker = augment.hed_jitter(purple, np.array([[1.5, 1.0, 1.0]]), np.zeros((1, 3)))
    assert darker.mean() < purple.mean() - 10  # more haematoxylin absorbs more light
    out = augment.augment_batch(x, np.random.default_rng(1), "geometric+hed")
    assert out.shape == x.shape and out.dtype == np.uint8 and not np.array_equal(out, x)
    assert np.array_equal(out, augment.augment_batch(x, np.random.default_rng(1), "geometric+hed"))


# ----------------------------------------------------------------------------- the lab's and the grid's tables

def test_trials_table_says_what_each_candidate_changed_and_pairs_it_with_the_first():
    from wbc_utils.beyond import trials_frame

    first = {"view": "cell", "augment": "geometric+color"}
    rec = {"space": {"view": ["cell", "cell-reflect"], "augment": ["geometric+color", "geometric+hed"]},
           "trials": [
               {"number": 0, "state": "complete", "params": first, "fold_accuracies": [0.80, 0.90, 0.85],
                "note": ""},
               {"number": 1, "state": "pruned", "params": {**first, "view": "cell-reflect"},
                "fold_accuracies": [0.70], "note": ""},
               {"number": 2, "state": "complete", "params": {**first, "augment": "geometric+hed"},
                "fold_accuracies": [0.82, 0.93, 0.87], "note": ""},
               {"number": 3, "state": "fail", "params": {**first, "view": "cell-reflect"},
                "fold_accuracies": [0.70], "note": "budget spent before fold 1", "stopped": True},
               {"number": 4, "state": "fail", "params": {}, "fold_accuracies": [], "note": "x"}]}
    t = trials_frame({"trials": rec})
    assert list(t["trial"]) == [0, 1, 2, 3]  # a trial that drew no candidate is not a row
    assert list(t["candidate"]) == ["the previous design", "view cell-reflect", "augment geometric+hed",
                                    "view cell-reflect"]
    assert list(t["outcome"]) == ["all folds", "pruned after 1", "all folds", "stopped"]
    # a control stopped, then resumed as a later trial: pairs use the trial with the most folds
    resumed = {**rec, "trials": [{**rec["trials"][0], "state": "fail", "stopped": True, "fold_accuracies": [0.8]},
                                 rec["trials"][2], {**rec["trials"][0], "number": 5}]}
    assert trials_frame({"trials": resumed})["minus the first, paired over folds"].iloc[1].endswith("(3 folds)")
    assert t["minus the first, paired over folds"].iloc[1] == "-10.0 (1 fold)"
    assert t["minus the first, paired over folds"].iloc[2].startswith("+2.3 [")  # (2 + 3 + 2) / 3 points
    from wbc_utils.beyond import folds_variance
    assert folds_variance([0.02, 0.03, 0.02], 5) == pytest.approx(np.var([0.02, 0.03, 0.02], ddof=1) * (1 / 3 + 1 / 4))
    assert trials_frame({"trials": None}).empty


def test_grid_words_follow_the_numbers():
    from wbc_utils.beyond import flag_markdown, grid_frame

    row = lambda name, acc, diff, within, flagged: {  # noqa: E731
        "shift": name, "what": name, "level": "mild", "accuracy": acc, "accuracy_ci": [acc - 0.05, acc + 0.05],
        "difference": diff, "difference_ci": [diff - 0.02, diff + 0.02], "within": within, "flagged": flagged}
    grid = {"tolerance": 0.03, "images": 10, "cells": 5, "models": 3, "per_cell": 2,
            "clean": {"accuracy": 0.9, "accuracy_ci": [0.85, 0.95], "flagged": 0.01},
            "rows": [row("blur 2 px", 0.6, -0.3, False, 0.95), row("JPEG q50", 0.89, -0.01, True, 0.05)],
            "flag": {"false_alarms_clean": 0.01, "false_alarms_simple": 0.04, "simple_images": 71, "tail": 0.005,
                     "energy_from": "TRAIN", "beyond": [("blur 2 px", 0.95)], "lowest_detection": 0.95,
                     "within": [("JPEG q50", 0.05)]}}
    text = flag_markdown({"grid": grid})
    assert "not met: 1 of 2 shifts cost more than 3 points (blur 2 px: -30.0)" in text
    assert "4.0% of TEST_SIMPLE's 71" in text and ": not met. Its thresholds" in text  # 4% > 2% on originals
    assert "lowest 95.0%" in text and "blur 2 px: 95.0%: met" in text
    g = grid_frame({"grid": grid})
    assert list(g["within 3 points"]) == ["-", "**no**", "yes"] and g["minus clean"].iloc[1].startswith("-30.0 [")
    assert flag_markdown({"grid": None}) == "" and grid_frame({"grid": None}).empty
    # the competence flag as the grid stores it: the ladder's verdicts in "drops", its "beyond" the grid's shifts
    grid["competence"] = {"folds": 5, "tolerance": 0.03, "drops": {"a": 0.1, "b": 0.0, "c": 0.05},
                          "false_alarms_clean": 0.015, "false_alarms_simple": 0.01, "lowest_detection": 0.9,
                          "beyond": [("blur 2 px", 0.9)], "within": [("JPEG q50", 0.0)]}
    text = flag_markdown({"grid": grid})
    assert "under 3 synthetic changes" in text and "2 of those changes were beyond it" in text
    assert "false alarms 1.5% on clean TEST and 1.0% on TEST_SIMPLE's originals (met)" in text
