# Everything a fresh machine needs comes from here: a virtualenv with the pinned
# dependencies of requirements.lock, then the project itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint test-sqlite test-postgres lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11 or newer is needed as $(PYTHON)" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/pqsync demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test-sqlite: setup
	PQSYNC_TEST_DB=sqlite $(BIN)/pytest

test-postgres: setup
	PQSYNC_TEST_DB=postgresql $(BIN)/pytest -m db

test: lint test-sqlite test-postgres

# Re-pin every dependency (run after changing pyproject.toml's dependencies).
lock:
	rm -rf /tmp/pqsync-lock && $(PYTHON) -m venv /tmp/pqsync-lock
	/tmp/pqsync-lock/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	/tmp/pqsync-lock/bin/pip install --quiet --disable-pip-version-check --upgrade setuptools
	/tmp/pqsync-lock/bin/pip freeze --all --exclude-editable --exclude pqsync --exclude pip > requirements.lock
	rm -rf /tmp/pqsync-lock

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
