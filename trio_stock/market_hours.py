"""Trading hours of the markets the gateway serves, in their own time zones. Pure: no I/O.

Each market has one weekday schedule, the local times at which its phases begin:

========  ==================  ================================================
market    time zone           Monday to Friday
========  ==================  ================================================
KR (KRX)  Asia/Seoul (KST)    08:30 pre_open (opening auction: quotes, no trades),
                              09:00 open, 15:20 closing (closing auction),
                              15:30 closed
US        America/New_York    09:30 open, 16:00 closed (daylight saving through
                              ``zoneinfo``; the ``tzdata`` package supplies the
                              rules where the system has none)
========  ==================  ================================================

Saturdays and Sundays are closed. Holidays and shortened days (KRX's New Year opening at
10:00, the US half days) are not modelled: on a holiday these functions say the market
trades. A *session* is one weekday's run of phases, named by its local date; the
simulated market keeps one trading day per session (:mod:`trio_stock.upstream.sim`).

Times are nanoseconds since the Unix epoch, as everywhere in the gateway, so the callers'
clocks (``link.now_ns()``, a fixed ``WallClock`` in tests) decide what "now" is.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from zoneinfo import ZoneInfo

import attrs

from .clock import KST
from .model import Market

NS = 1_000_000_000
FRIDAY = 4  # datetime.weekday()


class MarketPhase(enum.Enum):
    """Where a market's trading day stands."""

    PRE_OPEN = "pre_open"  # opening auction: orders and quotes, no trades
    OPEN = "open"  # continuous trading
    CLOSING = "closing"  # KRX closing auction: quotes, no trades
    CLOSED = "closed"


@attrs.frozen
class Schedule:
    """A market's weekday phases: ``(local start time, phase)`` in order, the last one
    ``CLOSED`` (which lasts until the next weekday's first phase)."""

    zone: dt.tzinfo
    phases: tuple[tuple[dt.time, MarketPhase], ...]

    @property
    def opens(self) -> dt.time:
        """When continuous trading starts."""
        return next(t for t, p in self.phases if p is MarketPhase.OPEN)

    @property
    def closes(self) -> dt.time:
        """When continuous trading ends (a closing auction may follow)."""
        index = next(i for i, (_, p) in enumerate(self.phases) if p is MarketPhase.OPEN)
        return self.phases[index + 1][0]


SCHEDULES: Mapping[Market, Schedule] = {
    Market.KR: Schedule(
        KST,
        (
            (dt.time(8, 30), MarketPhase.PRE_OPEN),
            (dt.time(9, 0), MarketPhase.OPEN),
            (dt.time(15, 20), MarketPhase.CLOSING),
            (dt.time(15, 30), MarketPhase.CLOSED),
        ),
    ),
    Market.US: Schedule(
        ZoneInfo("America/New_York"),
        (
            (dt.time(9, 30), MarketPhase.OPEN),
            (dt.time(16, 0), MarketPhase.CLOSED),
        ),
    ),
}


def _local(schedule: Schedule, epoch_ns: int) -> dt.datetime:
    # Whole seconds are enough: every phase starts on a whole minute.
    return dt.datetime.fromtimestamp(epoch_ns // NS, schedule.zone)


def _epoch_ns(schedule: Schedule, day: dt.date, time: dt.time) -> int:
    local = dt.datetime.combine(day, time, tzinfo=schedule.zone)
    return int(local.timestamp()) * NS  # a whole second: exact


def phase(market: Market, epoch_ns: int) -> MarketPhase:
    """The phase of ``market`` at ``epoch_ns``."""
    schedule = SCHEDULES[market]
    local = _local(schedule, epoch_ns)
    if local.weekday() > FRIDAY:
        return MarketPhase.CLOSED
    now = local.time()
    current = MarketPhase.CLOSED  # before the first phase of the day
    for start, later in schedule.phases:
        if now < start:
            break
        current = later
    return current


def next_change(market: Market, epoch_ns: int) -> int:
    """Epoch nanoseconds of the first phase change of ``market`` after ``epoch_ns``."""
    schedule = SCHEDULES[market]
    day = _local(schedule, epoch_ns).date()
    for _ in range(8):  # a weekday with a change later than now is at most 3 days away
        if day.weekday() <= FRIDAY:
            for start, _phase in schedule.phases:
                at = _epoch_ns(schedule, day, start)
                if at > epoch_ns:
                    return at
        day += dt.timedelta(days=1)
    raise AssertionError("unreachable: every week has a weekday")


def session_of(market: Market, epoch_ns: int) -> dt.date:
    """The local date of the latest session that began at or before ``epoch_ns``.

    Saturday, Sunday and Monday before the pre-open belong to Friday's session.
    """
    schedule = SCHEDULES[market]
    local = _local(schedule, epoch_ns)
    day = local.date()
    if local.weekday() <= FRIDAY and local.time() >= schedule.phases[0][0]:
        return day
    return previous_session(day)


def previous_session(day: dt.date) -> dt.date:
    """The weekday before ``day``."""
    day -= dt.timedelta(days=1)
    while day.weekday() > FRIDAY:
        day -= dt.timedelta(days=1)
    return day


def continuous_trading(market: Market, day: dt.date) -> tuple[int, int]:
    """Epoch nanoseconds of the open and the end of continuous trading on session ``day``."""
    schedule = SCHEDULES[market]
    return _epoch_ns(schedule, day, schedule.opens), _epoch_ns(schedule, day, schedule.closes)
