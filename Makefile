# Two commands on a fresh machine: `make run` serves, `make test` tests.
# Both create the virtualenv .venv and install the project into it on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint browser redis screenshot bench-setup bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m trio_stock $(ARGS)

test: $(VENV)/.installed browser redis
	$(PY) -m pytest $(ARGS)

# The dashboard tests drive Debian's Chromium; install it once (needs root: apt-get).
browser: $(VENV)/.installed
	@[ -x /usr/bin/chromium ] || PYTHON=$(PY) bash .ci/install-browser.sh

# The cluster tests start real redis-servers; install Debian's once (needs root: apt-get).
redis:
	@command -v redis-server >/dev/null || bash .ci/install-redis.sh

# Refresh the README's picture of the board, docs/dashboard.png (make test only writes
# build/dashboard.png, so it leaves the tree clean): the browser test that takes it, with a
# realistic watchlist on an always-open simulated market at its normal pace, once every chart
# holds CHART_MINUTES one-minute bars (about that many minutes). Korean names need a Korean
# font (Debian: fonts-nanum or fonts-noto-cjk), or they are drawn as boxes.
CHART_MINUTES ?= 10
screenshot: $(VENV)/.installed browser
	@fc-list :lang=ko | grep -q . || { echo "make screenshot: no Korean font installed (e.g. apt-get install fonts-nanum)" >&2; exit 1; }
	DASHBOARD_SCREENSHOT=$(CURDIR)/docs/dashboard.png DASHBOARD_CHART_MINUTES=$(CHART_MINUTES) \
		$(PY) -m pytest tests/test_dashboard.py -k readme_screenshot

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check trio_stock tests
	$(VENV)/bin/ruff format --check trio_stock tests
	$(VENV)/bin/mypy

bench-setup:
	bash bench/setup.sh

bench:
	.bench-venv/bin/python bench/run.py $(ARGS)
