# featurelib developer commands. `make demo` and `make test` work on a fresh machine with Python 3.11:
# they create .venv and install the project (with the dev extra) on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPO ?= feature_repo
# The demo serves the flights of this day (UTC) as live traffic: the online store holds the data
# up to DEMO_START, and the replay ingests each step's events before scoring at its end.
DEMO_START := 2013-12-30T00:00:00
DEMO_END := 2013-12-31T00:00:00

.PHONY: help install demo test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install featurelib with the dev extra

demo: $(STAMP) ## data, feast apply, train + register, materialize, serve a day of traffic, skew report
	$(VENV)/bin/featurelib demo-reset --repo $(REPO)
	$(VENV)/bin/featurelib demo-data --repo $(REPO)
	$(VENV)/bin/featurelib training-set --repo $(REPO) --service flight_delay \
		--spine $(REPO)/data/spine.parquet --out $(REPO)/data/training_set.parquet
	cd $(REPO) && ../$(VENV)/bin/feast apply
	$(VENV)/bin/featurelib train --repo $(REPO) --service flight_delay --label is_delayed \
		--spine $(REPO)/data/spine.parquet --training-set $(REPO)/data/training_set.parquet \
		--model flight_delay --champion xgboost --challenger sklearn
	$(VENV)/bin/featurelib materialize 1970-01-01T00:00:00 $(DEMO_START) --repo $(REPO)
	$(VENV)/bin/featurelib demo-serve --repo $(REPO) --start $(DEMO_START) --end $(DEMO_END)
	$(VENV)/bin/featurelib skew-report --repo $(REPO) --service flight_delay --since 24h \
		--fail-on mismatch,expectations

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) ## run the benchmarks (prints ratios against anchors measured in the same run)
	$(PY) benchmarks/offline_pit.py
	$(PY) benchmarks/online.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/skew.py
	$(PY) benchmarks/skew_replay.py

clean: ## remove the virtualenv and generated data
	rm -rf $(VENV) $(REPO)/data
