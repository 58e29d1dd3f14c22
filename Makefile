# Every target creates .venv itself on a fresh machine (torch==2.13.0 resolves to the local CPU wheel where one exists).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.strokeseg-installed
PYTEST_WORKERS ?= 2
# pytest's exit code 5 (no test collected) is a failure too, with a message that says so
NO_TEST_IS_A_FAILURE = { status=$$?; [ $$status -ne 5 ] || echo "make: pytest collected no test (markers or paths lost)" >&2; exit $$status; }

.PHONY: install demo test test-matrix lint bench clean

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

# Random order (pytest-randomly; the seed is printed at the end); --dist loadfile keeps each file on one worker.
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests || $(NO_TEST_IS_A_FAILURE)

# What .ci/run adds to `make test`: every bundle × behaviour case beyond the representative one, and the
# multi-GPU overlay of every bundle (two gloo processes on CPU).
test-matrix: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "matrix or multi_gpu" tests || $(NO_TEST_IS_A_FAILURE)

bench: $(STAMP)
	$(BIN)/strokeseg bench --variants default --repeats 1 --out bench.json

clean:
	rm -rf $(VENV) demo_out bench.json bench.md .pytest_cache .ruff_cache
