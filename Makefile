# Antex: `make run` serves the gateway, `make test` runs the tests, `make bench` the benchmarks
# and the soak run.
# Each creates .venv and installs what it needs on first use (and again when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

run: venv
	$(BIN)/antex serve

test: venv
	$(BIN)/python -m pytest

bench: venv
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
