"""A real redis-server for tests: started on a free port of 127.0.0.1, stopped at the end.

``redis-server`` is found on the PATH (Debian: the ``redis-server`` package, which
``make test`` installs with ``.ci/install-redis.sh``). Without it the tests that need it fail
in CI (``CI=true``) and are skipped elsewhere, saying how to install it.

The server keeps nothing on disk (``--save '' --appendonly no``), so :meth:`RedisServer.restart`
is a restart that loses every key, as a crashed Redis without persistence would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

INSTALL_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "install-redis.sh"
START_TIMEOUT = 10.0  # seconds for redis-server to answer PING after a (re)start


def redis_server_binary() -> str:
    """The path of redis-server; fails the test in CI and skips it elsewhere when missing."""
    path = shutil.which("redis-server")
    if path is not None:
        return path
    reason = f"redis-server is not installed: run `bash {INSTALL_SCRIPT}` as root"
    if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int, timeout: float) -> bool:
    """Whether a Redis on ``port`` answers PING within ``timeout`` seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on a fixed port, which a test may kill, restart or pause."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.port, timeout=0.5):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer within {START_TIMEOUT} s")
            time.sleep(0.01)  # polling a condition (PING), bounded by the deadline above

    def kill(self) -> None:
        """SIGKILL: the server vanishes with all its data."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    async def restart(self) -> None:
        """Kill the server and start a new one on the same port (with no data)."""
        self.kill()
        await trio.to_thread.run_sync(self.start)

    def stop(self) -> None:
        """SIGSTOP: the server stalls; its connections stay open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT: a stalled server goes on."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, killed on exit."""
    server = RedisServer(redis_server_binary())
    server.start()
    try:
        yield server
    finally:
        server.kill()
