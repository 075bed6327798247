"""Tables of a study, computed from its run artifacts (the report's numbers all come from here).

Seeds are pooled the honest way: for each TEST image, the share of seeds that
classified it correctly; the cluster bootstrap over source cells then gives the
interval of the seed-averaged accuracy. Comparisons between losses are paired
on the same cells (:func:`wbc_utils.evaluation.paired_difference`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .evaluation import cluster_bootstrap, paired_difference
from .params import ENCODINGS, LOSS_TITLES, LOSSES

#: What the 2020 report stated, per loss (validation accuracy, read off its figures and text).
PAPER_REPORTED = {"crossentropy": 0.70, "mse": 0.25, "huber": 0.25}


def _predictions(run_dir: str | Path, split: str = "TEST"):
    import pandas as pd

    p = Path(run_dir) / "predictions.csv"
    f = pd.read_csv(p)
    return f[f["split"] == split].sort_values("relpath").reset_index(drop=True)


def pooled_correct(summary, loss: str, encoding: str, split: str = "TEST"):
    """(share of finished seeds correct per image, labels, cells, n seeds) for one loss and encoding."""
    rows = summary[(summary["loss"] == loss) & (summary["target_encoding"] == encoding) &
                   (summary["status"] == "finished")]
    if rows.empty:
        return None
    acc, base = [], None
    for r in rows.itertuples():
        f = _predictions(r.run_dir, split)
        if base is None:
            base = f
        elif len(f) != len(base) or (f["relpath"].to_numpy() != base["relpath"].to_numpy()).any():
            raise ValueError(f"{r.run_dir}: predictions are on other images than its sibling runs")
        acc.append((f["pred"] == f["label"]).to_numpy(float))
    return np.mean(acc, 0), base["label"].to_numpy(), base["cell"].to_numpy(), len(acc)


def pooled_cell_correct(summary, loss: str, encoding: str):
    """(share of finished seeds whose majority vote gets each TEST cell right, cell labels, cell ids)."""
    from .evaluation import cell_majority

    rows = summary[(summary["loss"] == loss) & (summary["target_encoding"] == encoding) &
                   (summary["status"] == "finished")]
    acc, ids0, true0 = [], None, None
    for r in rows.itertuples():
        f = _predictions(r.run_dir)
        ids, true, vote = cell_majority(f["pred"].to_numpy(), f["label"].to_numpy(), f["cell"].to_numpy())
        if ids0 is None:
            ids0, true0 = ids, true
        acc.append((true == vote).astype(float))
    if not acc:
        return None
    return np.mean(acc, 0), true0, ids0


def group_table(summary):
    """One row per loss x encoding: seeds, collapse count, accuracies (mean, sd, pooled interval)."""
    import pandas as pd

    out = []
    for loss in LOSSES:
        for enc in ENCODINGS:
            s = summary[(summary["loss"] == loss) & (summary["target_encoding"] == enc)]
            if s.empty:
                continue
            fin = s[s["status"] == "finished"]
            row = {"loss": loss, "encoding": enc, "runs": len(s), "finished": len(fin),
                   "failed": int((s["status"] == "failed").sum()), "incomplete": int((s["status"] == "incomplete").sum()),
                   "collapsed": int((fin["collapsed"] == True).sum()),  # noqa: E712
                   "paper_reported": PAPER_REPORTED[loss] if enc == "paper" else np.nan}
            for k in ("test_accuracy", "paper_metric_test", "cell_accuracy", "test_simple_accuracy",
                      "final_train_accuracy", "final_train_paper_metric"):
                vals = pd.to_numeric(fin[k], errors="coerce")
                row[f"{k}_mean"] = vals.mean() if len(vals) else np.nan
                row[f"{k}_sd"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
            pc = pooled_correct(summary, loss, enc)
            if pc is not None:
                ci = cluster_bootstrap(pc[0], pc[2])
                row["pooled_lo"], row["pooled_hi"] = ci["lo"], ci["hi"]
                st = cluster_bootstrap(pc[0], pc[2], pc[1])
                row["pooled_strat_lo"], row["pooled_strat_hi"] = st["lo"], st["hi"]
                row["test_images"] = len(pc[0])
            cc = pooled_cell_correct(summary, loss, enc)
            if cc is not None:
                ci = cluster_bootstrap(cc[0], cc[2])
                row["cell_pooled"], row["cell_pooled_lo"], row["cell_pooled_hi"] = ci["value"], ci["lo"], ci["hi"]
            out.append(row)
    return pd.DataFrame(out)


def paired_table(summary, pairs=(("crossentropy", "mse"), ("crossentropy", "huber"), ("mse", "huber"))):
    """Seed-pooled accuracy differences between losses, paired on TEST's cells, per encoding."""
    import pandas as pd

    out = []
    for enc in ENCODINGS:
        for a, b in pairs:
            pa, pb = pooled_correct(summary, a, enc), pooled_correct(summary, b, enc)
            if pa is None or pb is None:
                continue
            d = paired_difference(pa[0], pb[0], pa[2])
            out.append({"encoding": enc, "comparison": f"{a} - {b}", **d,
                        "verdict": ("A better" if d["lo"] > 0 else "B better") if d["resolved"] else "not resolved"})
    return pd.DataFrame(out)


def encoding_effect(summary):
    """Per loss: onehot minus paper encoding, seed-pooled and paired on cells."""
    import pandas as pd

    out = []
    for loss in LOSSES:
        po, pp = pooled_correct(summary, loss, "onehot"), pooled_correct(summary, loss, "paper")
        if po is None or pp is None:
            continue
        d = paired_difference(po[0], pp[0], po[2])
        out.append({"loss": loss, **d})
    return pd.DataFrame(out)


def original_table(orig: dict):
    """The 2020 models re-scored: logged figure against what it really measured."""
    import pandas as pd

    rows = []
    for loss in LOSSES:
        m = orig.get("models", {}).get(loss)
        log = orig.get("logs", {}).get(loss)
        row = {"loss": loss, "logged_final_val_accuracy": log["val_accuracy"][-1] if log else np.nan,
               "logged_final_train_accuracy": log["accuracy"][-1] if log else np.nan}
        if m:
            row.update({"recomputed_2020_metric": m["paper_metric_test"], "true_accuracy": m["test_accuracy"],
                        "true_lo": m["test_accuracy_ci"][0], "true_hi": m["test_accuracy_ci"][1],
                        "argmax_class0_share": m["argmax_class0_share"],
                        "regression_decoded_accuracy": m["regression_decoded_accuracy"],
                        "regression_lo": (m.get("regression_decoded_accuracy_ci") or [np.nan, np.nan])[0],
                        "regression_hi": (m.get("regression_decoded_accuracy_ci") or [np.nan, np.nan])[1],
                        "cell_accuracy": m["cell_accuracy"], "cell_lo": m["cell_accuracy_ci"][0],
                        "cell_hi": m["cell_accuracy_ci"][1], "collapsed": m["collapsed"],
                        "score_spread_within_image": m["score_spread_within_image"]})
        rows.append(row)
    return pd.DataFrame(rows)


def fmt_ci(value, lo, hi, pct: bool = True) -> str:
    """'70.2% [65.1, 75.0]' (or '-' when missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if pct:
        return f"{100 * value:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def fmt_pct(value, sd=None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    s = f"{100 * value:.1f}%"
    if sd is not None and not (isinstance(sd, float) and np.isnan(sd)):
        s += f" ± {100 * sd:.1f}"
    return s


def loss_title(loss: str) -> str:
    return LOSS_TITLES[loss]
