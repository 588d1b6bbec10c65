# Targets that developers and CI jobs call. `make run` and `make test` work on a new machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHIPIT := $(BIN)/shipit
STAMP := $(VENV)/.installed

.PHONY: venv env engines engines-down test-containerd run build smoke push ship stop doctor config check help docs test test-unit reliability bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Engine, registry tools and the local nginx base image (installed and started when missing).
env:
	bash scripts/testenv.sh

# Two more engines for the tests (needs root): a containerd-image-store engine (Docker 26) at
# unix:///run/shipit-ctrd.sock in the network namespace shipit-ctrd, and a remote engine at
# tcp://10.251.0.2:2375 and, with TLS, :2376. Does nothing when they are up already.
engines: venv env
	PYTHON=$(BIN)/python bash scripts/engines.sh up all

engines-down:
	bash scripts/engines.sh down all

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

# docs/settings.md, after a change to a setting's definition in shipit/config.py.
docs: venv
	$(BIN)/python -m shipit.settings_reference > docs/settings.md

# CI runs this: the whole suite on the classic engine (the remote-engine tests included), then
# the engine tests again on the containerd image store engine.
test: venv env engines
	$(BIN)/pytest -p no:cacheprovider tests
	$(MAKE) --no-print-directory test-containerd

# The tests that drive the engine, on Docker 26 with the containerd image store. They run in
# that engine's network namespace: what it publishes, and the registries and moto_server the
# tests start, are reachable only there. The reliability table stays the classic run's.
# shipit writes the image itself there from a base pulled from a registry by digest (several
# platforms, another platform); tests/test_both_stores.py, in the classic run, ships one commit
# from both engines.
CONTAINERD_TESTS := tests/test_local_pipeline.py tests/test_publish.py tests/test_faults.py \
	tests/test_security.py tests/test_publish_latest.py tests/test_ship_reuse.py \
	tests/test_ecr_iam.py tests/test_races.py tests/test_interrupt.py tests/test_platform_base.py \
	tests/test_platform_build.py tests/test_signing_cosign.py \
	tests/test_reproducible.py::test_two_fresh_clones_ship_the_same_index_of_two_platforms
test-containerd: venv env engines
	bash scripts/engines.sh exec containerd $(BIN)/pytest -p no:cacheprovider \
		$(CONTAINERD_TESTS)

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
