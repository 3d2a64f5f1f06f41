# Two commands on a fresh machine: `make run` serves, `make test` tests.
# Both create the virtualenv .venv and install the project into it on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint browser bench-setup bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m trio_stock $(ARGS)

test: $(VENV)/.installed browser
	$(PY) -m pytest $(ARGS)

# The dashboard tests drive Debian's Chromium; install it once (needs root: apt-get).
browser: $(VENV)/.installed
	@[ -x /usr/bin/chromium ] || PYTHON=$(PY) bash .ci/install-browser.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check trio_stock tests
	$(VENV)/bin/ruff format --check trio_stock tests
	$(VENV)/bin/mypy

bench-setup:
	bash bench/setup.sh

bench:
	.bench-venv/bin/python bench/run.py $(ARGS)
