"""Find the white blood cell in a smear image and crop around it (the ``view="cell"`` input).

Each image of the dataset is a whole 320x240 field: one stained white cell
(the one the label names) among pink red cells, platelets and background,
placed anywhere by the 2017 augmentation. The paper's network sees the whole
field at 240x320 or smaller; shrunk to 60x80, a cell's nucleus is a dozen
pixels wide and its shape, which is what tells the four classes apart, is gone.

The stain makes the cell easy to find without learning anything: Wright-Giemsa
turns nuclei purple, so blue stands well above green there, and nowhere else
(red cells are pink: red above blue; the background is grey; the augmentation's
black fill has no blue at all). We smooth that "purple excess" with a box about
the size of a nucleus and crop a square window around its maximum, at full
resolution. Small purple specks (platelets) lose to the larger nucleus after
smoothing. The crop is deterministic, has no parameters fitted to any split,
and is applied the same way to TRAIN, TEST and new images.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

#: Side of the square cut from the 240x320 field (pixels); a white cell is 60-100 px wide.
CROP = 128
#: Box-filter side used to smooth the stain map: about a nucleus.
WINDOW = 41
#: Purple excess below this (blue minus green, 0-255 scale) is not stain.
THRESHOLD = 40


def stain_map(image: np.ndarray) -> np.ndarray:
    """Per-pixel "purple excess" of an RGB uint8 image: max(blue - green - THRESHOLD, 0) where blue > 100."""
    a = np.asarray(image, dtype=np.int16)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"stain_map needs an RGB image of shape (H, W, 3), got {a.shape}")
    g, b = a[..., 1], a[..., 2]
    return (np.clip(b - g - THRESHOLD, 0, None) * (b > 100)).astype(np.float32)


def locate_cell(image: np.ndarray, window: int = WINDOW) -> tuple[int, int, float]:
    """(row, column, strength) of the centre of the most stained nucleus-sized region.

    ``strength`` is the mean purple excess in the window there; 0 means the
    image holds no stain at all (the crop then falls back to the centre).
    """

    s = ndimage.uniform_filter(stain_map(image), window, mode="constant")
    if s.max() <= 0:
        h, w = s.shape
        return h // 2, w // 2, 0.0
    cy, cx = np.unravel_index(int(np.argmax(s)), s.shape)
    return int(cy), int(cx), float(s[cy, cx])


#: How a window that runs past the field's edge is filled: ``edge`` repeats the border pixels (the first crops;
#: a cell near the border came out smeared with streaks), ``reflect`` mirrors the field (texture continues, no
#: streaks), ``black`` fills with zeros (as the dataset's own rotation fill does: no invented texture).
BORDERS = ("edge", "reflect", "black")


def crop_cell(image: np.ndarray, out_size: tuple[int, int] = (64, 64), crop: int = CROP,
              border: str = "edge") -> np.ndarray:
    """Crop a ``crop`` x ``crop`` window centred on the cell and resize it to ``out_size`` (uint8).

    ``image`` is the field at the dataset's native 240x320 (other sizes are
    handled too: the window scales with the image's height). A window that
    runs past the edge is filled as ``border`` says (:data:`BORDERS`).
    """
    if border not in BORDERS:
        raise ValueError(f"border={border!r} is not known; valid values: {', '.join(BORDERS)}")

    image = np.asarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    side = max(8, int(round(crop * h / 240)))
    win = max(3, int(round(WINDOW * h / 240)) | 1)
    cy, cx, _ = locate_cell(image, win)
    half = side // 2
    pad = ((half, half), (half, half), (0, 0))
    if border == "black":
        padded = np.pad(image, pad, mode="constant")
    else:  # "reflect": the field mirrored at its edge (numpy's "symmetric": the edge row itself is mirrored too)
        padded = np.pad(image, pad, mode="edge" if border == "edge" else "symmetric")
    patch = padded[cy:cy + side, cx:cx + side]
    oh, ow = int(out_size[0]), int(out_size[1])
    if patch.shape[:2] != (oh, ow):
        patch = np.asarray(Image.fromarray(patch).resize((ow, oh), Image.Resampling.BILINEAR, reducing_gap=2.0))
    return patch
