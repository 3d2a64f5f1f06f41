"""trio_stock.client against the real gateway on 127.0.0.1, on Trio's mock clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

import trio_stock
from trio_stock import Config, Gateway
from trio_stock.client import (
    Connected,
    PriceStream,
    PriceUpdate,
    StreamEvent,
    open_price_stream,
)

Item = PriceUpdate | StreamEvent


def sim_config(port: int = 0, **settings: str) -> Config:
    return Config.from_mapping(
        {
            "TRIO_STOCK_PORT": str(port),
            "TRIO_STOCK_SIM_ALWAYS_OPEN": "1",
            "TRIO_STOCK_SIM_TICKS_PER_SECOND": "5",
            **settings,
        }
    )


@asynccontextmanager
async def gateway(config: Config | None = None) -> AsyncIterator[Gateway]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(trio_stock.serve, config or sim_config())
        nursery.cancel_scope.cancel()


def url_of(served: Gateway) -> str:
    return f"ws://127.0.0.1:{served.port}"


async def next_item(stream: PriceStream) -> Item:
    """The stream's next item; fails the test if none comes within 60 virtual seconds."""
    with trio.fail_after(60):
        return await anext(stream)


async def updates_of(stream: PriceStream, count: int) -> list[PriceUpdate]:
    """The next ``count`` updates, events in between skipped."""
    updates: list[PriceUpdate] = []
    while len(updates) < count:
        item = await next_item(stream)
        if isinstance(item, PriceUpdate):
            updates.append(item)
    return updates


async def test_a_stream_connects_and_receives_typed_updates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gateway() as served, open_price_stream(url_of(served), ["aapl", "005930"]) as s:
        first = await next_item(s)
        assert first == Connected(f"ws://127.0.0.1:{served.port}", attempt=1)
        updates = await updates_of(s, 20)
        assert {u.symbol for u in updates} == {"AAPL", "005930"}
        assert {u.market for u in updates} == {"US", "KR"}
        assert {u.provider for u in updates} == {"sim-us", "sim-kr"}
        assert {u.kind for u in updates} <= {"T", "Q", "B"}
        assert all(u.gap is None and u.epoch is not None for u in updates)
        for symbol in ("AAPL", "005930"):
            seqs = [u.seq for u in updates if u.symbol == symbol]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing skipped
        stats = s.statistics()
        assert stats.connected and stats.reconnects == 0 and stats.gaps == 0
        assert stats.symbols == ("AAPL", "005930")
        assert stats.updates >= 20
