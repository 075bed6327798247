"""Every path the project reads or writes, and every ``WBC_*`` environment variable, defined once.

==========================  ==========================================  ====================================
variable                    what                                        default
==========================  ==========================================  ====================================
``WBC_DATA_DIR``            the dataset (read only, never copied)       ``data/blood-cells/``
``WBC_CACHE_DIR``           decoded-image cache (safe to delete)        ``data/cache/``
``WBC_RUNS_DIR``            studies: ``<runs>/<profile>/<run>/``        ``runs/``
``WBC_OUTPUT_DIR``          where ``figures/`` and ``report/`` go       the project folder
``WBC_ORIGINAL_DIR``        the 2020 repository's weights and logs      ``../shared/seed/original-2020``
``WBC_CHROMIUM``            the Chromium that exports PDF               the first on ``PATH``
``WBC_THREADS``             TensorFlow threads per process              all cores
``WBC_LOSS_PLUGINS``        losses of your own: modules (names or       none
                            ``.py`` paths, comma-separated) whose
                            ``LOSS_SPECS`` the loss registry adds
==========================  ==========================================  ====================================

Relative values are read from the user's working directory (:func:`absolute_env` fixes them before the
notebooks run with ``notebooks/`` as theirs). Tracked, shipped files (the reference report, the shipped
model) live apart from what ``make report`` writes, so a user's run never modifies the checkout.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

#: The project folder (the git checkout).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Data shipped inside the package (the slide mapping) and the report's export template.
RESOURCES = Path(__file__).resolve().parent / "resources"
TEMPLATES = Path(__file__).resolve().parent / "templates"
NOTEBOOKS = REPO_ROOT / "notebooks"
TRAIN_NOTEBOOK = NOTEBOOKS / "03_training.ipynb"
REPORT_NOTEBOOK = REPO_ROOT / "report" / "report.ipynb"
README = REPO_ROOT / "README.md"
#: The reports shipped with the package (tracked): ``report/shipped/<profile>/``. ``make report`` never writes here.
SHIPPED_REPORTS = REPO_ROOT / "report" / "shipped"
#: The profile whose shipped report the README quotes: the study that answers the question (``full``).
REFERENCE_PROFILE = "full"
SHIPPED_RESULTS = SHIPPED_REPORTS / REFERENCE_PROFILE / "results.json"
#: Small artifacts of studies too long to rerun here (the paper profile, trained on a GPU): tracked, read as a runs
#: folder (``--runs-dir results``), written by ``python -m wbc_utils export``.
RESULTS = REPO_ROOT / "results"
#: The model ``predict`` uses when none is given (``make ship-model`` writes it, on purpose).
SHIPPED_MODEL = REPO_ROOT / "models" / "best"

DATA_DIR = "WBC_DATA_DIR"
CACHE_DIR = "WBC_CACHE_DIR"
RUNS_DIR = "WBC_RUNS_DIR"
OUTPUT_DIR = "WBC_OUTPUT_DIR"
ORIGINAL_DIR = "WBC_ORIGINAL_DIR"
CHROMIUM = "WBC_CHROMIUM"
THREADS = "WBC_THREADS"
#: Read by :mod:`wbc_utils.registry` in every process, the study's kernels and Dask workers included (they inherit
#: the variable), so a loss of your own trains and reports like the built-in ones without editing the package.
LOSS_PLUGINS = "WBC_LOSS_PLUGINS"
#: The variables that name folders (made absolute before a study runs its notebooks).
PATH_VARIABLES = (DATA_DIR, RUNS_DIR, CACHE_DIR, OUTPUT_DIR, ORIGINAL_DIR)


def _env_path(name: str) -> Path | None:
    v = os.environ.get(name)
    return Path(v).expanduser() if v else None


def data_dir() -> Path:
    """``WBC_DATA_DIR`` if set, else ``data/blood-cells/`` in the project."""
    return _env_path(DATA_DIR) or REPO_ROOT / "data" / "blood-cells"


def data_dir_source(given=None) -> str:
    """Where the dataset path came from, for error messages."""
    return "--data-dir" if given else (DATA_DIR if os.environ.get(DATA_DIR) else "the default")


def cache_dir() -> Path:
    return _env_path(CACHE_DIR) or REPO_ROOT / "data" / "cache"


def runs_root(given=None) -> Path:
    """``given``, else ``WBC_RUNS_DIR``, else ``runs/``."""
    return Path(given).expanduser() if given else (_env_path(RUNS_DIR) or REPO_ROOT / "runs")


def profile_dir(profile: str, runs_root_=None) -> Path:
    """A study's folder: ``<runs>/<profile>/``."""
    return runs_root(runs_root_) / profile


def output_root() -> Path:
    """Where ``figures/`` and ``report/`` outputs go: ``WBC_OUTPUT_DIR``, else the project folder."""
    return _env_path(OUTPUT_DIR) or REPO_ROOT


def figures_dir(profile: str) -> Path:
    return output_root() / "figures" / profile


def report_dir(profile: str) -> Path:
    """Where ``make report`` writes a profile's report (git-ignored)."""
    return output_root() / "report" / profile


def original_dir() -> Path:
    """The 2020 repository's folder (``checkpoints/``, ``logfiles/``)."""
    return _env_path(ORIGINAL_DIR) or REPO_ROOT.parent / "shared" / "seed" / "original-2020"


def threads() -> int:
    """TensorFlow threads for this process: ``WBC_THREADS``, else every core."""
    return int(os.environ.get(THREADS, 0) or 0) or (os.cpu_count() or 1)


CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The Chromium binary for PDF export: ``WBC_CHROMIUM``, else the first found on ``PATH``."""
    env = os.environ.get(CHROMIUM)
    if env:
        return env
    for name in CHROMIUM_CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


def loss_plugins() -> list[str]:
    """The entries of ``WBC_LOSS_PLUGINS``: importable module names, or paths to ``.py`` files."""
    return [p.strip() for p in os.environ.get(LOSS_PLUGINS, "").split(",") if p.strip()]


def absolute_env() -> None:
    """Make relative path settings (and ``.py`` loss plugins) absolute, as the user meant them from their working
    directory: the notebooks run with ``notebooks/`` as theirs."""
    for name in PATH_VARIABLES:
        v = os.environ.get(name)
        if v and not os.path.isabs(os.path.expanduser(v)):
            os.environ[name] = str(Path(v).expanduser().resolve())
    plugins = loss_plugins()
    if any(p.endswith(".py") for p in plugins):
        os.environ[LOSS_PLUGINS] = ",".join(str(Path(p).expanduser().resolve()) if p.endswith(".py") else p
                                            for p in plugins)
