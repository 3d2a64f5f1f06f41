"""What every fake upstream shares: a WebSocket port and a REST port on 127.0.0.1, and a way
for tests to wait on the fake's state without sleeping."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Self

import trio

LOOPBACK = "127.0.0.1"


class TwoPortFake:
    """Mixin: serve ``_handle_ws`` and ``_handle_http`` on two free loopback ports.

    A subclass provides both handlers, the ``ws_port``/``rest_port`` attributes and a
    ``_changed`` ParkingLot, and calls :meth:`_notify` whenever its state changes.
    """

    ws_port: int
    rest_port: int
    _changed: trio.lowlevel.ParkingLot

    async def _handle_ws(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError

    async def _handle_http(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError

    async def serve(self, *, task_status: trio.TaskStatus[Self] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve both endpoints until cancelled; ``started`` hands back this fake, bound."""
        async with trio.open_nursery() as nursery:
            ws = await nursery.start(partial(trio.serve_tcp, self._handle_ws, 0, host=LOOPBACK))
            rest = await nursery.start(partial(trio.serve_tcp, self._handle_http, 0, host=LOOPBACK))
            self.ws_port = ws[0].socket.getsockname()[1]
            self.rest_port = rest[0].socket.getsockname()[1]
            task_status.started(self)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked whenever the fake's state changes."""
        while not predicate():
            await self._changed.park()

    def _notify(self) -> None:
        self._changed.unpark_all()
