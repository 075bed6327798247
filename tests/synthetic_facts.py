"""A small hand-made ReportFacts: the whole report renders from it without any run artifact (tests/test_report.py)."""
from __future__ import annotations

from wbc_utils.facts import (
    CollapseRow,
    Comparison,
    Counts,
    Interval,
    OriginalModel,
    Recipe,
    ReportFacts,
    Settings,
    SplitCounts,
)
from wbc_utils.registry import INTEGER, ONEHOT

NAN = float("nan")


def _recipe(loss: str, enc: str, acc: float, collapsed: int = 0, same: str = "", seeds=()) -> Recipe:
    i = Interval(acc, acc - 0.1, acc + 0.1, 0.05, 8.0)
    return Recipe(loss=loss, encoding=enc, same_runs_as=same, seeds=5, finished=5, collapsed=collapsed, unseen=i,
                  test=i, cell=i, simple=i, paper_metric=acc, train_accuracy=0.8, unseen_sd=0.1,
                  top_class_share=0.3, collapsed_seeds=tuple(seeds))


def _cmp(enc: str, a: str, b: str, name: str, diff: float, resolved: bool, words: str, collapsed_b: int = 0,
         fisher: float = 1.0, learned: float = NAN) -> Comparison:
    return Comparison(encoding=enc, a=a, b=b, name=name, diff=Interval(diff, diff - 0.08, diff + 0.08, 0.04, 6.0),
                      resolved=resolved, equivalence=None, words=words, paired=True, mde=0.12, n_seeds_a=5,
                      n_seeds_b=5, unpaired=Interval(diff, diff - 0.1, diff + 0.1), collapsed_a=0, n_a=5,
                      collapsed_b=collapsed_b, n_b=5, fisher_p=fisher,
                      learned=Interval(learned, learned - 0.03, learned + 0.03),
                      learned_words="no difference larger than 5 points (3 seeds each, paired)",
                      learned_seeds="3 vs 3")


def _orig(loss: str, true: float, logged: float, metric: float) -> OriginalModel:
    return OriginalModel(loss=loss, logged_val=logged, logged_train=1.0 if loss == "crossentropy" else 0.25,
                         recomputed_metric=metric, class0_share=0.25, true=Interval(true, true - 0.15, true + 0.15),
                         unseen=Interval(true, true - 0.15, true + 0.15), regression=Interval(0.4, 0.35, 0.45),
                         unit_inputs=0.25, spread_within_image=0.002, collapsed=False)


def synthetic_facts(weights_log: float = 0.688) -> ReportFacts:
    per_class = {"EOSINOPHIL": 72, "LYMPHOCYTE": 24, "MONOCYTE": 14, "NEUTROPHIL": 150}
    counts = Counts(splits={"TRAIN": SplitCounts(9957, 277, 259, per_class),
                            "TEST": SplitCounts(2487, 71, 68, {"EOSINOPHIL": 13, "LYMPHOCYTE": 6, "MONOCYTE": 4,
                                                                 "NEUTROPHIL": 45})},
                    shared_cells=6, shared_images=202, unseen_cells=62, unseen_images=2285,
                    unseen_per_class_cells={"EOSINOPHIL": 12, "LYMPHOCYTE": 5, "MONOCYTE": 4, "NEUTROPHIL": 41},
                    two_label_cells={"TRAIN": 1, "TEST": 0}, kgroup_slides=[1, 5], unmapped_files=0)
    settings = Settings(profile="synthetic", description="a hand-made profile", trades="everything",
                        image_size=[60, 80], epochs=6, learning_rate=3e-4, batch_size=32, train_subset=0,
                        seeds=[0, 1, 2, 3, 4], seeds_planned=[0, 1, 2, 3, 4], planned=30, finished=30, failed=0,
                        incomplete=0, controls=5, precision="float32", devices=["CPU: test"], pilot="")
    recipes = [_recipe("crossentropy", INTEGER, 0.6), _recipe("crossentropy", ONEHOT, 0.6, same=INTEGER),
               _recipe("mse", INTEGER, 0.25), _recipe("mse", ONEHOT, 0.5, 2, seeds=(1, 3)),
               _recipe("huber", INTEGER, 0.25), _recipe("huber", ONEHOT, 0.5, 2, seeds=(1, 3))]
    better = "CE is better (5 seeds each, paired)"
    comparisons = [_cmp(INTEGER, "crossentropy", "mse", "CE - MSE", 0.35, True, better),
                   _cmp(INTEGER, "crossentropy", "huber", "CE - Huber", 0.35, True, better),
                   _cmp(ONEHOT, "crossentropy", "mse", "CE - MSE", 0.08, False, "not resolved (5 seeds each, paired)",
                        collapsed_b=2, fisher=0.04, learned=-0.02),
                   _cmp(ONEHOT, "crossentropy", "huber", "CE - Huber", 0.08, False,
                        "not resolved (5 seeds each, paired)", collapsed_b=2, fisher=0.04, learned=-0.02)]
    collapse = [CollapseRow("CE, integer labels, lr 0.001", 5, 2, 0.4, 0.5, "0, 1, 2, 3, 4", True, NAN, NAN),
                CollapseRow("CE, integer labels, lr 0.0003", 5, 0, 0.3, 0.7, "0, 1, 2, 3, 4", False, 0.44, 0.44)]
    return ReportFacts(profile="synthetic", generated="2026-01-01", counts=counts,
                       software={"python": "3.11", "device": "CPU: test"}, settings=settings,
                       losses=["crossentropy", "mse", "huber"], recipes=recipes, comparisons=comparisons,
                       original={"crossentropy": _orig("crossentropy", 0.691, weights_log, 0.691),
                                 "mse": _orig("mse", 0.254, 0.246, 0.243),
                                 "huber": _orig("huber", 0.257, 0.222, 0.227)},
                       original_split="TEST", collapse_here=collapse, overlap_pairs=42, overlap_same_cell=31,
                       paper_params=150012, model_params=77052,
                       per_class={"CE, integer": [{"class": "MONOCYTE", "recall": 0.5, "lo": 0.1, "hi": 0.9,
                                                   "cells": 4}]},
                       per_seed={"CE, integer": {0: 0.6, 1: 0.55}, "MSE, one-hot": {0: 0.25}})
