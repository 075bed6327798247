"""Beyond the paper: the tables of the ``best`` profile, from its run artifacts only.

* the **lab notebook**: every candidate design, trained once on 80% of
  TRAIN's source cells and scored on the other 20% (never on TEST), with its
  interval and the decision it led to;
* the **final model**: the chosen design trained on all of TRAIN with several
  seeds, scored once on TEST (image level, cell level by majority vote, and
  TEST_SIMPLE's 71 un-augmented cells), per seed and pooled; the seeds'
  ensemble; calibration; accuracy when the least confident cells are left to a
  person.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import CLASSES
from .artifacts import read_json
from .evaluation import (abstention, calibration, cell_majority, cell_probabilities, cluster_bootstrap, confusion,
                         softmax)

#: Parameters in which candidates differ, with how the lab table names them.
DESIGN_KEYS = {"view": "input", "image_size": "size", "augment": "augmentation", "lr_schedule": "schedule",
               "label_smoothing": "label smoothing", "arch": "model", "width": "width", "epochs": "epochs",
               "learning_rate": "lr"}


def _params(row) -> dict:
    return read_json(Path(row.run_dir) / "params.json")


def describe(params: dict) -> str:
    """A short description of a design: 'cell crops 64x64, geometric+color aug, cosine, smoothing 0.1'."""
    size = "x".join(str(v) for v in params.get("image_size", []))
    view = "cell crops" if params.get("view") == "cell" else "whole field"
    parts = [f"{view} {size}", f"{params.get('augment', 'none')} aug", params.get("lr_schedule", "constant") + " lr"]
    if params.get("label_smoothing"):
        parts.append(f"smoothing {params['label_smoothing']:g}")
    return ", ".join(parts)


def lab_table(summary):
    """One row per lab candidate (grouped-validation runs), best validation first."""
    import pandas as pd

    rows = []
    lab = summary[(summary["validation"] == "grouped") & (summary["status"] == "finished")]
    for r in lab.itertuples():
        m = read_json(Path(r.run_dir) / "metrics.json")
        p = _params(r)
        rows.append({"run_name": r.run_name, "design": describe(p), "seed": p["seed"], "epochs": p["epochs"],
                     "val_accuracy": m["val_accuracy"], "val_lo": m["val_accuracy_ci"][0],
                     "val_hi": m["val_accuracy_ci"][1], "val_cell_accuracy": m["val_cell_accuracy"],
                     "val_cell_lo": m["val_cell_accuracy_ci"][0], "val_cell_hi": m["val_cell_accuracy_ci"][1],
                     "val_accuracy_tta": m.get("val_accuracy_tta"), "val_cells": m["val_cells"],
                     "train_minutes": m["train_seconds"] / 60, "params": p})
    out = pd.DataFrame(rows)
    return out.sort_values("val_accuracy", ascending=False).reset_index(drop=True) if len(out) else out


def chosen_design(summary) -> dict | None:
    """The parameters of the final (main) runs, or None when there are none yet."""
    main = summary[(summary["role"] == "main")]
    if main.empty or not (Path(main.iloc[0].run_dir) / "params.json").exists():
        return None
    return _params(main.iloc[0])


def decisions(lab, chosen: dict | None) -> list[str]:
    """Why each candidate was kept or dropped, in words computed from the lab table."""
    if lab is None or len(lab) == 0 or chosen is None:
        return []
    keys = [k for k in DESIGN_KEYS if k not in ("epochs",)]
    match = [all(row.params.get(k) == chosen.get(k) for k in keys) for row in lab.itertuples()]
    kept = lab[match]
    ref = kept.iloc[0] if len(kept) else lab.iloc[0]
    out = []
    for row, is_kept in zip(lab.itertuples(), match):
        gap = 100 * (row.val_accuracy - ref.val_accuracy)
        if is_kept:
            verdict = "**kept**: the final runs use this design"
        elif row.val_lo <= ref.val_accuracy <= row.val_hi:
            verdict = f"dropped: {gap:+.1f} points against the kept design, within this candidate's interval"
        else:
            verdict = f"dropped: {gap:+.1f} points against the kept design"
        out.append(f"{row.design}: validation {100 * row.val_accuracy:.1f}% "
                   f"[{100 * row.val_lo:.1f}, {100 * row.val_hi:.1f}], cells {100 * row.val_cell_accuracy:.1f}% "
                   f"- {verdict}")
    return out


def tta_effect(lab, chosen: dict | None = None) -> dict | None:
    """Test-time augmentation on validation: its gain per candidate, and for the kept design."""
    if lab is None or len(lab) == 0 or lab["val_accuracy_tta"].isna().all():
        return None
    d = (lab["val_accuracy_tta"] - lab["val_accuracy"]).to_numpy(float)
    out = {"gains": dict(zip(lab["design"], d)), "raised": int((d > 0).sum()), "candidates": int(len(d)),
           "kept_gain": None}
    if chosen is not None:
        keys = [k for k in DESIGN_KEYS if k != "epochs"]
        for row, g in zip(lab.itertuples(), d):
            if all(row.params.get(k) == chosen.get(k) for k in keys):
                out["kept_gain"] = float(g)
    return out


def _preds(row, split: str):
    import pandas as pd

    f = pd.read_csv(Path(row.run_dir) / "predictions.csv")
    return f[f["split"] == split].sort_values("relpath").reset_index(drop=True)


def final_runs(summary):
    return summary[(summary["role"] == "main") & (summary["status"] == "finished")]


def seed_table(summary):
    """Per final run (seed): TEST image and cell accuracy, TEST_SIMPLE accuracy, with intervals; ECE; abstention."""
    import pandas as pd

    rows = []
    for r in final_runs(summary).itertuples():
        m = read_json(Path(r.run_dir) / "metrics.json")
        t = _preds(r, "TEST")
        probs = softmax(t[[f"score_{c}" for c in CLASSES]].to_numpy())
        cal = calibration(probs, t["label"].to_numpy())
        _, ctrue, cprob = cell_probabilities(probs, t["label"].to_numpy(), t["cell"].to_numpy())
        ab = abstention(cprob, ctrue, 0.10)
        row = {"seed": int(r.seed), "run_name": r.run_name, "test_accuracy": m["test_accuracy"],
               "test_lo": m["test_accuracy_ci"][0], "test_hi": m["test_accuracy_ci"][1],
               "cell_accuracy": m["cell_accuracy"], "cell_lo": m["cell_accuracy_ci"][0],
               "cell_hi": m["cell_accuracy_ci"][1], "ece": cal["ece"],
               "cell_accuracy_abstain10": ab["accuracy_kept"], "cells_abstained": ab["abstained"],
               "train_minutes": m["train_seconds"] / 60}
        if "test_simple_accuracy" in m:
            row.update({"simple_accuracy": m["test_simple_accuracy"], "simple_lo": m["test_simple_accuracy_ci"][0],
                        "simple_hi": m["test_simple_accuracy_ci"][1]})
            s = _preds(r, "TEST_SIMPLE")
            sab = abstention(softmax(s[[f"score_{c}" for c in CLASSES]].to_numpy()), s["label"].to_numpy(), 0.10)
            row["simple_accuracy_abstain10"] = sab["accuracy_kept"]
        rows.append(row)
    return pd.DataFrame(rows)


def pooled(summary, split: str = "TEST") -> dict | None:
    """Seed-pooled accuracy (share of seeds right per image) with its cluster interval, and the seeds' ensemble."""
    runs = list(final_runs(summary).itertuples())
    if not runs:
        return None
    frames = [_preds(r, split) for r in runs]
    base = frames[0]
    for f in frames[1:]:
        if (f["relpath"].to_numpy() != base["relpath"].to_numpy()).any():
            raise ValueError("the final runs' predictions are on different images")
    labels, cells = base["label"].to_numpy(), base["cell"].to_numpy()
    probs = [softmax(f[[f"score_{c}" for c in CLASSES]].to_numpy()) for f in frames]
    share = np.mean([(p.argmax(1) == labels).astype(float) for p in probs], 0)
    group = cells if split == "TEST" else np.arange(len(labels))
    ci = cluster_bootstrap(share, group)
    ens = np.mean(probs, 0)
    eok = ens.argmax(1) == labels
    eci = cluster_bootstrap(eok, group)
    out = {"split": split, "seeds": len(runs), "pooled": ci["value"], "pooled_lo": ci["lo"], "pooled_hi": ci["hi"],
           "ensemble": eci["value"], "ensemble_lo": eci["lo"], "ensemble_hi": eci["hi"],
           "ensemble_ece": calibration(ens, labels)["ece"], "probs": probs, "labels": labels, "cells": cells,
           "relpaths": base["relpath"].to_numpy(), "ensemble_probs": ens}
    if split == "TEST":
        uniq, ctrue, cvote = cell_majority(ens.argmax(1), labels, cells)
        cok = ctrue == cvote
        cci = cluster_bootstrap(cok, uniq)
        out.update({"ensemble_cell": cci["value"], "ensemble_cell_lo": cci["lo"], "ensemble_cell_hi": cci["hi"]})
    return out


def confusions(summary) -> dict:
    """Image-level and cell-level (majority vote) confusion matrices, summed over the final runs' seeds."""
    img = np.zeros((len(CLASSES), len(CLASSES)), int)
    cel = np.zeros_like(img)
    for r in final_runs(summary).itertuples():
        t = _preds(r, "TEST")
        img += confusion(t["label"], t["pred"])
        _, ctrue, cvote = cell_majority(t["pred"].to_numpy(), t["label"].to_numpy(), t["cell"].to_numpy())
        cel += confusion(ctrue, cvote)
    return {"image": img, "cell": cel}


def wrong_cells(summary):
    """TEST source cells the final runs misread: by the majority vote of the cell's augmented TEST images, or on
    its un-augmented TEST_SIMPLE image; with how many seeds did, what they read, and the TEST_SIMPLE image."""
    import pandas as pd

    runs = list(final_runs(summary).itertuples())
    found: dict = {}

    def note(cell, true, read, how):
        r = found.setdefault(cell, {"cell": cell, "class": CLASSES[true], "seeds_wrong_majority": 0,
                                    "seeds_wrong_simple": 0, "read": set()})
        r[how] += 1
        r["read"].add(CLASSES[read])

    simple_path = {}
    for r in runs:
        t = _preds(r, "TEST")
        uniq, ctrue, cvote = cell_majority(t["pred"].to_numpy(), t["label"].to_numpy(), t["cell"].to_numpy())
        for c, a, b in zip(uniq, ctrue, cvote):
            if a != b:
                note(c, a, b, "seeds_wrong_majority")
        s = _preds(r, "TEST_SIMPLE")
        simple_path.update(zip(s["cell"], s["relpath"]))
        for c, a, b in zip(s["cell"], s["label"], s["pred"]):
            if a != b:
                note(c, int(a), int(b), "seeds_wrong_simple")
    cols = ["cell", "class", "seeds_wrong_majority", "seeds_wrong_simple", "voted", "seeds", "simple_relpath"]
    out = pd.DataFrame(list(found.values()))
    if not len(out):
        return pd.DataFrame(columns=cols)
    out["voted"] = [", ".join(sorted(v)) for v in out.pop("read")]
    out["seeds"] = len(runs)
    out["seeds_wrong"] = out[["seeds_wrong_majority", "seeds_wrong_simple"]].max(axis=1)
    out["simple_relpath"] = [simple_path.get(c, "") for c in out["cell"]]
    return out.sort_values(["seeds_wrong", "cell"], ascending=[False, True]).reset_index(drop=True)


def lab_and_final(profile: str = "best", runs_root=None) -> dict | None:
    """Everything the report's 'beyond the paper' section shows, or None when the profile has no runs."""
    from .study import load_runs, profile_dir

    if not profile_dir(profile, runs_root).exists():
        return None
    summary, _, _ = load_runs(profile, runs_root)
    lab = lab_table(summary)
    chosen = chosen_design(summary)
    out = {"summary": summary, "lab": lab, "chosen": chosen, "decisions": decisions(lab, chosen),
           "tta": tta_effect(lab, chosen), "seeds": seed_table(summary), "final_runs": final_runs(summary)}
    if len(out["final_runs"]):
        out["pooled_test"] = pooled(summary, "TEST")
        out["pooled_simple"] = pooled(summary, "TEST_SIMPLE")
        out["confusions"] = confusions(summary)
        out["wrong_cells"] = wrong_cells(summary)
    return out


#: Published anchors on the same TEST split (literature, cited; not measured here).
ANCHORS = (
    ("small CNNs trained from scratch, public notebooks (TEST watched during training: optimistic)", "about 82-85%"),
    ("ImageNet-pretrained EfficientNet-B4, 9-view test-time augmentation, validated on a TRAIN split", "89.3%"),
)
#: The goals this profile was built to meet (issue: "beyond the paper").
GOALS = {"test_accuracy": 0.90, "simple_accuracy": 0.90, "train_minutes": 30.0}


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}%"


def _ci(v, lo, hi) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def methods_markdown(res: dict) -> str:
    """Section 6's methods paragraph, from the chosen design's parameters."""
    p = res["chosen"] or {}
    lab = res["lab"]
    n_val = int(lab["val_cells"].iloc[0]) if len(lab) else 0
    h, w = (p.get("image_size") or ["?", "?"])[:2]
    crop = ("a 128x128 window of the 240x320 field around the white cell, resized: the nucleus is found by its stain "
            "(blue well above green), smoothed with a nucleus-sized box; nothing is learned or tuned on any split, "
            "and `predict` crops new images the same way")
    tried_crop = any(q.get("view") == "cell" for q in lab["params"]) if len(lab) else False
    if p.get("view") == "cell":
        inp = f"**Input.** Instead of the whole field shrunk, a {h}x{w} crop: {crop}."
    else:
        inp = (f"**Input.** The whole field at {h}x{w}, as in the quick profile, scaled to 0-1."
               + (f" The lab also tried {crop}; on validation it did not beat the whole field (6.1)." if tried_crop
                  else ""))
    width = p.get("width", 16)
    n_tta = 8 if h == w else 4
    return (
        inp + "\n\n"
        f"**Model.** `wbcnet`: four blocks of two 3x3 convolutions with BatchNorm and ReLU ({width}, {2 * width}, "
        f"{4 * width}, {8 * width} filters), max-pools between blocks, global average pooling, dropout 0.3, Dense(4); "
        "trained from scratch (no downloaded weights).\n\n"
        f"**Training.** Cross-entropy{' with label smoothing ' + format(p.get('label_smoothing'), 'g') if p.get('label_smoothing') else ''}, "
        f"Adam from {p.get('learning_rate')} with a {p.get('lr_schedule')} schedule, batch {p.get('batch_size')}, "
        f"{p.get('epochs')} epochs, augmentation `{p.get('augment')}` (flips"
        f"{' and quarter-turns' if h == w else ' and half-turns'}, shifts up to 8%"
        f"{', per-channel stain jitter' if 'color' in str(p.get('augment')) else ''}); TRAIN's classes hold "
        "equal numbers of images, so no class weights. "
        f"{f'Test-time augmentation averages the probabilities of the {n_tta} flips/turns of each image.' if p.get('tta') else ''}\n\n"
        "**How the design was chosen: the lab.** Each candidate was trained once on 80% of TRAIN's source cells "
        f"and scored on the other 20% ({n_val} cells; every augmented copy of a held-out cell is held out with it, "
        "and intervals resample those cells). The rule, fixed in advance: keep the candidate with the highest "
        "validation accuracy. TEST played no part: the final runs train the kept design on all of TRAIN with no "
        "validation at all, then score TEST once. (The pipeline scores TEST for every run, lab runs included; those "
        "numbers are in their `metrics.json` and were not used for any choice.)")


def lab_frame(res: dict):
    """The lab notebook as a display table."""
    import pandas as pd

    lab = res["lab"]
    if lab is None or len(lab) == 0:
        return pd.DataFrame()
    return pd.DataFrame({
        "candidate design": lab["design"],
        "validation accuracy [95% CI]": [_ci(r.val_accuracy, r.val_lo, r.val_hi) for r in lab.itertuples()],
        "with TTA": [_pct(v) for v in lab["val_accuracy_tta"]],
        "cell accuracy [95% CI]": [_ci(r.val_cell_accuracy, r.val_cell_lo, r.val_cell_hi) for r in lab.itertuples()],
        "epochs": lab["epochs"], "train min": [f"{v:.1f}" for v in lab["train_minutes"]]})


def final_frame(res: dict):
    """Per-seed TEST figures, their mean and SD, the seed-pooled figure and the seeds' ensemble."""
    import pandas as pd

    s = res["seeds"]
    if s is None or len(s) == 0:
        return pd.DataFrame()
    rows = [{"": f"seed {r.seed}", "TEST images [95% CI]": _ci(r.test_accuracy, r.test_lo, r.test_hi),
             "TEST cells, majority [95% CI]": _ci(r.cell_accuracy, r.cell_lo, r.cell_hi),
             "TEST_SIMPLE 71 cells [95% CI]": _ci(getattr(r, "simple_accuracy", np.nan), getattr(r, "simple_lo", 0),
                                                  getattr(r, "simple_hi", 0)),
             "ECE": _pct(r.ece), "train min": f"{r.train_minutes:.1f}"} for r in s.itertuples()]
    sd = lambda c: f" ± {100 * s[c].std(ddof=1):.1f}" if len(s) > 1 else ""  # noqa: E731
    rows.append({"": f"mean ± sd ({len(s)} seeds)", "TEST images [95% CI]": _pct(s["test_accuracy"].mean()) + sd("test_accuracy"),
                 "TEST cells, majority [95% CI]": _pct(s["cell_accuracy"].mean()) + sd("cell_accuracy"),
                 "TEST_SIMPLE 71 cells [95% CI]": (_pct(s["simple_accuracy"].mean()) + sd("simple_accuracy"))
                 if "simple_accuracy" in s else "-",
                 "ECE": _pct(s["ece"].mean()), "train min": f"{s['train_minutes'].mean():.1f}"})
    pt, ps = res.get("pooled_test"), res.get("pooled_simple")
    if pt:
        rows.append({"": "seed-pooled", "TEST images [95% CI]": _ci(pt["pooled"], pt["pooled_lo"], pt["pooled_hi"]),
                     "TEST cells, majority [95% CI]": "-",
                     "TEST_SIMPLE 71 cells [95% CI]": _ci(ps["pooled"], ps["pooled_lo"], ps["pooled_hi"]) if ps else "-",
                     "ECE": "-", "train min": "-"})
        rows.append({"": f"ensemble of the {pt['seeds']} seeds",
                     "TEST images [95% CI]": _ci(pt["ensemble"], pt["ensemble_lo"], pt["ensemble_hi"]),
                     "TEST cells, majority [95% CI]": _ci(pt["ensemble_cell"], pt["ensemble_cell_lo"], pt["ensemble_cell_hi"]),
                     "TEST_SIMPLE 71 cells [95% CI]": _ci(ps["ensemble"], ps["ensemble_lo"], ps["ensemble_hi"]) if ps else "-",
                     "ECE": _pct(pt["ensemble_ece"]), "train min": f"{s['train_minutes'].sum():.1f}"})
    return pd.DataFrame(rows)


def verdict_markdown(res: dict) -> str:
    """Whether the goals are met, per seed and on average, in words computed from the tables."""
    s = res["seeds"]
    if s is None or len(s) == 0:
        return "No final run has finished yet."
    t, c = s["test_accuracy"], s.get("simple_accuracy")
    lines = [f"- **Image-level TEST accuracy**: mean {_pct(t.mean())} over {len(s)} seeds (range "
             f"{_pct(t.min())}-{_pct(t.max())}); goal {GOALS['test_accuracy']:.0%}: "
             f"{'met' if t.mean() >= GOALS['test_accuracy'] else 'not met'} on average, by "
             f"{int((t >= GOALS['test_accuracy']).sum())} of {len(s)} seeds."]
    if c is not None:
        lines.append(f"- **Cell-level accuracy on TEST_SIMPLE's 71 cells**: mean {_pct(c.mean())} (range "
                     f"{_pct(c.min())}-{_pct(c.max())}); goal {GOALS['simple_accuracy']:.0%}: "
                     f"{'met' if c.mean() >= GOALS['simple_accuracy'] else 'not met'} on average, by "
                     f"{int((c >= GOALS['simple_accuracy']).sum())} of {len(s)} seeds.")
    m = s["train_minutes"]
    lines.append(f"- **Training time** per model on this machine: {m.mean():.1f} minutes on average (max {m.max():.1f}); "
                 f"budget {GOALS['train_minutes']:.0f} minutes.")
    lines.append("- **Anchors** (published, same TEST split): " + "; ".join(f"{a}: {b}" for a, b in ANCHORS) + ".")
    return "\n".join(lines)


def calibration_markdown(res: dict) -> str:
    s = res["seeds"]
    if s is None or len(s) == 0:
        return ""
    txt = (f"Expected calibration error on TEST images (10 bins): {_pct(s['ece'].mean())} on average over the seeds "
           f"(range {_pct(s['ece'].min())}-{_pct(s['ece'].max())}). When the model may abstain on its least "
           f"confident 10% of TEST cells ({int(s['cells_abstained'].iloc[0])} of {len(set(res['pooled_test']['cells']))}, confidence = the mean "
           f"probability of the cell's images), it is right on {_pct(s['cell_accuracy_abstain10'].mean())} of the "
           f"cells it keeps (mean over seeds; without abstaining {_pct(s['cell_accuracy'].mean())} by majority vote).")
    if "simple_accuracy_abstain10" in s:
        txt += (f" On TEST_SIMPLE's un-augmented images, abstaining on the least confident 10% leaves "
                f"{_pct(s['simple_accuracy_abstain10'].mean())} right (from {_pct(s['simple_accuracy'].mean())}).")
    return txt
