"""How to start each compared stack against the feed, pinned to the server core.

Every process of a stack's server side runs under ``taskset -c SERVER_CPU``: for Channels
that is daphne, the publisher and redis-server together, as trio_stock's one process does
the same jobs (upstream session, fan-out, state) alone; for trio_stock's cluster
(bench/cluster.py) the ingest node, both edges and redis-server.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.baselines.channels_app.codes import code_for

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVER_CPU = "0"
CLIENT_CPU = "1"
READY_TIMEOUT_S = 30.0
STACKS = ("trio_stock", "fastapi", "channels", "ceiling")  # the default run
# On request only (--stacks): trio_stock as a cluster on Redis, one ingest node and edges
# (bench/cluster.py: which edges, how the clients are split).
EXTRA_STACKS = ("trio_stock_cluster", "trio_stock_cluster_rr", "trio_stock_cluster_1edge")
PATH_003 = "/api/v2/realtime/ws/prices"
PATH_000 = "/ws/stock/"


class StackUnavailable(Exception):
    """The stack cannot run here (e.g. trio_stock.server not written yet)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


def read_json_line(stream: IO[bytes], proc: subprocess.Popen[bytes]) -> dict[str, object]:
    line = stream.readline()
    if not line:
        raise RuntimeError(f"process exited ({proc.wait()}) before reporting")
    return dict(json.loads(line))


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv]


@dataclass
class Stack:
    """A running stack: its processes by role, where clients connect, what they speak."""

    name: str
    procs: dict[str, subprocess.Popen[bytes]]
    port: int
    path: str
    protocol: str  # "003" or "000"
    symbols: list[str]  # what clients subscribe (codes for 000)
    logs: list[Path] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)  # several: clients spread over them
    spread: str = "blocks"  # how (bench/loadgen/loadgen.js --spread)
    redis_port: int | None = None  # a Redis of the stack's own, read with INFO in the window
    profiled: tuple[str, ...] = ("server",)  # the processes --profile samples
    cpu_of: dict[str, str] = field(default_factory=dict)  # a process not on SERVER_CPU: its core
    stats: list[str] = field(default_factory=list)  # stats URLs, when not the defaults below

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    @property
    def urls(self) -> list[str]:
        """Where clients connect: one URL, or one per edge."""
        return [f"ws://127.0.0.1:{p}{self.path}" for p in self.client_ports or [self.port]]

    @property
    def stats_urls(self) -> list[str]:
        if self.stats:
            return self.stats
        base = f"http://127.0.0.1:{self.port}"
        if self.name == "trio_stock":
            return [f"{base}/metrics", f"{base}/api/v2/realtime/status"]
        if self.name == "fastapi":
            return [f"{base}/api/v2/realtime/status"]
        return []

    def pids(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.procs.items()}

    def stop(self) -> None:
        """Stop the processes, the last started first (Redis outlives its clients)."""
        for p in reversed(self.procs.values()):
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _spawn(
    argv: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout_pipe: bool = False,
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else err,
            stderr=err,
        )


def start_stack(
    name: str, feed_port: int, feed_rest_port: int, api_key: str, tickers: list[str], logdir: Path
) -> Stack:
    """Start ``name`` against the feed and return it once it accepts clients."""
    py = sys.executable
    port = free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    feed_ws = f"ws://127.0.0.1:{feed_port}"
    try:
        if name == "trio_stock":
            probe = subprocess.run([py, "-c", "import trio_stock.server"], capture_output=True)
            if probe.returncode != 0:
                raise StackUnavailable("trio_stock.server cannot be imported yet")
            env = {
                "TRIO_STOCK_HOST": "127.0.0.1",
                "TRIO_STOCK_PORT": str(port),
                "FMP_WS_URL": feed_ws,
                "FMP_REST_URL": f"http://127.0.0.1:{feed_rest_port}",
                "FMP_API_KEY": api_key,
            }
            cwd = logdir / "cwd"  # an empty working directory: no stray .env is read
            cwd.mkdir(exist_ok=True)
            procs["server"] = _spawn(
                pinned(SERVER_CPU, [py, "-m", "trio_stock"]),
                logdir / "trio_stock.log",
                env=env,
                cwd=cwd,
            )
            wait_port(port, procs["server"])
            return Stack(name, procs, port, PATH_003, "003", tickers)
        if name == "ceiling":
            argv = [
                py,
                "-m",
                "bench.ceiling",
                "--feed",
                feed_ws,
                "--key",
                api_key,
                "--symbols",
                ",".join(tickers),
                "--port",
                str(port),
            ]
            procs["server"] = _spawn(pinned(SERVER_CPU, argv), logdir / "ceiling.log", cwd=ROOT)
            wait_port(port, procs["server"])
            return Stack(name, procs, port, PATH_003, "003", tickers)
        if name == "fastapi":
            env = {"FMP_API_KEY": api_key, "FMP_WS_URL": feed_ws, "PYTHONPATH": ""}
            argv = [
                py,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ]
            procs["server"] = _spawn(
                pinned(SERVER_CPU, argv),
                logdir / "fastapi.log",
                env=env,
                cwd=BENCH / "baselines" / "fastapi_app",
            )
            wait_port(port, procs["server"])
            return Stack(name, procs, port, PATH_003, "003", tickers)
        if name == "channels":
            return _start_channels(procs, port, feed_ws, api_key, tickers, logdir)
        if name in EXTRA_STACKS:
            from bench.cluster import start_cluster  # it builds on this module

            fmp = {
                "FMP_WS_URL": feed_ws,
                "FMP_REST_URL": f"http://127.0.0.1:{feed_rest_port}",
                "FMP_API_KEY": api_key,
            }
            return start_cluster(name, procs, fmp, tickers, logdir)
        raise ValueError(f"unknown stack {name}")
    except BaseException:
        Stack(name, procs, port, "", "", []).stop()
        raise


def start_redis(
    procs: dict[str, subprocess.Popen[bytes]], logdir: Path, cpu: str = SERVER_CPU
) -> int:
    """Debian's redis-server on a free port, no persistence, as ``procs["redis"]``; its port."""
    redis = shutil.which("redis-server")
    if redis is None:
        raise StackUnavailable("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    argv = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    procs["redis"] = _spawn(pinned(cpu, argv), logdir / "redis.log")
    wait_port(port, procs["redis"])
    return port


def _start_channels(
    procs: dict[str, subprocess.Popen[bytes]],
    port: int,
    feed_ws: str,
    api_key: str,
    tickers: list[str],
    logdir: Path,
) -> Stack:
    py = sys.executable
    rport = start_redis(procs, logdir)
    env = {
        "DJANGO_SETTINGS_MODULE": "bench.baselines.channels_app.settings",
        "REDIS_URL": f"redis://127.0.0.1:{rport}/0",
        "KIS_MAX_SUBSCRIPTIONS": "100000",
        "PYTHONPATH": str(ROOT),
    }
    procs["server"] = _spawn(
        pinned(
            SERVER_CPU,
            [
                py,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "bench.baselines.channels_app.asgi:application",
            ],
        ),
        logdir / "daphne.log",
        env=env,
        cwd=ROOT,
    )
    wait_port(port, procs["server"])
    pub = _spawn(
        pinned(
            SERVER_CPU,
            [
                py,
                "-m",
                "bench.baselines.channels_app.publisher",
                "--feed",
                feed_ws,
                "--key",
                api_key,
                "--symbols",
                ",".join(tickers),
            ],
        ),
        logdir / "publisher.log",
        env=env,
        cwd=ROOT,
        stdout_pipe=True,
    )
    procs["publisher"] = pub
    assert pub.stdout is not None
    read_json_line(pub.stdout, pub)
    codes = [code_for(i) for i in range(len(tickers))]
    return Stack("channels", procs, port, PATH_000, "000", codes, redis_port=rport)


@dataclass
class Feed:
    """The fake FMP feed process (bench/feed.py) and what it reports."""

    proc: subprocess.Popen[bytes]
    port: int
    rest_port: int
    api_key: str
    counts: list[tuple[float, int]] = field(default_factory=list)  # (epoch s, frames_sent)

    def follow(self) -> None:
        """Read the feed's per-second counts until it exits (run in a thread)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
                self.counts.append((float(d["t"]), int(d["frames_sent"])))
            except (ValueError, KeyError):
                continue

    def rate_between(self, t0: float, t1: float) -> float | None:
        """Frames the feed sent per second between two times (linear interpolation)."""
        pts = self.counts
        if len(pts) < 2:
            return None

        def at(t: float) -> float:
            for (ta, na), (tb, nb) in itertools.pairwise(pts):
                if ta <= t <= tb:
                    return na + (nb - na) * (t - ta) / (tb - ta)
            return float(pts[0][1] if t < pts[0][0] else pts[-1][1])

        return (at(t1) - at(t0)) / (t1 - t0) if t1 > t0 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_feed(rate: float, tickers: list[str], duration: float, logdir: Path) -> Feed:
    argv = [
        sys.executable,
        str(BENCH / "feed.py"),
        "--rate",
        str(rate),
        "--symbols",
        ",".join(tickers),
        "--duration",
        str(duration),
    ]
    with open(logdir / "feed.log", "wb") as err:
        proc = subprocess.Popen(
            pinned(CLIENT_CPU, argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
        )
    assert proc.stdout is not None
    first = read_json_line(proc.stdout, proc)
    return Feed(proc, int(str(first["port"])), int(str(first["rest_port"])), str(first["api_key"]))
