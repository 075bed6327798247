"""Is an image like the ones the model was trained on? Two tests, both calibrated on TRAIN.

A model trained on one lab's smears answers anything with a class, often confidently: other microscopes,
stains, crops or magnifications give confident nonsense. ``predict`` therefore flags an image when either test
finds it unlike TRAIN:

* **the image itself**: eight statistics of the field at 240x320 (the mean and spread of each colour channel,
  the share of stained pixels, which tracks the magnification and the crop, and the sharpness, the log variance
  of the Laplacian) compared with TRAIN's by their Mahalanobis distance;
* **the model's reaction**: its energy score, ``-logsumexp(logits)`` (Liu et al., 2020, "Energy-based
  out-of-distribution detection"): high when no class fits.

Each threshold is TRAIN's 99.5th percentile, so about 1% of images like TRAIN's are flagged by one test or the
other (the report measures the rate on TEST). Neither test is proof: a flag says "do not trust this answer",
its absence does not say the answer is right.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .cellcrop import stain_map

#: Per test: the share of TRAIN images above its threshold.
TAIL = 0.005
FEATURES = ("mean R", "mean G", "mean B", "sd R", "sd G", "sd B", "stained share", "sharpness")


#: A pixel this dark on all three channels (sum of 0-255 values) is the black fill the dataset's augmented copies
#: carry where a rotation or shift moved the field, not part of the smear.
FILL_MAX = 30


def image_features(field: np.ndarray) -> np.ndarray:
    """The eight statistics of a uint8 RGB field (any size; TRAIN's are 240x320), over the smear only: the black
    fill of an augmented copy (TRAIN's and TEST's images are such copies, a new microscope image is not) is left
    out, and sharpness is measured away from the fill's edge, so a field without fill is not taken for another
    kind of image."""
    x = np.asarray(field, np.float32)
    smear = x.sum(2) > FILL_MAX
    if smear.mean() < 0.05:  # (nearly) all dark: measure everything rather than nothing
        smear = np.ones_like(smear)
    inner = ndimage.binary_erosion(smear, iterations=3)
    inner = inner if inner.any() else smear
    px = x[smear] / 255.0
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    sharp = np.log10(float(ndimage.laplace(gray)[inner].var()) + 1.0)
    return np.concatenate([px.mean(0), px.std(0), [float((stain_map(field) > 0)[smear].mean()), sharp]])


def energy(logits: np.ndarray) -> np.ndarray:
    """``-logsumexp`` of each row of raw scores: low for inputs the model knows, high for others."""
    z = np.asarray(logits, np.float64)
    m = z.max(1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(z - m).sum(1)))


def fit_reference(features: np.ndarray, logits: np.ndarray, tail: float = TAIL) -> dict:
    """Thresholds from in-distribution images (TRAIN): their statistics' mean and covariance, and the
    ``1 - tail`` quantiles of the Mahalanobis distance and of the energy."""
    f = np.asarray(features, np.float64)
    mean = f.mean(0)
    cov = np.cov(f, rowvar=False) + 1e-6 * np.eye(f.shape[1])
    inv = np.linalg.inv(cov)
    d = _distance(f, mean, inv)
    e = energy(logits)
    return {"features": list(FEATURES), "mean": mean.tolist(), "inv_cov": inv.tolist(),
            "distance_max": float(np.quantile(d, 1 - tail)), "energy_max": float(np.quantile(e, 1 - tail)),
            "tail": tail, "images": int(len(f))}


def _distance(f: np.ndarray, mean: np.ndarray, inv: np.ndarray) -> np.ndarray:
    d = f - mean
    return np.sqrt(np.einsum("ij,jk,ik->i", d, inv, d))


def flag(reference: dict, features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(flagged, reason) per image: which test found it unlike TRAIN, and by how much."""
    f = np.atleast_2d(np.asarray(features, np.float64))
    d = _distance(f, np.asarray(reference["mean"]), np.asarray(reference["inv_cov"]))
    e = energy(logits)
    reasons = []
    for di, ei in zip(d, e):
        why = []
        if di > reference["distance_max"]:
            why.append(f"image statistics unlike TRAIN's (distance {di:.1f} > {reference['distance_max']:.1f})")
        if ei > reference["energy_max"]:
            why.append(f"no class fits (energy {ei:.2f} > {reference['energy_max']:.2f})")
        reasons.append("; ".join(why))
    return np.array([bool(r) for r in reasons]), reasons
