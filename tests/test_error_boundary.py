"""Every connection is an error boundary: a failure ends that connection only.

The attacks from outside are in ``test_hostile.py`` (a running process over real sockets);
here our own code is made to fail on purpose, and the limits that refuse connections
are checked one by one.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

import trio_stock
from trio_stock import Config, Gateway
from trio_stock.endpoints import rest
from trio_stock.endpoints.prices import PricesProtocol
from trio_stock.endpoints.protocol import ClientContext
from trio_stock.limits import Admission, AdmissionLimits
from trio_stock.state import ServerState
from trio_stock.transport.http import Response

from .clients import memory_server, real_websocket, recv, send

API = "/api/v2/realtime"
PRICES = "/api/v2/realtime/ws/prices"


def sim_config(**settings: str) -> Config:
    return Config.from_mapping(
        {"TRIO_STOCK_PORT": "0", "TRIO_STOCK_SIM_ALWAYS_OPEN": "1", **settings}
    )


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(trio_stock.serve, sim_config())
        nursery.cancel_scope.cancel()


def server_state(gateway: Gateway) -> ServerState:
    """The listener's shared state, found through the gateway's keep-alive task's owner."""
    import gc

    (state,) = [o for o in gc.get_objects() if isinstance(o, ServerState) and o.hub is gateway.hub]
    return state


async def test_a_route_that_raises_answers_500_and_the_server_lives(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(state: ServerState) -> Response:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(rest, "status", broken)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as http:
        with caplog.at_level(logging.DEBUG, logger="trio_stock.server"):
            answer = await http.get(f"{API}/status")
        assert answer.status_code == 500
        assert answer.json()["detail"].startswith("internal error (connection ")
        assert answer.headers["connection"] == "close"
        assert (await http.get(f"{API}/health")).status_code == 200  # the server lives
        metrics = (await http.get("/metrics")).text
    assert 'trio_stock_connection_errors_total{kind="http"} 1' in metrics
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "KeyError: 'a bug of ours'" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # the summary line; the traceback is at DEBUG
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


async def test_a_websocket_handler_that_raises_closes_that_client_with_1011(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: ClientContext, message: Mapping[str, Any]) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setitem(PricesProtocol.actions, "ping", broken)
    port = gateway.port or 0
    async with real_websocket(port, PRICES) as healthy, real_websocket(port, PRICES) as victim:
        await recv(healthy)
        await recv(victim)
        await send(victim, {"action": "ping"})
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await recv(victim)
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1011
        assert (closed.value.reason.reason or "").startswith("internal error (connection ")
        await send(healthy, {"action": "get_subscriptions"})  # the other client is unharmed
        assert (await recv(healthy))["type"] == "subscriptions"
    assert server_state(gateway).connection_errors["websocket"] == 1


async def test_static_files_are_a_fixed_set_looked_up_by_name(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as http:
        assert (await http.get("/static/app.js")).status_code == 200
        for name in ("a" * 300, "../server.py", "..%2Fserver.py", "%00", "app.js/x", "."):
            answer = await http.get(f"/static/{name}")
            assert answer.status_code == 404, name
            assert answer.json()["detail"].startswith("not found")
        assert (await http.get(f"{API}/health")).status_code == 200


@pytest.mark.parametrize("limit", ["1" * 5000, "²", "٣", "-1", "0", "1001", "1e3", " 5", "+5"])
async def test_cache_limit_is_parsed_with_bounds(gateway: Gateway, limit: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as http:
        answer = await http.get(f"{API}/cache", params={"limit": limit})
        assert answer.status_code == 422
        assert answer.json() == {"detail": "limit must be an integer from 1 to 1000"}
        assert (await http.get(f"{API}/cache", params={"limit": "1000"})).status_code == 200


def test_bounded_int_accepts_ascii_digits_in_range_only() -> None:
    assert rest.bounded_int("0042", 1, 1000) == 42
    assert rest.bounded_int("1000", 1, 1000) == 1000
    assert rest.bounded_int("00001", 1, 1000) == 1
    assert rest.bounded_int("0" * 5000 + "7", 1, 1000) == 7
    for text in ("", "10000", "0", "²", "1_0", "１", "1" * 5000):
        assert rest.bounded_int(text, 1, 1000) is None, text


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a client that vanishes does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_clients_that_reset_while_refused_at_the_limit_do_not_stop_the_server() -> None:
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(trio_stock.serve, sim_config(TRIO_STOCK_MAX_CLIENTS="2"))
        port = gateway.port or 0
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(50):  # each is refused with a 503 the client never reads
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            reset(stream.socket)  # type: ignore[arg-type]
        with trio.fail_after(10):
            refused = await trio.open_tcp_stream("127.0.0.1", port)
            answer = await refused.receive_some()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nretry-after: 1\r\n" in answer.lower()
        await refused.aclose()
        await held[0].aclose()  # a slot frees: the server answers again
        async with httpx.AsyncClient() as http:
            with trio.fail_after(10):  # retrying on 503 is what Retry-After asks of a client
                while (await http.get(f"http://127.0.0.1:{port}{API}/health")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.01)
        await held[1].aclose()
        nursery.cancel_scope.cancel()


async def test_per_ip_connection_limit_answers_503_with_retry_after() -> None:
    config = sim_config(TRIO_STOCK_MAX_CONNECTIONS_PER_IP="3")
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(trio_stock.serve, config)
        port = gateway.port or 0
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
        fourth = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):
            answer = await fourth.receive_some()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"at most 3 connections per client address" in answer
        assert b"\r\nretry-after: 1\r\n" in answer.lower()
        for stream in (*held, fourth):
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_admission_limits_per_ip_rate(autojump_clock: trio.testing.MockClock) -> None:
    admission = Admission(AdmissionLimits(max_connections=100, max_per_ip=5, rate_per_ip=2.0))
    for _ in range(5):
        assert admission.admit("10.0.0.1") is None
        admission.release("10.0.0.1")
    refusal = admission.admit("10.0.0.1")  # the burst is spent, though none is open
    assert refusal is not None and refusal.reason == "rate_per_ip"
    assert admission.admit("10.0.0.2") is None  # another address is not affected
    await trio.sleep(0.5)  # one token back at 2 per second
    assert admission.admit("10.0.0.1") is None
    assert admission.refused == {"max_connections": 0, "max_per_ip": 0, "rate_per_ip": 1}
    assert admission.open == 2


async def test_admission_forgets_idle_addresses(autojump_clock: trio.testing.MockClock) -> None:
    admission = Admission(AdmissionLimits(max_connections=10_000, max_per_ip=2, rate_per_ip=1.0))
    for i in range(5000):
        ip = f"10.0.{i // 256}.{i % 256}"
        assert admission.admit(ip) is None
        admission.release(ip)
    await trio.sleep(10)  # every bucket refilled: nothing worth keeping
    assert admission.admit("10.1.0.1") is None
    assert len(admission._buckets) < 2048  # swept, not one entry per address ever seen
    assert admission._open_by_ip == {"10.1.0.1": 1}


async def test_metrics_keep_full_precision(autojump_clock: trio.testing.MockClock) -> None:
    from trio_stock.endpoints.metrics import _value

    assert _value(1712345678.9) == "1712345678.9"
    assert _value(123456789012345) == "123456789012345"
    assert _value(True) == "1"
    async with memory_server(sim_config()) as server:
        stream = server.connect_stream()
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = b""
        while chunk := await stream.receive_some():
            body += chunk
    assert b"e+" not in body
    assert b'trio_stock_connections_refused_total{reason="max_per_ip"} 0' in body


async def test_a_message_handler_failure_in_memory_reports_json_close(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same boundary without sockets: the close frame carries 1011 and the reason."""

    async def broken(ctx: ClientContext, message: Mapping[str, Any]) -> None:
        raise ValueError("boom")

    monkeypatch.setitem(PricesProtocol.actions, "get_subscriptions", broken)
    async with memory_server(sim_config()) as server, server.websocket(PRICES) as ws:
        await recv(ws)
        await ws.send_message(orjson.dumps({"action": "get_subscriptions"}).decode())
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.reason is not None and closed.value.reason.code == 1011
        assert server.state.connection_errors["websocket"] == 1
        assert server.state.websocket_clients == 0
