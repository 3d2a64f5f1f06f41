"""The simulated market: a seeded random walk per symbol, driven only by Trio's clock.

It stands in for KIS (Korean codes) or FMP (US tickers) when no keys are configured, and
is what tests and demos run against. Prices are realistic: Korean prices move on the KRX
tick-size grid of their price band, US prices in cents, with quotes one tick around the
last trade. Each symbol ticks as a Poisson process of ``ticks_per_second``. For a given
``seed`` and the same sequence of subscriptions the output is identical, run after run.
"""

from __future__ import annotations

import heapq
import math
import random
import zlib

import attrs
import trio

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

# KRX tick size by price band (unified KOSPI/KOSDAQ table, 2023): (upper bound, tick).
KRX_TICKS: tuple[tuple[float, float], ...] = (
    (2_000, 1),
    (5_000, 5),
    (20_000, 10),
    (50_000, 50),
    (200_000, 100),
    (500_000, 500),
    (math.inf, 1_000),
)
VOLATILITY = 0.0008  # relative standard deviation of one step


def krx_tick_size(price: float) -> float:
    """The KRX tick size for ``price``."""
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
class _Walk:
    """One symbol's simulated day."""

    symbol: str
    price: float
    prev_close: float
    open: float
    high: float
    low: float
    volume: float = 0.0
    next_kind: TickKind = TickKind.TRADE


class SimulatedMarket:
    """A simulated provider for one market.

    Args:
        market: ``Market.KR`` (Korean codes, KRX ticks) or ``Market.US`` (tickers, cents).
        quota: Upstream symbol quota, as the provider it stands in for.
        ticks_per_second: Average ticks per second per symbol.
        seed: Seed of the random walk.
        name: Provider name (default ``sim-kr`` / ``sim-us``).
    """

    def __init__(
        self,
        market: Market,
        *,
        quota: int | None = None,
        ticks_per_second: float = DEFAULT_TICKS_PER_SECOND,
        seed: int = 0,
        name: str | None = None,
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
        self._rng = random.Random(seed)
        self._name = name or f"sim-{market.value.lower()}"
        self._walks: dict[str, _Walk] = {}
        self._schedule: list[tuple[float, int, str]] = []  # (due, order, symbol) heap
        self._order = 0
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

    def statistics(self) -> ProviderStatistics:
        return self._status.snapshot(self._quota)

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer commands and emit ticks until cancelled: one task, no per-tick tasks."""
        link.session_started()
        self._status.state = ProviderState.CONNECTED
        self._status.connects += 1
        task_status.started()
        try:
            while True:
                due = self._schedule[0][0] if self._schedule else math.inf
                with trio.move_on_at(due):
                    command = await link.commands.receive()
                    if isinstance(command, Subscribe):
                        self._add(command, link)
                    else:
                        self._walks.pop(command.symbol, None)
                    self._status.registrations = len(self._walks)
                    continue
                self._emit_due(link)
        finally:
            self._status.state = ProviderState.STOPPED

    def _add(self, command: Subscribe, link: UpstreamLink) -> None:
        symbol = command.symbol
        if symbol in self._walks:
            link.registered(command)
            return
        if len(self._walks) >= self._quota:
            link.rejected(command, FailureReason.QUOTA, "MAX SUBSCRIBE OVER")
            return
        first = starting_price(symbol, self._market)
        self._walks[symbol] = _Walk(
            symbol, first, prev_close=first, open=first, high=first, low=first
        )
        link.registered(command)
        self._push(symbol, trio.current_time())

    def _push(self, symbol: str, after: float) -> None:
        self._order += 1
        due = after + self._rng.expovariate(self.ticks_per_second)
        heapq.heappush(self._schedule, (due, self._order, symbol))

    def _emit_due(self, link: UpstreamLink) -> None:
        now = trio.current_time()
        while self._schedule and self._schedule[0][0] <= now:
            due, _, symbol = heapq.heappop(self._schedule)
            walk = self._walks.get(symbol)
            if walk is None:
                continue  # unsubscribed since it was scheduled
            link.publish(self._step(walk, link.now_ns()))
            self._status.messages += 1
            self._push(symbol, due)
        self._status.last_message_at = link.now_ns() / 1e9

    def _step(self, walk: _Walk, now_ns: int) -> Tick:
        tick_size = krx_tick_size(walk.price) if self._market is Market.KR else 0.01
        kind = walk.next_kind
        if self._market is Market.US:  # US feeds interleave quotes and trades (FMP Q/T)
            walk.next_kind = TickKind.QUOTE if self._rng.random() < 0.5 else TickKind.TRADE
        if kind is TickKind.TRADE:
            target = walk.price * math.exp(self._rng.gauss(0.0, VOLATILITY))
            walk.price = max(tick_size, round(target / tick_size) * tick_size)
            walk.high, walk.low = max(walk.high, walk.price), min(walk.low, walk.price)
        size = float(self._rng.choice((1, 1, 5, 10, 10, 50, 100, 150, 200, 500)))
        if kind is TickKind.TRADE:
            walk.volume += size
        bid = walk.price - tick_size * self._rng.choice((0, 1))
        ask = bid + tick_size
        if self._market is Market.US:
            walk.price, bid, ask = round(walk.price, 2), round(bid, 2), round(ask, 2)
        return Tick(
            symbol=walk.symbol,
            kind=kind,
            provider_time_ns=now_ns,
            received_ns=now_ns,
            price=walk.price if kind is TickKind.TRADE else None,
            size=size if kind is TickKind.TRADE else None,
            bid=bid,
            bid_size=float(self._rng.randrange(1, 50) * 100),
            ask=ask,
            ask_size=float(self._rng.randrange(1, 50) * 100),
            open=walk.open,
            high=walk.high,
            low=walk.low,
            volume=walk.volume,
            prev_close=walk.prev_close,
        )
