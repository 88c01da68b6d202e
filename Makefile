# The two commands of the README. Both create (or reuse) .venv and .venv-tl4 at the repository root.
SHELL := /bin/bash
VENV := .venv/bin
VENV_TL4 := .venv-tl4/bin
export HF_HUB_OFFLINE := 1
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1
# mkdocs-material prints a banner about MkDocs 2.0 on every build and serve.
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup report test test-unit test-tl4 lint bench docs

# Unit tests whose subject does not depend on the model backend (the CLI's argument handling and exit codes, the
# viewer in a browser, the docs site, packaging, the prose corpus, file modes, notebook hygiene): they run once,
# in the default backend's pass, and are skipped in the other backends' passes.
ONCE := $(addprefix --ignore=tests/unit/,test_cli.py test_viewer.py test_docs_site.py test_packaging.py test_prose.py \
        test_file_modes.py test_notebooks_stripped.py test_exports.py test_remote.py)

setup:
	@bash scripts/setup.sh

## Set up, then run the attention-sinks analysis on the default bundled model (reports/gemma-3-270m/).
report: setup
	$(VENV)/interp run attention-sinks --model gemma-3-270m

## Set up, then run ruff, basedpyright (type check), the docs build (strict: a broken link or reference fails),
## the docstring examples as doctests (tiny models), and the whole test suite: the unit suite once per backend
## (bridge, hooked, nnsight; the backend-independent files once),
## the unit suite's bridge half again under transformer-lens 4, the integration tests on the bundled real models,
## and the example notebooks run top to bottom (nbmake).
test: export INTERP_REQUIRE_MODELS := 1
test: setup
	$(VENV)/ruff check interp analyses tests benchmarks
	$(VENV)/basedpyright --project pyproject.toml
	$(VENV)/mkdocs build --strict --site-dir site
	$(VENV)/python -m pytest -q --doctest-modules interp analyses -p no:cacheprovider
	$(VENV)/python -m pytest -q --durations=10 tests/unit --backend bridge
	$(VENV)/python -m pytest -q --durations=10 tests/unit --backend hooked $(ONCE)
	$(VENV)/python -m pytest -q --durations=5 tests/unit --backend nnsight $(ONCE)
	$(VENV_TL4)/python -m pytest -q --durations=5 tests/unit --backend bridge $(ONCE)
	$(VENV)/python -m pytest -q --durations=15 tests/integration
	$(VENV)/python -m pytest -q --durations=3 --nbmake --nbmake-timeout=600 examples/

## Set up, then serve the documentation site with live reload at http://127.0.0.1:8000.
docs: setup
	$(VENV)/mkdocs serve

lint: setup
	$(VENV)/ruff check interp analyses tests benchmarks

## Benchmarks in quick mode (each prints RESULT lines).
bench: setup
	for b in benchmarks/bench_*.py; do $(VENV)/python $$b --quick || exit 1; done
