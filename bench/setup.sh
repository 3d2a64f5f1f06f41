#!/usr/bin/env bash
# Set up what the benchmark needs: a separate venv (the baselines' dependencies must never
# enter trio_stock's own), Debian's redis-server for the Channels baseline, Node.js for the
# load generator (no npm packages needed), taskset for pinning.
#   bash bench/setup.sh            # venv at .bench-venv (BENCH_VENV=... to change)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-.bench-venv}"

if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }
command -v node >/dev/null || { echo "Node.js >= 18 is required for bench/loadgen" >&2; exit 1; }

python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r bench/requirements.txt -e .
node --test bench/loadgen/selftest.js >/dev/null
echo "bench ready: $VENV/bin/python bench/run.py --quick"
