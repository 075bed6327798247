# The study's entry points. Every target calls `python -m wbc_utils` (see `python -m wbc_utils --help`).
# Variables: PROFILE (smoke | quick | full | pilot | collapse | best | paper, default quick), PYTHON (default python3), ARGS (extra CLI flags),
# GPU (1: install TensorFlow's CUDA build; default: 1 when nvidia-smi sees a GPU).
SHELL := /bin/bash
PROFILE ?= quick
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# Debian packages that PDF export needs (Chromium drives nbconvert's webpdf exporter; fonts for its text).
SYSTEM_PACKAGES := chromium fonts-dejavu-core poppler-utils
# GPU=1 installs TensorFlow's CUDA build (same version as the CPU pin); by default it is chosen when nvidia-smi sees a GPU.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
TF_VERSION := $(shell sed -n 's/^tensorflow-cpu==//p' requirements.txt)

.DEFAULT_GOAL := help
.PHONY: help setup lab report study figures test test-fast lint bench bench-fast ship-model readme slides notebooks-check clean-cache clean-runs

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  PROFILE=$(PROFILE) (smoke: ~1 min, quick: ~19 min on a 2-core AVX2 CPU, full: the loss study where the network learns, ~3.5 h on a 2-core AVX2 CPU, resumable across sessions; collapse: ~8 min, best: its lab's 2 h budget (resumable across sessions) + about 30 min for the final models and the shift grid, paper: the 2020 set-up, on a GPU; see python -m wbc_utils profiles)"

setup: ## create .venv, install the package and its dependencies, and the system packages PDF export needs
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -e .
	@if [ "$(GPU)" = "1" ]; then \
	  echo "NVIDIA GPU: replacing tensorflow-cpu with tensorflow[and-cuda]==$(TF_VERSION) (GPU=0 keeps the CPU build)"; \
	  $(PY) -m pip uninstall --quiet -y tensorflow-cpu && \
	  $(PY) -m pip install --quiet "tensorflow[and-cuda]==$(TF_VERSION)"; fi
	@bash tools/install_system_packages.sh $(SYSTEM_PACKAGES)
	@$(PY) -m ipykernel install --sys-prefix --name wbc --display-name "Python (wbc)" >/dev/null
	@echo "Jupyter kernel 'Python (wbc)' registered in $(VENV) (make lab opens the notebooks with it)"
	@$(PY) -c "from wbc_utils.tfenv import import_tf; tf = import_tf(); import wbc_utils; print('wbc_utils', wbc_utils.__version__, '| tensorflow', tf.__version__, '| GPUs:', len(tf.config.list_physical_devices('GPU')), '| ready')"

lab: ## open the notebooks in JupyterLab with the project's kernel, Python (wbc) (after make setup)
	@test -x $(VENV)/bin/jupyter-lab || { echo "JupyterLab is not installed in $(VENV): run make setup first"; exit 1; }
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

report: ## run the study of PROFILE (reusing finished runs), draw its figures, export report/PROFILE/report.{html,pdf}
	$(PY) -m wbc_utils all --profile $(PROFILE) --reuse $(ARGS)

study: ## run the study of PROFILE only (reusing finished runs)
	$(PY) -m wbc_utils study --profile $(PROFILE) --reuse $(ARGS)

figures: ## draw the figures of PROFILE's study into figures/PROFILE/
	$(PY) -m wbc_utils figures --profile $(PROFILE)

test: lint ## lint, then run the whole test suite, the end-to-end smoke study included
	$(PY) -m pytest -q $(ARGS)

test-fast: lint ## lint, then run the tests that train nothing
	$(PY) -m pytest -q -m "not slow and not e2e" $(ARGS)

lint: ## ruff (configured in pyproject.toml) over the package, the tests and the benchmarks
	$(PY) -m ruff check wbc_utils tests benchmarks tools

bench: ## measure speed, memory, data loading, bfloat16, parallel runs and the quick profile side by side (about an hour)
	$(PY) benchmarks/run.py --quick --bf16-study --parallel-runs $(ARGS)

bench-fast: ## the same without the memory runs and the quick profile (a few minutes)
	$(PY) benchmarks/run.py --skip-memory $(ARGS)

ship-model: ## copy the best profile's seed-0 model to models/best/ (what `predict` uses by default)
	$(PY) -m wbc_utils ship --profile best --seed 0 $(ARGS)

readme: ## rewrite the README's findings block from report/shipped/full/results.json (the reference report's numbers)
	$(PY) -m wbc_utils readme

slides: ## check the shipped slide mapping against the dataset (rebuild it with: python -m wbc_utils slides --force)
	$(PY) -m wbc_utils slides --check

notebooks-check: ## fail if a notebook is stored with outputs
	$(PY) -m pytest -q tests/test_notebooks_clean.py

clean-cache: ## delete the decoded-image cache (data/cache/)
	rm -rf data/cache

clean-runs: ## delete the runs, figures and report of PROFILE (asks first)
	@read -p "Delete runs/$(PROFILE), figures/$(PROFILE) and report/$(PROFILE)? [y/N] " a && [ "$$a" = y ] && \
	  rm -rf runs/$(PROFILE) figures/$(PROFILE) report/$(PROFILE) || echo "kept"
