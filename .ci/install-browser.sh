#!/usr/bin/env bash
# What the browser tests (tests/test_dashboard.py) need on a fresh Debian machine; run as root.
#   - Debian's Chromium: the tests drive /usr/bin/chromium (no browser download at test time).
#   - Playwright for Python from PyPI: its wheel ships its own driver. Never run
#     `playwright install`: it downloads a browser build, which this project must not need.
# PYTHON names the interpreter whose environment runs the tests (default: python3).
set -euo pipefail

if ! [ -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y chromium
fi
"${PYTHON:-python3}" -m pip install --quiet "playwright>=1.50"
/usr/bin/chromium --version 2>/dev/null
