"""trio_stock as a cluster on Redis (issue 14): one ingest node, edges, one redis-server.

The stack ``trio_stock_cluster`` starts:

- a fresh redis-server on a free port (as the Channels baseline starts it);
- ``python -m trio_stock --role ingest`` with the feed's FMP URLs: it takes the upstream
  sessions' leases, holds the FMP session and writes every new state to Redis, fenced;
- once its health shows every lease held, two ``--role edge`` nodes, which serve the clients
  and read the states of the symbols their clients hold from Redis.

The load generator spreads the clients over the edges in blocks (client *i* of N on edge
⌊i·E/N⌋), so with the workloads' symbol assignment every edge carries every symbol: each
state reaches every edge (Redis sends it E times), as behind a load balancer. Variants
(:data:`VARIANTS`): ``trio_stock_cluster_rr`` deals the clients round-robin, which with W1's
assignment gives each edge a disjoint half of the symbols (each state reaches one edge);
``trio_stock_cluster_1edge`` has one edge with every client, the one process's fan-out
behind the Redis hop.

Where they run (:data:`CPU_OF`): the edges on the server core, the ingest node and Redis on
the client core with the feed and the load generator. All four on the server core do not
fit W1 (measured: 100 % of the core, 72 % delivered, latency growing by the second): that
would measure a queue, not the hop. Even so this two-core machine is small for W1 through a
cluster: two edges fill the server core and the client core is ~95 % busy (see the README
and ``core_busy`` in the results); ``server CPU`` sums all the stack's processes and
``server_cpu_by_role`` has each one, with ``server_cpu_layout`` saying which core it had.

The leases' TTL is :data:`LEASE_TTL_S` (the default 10 s quarantines a lease name's first use
for that long; 2 s keeps the start short). :func:`redis_info` reads Redis's own counters
(commands per type, network bytes) at the window's start and end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.stacks import (
    CLIENT_CPU,
    PATH_003,
    READY_TIMEOUT_S,
    SERVER_CPU,
    Stack,
    StackUnavailable,
    _spawn,
    free_port,
    pinned,
    start_redis,
    wait_port,
)

LEASE_TTL_S = 2.0
VARIANTS = {  # stack: (edges, how the load generator spreads the clients over them)
    "trio_stock_cluster": (2, "blocks"),
    "trio_stock_cluster_rr": (2, "round-robin"),
    "trio_stock_cluster_1edge": (1, "blocks"),
}
CPU_OF = {"redis": CLIENT_CPU, "ingest": CLIENT_CPU, "edge1": SERVER_CPU, "edge2": SERVER_CPU}
HEALTH = "/api/v2/realtime/health"


def start_cluster(
    name: str,
    procs: dict[str, subprocess.Popen[bytes]],
    fmp: dict[str, str],
    tickers: list[str],
    logdir: Path,
) -> Stack:
    """Start Redis, the ingest node and the edges; return once the edges accept clients.

    Raises:
        StackUnavailable: trio_stock's cluster (or coredis) cannot be imported here.
        RuntimeError: A node exited, or the ingest node did not hold every lease in time
            (its health at the deadline is in the message; the logs are in ``logdir``).
    """
    edge_count, spread = VARIANTS[name]
    py = sys.executable
    probe = subprocess.run([py, "-c", "import trio_stock.cluster.serve"], capture_output=True)
    if probe.returncode != 0:
        why = probe.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise StackUnavailable(f"trio_stock.cluster cannot be imported: {' '.join(why)}")
    rport = start_redis(procs, logdir, CPU_OF["redis"])
    cwd = logdir / "cwd"  # an empty working directory: no stray .env is read
    cwd.mkdir(exist_ok=True)

    def node(role: str, label: str) -> int:
        port = free_port()
        env = {
            **fmp,
            "TRIO_STOCK_HOST": "127.0.0.1",
            "TRIO_STOCK_PORT": str(port),
            "TRIO_STOCK_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
            "TRIO_STOCK_ROLE": role,
            "TRIO_STOCK_NODE_ID": label,
            "TRIO_STOCK_LEASE_TTL": str(LEASE_TTL_S),
        }
        procs[label] = _spawn(
            pinned(CPU_OF[label], [py, "-m", "trio_stock"]),
            logdir / f"{label}.log",
            env=env,
            cwd=cwd,
        )
        wait_port(port, procs[label])
        return port

    ingest = node("ingest", "ingest")
    wait_leases_held(ingest, procs["ingest"])
    edges = [node("edge", f"edge{i + 1}") for i in range(edge_count)]
    stats = [
        *(f"http://127.0.0.1:{p}/metrics" for p in edges),
        *(f"http://127.0.0.1:{p}{HEALTH}" for p in edges),
        f"http://127.0.0.1:{ingest}/metrics",
        f"http://127.0.0.1:{ingest}{HEALTH}",
    ]
    return Stack(
        name,
        procs,
        edges[0],
        PATH_003,
        "003",
        tickers,
        client_ports=edges,
        spread=spread,
        redis_port=rport,
        profiled=("edge1", "ingest"),
        stats=stats,
        cpu_of=CPU_OF,
    )


def wait_leases_held(
    port: int, proc: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S
) -> dict[str, object]:
    """Poll the ingest node's health until ``cluster.leases[].held`` is true for every session.

    Clients must not subscribe before the ingest node holds the FMP session: an edge's
    subscribe waits for the holder's answer, and a lease's first use is quarantined for one
    TTL.
    """
    deadline = time.monotonic() + timeout
    health: dict[str, object] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the ingest node exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH}", timeout=2) as r:
                health = json.loads(r.read())
        except (OSError, ValueError):
            health = {}
        cluster = health.get("cluster")
        leases = cluster.get("leases", []) if isinstance(cluster, dict) else []
        if leases and all(lease.get("held") for lease in leases):
            return health
        time.sleep(0.2)
    raise RuntimeError(
        f"the ingest node held not every lease after {timeout:.0f} s: "
        f"{json.dumps(health.get('cluster'))}"
    )


def redis_info(port: int) -> dict[str, float]:
    """Redis's counters now: ``INFO stats`` and ``INFO commandstats`` (calls, usec per command).

    Numbers only, flattened: ``total_commands_processed``, ``total_net_output_bytes``, ...,
    ``cmdstat_publish.calls``, ``cmdstat_evalsha.usec``. A raw RESP request on a socket, so
    the harness needs no Redis client; an empty dict if Redis does not answer.
    """
    out: dict[str, float] = {}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            for section in ("stats", "commandstats", "cpu"):
                out.update(_parse_info(_bulk_reply(s, f"INFO {section}")))
    except OSError:
        return {}
    return out


def _bulk_reply(s: socket.socket, command: str) -> str:
    s.sendall(command.encode() + b"\r\n")
    buf = b""
    while b"\r\n" not in buf:
        buf += _recv(s)
    head, rest = buf.split(b"\r\n", 1)
    if not head.startswith(b"$"):
        raise OSError(f"unexpected reply {head[:80]!r}")
    size = int(head[1:])
    while len(rest) < size + 2:
        rest += _recv(s)
    return rest[:size].decode()


def _recv(s: socket.socket) -> bytes:
    data = s.recv(65536)
    if not data:
        raise OSError("redis closed the connection")
    return data


def _parse_info(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        if key.startswith("cmdstat_"):  # calls=1,usec=2,usec_per_call=2.00,...
            for part in value.split(","):
                field, _, number = part.partition("=")
                try:
                    out[f"{key}.{field}"] = float(number)
                except ValueError:
                    continue
            continue
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


COUNTERS = ("total_", "cmdstat_", "used_cpu_sys", "used_cpu_user")  # INFO's growing fields


def redis_delta(start: dict[str, float], end: dict[str, float], seconds: float) -> dict[str, float]:
    """Per second over the window, of every counter that grew (calls, usec, bytes, CPU s)."""
    return {
        key: (end[key] - start.get(key, 0.0)) / seconds
        for key in sorted(end)
        if seconds > 0
        and key.startswith(COUNTERS)
        and not key.endswith("usec_per_call")
        and end[key] != start.get(key, 0.0)
    }
