"""Training-time augmentation and test-time augmentation (TTA), on uint8 batches in NumPy.

Only changes that keep the class are used. A blood cell has no "up": its
eight flips and quarter-turns (the dihedral group D4) are all valid views of
it, and so are small shifts. Staining varies from slide to slide, so a mild
jitter of each colour channel's gain and offset stands for another slide.

``geometric+hed`` jitters the stain where it lives instead: each image is
unmixed into haematoxylin, eosin and DAB optical densities
(``skimage.color.rgb2hed``, Ruifrok-Johnston colour deconvolution), each
channel scaled by 1 +- HED_SCALE and shifted by +- HED_SHIFT (the family of
Tellez et al. 2019's HED augmentation), and mixed back: a stronger or paler
haematoxylin, a pinker or greyer eosin, as another lab's staining gives.
scikit-image owns the stain matrix and its inverse (a well-kept, tested
implementation rather than constants copied here).

Every random draw comes from a generator seeded by (seed, epoch, batch), so a
run is reproducible and a resumed run sees the batches it would have seen.
"""
from __future__ import annotations

import numpy as np

from .params import AUGMENTS, check_choice

#: Largest shift, as a share of the image side.
SHIFT = 0.08
#: Colour jitter: per-channel gain in 1 +- GAIN, offset in +- OFFSET (0-255 scale).
GAIN, OFFSET = 0.08, 12.0
#: HED stain jitter: per-image, per-stain scale in 1 +- HED_SCALE and shift in +- HED_SHIFT (rgb2hed's units).
#: Tellez et al. draw both from +- 0.05; on these bright smears a shift of 0.05 turns the grey background dark
#: (a mean change of 15-70 of 255 per image, measured), so the shift is 0.01: a mean change about the size of
#: the RGB jitter's (GAIN, OFFSET).
HED_SCALE, HED_SHIFT = 0.05, 0.01


#: skimage's density scale: a density of 1 is a transmission of 1e-6.
_LOG_ADJUST = float(np.log(1e-6))


def to_hed(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin and DAB densities of 0-255 RGB values (any shape ending in 3), in ``rgb2hed``'s units
    (skimage's stain matrix ``hed_from_rgb``) but without its clamp of negative densities to 0."""
    from skimage.color import hed_from_rgb  # imported here: only the stain jitter and the flags' statistics need it

    od = np.log(np.maximum(np.asarray(rgb, np.float32) / 255.0, 1e-6)) / _LOG_ADJUST
    return od @ hed_from_rgb.astype(np.float32)


def hed_jitter(images: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale and shift each image's haematoxylin, eosin and DAB densities: ``alpha``, ``beta`` of shape (N, 3).

    uint8 (N, H, W, 3) in and out; ``alpha`` = 1 and ``beta`` = 0 give the images back (up to rounding): the
    densities are :func:`to_hed`'s, mixed back with skimage's inverse matrix ``rgb_from_hed``."""
    from skimage.color import rgb_from_hed

    images = np.asarray(images)
    if len(images) == 0:
        return images
    hed = to_hed(images)
    hed = hed * np.asarray(alpha, np.float32)[:, None, None, :] + np.asarray(beta, np.float32)[:, None, None, :]
    rgb = np.exp((hed @ rgb_from_hed.astype(np.float32)) * _LOG_ADJUST)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0-7) of the 8 flips/quarter-turns of a (N, H, W, C) batch (square images for odd quarter-turns)."""
    out = np.rot90(images, k % 4, axes=(1, 2))
    return out[:, :, ::-1] if k >= 4 else out


def n_views(shape) -> int:
    """How many dihedral views apply: 8 for square images, 4 (no quarter-turns) otherwise."""
    return 8 if shape[1] == shape[2] else 4


def view_index(shape, j: int) -> int:
    """The j-th valid dihedral transform for images of this shape (square: 0-7; else 0, 2, 4, 6)."""
    return j if n_views(shape) == 8 else (0, 2, 4, 6)[j]


def valid_views(shape) -> tuple[int, ...]:
    """The dihedral transforms that keep this image shape: all 8 for square images, else 0, 2, 4, 6."""
    return tuple(view_index(shape, j) for j in range(n_views(shape)))


def augment_batch(images: np.ndarray, rng: np.random.Generator, mode: str) -> np.ndarray:
    """Augment a uint8 batch; returns a new uint8 array of the same shape."""
    check_choice("augment", mode, AUGMENTS)
    images = np.asarray(images)
    if mode == "none" or len(images) == 0:
        return images
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    ks = rng.integers(0, n_views(images.shape), n)
    dy = rng.integers(-int(SHIFT * h), int(SHIFT * h) + 1, n)
    dx = rng.integers(-int(SHIFT * w), int(SHIFT * w) + 1, n)
    py, px = int(SHIFT * h), int(SHIFT * w)
    padded = np.pad(images, ((0, 0), (py, py), (px, px), (0, 0)), mode="edge")
    for i in range(n):
        shifted = padded[i, py + dy[i]:py + dy[i] + h, px + dx[i]:px + dx[i] + w]
        out[i] = dihedral(shifted[None], view_index(images.shape, int(ks[i])))[0]
    if mode == "geometric+color":
        gain = 1.0 + rng.uniform(-GAIN, GAIN, (n, 1, 1, 3))
        offset = rng.uniform(-OFFSET, OFFSET, (n, 1, 1, 3))
        out = np.clip(out.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    elif mode == "geometric+hed":
        out = hed_jitter(out, 1.0 + rng.uniform(-HED_SCALE, HED_SCALE, (n, 3)),
                         rng.uniform(-HED_SHIFT, HED_SHIFT, (n, 3)))
    return out
