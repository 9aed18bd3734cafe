# Entry points for a newcomer: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-postgres lint format bench fuzz clean help

help:
	@echo "make run            set up, migrate, load the demo and serve on http://$(HOST):$(PORT)"
	@echo "make test           run the whole test suite (SQLite; set CIT_TEST_DATABASE_URL for PostgreSQL)"
	@echo "make test-postgres  run the suite on postgresql://postgres@127.0.0.1:5432/test"
	@echo "make lint           ruff and mypy"
	@echo "make bench          benchmarks (see bench/README.md)"
	@echo "make fuzz           schemathesis --checks all against the OpenAPI document, as each role"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The environment is rebuilt when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

# Links the service prints and hands out point at where `make run` serves, unless set otherwise.
run: export CIT_PUBLIC_BASE_URL ?= http://$(HOST):$(PORT)
run: $(VENV)/.installed-run
	$(BIN)/cit db upgrade
	$(BIN)/cit demo
	$(BIN)/cit serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: $(VENV)/.installed-dev
	CIT_TEST_DATABASE_URL=$${CIT_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.suggest_throughput
	$(BIN)/python -m bench.worker_throughput
	$(BIN)/python -m bench.learning_curve
	$(BIN)/python -m bench.reports_scale
	$(BIN)/python -m bench.workbench_pages

fuzz: $(VENV)/.installed-dev
	.ci/fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
