# The two commands a newcomer needs: `make run` and `make test`.
# Both set everything up first; set-up steps are skipped when nothing changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
FIREBASE_DIR := infra/local/firebase
STANDIN_VENV := .venv-standin
STANDIN_DIR := infra/terraform-standin

.PHONY: setup setup-run run test test-unit fuzz lint audit checkov bench bench-quick lock prerequisites browser clean

# `make run` needs only what the running stack uses; the tests add checkov and a browser.
setup-run: $(VENV)/.installed $(FIREBASE_DIR)/node_modules/.installed prerequisites
setup: setup-run $(CHECKOV_VENV)/.installed $(STANDIN_VENV)/.installed $(STANDIN_DIR)/node_modules/.installed browser

$(VENV)/.installed: requirements.txt functions/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed (set PYTHON=...)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(CHECKOV_VENV)/.installed: infra/requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r infra/requirements-checkov.txt
	@touch $@

# Without its optional dependencies: the Auth emulator needs none, and re2's native build took
# most of a minute.
$(FIREBASE_DIR)/node_modules/.installed: $(FIREBASE_DIR)/package.json $(FIREBASE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the Auth emulator: apt-get install nodejs npm" >&2; exit 2; }
	cd $(FIREBASE_DIR) && npm ci --no-audit --no-fund --loglevel=error --omit=optional
	@touch $@

# The offline terraform plan test: provider schemas from the pinned @cdktf packages, served by a stand-in provider.
$(STANDIN_VENV)/.installed: infra/requirements-standin.txt
	$(PYTHON) -m venv $(STANDIN_VENV)
	$(STANDIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r infra/requirements-standin.txt
	@touch $@

# Only their jsii assemblies are read: their peer dependency (cdktf, some 600 packages) is left out.
$(STANDIN_DIR)/node_modules/.installed: $(STANDIN_DIR)/package.json $(STANDIN_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the provider schemas: apt-get install nodejs npm" >&2; exit 2; }
	cd $(STANDIN_DIR) && npm ci --no-audit --no-fund --loglevel=error --ignore-scripts --omit=peer
	@touch $@

prerequisites: $(VENV)/.installed $(FIREBASE_DIR)/node_modules/.installed
	@$(PY) infra/local/local_stack.py --check

# Headless Chromium and its driver, for the notices page tests (Debian's packages; needs root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	  || { echo "could not install chromium: apt-get install chromium chromium-driver" >&2; exit 2; }; }

# Set-up steps are independent of one another: they run side by side (-j), which halves a
# fresh machine's set-up time.
SETUP_JOBS ?= 4

run:
	@$(MAKE) --no-print-directory -j$(SETUP_JOBS) setup-run
	$(PY) infra/local/local_stack.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	terraform fmt -check -recursive terraform

# Three pytest runs side by side, each on ports of its own, since most tests wait on emulators
# and functions rather than on the two cores (about five minutes less than one after another):
# - the main run: the in-process and end-to-end tiers, on the test stack (TEST_PORT_OFFSET);
# - SIDE: unit, integration, infra, and the outage suite, which stops and starts its backends,
#   on a stack of their own (TEST_PORT_OFFSET + 5000);
# - BESIDE: test_make_run.py, which starts whole `make run` stacks (TEST_PORT_OFFSET + 10000).
# The three sets of ports do not meet, and stay below 32768, where Linux starts handing out
# ports to outgoing connections.
# The side runs' output is printed when all are done. Any failing fails the run. Emulators
# exported for reuse (README) serve the main run only: the side run resets and stops its own.
EMULATOR_HOSTS := FIRESTORE_EMULATOR_HOST PUBSUB_EMULATOR_HOST FIREBASE_AUTH_EMULATOR_HOST STORAGE_EMULATOR_HOST
BESIDE := tests/e2e/test_make_run.py
OUTAGES := tests/e2e/test_backend_outage.py
SIDE := tests/unit tests/integration tests/infra $(OUTAGES)

test:
	@$(MAKE) --no-print-directory -j$(SETUP_JOBS) setup
	@$(MAKE) --no-print-directory lint
	@mkdir -p .local
	@offset=$${TEST_PORT_OFFSET:-10000}; \
	$(PY) -m pytest -p no:cacheprovider $(BESIDE) > .local/beside.log 2>&1 & beside=$$!; \
	env $(foreach host,$(EMULATOR_HOSTS),-u $(host)) TEST_PORT_OFFSET=$$((offset + 5000)) \
	  $(PY) -m pytest -p no:cacheprovider --durations=10 $(SIDE) > .local/side.log 2>&1 & side=$$!; \
	TEST_PORT_OFFSET=$$offset $(PY) -m pytest --durations=15 --ignore=$(BESIDE) --ignore=$(OUTAGES) \
	  tests/inprocess tests/e2e; \
	main=$$?; wait $$side; side_rc=$$?; wait $$beside; beside_rc=$$?; \
	echo "=== $(SIDE), run beside:"; cat .local/side.log; \
	echo "=== $(BESIDE), run beside:"; cat .local/beside.log; \
	for rc in $$main $$side_rc $$beside_rc; do [ $$rc = 0 ] || exit $$rc; done

# Contract fuzzing with 100 examples per operation and caller (make test runs a few).
fuzz: setup
	FUZZ_EXAMPLES=100 $(PY) -m pytest tests/e2e/test_contract_fuzz.py

test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

# Known vulnerabilities in the pinned requirements (needs the vulnerability database online; Cloud Build runs it).
audit: $(VENV)/.installed
	$(VENV)/bin/pip-audit --strict --no-deps --requirement requirements.txt

# Pins the whole dependency trees from the top-level lists: functions/requirements.txt is
# what the deployed bundle installs; requirements.txt adds the tools, with the same runtime pins.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --disable-pip-version-check -r functions/requirements.in
	{ echo "# Generated by \`make lock\` from functions/requirements.in: the deployed bundle's whole tree, pinned."; \
	  $(LOCK_VENV)/bin/pip freeze --disable-pip-version-check; } > functions/requirements.txt
	$(LOCK_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.in -c functions/requirements.txt
	{ echo "# Generated by \`make lock\` from requirements.in: tools and runtime, the whole tree, pinned."; \
	  $(LOCK_VENV)/bin/pip freeze --disable-pip-version-check; } > requirements.txt
	rm -rf $(LOCK_VENV)

checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov --directory terraform --framework terraform --quiet --compact

# Measured figures as ratios against references from the same run, printed as one table;
# never pass/fail. bench-quick: the same table from smaller runs (benchmarks/README.md).
# BENCH_ARGS passes more, e.g. BENCH_ARGS="--port-offset 16000" beside another stack.
bench: setup-run
	$(PY) benchmarks/run.py $(BENCH_ARGS)

bench-quick: setup-run
	$(PY) benchmarks/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(STANDIN_VENV) $(FIREBASE_DIR)/node_modules $(STANDIN_DIR)/node_modules .local .pytest_cache .ruff_cache
