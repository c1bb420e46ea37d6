# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv from PyPI on first use (python3 >= 3.11 with venv is all they need).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Wheels of everything a fresh venv needs to install rlm-core, rlm-conformance and a plugin
# without an index (tests/test_example_plugin.py: pip install --no-index --find-links).
WHEELHOUSE := $(VENV)/wheelhouse
# Cloud plugins' SDKs too (tests/test_cloud_plugins_install.py); resolved with `.` so that
# the local rlm-core satisfies their rlm-core requirement (the public one never comes in).
CLOUD_PLUGINS := $(wildcard plugins/rlm-modal plugins/rlm-e2b plugins/rlm-daytona plugins/rlm-prime)
FILL_WHEELHOUSE = $(BIN)/python -m pip download --quiet --dest $(WHEELHOUSE) \
	. ./conformance_tests $(addprefix ./,$(CLOUD_PLUGINS)) setuptools wheel
# The root is the workspace root: every plugin and the conformance suite are installed
# editable next to the core, one plain `pip install -e` each.
MEMBERS := $(dir $(wildcard plugins/*/pyproject.toml conformance_tests/pyproject.toml))
# Each member's import package (plugins/rlm-x/rlm_x, conformance_tests/rlm_conformance, and
# the example plugin of the plugin-author guide).
MEMBER_PACKAGES := $(filter-out %.egg-info,$(wildcard plugins/*/rlm_* conformance_tests/rlm_conformance docs/examples/*/rlm_*))
LINTED := rlm_core tests bench proto .ci conftest.py $(wildcard plugins conformance_tests docs/examples)

.PHONY: demo test lint typecheck pytest conformance proto check-proto chromium bubblewrap podman clean wheelhouse sdk-newest sdk-floor

$(STAMP): pyproject.toml $(addsuffix pyproject.toml,$(MEMBERS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(addprefix -e ,$(MEMBERS))
	$(FILL_WHEELHOUSE)
	touch $(STAMP)

## Fill .venv/wheelhouse again (the venv set-up does it once).
wheelhouse: $(STAMP)
	$(FILL_WHEELHOUSE)

## Run the demo: a real RLM run over a bundled long document (scripted LM without OPENAI_API_KEY).
demo: $(STAMP)
	$(BIN)/rlm demo

## Lint, type-check and run the test suite, then the conformance suite on each environment.
test: lint typecheck check-proto pytest sdk-newest conformance

## Regenerate rlm_core/_proto from proto/rlm/v1/*.proto.
proto: $(STAMP)
	$(BIN)/python proto/generate.py

check-proto: $(STAMP)
	$(BIN)/python proto/generate.py --check

## Ruff, and the import-linter layering contracts of pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports --no-cache

## mypy --strict on the core, and on each plugin and the conformance suite against the
## installed rlm_core (each package on its own, as its author would run it).
typecheck: $(STAMP)
	$(BIN)/mypy --strict rlm_core
	@set -e; for pkg in $(MEMBER_PACKAGES); do \
		echo "mypy --strict $$pkg"; $(BIN)/mypy --strict $$pkg; done

# pytest-xdist workers: two per core. Most of the suite's time is spent waiting (on agents,
# sandboxes, fakes' timers and heartbeats), not computing, so a second worker per core
# keeps the cores busy.
export PYTEST_XDIST_AUTO_NUM_WORKERS ?= $(shell $(PYTHON) -c "import os; print(2 * len(os.sched_getaffinity(0)))")

## The tests, in two worker processes per core (pytest-xdist).
pytest: $(STAMP) chromium bubblewrap podman
	$(BIN)/pytest -q -n auto

## The conformance suite on every environment that runs here, each run ending with its
## summary (tests run, skipped by capability, capabilities verified); pytest-xdist workers
## as for the tests.
conformance: $(STAMP) bubblewrap
	$(BIN)/rlm conformance local
	$(BIN)/rlm conformance subprocess -- -n auto
	$(BIN)/rlm conformance loopback --kwargs '{"carrier": "stdio", "framing": "base64", "tls": true}' -- -n auto
	@if command -v bwrap >/dev/null 2>&1 || [ "$${CI:-}" = true ]; then \
		$(BIN)/rlm conformance bwrap -- -n auto; \
	else \
		echo "bwrap is not installed: rlm conformance bwrap does not run here"; \
	fi

## .venv holds every plugin resolved together, as one `pip install` of them all does. A
## plugin whose SDK that holds below the newest release it admits on its own (e2b beside
## prime-sandboxes) is tested again with the newest, in a venv of its own under .venv-newest/.
sdk-newest: $(STAMP)
	$(BIN)/python .ci/sdk_range.py newest

## Each plugin's tests against the oldest SDK release its pyproject admits: one venv per
## plugin under .venv-floor/.
sdk-floor: $(STAMP)
	$(BIN)/python .ci/sdk_range.py floor

# $(call debian-packages,COMMANDS,PACKAGES,WHAT): install the Debian PACKAGES when one of
# COMMANDS is missing and this is root with apt-get; otherwise say that WHAT will skip (the
# tests fail instead under CI=true).
define debian-packages
	@missing=; for c in $(1); do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	if [ -z "$$missing" ]; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing the Debian packages $(2) for $(3)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y -qq $(2) >/dev/null 2>&1 || \
		  { apt-get update -qq >/dev/null 2>&1 && \
		    apt-get install -y -qq $(2) >/dev/null 2>&1; }; } || \
		echo "$(2) could not be installed; $(3) will skip (and fail under CI=true)"; \
	else \
		echo "$(2) missing and cannot be installed here (needs root and apt-get);" \
			"$(3) will skip (and fail under CI=true)"; \
	fi
endef

## Headless Chromium for the trajectory viewer's browser test.
chromium:
	$(call debian-packages,chromium,chromium,the viewer's browser test)

## Podman and runc for the rlm-docker tests (they start podman's Docker-API service and
## build their image themselves).
podman:
	$(call debian-packages,podman runc,podman runc,the rlm-docker tests)

## bubblewrap for the bwrap environment's tests and its conformance run.
bubblewrap:
	$(call debian-packages,bwrap,bubblewrap,the bwrap tests)

## Benchmark rlm-core against rlms 0.1.3 side by side (writes bench/results/latest.md).
## `make bench BENCH_ARGS="--only 2 --quick"` re-measures one workload fast.
RLMS_VENV  := bench/.venv-rlms
RLMS_STAMP := $(RLMS_VENV)/.installed
.PHONY: bench

$(RLMS_STAMP):
	$(PYTHON) -m venv $(RLMS_VENV)
	$(RLMS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RLMS_VENV)/bin/python -m pip install --quiet 'rlms[ipython]==0.1.3'
	touch $(RLMS_STAMP)

bench: $(STAMP) $(RLMS_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-floor .venv-newest .pytest_cache .mypy_cache .ruff_cache *.egg-info
