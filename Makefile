# Antex: `make run` serves the gateway, `make test` runs the tests, `make bench` the benchmarks
# and the soak run. Each installs what it needs on first use and skips what is already there:
#   .venv                      Antex and its Python dependencies (again when pyproject.toml changes)
#   Debian packages            for make test: chromium, nodejs/npm, postgresql (tests/tools/system-packages.sh)
#   tests/tools/node_modules   for make test: the pinned Codex CLI (npm ci from the checked-in lock file)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TOOLS  := tests/tools
NPM_STAMP := $(TOOLS)/node_modules/.installed

.PHONY: run test bench venv system-packages floors clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

system-packages:
	@sh $(TOOLS)/system-packages.sh

$(NPM_STAMP): $(TOOLS)/package.json $(TOOLS)/package-lock.json
	npm ci --prefix $(TOOLS) --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

run: venv
	$(BIN)/antex serve

test: system-packages venv $(NPM_STAMP)
	$(BIN)/python -m pytest

bench: venv
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.soak

# The lowest versions pyproject.toml declares, installed exactly in a scratch venv, pass the suite
# too (the README says which were checked last).
floors: system-packages $(NPM_STAMP)
	rm -rf .venv-floors
	$(PYTHON) -m venv .venv-floors
	$(PYTHON) $(TOOLS)/floors.py > .venv-floors/constraints.txt
	.venv-floors/bin/python -m pip install --quiet -c .venv-floors/constraints.txt -e '.[test,fast]'
	.venv-floors/bin/python -m pip list --format=freeze > .venv-floors/installed.txt
	.venv-floors/bin/python -m pytest -p no:cacheprovider

clean:
	rm -rf $(VENV) .venv-floors $(TOOLS)/node_modules build dist *.egg-info .pytest_cache
