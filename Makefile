# featurelib developer commands. `make demo` and `make test` work on a fresh machine with Python 3.11:
# they create .venv and install the project (with the dev extra) on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPO ?= feature_repo
DEMO_ROW := [{"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228", "scheduled_departure": "2014-01-02T10:30:00", "distance": 1400}]

.PHONY: help install demo test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install featurelib with the dev extra

demo: $(STAMP) ## data, training set, feast apply, materialize, stream new flights, online read
	$(VENV)/bin/featurelib demo-data --repo $(REPO)
	$(VENV)/bin/featurelib training-set --repo $(REPO) --service flight_delay \
		--spine $(REPO)/data/spine.parquet --out $(REPO)/data/training_set.parquet
	cd $(REPO) && ../$(VENV)/bin/feast apply
	$(VENV)/bin/featurelib materialize 1970-01-01T00:00:00 2013-12-31T23:59:59 --repo $(REPO)
	$(VENV)/bin/featurelib demo-stream --repo $(REPO) --count 500
	$(VENV)/bin/featurelib stream --repo $(REPO) --source flights --stream flights:events \
		--group demo --consumer demo-1 --idle-exit 2 --now 2014-01-02T10:00:00
	$(VENV)/bin/featurelib get-online --repo $(REPO) --service flight_delay \
		--at 2014-01-02T10:00:00 --rows '$(DEMO_ROW)'

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

clean: ## remove the virtualenv and generated data
	rm -rf $(VENV) $(REPO)/data
