"""Helpers for the browser tests: the gateway as a blocking subprocess, headless Chromium, and
a Trio service (a fake upstream) on a thread of its own.

The browser tests drive Playwright's synchronous API, so they are plain (non-trio) tests and
need a gateway they can start, stop and restart without an event loop. ``tests/clients.py``'s
``gateway_process`` does the same job for trio tests; this is its blocking twin (same command
line, same clean environment), which also keeps draining the gateway's output in a thread so
a chatty log can never fill the pipe and stall the server mid-test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import trio

ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = ".ci/install-browser.sh"
CHROMIUM = os.environ.get("TRIO_STOCK_CHROMIUM", "/usr/bin/chromium")
# The flags that work on this project's machines (no GPU, no sandbox as root, closed network:
# without the background-networking flags Chromium keeps dialling Google and gets refused).
# Playwright gives every launch a fresh temporary --user-data-dir of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
T = TypeVar("T")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, naming the install script; None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "the Python package 'playwright' is missing: run `bash "
            f"{INSTALL_SCRIPT}` as root (or `pip install playwright`); never `playwright install`"
        )
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"Chromium is missing at {CHROMIUM}: run `bash {INSTALL_SCRIPT}` as root "
            "(it installs Debian's chromium package)"
        )
    return None


class Gateway:
    """``python -m trio_stock --port PORT ARGS`` in a subprocess, started and stopped by a test."""

    def __init__(self, *args: str, port: int = 0, env: dict[str, str] | None = None) -> None:
        # A clean environment, so a developer's own provider keys never leak into a test.
        # The simulated market keeps exchange hours, as `python -m trio_stock` does: a test
        # that needs ticks at any hour passes ``--sim-always-open true`` itself.
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_STOCK_"))
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trio_stock", "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**base, **(env or {})},
            cwd=ROOT,
            text=True,
        )
        self._lines: list[str] = []
        self._listening = threading.Event()
        self.port = 0
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._drain, args=(self.process.stdout,), daemon=True
        )
        self._reader.start()
        if not self._listening.wait(START_TIMEOUT) or not self.port:
            self.stop()
            raise AssertionError(f"the gateway did not start listening:\n{self.output}")

    def _drain(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._lines.append(line)
            if not self.port and (match := LISTENING.search(line)):
                self.port = int(match.group(1))
                self._listening.set()
        self._listening.set()  # exited: wake a waiting start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def stop(self) -> None:
        """SIGTERM (the gateway closes its clients with 1001 and exits), SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(STOP_TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class TrioThread:
    """A Trio service (``serve(*, task_status)``, e.g. a fake upstream's) run by ``trio.run``
    on a thread of its own, so a blocking browser test can put a fake behind the gateway.

    Entering returns once the service called ``task_status.started``; its value is
    :attr:`started`. :meth:`call` and :meth:`run` reach into that event loop (to read or
    drive the fake), and leaving cancels the service and joins the thread.
    """

    def __init__(self, serve: Callable[..., Awaitable[object]]) -> None:
        self._serve = serve
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self.started: Any = None

    def _main(self) -> None:
        try:
            trio.run(self._root)
        except BaseException as exc:  # handed to the test thread on exit
            self._error = exc
        finally:
            self._ready.set()

    async def _root(self) -> None:
        async with trio.open_nursery() as nursery:
            self.started = await nursery.start(self._serve)
            self._token = trio.lowlevel.current_trio_token()
            self._scope = nursery.cancel_scope
            self._ready.set()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the service's event loop (its state is not safe to read from here)."""
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def run(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """``await fn(*args)`` in the service's event loop."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def __enter__(self) -> TrioThread:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._token is None:
            self.__exit__(None, None, None)
            raise AssertionError(f"the Trio service did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None and self._scope is not None and self._thread.is_alive():
            with suppress(trio.RunFinishedError):  # it ended by itself (its error: below)
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(STOP_TIMEOUT)
        assert not self._thread.is_alive(), "the Trio service did not stop"
        if self._error is not None and exc is None:
            raise AssertionError("the Trio service failed") from self._error
