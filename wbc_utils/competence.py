"""A flag fitted to what the model can read: "this answer is unreliable" only where the model's accuracy drops.

The out-of-distribution flag (:mod:`wbc_utils.ood`) asks whether an image is unlike TRAIN; but a model reads
some changes well (a little blur, a paler stain) and others badly (a darker lamp, another magnification). This
flag is fitted *after* the model, on TRAIN alone, to mark the second kind and not the first:

1. **Seven statistics of a field**, one per way a lab changes a smear (over the smear's pixels, the black fill of
   the dataset's augmented copies left out): brightness and contrast (mean and spread of grey), haematoxylin and
   eosin (mean density in HED space, scikit-image's stain matrix), sharpness (log variance of the Laplacian), the
   stained share (the nucleus's area, which follows the magnification) and blockiness (JPEG's 8-pixel grid).
2. **A calibration ladder** of synthetic changes of each kind at many strengths (:data:`wbc_utils.shifts.LADDER`),
   distinct from the evaluation grid's (:data:`wbc_utils.shifts.GRID`): each applied to held-out TRAIN cells and
   read by models of the same design that did not train on them (the lab's fold models). A rung is *within
   competence* when accuracy stays within the tolerance of the clean images'.
3. **The competence region**: per statistic, the range its values take on clean TRAIN images (their 0.1-99.9th
   percentiles) widened to cover the rungs within competence (their 2.5-97.5th percentiles). An image with any
   statistic outside its range is flagged, with the statistic named.

Nothing here sees TEST: the grid (:mod:`wbc_utils.shifts`) then measures on TEST how often the flag fires on
clean images (false alarms) and on each shift beyond the model's competence (detection).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .augment import to_hed
from .cellcrop import stain_map
from .ood import FILL_MAX

STATISTICS = ("brightness", "contrast", "haematoxylin", "eosin", "sharpness", "stained share", "blockiness")
#: Clean TRAIN's range per statistic: these percentiles (a false-alarm rate of about 0.2% per statistic).
CLEAN_RANGE = (0.1, 99.9)
#: The rungs within competence widen the range to these percentiles of their values.
RUNG_RANGE = (2.5, 97.5)


def field_statistics(field: np.ndarray) -> np.ndarray:
    """The seven :data:`STATISTICS` of one uint8 RGB field (any size; TRAIN's are 240x320)."""
    x = np.asarray(field, np.float32)
    smear = x.sum(2) > FILL_MAX
    if smear.mean() < 0.05:
        smear = np.ones_like(smear)
    inner = ndimage.binary_erosion(smear, iterations=3)
    inner = inner if inner.any() else smear
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    hed = to_hed(x[smear])
    sharp = np.log10(float(ndimage.laplace(gray)[inner].var()) + 1.0)
    # JPEG blockiness: the mean jump across the 8-pixel grid's columns and rows over the mean jump elsewhere
    dx, dy = np.abs(np.diff(gray, axis=1)), np.abs(np.diff(gray, axis=0))
    mx, my = inner[:, 1:] & inner[:, :-1], inner[1:] & inner[:-1]
    on_x, on_y = (np.arange(dx.shape[1]) % 8 == 7), (np.arange(dy.shape[0]) % 8 == 7)
    across = np.concatenate([dx[:, on_x][mx[:, on_x]], dy[on_y][my[on_y]]])
    inside = np.concatenate([dx[:, ~on_x][mx[:, ~on_x]], dy[~on_y][my[~on_y]]])
    block = float(across.mean() / max(inside.mean(), 1e-3)) if len(across) and len(inside) else 1.0
    return np.array([gray[smear].mean(), gray[smear].std(), hed[:, 0].mean(), hed[:, 1].mean(), sharp,
                     float((stain_map(field) > 0)[smear].mean()), block], np.float64)


def statistics(fields: np.ndarray) -> np.ndarray:
    """(N, 7) statistics of N fields."""
    return np.stack([field_statistics(f) for f in fields]) if len(fields) else np.zeros((0, len(STATISTICS)))


def fit_region(clean_stats: np.ndarray, rungs: list[dict], tolerance: float) -> dict:
    """The competence region from clean TRAIN statistics and the ladder's rungs.

    ``rungs``: one dict per rung, ``{"name", "drop"}`` (the clean accuracy minus the rung's, held-out cells,
    pooled over the fold models) and ``"stats"`` ((N, 7) statistics of the rung's shifted fields). Returns
    ``{"low", "high"}`` per statistic, the rungs kept and dropped, and the settings."""
    clean_stats = np.asarray(clean_stats, float)
    # bounds are values the images took (not interpolated): no clean image sits a rounding error outside
    low = np.percentile(clean_stats, CLEAN_RANGE[0], axis=0, method="lower")
    high = np.percentile(clean_stats, CLEAN_RANGE[1], axis=0, method="higher")
    kept = [r for r in rungs if r["drop"] <= tolerance]
    for r in kept:
        low = np.minimum(low, np.percentile(r["stats"], RUNG_RANGE[0], axis=0, method="lower"))
        high = np.maximum(high, np.percentile(r["stats"], RUNG_RANGE[1], axis=0, method="higher"))
    return {"statistics": list(STATISTICS), "low": low.tolist(), "high": high.tolist(), "tolerance": tolerance,
            "within": [r["name"] for r in kept], "beyond": [r["name"] for r in rungs if r["drop"] > tolerance],
            "drops": {r["name"]: float(r["drop"]) for r in rungs}, "clean_images": int(len(clean_stats))}


def flag(region: dict, stats: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(flagged, reason) per image: which statistics lie outside the model's competence region."""
    s = np.atleast_2d(np.asarray(stats, float))
    low, high = np.asarray(region["low"]), np.asarray(region["high"])
    reasons = []
    for row in s:
        out = [f"{n} {v:.3g} {'<' if v < lo else '>'} {lo if v < lo else hi:.3g}"
               for n, v, lo, hi in zip(region["statistics"], row, low, high) if v < lo or v > hi]
        reasons.append("outside the model's competence: " + ", ".join(out) if out else "")
    return np.array([bool(r) for r in reasons]), reasons


def calibrate(readers: list, ladder, apply, tolerance: float, progress: bool = False) -> dict:
    """Fit the region from held-out TRAIN cells. ``readers``: one ``(fields, labels, predict)`` per fold model,
    ``fields`` its held-out 240x320 fields, ``predict(fields) -> predicted labels`` that model's pipeline (crop,
    scores, argmax); ``ladder`` the changes, ``apply(change, fields)`` applies one (:mod:`wbc_utils.shifts`). A
    rung's drop is the clean accuracy minus the changed one, over every fold's images."""
    clean_correct = np.concatenate([predict(f) == y for f, y, predict in readers])
    clean_stats = np.concatenate([statistics(f) for f, _, _ in readers])
    rungs = []
    for change in ladder:
        if progress:
            print(f"competence ladder: {change.name}", flush=True)
        shifted = [(apply(change, f), y, predict) for f, y, predict in readers]
        correct = np.concatenate([predict(f) == y for f, y, predict in shifted])
        rungs.append({"name": change.name, "drop": float(clean_correct.mean() - correct.mean()),
                      "stats": np.concatenate([statistics(f) for f, _, _ in shifted])})
    region = fit_region(clean_stats, rungs, tolerance)
    region["clean_accuracy"] = float(clean_correct.mean())
    return region
