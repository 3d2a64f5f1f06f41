"""The simulated market: a seeded random walk per symbol that keeps its exchange's hours.

It stands in for KIS (Korean codes) or FMP (US tickers) when no keys are configured, and
is what tests and demos run against. It behaves like the market it replaces:

- **Hours.** It follows :mod:`trio_stock.market_hours` on the hub's clock
  (``link.now_ns()``): trades and quotes while the market is ``open``; quotes only (the
  indicative price of the auction moves, nothing trades) in KRX's opening and closing
  auctions; nothing at all while it is ``closed``. A symbol subscribed outside continuous
  trading gets the last trade of its day once, so a board shows the last close, then
  nothing until the open. ``always_open`` trades around the clock in one endless day
  (``--sim-always-open``, and the tests that need ticks at any hour).
- **One trading day per symbol.** Its open, high, low, volume and last trade live in the
  provider, not in the subscription: a symbol released and subscribed again continues its
  day. The next session starts a new day whose previous close is the last trade. A symbol
  first seen outside continuous trading gets a made-up last session (a short random walk
  from its starting price) so that it has a close to show. At most ``max_days`` symbols'
  days are kept (about 200 bytes each); the least recently subscribed unheld one is
  forgotten first.
- **Prices exact to the tick.** Korean prices move on the KRX tick-size grid of their price
  band, US prices in cents, with quotes one tick around the price. Internally every price
  is a whole number of won or cents; floats are made only at the :class:`Tick` boundary,
  so a low of 189.2 is ``189.2``, never ``189.20000000000002``.

Each symbol ticks as a Poisson process of ``ticks_per_second`` while its market is not
closed. For a given ``seed``, clock and sequence of subscriptions the output is identical,
run after run.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import random
import zlib

import attrs
import trio

from .. import market_hours
from ..market_hours import MarketPhase
from ..model import Market, Tick, TickKind
from ..results import FailureReason
from .contract import (
    ProviderState,
    ProviderStatistics,
    ProviderStatus,
    Subscribe,
    UpstreamLink,
)

DEFAULT_TICKS_PER_SECOND = 2.0  # per symbol
DEFAULT_KR_QUOTA = 40  # KIS_MAX_SUBSCRIPTIONS default, as the real provider
DEFAULT_US_QUOTA = 500
MAX_DAYS = 10_000  # symbols whose trading day is remembered (about 2 MB)
MADE_UP_TRADES = 240  # trades of the session made up for a symbol first seen after it
NS = 1_000_000_000

# Plausible starting prices for the codes seed 000 lists, and for well-known tickers.
KNOWN_PRICES: dict[str, float] = {
    "005930": 71_500,  # Samsung Electronics
    "000660": 178_000,  # SK hynix
    "035720": 42_000,  # Kakao
    "035420": 185_000,  # NAVER
    "051910": 350_000,  # LG Chem
    "068270": 180_000,  # Celltrion
    "006400": 390_000,  # Samsung SDI
    "207940": 780_000,  # Samsung Biologics
    "373220": 400_000,  # LG Energy Solution
    "105560": 62_000,  # KB Financial
    "AAPL": 189.45,
    "MSFT": 370.20,
    "GOOGL": 135.60,
    "AMZN": 145.10,
    "TSLA": 220.30,
    "NVDA": 480.90,
    "META": 330.40,
}

# KRX tick size by price band (unified KOSPI/KOSDAQ table, 2023): (upper bound, tick), in
# won. Every bound is a multiple of the ticks on both sides of it, so a price rounded with
# the tick of its own band is always on the grid.
KRX_TICKS: tuple[tuple[float, int], ...] = (
    (2_000, 1),
    (5_000, 5),
    (20_000, 10),
    (50_000, 50),
    (200_000, 100),
    (500_000, 500),
    (math.inf, 1_000),
)
VOLATILITY = 0.0008  # relative standard deviation of one step
SIZES = (1, 1, 5, 10, 10, 50, 100, 150, 200, 500)


def krx_tick_size(price: float) -> int:
    """The KRX tick size for ``price`` (won)."""
    for upper, tick in KRX_TICKS:
        if price < upper:
            return tick
    raise AssertionError("unreachable")


def starting_price(symbol: str, market: Market) -> float:
    """A deterministic, plausible first price for ``symbol``."""
    if symbol in KNOWN_PRICES:
        return KNOWN_PRICES[symbol]
    fraction = zlib.crc32(symbol.encode()) / 2**32
    if market is Market.KR:
        raw: float = 1_000 * math.pow(300, fraction)  # 1,000 .. 300,000 won, log-uniform
        tick = krx_tick_size(raw)
        return round(raw / tick) * tick
    return round(5 * math.pow(100, fraction), 2)  # $5 .. $500


@attrs.define(eq=False)
class _Day:
    """One symbol's trading day. Prices are whole won (KR) or cents (US)."""

    symbol: str
    session: dt.date | None  # the session's local date; None in an always-open market
    prev_close: int
    price: int  # the last trade, or the indicative price an auction has moved it to
    open: int | None = None  # None until the day's first trade
    high: int | None = None
    low: int | None = None
    volume: int = 0
    last: int | None = None  # the last trade, possibly of an earlier day
    last_size: int | None = None
    last_time_ns: int | None = None
    next_kind: TickKind = TickKind.TRADE
    ticket: int = 0  # the order of its one live entry in the schedule


class SimulatedMarket:
    """A simulated provider for one market.

    Args:
        market: ``Market.KR`` (Korean codes, KRX ticks and hours) or ``Market.US``
            (tickers, cents, New York hours).
        quota: Upstream symbol quota, as the provider it stands in for.
        ticks_per_second: Average ticks per second per symbol.
        seed: Seed of the random walk.
        name: Provider name (default ``sim-kr`` / ``sim-us``).
        always_open: Trade around the clock instead of in the market's hours.
        max_days: How many symbols' trading days are remembered (at least ``quota``).
    """

    def __init__(
        self,
        market: Market,
        *,
        quota: int | None = None,
        ticks_per_second: float = DEFAULT_TICKS_PER_SECOND,
        seed: int = 0,
        name: str | None = None,
        always_open: bool = False,
        max_days: int = MAX_DAYS,
    ) -> None:
        if ticks_per_second <= 0:
            raise ValueError("ticks_per_second must be positive")
        self._market = market
        self._quota = (
            quota
            if quota is not None
            else (DEFAULT_KR_QUOTA if market is Market.KR else DEFAULT_US_QUOTA)
        )
        self.ticks_per_second = ticks_per_second
        self.always_open = always_open
        self._max_days = max(max_days, self._quota)
        self._rng = random.Random(seed)
        self._name = name or f"sim-{market.value.lower()}"
        # Prices are whole won or cents: ``_scale`` of them make one unit of currency.
        self._scale = 1 if market is Market.KR else 100
        self._days: dict[str, _Day] = {}  # least recently subscribed first
        self._held: dict[str, _Day] = {}  # registered symbols
        self._schedule: list[tuple[float, int, str]] = []  # (due, order, symbol) heap
        self._order = 0
        self._phase = MarketPhase.OPEN
        self._session: dt.date | None = None
        self._change_ns = 0  # epoch ns of the next phase change
        self._phase_until = math.inf  # the same moment on Trio's clock
        self._status = ProviderStatus(self._name, "sim", market, live=False)

    @property
    def name(self) -> str:
        return self._name

    @property
    def market(self) -> Market:
        return self._market

    @property
    def quota(self) -> int:
        return self._quota

    @property
    def phase(self) -> MarketPhase:
        """The phase the simulation is in (``OPEN`` when always open)."""
        return self._phase

    def statistics(self) -> ProviderStatistics:
        return self._status.snapshot(self._quota)

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer commands and emit ticks until cancelled: one task, no per-tick tasks."""
        link.session_started()
        self._status.state = ProviderState.CONNECTED
        self._status.connects += 1
        self._follow_clock(link)
        task_status.started()
        try:
            while True:
                due = self._schedule[0][0] if self._schedule else math.inf
                with trio.move_on_at(min(due, self._phase_until)):
                    command = await link.commands.receive()
                    if trio.current_time() >= self._phase_until:
                        self._follow_clock(link)
                    if isinstance(command, Subscribe):
                        self._add(command, link)
                    else:
                        self._held.pop(command.symbol, None)
                    self._status.registrations = len(self._held)
                    continue
                self._emit_due(link)
        finally:
            self._status.state = ProviderState.STOPPED

    # ---- the clock ----------------------------------------------------------------------

    def _follow_clock(self, link: UpstreamLink) -> None:
        """Take the market's phase from the hub's clock, and wake up at its next change.

        Called at start and whenever Trio's clock reaches the change, never per tick.
        """
        if self.always_open:
            self._phase, self._phase_until = MarketPhase.OPEN, math.inf
            return
        now_ns = link.now_ns()
        # Trio's clock says the change is due: float rounding must not undo it.
        at = max(now_ns, self._change_ns)
        was_closed = self._phase is MarketPhase.CLOSED
        self._phase = market_hours.phase(self._market, at)
        self._session = market_hours.session_of(self._market, at)
        self._change_ns = market_hours.next_change(self._market, at)
        self._phase_until = trio.current_time() + (self._change_ns - now_ns) / NS
        if self._phase is MarketPhase.CLOSED:
            self._schedule.clear()  # nothing is sent until the next session
        elif was_closed:  # a session begins: every held symbol ticks again
            now = trio.current_time()
            for day in self._held.values():
                self._push(day, now)

    # ---- commands -----------------------------------------------------------------------

    def _add(self, command: Subscribe, link: UpstreamLink) -> None:
        symbol = command.symbol
        if symbol in self._held:
            link.registered(command)
            return
        if len(self._held) >= self._quota:
            link.rejected(command, FailureReason.QUOTA, "MAX SUBSCRIBE OVER")
            return
        day = self._day_of(symbol)
        self._held[symbol] = day
        link.registered(command)
        if self._phase is not MarketPhase.OPEN:
            # Outside continuous trading nothing would show a price: the last trade, once.
            self._roll(day)
            if day.last is not None:
                link.publish(self._snapshot(day, link.now_ns()))
        if self._phase is not MarketPhase.CLOSED:
            self._push(day, trio.current_time())

    def _day_of(self, symbol: str) -> _Day:
        """``symbol``'s day, remembered or new; it becomes the most recently used."""
        day = self._days.pop(symbol, None)
        if day is None:
            day = self._new_day(symbol)
            if len(self._days) >= self._max_days:
                oldest = next(s for s in self._days if s not in self._held)
                del self._days[oldest]
        self._days[symbol] = day
        return day

    def _new_day(self, symbol: str) -> _Day:
        start = round(starting_price(symbol, self._market) * self._scale)
        if self._phase is MarketPhase.OPEN:
            return _Day(symbol, self._session, prev_close=start, price=start)
        # Outside continuous trading: make up the last session that traded, for its close.
        assert self._session is not None
        if self._phase is MarketPhase.PRE_OPEN:
            traded = market_hours.previous_session(self._session)
        else:
            traded = self._session
        day = _Day(symbol, traded, prev_close=start, price=start)
        for _ in range(MADE_UP_TRADES):
            self._trade(day)
        day.last_time_ns = market_hours.continuous_trading(self._market, traded)[1] - NS
        return day

    # ---- ticks --------------------------------------------------------------------------

    def _push(self, day: _Day, after: float) -> None:
        """Schedule ``day``'s next tick; an entry pushed before for it no longer counts."""
        self._order += 1
        day.ticket = self._order
        due = after + self._rng.expovariate(self.ticks_per_second)
        heapq.heappush(self._schedule, (due, self._order, day.symbol))

    def _emit_due(self, link: UpstreamLink) -> None:
        now = trio.current_time()
        published = self._status.messages
        while self._schedule and self._schedule[0][0] <= now:
            due, order, symbol = self._schedule[0]
            if due >= self._phase_until:  # the phase changes first
                self._follow_clock(link)
                continue
            heapq.heappop(self._schedule)
            day = self._held.get(symbol)
            if day is None or day.ticket != order:
                continue  # unsubscribed since it was scheduled (and maybe subscribed again)
            link.publish(self._step(day, link.now_ns()))
            self._status.messages += 1
            self._push(day, due)
        if now >= self._phase_until:
            self._follow_clock(link)
        if self._status.messages != published:
            self._status.last_message_at = link.now_ns() / 1e9

    def _roll(self, day: _Day) -> None:
        """Start the current session's day if ``day`` is of an earlier one."""
        if day.session == self._session or self._phase is MarketPhase.CLOSED:
            return
        close = day.price if day.last is None else day.last
        day.session, day.prev_close, day.price = self._session, close, close
        day.open = day.high = day.low = None
        day.volume = 0

    def _tick_up(self, price: int) -> int:
        return krx_tick_size(price) if self._scale == 1 else 1

    def _tick_down(self, price: int) -> int:
        return krx_tick_size(price - 1) if self._scale == 1 else 1

    def _move(self, price: int) -> int:
        """One step of the random walk from ``price``, snapped to the tick grid."""
        target = price * math.exp(self._rng.gauss(0.0, VOLATILITY))
        tick = krx_tick_size(target) if self._scale == 1 else 1
        return max(self._tick_up(1), round(target / tick) * tick)

    def _trade(self, day: _Day) -> int:
        """A trade one step from the day's price; returns its size."""
        day.price = day.last = self._move(day.price)
        size = self._rng.choice(SIZES)
        day.volume += size
        day.last_size = size
        if day.open is None or day.high is None or day.low is None:
            day.open = day.high = day.low = day.price
        else:
            day.high, day.low = max(day.high, day.price), min(day.low, day.price)
        return size

    def _step(self, day: _Day, now_ns: int) -> Tick:
        self._roll(day)
        if self._phase is MarketPhase.OPEN:
            kind = day.next_kind
            if self._market is Market.US:  # US feeds interleave quotes and trades (FMP Q/T)
                day.next_kind = TickKind.QUOTE if self._rng.random() < 0.5 else TickKind.TRADE
        else:
            kind = TickKind.QUOTE  # an auction: orders move the indicative price
            day.price = self._move(day.price)
        size = None
        if kind is TickKind.TRADE:
            size = self._trade(day)
            day.last_time_ns = now_ns
        price = day.price
        if self._rng.random() < 0.5 and price > self._tick_down(price):
            bid, ask = price - self._tick_down(price), price
        else:
            bid, ask = price, price + self._tick_up(price)
        to_float = self._to_float
        reference = day.prev_close  # the day's open, high and low before its first trade
        return Tick(
            symbol=day.symbol,
            kind=kind,
            provider_time_ns=now_ns,
            received_ns=now_ns,
            price=to_float(price) if size is not None else None,
            size=float(size) if size is not None else None,
            bid=to_float(bid),
            bid_size=float(self._rng.randrange(1, 50) * 100),
            ask=to_float(ask),
            ask_size=float(self._rng.randrange(1, 50) * 100),
            open=to_float(reference if day.open is None else day.open),
            high=to_float(reference if day.high is None else day.high),
            low=to_float(reference if day.low is None else day.low),
            volume=float(day.volume),
            prev_close=to_float(day.prev_close),
        )

    def _snapshot(self, day: _Day, now_ns: int) -> Tick:
        """The day's last trade again, stamped with its own time (a board's last close)."""
        assert day.last is not None and day.last_size is not None
        assert day.last_time_ns is not None
        to_float = self._to_float
        reference = day.prev_close
        return Tick(
            symbol=day.symbol,
            kind=TickKind.TRADE,
            provider_time_ns=day.last_time_ns,
            received_ns=now_ns,
            price=to_float(day.last),
            size=float(day.last_size),
            open=to_float(reference if day.open is None else day.open),
            high=to_float(reference if day.high is None else day.high),
            low=to_float(reference if day.low is None else day.low),
            volume=float(day.volume),
            prev_close=to_float(day.prev_close),
        )

    def _to_float(self, units: int) -> float:
        # Correctly rounded: 18920 cents → 189.2 exactly as written, with no float noise.
        return round(units / self._scale, 2)
