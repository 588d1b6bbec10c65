# Targets that developers and CI jobs call. `make run` and `make test` work on a new machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHIPIT := $(BIN)/shipit
STAMP := $(VENV)/.installed

.PHONY: venv env run build smoke push ship stop doctor config check help test test-unit reliability bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Engine, registry tools and the local nginx base image (installed and started when missing).
env:
	bash scripts/testenv.sh

# Build, run and smoke-test the bundled example site on 127.0.0.1:8080.
run: venv env
	bash scripts/run-example.sh

build: venv
	$(SHIPIT) build

smoke: venv
	$(SHIPIT) smoke

push: venv
	$(SHIPIT) push

ship: venv
	$(SHIPIT) ship

stop: venv
	$(SHIPIT) stop

doctor: venv
	$(SHIPIT) doctor

config: venv
	$(SHIPIT) config

check: venv
	$(BIN)/ruff check shipit tests bench harness
	$(BIN)/ruff format --check shipit tests bench harness
	$(BIN)/mypy

# The stored `shipit --help` (shipit/help.txt), after a change to commands or their help.
help: venv
	$(BIN)/python -c 'import pathlib, shipit.cli as c; pathlib.Path("shipit/help.txt").write_text(c.top_level_help())'

test: venv env
	$(BIN)/pytest -p no:cacheprovider tests

# The tests that need no Docker engine: DOCKER_HOST points nowhere, so one that does fails.
test-unit: venv
	DOCKER_HOST=tcp://127.0.0.1:9 $(BIN)/pytest -p no:cacheprovider -m "not engine" tests

# The whole suite, writing what each fault and bad-input case did into docs/RELIABILITY.md.
reliability: venv env
	$(BIN)/pytest -p no:cacheprovider --reliability-doc docs/RELIABILITY.md tests

bench: venv env
	$(BIN)/python -m bench.run

clean:
	-$(SHIPIT) stop
	rm -rf .shipit build dist *.egg-info
