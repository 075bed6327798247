"""The dataset: finding it, listing it (the manifest), decoding and caching it.

Layout accepted under a dataset root (any one of)::

    <root>/images/{TRAIN,TEST[,TEST_SIMPLE]}/<CLASS>/_<k>_<n>.jpeg     (source repository, shared copy)
    <root>/dataset2-master/dataset2-master/images/{TRAIN,TEST,...}     (Kaggle archive)
    <root>/{TRAIN,TEST[,TEST_SIMPLE]}                                   (the splits directly)

Rules, chosen for what a careful user expects:

* Class folders match **case-insensitively** (``Monocyte`` is MONOCYTE); a
  split missing one of the four classes, or holding none of its images, is an
  error.  Other folders (``BASOPHIL``, a misspelling such as ``MONOCYT``) are
  skipped with a warning and listed in the data summary.
* Non-image files (``.DS_Store``, ``Thumbs.db``, ``*.txt``, hidden files) are
  skipped and counted.  Zero-byte, truncated or corrupt images, and images the
  guarded reader refuses (:mod:`wbc_utils.images`: a decompression bomb, one too
  large to decode), are skipped with a warning when they are decoded, and listed
  with the reason; a later manifest of the same files lists them again from the
  decoded-image cache's records, and a study finds the ones the header gives
  away before its first run (:func:`check_files`).
* PNG and grayscale images are accepted and converted to RGB (every mode as
  :mod:`wbc_utils.images` converts it); images of another size are resized like
  every other image.
* Every image is given its **source**: the original slide it was made from,
  the *same-cell cluster* of slides that show the same physical white cell
  (``cell``), and whether that cell is also in the other split (``shared``),
  from the mapping shipped with the package (:mod:`wbc_utils.slides`), or
  from a ``slides.csv[.gz]`` kept at the dataset's root for a copy of its own. The
  ``_<k>_<n>`` in a file name is **not** a source cell (each ``(class, k)``
  group mixes 12-31 slides); ``k`` is kept only to show that. A file the
  shipped mapping does not know (renamed, extra, or changed) is matched to its
  slide on the fly when the dataset's ``Original_Images/`` is present; when it
  is not, it becomes a cell of its own (image-level intervals for it), with one
  warning naming how many files that is.
* The same file reached twice (a symlink) is listed once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import CLASSES, NATIVE_SIZE, SPLITS, slides
from .artifacts import atomic_path, read_json, write_csv, write_json
from .cellcrop import crop_cell
from .config import cache_dir as default_cache_dir
from .config import data_dir as default_data_dir
from .config import data_dir_source
from .errors import DataError, ParameterError
from .images import check_image, read_resized
from .params import cell_window, check_image_size, check_view, crop_border

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpeg", ".jpg", ".png"}
IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
NAME_RE = re.compile(r"^_(\d+)_(\d+)$")
def find_images_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder that holds the split folders, or raise a DataError."""
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    how = data_dir_source(data_dir)
    if not root.exists():
        raise DataError(
            f"dataset folder {root} (from {how}) does not exist. Point --data-dir or WBC_DATA_DIR "
            f"at the 'Blood Cell Images' dataset, or fetch it with `python -m wbc_utils download`.")
    if not root.is_dir():
        raise DataError(f"dataset path {root} (from {how}) is not a folder.")
    layouts = ("images", "dataset2-master/dataset2-master/images", "dataset2-master/images", ".")
    # the layouts at the root, then one folder down (a GitHub zip unpacks into <repo>-master/)
    tops = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    candidates = [(top / lay) for top in tops for lay in layouts]
    for cand in candidates:
        if cand.is_dir() and _split_dir(cand, "TRAIN") is not None:
            return cand
    if not any(root.iterdir()):
        raise DataError(f"dataset folder {root} (from {how}) is empty. Fetch the dataset with "
                        f"`python -m wbc_utils download --data-dir {root}`.")
    raise DataError(
        f"no TRAIN split found under {root}. Expected one of: {root}/images/TRAIN, "
        f"{root}/dataset2-master/dataset2-master/images/TRAIN, or {root}/TRAIN.")


def _split_dir(images_root: Path, split: str) -> Path | None:
    for child in images_root.iterdir() if images_root.is_dir() else []:
        if child.is_dir() and child.name.upper() == split:
            return child
    return None


@dataclasses.dataclass
class Skipped:
    path: str
    reason: str


@dataclasses.dataclass
class Manifest:
    """One row per usable image file: path, class, label, split, and its source (slide, cell, shared)."""

    images_root: Path
    frame: object  # pandas.DataFrame
    skipped: list[Skipped]
    #: how each file's source was found: {"shipped": n, "matched": n, "none": n}
    sources: dict = dataclasses.field(default_factory=dict)

    def split(self, name: str):
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    def summary(self):
        """Counts of files and source cells per split and class (a DataFrame)."""

        f = self.frame
        files = f.pivot_table(index="split", columns="class", values="path", aggfunc="count", fill_value=0)
        slides = f.groupby(["split", "class"])["slide"].nunique().unstack(fill_value=0)
        cells = f.groupby(["split", "class"])["cell"].nunique().unstack(fill_value=0)
        out = pd.concat({"files": files, "slides": slides, "cells": cells}, axis=1)
        return out.reindex([s for s in SPLITS if s in files.index])

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for row in self.frame[["relpath", "size_bytes", "mtime_ns"]].itertuples(index=False):
            h.update(f"{row[0]}|{row[1]}|{row[2]}\n".encode())
        return h.hexdigest()[:16]


def build_manifest(data_dir: str | os.PathLike | None = None, splits: Sequence[str] = SPLITS,
                   require: Sequence[str] = ("TRAIN", "TEST"), sources: bool = True) -> Manifest:
    """List the dataset. Raises DataError for a missing split or class.

    ``sources=False`` lists the files only, without their slides and cells (what rebuilding the slide
    mapping itself starts from).
    """

    images_root = find_images_root(data_dir)
    rows, skipped, seen = [], [], {}
    for split in splits:
        sdir = _split_dir(images_root, split)
        if sdir is None:
            if split in require:
                raise DataError(f"split {split} is missing: no folder {images_root}/{split}. "
                                f"The dataset needs {', '.join(require)}; re-download or fix the folder.")
            continue
        class_dirs = {}
        for child in sorted(sdir.iterdir()):
            if not child.is_dir():
                if not child.name.startswith(".") and child.name.lower() not in IGNORED_NAMES:
                    skipped.append(Skipped(str(child), "not a class folder"))
                continue
            if child.name.upper() in CLASSES:
                if child.name.upper() in class_dirs:
                    raise DataError(f"{sdir} holds two folders for class {child.name.upper()}: "
                                    f"{class_dirs[child.name.upper()].name} and {child.name}. Merge them.")
                class_dirs[child.name.upper()] = child
            else:
                log.warning("skipping unknown class folder %s (known: %s)", child, ", ".join(CLASSES))
                skipped.append(Skipped(str(child), "unknown class folder"))
        missing = [c for c in CLASSES if c not in class_dirs]
        if missing:
            raise DataError(f"split {split} at {sdir} has no folder for class(es) {', '.join(missing)}. "
                            f"Expected {', '.join(CLASSES)} (case-insensitive); check for a misspelled folder.")
        for label, cls in enumerate(CLASSES):
            n_before = len(rows)
            cdir = class_dirs[cls]
            rel_dir = str(cdir.relative_to(images_root))
            with os.scandir(cdir) as it:  # scandir: one system call per folder, stat cached per entry
                entries = sorted(it, key=lambda e: e.name)
            for e in entries:
                name = e.name
                stem, suffix = os.path.splitext(name)
                if e.is_dir():
                    skipped.append(Skipped(e.path, "nested folder"))
                    continue
                if name.lower() in IGNORED_NAMES or name.startswith("."):
                    skipped.append(Skipped(e.path, "system file"))
                    continue
                if suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append(Skipped(e.path, f"not an image ({suffix or 'no extension'})"))
                    continue
                st = e.stat()  # follows a symlink to its target
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    skipped.append(Skipped(e.path, f"duplicate of {seen[key]} (symlink)"))
                    continue
                seen[key] = e.path
                m = NAME_RE.match(stem)
                rows.append(dict(path=e.path, relpath=f"{rel_dir}/{name}", split=split, **{"class": cls},
                                 label=label, file=name, k=int(m.group(1)) if m else None,
                                 size_bytes=st.st_size, mtime_ns=st.st_mtime_ns))
            if len(rows) == n_before:
                raise DataError(f"class folder {class_dirs[cls]} holds no images (.jpeg, .jpg, .png). "
                                f"Re-download the dataset or remove the empty split.")
    frame = pd.DataFrame(rows)
    frame["k"] = frame["k"].astype("Int64")
    for s in skipped:
        log.info("skipped %s: %s", s.path, s.reason)
    if not sources:
        return _with_recorded_failures(Manifest(images_root=images_root, frame=frame, skipped=skipped))
    frame, found = attach_sources(frame, images_root)
    return _with_recorded_failures(Manifest(images_root=images_root, frame=frame, skipped=skipped, sources=found))


def _with_recorded_failures(manifest: Manifest) -> Manifest:
    """Add to ``manifest.skipped`` the files that an earlier decoding of this very dataset (same fingerprint, any
    size or view, any process: a study's kernels) could not read, with their reasons, from the decoded-image
    cache's records: the report and the data notebook list them without decoding anything."""
    folder = default_cache_dir() / manifest.fingerprint()
    if not folder.is_dir():
        return manifest
    for meta_path in sorted(folder.glob("*.json")):
        try:
            meta = read_json(meta_path)
            paths = manifest.split(meta["split"])["path"]
            failed = [(paths.iloc[int(i)], str(why)) for i, why in meta.get("errors", {}).items()]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue  # a record being written, or of another shape: the decoding records it again
        for path, why in failed:
            if not any(s.path == path for s in manifest.skipped):
                manifest.skipped.append(Skipped(path, why))
    return manifest


def check_files(manifest: Manifest) -> list[Skipped]:
    """Every listed image the guarded reader refuses from its header alone (empty, not an image, a decompression
    bomb, too large to decode), without decoding a pixel: added to ``manifest.skipped`` and returned. What a study
    checks once before its first run (5 s for the dataset's 12,515 files on a busy 2-core machine); a truncated file
    is found only when it is decoded, and skipped then."""
    found = []
    for path in manifest.frame["path"]:
        why = check_image(path)
        if why is not None:
            found.append(Skipped(path, why))
            if not any(s.path == path for s in manifest.skipped):
                manifest.skipped.append(found[-1])
    return found


_WARNED: set = set()


def attach_sources(frame, images_root: Path):
    """Add ``slide``, ``match_score``, ``cell`` (same-cell cluster), ``shared`` and ``source`` to a manifest frame.

    ``source`` says where each file's slide came from: ``shipped`` (the package's mapping, keyed by split,
    class, file name and size), ``matched`` (matched now against ``Original_Images/``, cached per file), or
    ``none`` (no mapping and no originals to match against: the file is a cell of its own).
    """


    mapping = slides.load_mapping()
    local = dataset_mapping(images_root)
    if local is not None:  # a mapping written for this copy of the dataset takes precedence
        mapping = pd.concat([local, mapping], ignore_index=True).drop_duplicates(["split", "class", "file"])
    key = ["split", "class", "file", "size_bytes"]
    f = frame.merge(mapping[key + ["slide", "score", "cell"]], on=key, how="left", validate="many_to_one")
    f["slide"] = f["slide"].astype("Int64")
    f["source"] = np.where(f["slide"].notna(), "shipped", "none")
    missing = f["slide"].isna().to_numpy()
    if missing.any():
        originals = slides.find_originals(images_root)
        if originals is not None:
            found = _match_cached(f.loc[missing], originals)
            pairs = slides.load_pairs()
            clusters = slides.same_cell_clusters(set(pairs["slide_a"]) | set(pairs["slide_b"]), pairs)
            f.loc[missing, "slide"] = found["slide"].to_numpy()
            f.loc[missing, "score"] = found["score"].to_numpy()
            got = missing & f["slide"].notna().to_numpy()
            f.loc[got, "cell"] = [clusters.get(int(s), int(s)) for s in f.loc[got, "slide"]]
            f.loc[got, "source"] = "matched"
        n_none = int((f["source"] == "none").sum())
        if n_none:
            why = ("and no original slide matched them" if originals is not None else
                   f"and no Original_Images/ folder was found near {images_root} to match them")
            msg = (f"{n_none} file(s) are not in the shipped slide mapping {why}: each is counted as a source "
                   f"cell of its own, so intervals over them are image-level (too narrow if they are copies of "
                   f"one cell). The report says so.")
            if msg not in _WARNED:
                _WARNED.add(msg)
                log.warning(msg)
    cell = f["cell"].astype("Int64").astype("string")
    f["cell"] = cell.fillna("?" + f["relpath"].astype("string")).astype(str)
    f = f.rename(columns={"score": "match_score"})
    splits_of = f.assign(side=np.where(f["split"] == "TRAIN", "TRAIN", "TEST")).groupby("cell")["side"].nunique()
    f["shared"] = f["cell"].map(splits_of).fillna(1).to_numpy() > 1
    sources = {k: int(v) for k, v in f["source"].value_counts().items()}
    return f.reset_index(drop=True), {k: sources.get(k, 0) for k in ("shipped", "matched", "none")}


#: A slide mapping written for one copy of the dataset (``python -m wbc_utils slides --out <dataset root>``),
#: read from the dataset's root (or the folder above its splits) before the package's own.
DATASET_MAPPING_NAMES = ("slides.csv.gz", "slides.csv")


def dataset_mapping(images_root: Path):
    """The slide mapping kept beside a copy of the dataset, or None."""

    for base in (images_root, images_root.parent, images_root.parent.parent):
        for name in DATASET_MAPPING_NAMES:
            if (base / name).is_file():
                return slides.load_mapping(base / name)
    return None


def _match_cached(rows, originals: Path):
    """Match files to slides, remembering results per (path, size, mtime) in the cache folder."""


    cache = default_cache_dir() / "slides_matched.csv"
    cols = ["path", "size_bytes", "mtime_ns", "slide", "score"]
    known = pd.read_csv(cache, dtype={"slide": "Int64"}) if cache.exists() else pd.DataFrame(columns=cols)
    rows = rows[["path", "class", "size_bytes", "mtime_ns"]].reset_index(drop=True)
    merged = rows.merge(known[cols], on=["path", "size_bytes", "mtime_ns"], how="left")
    merged["slide"] = merged["slide"].astype("Int64")
    merged["score"] = pd.to_numeric(merged["score"], errors="coerce").astype(float)
    key = lambda f: f["path"].astype(str) + "|" + f["size_bytes"].astype(str) + "|" + f["mtime_ns"].astype(str)  # noqa: E731
    todo = ~key(merged).isin(set(key(known)))  # a file matched before, even to nothing, is not matched again
    if todo.any():
        log.warning("matching %d file(s) that the shipped mapping does not know against %s", int(todo.sum()),
                    originals)
        new = slides.match_images(merged.loc[todo, "path"].tolist(), merged.loc[todo, "class"].tolist(), originals)
        at = merged.index[todo.to_numpy()]
        merged.loc[at, "slide"] = pd.Series(pd.array(new["slide"], dtype="Int64"), index=at)
        merged.loc[at, "score"] = pd.Series(new["score"].to_numpy(float), index=at)

        keep = known[~known["path"].isin(merged["path"])]
        write_csv(cache, pd.concat([keep, merged[cols]], ignore_index=True))
    return merged


# ----------------------------------------------------------------------------- decoding

def decode_image(path: str, size: tuple[int, int], view: str = "full") -> np.ndarray | str:
    """Decode one image to uint8 (H, W, 3); return the reason (one line) if it cannot be read.

    Every file goes through the package's guarded reader (:func:`wbc_utils.images.read_resized`): its size is
    checked from the header first, a decompression bomb or an image too large to decode is refused with the
    reason, a large JPEG is decoded reduced, the EXIF orientation is applied and every colour mode is converted
    one way. ``view="full"`` resizes the whole field to ``size``; ``view="cell"`` resizes
    it to the native 240x320 first, then crops the white cell out of it and
    resizes the crop to ``size`` (see :mod:`wbc_utils.cellcrop`).
    """

    if view != "full":

        field = decode_image(path, NATIVE_SIZE)
        return field if isinstance(field, str) else crop_cell(field, size, cell_window(view), crop_border(view))
    return read_resized(path, size)


def _decode_chunk(args):
    paths, size, view = args
    out = np.zeros((len(paths), size[0], size[1], 3), np.uint8)
    errors = {}
    for i, p in enumerate(paths):
        r = decode_image(p, size, view)
        if isinstance(r, str):
            errors[i] = r
        else:
            out[i] = r
    return out, errors


def decode_images(paths: Sequence[str], size: tuple[int, int], workers: int | None = None,
                  progress: bool = False, view: str = "full") -> tuple[np.ndarray, dict[int, str]]:
    """Decode ``paths`` to one uint8 array; returns it and {index: error} for unreadable files."""
    check_view(view)
    workers = workers or min(2, os.cpu_count() or 1)
    chunk = 256
    jobs = [(list(paths[i:i + chunk]), size, view) for i in range(0, len(paths), chunk)]
    out = np.zeros((len(paths), size[0], size[1], 3), np.uint8)
    errors: dict[int, str] = {}
    it: Iterable
    if workers > 1 and len(jobs) > 1:
        ex = ProcessPoolExecutor(workers)
        it = ex.map(_decode_chunk, jobs)
    else:
        ex = None
        it = map(_decode_chunk, jobs)
    if progress:
        what = f"{size[0]}x{size[1]}" + (f" (cell crops, {cell_window(view)} px, {crop_border(view)} border)"
                                         if view != "full" else "")
        it = tqdm(it, total=len(jobs), desc=f"decoding {len(paths)} images at {what}", unit="chunk")
    try:
        for j, (arr, errs) in enumerate(it):
            out[j * chunk:j * chunk + len(arr)] = arr
            errors.update({j * chunk + i: e for i, e in errs.items()})
    finally:
        if ex is not None:
            ex.shutdown()
    return out, errors


class DiskArray:
    """A read-only uint8 image array in a ``.npy`` file, read with ``os.pread`` when indexed.

    It behaves like the (N, H, W, 3) array for what the package does with it
    (``shape``, ``len``, integer / slice / index-array selection, ``np.asarray``)
    but never maps the file: the pages a run reads stay in the kernel's page
    cache, shared and reclaimable, instead of counting towards the process's
    resident memory as a memory map's would (2.3 GB for TRAIN at 240x320). A
    subset is a new index into the same file, not a copy.
    """

    def __init__(self, path: str | os.PathLike, index: np.ndarray | None = None):
        self.path = Path(path)
        try:
            header = np.load(self.path, mmap_mode="r")  # reads the header only; no page is touched
        except (ValueError, OSError) as e:
            raise DataError(f"{self.path} cannot be read as a cached image array ({e}); it may be truncated: "
                            f"delete it and the cache is rebuilt.") from None
        shape, dtype, self._offset = header.shape, header.dtype, header.offset
        fortran = not header.flags.c_contiguous
        del header
        if fortran or dtype != np.uint8 or len(shape) != 4:
            raise DataError(f"{self.path} is not a cached image array (uint8, 4-D, C order): delete it to rebuild.")
        self._rows, self._row_shape = shape[0], tuple(shape[1:])
        self._row_bytes = int(np.prod(self._row_shape))
        self.index = np.arange(self._rows) if index is None else np.asarray(index, dtype=np.int64)
        self._fd: int | None = None

    dtype = np.dtype(np.uint8)
    ndim = 4

    @property
    def shape(self) -> tuple:
        return (len(self.index), *self._row_shape)

    def __len__(self) -> int:
        return len(self.index)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(rows), *self._row_shape), np.uint8)
        flat = out.reshape(len(rows), -1)
        for i, r in enumerate(rows):
            n = os.preadv(self._fd, [memoryview(flat[i])], self._offset + int(r) * self._row_bytes)
            if n != self._row_bytes:
                raise DataError(f"{self.path} is truncated (row {r}): delete it to rebuild the cache.")
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])] if not np.isscalar(key[0]) else self[key[0]][key[1:]]
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return self._read(np.array([rows]))[0]
        return self._read(rows)

    def subset(self, idx) -> DiskArray:
        return DiskArray(self.path, self.index[np.asarray(idx)])

    def __array__(self, dtype=None, copy=None):
        a = self._read(self.index)
        return a if dtype is None else a.astype(dtype)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __getstate__(self):  # picklable (e.g. for a process pool): reopen lazily
        return {**self.__dict__, "_fd": None}

    def __repr__(self) -> str:
        return f"DiskArray({self.path.name}, shape={self.shape})"


@dataclasses.dataclass
class SplitData:
    """Decoded images of one split with their manifest rows (same order)."""

    split: str
    images: np.ndarray | DiskArray  # uint8 (N, H, W, 3); read from the cache file on demand
    frame: object     # pandas.DataFrame: path, class, label, cell, ...

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy(np.int32)

    @property
    def cells(self) -> np.ndarray:
        """Same-cell cluster of each image (the unit every interval resamples)."""
        return self.frame["cell"].to_numpy()

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, idx) -> SplitData:
        idx = np.asarray(idx)
        images = self.images.subset(idx) if isinstance(self.images, DiskArray) else self.images[idx]
        return SplitData(self.split, images, self.frame.iloc[idx].reset_index(drop=True))


def load_split(manifest: Manifest, split: str, size: Sequence[int] = NATIVE_SIZE,
               cache_dir: str | os.PathLike | None = None, progress: bool = True, view: str = "full") -> SplitData:
    """Decode one split at ``size`` (height, width), cached on disk and keyed by size and view.

    The first call decodes every JPEG (about a minute for TRAIN on two cores) and
    writes ``<cache>/<fingerprint>/<split>_<H>x<W>.npy`` (``<split>_cell128_<H>x<W>.npy``
    for cell crops); later calls open it as a :class:`DiskArray`, read on demand. Unreadable files are dropped with a
    warning and recorded in ``manifest.skipped``.
    """

    check_view(view)
    size = check_image_size(size)
    frame = manifest.split(split)
    if frame.empty:
        raise DataError(f"split {split} is not in the dataset at {manifest.images_root}.")
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    key = manifest.fingerprint()
    tag = (f"_cell{cell_window(view)}" + ("" if crop_border(view) == "edge" else f"-{crop_border(view)}")
           if view != "full" else "")
    base = cache_root / key / f"{split}{tag}_{size[0]}x{size[1]}"
    npy, meta_path = base.with_suffix(".npy"), base.with_suffix(".json")
    if npy.exists() and meta_path.exists():
        meta = read_json(meta_path)
        keep = np.asarray(meta["keep"], dtype=bool)
        for i in np.flatnonzero(~keep):
            _record_bad(manifest, frame["path"].iloc[i], meta["errors"].get(str(i), "unreadable"))
        return SplitData(split, DiskArray(npy), frame[keep].reset_index(drop=True))
    images, errors = decode_images(frame["path"].tolist(), size, progress=progress, view=view)
    keep = np.ones(len(frame), bool)
    for i, err in errors.items():
        keep[i] = False
        _record_bad(manifest, frame["path"].iloc[i], err)
    images = images[keep] if errors else images
    with atomic_path(npy) as tmp:
        np.save(tmp, images)
    write_json(meta_path, {"split": split, "size": list(size), "view": view, "keep": keep.tolist(),
                           "errors": {str(k): v for k, v in errors.items()},
                           "images_root": str(manifest.images_root)})
    del images
    return SplitData(split, DiskArray(npy), frame[keep].reset_index(drop=True))


def run_split(model, split: str = "TEST", data_dir=None, cache_dir=None) -> SplitData:
    """A split decoded the way ``model`` (a :class:`~wbc_utils.runs.LoadedModel`: its ``image_size`` and ``view``)
    takes its inputs, cached like training's."""
    return load_split(build_manifest(data_dir), split, model.image_size, cache_dir, progress=False, view=model.view)


def _record_bad(manifest: Manifest, path: str, reason: str) -> None:
    if not any(s.path == path for s in manifest.skipped):
        log.warning("skipping %s: %s", path, reason)
        manifest.skipped.append(Skipped(path, reason))


# ----------------------------------------------------------------------------- subsets and splits

def stratified_subset(frame, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows, balanced over classes and spread over source cells."""

    if n > len(frame):
        raise ParameterError(f"train_subset={n} is larger than the {len(frame)} training images available; "
                             f"use 0 for all of them or a smaller number.")
    rng = np.random.default_rng(seed)
    labels = frame["label"].to_numpy()
    per_class = [np.flatnonzero(labels == c) for c in range(len(CLASSES))]
    quota = np.full(len(CLASSES), n // len(CLASSES))
    quota[: n % len(CLASSES)] += 1
    chosen = []
    for c, idx in enumerate(per_class):
        chosen.append(rng.choice(idx, size=min(quota[c], len(idx)), replace=False))
    out = np.concatenate(chosen)
    short = n - len(out)
    if short > 0:
        rest = np.setdiff1d(np.arange(len(frame)), out)
        out = np.concatenate([out, rng.choice(rest, size=short, replace=False)])
    return np.sort(out)


#: Fold assignment does not depend on the run's seed: every candidate and seed of a lab sees the same folds.
FOLD_SEED = 20201126


def kfold_split(frame, folds: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) for fold ``fold`` of ``folds`` over same-cell clusters, stratified by class.

    Each class's cells are shuffled once (:data:`FOLD_SEED`) and dealt round-robin to the folds, so every fold
    holds about 1/``folds`` of each class's cells, every cell is held out, and no cell (so no slide) is ever on both
    sides. A cell whose images carry two class labels (one same-cell cluster of TRAIN, 249 images) is dealt with
    each of its classes, so it can be held out in two folds; :func:`wbc_utils.beyond.lab_table` counts such cells
    and the report says so.
    """
    if not 2 <= folds or not 0 <= fold < folds:
        raise ParameterError(f"fold={fold} of folds={folds}: need folds >= 2 and 0 <= fold < folds")
    rng = np.random.default_rng(FOLD_SEED)
    held = set()
    for cls in CLASSES:
        cells = np.array(sorted(frame.loc[frame["class"] == cls, "cell"].unique()))
        if len(cells) < folds:
            raise ParameterError(f"class {cls} has {len(cells)} source cell(s) in TRAIN: too few for {folds} folds.")
        order = cells[rng.permutation(len(cells))]
        held.update(order[fold::folds].tolist())
    is_val = frame["cell"].isin(held).to_numpy()
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def grouped_split(frame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows by same-cell cluster, stratified by class: (train_idx, val_idx).

    A fraction of each class's cells (at least one) is held out, with every
    image of every slide that shows a held-out cell; no cell, and so no slide,
    appears on both sides.
    """

    if not 0 < fraction < 1:
        raise ParameterError(f"val_fraction must be between 0 and 1 (exclusive), got {fraction}")
    rng = np.random.default_rng(seed)
    held = set()
    for cls in CLASSES:
        cells = np.array(sorted(frame.loc[frame["class"] == cls, "cell"].unique()))
        if len(cells) < 2:
            raise ParameterError(f"class {cls} has {len(cells)} source cell(s) in TRAIN: too few to hold any out.")
        k = min(len(cells) - 1, max(1, int(round(fraction * len(cells)))))
        held.update(rng.choice(cells, size=k, replace=False).tolist())
    is_val = frame["cell"].isin(held).to_numpy()
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
