# The two commands a newcomer needs: `make run` and `make test`.
# Both set everything up first; set-up steps are skipped when nothing changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
FIREBASE_DIR := infra/local/firebase

.PHONY: setup run test test-unit fuzz lint audit checkov bench prerequisites browser clean

setup: $(VENV)/.installed $(CHECKOV_VENV)/.installed $(FIREBASE_DIR)/node_modules/.installed prerequisites

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

$(FIREBASE_DIR)/node_modules/.installed: $(FIREBASE_DIR)/package.json $(FIREBASE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the Auth emulator: apt-get install nodejs npm" >&2; exit 2; }
	cd $(FIREBASE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

prerequisites: $(VENV)/.installed browser
	@$(PY) infra/local/local_stack.py --check

# Headless Chromium and its driver, for the notices page tests (Debian's packages; needs root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	  || { echo "could not install chromium: apt-get install chromium chromium-driver" >&2; exit 2; }; }

run: setup
	$(PY) infra/local/local_stack.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	terraform fmt -check -recursive terraform

test: setup lint
	$(PY) -m pytest tests/unit tests/integration tests/e2e tests/infra

# Contract fuzzing with 100 examples per operation and caller (make test runs a few).
fuzz: setup
	FUZZ_EXAMPLES=100 $(PY) -m pytest tests/e2e/test_contract_fuzz.py

test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

# Known vulnerabilities in the pinned requirements (needs the vulnerability database online; Cloud Build runs it).
audit: $(VENV)/.installed
	$(VENV)/bin/pip-audit --strict --requirement functions/requirements.txt --requirement requirements.txt

checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov --directory terraform --framework terraform --quiet --compact

# Measured figures as ratios against references from the same run; never pass/fail.
bench: setup
	$(PY) benchmarks/deletion_throughput.py
	$(PY) benchmarks/notice_fanout.py
	$(PY) benchmarks/api_latency.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(FIREBASE_DIR)/node_modules .local .pytest_cache .ruff_cache
