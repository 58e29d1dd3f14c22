# Every target creates .venv itself on a fresh machine (torch==2.13.0 resolves to the local CPU wheel where one exists).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.strokeseg-installed
PYTEST_WORKERS ?= 2

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/strokeseg demo --out demo_out

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

bench: $(STAMP)
	$(BIN)/strokeseg bench --variants default --repeats 1 --out bench.json

clean:
	rm -rf $(VENV) demo_out bench.json bench.md .pytest_cache .ruff_cache
