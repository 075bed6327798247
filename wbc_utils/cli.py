"""Command line: python -m wbc_utils COMMAND ... (the Makefile only calls this).

Commands, in the order data flows:

  profiles   list the study profiles and what each trades away
  data       check the dataset, print its counts, fill the decoded-image cache
  slides     derive each image's original slide and the same-cell clusters (the shipped mapping)
  train      train one run (what the training notebook does), without papermill; every run parameter is an option
  study      run every run of a profile through the training notebook (papermill), with one progress display
  reevaluate recompute finished runs' metrics from their predictions
  summary    print a study's runs as a table
  figures    draw a study's figures into figures/PROFILE/
  report     execute the report notebook, export report/PROFILE/report.{html,pdf}
  all        study + figures + report (what make report runs)
  predict    classify image files or folders with a trained model (default: the shipped one)
  ship       copy a finished run's model to models/best/ for predict
  export     copy a study's small artifacts (no models) to results/, tracked, to build its report anywhere
  readme     rewrite the README's findings block from the shipped report's results.json
  download   fetch the dataset, only when asked (verified, extracted safely)

Every command that reads the data or the runs takes --data-dir (else WBC_DATA_DIR, else
data/blood-cells/) and --runs-dir (else WBC_RUNS_DIR, else runs/). Exit status: 0 on success,
1 when some runs failed, export was incomplete, a study found no usable dataset (checked once, before any run) or
predict could not read a file, 2 on bad input.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import gzip
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from . import registry, shifts, slides
from .artifacts import write_csv, write_json
from .config import RESULTS, SHIPPED_RESULTS, figures_dir, profile_dir, runs_root
from .config import data_dir as default_data_dir
from .data import build_manifest, find_images_root, load_split
from .download import download
from .errors import DataError, WBCError
from .figures import build_all
from .lab import fix_params, run_lab, with_pick
from .params import (
    ALL_LOSSES,
    ARCHS,
    INPUT_SCALINGS,
    PRECISIONS,
    PROFILES,
    VALIDATIONS,
    RunParams,
    field_choices,
    get_profile,
)
from .predict import DISCLAIMER, format_table, ood_reference, predict_files, ship_model
from .reevaluate import reevaluate_profile
from .registry import ENCODINGS
from .report import build_report, ship_report, update_readme
from .runs import (
    export_study,
    is_model_path,
    legacy_folders,
    load_model,
    load_study,
    migrate,
    resource_message,
    summary_frame,
)
from .study import run_study, summarize
from .training import train_run


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="dataset root (default: $WBC_DATA_DIR, else data/blood-cells/)")
    p.add_argument("--runs-dir", default=None, help="where studies are written (default: $WBC_RUNS_DIR, else runs/)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def _csv_choices(valid) -> str:
    return ",".join(valid)


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", help=f"{' | '.join(PROFILES)} (default: quick)")
    p.add_argument("--losses", help=f"comma-separated subset of: {_csv_choices(registry.names())}, or "
                   f"{ALL_LOSSES} (every registered loss; losses of your own: WBC_LOSS_PLUGINS)")
    p.add_argument("--encodings", help=f"comma-separated subset of: {_csv_choices(ENCODINGS)}")
    p.add_argument("--seeds", help="seeds, e.g. 0,1,2 or 0-4")
    p.add_argument("--epochs", type=int, help="override the profile's epochs")
    p.add_argument("--image-size", help="override the image size, e.g. 120x160")
    p.add_argument("--train-subset", type=int, help="override the number of TRAIN images (0 = all)")
    p.add_argument("--validation", choices=list(VALIDATIONS), help=_param_help("validation"))
    p.add_argument("--arch", choices=list(ARCHS), help=_param_help("arch"))
    p.add_argument("--input-scaling", choices=list(INPUT_SCALINGS), help=_param_help("input_scaling"))
    p.add_argument("--learning-rate", type=float, help=_param_help("learning_rate"))
    p.add_argument("--precision", choices=list(PRECISIONS), help=_param_help("precision"))
    p.add_argument("--jobs", type=int, help="notebooks run at once on this machine (default: the profile's)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask cluster instead of this machine, e.g. tcp://host:8786 (the runs folder and "
                   "the dataset must be at the same paths on every worker; see the README)")
    p.add_argument("--gpus-per-run", type=int, default=0,
                   help="with --scheduler: GPUs each run takes from a worker started with --resources GPU=N")
    p.add_argument("--lab-trials", type=int, help="a lab profile (best): end its search after this many trials "
                   "in all (default: the profile's search max_trials)")
    p.add_argument("--grid-per-cell", type=int, default=None,
                   help="a lab profile, with all: TEST images per unseen cell scored on the shift grid (default: "
                   "wbc_utils.shifts.PER_CELL)")
    p.add_argument("--competence-folds", type=int, default=None,
                   help="a lab profile, with all: lab folds the competence flag is calibrated on (default: all)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reuse", action="store_true", help="keep finished runs with the same parameters")
    g.add_argument("--force", action="store_true", help="retrain runs that already finished")


def _param_help(name: str) -> str:
    """A run parameter's help, as argparse prints it (which formats with %)."""
    return next(f.metadata["help"] for f in dataclasses.fields(RunParams) if f.name == name).replace("%", "%%")


def _bool(text: str) -> bool:
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_run_params(p: argparse.ArgumentParser) -> None:
    """One option per :class:`~wbc_utils.params.RunParams` field (``--image-size`` for ``image_size``), with its
    default, help and choices read from the field: the command line cannot drift from the parameters."""
    defaults = RunParams.defaults()
    for f in dataclasses.fields(RunParams):
        default = defaults[f.name]
        kind = bool if isinstance(default, bool) else (str if isinstance(default, list) else type(default))
        shown = "x".join(map(str, default)) if isinstance(default, list) else default
        kw: dict = {"default": None, "help": f"{_param_help(f.name)} (default: {shown})", "dest": f.name}
        if field_choices(f):
            kw["choices"] = list(field_choices(f))
        kw["type"] = _bool if kind is bool else kind
        if kind is bool:
            kw["metavar"] = "true|false"
        p.add_argument("--" + f.name.replace("_", "-"), **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wbc_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("profiles", help="list the study profiles")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("data", help="check the dataset and fill the image cache")
    _common(p)
    p.add_argument("--image-size", default="240x320", help="size to decode and cache (default 240x320)")
    p.set_defaults(func=cmd_data)

    add_slides_parser(sub)

    p = sub.add_parser("train", help="train one run, without papermill (every run parameter is an option)",
                       description="Train one run and write its folder. Every run parameter is an option; the "
                       "defaults are the 2020 set-up (240x320, 100 epochs: long on a CPU). A run of a profile: "
                       "--profile quick --image-size 60x80 --epochs 6 --learning-rate 0.0003 --train-subset 0.")
    _common(p)
    add_run_params(p)
    p.add_argument("--output-dir", help="run directory (default: <runs-dir>/<profile>/<run name>)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reuse", action="store_true", help="return a finished run with the same parameters")
    g.add_argument("--force", action="store_true", help="replace a run already in the folder")
    p.set_defaults(func=cmd_train)

    for name, func, helptext in (("study", cmd_study, "run every run of a profile through papermill"),
                                 ("all", cmd_all, "study + figures + report")):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        _study_args(p)
        if name == "all":
            p.add_argument("--no-pdf", action="store_true", help="export HTML only")
        p.set_defaults(func=func)

    p = sub.add_parser("lab", help="run a lab profile's search (Optuna) until its budget is spent; resumable",
                       description="Run the search of a profile that has one (best): candidates scored by k-fold "
                       "validation over TRAIN's same-cell clusters, the profile's first candidates, then Optuna's "
                       "TPE proposals; successive halving over folds stops the trailing ones. Resumes an earlier "
                       "search (<runs>/<profile>/lab.sqlite3); the trials are written to lab_trials.json there. "
                       "study and all run it first for such a profile.")
    _common(p)
    p.add_argument("--profile", default="best", help="a profile with a search (default: best)")
    p.add_argument("--jobs", type=int, help="trials trained at once (default: the profile's)")
    p.add_argument("--budget-minutes", type=float,
                   help="the lab's total budget, over every session (default: the profile's search budget)")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("shifts", help="score a study's final models (or one model) on the shift grid, with the flag",
                       description="Score TEST's unseen cells under the fixed grid of synthetic lab shifts "
                       "(wbc_utils.shifts.GRID: stain in HED space, light, focus, scale, JPEG) and measure how often "
                       "the out-of-distribution flag fires on each. Default: the final models of --profile, written "
                       "to <runs>/<profile>/shift_grid.json (the report reads it); --model scores one model "
                       "(a run folder or models/best/) and writes --out.")
    _common(p)
    p.add_argument("--profile", default="best", help="the study whose final models are scored (default: best)")
    p.add_argument("--model", help="score this model instead (a run folder, models/best/ or a .keras file)")
    p.add_argument("--out", help="with --model: where to write the JSON (default: print only)")
    p.add_argument("--competence-from", metavar="PROFILE",
                   help="with --model: fit the competence flag on this profile's lab folds of the model's design "
                   "(default: no competence flag)")
    p.set_defaults(func=cmd_shifts)

    p = sub.add_parser("reevaluate", help="recompute finished runs' metrics from their predictions (no training)")
    _common(p)
    p.add_argument("--profile", default="quick")
    p.add_argument("--force", action="store_true", help="even runs already at the current evaluation version")
    p.set_defaults(func=cmd_reevaluate)

    p = sub.add_parser("summary", help="print a study's runs as a table")
    _common(p)
    p.add_argument("--profile", default="quick")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("figures", help="draw a study's figures")
    _common(p)
    p.add_argument("--profile", default="quick")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("report", help="execute and export the report of a study")
    _common(p)
    p.add_argument("--profile", default="quick")
    p.add_argument("--no-pdf", action="store_true", help="export HTML only")
    p.add_argument("--ship", action="store_true", help="then copy it to report/shipped/PROFILE/ (the tracked "
                   "reference report the README quotes; maintainers only)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("predict", help="classify image files or folders with a trained model",
                       description="Classify image files (any format Pillow reads: JPEG, PNG, BMP, TIFF, ...) or "
                       "folders of them (searched recursively). MODEL, when given first, is a run folder "
                       "(runs/<profile>/<run>/), a shipped-model folder or a .keras file; without it the best shipped "
                       "model (models/best/) is used. Each image is also checked against TRAIN: the 'unlike TRAIN' "
                       "column (CSV: ood, ood_reason) flags images whose statistics or whose scores are unlike the "
                       "training images'; do not trust those answers. A model with a competence region (a lab "
                       "profile's final model, after its shift grid) adds an 'unreliable' column (CSV: unreliable, "
                       "unreliable_reason): the image lies where that model's accuracy was measured to drop. "
                       "Unreadable files are reported on their own "
                       "row; the others are still classified. Exit status 1 when any file failed. Not a diagnostic "
                       "tool: the models have only seen one lab's BCCD smears.")
    p.add_argument("--data-dir", default=None, help="the dataset, to fit the out-of-distribution check for a run "
                   "folder the first time (shipped models carry theirs)")
    p.add_argument("paths", nargs="+", metavar="[MODEL] IMAGES", help="optional model, then images or folders")
    p.add_argument("--model", help="the model (instead of giving it first)")
    p.add_argument("--csv", nargs="?", const="-", metavar="FILE",
                   help="write CSV instead of a table: to FILE, or to standard output without one")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ship", help="copy a finished run's model to models/best/ for predict (under 5 MB)")
    _common(p)
    p.add_argument("--profile", default="best")
    p.add_argument("--seed", type=int, default=0, help="which final run to ship (decided in advance: seed 0)")
    p.add_argument("--run", help="a run folder, instead of --profile/--seed")
    p.add_argument("--force", action="store_true", help="replace a different shipped model")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("export", help="copy a study's small artifacts (no models) to results/ (tracked)",
                       description="Copy every finished run's params, history, metrics and predictions, and the "
                       "study's summary, to results/PROFILE/ (or --to), where they are tracked in git and read as a "
                       "runs folder: python -m wbc_utils report --profile paper --runs-dir results.")
    _common(p)
    p.add_argument("--profile", default="paper")
    p.add_argument("--to", default=None, help=f"destination root (default: {RESULTS})")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("migrate", help="rename run folders written before 'paper' was renamed (no training)",
                       description="Runs written before the rename stored 'paper' for integer labels, TEST as "
                       "validation and the 2020 network; today's values are 'integer', 'test' and 'unet_encoder'. "
                       "Rewrites those values in each run's params.json and metrics.json (atomically) and renames "
                       "'<loss>_paper_...' folders to '<loss>_integer_...'; summary.csv and study.json follow. "
                       "Nothing is trained or evaluated again.")
    p.add_argument("folder", nargs="?", default=None, help="a runs folder, a results folder or one study of either "
                   "(default: the runs folder, WBC_RUNS_DIR or runs/)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("readme", help="rewrite the README's findings block from the shipped report's results.json")
    p.add_argument("--results", default=None, help=f"results.json to read (default: {SHIPPED_RESULTS})")
    p.add_argument("--check", action="store_true", help="only check that the README is current (exit 1 if not)")
    p.set_defaults(func=cmd_readme)

    p = sub.add_parser("download", help="fetch the dataset (only when asked), verify it, extract it safely")
    p.add_argument("--data-dir", default=None, help="where to put it (default: $WBC_DATA_DIR, else data/blood-cells/)")
    p.add_argument("--source", default="github", choices=["github", "kaggle"],
                   help="github: dhruvp/wbc-classification; kaggle: paultimothymooney/blood-cells (your credentials)")
    p.add_argument("--url", help="a mirror's URL of the same zip, instead of --source")
    p.add_argument("--archive", help="a zip you already downloaded: verify and extract it, fetch nothing")
    p.add_argument("--sha256", help="the archive's expected SHA-256, when you know it")
    p.add_argument("--keep-archive", action="store_true", help="keep the zip after extracting")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_download)

    return parser


def add_slides_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``slides`` to the ``python -m wbc_utils`` sub-commands."""
    p = subparsers.add_parser(
        "slides", help="derive each image's original slide and the same-cell clusters (rebuild the shipped mapping)",
        description="Match every image to its original slide (SIFT, affine fit, NCC) and group slides that show "
        "the same white cell; write wbc_utils/resources/slides.csv.gz and slide_pairs.csv (or --out). Needs the "
        "original slides (Original_Images/) beside the dataset. Exit status 1 when --check finds a difference "
        "or a differing file would be overwritten without --force.")
    p.add_argument("--data-dir", default=None, help="dataset root (default: $WBC_DATA_DIR, else data/blood-cells/)")
    p.add_argument("--jobs", type=int, default=None, help=f"worker processes (default {slides.default_jobs()})")
    p.add_argument("--out", default=None, help=f"folder to write into (default: {slides.MAPPING_FILE.parent})")
    p.add_argument("--check", action="store_true", help="recompute and compare with the shipped files; write nothing")
    p.add_argument("--force", action="store_true", help="overwrite files that differ from the new ones")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.set_defaults(func=cmd_slides)
    return p


def _row_differences(old_bytes: bytes, new_bytes: bytes) -> str:
    old = gzip.decompress(old_bytes).decode().splitlines()
    new = gzip.decompress(new_bytes).decode().splitlines()
    changed = len(set(old) ^ set(new))
    return f"{len(old)} rows before, {len(new)} now, {changed} lines differ"


def cmd_slides(args) -> int:
    """python -m wbc_utils slides: rebuild (or --check) the shipped mapping; print counts and agreement."""
    t0 = time.perf_counter()
    manifest = build_manifest(args.data_dir, sources=False)
    mapping, pairs = slides.build_mapping(manifest, jobs=args.jobs, progress=True)
    elapsed = time.perf_counter() - t0
    counts = slides.cluster_counts(mapping)
    unmatched = int(mapping["slide"].isna().sum())
    print(f"{len(mapping):,} images matched in {elapsed:.0f} s; {unmatched} without a verified slide; "
          f"score min {mapping['score'].min():.4f}, median {mapping['score'].median():.4f}")
    for split in ("TRAIN", "TEST", "TEST_SIMPLE"):
        if f"{split}_slides" in counts:
            n = int((mapping["split"] == split).sum())
            print(f"  {split:11s} {n:6,} files, {counts[split + '_slides']:3d} slides, "
                  f"{counts[split + '_cells']:3d} same-cell clusters")
    print(f"  cells in both TRAIN and TEST: {counts['shared_cells']} ({counts['shared_test_images']} TEST images)")
    print(f"  overlapping slide pairs: {len(pairs)}, {int(pairs['same_cell'].sum())} showing the same cell")
    ref_dir = slides.find_reference_dir(find_images_root(args.data_dir))
    if ref_dir is not None:
        print(slides.format_comparison(slides.compare_with_reference(mapping, pairs, ref_dir)))
    new = {slides.MAPPING_FILE.name: slides.mapping_bytes(mapping), slides.PAIRS_FILE.name: slides.pairs_bytes(pairs)}
    dest = Path(args.out) if args.out else slides.MAPPING_FILE.parent
    if args.check:
        differ = []
        for name, data in new.items():
            path = dest / name
            if not path.is_file():
                differ.append(f"{path}: missing")
            elif path.read_bytes() != data:
                detail = _row_differences(path.read_bytes(), data) if name.endswith(".gz") else "content differs"
                differ.append(f"{path}: {detail}")
        for d in differ:
            print(f"DIFFERS {d}", file=sys.stderr)
        print("check: the shipped files are reproduced exactly" if not differ else "check: FAILED")
        return 1 if differ else 0
    differing = [dest / n for n, d in new.items() if (dest / n).is_file() and (dest / n).read_bytes() != d]
    if differing and not args.force:
        print(f"refusing to overwrite {', '.join(map(str, differing))}: the new result differs from the file "
              f"there. Pass --force to replace it, or --out DIR to write elsewhere.", file=sys.stderr)
        return 1
    for path in slides.write_mapping(mapping, pairs, dest):
        print(f"wrote {path}")
    return 0


def cmd_profiles(args) -> int:
    for p in PROFILES.values():
        runs = len(p.runs())
        print(f"{p.name:8s} {p.description}\n         {p.kind}: {runs} runs at {p.image_size[0]}x{p.image_size[1]}, "
              f"{p.epochs} epochs, seeds {p.seeds}, losses {', '.join(p.loss_names)}\n         trades: {p.trades}\n")
    return 0


def cmd_data(args) -> int:
    size = RunParams(image_size=args.image_size).image_size
    m = build_manifest(args.data_dir)
    print(f"dataset: {m.images_root}")
    print(m.summary().to_string())
    src = m.sources
    print(f"sources: {src['shipped']} file(s) from the shipped slide mapping, {src['matched']} matched now, "
          f"{src['none']} without a known slide (each its own cell)")
    for split in sorted(m.frame["split"].unique()):
        t = time.perf_counter()
        s = load_split(m, split, size)
        print(f"{split}: {len(s)} images at {size[0]}x{size[1]} in {time.perf_counter() - t:.1f} s")
    if m.skipped:
        print(f"\n{len(m.skipped)} file(s) skipped:")
        for s in m.skipped:
            print(f"  {s.path}: {s.reason}")
    return 0


def cmd_train(args) -> int:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunParams)
             if getattr(args, f.name) is not None}
    p = RunParams(**given)
    run_dir = Path(args.output_dir) if args.output_dir else profile_dir(p.profile, args.runs_dir) / p.run_name
    m = train_run(p, run_dir, data_dir=args.data_dir, reuse=args.reuse, force=args.force)
    lo, hi = m["unseen_accuracy_ci"]
    print(f"{run_dir}: accuracy on TEST's unseen cells {m['unseen_accuracy']:.3f} [{lo:.3f}, {hi:.3f}], "
          f"all of TEST {m['test_accuracy']:.3f}, collapsed={m['collapsed']}")
    return 0


def _profile_from(args):
    size = RunParams(image_size=args.image_size).image_size if args.image_size else None
    return get_profile(args.profile).with_overrides(
        losses=args.losses, encodings=args.encodings, seeds=args.seeds, epochs=args.epochs, image_size=size,
        train_subset=args.train_subset, validation=args.validation, arch=args.arch,
        input_scaling=args.input_scaling, learning_rate=args.learning_rate, precision=args.precision)


def cmd_study(args) -> int:
    try:
        return _study(args)
    except DataError as e:  # found before any run started: one line, nothing ran
        print(f"error: {e}", file=sys.stderr)
        return 1


def cmd_lab(args) -> int:
    profile = get_profile(args.profile)
    rows = run_lab(profile, args.runs_dir, args.data_dir, jobs=args.jobs, budget_minutes=args.budget_minutes)
    done = [r for r in rows if r["state"] == "complete"]
    print(f"lab {profile.name}: {len(rows)} trials ({len(done)} complete, "
          f"{sum(r['state'] == 'pruned' for r in rows)} pruned)")
    return 0


def cmd_shifts(args) -> int:
    if args.model:
        model = load_model(args.model)
        region = (shifts.fit_competence(args.competence_from, model.params, args.runs_dir, args.data_dir,
                                        progress=True) if args.competence_from else None)
        grid = shifts.score_grid([model], [ood_reference(model, args.data_dir)], args.data_dir, progress=True,
                                 region=region)
        grid["flag"] = shifts.flag_summary(grid)
        if region is not None:
            grid["competence"] = {**region, **shifts.flag_summary(grid, "competence_flagged")}
        grid["grid"] = shifts.grid_table()
        if args.out:
            write_json(Path(args.out), grid)
    else:
        grid = shifts.grid_of_study(args.profile, args.runs_dir, args.data_dir)
    c = grid["clean"]
    comp = lambda r: (f", competence flag {100 * r['competence_flagged']:.0f}%"  # noqa: E731
                      if r.get("competence_flagged") is not None else "")
    print(f"clean: {100 * c['accuracy']:.1f}% (flagged {100 * (c['flagged'] or 0):.1f}%{comp(c)}), {grid['images']} "
          f"images of {grid['cells']} unseen TEST cells, {grid['models']} model(s)")
    for r in grid["rows"]:
        lo, hi = r["difference_ci"]
        print(f"  {r['shift']:<20} {100 * r['accuracy']:5.1f}%  {100 * r['difference']:+5.1f} "
              f"[{100 * lo:+.1f}, {100 * hi:+.1f}]  {'within' if r['within'] else 'BEYOND'}  "
              f"flagged {100 * (r['flagged'] or 0):.0f}%{comp(r)}")
    return 0


def _study(args) -> int:
    profile = _profile_from(args)
    t = time.time()
    if profile.search and not args.scheduler:  # a lab profile: its search first (resumed; nothing once spent)
        if args.lab_trials is not None:
            profile = dataclasses.replace(profile, search={**profile.search, "max_trials": args.lab_trials})
        given = {"epochs": args.epochs, "image_size": args.image_size, "learning_rate": args.learning_rate,
                 "arch": args.arch}
        profile = fix_params(profile, {k: getattr(profile, k) for k, v in given.items() if v is not None})
        run_lab(profile, args.runs_dir, args.data_dir, jobs=args.jobs)
        profile, chosen = with_pick(profile, args.runs_dir)  # the final runs train the lab's pick
        print(f"lab {profile.name}: the final runs use " + (
            f"trial {chosen['trial']}'s design (mean {100 * chosen['value']:.1f}% over its folds): "
            f"{chosen['choices']}" if chosen else "the profile's design (no candidate has finished every fold)"))
    rec = run_study(profile, args.runs_dir, args.data_dir, reuse=args.reuse, force=args.force, jobs=args.jobs,
                    scheduler=args.scheduler, gpus_per_run=args.gpus_per_run)
    print(f"study {profile.name}: {len(rec['runs'])} runs in {time.time() - t:.0f} s")
    elsewhere = [e["run_name"] for e in rec["runs"] if e.get("was_held_by") and e["action"] == "reuse"]
    if elsewhere:
        print(f"{len(elsewhere)} run(s) were trained by another process on the same runs folder: "
              f"{', '.join(elsewhere)}")
    if rec.get("rescore_error"):
        print(f"note: the 2020 models were not re-scored: {rec['rescore_error']}")
    status = 0
    if rec["failed"]:
        print(f"{len(rec['failed'])} run(s) FAILED: {', '.join(rec['failed'])}", file=sys.stderr)
        status = 1
    if rec.get("write_error"):
        print(f"error: the study's summary was not written: {rec['write_error']}", file=sys.stderr)
        status = 1
    return status


def cmd_figures(args) -> int:
    figs = build_all(args.profile, args.runs_dir, data_dir=args.data_dir)
    print(f"{len(figs)} figures in {figures_dir(args.profile)}")
    return 0


def cmd_report(args) -> int:
    r = build_report(args.profile, args.runs_dir, pdf=not args.no_pdf)
    print(f"report: {r['html']}")
    if r["pdf"]:
        print(f"report: {r['pdf']}")
    elif not args.no_pdf:
        print(f"PDF not written: {r['pdf_error']}", file=sys.stderr)
        return 1
    if getattr(args, "ship", False):
        for path in ship_report(args.profile):
            print(f"shipped: {path}")
    return 0


def cmd_all(args) -> int:
    t = time.time()
    try:
        status = _study(args)
    except DataError as e:  # no dataset: no run, and no figures or report of nothing
        print(f"error: {e}", file=sys.stderr)
        return 1
    profile = get_profile(args.profile)
    if profile.search and status == 0:  # a lab profile: its final models on the shift grid, for the report
        try:
            shifts.grid_of_study(profile.name, args.runs_dir, args.data_dir,
                                 per_cell=args.grid_per_cell if args.grid_per_cell is not None else shifts.PER_CELL,
                                 competence_folds=args.competence_folds)
        except DataError as e:  # final runs imported from an export keep no models: the report goes without it
            print(f"note: the shift grid was not scored: {e}", file=sys.stderr)
    cmd_figures(args)
    status = max(status, cmd_report(args))
    print(f"done in {time.time() - t:.0f} s")
    return status


def cmd_download(args) -> int:
    target = Path(args.data_dir) if args.data_dir else default_data_dir()
    print(f"downloading into {target} ({args.url or args.source}); nothing else is ever downloaded")
    images = download(target, args.source, url=args.url, archive=Path(args.archive) if args.archive else None,
                      digest=args.sha256, keep_archive=args.keep_archive)
    print(f"dataset ready: {images}")
    return 0


def cmd_reevaluate(args) -> int:
    n = reevaluate_profile(profile_dir(args.profile, args.runs_dir), data_dir=args.data_dir, force=args.force)
    summarize(args.profile, args.runs_dir)
    print(f"{n} run(s) re-evaluated in {profile_dir(args.profile, args.runs_dir)}")
    return 0


def cmd_predict(args) -> int:
    paths = list(args.paths)
    model = args.model
    if model is None and len(paths) > 1 and is_model_path(paths[0]):
        model, paths = paths[0], paths[1:]
    frame = predict_files(paths, model, data_dir=args.data_dir)
    failed = frame[frame["error"] != ""]
    if args.csv == "-":
        frame.to_csv(sys.stdout, index=False, float_format="%.6f")
    elif args.csv:
        write_csv(args.csv, frame)
        print(f"{len(frame) - len(failed)} image(s) classified -> {args.csv}", file=sys.stderr)
    else:
        print(f"model: {frame.attrs['model']}")
        print(format_table(frame))
        print(DISCLAIMER)
    for r in failed.itertuples():
        print(f"error: {r.file}: {r.error}", file=sys.stderr)
    return 1 if len(failed) else 0


def cmd_ship(args) -> int:
    if args.run:
        run = Path(args.run)
    else:
        final = load_study(args.profile, args.runs_dir, check_current=False).finished()
        main = final[final["seed"] == args.seed]
        if main.empty:
            raise DataError(f"no finished main run with seed {args.seed} in profile {args.profile}: run "
                            f"`make report PROFILE={args.profile}` first, or pass --run.")
        run = Path(main.iloc[0]["run_dir"])
    dest = ship_model(run, force=args.force, data_dir=args.data_dir)
    print(f"shipped {run} -> {dest}")
    return 0


def cmd_export(args) -> int:
    dest = Path(args.to) if args.to else RESULTS
    written = export_study(args.profile, dest, args.runs_dir)
    print(f"{len(written)} file(s) exported to {dest / args.profile} "
          f"({sum(p.stat().st_size for p in written) / 2**20:.1f} MB)")
    return 0


def cmd_migrate(args) -> int:
    folder = Path(args.folder) if args.folder else runs_root()
    moved = migrate(folder)
    left = legacy_folders(folder)
    print(f"{len(moved)} run folder(s) renamed under {folder}" +
          (f"; {len(left)} left as they were (named above)" if left else "; every run is up to date"))
    return 1 if left else 0


def cmd_readme(args) -> int:
    results = Path(args.results) if args.results else SHIPPED_RESULTS
    if not results.exists():
        raise WBCError(f"{results} does not exist: run `make report` first (it writes results.json).")
    current = update_readme(results, check=args.check)
    print("README findings: " + ("current" if current else ("OUT OF DATE" if args.check else "rewritten")))
    return 0 if current or not args.check else 1


def cmd_summary(args) -> int:
    f = summary_frame(args.profile, args.runs_dir)
    cols = ["run_name", "status", "unseen_accuracy", "unseen_accuracy_lo", "unseen_accuracy_hi", "test_accuracy",
            "unseen_cell_accuracy", "paper_metric_test", "collapsed", "top_class_share", "train_seconds"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f[cols].to_string(index=False))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except WBCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or unwritable folder: one line, what to do
        disk = e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM) and e.filename
        print(f"error: {resource_message(e) if disk else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; unfinished ones resume when started again", file=sys.stderr)
        return 130
