"""The short history per symbol: one-minute bars from trades, bounded, and its REST endpoint.

Trades come from the scripted provider on ``MockClock``, so every bar's minute is known;
the REST answers go over memory streams to a hub of scripted providers, with auth off and
on (``GET /api/v2/realtime/history/{symbol}``).
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_stock import Config
from trio_stock.clock import WallClock
from trio_stock.hub import BAR_SECONDS, DEFAULT_HISTORY_BARS, Bar, Hub
from trio_stock.hub.history import BAR_NS, BarHistory
from trio_stock.model import Market, Tick, TickKind
from trio_stock.state import client_limits

from .clients import MemoryServer
from .conftest import EPOCH_NS
from .scripted import ScriptedProvider
from .test_security import auth_config, token

A, B, C = "000001", "000002", "000003"
API = "/api/v2/realtime"
MINUTE = 60.0  # seconds


def minute_ms(time_ns: int) -> int:
    """The start of ``time_ns``'s minute, in epoch milliseconds (a bar's ``time``)."""
    return time_ns // BAR_NS * BAR_SECONDS * 1000


async def to_next_minute(hub: Hub, offset: float = 1.0) -> int:
    """Sleep to ``offset`` seconds past the next minute's start; that minute, in epoch ms."""
    now = hub.clock.now_ns()
    await trio.sleep((BAR_NS - now % BAR_NS) / 1e9 + offset)
    return minute_ms(hub.clock.now_ns())


def quote(provider: ScriptedProvider, symbol: str, bid: float, ask: float) -> None:
    assert provider.link is not None
    now = provider.link.now_ns()
    provider.link.publish(Tick(symbol, TickKind.QUOTE, now, now, bid=bid, ask=ask, bid_size=9.0))


def trade(provider: ScriptedProvider, symbol: str, price: float, size: float | None) -> None:
    """A trade with any size, ``None`` included (``ScriptedProvider.trade`` always has one)."""
    assert provider.link is not None
    now = provider.link.now_ns()
    provider.link.publish(Tick(symbol, TickKind.TRADE, now, now, price=price, size=size))


# ---- the bars, on the hub ---------------------------------------------------------------


async def test_trades_make_one_bar_per_minute_and_quotes_make_none(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, [A])
        first = await to_next_minute(hub)
        kr.trade(A, 100.0, 10)
        await trio.sleep(10)
        kr.trade(A, 105.0, 5)
        quote(kr, A, 200.0, 201.0)  # above the high: a quote must not move it
        trade(kr, A, 98.0, None)  # no size: the low moves, the volume does not
        quote(kr, A, 50.0, 51.0)  # below the low
        assert kr.link is not None
        now = kr.link.now_ns()
        kr.link.publish(Tick(A, TickKind.CANCEL, now, now, price=1.0, size=500.0))  # a break
        kr.trade(A, 101.0, 2)
        second = await to_next_minute(hub, offset=30)
        kr.trade(A, 102.0, 1)
        await to_next_minute(hub)  # a minute without trades has no bar
        fourth = await to_next_minute(hub, offset=59)
        kr.trade(A, 99.5, 3)
        quote(kr, A, 99.0, 100.0)
        assert hub.history(A) == [
            Bar(first, 100.0, 105.0, 98.0, 101.0, 17.0),
            Bar(second, 102.0, 102.0, 102.0, 102.0, 1.0),
            Bar(fourth, 99.5, 99.5, 99.5, 99.5, 3.0),
        ]
        assert fourth - first == 3 * 60_000


async def test_a_replayed_last_trade_is_not_counted_twice(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    """A provider that republishes the last trade (the simulated market does so on a
    subscribe while closed) must not double that trade's volume."""
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, [A])
        minute = await to_next_minute(hub)
        assert kr.link is not None
        now = kr.link.now_ns()
        last = Tick(A, TickKind.TRADE, now, now, price=100.0, size=10.0)
        kr.link.publish(last)
        kr.link.publish(last)  # the same trade again: a snapshot, not a second trade
        await trio.sleep(1)
        kr.trade(A, 100.0, 10)  # a new trade at the same price and size counts
        assert hub.history(A) == [Bar(minute, 100.0, 100.0, 100.0, 100.0, 20.0)]


async def test_quotes_alone_leave_no_history(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, [A])
        for minute in range(3):
            quote(kr, A, 100.0 + minute, 101.0 + minute)
            await trio.sleep(MINUTE)
        latest = hub.latest(A)
        assert latest is not None and latest.bid == 102.0  # the quotes did arrive
        assert hub.history(A) == []
        kr.trade(A, 101.5, 4)
        [bar] = hub.history(A)
        assert (bar.open, bar.close, bar.volume) == (101.5, 101.5, 4.0)


async def test_history_keeps_the_last_60_bars_the_forming_one_last(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, [A])
        minutes = []
        for n in range(DEFAULT_HISTORY_BARS + 7):
            minutes.append(await to_next_minute(hub))
            kr.trade(A, 1000.0 + n, 1)
        await trio.sleep(20)
        kr.trade(A, 900.0, 2)  # the forming minute, still changing
        bars = hub.history("000001")
        assert len(bars) == DEFAULT_HISTORY_BARS == 60
        assert [b.time for b in bars] == minutes[-60:]
        assert bars[0].open == 1007.0
        assert bars[-1] == Bar(minutes[-1], 1066.0, 1066.0, 900.0, 900.0, 3.0)


async def test_history_is_evicted_with_the_cached_state(
    autojump_clock: trio.testing.MockClock, kr: ScriptedProvider
) -> None:
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr], cache_limit=2, linger=0, clock=WallClock(EPOCH_NS)).run)
        async with hub.subscriber() as sub:
            await hub.subscribe(sub, [A])
            kr.trade(A, 10.0, 1)
            hub.unsubscribe(sub, [A])  # released at once: A is cold, still cached
            await trio.sleep(MINUTE)
            await hub.subscribe(sub, [A])  # held again: its history goes on
            kr.trade(A, 11.0, 1)
            assert [b.close for b in hub.history(A)] == [10.0, 11.0]
            hub.unsubscribe(sub, [A])
            await hub.subscribe(sub, [B, C])
            kr.trade(B, 20.0, 1)  # the cache holds A and B: full
            assert len(hub.history(A)) == 2
            kr.trade(C, 30.0, 1)  # a third symbol evicts the cold one, A, with its bars
            assert hub.latest(A) is None
            assert hub.history(A) == []
            assert [s.symbol for s in hub.cached()] == [B, C]
            assert [b.close for b in hub.history(B)] == [20.0]
            assert [b.close for b in hub.history(C)] == [30.0]
        nursery.cancel_scope.cancel()


async def test_history_of_an_unknown_or_invalid_symbol_is_empty(
    autojump_clock: trio.testing.MockClock, hub: Hub
) -> None:
    assert hub.history(A) == []
    assert hub.history("$$") == []
    with pytest.raises(ValueError, match="at least 1"):
        Hub(history_bars=0)


# ---- the bars, without I/O --------------------------------------------------------------

T0 = 28_333_333 * BAR_NS  # a minute's start


def test_a_late_trade_is_left_out_and_a_clock_gone_back_starts_over() -> None:
    history = BarHistory(T0, 10.0, 1, limit=3)
    history.trade(T0 + BAR_NS, 11.0, 1)
    history.trade(T0 + BAR_NS - 1, 99.0, 50)  # a late print for the finished minute
    history.trade(T0 + BAR_NS + 1, 12.0, 2)
    assert history.bars() == [
        Bar(minute_ms(T0), 10.0, 10.0, 10.0, 10.0, 1.0),
        Bar(minute_ms(T0 + BAR_NS), 11.0, 12.0, 11.0, 12.0, 3.0),
    ]
    history.trade(T0 - 2 * BAR_NS, 9.0, 1)  # 3 minutes back: still within the window
    assert len(history.bars()) == 2
    history.trade(T0 - 3 * BAR_NS, 8.0, 4)  # 4 minutes back: the provider's clock went back
    assert history.bars() == [Bar(minute_ms(T0 - 3 * BAR_NS), 8.0, 8.0, 8.0, 8.0, 4.0)]


def test_a_one_bar_history_keeps_the_forming_minute_only() -> None:
    history = BarHistory(T0, 10.0, None, limit=1)
    history.trade(T0 + 5 * BAR_NS, 11.0, 2)
    assert history.bars() == [Bar(minute_ms(T0 + 5 * BAR_NS), 11.0, 11.0, 11.0, 11.0, 2.0)]
    with pytest.raises(ValueError, match="at least 1"):
        BarHistory(T0, 10.0, None, limit=0)


FULL_HISTORY_BYTES = 3_500  # the bound stated in BarHistory's docstring (3.3 KB), with room


def history_bytes(symbols: int) -> float:
    """Bytes per symbol of full 60-bar histories, kept by symbol as the hub keeps them."""
    tracemalloc.start()
    try:
        kept = {}
        for n in range(symbols):
            history = BarHistory(T0, 100.0 + n, 1.0)
            for minute in range(1, DEFAULT_HISTORY_BARS + 10):
                for k in range(3):  # fresh floats, as ticks bring them
                    history.trade(T0 + minute * BAR_NS + k, 100.0 + n + minute + k / 2, k + 1.0)
            kept[f"{n:06d}"] = history
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(len(h.bars()) == DEFAULT_HISTORY_BARS for h in kept.values())
    return size / symbols


def test_a_full_history_stays_within_its_stated_memory() -> None:
    assert history_bytes(500) < FULL_HISTORY_BYTES


# ---- the REST endpoint ------------------------------------------------------------------


@asynccontextmanager
async def scripted_server(
    config: Config,
) -> AsyncIterator[tuple[MemoryServer, ScriptedProvider, ScriptedProvider]]:
    """The server's handler over memory streams, on a hub of scripted providers."""
    kr, us = ScriptedProvider(Market.KR), ScriptedProvider(Market.US)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr, us], clock=WallClock(EPOCH_NS)).run)
        server = MemoryServer(hub, nursery, config, client_limits(config))
        async with server.state.rest_holds:
            yield server, kr, us
        nursery.cancel_scope.cancel()


async def get(server: MemoryServer, path: str, bearer: str | None = None) -> tuple[int, Any]:
    """``GET path`` over a memory stream: the status and the parsed JSON body."""
    status, body = await server.get(path, bearer)
    return status, json.loads(body)


async def trade_aapl_and_samsung(
    server: MemoryServer, kr: ScriptedProvider, us: ScriptedProvider
) -> int:
    """Two minutes of AAPL trades and one Samsung trade; AAPL's first minute, in epoch ms."""
    hub = server.state.hub
    result = await hub.subscribe(server.state.rest_holds, ["AAPL", "005930", "MSFT"])
    assert result.ok
    first = await to_next_minute(hub)
    us.trade("AAPL", 189.1, 700)
    us.trade("AAPL", 189.5, 300)
    us.trade("AAPL", 188.9, 100)
    us.trade("AAPL", 189.2, 100)
    await to_next_minute(hub)
    us.trade("AAPL", 189.3, 0.5)
    kr.trade("005930", 71_000, 12)
    quote(us, "MSFT", 400.0, 400.1)  # MSFT is cached, but has no history
    return first


async def test_rest_history_answers_the_bars_oldest_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted_server(Config.from_mapping({})) as (server, kr, us):
        first = await trade_aapl_and_samsung(server, kr, us)
        status, body = await get(server, f"{API}/history/aapl")
        assert status == 200
        assert body == {
            "symbol": "AAPL",
            "interval": 60,
            "bars": [
                {
                    "time": first,
                    "open": 189.1,
                    "high": 189.5,
                    "low": 188.9,
                    "close": 189.2,
                    "volume": 1200,
                },
                {
                    "time": first + 60_000,
                    "open": 189.3,
                    "high": 189.3,
                    "low": 189.3,
                    "close": 189.3,
                    "volume": 0.5,
                },
            ],
        }
        assert isinstance(body["bars"][0]["volume"], int)  # whole shares read as such
        status, body = await get(server, f"{API}/history/005930")
        assert (status, len(body["bars"]), body["bars"][0]["close"]) == (200, 1, 71_000)


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        (f"{API}/history/MSFT", 404, "no history for MSFT"),  # quoted, never traded
        (f"{API}/history/zzzz", 404, "no history for ZZZZ"),
        (f"{API}/history/$$", 422, "invalid symbol: '$$'"),
        (f"{API}/history/12345", 422, "invalid symbol: '12345'"),
        (f"{API}/history/", 404, "not found"),
        (f"{API}/history/AAPL/1", 404, "not found"),
    ],
)
async def test_rest_history_errors(
    autojump_clock: trio.testing.MockClock, path: str, status: int, detail: str
) -> None:
    async with scripted_server(Config.from_mapping({})) as (server, kr, us):
        await trade_aapl_and_samsung(server, kr, us)
        answer = await get(server, path)
        assert answer[0] == status
        assert answer[1]["detail"].startswith(detail)


async def test_rest_history_with_auth_follows_the_tokens_markets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted_server(auth_config()) as (server, kr, us):
        await trade_aapl_and_samsung(server, kr, us)
        status, body = await get(server, f"{API}/history/AAPL")
        assert status == 401
        assert body == {"detail": "authentication required: a bearer token"}
        assert (await get(server, f"{API}/history/AAPL", token(exp=1)))[0] == 401
        status, body = await get(server, f"{API}/history/AAPL", token())
        assert (status, body["symbol"], len(body["bars"])) == (200, "AAPL", 2)
        kr_only = token(markets=["KR"])
        status, body = await get(server, f"{API}/history/AAPL", kr_only)
        assert (status, body) == (403, {"detail": "this token is not entitled to the US market"})
        status, body = await get(server, f"{API}/history/ZZZZ", kr_only)
        assert status == 403  # the market is checked before the hub is asked
        status, body = await get(server, f"{API}/history/005930", kr_only)
        assert (status, body["symbol"]) == (200, "005930")
