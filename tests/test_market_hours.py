"""Trading hours: KRX's phases in Korean time, New York's with daylight saving, weekends,
the next change, and the ``markets`` block of health and status on a fixed clock."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from zoneinfo import ZoneInfo

import orjson
import pytest
import trio
import trio.testing

from trio_stock.clock import KST, WallClock
from trio_stock.config import Config
from trio_stock.market_hours import MarketPhase, next_change, phase, session_of
from trio_stock.model import Market

from .clients import memory_server
from .conftest import NS, at

NEW_YORK = ZoneInfo("America/New_York")
OPEN, CLOSED = MarketPhase.OPEN, MarketPhase.CLOSED


def utc(epoch_ns: int) -> str:
    return dt.datetime.fromtimestamp(epoch_ns // NS, dt.UTC).isoformat()


@pytest.mark.parametrize(
    ("hour", "minute", "second", "expected"),
    [
        (0, 0, 0, CLOSED),
        (8, 29, 59, CLOSED),
        (8, 30, 0, MarketPhase.PRE_OPEN),
        (8, 59, 59, MarketPhase.PRE_OPEN),
        (9, 0, 0, OPEN),
        (15, 19, 59, OPEN),
        (15, 20, 0, MarketPhase.CLOSING),
        (15, 29, 59, MarketPhase.CLOSING),
        (15, 30, 0, CLOSED),
        (23, 59, 59, CLOSED),
    ],
)
def test_krx_phases_on_a_weekday_in_korean_time(
    hour: int, minute: int, second: int, expected: MarketPhase
) -> None:
    assert phase(Market.KR, at(KST, 2024, 3, 13, hour, minute, second)) is expected


def test_krx_is_closed_on_weekends() -> None:
    for day in (16, 17):  # Saturday, Sunday
        for hour in range(24):
            assert phase(Market.KR, at(KST, 2024, 3, day, hour, 0)) is CLOSED
    assert phase(Market.KR, at(KST, 2024, 3, 18, 9, 0)) is OPEN  # Monday


def test_krx_next_changes() -> None:
    assert utc(next_change(Market.KR, at(KST, 2024, 3, 13, 10, 0))) == "2024-03-13T06:20:00+00:00"
    assert next_change(Market.KR, at(KST, 2024, 3, 13, 8, 30)) == at(KST, 2024, 3, 13, 9, 0)
    # Friday after the close: Monday's opening auction.
    friday = at(KST, 2024, 3, 15, 15, 30)
    assert next_change(Market.KR, friday) == at(KST, 2024, 3, 18, 8, 30)


@pytest.mark.parametrize(
    ("day", "open_utc", "close_utc"),
    [
        ((2024, 3, 8), "14:30", "21:00"),  # standard time (UTC-5)
        ((2024, 3, 11), "13:30", "20:00"),  # the Monday after the spring switch (UTC-4)
        ((2024, 7, 1), "13:30", "20:00"),
        ((2024, 11, 1), "13:30", "20:00"),  # the Friday before the autumn switch
        ((2024, 11, 4), "14:30", "21:00"),
    ],
)
def test_new_york_hours_follow_daylight_saving(
    day: tuple[int, int, int], open_utc: str, close_utc: str
) -> None:
    before_open = at(NEW_YORK, *day, 9, 29, 59)
    assert phase(Market.US, before_open) is CLOSED
    opens = next_change(Market.US, before_open)
    assert utc(opens) == f"{dt.date(*day).isoformat()}T{open_utc}:00+00:00"
    assert phase(Market.US, opens) is OPEN
    closes = next_change(Market.US, opens)
    assert utc(closes) == f"{dt.date(*day).isoformat()}T{close_utc}:00+00:00"
    assert phase(Market.US, closes - 1) is OPEN  # the last nanosecond: still open
    assert phase(Market.US, closes) is CLOSED


def test_the_same_utc_instant_is_closed_in_winter_and_open_in_summer() -> None:
    assert phase(Market.US, at(dt.UTC, 2024, 3, 8, 13, 45)) is CLOSED  # 08:45 EST
    assert phase(Market.US, at(dt.UTC, 2024, 3, 11, 13, 45)) is OPEN  # 09:45 EDT


def test_us_weekend_spans_the_daylight_saving_switch() -> None:
    friday_close = at(NEW_YORK, 2024, 3, 8, 16, 0)
    assert next_change(Market.US, friday_close) == at(NEW_YORK, 2024, 3, 11, 9, 30)
    assert (at(NEW_YORK, 2024, 3, 11, 9, 30) - friday_close) // NS == (65 * 3600 + 30 * 60) - 3600


@pytest.mark.parametrize("market", list(Market))
def test_next_change_is_the_first_moment_of_another_phase(market: Market) -> None:
    """Over two weeks around a switch of daylight saving, every 7 minutes."""
    start = at(dt.UTC, 2024, 3, 4, 0, 0)
    for step in range(0, 14 * 24 * 60, 7):
        now = start + step * 60 * NS
        change = next_change(market, now)
        assert now < change <= now + 3 * 24 * 3600 * NS
        assert phase(market, change) is not phase(market, now)
        assert phase(market, change - NS) is phase(market, now)


def test_sessions_are_named_by_their_local_date() -> None:
    monday_early = at(KST, 2024, 3, 18, 7, 0)
    assert session_of(Market.KR, monday_early) == dt.date(2024, 3, 15)  # Friday's
    assert session_of(Market.KR, at(KST, 2024, 3, 18, 8, 30)) == dt.date(2024, 3, 18)
    assert session_of(Market.KR, at(KST, 2024, 3, 16, 12, 0)) == dt.date(2024, 3, 15)
    # 01:00 UTC on Tuesday is Monday evening in New York: Monday's session.
    assert session_of(Market.US, at(dt.UTC, 2024, 3, 12, 1, 0)) == dt.date(2024, 3, 11)


def test_new_york_rules_come_from_the_tzdata_package_without_system_files() -> None:
    """A machine without /usr/share/zoneinfo still knows New York (pyproject: tzdata)."""
    zoneinfo.reset_tzpath(to=[])
    try:
        zone = ZoneInfo.no_cache("America/New_York")
    finally:
        zoneinfo.reset_tzpath()
    assert dt.datetime(2024, 7, 1, 12, tzinfo=zone).utcoffset() == dt.timedelta(hours=-4)


@pytest.mark.parametrize("path", ["health", "status"])
async def test_health_and_status_say_each_markets_phase_and_next_change(
    autojump_clock: trio.testing.MockClock, path: str
) -> None:
    # Wednesday 10:00 in Seoul is Tuesday 21:00 in New York.
    clock = WallClock(at(KST, 2024, 3, 13, 10, 0))
    async with memory_server(Config(), clock=clock) as server:
        body = await server.get_json(f"/api/v2/realtime/{path}")
        await trio.sleep(5 * 3600 + 25 * 60)  # 15:25: the closing auction
        later = await server.get_json(f"/api/v2/realtime/{path}")
    assert body["markets"] == {
        "KR": {"phase": "open", "next_change": "2024-03-13T06:20:00+00:00"},
        "US": {"phase": "closed", "next_change": "2024-03-13T13:30:00+00:00"},
    }
    assert later["markets"]["KR"] == {
        "phase": "closing",
        "next_change": "2024-03-13T06:30:00+00:00",
    }


async def test_an_always_open_simulated_market_reports_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config.from_mapping({"TRIO_STOCK_SIM_ALWAYS_OPEN": "true"})
    async with memory_server(config) as server:
        stream = server.connect_stream()
        await stream.send_all(
            b"GET /api/v2/realtime/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    markets = orjson.loads(data.partition(b"\r\n\r\n")[2])["markets"]
    assert markets == {
        "KR": {"phase": "open", "next_change": None},
        "US": {"phase": "open", "next_change": None},
    }
