# echo-keras: `make run` and `make test` do all set-up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
RUN_DIR ?= runs/echo

.PHONY: help install run test readme lint format bench variants clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools warns at every editable install that a folder named like the package in
	@# the working directory could shadow it: that folder is the package itself here.
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install echo-keras with its dev tools (only when needed)

$(BENCH_STAMP): $(STAMP)
	@# The `bench` extra (PyTorch, for the char-rnn comparison): for `make bench` alone.
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

run: install ## Train the tutorial's configuration into runs/echo, evaluate it and plot it
	$(BIN)/echo-keras train --run-dir $(RUN_DIR) --overwrite
	$(BIN)/echo-keras evaluate --run-dir $(RUN_DIR)
	$(BIN)/echo-keras plot --run-dir $(RUN_DIR)

test: install ## Run the test suite on two cores (pytest-xdist; slow tests included)
	$(BIN)/python -m pytest

readme: install ## Run every README example as written, in order, on a fresh copy (minutes; SKIP="make test" leaves one out)
	$(BIN)/python -m tests.readme_examples $(if $(SKIP),--skip "$(SKIP)")

lint: install ## Check style with ruff
	$(BIN)/ruff check echo_keras tests bench
	$(BIN)/ruff format --check echo_keras tests bench

format: install ## Reformat with ruff
	$(BIN)/ruff format echo_keras tests bench
	$(BIN)/ruff check --fix echo_keras tests bench

bench: $(BENCH_STAMP) ## Time training against a plain model.fit baseline, predict, the export's checks, the sweep, char-rnn against PyTorch and its memory; print the tables
	$(BIN)/python bench/run.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/char_rnn.py
	$(BIN)/python bench/char_memory.py

variants: install ## Train and evaluate every variant on the tutorial's task; print the table
	$(BIN)/python bench/variants.py

clean: ## Remove the virtual environment and runs
	rm -rf $(VENV) runs
