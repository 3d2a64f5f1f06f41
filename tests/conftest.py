from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
import trio

from trio_stock.clock import WallClock
from trio_stock.hub import Hub
from trio_stock.model import Market

from .scripted import ScriptedProvider

EPOCH_NS = 1_700_000_000_000_000_000  # a fixed wall-clock anchor for deterministic times
NS = 1_000_000_000


def at(
    zone: dt.tzinfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
) -> int:
    """Epoch nanoseconds of a local time: ``at(KST, 2024, 3, 13, 9, 0)``."""
    local = dt.datetime(year, month, day, hour, minute, second, tzinfo=zone)
    return int(local.timestamp()) * NS


@pytest.fixture
def kr() -> ScriptedProvider:
    return ScriptedProvider(Market.KR, quota=3)


@pytest.fixture
async def hub(kr: ScriptedProvider) -> AsyncIterator[Hub]:
    """A running hub with a scripted Korean provider (quota 3, linger 5 s, ack timeout 10 s)."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(Hub([kr], clock=WallClock(EPOCH_NS)).run)
        nursery.cancel_scope.cancel()
