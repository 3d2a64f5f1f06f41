"""REST responses unstructured from frozen values: the field names the seed and the README
show, nothing more, nothing renamed (issue 15)."""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing

from trio_stock import Config, Hub, Market, Tick, TickKind
from trio_stock.converter import converter
from trio_stock.endpoints.prices import PricesProtocol
from trio_stock.endpoints.responses import SubscriptionChange
from trio_stock.hub import Failure, FailureReason
from trio_stock.state import client_limits
from trio_stock.upstream.contract import ProviderState

from .clients import MemoryServer, memory_server
from .scripted import ScriptedProvider

API = "/api/v2/realtime"

PROVIDER_FIELDS = {
    "name",
    "kind",
    "market",
    "live",
    "state",
    "registrations",
    "quota",
    "connects",
    "reconnect_attempts",
    "messages",
    "malformed",
    "last_message_at",
    "last_error",
    "detail",
}


async def request(server: MemoryServer, method: str, path: str, body: bytes = b"") -> Any:
    """One request over a memory stream; the status must be 200. The parsed JSON body."""
    stream = server.connect_stream()
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    await stream.send_all(head.encode() + b"Connection: close\r\n\r\n" + body)
    answer = b""
    while chunk := await stream.receive_some():
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"content-type: application/json" in answer.lower()
    return orjson.loads(answer.partition(b"\r\n\r\n")[2])


async def test_health_fields(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server(Config(sim_ticks_per_second=5.0, sim_always_open=True)) as server:
        await request(server, "POST", f"{API}/subscribe", b'["AAPL"]')
        health = await request(server, "GET", f"{API}/health")
    # The seed's fields first, then the extras.
    assert list(health) == [
        "status",
        "is_running",
        "api_configured",
        "kis_configured",
        "simulated",
        "subscribed_symbols",
        "lingering_symbols",
        "cached_symbols",
        "callbacks_registered",
        "reconnect_attempts",
        "providers",
        "markets",
        "cluster",
    ]
    assert health["cluster"] is None  # one process, no --redis-url
    assert health["status"] == "connected"
    assert (health["is_running"], health["api_configured"], health["kis_configured"]) == (
        True,
        False,
        False,
    )
    assert health["simulated"] == ["KR", "US"]
    assert health["subscribed_symbols"] == ["AAPL"]
    assert health["callbacks_registered"] == 0
    assert [set(p) for p in health["providers"]] == [PROVIDER_FIELDS, PROVIDER_FIELDS]
    us = next(p for p in health["providers"] if p["market"] == "US")
    assert (us["kind"], us["state"], us["live"], us["registrations"]) == (
        "sim",
        "connected",
        False,
        1,
    )


async def test_status_fields(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server(Config(sim_ticks_per_second=5.0, sim_always_open=True)) as server:
        await request(server, "POST", f"{API}/subscribe", b'["005930"]')
        await trio.sleep(1)  # a tick or more: the symbol is cached
        await request(server, "POST", f"{API}/unsubscribe", b'["005930"]')
        status = await request(server, "GET", f"{API}/status")
    assert list(status) == [
        "timestamp",
        "connection_status",
        "cached_data",
        "hub",
        "upstream",
        "providers",
        "markets",
    ]
    assert status["connection_status"] == {
        "is_connected": True,
        "is_running": True,
        "subscribed_symbols": [],
        "lingering_symbols": ["005930"],  # released, still registered for the linger
        "total_clients": 0,
    }
    assert status["cached_data"] == {"count": 1, "symbols": ["005930"]}
    assert set(status["hub"]) == {
        "subscribers",
        "symbols",
        "published",
        "delivered",
        "conflated",
        "too_slow",
    }
    kr = next(u for u in status["upstream"] if u["market"] == "KR")
    assert kr == {"provider": "sim-kr", "market": "KR", "used": 0, "lingering": 1, "quota": 40}
    assert [set(p) for p in status["providers"]] == [PROVIDER_FIELDS, PROVIDER_FIELDS]


def test_subscription_change_lists_failed_only_when_some_failed() -> None:
    done = SubscriptionChange("success", "Subscribed to 1 symbols", ("AAPL",), 1)
    assert converter.unstructure(done) == {
        "status": "success",
        "message": "Subscribed to 1 symbols",
        "symbols": ["AAPL"],
        "subscribed_total": 1,
    }
    failure = Failure("000041", FailureReason.QUOTA, "40 of 40 in use")
    partial = SubscriptionChange("partial", "Subscribed to 1 symbols", ("AAPL",), 1, (failure,))
    assert orjson.loads(converter.dumps(partial))["failed"] == [
        {"symbol": "000041", "reason": "quota", "detail": "40 of 40 in use"}
    ]


async def test_cache_entries_are_the_price_update_fields(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(Config(sim_ticks_per_second=5.0, sim_always_open=True)) as server:
        await request(server, "POST", f"{API}/subscribe", b'["AAPL"]')
        await trio.sleep(1)  # a tick or more: the symbol is cached
        cache = await request(server, "GET", f"{API}/cache?limit=5")
        one = await request(server, "GET", f"{API}/cache/aapl")
        latest = server.state.hub.latest("AAPL")
    assert latest is not None
    assert list(cache) == ["total", "returned", "limit", "data"]
    assert (cache["total"], cache["returned"], cache["limit"]) == (1, 1, 5)
    frame = PricesProtocol().encode(latest)
    update = orjson.loads(frame[frame.index(b"{") :])  # the text after the frame header
    del update["type"], update["data_type"]
    assert cache["data"]["AAPL"] == {**update, "type": latest.kind.value, "stale": False}
    assert cache["data"]["AAPL"]["name"] == "Apple"
    assert one == {"symbol": "AAPL", "data": cache["data"]["AAPL"]}


async def test_cached_states_of_a_provider_that_is_not_connected_are_marked_stale(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(Market.US)
    config = Config.from_mapping({})
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([provider]).run)
        server = MemoryServer(hub, nursery, config, client_limits(config))
        async with server.state.rest_holds:
            await request(server, "POST", f"{API}/subscribe", b'["AAPL"]')
            assert provider.link is not None
            now = provider.link.now_ns()
            provider.link.publish(Tick("AAPL", TickKind.TRADE, now, now, price=190.0, size=1))
            fresh = await request(server, "GET", f"{API}/cache/AAPL")
            provider._status.state = ProviderState.BACKING_OFF  # e.g. a cluster node without Redis
            stale = await request(server, "GET", f"{API}/cache/AAPL")
            listed = await request(server, "GET", f"{API}/cache")
        nursery.cancel_scope.cancel()
    assert (fresh["data"]["stale"], stale["data"]["stale"]) == (False, True)
    assert stale["data"]["last_price"] == 190.0  # still served: the last known state
    assert listed["data"]["AAPL"]["stale"] is True
