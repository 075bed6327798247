"""Beyond the paper: the tables of the ``best`` profile, from its run artifacts only.

* the **lab notebook**: every candidate design, trained once on 80% of
  TRAIN's same-cell clusters and scored on the other 20% (never on TEST), with
  its interval and the decision it led to;
* the **final model**: the chosen design trained on all of TRAIN with several
  seeds, scored once on TEST (image level on its unseen cells and on all of
  it, cell level by vote, and TEST_SIMPLE per distinct slide), per seed and
  pooled over seeds (intervals over seeds and cells); the seeds' ensemble; calibration;
  accuracy when the least confident cells are left to a person.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import CLASSES
from .analysis import fmt_ci as _ci
from .analysis import fmt_pct as _pct
from .analysis import pooled, stack
from .evaluation import (
    abstention,
    calibration,
    cell_votes,
    confusion,
    per_slide,
    risk_coverage,
    scores_of,
    slide_means,
    softmax,
)
from .params import cell_window, crop_border, design_key
from .runs import PARAMS, VAL_PREDICTIONS, Run, Study, load_study, read_lab_trials, read_shift_grid
from .stats import Clusters, mean_interval

#: Parameters in which candidates differ, with how the lab table names them.
DESIGN_KEYS = {"view": "input", "image_size": "size", "augment": "augmentation", "lr_schedule": "schedule",
               "label_smoothing": "label smoothing", "arch": "model", "width": "width", "epochs": "epochs",
               "learning_rate": "lr"}


def _params(row) -> dict:
    return Run(row.run_dir).params()


def describe(params: dict) -> str:
    """A short description of a design: 'cell crops (128 px) 64x64, geometric+color aug, cosine lr, 10 epochs'."""
    size = "x".join(str(v) for v in params.get("image_size", []))
    view = params.get("view", "full")
    window = cell_window(view)
    border = crop_border(view)
    view = (f"cell crops ({window} px{'' if border == 'edge' else ', ' + border + ' border'})" if window
            else "whole field")
    parts = [f"{view} {size}", f"{params.get('augment', 'none')} aug", params.get("lr_schedule", "constant") + " lr"]
    if params.get("label_smoothing"):
        parts.append(f"smoothing {params['label_smoothing']:g}")
    parts.append(f"{params.get('epochs')} epochs")
    return ", ".join(parts)


def lab_runs(summary) -> pd.DataFrame:
    """One row per lab run (a candidate on one fold of held-out TRAIN cells) among ``summary``'s runs."""
    rows = []
    lab = summary[(summary["validation"] == "grouped") & (summary["status"] == "finished")]
    for r in lab.itertuples():
        m = Run(r.run_dir).metrics()
        p = _params(r)
        rows.append({"run_name": r.run_name, "run_dir": r.run_dir, "design": describe(p), "key": design_key(p),
                     "seed": p["seed"],
                     "fold": p.get("fold", 0), "folds": p.get("folds", 0), "epochs": p["epochs"],
                     "val_accuracy": m["val_accuracy"], "val_lo": m["val_accuracy_ci"][0],
                     "val_hi": m["val_accuracy_ci"][1], "val_cell_accuracy": m["val_cell_accuracy"],
                     "val_accuracy_tta": m.get("val_accuracy_tta"), "val_cells": m["val_cells"],
                     "train_minutes": m["train_seconds"] / 60, "params": p})
    return pd.DataFrame(rows)


def lab_table(summary) -> pd.DataFrame:
    """One row per candidate design: its validation accuracy on each fold, their mean, SD and range; best mean
    first. ``tied`` marks the candidates whose fold range overlaps the best one's: the lab cannot rank those."""
    runs = lab_runs(summary)
    if runs.empty:
        return runs
    rows = []
    for _, g in runs.groupby(["key", "folds"], sort=False):
        g = g.sort_values("fold")
        acc = g["val_accuracy"].to_numpy(float)
        held = pd.concat([Run(d).predictions(name=VAL_PREDICTIONS)[["cell"]].drop_duplicates().assign(fold=f)
                          for d, f in zip(g["run_dir"], g["fold"])])
        twice = int((held.groupby("cell")["fold"].nunique() > 1).sum())
        p = {k: v for k, v in g["params"].iloc[0].items() if k not in ("fold", "seed")}
        rows.append({"design": g["design"].iloc[0], "key": g["key"].iloc[0], "folds_run": len(g),
                     "folds": int(g["folds"].iloc[0]), "fold_accuracies": acc.tolist(),
                     "fold_ids": [int(f) for f in g["fold"]],
                     "val_accuracy": float(acc.mean()),
                     "val_sd": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan"),  # one fold: no spread
                     "val_min": float(acc.min()), "val_max": float(acc.max()),
                     "val_cell_accuracy": float(g["val_cell_accuracy"].mean()),
                     "val_accuracy_tta": float(g["val_accuracy_tta"].mean()) if g["val_accuracy_tta"].notna().all()
                     else None,
                     "val_cells": int(g["val_cells"].sum()), "cells_held_twice": twice,
                     "complete": len(g) == max(int(g["folds"].iloc[0]), 1), "epochs": int(g["epochs"].iloc[0]),
                     "train_minutes": float(g["train_minutes"].mean()), "params": p})
    return mark_ties(pd.DataFrame(rows))


def mark_ties(lab: pd.DataFrame) -> pd.DataFrame:
    """Sort candidates by mean validation accuracy and mark ``tied`` those whose fold range [min, max] overlaps
    the best one's: their folds do not separate them, so they are called tied, not ranked. Candidates with folds
    still missing come last, unranked (one lucky fold must not beat five)."""
    lab = lab.assign(complete=lab["complete"] if "complete" in lab else True)
    out = lab.sort_values(["complete", "val_accuracy"], ascending=[False, False], kind="stable").reset_index(drop=True)
    best = out.iloc[0]
    out["tied"] = [bool(i > 0 and r.complete and r.val_max >= best.val_min and r.val_min <= best.val_max)
                   for i, r in enumerate(out.itertuples())]
    return out


def choose_design(lab: pd.DataFrame) -> dict | None:
    """The rule fixed before the lab ran: the candidate with the highest mean validation accuracy over the folds
    (the same folds for every candidate). Candidates whose fold range overlaps it are reported as tied with it."""
    if lab is None or len(lab) == 0 or not bool(lab.iloc[0].get("complete", True)):
        return None
    return dict(lab.iloc[0]["params"])


def chosen_design(study: Study) -> dict | None:
    """The parameters of the final (main) runs, or None when there are none yet."""
    main = study.main
    if main.empty or not Run(Path(main.iloc[0].run_dir)).has(PARAMS):
        return None
    return _params(main.iloc[0])


def _same_design(a: dict, b: dict) -> bool:
    return design_key(a) == design_key(b)


def decisions(lab, chosen: dict | None) -> list[str]:
    """Why each candidate was kept or dropped, in words computed from the lab table."""
    if lab is None or len(lab) == 0:
        return []
    pick = choose_design(lab)
    out = []
    for row in lab.itertuples():
        is_pick = pick is not None and _same_design(row.params, pick)
        folds = ", ".join(f"{100 * v:.1f}" for v in row.fold_accuracies)
        gap = 100 * (row.val_accuracy - lab.iloc[0].val_accuracy)
        if is_pick:
            verdict = "**the rule's pick**: the highest mean"
        elif not row.complete:
            best = lab.iloc[0]  # the pick, or (none complete yet) the candidate with the highest mean
            same = [(a, dict(zip(best.fold_ids, best.fold_accuracies)).get(f))
                    for f, a in zip(getattr(row, "fold_ids", []), row.fold_accuracies)]
            same = [(a, b) for a, b in same if b is not None]
            paired = (f"; on the same {len(same)} fold(s) {100 * float(np.mean([a - b for a, b in same])):+.1f} "
                      "points from the pick" if same else "")
            verdict = (f"not ranked: {row.folds_run} of {row.folds} folds (stopped by the pruner or the budget)"
                       + paired)
        elif row.tied:
            verdict = (f"tied with the pick ({gap:+.1f} points on average; the fold ranges overlap, so the lab "
                       "cannot rank them)")
        else:
            verdict = f"dropped: {gap:+.1f} points on average, its best fold below the pick's worst"
        out.append(f"{row.design}: mean {100 * row.val_accuracy:.1f}%{_sd(row.val_sd)} over "
                   f"{row.folds_run} fold{'s' if row.folds_run != 1 else ''} (folds: {folds}) - {verdict}")
    if chosen is not None and pick is not None and not _same_design(chosen, pick):
        out.append(f"**The final runs do not use the rule's pick** (they use {describe(chosen)}): the profile "
                   "must be updated to the pick and the final runs trained again.")
    return out


def tta_effect(lab, chosen: dict | None = None) -> dict | None:
    """Test-time augmentation on validation: its mean gain over the folds per candidate, and for the kept design."""
    if lab is None or len(lab) == 0 or lab["val_accuracy_tta"].isna().all():
        return None
    d = (lab["val_accuracy_tta"].astype(float) - lab["val_accuracy"]).to_numpy(float)
    out = {"gains": dict(zip(lab["design"], d)), "raised": int((d > 0).sum()), "candidates": int(len(d)),
           "kept_gain": None}
    if chosen is not None:
        for row, g in zip(lab.itertuples(), d):
            if _same_design(row.params, chosen):
                out["kept_gain"] = float(g)
    return out


def seed_table(final):
    """Per final run (seed): TEST on unseen cells and on all of it, cells by vote, TEST_SIMPLE per distinct
    slide, with intervals over cells; ECE with its interval; accuracy when abstaining on the least confident
    10% of cells (the same vote as the cell accuracy)."""

    rows = []
    for r in final.itertuples():
        run = Run(r.run_dir)
        m = run.metrics()
        t = run.predictions("TEST")
        unseen = ~t["shared"].to_numpy(bool)
        probs = softmax(scores_of(t))[unseen]
        v = cell_votes(probs, t["label"].to_numpy()[unseen], t["cell"].to_numpy()[unseen])
        ab = abstention(v.confidence, v.correct, 0.10)
        row = {"seed": int(r.seed), "run_name": r.run_name,
               "unseen_accuracy": m["unseen_accuracy"], "unseen_lo": m["unseen_accuracy_ci"][0],
               "unseen_hi": m["unseen_accuracy_ci"][1], "test_accuracy": m["test_accuracy"],
               "test_lo": m["test_accuracy_ci"][0], "test_hi": m["test_accuracy_ci"][1],
               "cell_accuracy": m["unseen_cell_accuracy"], "cell_lo": m["unseen_cell_accuracy_ci"][0],
               "cell_hi": m["unseen_cell_accuracy_ci"][1], "ece": m.get("ece"),
               "ece_lo": (m.get("ece_ci") or [np.nan, np.nan])[0], "ece_hi": (m.get("ece_ci") or [np.nan, np.nan])[1],
               "cell_accuracy_abstain10": ab["accuracy_kept"], "cells_abstained": ab["abstained"],
               "cells": len(v.ids), "train_minutes": m["train_seconds"] / 60}
        if "test_simple_accuracy" in m:
            row.update({"simple_accuracy": m["test_simple_accuracy"], "simple_lo": m["test_simple_accuracy_ci"][0],
                        "simple_hi": m["test_simple_accuracy_ci"][1], "simple_slides": m["test_simple_slides"]})
            s = run.predictions("TEST_SIMPLE")
            slides, idx = per_slide(s)
            sp = softmax(scores_of(s))
            conf = slide_means(sp.max(1), idx)
            ok = slide_means(sp.argmax(1) == s["label"].to_numpy(), idx)
            row["simple_accuracy_abstain10"] = abstention(conf, ok >= 0.5, 0.10)["accuracy_kept"]
        rows.append(row)
    return pd.DataFrame(rows)


def ensemble_pooled(st, scope: str = "unseen") -> dict:
    """The seeds' ensemble (the mean of their probabilities): one classifier, scored image by image and cell by
    cell (one vote each), with intervals over cells (:func:`wbc_utils.stats.mean_interval`; the seeds it
    averages are fixed, as a deployed ensemble's are)."""
    m = st.mask(scope)
    labels, cells = st.base["label"].to_numpy()[m], st.base["cell"].to_numpy()[m]
    ens = st.probs[:, m].mean(0)
    img = mean_interval(ens.argmax(1) == labels, Clusters.of(cells, labels))
    v = cell_votes(ens, labels, cells)
    cel = mean_interval(v.correct, Clusters.of(v.ids, v.true))
    return {"ensemble": img["value"], "ensemble_ci": [img["lo"], img["hi"]], "ensemble_cell": cel["value"],
            "ensemble_cell_ci": [cel["lo"], cel["hi"]], "ensemble_ece": calibration(ens, labels, cells)["ece"],
            "ensemble_probs": ens, "labels": labels, "cells": cells, "seeds": st.n_seeds}


def confusions(final) -> dict:
    """Image-level and cell-level (one vote per cell) confusion matrices on TEST's unseen cells, summed over
    the final runs' seeds."""
    img = np.zeros((len(CLASSES), len(CLASSES)), int)
    cel = np.zeros_like(img)
    for r in final.itertuples():
        t = Run(r.run_dir).predictions("TEST")
        t = t[~t["shared"].to_numpy(bool)]
        img += confusion(t["label"], t["pred"])
        v = cell_votes(softmax(scores_of(t)), t["label"].to_numpy(), t["cell"].to_numpy())
        cel += confusion(v.true, v.voted)
    return {"image": img, "cell": cel}


def wrong_cells(final):
    """TEST cells the final runs misread: by the vote of the cell's augmented TEST images, or on its
    un-augmented TEST_SIMPLE slide(s); with how many seeds did, what they read, and a TEST_SIMPLE image."""

    runs = list(final.itertuples())
    found: dict = {}

    def note(cell, true, read, how, shared):
        r = found.setdefault(cell, {"cell": cell, "class": CLASSES[true], "seeds_wrong_majority": 0,
                                    "seeds_wrong_simple": 0, "read": set(), "shared": bool(shared)})
        r[how] += 1
        r["read"].add(CLASSES[read])

    simple_path = {}
    for r in runs:
        t = Run(r.run_dir).predictions("TEST")
        v = cell_votes(softmax(scores_of(t)), t["label"].to_numpy(), t["cell"].to_numpy(), t["shared"].to_numpy())
        for c, a, b, sh in zip(v.ids, v.true, v.voted, v.shared):
            if a != b:
                note(c, a, b, "seeds_wrong_majority", sh)
        s = Run(r.run_dir).predictions("TEST_SIMPLE")
        if len(s):
            sv = cell_votes(softmax(scores_of(s)), s["label"].to_numpy(), s["cell"].to_numpy(), s["shared"].to_numpy())
            simple_path.update(zip(s["cell"], s["relpath"]))
            for c, a, b, sh in zip(sv.ids, sv.true, sv.voted, sv.shared):
                if a != b:
                    note(c, int(a), int(b), "seeds_wrong_simple", sh)
    cols = ["cell", "class", "seeds_wrong_majority", "seeds_wrong_simple", "voted", "seeds", "simple_relpath", "shared"]
    out = pd.DataFrame(list(found.values()))
    if not len(out):
        return pd.DataFrame(columns=cols)
    out["voted"] = [", ".join(sorted(v)) for v in out.pop("read")]
    out["seeds"] = len(runs)
    out["seeds_wrong"] = out[["seeds_wrong_majority", "seeds_wrong_simple"]].max(axis=1)
    out["simple_relpath"] = [simple_path.get(c, "") for c in out["cell"]]
    return out.sort_values(["seeds_wrong", "cell"], ascending=[False, True]).reset_index(drop=True)


def risk_coverage_curves(final):
    """Per final run: cell-level accuracy kept against coverage on unseen TEST cells (same vote as the cell
    accuracy, confidence = mean probability of the voted class), with the random-abstention baseline."""

    out = []
    for r in final.itertuples():
        t = Run(r.run_dir).predictions("TEST")
        t = t[~t["shared"].to_numpy(bool)]
        v = cell_votes(softmax(scores_of(t)), t["label"].to_numpy(), t["cell"].to_numpy())
        rc = risk_coverage(v.confidence, v.correct)
        rc["seed"] = int(r.seed)
        out.append(rc)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def lab_and_final(profile: str = "best", runs_root=None) -> dict | None:
    """Everything the report's 'beyond the paper' section shows, or None when the profile has no runs."""
    try:
        study = load_study(profile, runs_root)
    except FileNotFoundError:
        return None
    lab = lab_table(study.controls)
    chosen = chosen_design(study)
    final = study.finished()
    out = {"study": study, "summary": study.runs, "lab": lab, "chosen": chosen, "decisions": decisions(lab, chosen),
           "tta": tta_effect(lab, chosen), "seeds": seed_table(final), "final_runs": final,
           "trials": read_lab_trials(profile, runs_root), "grid": read_shift_grid(profile, runs_root)}
    if len(final):
        st = stack(final)
        simple = stack(final, "TEST_SIMPLE")
        out["pooled"] = pooled(st, simple if simple is not None and len(simple.base) else None)
        out["ensemble"] = ensemble_pooled(st)
        out["pooled_probs"] = st.probs[:, st.mask("unseen")]
        out["pooled_labels"] = st.base["label"].to_numpy()[st.mask("unseen")]
        out["pooled_cells"] = st.base["cell"].to_numpy()[st.mask("unseen")]
        out["confusions"] = confusions(final)
        out["wrong_cells"] = wrong_cells(final)
        out["risk_coverage"] = risk_coverage_curves(final)
    return out


#: Published anchors on the same TEST split (all of its images), as reported by public notebooks on the dataset's
#: Kaggle code page; cited, not measured or re-run here.
ANCHOR_SOURCE = "https://www.kaggle.com/datasets/paultimothymooney/blood-cells/code"
ANCHORS = (
    ("small CNNs trained from scratch, public notebooks (TEST watched during training: optimistic)", "about 82-85%"),
    ("ImageNet-pretrained EfficientNet-B4, 9-view test-time augmentation, validated on a TRAIN split", "89.3%"),
)
#: The goals this profile was built to meet (issue 23, set before its lab ran): 92% on unseen TEST cells and 93% on
#: TEST_SIMPLE's distinct slides (mean over 3 seeds), within 3 points of clean TEST under every shift of the grid
#: (:mod:`wbc_utils.shifts`), a flag with at most 2% false alarms and at least 90% detection of every shift beyond
#: the model's competence, and a final model within half an hour of a 2-core CPU. (The first round's goals were
#: 90% and 90%, just above the best public result on this split, :data:`ANCHORS`: 89.3%.)
GOALS = {"test_accuracy": 0.92, "simple_accuracy": 0.93, "train_minutes": 30.0, "shift_tolerance": 0.03,
         "false_alarms": 0.02, "detection": 0.90}


def methods_markdown(res: dict) -> str:
    """The beyond-the-paper section's methods paragraph, from the chosen design's parameters."""
    p = res["chosen"] or {}
    lab = res["lab"]
    h, w = (p.get("image_size") or ["?", "?"])[:2]
    window = cell_window(p.get("view", "full"))
    crop = (f"a {window}x{window} window of the 240x320 field around the white cell, resized: the nucleus is found "
            "by its stain (blue well above green), smoothed with a nucleus-sized box; nothing is learned or tuned on "
            "any split, and `predict` crops new images the same way")
    if window:
        inp = f"**Input.** Instead of the whole field shrunk, a {h}x{w} crop: {crop}."
    else:
        inp = f"**Input.** The whole field at {h}x{w}, as in the quick profile, scaled to 0-1."
    k = int(lab["folds"].iloc[0]) if len(lab) else 5
    twice = int(lab["cells_held_twice"].max()) if len(lab) and "cells_held_twice" in lab else 0
    twice_text = ("exactly once" if not twice else
                  f"once, except {twice} cell(s) whose images carry two class labels: the folds are dealt class by "
                  "class, so such a cell is held out with each of its classes, in two folds (never in training and "
                  "validation at once)")
    width = p.get("width", 16)
    n_tta = 8 if h == w else 4
    smoothing = f" with label smoothing {p['label_smoothing']:g}" if p.get("label_smoothing") else ""
    tta = (f"Test-time augmentation averages the probabilities of the {n_tta} flips/turns of each image."
           if p.get("tta") else "")
    return (
        inp + "\n\n"
        f"**Model.** `wbcnet`: four blocks of two 3x3 convolutions with BatchNorm and ReLU ({width}, {2 * width}, "
        f"{4 * width}, {8 * width} filters), max-pools between blocks, global average pooling, dropout 0.3, Dense(4); "
        "trained from scratch (no downloaded weights).\n\n"
        f"**Training.** Cross-entropy{smoothing}, "
        f"Adam from {p.get('learning_rate')} with a {p.get('lr_schedule')} schedule, batch {p.get('batch_size')}, "
        f"{p.get('epochs')} epochs, augmentation `{p.get('augment')}` (flips"
        f"{' and quarter-turns' if h == w else ' and half-turns'}, shifts up to 8%"
        f"{', per-channel colour jitter' if 'color' in str(p.get('augment')) else ''}"
        f"{', stain jitter in haematoxylin-eosin space' if 'hed' in str(p.get('augment')) else ''}); "
        "TRAIN's classes hold equal numbers of images, so no class weights. "
        f"{tta}\n\n"
        f"**How the design was chosen: the lab.** Each candidate was trained on {k - 1} of {k} folds of "
        "TRAIN's same-cell clusters and scored on the remaining fold, one fold after another: every TRAIN cell is"
        f" held out {twice_text}, every image of every slide that shows a held-out cell is held out with it, and "
        "every candidate sees the same folds (stratified by class, drawn once, independent of the seed). A"
        " candidate whose first folds ranked in the lower half was stopped there (the search's pruner), so only"
        " the promising ones were scored on every fold; the previous design, the control, always was. The "
        "rule, fixed in advance: keep the candidate with the highest mean validation accuracy over all of its"
        f" {k} folds; a candidate whose fold range overlaps the pick's is reported as *tied* with it, since the lab"
        " cannot rank the two. TEST played no part: the final runs train the kept design on all of TRAIN (the "
        "6 cells TRAIN shares with TEST included; the headline leaves them out of TEST instead) with no "
        "validation at all, then score TEST once. (The pipeline scores TEST for every run, lab runs included;"
        " those numbers are in their `metrics.json` and were not used for any choice.) **What was fixed before this"
        " lab:** the network (`wbcnet`), the learning rate, its schedule and the batch size were chosen in earlier"
        " rounds of this package, some of them with TEST results in view (the round before this one compared two"
        " crop windows on TRAIN's folds and could not rank them); this lab chose only among the candidates of its"
        " search, on TRAIN's folds alone.")


def folds_variance(d, k: int) -> float:
    """The variance of the mean of ``d``, paired differences over the first len(d) of k cross-validation folds,
    corrected for the folds' overlapping training sets (Nadeau and Bengio, 2003: the factor 1/n + 1/(k - 1), the
    held-out share over the training share, instead of 1/n): about 1.5 times wider an interval for 5 folds."""
    d = np.asarray(d, float)
    n = len(d)
    return float(d.var(ddof=1) * (1 / n + 1 / (k - 1))) if n > 1 else float("nan")


def changes_from(params: dict, first: dict) -> str:
    """A trial's candidate in words: what it changes from the first candidate (the previous design)."""
    diff = [f"{k} {v}" for k, v in params.items() if str(first.get(k)) != str(v)]
    return "the previous design" if not diff else ", ".join(diff)


def trials_frame(res: dict) -> pd.DataFrame:
    """The lab's search, trial by trial (Optuna's record, ``lab_trials.json``): what each candidate changed, what
    became of it (complete, pruned by the pruner after its first folds, stopped by the budget, failed), its fold
    accuracies and their mean, and its paired difference from the first candidate over the folds both have."""
    rec = res.get("trials")
    if not rec or not rec.get("trials"):
        return pd.DataFrame()
    rows = rec["trials"]
    first_params = next((r["params"] for r in rows if r["params"]), {})
    # the control (the first candidate) may have run as several trials (stopped, then resumed): its folds are
    # those of the trial that got furthest
    first = max((r for r in rows if r["params"] == first_params), key=lambda r: len(r["fold_accuracies"]),
                default={"params": {}, "fold_accuracies": []})
    f0 = first["fold_accuracies"]
    k = int(rec.get("folds", 5))
    out = []
    for r in rows:
        if not r["params"]:
            continue
        folds = r["fold_accuracies"]
        n = min(len(folds), len(f0))
        if r["params"] == first_params or n == 0:
            paired = "-"
        else:
            d = np.subtract(folds[:n], f0[:n])
            half = _t(n) * np.sqrt(folds_variance(d, k)) if n > 1 else None
            paired = (f"{100 * d.mean():+.1f}" + (f" [{100 * (d.mean() - half):+.1f}, {100 * (d.mean() + half):+.1f}]"
                                                  if half is not None else "") + f" ({n} fold{'s' if n > 1 else ''})")
        state = {"complete": "all folds", "pruned": f"pruned after {len(folds)}",
                 "fail": ("stopped" if r.get("stopped") else
                          f"duplicate of trial {r['duplicate_of']}" if r.get("duplicate_of") is not None
                          else "failed")}.get(r["state"], r["state"])
        out.append({"trial": r["number"], "candidate": changes_from(r["params"], first["params"]),
                    "outcome": state, "each fold": ", ".join(f"{100 * v:.1f}" for v in folds) or "-",
                    "mean": _pct(float(np.mean(folds))) if folds else "-",
                    "minus the first, paired over folds": paired})
    return pd.DataFrame(out)


def _t(n: int) -> float:
    from scipy import stats as st

    return float(st.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def grid_frame(res: dict) -> pd.DataFrame:
    """The shift grid: each shift's accuracy on TEST's unseen cells, its paired difference from clean TEST, whether
    it is within the tolerance, and how often the flag fires."""
    g = res.get("grid")
    if not g:
        return pd.DataFrame()
    c = g["clean"]
    rows = [{"shift": "none (clean TEST)", "level": "-", "accuracy": _ci(c["accuracy"], *c["accuracy_ci"]),
             "minus clean": "-", f"within {100 * g['tolerance']:.0f} points": "-",
             "flagged": _pct(c["flagged"]) if c["flagged"] is not None else "-"}]
    for r in g["rows"]:
        rows.append({"shift": f"{r['shift']}: {r['what']}", "level": r["level"],
                     "accuracy": _ci(r["accuracy"], *r["accuracy_ci"]),
                     "minus clean": f"{100 * r['difference']:+.1f} [{100 * r['difference_ci'][0]:+.1f}, "
                                    f"{100 * r['difference_ci'][1]:+.1f}]",
                     f"within {100 * g['tolerance']:.0f} points": ("yes" if r["within"] else "**no**")
                     + (f" ({r['interval_says']})" if r.get("interval_says") else ""),
                     "flagged": _pct(r["flagged"]) if r["flagged"] is not None else "-",
                     "competence flag": _pct(r["competence_flagged"]) if r.get("competence_flagged") is not None
                     else "-"})
    rows[0]["competence flag"] = (_pct(c["competence_flagged"]) if c.get("competence_flagged") is not None
                                  else "-")
    out = pd.DataFrame(rows)
    return out if (out["competence flag"] != "-").any() else out.drop(columns="competence flag")


def lab_frame(res: dict):
    """The lab notebook as a display table: one row per candidate, its folds beside their mean."""
    lab = res["lab"]
    if lab is None or len(lab) == 0:
        return pd.DataFrame()
    return pd.DataFrame({
        "candidate design": lab["design"],
        "validation accuracy, mean ± SD over folds": [f"{_pct(r.val_accuracy)}{_sd(r.val_sd)}"
                                                     for r in lab.itertuples()],
        "each fold": [", ".join(f"{100 * v:.1f}" for v in r.fold_accuracies) for r in lab.itertuples()],
        "with TTA": [_pct(v) for v in lab["val_accuracy_tta"]],
        "cells (mean)": [_pct(v) for v in lab["val_cell_accuracy"]],
        "vs the pick": ["not ranked (folds missing)" if not r.complete else "pick" if i == 0 else
                        ("tied" if r.tied else "below") for i, r in enumerate(lab.itertuples())],
        "train min": [f"{v:.1f}" for v in lab["train_minutes"]]})


def final_frame(res: dict):
    """Per-seed TEST figures, their mean and SD, the seed-pooled figure and the seeds' ensemble."""

    s = res["seeds"]
    if s is None or len(s) == 0:
        return pd.DataFrame()
    cols = ("TEST, unseen cells", "all of TEST", "cells, by vote", "TEST_SIMPLE slides")
    rows = [dict(zip(cols, (
        _ci(r.unseen_accuracy, r.unseen_lo, r.unseen_hi), _ci(r.test_accuracy, r.test_lo, r.test_hi),
        _ci(r.cell_accuracy, r.cell_lo, r.cell_hi),
        _ci(getattr(r, "simple_accuracy", np.nan), getattr(r, "simple_lo", 0), getattr(r, "simple_hi", 0)))),
        **{"": f"seed {r.seed}"}) for r in s.itertuples()]
    sd = lambda c: f" ± {100 * s[c].std(ddof=1):.1f}" if len(s) > 1 else ""  # noqa: E731
    rows.append({"": f"mean ± sd ({len(s)} seeds)", cols[0]: _pct(s["unseen_accuracy"].mean()) + sd("unseen_accuracy"),
                 cols[1]: _pct(s["test_accuracy"].mean()) + sd("test_accuracy"),
                 cols[2]: _pct(s["cell_accuracy"].mean()) + sd("cell_accuracy"),
                 cols[3]: ((_pct(s["simple_accuracy"].mean()) + sd("simple_accuracy"))
                           if "simple_accuracy" in s else "-")})
    p, e = res.get("pooled"), res.get("ensemble")
    if p:
        rows.append({"": f"seed-pooled ({p['seeds']} seeds)", cols[0]: _ci(p["unseen"], p["unseen_lo"], p["unseen_hi"]),
                     cols[1]: _ci(p["test"], p["test_lo"], p["test_hi"]),
                     cols[2]: _ci(p["unseen_cell"], p["unseen_cell_lo"], p["unseen_cell_hi"]),
                     cols[3]: _ci(p["simple"], p["simple_lo"], p["simple_hi"]) if "simple" in p else "-"})
    if e:
        rows.append({"": f"ensemble of the {e['seeds']} seeds", cols[0]: _ci(e["ensemble"], *e["ensemble_ci"]),
                     cols[1]: "-", cols[2]: _ci(e["ensemble_cell"], *e["ensemble_cell_ci"]), cols[3]: "-"})
    return pd.DataFrame(rows)[["", *cols]]


def verdict_markdown(res: dict) -> str:
    """Whether the goals are met, per seed and on average, in words computed from the tables."""
    s = res["seeds"]
    if s is None or len(s) == 0:
        return "No final run has finished yet."
    p = res.get("pooled") or {}
    t, c = s["unseen_accuracy"], s.get("simple_accuracy")
    lines = [f"- **Image-level accuracy on TEST's unseen cells**: mean {_pct(t.mean())} over {len(s)} seeds (range "
             f"{_pct(t.min())}-{_pct(t.max())}; seed-pooled "
             f"{_ci(p.get('unseen'), p.get('unseen_lo'), p.get('unseen_hi'))}, "
             f"an interval over seeds and cells); goal {GOALS['test_accuracy']:.0%} (set before the runs): "
             f"{'met' if t.mean() >= GOALS['test_accuracy'] else 'not met'} on average, by "
             f"{int((t >= GOALS['test_accuracy']).sum())} of {len(s)} seeds."]
    if c is not None:
        lines.append(f"- **TEST_SIMPLE, per distinct slide** ({int(s['simple_slides'].iloc[0])} slides): mean "
                     f"{_pct(c.mean())} (range {_pct(c.min())}-{_pct(c.max())}); goal {GOALS['simple_accuracy']:.0%}: "
                     f"{'met' if c.mean() >= GOALS['simple_accuracy'] else 'not met'} on average, by "
                     f"{int((c >= GOALS['simple_accuracy']).sum())} of {len(s)} seeds.")
    m = s["train_minutes"]
    lines.append(f"- **Training time** per model on this machine: {m.mean():.1f} minutes on average "
                 f"(max {m.max():.1f}); "
                 f"budget {GOALS['train_minutes']:.0f} minutes.")
    lines.append(f"- **Anchors** (public notebooks on the dataset's [Kaggle code page]({ANCHOR_SOURCE}), same TEST "
                 "split, all of its images, per image; cited, not re-run here): "
                 + "; ".join(f"{a}: {b}" for a, b in ANCHORS) + ". Single runs without intervals, scored image by "
                 "image on all of TEST (shared cells included): they place this model in its field, they do not "
                 "rank against it.")
    return "\n".join(lines)


def _sd(v: float) -> str:
    """" ± SD" in points, or nothing for one fold (no spread to show)."""
    return "" if v != v else f" ± {100 * v:.1f}"


def flag_markdown(res: dict) -> str:
    """The shift grid and the flag against their goals, in words computed from ``shift_grid.json``."""
    g = res.get("grid")
    if not g:
        return ""
    beyond_rows = [r for r in g["rows"] if not r["within"]]
    tol = 100 * g["tolerance"]
    lines = [f"- **Robustness** (goal: every shift within {tol:.0f} points of clean TEST): "
             + ("met: every shift of the grid is." if not beyond_rows else
                f"not met: {len(beyond_rows)} of {len(g['rows'])} shifts cost more than {tol:.0f} points ("
                + "; ".join(f"{r['shift']}: {100 * r['difference']:+.1f}" for r in beyond_rows) + ").")]
    fl = g.get("flag") or {}
    if fl.get("false_alarms_clean") is not None:
        fa, fs = fl["false_alarms_clean"], fl.get("false_alarms_simple")
        ok = fa <= GOALS["false_alarms"] and (fs is None or fs <= GOALS["false_alarms"])
        lines.append(f"- **False alarms** (goal: at most {GOALS['false_alarms']:.0%}): the flag marks {_pct(fa)} of "
                     f"clean TEST's images" + (f" and {_pct(fs)} of TEST_SIMPLE's {fl.get('simple_images')} "
                                              "un-augmented originals" if fs is not None else "")
                     + f": {'met' if ok else 'not met'}. Its thresholds: TRAIN's {100 * (1 - fl.get('tail', 0)):.1f}th "
                     f"percentiles (image statistics; energy from {fl.get('energy_from')}).")
        if beyond_rows:
            low = fl.get("lowest_detection")
            lines.append(f"- **Detection** of the shifts beyond the model's competence (goal: each flagged in at "
                         f"least {GOALS['detection']:.0%} of its images): lowest {_pct(low)}; "
                         + "; ".join(f"{n}: {_pct(v)}" for n, v in fl.get("beyond", []))
                         + f": {'met' if low is not None and low >= GOALS['detection'] else 'not met'}.")
        within = fl.get("within", [])
        if within:
            lines.append("- Shifts the model reads well, flagged anyway (a flag that fires on them costs a person's "
                         "time, not an error): " + "; ".join(f"{n}: {_pct(v)}" for n, v in within) + ".")
    cf = g.get("competence")
    if cf and cf.get("false_alarms_clean") is not None:
        fa, fs, low = cf["false_alarms_clean"], cf.get("false_alarms_simple"), cf.get("lowest_detection")
        ok = fa <= GOALS["false_alarms"] and (fs is None or fs <= GOALS["false_alarms"])
        # the ladder's verdicts are its drops (this entry's "beyond" lists the grid's shifts, with the flag's rates)
        ladder_beyond = sum(d > cf["tolerance"] for d in cf.get("drops", {}).values())
        lines.append(
            f"- **The competence flag** (fitted after the model on TRAIN alone: seven image statistics against the "
            f"range where {cf.get('folds')} lab fold models of this design, reading their held-out cells under "
            f"{len(cf.get('drops', {}))} synthetic changes other than the grid's, kept their accuracy within "
            f"{100 * cf['tolerance']:.0f} points; {ladder_beyond} of those changes were beyond it): "
            f"false alarms {_pct(fa)} on clean TEST" + (f" and {_pct(fs)} on TEST_SIMPLE's originals" if fs is not None
                                                        else "")
            + f" ({'met' if ok else 'not met'}); "
            + (f"detection lowest {_pct(low)} over the shifts beyond competence ("
               + "; ".join(f"{n}: {_pct(v)}" for n, v in cf.get("beyond", [])) + f"): "
               f"{'met' if low >= GOALS['detection'] else 'not met'}" if low is not None else "no shift beyond it")
            + "; on the shifts it reads well: " + "; ".join(f"{n}: {_pct(v)}" for n, v in cf.get("within", [])) + ".")
    return "\n".join(lines)


def calibration_markdown(res: dict) -> str:
    s = res["seeds"]
    if s is None or len(s) == 0:
        return ""
    txt = (f"Expected calibration error on the unseen TEST images (10 bins; intervals from a bootstrap over cells): "
           f"{_pct(s['ece'].mean())} on average over the seeds (range {_pct(s['ece'].min())}-{_pct(s['ece'].max())}). "
           f"Abstaining uses the same vote as the cell accuracy: each cell is read as the majority of its images, "
           f"with the mean probability of that class as its confidence. Setting aside the least confident 10% of "
           f"cells ({int(s['cells_abstained'].iloc[0])} of {int(s['cells'].iloc[0])}), it is right on "
           f"{_pct(s['cell_accuracy_abstain10'].mean())} of the cells it keeps (mean over seeds; "
           f"{_pct(s['cell_accuracy'].mean())} without abstaining). Setting cells aside at random would keep the "
           f"accuracy where it is (the dashed line of the risk-coverage figure).")
    if "simple_accuracy_abstain10" in s:
        txt += (f" On TEST_SIMPLE's un-augmented slides, abstaining on the least confident 10% leaves "
                f"{_pct(s['simple_accuracy_abstain10'].mean())} right (from {_pct(s['simple_accuracy'].mean())}).")
    return txt
