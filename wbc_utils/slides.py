"""Where each image comes from: its original slide, and which slides show the same white cell.

Every image under ``images/`` is an augmented, 2x-downscaled copy of one of the 367 original BCCD slides
(``Original_Images/BloodImage_NNNNN.jpg``, 640x480); TEST_SIMPLE files are the slides shrunk 2x without
augmentation. The file name ``_<k>_<n>`` does not say which slide: ``k`` is not a source cell. This module
recovers the slide of every image, and groups slides that photograph the same physical white cell, so that
intervals and validation splits can be drawn over independent cells.

Method (OpenCV only; no geometry is written by hand)
-----------------------------------------------------
* **Slides.** Each original is shrunk to 320x240 (``INTER_AREA``, the images' scale) and described by SIFT
  keypoints (``contrastThreshold`` 0.02 instead of the default 0.04: the smooth fields give about 100
  keypoints at 0.04 and some low-texture images too few to fit; at 0.02 about 250). SIFT is not
  mirror-invariant, so each slide is also described mirrored, with the mirrored keypoints mapped back into
  the slide's own coordinates: one affine fit then covers flipped copies too (the fit holds the reflection).
* **Images.** An image (any size, resized to 320x240) is described the same way and its descriptors are
  looked up in a FLANN index of the candidate slides' descriptors (both orientations). A match votes for
  its slide when it passes Lowe's ratio test (0.8) against the nearest descriptor *of another slide*
  (so a slide's mirrored copy of the same blob does not cancel the vote). The 3 slides with most votes are
  verified: descriptors are matched to that slide alone (BFMatcher, ratio test, each orientation), an
  affine transform is fitted (``cv2.estimateAffine2D``, RANSAC, 3 px), refined by ECC
  (``cv2.findTransformECCWithMask`` at 160x120 over the valid region), the slide is warped onto the image
  (``cv2.warpAffine``) and the grey levels are compared by normalised cross-correlation (NCC) at 160x120
  over the valid, non-fill region (at least 30% of the image). The best slide is kept when its NCC is
  at least :data:`ACCEPT_NCC` (0.9). Candidates are first the slides whose ``labels.csv`` category
  contains the image's class; when none verifies, all slides.
* **Slide pairs.** Every pair of originals is compared (same orientation: BFMatcher + ratio test, at least
  8 matches, affine fit with at least 6 RANSAC inliers and a near-rigid linear part), refined by ECC like an
  image; the overlap is the fraction of one field the other covers, and the NCC is computed over the overlap.
  A pair *overlaps* when the overlap is at least 10% and the NCC at least 0.8. Why 0.8: with the thresholds
  off, the fits that are chance (6-8 inliers, often a large "overlap") correlate at 0.70 or less; every
  overlap the reference lists correlates at 0.92-0.99 here, and the weakest overlap found (160~161, 12
  inliers) at 0.89. 0.8 sits in that gap (the reference used 0.9, which would drop 160~161 only).
  A pair shows the *same cell* when the white cell of one slide (found by the stain-based
  :func:`wbc_utils.cellcrop.locate_cell` on the slide shrunk to 240x320), mapped through the fitted
  transform, lands inside the other field on stain at least half as strong as that field's strongest (the
  smoothed stain map ``locate_cell`` maximises), in either direction. In every reference pair the cell
  lands either outside the other field (different cells) or on stain at 0.75-1.0 of the maximum (same cell):
  a plain distance between the two located centres would not do, since slides with two white cells
  (242~249) locate different ones. Same-cell clusters are the connected components of same-cell pairs
  (union-find, transitively, through slides no image uses too), named by their lowest slide number;
  overlap clusters likewise over all overlapping pairs.
* **Images, thresholds.** A wrong slide, even among the 8 best-voted candidates and after ECC, never
  correlated above 0.52 (400 images and 30 noise images checked); the true slide at 0.93 or more. Hence
  :data:`ACCEPT_NCC` 0.9.

Facts it established (``python -m wbc_utils slides``; checked against the dataset's reference files)
------------------------------------------------------------------------------------------------------
* All 12,515 images match a slide, each the slide ``slides_reference.csv`` gives (100% agreement), with NCC
  0.935-0.999 (median 0.998). TRAIN uses 277 slides, TEST 71, none in both; TEST_SIMPLE's 71 files are 69
  of TEST's slides.
* 42 pairs of originals overlap: the reference's 35, all found, and 7 it lacks (19~20, 40~41, 44~45,
  160~161, 225~264, 242~248, 276~277; NCC 0.89-0.99 on 16-38% of the field; two of them, 242~248 and
  276~277, follow from reference pairs sharing a slide). 31 show the same cell: the reference's 30 (27
  between slides that images use) and 44~45 (slide 44, unused, shows slide 45's eosinophil).
* TRAIN's 277 slides are 259 independent cells, TEST's 71 are 68, and 6 cells are in both splits
  (TEST~TRAIN: 204~277, 264~224, 257~230, 365~408, 377~400, 409~364; 202 TEST images): the reference's
  partition exactly. Slide 45's cluster is named 44 here (the lowest slide of its cluster, 44 included).

The shipped results are :data:`MAPPING_FILE` and :data:`PAIRS_FILE`; read them with :func:`load_mapping`
and :func:`load_pairs`. Rebuilding (about 4.5 minutes with 2 processes) gives byte-identical files.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import logging
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from .artifacts import atomic_path
from .cellcrop import WINDOW, locate_cell, stain_map
from .config import RESOURCES
from .errors import DataError
from .images import read_array

log = logging.getLogger(__name__)

#: Shipped per-image mapping (one row per file under images/).
MAPPING_FILE = RESOURCES / "slides.csv.gz"
#: Shipped table of overlapping original slides.
PAIRS_FILE = RESOURCES / "slide_pairs.csv"

MAPPING_COLUMNS = ("split", "class", "file", "size_bytes", "slide", "score", "cell", "overlap")
PAIR_COLUMNS = ("slide_a", "slide_b", "ncc", "overlap_frac", "inliers", "same_cell")
REFERENCE_FILES = ("slides_reference.csv", "overlapping_slides_reference.csv")

#: Size everything is matched at (width, height): the images' native size, the originals shrunk 2x.
WORK_SIZE = (320, 240)
#: Size the NCC (and the ECC refinement) is computed at (width, height).
NCC_SIZE = (160, 120)
#: SIFT contrast threshold (OpenCV's default is 0.04; 0.02 gives ~2.5x the keypoints on these smooth fields).
SIFT_CONTRAST = 0.02
#: Lowe's ratio test.
RATIO = 0.8
#: RANSAC reprojection threshold, pixels at 320x240.
RANSAC_PX = 3.0
#: Slides verified per pass (the ones with most votes).
CANDIDATES = 3
#: Fewest RANSAC inliers for an image-slide fit to be verified.
MIN_INLIERS = 4
#: Smallest part of the image the warped slide must cover for the NCC to count.
MIN_VALID = 0.3
#: An image is matched to a slide when the NCC reaches this.
ACCEPT_NCC = 0.9
#: Slide pairs: fewest ratio-test matches, fewest inliers, smallest overlap, smallest NCC on the overlap.
PAIR_MIN_MATCHES = 8
PAIR_MIN_INLIERS = 6
PAIR_MIN_OVERLAP = 0.10
PAIR_MIN_NCC = 0.80
#: Same cell: the mapped cell centre lands on stain at least this fraction of the other field's strongest.
SAME_CELL_STAIN = 0.5
#: Seed of OpenCV's RNG before each FLANN index is built (randomised k-d trees), so results are reproducible.
SEED = 0
#: Images per task sent to a worker process.
CHUNK = 48

SLIDE_RE = re.compile(r"^BloodImage_(\d+)\.jpe?g$", re.IGNORECASE)
CV_TYPES = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------- finding the files

def _bases(images_root: Path) -> list[Path]:
    images_root = Path(images_root).expanduser()
    return [images_root, images_root.parent, images_root.parent.parent]


def _has_slides(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(SLIDE_RE.match(p.name) for p in folder.iterdir())
    except OSError:
        return False


def find_originals(images_root: Path) -> Path | None:
    """The folder of original slides (``BloodImage_NNNNN.jpg``) for a dataset whose splits are in ``images_root``.

    ``images_root`` is what :func:`wbc_utils.data.find_images_root` returns. Looked for, in order, in it, its
    parent and its grandparent: ``Original_Images/`` (the source repository's layout), then the Kaggle
    archive's ``dataset-master/dataset-master/JPEGImages``, ``dataset-master/JPEGImages`` and ``JPEGImages``.
    None when there is none (the dataset as most people download it has no originals).
    """
    for base in _bases(images_root):
        for sub in ("Original_Images", "dataset-master/dataset-master/JPEGImages", "dataset-master/JPEGImages",
                    "JPEGImages"):
            if _has_slides(base / sub):
                return base / sub
    return None


def find_labels_csv(images_root: Path, originals_dir: Path | None = None) -> Path | None:
    """The slides' ``labels.csv`` (slide index -> cell type), looked for like :func:`find_originals`; or None."""
    cands = [originals_dir.parent / "labels.csv"] if originals_dir is not None else []
    for base in _bases(images_root):
        cands += [base / "labels.csv", base / "dataset-master/dataset-master/labels.csv",
                  base / "dataset-master/labels.csv"]
    return next((c for c in cands if c.is_file()), None)


def find_reference_dir(images_root: Path) -> Path | None:
    """The folder holding ``slides_reference.csv`` beside the dataset, if any (the shared copy has one)."""
    return next((b for b in _bases(images_root) if (b / REFERENCE_FILES[0]).is_file()), None)


def slide_files(originals_dir: Path) -> list[tuple[int, Path]]:
    out = {}
    for p in sorted(Path(originals_dir).iterdir()):
        m = SLIDE_RE.match(p.name)
        if m and p.is_file():
            out.setdefault(int(m.group(1)), p)
    if not out:
        raise DataError(f"no original slides (BloodImage_NNNNN.jpg) in {originals_dir}.")
    return sorted(out.items())


def class_slides(labels_csv: Path | None) -> dict[str, frozenset[int]]:
    """{class: slides whose labels.csv category names it} (multi-label slides count for each class named)."""
    if labels_csv is None:
        return {}

    try:
        f = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
        pairs = [(int(i), c) for i, c in zip(f["Image"], f["Category"]) if str(i).strip().isdigit()]
    except (OSError, KeyError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{labels_csv}: not a readable labels.csv (columns Image, Category): {e}") from e
    out: dict[str, set[int]] = {}
    for slide, cat in pairs:
        for c in {t.strip().upper() for t in cat.split(",") if t.strip()}:
            out.setdefault(c, set()).add(slide)
    return {c: frozenset(s) for c, s in out.items()}


# ----------------------------------------------------------------------------- image primitives

@contextlib.contextmanager
def _cv_threads(n: int = 1) -> Iterator[None]:
    """Run OpenCV with ``n`` threads inside the block (results must not depend on the machine's threads)."""

    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def read_image(path: str | os.PathLike, color: bool = False) -> np.ndarray | None:
    """An image file as grey, or BGR, through the package's guarded reader (:mod:`wbc_utils.images`: size checked
    from the header, bombs refused, EXIF orientation applied); None when it cannot be read. Never raises.

    An image over twice :data:`WORK_SIZE` is decoded reduced to no less than that; the originals (640x480) and the
    dataset's images (320x240) are decoded in full, pixel for pixel what OpenCV's ``imdecode`` gave when the
    shipped mapping was made (grey is the JPEG's own luma, as OpenCV reads it).
    """

    img = read_array(path, reduce_to=(2 * WORK_SIZE[0], 2 * WORK_SIZE[1]), mode="RGB" if color else "L")
    if isinstance(img, str) or img.shape[0] < 8 or img.shape[1] < 8:
        return None
    return np.ascontiguousarray(img[:, :, ::-1]) if color else img


def _to_work(img: np.ndarray) -> np.ndarray:
    """Resize to :data:`WORK_SIZE` (area averaging when shrinking, bilinear when enlarging)."""

    h, w = img.shape[:2]
    if (w, h) == WORK_SIZE:
        return img
    shrink = w > WORK_SIZE[0] or h > WORK_SIZE[1]
    return cv2.resize(img, WORK_SIZE, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


_SIFT = None


def _features(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SIFT keypoint positions (n, 2) float32 and descriptors (n, 128) float32 (both empty when none)."""

    global _SIFT
    if _SIFT is None:
        _SIFT = cv2.SIFT_create(contrastThreshold=SIFT_CONTRAST)
    kp, desc = _SIFT.detectAndCompute(gray, None)
    if desc is None or not kp:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    return np.array([k.pt for k in kp], np.float32), desc.astype(np.float32)


def _ratio_matches(qdesc: np.ndarray, tdesc: np.ndarray) -> list[tuple[int, int]]:
    """(query index, train index) of the matches that pass Lowe's ratio test (exact, BFMatcher)."""

    if len(qdesc) < 2 or len(tdesc) < 2:
        return []
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(qdesc, tdesc, k=2)
    return [(m[0].queryIdx, m[0].trainIdx) for m in knn if len(m) == 2 and m[0].distance < RATIO * m[1].distance]


def _half(m: np.ndarray) -> np.ndarray:
    """An affine map between 320x240 frames expressed between their 160x120 (area-averaged) versions."""
    m = np.asarray(m, np.float64).copy()
    m[:, 2] = (m[:, :2] @ np.array([0.5, 0.5]) + m[:, 2] - 0.5) / 2
    return m


def _double(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_half`."""
    m = np.asarray(m, np.float64).copy()
    m[:, 2] = 2 * m[:, 2] + 0.5 - m[:, :2] @ np.array([0.5, 0.5])
    return m


def _ncc(query: np.ndarray, ref: np.ndarray, m: np.ndarray) -> tuple[float, float, float]:
    """(NCC, valid fraction at 160x120, covered fraction at 320x240) of ``ref`` warped by ``m`` onto ``query``.

    Both are grey 320x240; ``m`` maps ref -> query coordinates. The valid region is where the warped ref has
    data (the augmentation's fill is excluded), eroded by 2 pixels at 160x120 to drop the fill's edge.
    """

    warped = cv2.warpAffine(ref, m, WORK_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    cover = cv2.warpAffine(np.full(ref.shape, 255, np.uint8), m, WORK_SIZE, flags=cv2.INTER_NEAREST)
    covered = float(np.count_nonzero(cover)) / cover.size
    mask = cv2.erode(cv2.resize(cover, NCC_SIZE, interpolation=cv2.INTER_AREA), np.ones((5, 5), np.uint8)) == 255
    valid = float(mask.mean())
    if mask.sum() < 50:
        return -1.0, valid, covered
    a = cv2.resize(query, NCC_SIZE, interpolation=cv2.INTER_AREA)[mask].astype(np.float64)
    b = cv2.resize(warped, NCC_SIZE, interpolation=cv2.INTER_AREA)[mask].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return (float((a * b).sum() / den) if den > 0 else -1.0), valid, covered


def _ecc(query: np.ndarray, ref: np.ndarray, m: np.ndarray) -> np.ndarray | None:
    """Refine ``m`` (ref -> query, 320x240) by ECC at 160x120 over the valid region; None if it fails."""

    mh = _half(m)
    q = cv2.resize(query, NCC_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    r = cv2.resize(ref, NCC_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    tmask = cv2.warpAffine(np.full(q.shape, 255, np.uint8), mh, NCC_SIZE, flags=cv2.INTER_NEAREST)
    tmask = cv2.erode(tmask, np.ones((5, 5), np.uint8))
    try:
        warp = cv2.invertAffineTransform(mh).astype(np.float32)  # ECC's warp maps template (query) -> input (ref)
        _, warp = cv2.findTransformECCWithMask(
            q, r, tmask, np.full(r.shape, 255, np.uint8), warp, cv2.MOTION_AFFINE,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-4), 1)
    except cv2.error:
        return None
    out = _double(cv2.invertAffineTransform(warp))
    return out if np.isfinite(out).all() else None


def _plausible(m: np.ndarray | None, lo: float, hi: float) -> bool:
    if m is None or not np.isfinite(m).all():
        return False
    sv = np.linalg.svd(np.asarray(m)[:, :2], compute_uv=False)
    return bool(lo <= sv.min() and sv.max() <= hi)


def _verify(query: np.ndarray, ref: np.ndarray, m: np.ndarray, min_valid: float,
            refine_from: float = 0.5) -> tuple[np.ndarray, float, float, float] | None:
    """(transform, NCC, valid fraction, covered fraction) after ECC refinement; None if too little overlaps."""
    ncc, valid, covered = _ncc(query, ref, m)
    if valid < min_valid:
        return None
    if ncc >= refine_from:
        m2 = _ecc(query, ref, m)
        if m2 is not None:
            ncc2, valid2, covered2 = _ncc(query, ref, m2)
            if valid2 >= min_valid and ncc2 > ncc:
                return m2, ncc2, valid2, covered2
    return m, ncc, valid, covered


# ----------------------------------------------------------------------------- the slides

@dataclass
class Slide:
    """One original slide at 320x240: grey levels, SIFT features (as is and mirrored), its white cell."""

    number: int
    gray: np.ndarray
    pts: tuple[np.ndarray, np.ndarray]        # (as is, mirrored), in the slide's own coordinates
    desc: tuple[np.ndarray, np.ndarray]       # uint8 (SIFT descriptors are integers 0-255)
    cell: tuple[int, int, float]              # locate_cell on the RGB slide at 240x320: (row, col, strength)


def _describe_slide(item: tuple[int, str]) -> Slide | str:
    """Worker: read and describe one original slide (an error string if it cannot be read)."""


    number, path = item
    bgr = read_image(path, color=True)
    if bgr is None:
        return f"cannot read original slide {path}"
    bgr = _to_work(bgr)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    p0, d0 = _features(gray)
    p1, d1 = _features(cv2.flip(gray, 1))
    p1[:, 0] = WORK_SIZE[0] - 1 - p1[:, 0]  # mirrored keypoints back into the slide's own frame
    cell = locate_cell(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return Slide(number, gray, (p0, p1), (d0.astype(np.uint8), d1.astype(np.uint8)), cell)


@dataclass
class SlideSet:
    """All original slides, with FLANN indices over their descriptors built on demand (per candidate set)."""

    slides: dict[int, Slide]
    _index: dict[Any, tuple[Any, np.ndarray]] = field(default_factory=dict, repr=False)

    def __getstate__(self):
        return {"slides": self.slides, "_index": {}}  # FLANN objects are rebuilt (deterministically) per process

    def index(self, allowed: frozenset[int] | None):
        """(FLANN matcher, owner slide of each indexed descriptor) over ``allowed`` slides (None: all)."""

        key = None if allowed is None else frozenset(allowed) & frozenset(self.slides)
        if key not in self._index:
            numbers = sorted(self.slides if key is None else key)
            desc = [self.slides[s].desc[o] for s in numbers for o in (0, 1)]
            owner = np.concatenate([np.full(len(self.slides[s].desc[o]), s) for s in numbers for o in (0, 1)]
                                   or [np.zeros(0, int)])
            matcher = None
            if len(owner) >= 3:
                cv2.setRNGSeed(SEED)  # FLANN's randomised k-d trees draw from OpenCV's RNG
                matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 64})
                matcher.add([np.concatenate(desc).astype(np.float32)])
                matcher.train()
            self._index[key] = (matcher, owner)
        return self._index[key]


_SLIDESETS: dict[tuple, SlideSet] = {}


def _fingerprint(files: list[tuple[int, Path]]) -> tuple:
    out = []
    for n, p in files:
        st = p.stat()
        out.append((n, str(p.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_slides(originals_dir: Path, jobs: int | None = None, progress: bool = True) -> SlideSet:
    """Read and describe every original slide (cached in the process for an unchanged folder)."""
    files = slide_files(originals_dir)
    key = _fingerprint(files)
    if key not in _SLIDESETS:
        results = _run(_describe_slide, [(n, str(p)) for n, p in files], jobs, progress,
                       f"describing {len(files)} original slides", chunk=8)
        bad = [r for r in results if isinstance(r, str)]
        if bad:
            raise DataError(f"{len(bad)} original slide(s) could not be read: {bad[0]}")
        _SLIDESETS.clear()  # keep one: a SlideSet is ~40 MB
        _SLIDESETS[key] = SlideSet({s.number: s for s in results})
    return _SLIDESETS[key]


# ----------------------------------------------------------------------------- worker pool

_STATE: dict[str, Any] = {}


def _init_worker(state: dict) -> None:

    cv2.setNumThreads(1)
    _STATE.clear()
    _STATE.update(state)


def _call_chunk(args: tuple[Callable, list]) -> list:
    fn, items = args
    return [fn(x) for x in items]


def default_jobs() -> int:
    """Worker processes used when none is asked for: 2 at most (the project's CPU machine has 2 cores)."""
    return max(1, min(2, os.cpu_count() or 1))


def _run(fn: Callable, items: list, jobs: int | None, progress: bool, desc: str,
         state: dict | None = None, chunk: int = CHUNK) -> list:
    """``[fn(x) for x in items]`` in ``jobs`` spawned processes (in order), with a tqdm bar.

    Workers are forked where the platform can (no ``__main__`` guard needed in a user's script; OpenCV is
    single-threaded around the fork), spawned elsewhere; they run OpenCV single-threaded, so results do not
    depend on the machine. ``state`` reaches each worker once (in ``_STATE``).
    """
    jobs = jobs or default_jobs()
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    bar = None
    if progress:

        bar = tqdm(total=len(items), desc=desc, unit="item", file=sys.stderr)
    out: list = []
    try:
        if jobs <= 1 or len(chunks) <= 1:
            saved = dict(_STATE)
            _STATE.clear()
            _STATE.update(state or {})
            try:
                with _cv_threads(1):
                    for c in chunks:
                        out.extend(_call_chunk((fn, c)))
                        if bar is not None:
                            bar.update(len(c))
            finally:
                _STATE.clear()
                _STATE.update(saved)
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with _cv_threads(1), ProcessPoolExecutor(min(jobs, len(chunks)), mp_context=ctx,
                                                     initializer=_init_worker, initargs=(state or {},)) as ex:
                for res in ex.map(_call_chunk, [(fn, c) for c in chunks]):
                    out.extend(res)
                    if bar is not None:
                        bar.update(len(res))
    finally:
        if bar is not None:
            bar.close()
    return out


# ----------------------------------------------------------------------------- images -> slides

def _candidates(qdesc: np.ndarray, slides: SlideSet, allowed: frozenset[int] | None,
                exclude: set[int]) -> list[int]:
    """Slides ranked by ratio-test votes of the query's descriptors in the FLANN index (ties: lower number)."""
    matcher, owner = slides.index(allowed)
    if matcher is None or len(qdesc) == 0:
        return []
    votes: dict[int, int] = {}
    for m in matcher.knnMatch(qdesc, k=3):
        if not m:
            continue
        first = int(owner[m[0].trainIdx])
        other = next((x for x in m[1:] if int(owner[x.trainIdx]) != first), None)
        if other is None or m[0].distance < RATIO * other.distance:
            votes[first] = votes.get(first, 0) + 1
    ranked = sorted((s for s, v in votes.items() if v >= 2 and s not in exclude), key=lambda s: (-votes[s], s))
    return ranked[:CANDIDATES]


def _fit(qpts: np.ndarray, qdesc: np.ndarray, slide: Slide) -> tuple[np.ndarray | None, int]:
    """Affine transform slide -> image from ratio-test matches with both orientations of the slide (RANSAC)."""

    src, dst = [], []
    for o in (0, 1):
        for qi, ti in _ratio_matches(qdesc, slide.desc[o].astype(np.float32)):
            src.append(slide.pts[o][ti])
            dst.append(qpts[qi])
    if len(src) < 3:
        return None, 0
    m, inliers = cv2.estimateAffine2D(np.array(src), np.array(dst), method=cv2.RANSAC,
                                      ransacReprojThreshold=RANSAC_PX, maxIters=2000, confidence=0.995)
    n = int(inliers.sum()) if inliers is not None else 0
    return (m if n >= MIN_INLIERS and _plausible(m, 0.5, 2.0) else None), n


def _match_gray(gray: np.ndarray, slides: SlideSet, allowed: frozenset[int] | None) -> tuple[int | None, float]:
    """(slide, NCC) for one grey 320x240 image; (None, nan) when no candidate verifies."""
    qpts, qdesc = _features(gray)
    if len(qdesc) < 3:
        return None, float("nan")
    best: tuple[int | None, float] = (None, -1.0)
    tried: set[int] = set()
    for restrict in ([allowed, None] if allowed is not None else [None]):
        for s in _candidates(qdesc, slides, restrict, tried):
            tried.add(s)
            m, _ = _fit(qpts, qdesc, slides.slides[s])
            if m is None:
                continue
            v = _verify(gray, slides.slides[s].gray, m, MIN_VALID)
            if v is not None and v[1] > best[1]:
                best = (s, v[1])
        if best[1] >= ACCEPT_NCC:
            return best
    return None, float("nan")


def _match_file(item: tuple[str, str | None]) -> tuple[int | None, float]:
    """Worker: match one file; an unreadable file gives (None, nan), never an exception."""
    path, cls = item
    try:
        gray = read_image(path)
        if gray is None:
            return None, float("nan")
        allowed = _STATE["classes"].get(str(cls).strip().upper()) if cls else None
        return _match_gray(_to_work(gray), _STATE["slides"], allowed)
    except Exception as e:  # noqa: BLE001  (one bad file must not stop 12,000 others)
        log.warning("could not match %s: %s", path, e)
        return None, float("nan")


def match_images(paths: Sequence[str], classes: Sequence[str | None], originals_dir: Path,
                 labels_csv: Path | None = None, jobs: int | None = None, progress: bool = True):
    """The original slide each image was made from.

    ``paths``: any image files (a user's renamed copies too; any size, resized to 320x240). ``classes``:
    each image's class (or None); with ``labels_csv``, candidates are first that class's slides, then all.
    Returns a DataFrame with one row per path, in order: ``slide`` (Int64, <NA> when no slide verifies or
    the file cannot be read) and ``score`` (the NCC of the verified match, rounded to 4 decimals; NaN
    without a match).
    """

    paths = [str(p) for p in paths]
    classes = list(classes)
    if len(classes) != len(paths):
        raise ValueError(f"match_images: {len(paths)} paths but {len(classes)} classes")
    slides = load_slides(Path(originals_dir), jobs, progress)
    state = {"slides": slides, "classes": class_slides(labels_csv)}
    res = _run(_match_file, list(zip(paths, classes)), jobs, progress, f"matching {len(paths)} images", state)
    return pd.DataFrame({"slide": pd.array([r[0] for r in res], dtype="Int64"),
                         "score": [round(r[1], 4) if r[0] is not None else float("nan") for r in res]})


# ----------------------------------------------------------------------------- slide pairs

def _compare_slide(a: int) -> list[dict]:
    """Worker: compare slide ``a`` with every higher-numbered slide; the pairs that overlap."""
    slides: SlideSet = _STATE["slides"]

    sa = slides.slides[a]
    out = []
    for b in sorted(s for s in slides.slides if s > a):
        sb = slides.slides[b]
        good = _ratio_matches(sa.desc[0].astype(np.float32), sb.desc[0].astype(np.float32))
        if len(good) < PAIR_MIN_MATCHES:
            continue
        src = np.array([sa.pts[0][i] for i, _ in good])
        dst = np.array([sb.pts[0][j] for _, j in good])
        m, inl = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX,
                                      maxIters=2000, confidence=0.995)
        n = int(inl.sum()) if inl is not None else 0
        if n < PAIR_MIN_INLIERS or not _plausible(m, 0.8, 1.25):
            continue
        v = _verify(sb.gray, sa.gray, m, min_valid=0.02)
        if v is None or v[3] < PAIR_MIN_OVERLAP or v[1] < PAIR_MIN_NCC:
            continue
        out.append({"slide_a": a, "slide_b": b, "ncc": v[1], "overlap_frac": v[3], "inliers": n,
                    "transform": v[0]})
    return out


def _smoothed_stain(number: int, originals_dir: Path) -> np.ndarray:
    """The smoothed stain map that :func:`wbc_utils.cellcrop.locate_cell` maximises, of a slide at 240x320."""


    bgr = _to_work(read_image(dict(slide_files(originals_dir))[number], color=True))
    return ndimage.uniform_filter(stain_map(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), WINDOW, mode="constant")


def _lands(m: np.ndarray, cell: tuple[int, int, float], stain: np.ndarray) -> bool:
    """Does a cell centre (row, col), mapped by ``m``, land on the other field's cell (strong stain)?"""
    x, y = np.asarray(m, np.float64) @ np.array([cell[1], cell[0], 1.0])
    col, row = round(float(x)), round(float(y))
    h, w = stain.shape
    if not (0 <= row < h and 0 <= col < w) or stain.max() <= 0:
        return False
    return bool(stain[row, col] >= SAME_CELL_STAIN * stain.max())


def find_slide_pairs(originals_dir: Path, jobs: int | None = None, progress: bool = True):
    """Pairs of original slides that photograph overlapping fields, and whether they show the same cell.

    Returns a DataFrame with columns ``slide_a < slide_b``, ``ncc`` (over the overlap), ``overlap_frac``
    (fraction of the field the other slide covers), ``inliers`` (RANSAC) and ``same_cell`` (bool), sorted.
    """

    originals_dir = Path(originals_dir)
    slides = load_slides(originals_dir, jobs, progress)
    numbers = sorted(slides.slides)
    order = numbers[0::2] + numbers[1::2][::-1]  # mix long and short rows of the triangle in each chunk
    found = _run(_compare_slide, order, jobs, progress, f"comparing {len(numbers)} slides pairwise",
                 {"slides": slides}, chunk=4)
    rows = sorted((p for ps in found for p in ps), key=lambda p: (p["slide_a"], p["slide_b"]))
    stains: dict[int, np.ndarray] = {}
    for p in rows:
        a, b = p["slide_a"], p["slide_b"]
        for s in (a, b):
            if s not in stains:
                stains[s] = _smoothed_stain(s, originals_dir)
        m = p.pop("transform")
        p["same_cell"] = (_lands(m, slides.slides[a].cell, stains[b])
                          or _lands(cv2.invertAffineTransform(m), slides.slides[b].cell, stains[a]))
    frame = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    return frame.astype({"slide_a": int, "slide_b": int, "ncc": float, "overlap_frac": float, "inliers": int,
                         "same_cell": bool})


def same_cell_clusters(slides: Iterable[int], pairs, only_same_cell: bool = True) -> dict[int, int]:
    """{slide: cluster} where a cluster is a connected component of same-cell pairs, named by its lowest slide.

    Components are formed through every pair in ``pairs`` (slides that no image uses included: 248~249 and
    242~249 put 248 in cluster 242). The result covers ``slides`` and every slide of those pairs.
    ``only_same_cell=False`` joins through all overlapping pairs instead (the overlap clusters).
    """
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s in slides:
        root(int(s))
    sel = pairs[pairs["same_cell"].astype(bool)] if only_same_cell else pairs
    for a, b in zip(sel["slide_a"], sel["slide_b"]):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is always the component's lowest slide
    return {s: root(s) for s in sorted(parent)}


# ----------------------------------------------------------------------------- the mapping

def build_mapping(manifest, jobs: int | None = None, progress: bool = True):
    """(mapping, pairs) for every image of a dataset's manifest (:func:`wbc_utils.data.build_manifest` with
    ``sources=False``: its ``frame`` and ``images_root``).

    ``mapping`` has the columns of :data:`MAPPING_COLUMNS`, sorted by split, class and file.
    """
    originals = find_originals(manifest.images_root)
    if originals is None:
        raise DataError(f"no original slides beside {manifest.images_root}: expected Original_Images/ (or the "
                        f"Kaggle archive's dataset-master/dataset-master/JPEGImages) in it, its parent or "
                        f"grandparent. The shipped mapping ({MAPPING_FILE.name}) does not need them.")
    labels = find_labels_csv(manifest.images_root, originals)
    f = manifest.frame
    pairs = find_slide_pairs(originals, jobs, progress)
    matched = match_images(list(f["path"]), list(f["class"]), originals, labels, jobs, progress)
    cells = same_cell_clusters(matched["slide"].dropna().astype(int), pairs)
    overlaps = same_cell_clusters(matched["slide"].dropna().astype(int), pairs, only_same_cell=False)
    slide = matched["slide"]
    mapping = pd.DataFrame({
        "split": f["split"].to_numpy(), "class": f["class"].to_numpy(),
        "file": [os.path.basename(p) for p in f["relpath"]], "size_bytes": f["size_bytes"].astype("int64").to_numpy(),
        "slide": slide.to_numpy(), "score": matched["score"].to_numpy(),
        "cell": pd.array([cells.get(int(s)) if pd.notna(s) else None for s in slide], dtype="Int64"),
        "overlap": pd.array([overlaps.get(int(s)) if pd.notna(s) else None for s in slide], dtype="Int64"),
    })
    return _tidy_mapping(mapping), pairs


def _tidy_mapping(mapping):
    m = mapping[list(MAPPING_COLUMNS)].copy()
    for c in ("slide", "cell", "overlap"):
        m[c] = m[c].astype("Int64")
    m["size_bytes"] = m["size_bytes"].astype("int64")
    m["score"] = m["score"].astype(float).round(4)
    return m.sort_values(["split", "class", "file"], kind="mergesort").reset_index(drop=True)


def mapping_bytes(mapping) -> bytes:
    """The mapping as gzip-compressed CSV, byte-identical for identical content (no name or time in the header)."""
    text = _tidy_mapping(mapping).to_csv(index=False, float_format="%.4f", lineterminator="\n")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    return buf.getvalue()


def pairs_bytes(pairs) -> bytes:
    p = pairs[list(PAIR_COLUMNS)].copy().sort_values(["slide_a", "slide_b"], kind="mergesort")
    return p.to_csv(index=False, float_format="%.4f", lineterminator="\n").encode()


def write_mapping(mapping, pairs, dest_dir: Path = MAPPING_FILE.parent) -> tuple[Path, Path]:
    """Write ``slides.csv.gz`` and ``slide_pairs.csv`` into ``dest_dir`` atomically and deterministically."""

    dest_dir = Path(dest_dir)
    out = (dest_dir / MAPPING_FILE.name, dest_dir / PAIRS_FILE.name)
    for path, data in zip(out, (mapping_bytes(mapping), pairs_bytes(pairs))):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return out


def load_mapping(path: Path = MAPPING_FILE):
    """The per-image mapping: columns ``split, class, file, size_bytes, slide, score, cell, overlap``.

    Key: (split, class, file). ``slide``, ``cell`` and ``overlap`` are Int64 (<NA> for an image that matched
    no slide). Raises DataError naming the file when it is missing or malformed.
    """

    path = Path(path)
    if not path.is_file():
        raise DataError(f"slide mapping {path} is missing: rebuild it with `python -m wbc_utils slides` "
                        f"(needs the original slides), or reinstall the package.")
    try:
        f = pd.read_csv(path, compression="gzip" if path.suffix == ".gz" else None,
                        dtype={"split": str, "class": str, "file": str}, keep_default_na=True)
    except Exception as e:  # gzip, zlib, parser and decoding errors all mean the same thing here
        raise DataError(f"slide mapping {path} cannot be read ({type(e).__name__}: {e}); rebuild it with "
                        f"`python -m wbc_utils slides --force`.") from e
    if tuple(f.columns) != MAPPING_COLUMNS:
        raise DataError(f"slide mapping {path} has columns {list(f.columns)}, expected {list(MAPPING_COLUMNS)}.")
    try:
        f = f.astype({"size_bytes": "int64", "slide": "Int64", "cell": "Int64", "overlap": "Int64",
                      "score": float})
    except (ValueError, TypeError) as e:
        raise DataError(f"slide mapping {path} holds a malformed value: {e}") from e
    if f[["split", "class", "file"]].isna().any().any() or f.duplicated(["split", "class", "file"]).any():
        raise DataError(f"slide mapping {path} has empty or repeated (split, class, file) keys.")
    return f


def load_pairs(path: Path = PAIRS_FILE):
    """The overlapping slide pairs: columns ``slide_a, slide_b, ncc, overlap_frac, inliers, same_cell``."""

    path = Path(path)
    if not path.is_file():
        raise DataError(f"slide pairs {path} are missing: rebuild them with `python -m wbc_utils slides`.")
    try:
        f = pd.read_csv(path)
        if tuple(f.columns) != PAIR_COLUMNS:
            raise ValueError(f"columns {list(f.columns)}, expected {list(PAIR_COLUMNS)}")
        if not f["same_cell"].isin([True, False]).all():
            raise ValueError("same_cell must be True or False")
        return f.astype({"slide_a": int, "slide_b": int, "ncc": float, "overlap_frac": float, "inliers": int,
                         "same_cell": bool})
    except Exception as e:
        raise DataError(f"slide pairs {path} are malformed: {e}") from e


# ----------------------------------------------------------------------------- checking

def _partition(labels: dict[int, int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for s, c in labels.items():
        groups.setdefault(c, set()).add(s)
    return {frozenset(g) for g in groups.values()}


def cluster_counts(mapping) -> dict[str, int]:
    """Slides and same-cell clusters per split, and the clusters TRAIN and TEST share."""
    m = mapping.dropna(subset=["slide"])
    out: dict[str, int] = {}
    for split in sorted(m["split"].unique()):
        s = m[m["split"] == split]
        out[f"{split}_slides"] = int(s["slide"].nunique())
        out[f"{split}_cells"] = int(s["cell"].nunique())
    tr = set(m.loc[m["split"] == "TRAIN", "cell"])
    te = set(m.loc[m["split"] == "TEST", "cell"])
    out["shared_cells"] = len(tr & te)
    out["shared_test_images"] = int((m["split"].eq("TEST") & m["cell"].isin(tr)).sum())
    return out


def compare_with_reference(mapping, pairs, reference_dir: Path) -> dict:
    """Agreement of ``mapping`` and ``pairs`` with ``slides_reference.csv`` / ``overlapping_slides_reference.csv``.

    Returns images compared and agreeing, the disagreements (path, reference slide, slide, scores), images
    missing on either side, pair precision and recall (all pairs and same-cell pairs), whether the same-cell
    and overlap partitions of the used slides are equal, and the cluster counts on both sides.
    """

    reference_dir = Path(reference_dir)
    ref = pd.read_csv(reference_dir / REFERENCE_FILES[0])
    ref["file"] = ref["path"].str.rsplit("/", n=1).str[-1]
    ours = mapping.rename(columns={"slide": "slide_ours", "score": "score_ours"})
    j = ref.merge(ours, on=["split", "class", "file"], how="outer", indicator=True)
    both = j[j["_merge"] == "both"]
    agree = both["slide"].astype("Int64").eq(both["slide_ours"]).fillna(False).astype(bool)
    dis = both[~agree]
    out: dict[str, Any] = {
        "images_compared": len(both), "images_agreeing": int(agree.sum()),
        "agreement": float(agree.mean()) if len(both) else float("nan"),
        "disagreements": [
            {"path": r.path, "reference_slide": int(r.slide),
             "slide": None if pd.isna(r.slide_ours) else int(r.slide_ours),
             "reference_score": float(r.score_ncc), "score": float(r.score_ours)} for r in dis.itertuples()],
        "missing_here": int((j["_merge"] == "left_only").sum()),
        "not_in_reference": int((j["_merge"] == "right_only").sum()),
    }
    used = sorted(set(both["slide"].astype(int)) | set(both["slide_ours"].dropna().astype(int)))
    rp_path = reference_dir / REFERENCE_FILES[1]
    if rp_path.is_file():
        rp = pd.read_csv(rp_path)
        for name, sel_ref, sel_ours in (("pairs", rp, pairs), ("same_cell_pairs", rp[rp["same_cell"]],
                                                                pairs[pairs["same_cell"]])):
            r = {tuple(sorted(p)) for p in zip(sel_ref["slide_a"], sel_ref["slide_b"])}
            o = {tuple(sorted(p)) for p in zip(sel_ours["slide_a"], sel_ours["slide_b"])}
            out[name] = {"reference": len(r), "found": len(o), "common": len(r & o),
                         "precision": len(r & o) / len(o) if o else float("nan"),
                         "recall": len(r & o) / len(r) if r else float("nan"),
                         "missed": sorted(r - o), "extra": sorted(o - r)}
    ref_cell = dict(zip(ref["slide"].astype(int), ref["same_cell_cluster"].astype(int)))
    ref_over = dict(zip(ref["slide"].astype(int), ref["overlap_cluster"].astype(int)))
    m = mapping.dropna(subset=["slide"])
    our_cell = dict(zip(m["slide"].astype(int), m["cell"].astype(int)))
    our_over = dict(zip(m["slide"].astype(int), m["overlap"].astype(int)))
    used = [s for s in used if s in ref_cell and s in our_cell]
    out["same_cell_partition_equal"] = _partition({s: ref_cell[s] for s in used}) == \
        _partition({s: our_cell[s] for s in used})
    out["overlap_partition_equal"] = _partition({s: ref_over[s] for s in used}) == \
        _partition({s: our_over[s] for s in used})
    out["cluster_names_differing"] = sorted({(s, ref_cell[s], our_cell[s]) for s in used
                                             if ref_cell[s] != our_cell[s]})
    refm = ref.rename(columns={"same_cell_cluster": "cell"})
    out["counts"] = cluster_counts(mapping)
    out["reference_counts"] = cluster_counts(refm)
    return out


def format_comparison(c: dict) -> str:
    """A few lines for the console."""
    lines = [(f"images agreeing with the reference: {c['images_agreeing']:,} of {c['images_compared']:,} "
              f"({100 * c['agreement']:.3f}%)")]
    for d in c["disagreements"][:20]:
        lines.append(f"  {d['path']}: reference slide {d['reference_slide']}, here {d['slide']} "
                     f"(score {d['score']:.4f}, reference {d['reference_score']:.4f})")
    for name in ("pairs", "same_cell_pairs"):
        if name in c:
            p = c[name]
            lines.append(f"{name.replace('_', ' ')}: {p['found']} found, {p['reference']} in the reference, "
                         f"{p['common']} in both (precision {p['precision']:.3f}, recall {p['recall']:.3f})"
                         + (f"; extra {p['extra']}" if p["extra"] else "")
                         + (f"; missed {p['missed']}" if p["missed"] else ""))
    lines.append(f"same-cell partition of the used slides equal to the reference's: "
                 f"{c['same_cell_partition_equal']}; overlap partition equal: {c['overlap_partition_equal']}")
    if c["cluster_names_differing"]:
        lines.append(f"clusters named differently (slide, reference, here): {c['cluster_names_differing']}")
    lines.append(f"reference counts: {c['reference_counts']}")
    return "\n".join(lines)
