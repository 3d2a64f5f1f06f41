"""Test clients for the gateway: WebSocket over memory streams or real sockets, and JSON helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
import trio.testing
import trio_websocket

from trio_stock import Config, Hub
from trio_stock.access import build_verifier
from trio_stock.client.endings import tolerating_the_closing_pong
from trio_stock.clock import WallClock
from trio_stock.endpoints.client import ClientLimits
from trio_stock.server import handle_connection
from trio_stock.state import ServerState, client_limits

Message = dict[str, Any]


async def recv(ws: trio_websocket.WebSocketConnection) -> Message:
    """The next message, parsed; fails the test if none arrives within 30 virtual seconds."""
    with trio.fail_after(30):
        message = await ws.get_message()
    assert isinstance(message, str)
    parsed = orjson.loads(message)
    assert isinstance(parsed, dict)
    return parsed


async def recv_type(
    ws: trio_websocket.WebSocketConnection,
    kind: str,
    *,
    skip: tuple[str, ...] = ("stock_price", "price_update"),
) -> Message:
    """The next message of type ``kind``, skipping pushed updates; any other type fails."""
    while True:
        message = await recv(ws)
        if message["type"] == kind:
            return message
        assert message["type"] in skip, f"expected {kind}, got {message}"


async def send(ws: trio_websocket.WebSocketConnection, payload: object) -> None:
    await ws.send_message(orjson.dumps(payload).decode())


class MemoryServer:
    """The gateway's connection handler served over in-memory streams (no sockets)."""

    def __init__(
        self, hub: Hub, nursery: trio.Nursery, config: Config, limits: ClientLimits
    ) -> None:
        if config.allowed_hosts is None:  # memory streams have no DNS to rebind
            config = config.replace(allowed_hosts=("*",))
        self.state = ServerState(hub, config, limits, verifier=build_verifier(config))
        self._nursery = nursery

    def connect_stream(self, lockstep: bool = False) -> trio.abc.Stream:
        """A client stream whose other end the server handles."""
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client, server = pair()
        self._nursery.start_soon(self._handle, server)
        return client

    async def get(self, path: str, bearer: str | None = None) -> tuple[int, bytes]:
        """``GET path`` on a fresh connection (with a bearer token): the status and the body."""
        stream = self.connect_stream()
        headers = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        answer = b""
        with trio.fail_after(30):
            while chunk := await stream.receive_some():
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    async def get_json(self, path: str) -> Message:
        """The JSON object of a ``200`` answer to ``GET path``."""
        status, body = await self.get(path)
        assert status == 200, body[:200]
        parsed = orjson.loads(body)
        assert isinstance(parsed, dict)
        return parsed

    async def _handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            await handle_connection(stream, state=self.state)

    @asynccontextmanager
    async def websocket(
        self, path: str, lockstep: bool = False, headers: list[tuple[str, str]] | None = None
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        with tolerating_the_closing_pong():
            async with trio.open_nursery() as nursery:
                stream = self.connect_stream(lockstep)
                # trio-websocket annotates SocketStream, but any trio Stream works
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,  # type: ignore[arg-type]
                    "gateway.test",
                    path,
                    extra_headers=[(k.encode(), v.encode()) for k, v in headers or ()],
                )
                try:
                    yield ws
                finally:
                    with trio.move_on_after(5) as cs:
                        cs.shield = True
                        await ws.aclose()
                    nursery.cancel_scope.cancel()


@asynccontextmanager
async def memory_server(
    config: Config | None = None,
    limits: ClientLimits | None = None,
    *,
    clock: WallClock | None = None,
) -> AsyncIterator[MemoryServer]:
    """A hub with simulated providers, and the server's handler over memory streams.

    The default configuration trades around the clock (``sim_always_open``) so that tests
    get ticks at any hour; ``clock`` fixes the hub's wall clock.
    """
    from trio_stock.gateway import build_hub

    config = config or Config.from_mapping({"TRIO_STOCK_SIM_ALWAYS_OPEN": "1"})
    built = build_hub(config)
    if clock is not None:
        built.clock = clock
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(built.run)
        server = MemoryServer(hub, nursery, config, limits or client_limits(config))
        await nursery.start(server.state.keep_alive.run)
        async with server.state.rest_holds:
            yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def gateway_process(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> AsyncIterator[tuple[trio.Process, int]]:
    """``python -m trio_stock --port 0 ARGS`` in a subprocess; yields it and its bound port.

    The environment starts clean of provider keys so a developer's own keys never leak in,
    and the simulated market trades around the clock unless ``env`` says otherwise.
    """
    import os
    import re
    import subprocess
    import sys

    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_STOCK_"))
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_stock", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**base, "TRIO_STOCK_SIM_ALWAYS_OPEN": "1", **(env or {})},
        cwd=cwd,
    )
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(30):
            while (match := re.search(rb"listening on http://127\.0\.0\.1:(\d+)", output)) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the gateway exited before listening:\n{output.decode()}"
                output += chunk
        yield process, int(match.group(1))
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@asynccontextmanager
async def real_websocket(port: int, path: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A WebSocket client on 127.0.0.1 that owns and always closes its TCP stream.

    trio-websocket's own client may leave the stream open when the server ends the
    connection (DESIGN.md, known pitfalls); tests must not leak sockets either.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    with tolerating_the_closing_pong():
        async with stream, trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, f"127.0.0.1:{port}", path)
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
