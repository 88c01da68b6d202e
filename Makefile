# The two commands of the README. Both create (or reuse) .venv and .venv-tl4 at the repository root.
SHELL := /bin/bash
VENV := .venv/bin
VENV_TL4 := .venv-tl4/bin
export HF_HUB_OFFLINE := 1
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup report test test-unit test-tl4 lint bench

setup:
	@bash scripts/setup.sh

## Set up, then run the attention-sinks analysis on the default bundled model (reports/gemma-3-270m/).
report: setup
	$(VENV)/interp run attention-sinks --model gemma-3-270m

## Set up, then run ruff, basedpyright (type check) and the whole test suite: the unit suite once per backend,
## the unit suite's bridge half again under transformer-lens 4, and the integration tests on the bundled real models.
test: export INTERP_REQUIRE_MODELS := 1
test: setup
	$(VENV)/ruff check interp analyses tests benchmarks
	$(VENV)/basedpyright
	$(VENV)/python -m pytest -q --durations=10 tests/unit --backend hooked
	$(VENV)/python -m pytest -q --durations=10 tests/unit --backend bridge
	$(VENV_TL4)/python -m pytest -q --durations=5 tests/unit --backend bridge
	$(VENV)/python -m pytest -q --durations=15 tests/integration

lint: setup
	$(VENV)/ruff check interp analyses tests benchmarks

## Benchmarks in quick mode (each prints RESULT lines).
bench: setup
	for b in benchmarks/bench_*.py; do $(VENV)/python $$b --quick || exit 1; done
