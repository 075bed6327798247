"""Command line: ``python -m wbc_utils COMMAND ...`` (the Makefile only calls this).

Commands, in the order data flows:

  profiles   list the study profiles and what each trades away
  data       check the dataset, print its counts, fill the decoded-image cache
  train      train one run (what the training notebook does), without papermill
  study      run every run of a profile through the training notebook (papermill)
  figures    draw a study's figures into figures/<profile>/
  report     execute the report notebook, export report/<profile>/report.{html,pdf}
  all        study + figures + report (what `make report` runs)
  summary    print a study's summary.csv as a table
  download   fetch the dataset, only when asked (verified, extracted safely)
  reevaluate recompute finished runs' metrics from their saved predictions
  slides     derive each image's original slide and the same-cell clusters (the shipped mapping)
  readme     rewrite the README's findings block from the shipped report's results.json

Every command takes --data-dir (else WBC_DATA_DIR, else data/blood-cells/) and
--runs-dir (else WBC_RUNS_DIR, else runs/). Exit status: 0 on success, 1 when
some runs failed or export was incomplete, 2 on bad input.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from .errors import WBCError
from .params import ARCHS, PROFILES, VALIDATIONS
from .slides import add_parser as add_slides_parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="dataset root (default: $WBC_DATA_DIR, else data/blood-cells/)")
    p.add_argument("--runs-dir", default=None, help="where studies are written (default: $WBC_RUNS_DIR, else runs/)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", help=f"{' | '.join(PROFILES)} (default: quick)")
    p.add_argument("--losses", help="comma-separated subset of: crossentropy,mse,huber")
    p.add_argument("--encodings", help="comma-separated subset of: paper,onehot")
    p.add_argument("--seeds", help="seeds, e.g. 0,1,2 or 0-4")
    p.add_argument("--epochs", type=int, help="override the profile's epochs")
    p.add_argument("--image-size", help="override the image size, e.g. 120x160")
    p.add_argument("--train-subset", type=int, help="override the number of TRAIN images (0 = all)")
    p.add_argument("--validation", choices=list(VALIDATIONS),
                   help="paper: TEST as validation; grouped: held-out TRAIN cells; none: all of TRAIN, no validation")
    p.add_argument("--arch", choices=list(ARCHS), help="model: the paper's, its variants he and bn, or wbcnet")
    p.add_argument("--input-scaling", choices=["raw", "unit"], help="raw 0-255 (2020) or unit 0-1")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.001)")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "auto"])
    p.add_argument("--jobs", type=int, help="notebooks run at once (default: the profile's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reuse", action="store_true", help="keep finished runs with the same parameters")
    g.add_argument("--force", action="store_true", help="retrain runs that already finished")


def _profile_from(args):
    from .params import get_profile

    size = None
    if args.image_size:
        from .params import RunParams

        size = RunParams(image_size=args.image_size).image_size
    return get_profile(args.profile).with_overrides(
        losses=args.losses, encodings=args.encodings, seeds=args.seeds, epochs=args.epochs, image_size=size,
        train_subset=args.train_subset, validation=args.validation, arch=args.arch,
        input_scaling=args.input_scaling, learning_rate=args.learning_rate, precision=args.precision)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wbc_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profiles", help="list the study profiles")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("data", help="check the dataset and fill the image cache")
    _common(p)
    p.add_argument("--image-size", default="240x320", help="size to decode and cache (default 240x320)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train one run, without papermill")
    _common(p)
    p.add_argument("--loss", default="crossentropy")
    p.add_argument("--target-encoding", default="paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", default="48x64")
    p.add_argument("--train-subset", type=int, default=256)
    p.add_argument("--validation", default="paper")
    p.add_argument("--arch", default="paper")
    p.add_argument("--input-scaling", default="raw")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--precision", default="float32")
    p.add_argument("--profile", default="custom")
    p.add_argument("--output-dir", help="run directory (default: <runs-dir>/<profile>/<run name>)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reuse", action="store_true")
    g.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_train)

    for name, func, helptext in (("study", cmd_study, "run every run of a profile through papermill"),
                                 ("all", cmd_all, "study + figures + report")):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        _study_args(p)
        if name == "all":
            p.add_argument("--no-pdf", action="store_true", help="export HTML only")
        p.set_defaults(func=func)

    p = sub.add_parser("figures", help="draw a study's figures")
    _common(p)
    p.add_argument("--profile", default="quick")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("report", help="execute and export the report of a study")
    _common(p)
    p.add_argument("--profile", default="quick")
    p.add_argument("--no-pdf", action="store_true", help="export HTML only")
    p.set_defaults(func=cmd_report)

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

    p = sub.add_parser("reevaluate", help="recompute finished runs' metrics from their predictions (no training)")
    _common(p)
    p.add_argument("--profile", default="quick")
    p.add_argument("--force", action="store_true", help="even runs already at the current evaluation version")
    p.set_defaults(func=cmd_reevaluate)

    p = sub.add_parser("predict", help="classify image files or folders with a trained model",
                       description="Classify JPEG/PNG files or folders (searched recursively). MODEL, when given "
                       "first, is a run folder (runs/<profile>/<run>/), a shipped-model folder or a .keras file; "
                       "without it the best shipped model (models/best/) is used. Unreadable files are reported "
                       "on their own row; the others are still classified. Exit status 1 when any file failed. "
                       "Not a diagnostic tool: the models have only seen one lab's BCCD smears.")
    p.add_argument("paths", nargs="+", metavar="[MODEL] IMAGES", help="optional model, then images or folders")
    p.add_argument("--model", help="the model (instead of giving it first)")
    p.add_argument("--csv", nargs="?", const="-", metavar="FILE",
                   help="write CSV instead of a table: to FILE, or to standard output without one")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ship", help="copy a finished run's model to models/best/ for `predict` (under 5 MB)")
    _common(p)
    p.add_argument("--profile", default="best")
    p.add_argument("--seed", type=int, default=0, help="which final run to ship (decided in advance: seed 0)")
    p.add_argument("--run", help="a run folder, instead of --profile/--seed")
    p.add_argument("--force", action="store_true", help="replace a different shipped model")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("summary", help="print a study's summary table")
    _common(p)
    p.add_argument("--profile", default="quick")
    p.set_defaults(func=cmd_summary)

    add_slides_parser(sub)

    p = sub.add_parser("readme", help="rewrite the README's findings block from the shipped report's results.json")
    p.add_argument("--results", default=None, help="results.json to read (default: report/quick/results.json)")
    p.add_argument("--check", action="store_true", help="only check that the README is current (exit 1 if not)")
    p.set_defaults(func=cmd_readme)
    return parser


def cmd_profiles(args) -> int:
    from .params import PROFILES

    for p in PROFILES.values():
        runs = len(p.runs())
        print(f"{p.name:6s} {p.description}\n       {runs} runs at {p.image_size[0]}x{p.image_size[1]}, "
              f"{p.epochs} epochs, seeds {p.seeds}\n       trades: {p.trades}\n")
    return 0


def cmd_data(args) -> int:
    from .data import build_manifest, load_split
    from .params import RunParams

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
    from pathlib import Path

    from .params import RunParams
    from .study import profile_dir
    from .training import train_run

    p = RunParams(loss=args.loss, target_encoding=args.target_encoding, seed=args.seed, epochs=args.epochs,
                  batch_size=args.batch_size, image_size=args.image_size, train_subset=args.train_subset,
                  validation=args.validation, arch=args.arch, input_scaling=args.input_scaling,
                  learning_rate=args.learning_rate, precision=args.precision, profile=args.profile)
    run_dir = Path(args.output_dir) if args.output_dir else profile_dir(p.profile, args.runs_dir) / p.run_name
    m = train_run(p, run_dir, data_dir=args.data_dir, reuse=args.reuse, force=args.force)
    lo, hi = m["unseen_accuracy_ci"]
    print(f"{run_dir}: accuracy on TEST's unseen cells {m['unseen_accuracy']:.3f} [{lo:.3f}, {hi:.3f}], "
          f"all of TEST {m['test_accuracy']:.3f}, collapsed={m['collapsed']}")
    return 0


def cmd_study(args) -> int:
    from .study import run_study

    profile = _profile_from(args)
    t = time.time()
    rec = run_study(profile, args.runs_dir, args.data_dir, reuse=args.reuse, force=args.force, jobs=args.jobs)
    print(f"study {profile.name}: {len(rec['runs'])} runs in {time.time() - t:.0f} s")
    if rec.get("rescore_error"):
        print(f"note: the 2020 models were not re-scored: {rec['rescore_error']}")
    if rec["failed"]:
        print(f"{len(rec['failed'])} run(s) FAILED: {', '.join(rec['failed'])}", file=sys.stderr)
        return 1
    return 0


def cmd_figures(args) -> int:
    from .figures import build_all, figures_dir

    figs = build_all(args.profile, args.runs_dir)
    print(f"{len(figs)} figures in {figures_dir(args.profile)}")
    return 0


def cmd_report(args) -> int:
    from .report import build_report

    r = build_report(args.profile, args.runs_dir, pdf=not args.no_pdf)
    print(f"report: {r['html']}")
    if r["pdf"]:
        print(f"report: {r['pdf']}")
    elif not args.no_pdf:
        print(f"PDF not written: {r['pdf_error']}", file=sys.stderr)
        return 1
    return 0


def cmd_all(args) -> int:
    t = time.time()
    status = cmd_study(args)
    cmd_figures(args)
    status = max(status, cmd_report(args))
    print(f"done in {time.time() - t:.0f} s")
    return status


def cmd_download(args) -> int:
    from pathlib import Path

    from .data import default_data_dir
    from .download import download

    target = Path(args.data_dir) if args.data_dir else default_data_dir()
    print(f"downloading into {target} ({args.url or args.source}); nothing else is ever downloaded")
    images = download(target, args.source, url=args.url, archive=Path(args.archive) if args.archive else None,
                      digest=args.sha256, keep_archive=args.keep_archive)
    print(f"dataset ready: {images}")
    return 0


def cmd_reevaluate(args) -> int:
    from .reevaluate import reevaluate_profile
    from .study import profile_dir, summarize

    n = reevaluate_profile(profile_dir(args.profile, args.runs_dir), data_dir=args.data_dir, force=args.force)
    summarize(args.profile, args.runs_dir)
    print(f"{n} run(s) re-evaluated in {profile_dir(args.profile, args.runs_dir)}")
    return 0


def _looks_like_model(path: str) -> bool:
    from pathlib import Path

    p = Path(path).expanduser()
    return p.suffix == ".keras" or (p.is_dir() and (p / "model.keras").exists())


def cmd_predict(args) -> int:
    from .artifacts import write_csv
    from .predict import DISCLAIMER, format_table, predict_files

    paths = list(args.paths)
    model = args.model
    if model is None and len(paths) > 1 and _looks_like_model(paths[0]):
        model, paths = paths[0], paths[1:]
    frame = predict_files(paths, model)
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
    from pathlib import Path

    from .errors import DataError
    from .predict import ship_model
    from .study import summarize

    if args.run:
        run = Path(args.run)
    else:
        f = summarize(args.profile, args.runs_dir)
        main = f[(f["role"] == "main") & (f["status"] == "finished") & (f["seed"] == args.seed)]
        if main.empty:
            raise DataError(f"no finished main run with seed {args.seed} in profile {args.profile}: run "
                            f"`make report PROFILE={args.profile}` first, or pass --run.")
        run = Path(main.iloc[0]["run_dir"])
    dest = ship_model(run, force=args.force)
    print(f"shipped {run} -> {dest}")
    return 0


def cmd_readme(args) -> int:
    from pathlib import Path

    from .report import SHIPPED_RESULTS, update_readme

    results = Path(args.results) if args.results else SHIPPED_RESULTS
    if not results.exists():
        raise WBCError(f"{results} does not exist: run `make report` first (it writes results.json).")
    current = update_readme(results, check=args.check)
    print("README findings: " + ("current" if current else ("OUT OF DATE" if args.check else "rewritten")))
    return 0 if current or not args.check else 1


def cmd_summary(args) -> int:
    import pandas as pd

    from .study import summarize

    f = summarize(args.profile, args.runs_dir)
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
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; unfinished ones resume when started again", file=sys.stderr)
        return 130
