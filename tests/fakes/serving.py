"""What every fake upstream shares: a WebSocket port and a REST port on 127.0.0.1, and a way
for tests to wait on the fake's state without sleeping."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Self

import h11
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


async def next_request(
    conn: h11.Connection, stream: trio.abc.Stream, *, max_body: int
) -> tuple[h11.Request, bytes] | None:
    """Read one HTTP request and its body (at most ``max_body`` bytes); None when done."""
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            if not data:
                return None
            conn.receive_data(bytes(data))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return None if request is None else (request, body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def send_json(
    conn: h11.Connection, stream: trio.abc.Stream, status: int, body: object
) -> bool:
    """Answer ``body`` as JSON; True if the connection may carry another request."""
    payload = json.dumps(body).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=payload)))
    await stream.send_all(conn.send(h11.EndOfMessage()))
    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
        return False
    conn.start_next_cycle()
    return True
