# The two commands of the README. Both create (or reuse) .venv at the repository root.
SHELL := /bin/bash
VENV := .venv/bin
export HF_HUB_OFFLINE := 1
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup report test lint bench

setup:
	@bash scripts/setup.sh

## Set up, then run the attention-sinks analysis on the default bundled model (reports/gemma-3-270m/).
report: setup
	$(VENV)/interp run attention-sinks --model gemma-3-270m

## Set up, then run the whole test suite (unit + integration on the bundled real models) and ruff.
test: export INTERP_REQUIRE_MODELS := 1
test: setup
	$(VENV)/ruff check interp analyses tests benchmarks
	$(VENV)/python -m pytest -q --durations=15 tests

lint: setup
	$(VENV)/ruff check interp analyses tests benchmarks

## Benchmarks in quick mode (each prints RESULT lines).
bench: setup
	for b in benchmarks/bench_*.py; do $(VENV)/python $$b --quick || exit 1; done
