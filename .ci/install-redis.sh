#!/usr/bin/env bash
# What the cluster tests (tests/test_cluster_*.py) need on a fresh Debian machine; run as root.
#   - Debian's redis-server: the tests start their own servers on free ports of 127.0.0.1
#     (tests/redis_server.py); a system service the package may start is not used.
set -euo pipefail

if ! command -v redis-server >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y redis-server
fi
redis-server --version
