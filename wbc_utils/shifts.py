"""How a model reads smears stained and scanned elsewhere: a fixed grid of synthetic shifts of TEST.

A lab change alters the whole field before anyone crops a cell: another stain batch moves the haematoxylin
and eosin densities, another lamp or camera the brightness and contrast, another focus the sharpness, another
objective the magnification, another scanner the JPEG quality. Each shift of :data:`GRID` is applied to the
240x320 field as read from disk; the model's own pipeline then finds and crops the white cell (the locator
sees the shift too, as it would in the other lab) and classifies it.

The grid is fixed before any model is scored on it (published in the report as a table). Two levels per kind
of change: "mild" (within what one lab's slides vary) and "strong" (another lab). Stain shifts act in
haematoxylin-eosin-DAB space through scikit-image's stain matrix (:func:`wbc_utils.augment.hed_jitter`);
blur is a Gaussian (SciPy), scale a zoom about the field's centre (mirrored at the edges where it shrinks), JPEG
a re-encode by Pillow.

For each shift: accuracy on TEST's unseen cells (image level, the headline's measure), its paired difference
from clean TEST on the same images with an interval over cells, and how often the out-of-distribution flag
(:mod:`wbc_utils.ood`) fires. A shift is **within competence** when its accuracy is within
:data:`TOLERANCE` of clean TEST (the goal's reading, on the estimate); ``interval_says`` adds whether the
difference's interval settles it (wholly above -TOLERANCE, wholly below, or across). The flag should fire on
the shifts beyond competence and not on clean images.
"""
from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from . import NATIVE_SIZE, competence, ood
from .artifacts import copy_file, read_json, write_json
from .augment import hed_jitter
from .cellcrop import crop_cell
from .config import RESULTS, profile_dir
from .data import build_manifest, decode_images, load_split
from .errors import DataError
from .params import cell_window, crop_border, design_key
from .predict import fit_ood_reference, held_out_logits, logits_of, ood_rate
from .runs import MODEL, SHIFT_GRID, VAL_PREDICTIONS, Run, load_model, load_study
from .stats import Clusters, difference_interval, mean_interval

#: Images scored per TEST cell. TEST's ~2,300 unseen images are ~37 augmented copies of each of its 62 cells:
#: the cells, not the copies, are what the interval counts, and 12 copies per cell keep nearly all of its
#: information at a third of the cost (each shift re-reads, re-crops and re-scores every image).
PER_CELL = 12
#: A shift is within the model's competence when it costs at most this much accuracy (the issue's goal: 3 points).
TOLERANCE = 0.03


@dataclasses.dataclass(frozen=True)
class Shift:
    name: str
    family: str
    level: str
    describe: str
    apply: Callable[[np.ndarray], np.ndarray]


def hed(h: float = 1.0, e: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: hed_jitter(f[None], np.array([[h, e, 1.0]]), np.zeros((1, 3)))[0]


def gain(g: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: np.clip(np.rint(f.astype(np.float32) * g), 0, 255).astype(np.uint8)


def contrast(c: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(f):
        x = f.astype(np.float32)
        m = x.mean(axis=(0, 1), keepdims=True)
        return np.clip(np.rint(m + (x - m) * c), 0, 255).astype(np.uint8)
    return apply


def blur(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: np.clip(np.rint(ndimage.gaussian_filter(f.astype(np.float32), (sigma, sigma, 0))),
                             0, 255).astype(np.uint8)


def scale(s: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(f):
        h, w = f.shape[:2]
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        z = np.asarray(Image.fromarray(f).resize((nw, nh), Image.Resampling.BILINEAR))
        if s >= 1:
            y0, x0 = (nh - h) // 2, (nw - w) // 2
            return np.ascontiguousarray(z[y0:y0 + h, x0:x0 + w])
        py, px = h - nh, w - nw
        return np.pad(z, ((py // 2, py - py // 2), (px // 2, px - px // 2), (0, 0)), mode="symmetric")
    return apply


def jpeg(q: int) -> Callable[[np.ndarray], np.ndarray]:
    def apply(f):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=q)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return apply


#: The published grid: fixed before any model was scored on it.
GRID: tuple[Shift, ...] = (
    Shift("haematoxylin +20%", "stain", "mild", "haematoxylin density x1.2 (HED space)", hed(h=1.2)),
    Shift("haematoxylin -20%", "stain", "mild", "haematoxylin density x0.8", hed(h=0.8)),
    Shift("eosin +20%", "stain", "mild", "eosin density x1.2", hed(e=1.2)),
    Shift("eosin -20%", "stain", "mild", "eosin density x0.8", hed(e=0.8)),
    Shift("haematoxylin +50%", "stain", "strong", "haematoxylin density x1.5", hed(h=1.5)),
    Shift("eosin -50%", "stain", "strong", "eosin density x0.5", hed(e=0.5)),
    Shift("brighter 10%", "light", "mild", "every pixel x1.1", gain(1.1)),
    Shift("darker 10%", "light", "mild", "every pixel x0.9", gain(0.9)),
    Shift("darker 25%", "light", "strong", "every pixel x0.75", gain(0.75)),
    Shift("contrast -20%", "light", "mild", "deviations from the mean colour x0.8", contrast(0.8)),
    Shift("contrast +25%", "light", "strong", "deviations from the mean colour x1.25", contrast(1.25)),
    Shift("blur 1 px", "focus", "mild", "Gaussian blur, sigma 1 native pixel", blur(1.0)),
    Shift("blur 2 px", "focus", "strong", "Gaussian blur, sigma 2 native pixels", blur(2.0)),
    Shift("zoom x0.9", "scale", "mild", "magnification x0.9 (field shrunk, mirrored at the edges)", scale(0.9)),
    Shift("zoom x1.1", "scale", "mild", "magnification x1.1 (centre enlarged)", scale(1.1)),
    Shift("zoom x0.8", "scale", "strong", "magnification x0.8", scale(0.8)),
    Shift("zoom x1.25", "scale", "strong", "magnification x1.25", scale(1.25)),
    Shift("JPEG q50", "scanner", "mild", "re-encoded as JPEG, quality 50", jpeg(50)),
    Shift("JPEG q20", "scanner", "strong", "re-encoded as JPEG, quality 20", jpeg(20)),
)


#: The competence flag's calibration ladder (:mod:`wbc_utils.competence`): each kind of change at strengths other
#: than the grid's, so that the flag is not fitted to the shifts it is measured on.
LADDER: tuple[Shift, ...] = (
    *(Shift(f"haematoxylin x{v:g}", "stain", "ladder", "", hed(h=v)) for v in (0.6, 0.7, 0.9, 1.1, 1.3, 1.7)),
    *(Shift(f"eosin x{v:g}", "stain", "ladder", "", hed(e=v)) for v in (0.4, 0.6, 0.7, 0.9, 1.1, 1.3)),
    *(Shift(f"light x{v:g}", "light", "ladder", "", gain(v)) for v in (0.7, 0.8, 0.85, 0.95, 1.05, 1.15)),
    *(Shift(f"contrast x{v:g}", "light", "ladder", "", contrast(v)) for v in (0.7, 0.9, 1.1, 1.2, 1.35)),
    *(Shift(f"blur {v:g} px", "focus", "ladder", "", blur(v)) for v in (0.5, 1.5, 2.5)),
    *(Shift(f"zoom x{v:g}", "scale", "ladder", "", scale(v)) for v in (0.75, 0.85, 0.95, 1.05, 1.15, 1.3)),
    *(Shift(f"JPEG q{v}", "scanner", "ladder", "", jpeg(v)) for v in (10, 30, 70)),
)


def grid_table() -> list[dict]:
    """The grid as rows (what the report prints before any result)."""
    return [{"shift": s.name, "family": s.family, "level": s.level, "what": s.describe} for s in GRID]


def apply_shift(shift: Shift, fields: np.ndarray) -> np.ndarray:
    """``shift`` applied to each uint8 (H, W, 3) field of ``fields`` (N, H, W, 3)."""
    return np.stack([shift.apply(np.asarray(f, np.uint8)) for f in fields]) if len(fields) else fields


def _inputs(fields: np.ndarray, image_size, view: str) -> np.ndarray:
    """The model's inputs from 240x320 fields, as its pipeline prepares them (cell crop, or the field resized)."""
    size = tuple(int(v) for v in image_size)
    if view == "full":
        return np.stack([np.asarray(Image.fromarray(f).resize((size[1], size[0]), Image.Resampling.BILINEAR))
                         for f in fields])
    return np.stack([crop_cell(f, size, cell_window(view), crop_border(view)) for f in fields])


def score_grid(models: list, references: list, data_dir=None, split: str = "TEST", progress: bool = False,
               shifts: tuple[Shift, ...] = GRID, per_cell: int | None = PER_CELL, region: dict | None = None) -> dict:
    """Score each model (:class:`wbc_utils.runs.LoadedModel`, the seeds of one design) on ``split``'s unseen cells,
    clean and under every shift of the grid, with the flag fitted for each model (``references``, one per model,
    :func:`wbc_utils.predict.fit_ood_reference`; None leaves the flag out).

    Returns {"clean": row, "rows": [row per shift], "images", "cells", "models"}: a row holds the accuracy
    pooled over the models with its interval over seeds and cells, the paired difference from clean with its
    interval, and the share of images flagged (mean over models). TEST's images of the 6 cells TRAIN shares are
    left out, as in the headline; ``per_cell`` keeps that many images of each cell (drawn once, seed 0; None: all).
    """
    if not models:
        raise ValueError("score_grid needs at least one model")
    views = {(tuple(m.image_size), m.view) for m in models}
    if len(views) != 1:
        raise ValueError(f"score_grid scores the seeds of one design; these models differ in input: {views}")
    manifest = build_manifest(data_dir)
    data = load_split(manifest, split, NATIVE_SIZE, progress=progress)
    keep = ~data.frame["shared"].to_numpy(bool)
    if per_cell:  # the same images for every shift and model: up to per_cell of each unseen cell's copies
        rng = np.random.default_rng(0)
        chosen = np.zeros(len(keep), bool)
        for _, idx in data.frame[keep].groupby("cell").indices.items():
            rows = np.flatnonzero(keep)[idx]
            chosen[rng.choice(rows, min(per_cell, len(rows)), replace=False)] = True
        keep = chosen
    out = score_fields(models, references, np.asarray(data.images[np.flatnonzero(keep)]),
                       data.frame["label"].to_numpy()[keep],
                       data.frame["cell"].to_numpy()[keep], shifts, progress, region)
    return {"split": split, **out, "per_cell": per_cell}


def score_fields(models: list, references: list, fields: np.ndarray, labels: np.ndarray, cells: np.ndarray,
                 shifts: tuple[Shift, ...] = GRID, progress: bool = False, region: dict | None = None) -> dict:
    """:func:`score_grid` on given 240x320 ``fields`` with their ``labels`` and ``cells`` (the clusters); with a
    competence ``region`` (:mod:`wbc_utils.competence`) each row also holds the share that flag marks."""
    size, view = tuple(models[0].image_size), models[0].view
    clusters = Clusters.of(cells, labels)

    def competent(shifted: np.ndarray) -> float | None:
        return None if region is None else float(competence.flag(region, competence.statistics(shifted))[0].mean())

    def read(shifted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = _inputs(shifted, size, view)
        feats = np.stack([ood.image_features(f) for f in shifted]) if any(r is not None for r in references) \
            else None
        correct, flagged = [], []
        for m, ref in zip(models, references):
            logits = logits_of(m, x)
            correct.append((logits.argmax(1) == labels).astype(float))
            flagged.append(ood.flag(ref, feats, logits)[0].astype(float) if ref is not None
                           else np.full(len(x), np.nan))
        return np.stack(correct), np.stack(flagged)

    def row(name: str, correct, flagged, clean_correct=None) -> dict:
        acc = mean_interval(correct, clusters)
        out = {"shift": name, "accuracy": acc["value"], "accuracy_ci": [acc["lo"], acc["hi"]],
               "flagged": None if np.isnan(flagged).all() else float(np.nanmean(flagged)),
               "per_model": [float(c.mean()) for c in correct]}
        if clean_correct is not None:
            d = difference_interval(correct, clean_correct, clusters, paired=True)
            out.update({"difference": d["diff"], "difference_ci": [d["lo"], d["hi"]]})
        return out

    clean_correct, clean_flagged = read(fields)
    clean = {**row("clean", clean_correct, clean_flagged), "competence_flagged": competent(fields)}
    rows = []
    for s in shifts:
        if progress:
            print(f"shift grid: {s.name}", flush=True)
        shifted = apply_shift(s, fields)
        c, f = read(shifted)
        r = {**row(s.name, c, f, clean_correct), "competence_flagged": competent(shifted)}
        lo, hi = r["difference_ci"]
        r.update(family=s.family, level=s.level, what=s.describe,
                 within=bool(r["accuracy"] >= clean["accuracy"] - TOLERANCE),
                 # what the interval says: the whole of it above -TOLERANCE, or below, or across it
                 interval_says="within" if lo >= -TOLERANCE else "beyond" if hi < -TOLERANCE else "not resolved")
        rows.append(r)
    return {"clean": clean, "rows": rows, "images": int(len(fields)), "cells": int(len(clusters)),
            "models": len(models), "tolerance": TOLERANCE}


def flag_summary(grid: dict, key: str = "flagged") -> dict:
    """A flag against its goals (``key``: "flagged", the out-of-distribution flag, or "competence_flagged"): its
    rate on clean images, on each shift beyond the model's competence (the lowest of those rates is what the
    detection goal is about), and on the shifts within it."""
    rows = [r for r in grid["rows"] if r.get(key) is not None]
    beyond = [r for r in rows if not r["within"]]
    within = [r for r in rows if r["within"]]
    return {"false_alarms_clean": grid["clean"].get(key),
            "beyond": [(r["shift"], r[key]) for r in beyond],
            "lowest_detection": min((r[key] for r in beyond), default=None),
            "within": [(r["shift"], r[key]) for r in within]}


def lab_readers(profile: str, design: dict, runs_root=None, data_dir=None, per_cell: int | None = PER_CELL,
                folds: int | None = None) -> list:
    """The competence flag's readers (:func:`wbc_utils.competence.calibrate`): one per finished lab fold of
    ``design`` whose model is here (the first ``folds`` of them; None: all), with up to ``per_cell`` of its
    held-out cells' images (drawn once, seed 0) as 240x320 fields. Empty when the lab has no such fold (its runs
    were imported from an export)."""
    study = load_study(profile, runs_root)
    train = build_manifest(data_dir).split("TRAIN")
    where = dict(zip(train["relpath"], train["path"]))
    out = []
    rng = np.random.default_rng(0)
    for r in study.finished(role=None).itertuples():
        run = Run(Path(r.run_dir))
        if r.validation != "grouped" or design_key(run.params()) != design_key(design) or not run.has(MODEL) \
                or not run.has(VAL_PREDICTIONS):
            continue
        val = run.predictions(name=VAL_PREDICTIONS)
        if per_cell:
            rows = [rng.choice(idx, min(per_cell, len(idx)), replace=False)
                    for idx in val.groupby("cell").indices.values()]
            val = val.iloc[np.sort(np.concatenate(rows))].reset_index(drop=True)
        paths = val["relpath"].map(where)  # predictions name files relative to the dataset (it may have moved)
        fields, bad = decode_images(paths.tolist(), NATIVE_SIZE)
        keep = np.array([i not in bad for i in range(len(val))])
        model = load_model(run.path)

        def predict(f, m=model):
            return logits_of(m, _inputs(f, m.image_size, m.view)).argmax(1)

        out.append((fields[keep], val["label"].to_numpy()[keep], predict))
        if folds is not None and len(out) >= folds:
            break
    return out


#: Held-out images per TRAIN cell the competence flag is calibrated on (each of the ladder's 35 rungs re-reads them).
COMPETENCE_PER_CELL = 3


def fit_competence(profile: str, design: dict, runs_root=None, data_dir=None,
                   per_cell: int | None = COMPETENCE_PER_CELL, folds: int | None = None,
                   progress: bool = False) -> dict | None:
    """The competence region of ``design``, fitted on its lab folds' held-out TRAIN cells (None without them)."""
    readers = lab_readers(profile, design, runs_root, data_dir, per_cell, folds)
    if not readers:
        return None
    region = competence.calibrate(readers, LADDER, apply_shift, TOLERANCE, progress)
    region.update(folds=len(readers), per_cell=per_cell)
    return region


def grid_of_study(profile: str = "best", runs_root=None, data_dir=None, progress: bool = True,
                  per_cell: int | None = PER_CELL, reuse: bool = True, results_root=None,
                  competence_folds: int | None = None) -> dict:
    """Score the study's final models (its finished main runs, every seed) on the grid, with the flag re-fitted on
    each (thresholds from TRAIN's statistics and the energy of held-out TRAIN cells where the lab scored the same
    design), and measure the flag's false alarms on TEST_SIMPLE's originals too; write ``<runs>/<profile>/
    shift_grid.json`` (atomically) and return it.

    With ``reuse``, a grid already scored for the same final runs (here, or exported to ``results/<profile>/`` by
    an earlier session, whose final runs were imported without their models) is returned as it is."""
    study = load_study(profile, runs_root)
    final = study.finished()
    if final.empty:
        raise DataError(f"profile {profile} has no finished final runs to score on the shift grid: run "
                        f"`make report PROFILE={profile}` (or `python -m wbc_utils study --profile {profile}`) first.")
    dirs = [Path(d) for d in final["run_dir"]]
    here = profile_dir(profile, runs_root) / SHIFT_GRID
    if reuse:
        for path in (here, Path(results_root or RESULTS) / profile / SHIFT_GRID):
            if path.exists():
                old = read_json(path)
                if sorted(old.get("runs", [])) == sorted(d.name for d in dirs) and old.get("per_cell") == per_cell:
                    if path != here:
                        copy_file(path, here)
                    return old
    models = [load_model(d) for d in dirs]
    refs = [fit_ood_reference(m, data_dir, held_out_logits=held_out_logits(d)) for m, d in zip(models, dirs)]
    region = fit_competence(profile, Run(dirs[0]).params(), runs_root, data_dir,
                            per_cell=min(COMPETENCE_PER_CELL, per_cell or COMPETENCE_PER_CELL),
                            folds=competence_folds, progress=progress)
    grid = score_grid(models, refs, data_dir, progress=progress, per_cell=per_cell, region=region)
    simple = [ood_rate(m, r, "TEST_SIMPLE", data_dir) for m, r in zip(models, refs)]
    grid.update(runs=[d.name for d in dirs], seeds=[int(s) for s in final["seed"]],
                flag={"energy_from": refs[0].get("energy_from"), "tail": refs[0].get("tail"),
                      "false_alarms_simple": float(np.mean([s["flagged"] for s in simple])),
                      "simple_images": int(simple[0]["images"]), **flag_summary(grid)},
                grid=grid_table())
    if region is not None:
        originals = np.asarray(load_split(build_manifest(data_dir), "TEST_SIMPLE", NATIVE_SIZE, progress=False).images)
        grid["competence"] = {**{k: v for k, v in region.items()},
                              "false_alarms_simple": float(competence.flag(region, competence.statistics(originals))[0]
                                                           .mean()),
                              **flag_summary(grid, "competence_flagged")}
    write_json(here, grid)
    return grid
