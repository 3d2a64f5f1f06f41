"""The watch command's model of the screen: one row per symbol, the connection, the rates.

Everything here is plain state changed by plain calls with the time passed in (Trio's clock
in the command, numbers in the tests); drawing it is :mod:`.render`'s job, reading the
stream and the keyboard :mod:`.command`'s.
"""

from __future__ import annotations

import enum
import math

import attrs

from ..client import (
    Connected,
    Disconnected,
    PriceUpdate,
    StreamEvent,
    StreamStatistics,
    SubscriptionFailed,
)
from ..model import Market
from ..symbols import normalize_symbol

RATE_BUCKETS = 5  # one-second buckets: the rate is that of the last four whole seconds


@attrs.define(eq=False)
class RateMeter:
    """Events per second over the last few whole seconds, in constant memory.

    A ring of per-second counts rather than a time per event: the memory stays the same at
    any tick rate. The current second is left out until it is over, so the number does not
    jump about within a second.
    """

    counts: list[int] = attrs.Factory(lambda: [0] * RATE_BUCKETS)
    second: int | None = None  # the whole second the newest bucket counts

    def record(self, now: float) -> None:
        """Count one event at ``now`` (seconds)."""
        self._advance(now)
        self.counts[math.floor(now) % RATE_BUCKETS] += 1

    def per_second(self, now: float) -> float:
        """Events per second over the whole seconds before ``now``'s."""
        self._advance(now)
        current = math.floor(now) % RATE_BUCKETS
        finished = sum(c for i, c in enumerate(self.counts) if i != current)
        return finished / (RATE_BUCKETS - 1)

    def _advance(self, now: float) -> None:
        second = math.floor(now)
        if self.second is not None:
            # Empty the buckets of the seconds that passed without an event.
            for passed in range(self.second + 1, min(second, self.second + RATE_BUCKETS) + 1):
                self.counts[passed % RATE_BUCKETS] = 0
        if self.second is None or second > self.second:
            self.second = second


@attrs.define(eq=False)
class Row:
    """One watched symbol: its latest state and how often it changes."""

    symbol: str
    market: Market
    latest: PriceUpdate | None = None
    last_trade_ms: int | None = None  # a quote does not move it
    rate: RateMeter = attrs.Factory(RateMeter)
    failure: str | None = None  # why the gateway would not subscribe it


class Link(enum.Enum):
    """Where the connection to the gateway stands."""

    CONNECTING = "connecting"  # the first attempt, not answered yet
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # lost or refused; the next try is scheduled


@attrs.define(eq=False)
class Board:
    """What the watch shows: rows in the order added, the connection and a note."""

    url: str
    rows: dict[str, Row] = attrs.Factory(dict)
    link: Link = Link.CONNECTING
    failed_tries: int = 0  # tries to connect that failed since the last connection
    retry_at: float | None = None  # when the stream tries again (Trio time)
    close_reason: str | None = None  # why the last connection ended
    rate: RateMeter = attrs.Factory(RateMeter)
    note: str | None = None  # the latest thing the user should read (a refusal, bad input)
    typing: str = ""  # the command line being typed, drawn under the table
    statistics: StreamStatistics | None = None

    def add(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        """Add rows for ``symbols`` (canonical); return those that were new."""
        new = tuple(s for s in symbols if s not in self.rows)
        for symbol in new:
            self.rows[symbol] = Row(symbol, normalize_symbol(symbol)[1])
        return new

    def remove(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        """Drop the rows of ``symbols``; return those that were there."""
        return tuple(s for s in symbols if self.rows.pop(s, None) is not None)

    def apply(self, item: PriceUpdate | StreamEvent, now: float) -> Row | None:
        """Take in what the stream yielded at ``now``; return the row an update changed.

        An update of a symbol no longer on the board (one removed while its last updates
        were on the way) changes nothing and returns ``None``.
        """
        if isinstance(item, PriceUpdate):
            return self._update(item, now)
        if isinstance(item, Connected):
            self.link, self.failed_tries, self.retry_at = Link.CONNECTED, 0, None
        elif isinstance(item, Disconnected):
            # The stream numbers its tries from the last connection: a connection that
            # was lost is not a failed try, the tries after it are.
            lost = self.link is Link.CONNECTED
            self.failed_tries = 0 if lost else self.failed_tries + 1
            self.link = Link.RECONNECTING
            self.retry_at = now + item.retry_in
            self.close_reason = item.reason
        elif isinstance(item, SubscriptionFailed):
            for symbol in item.symbols:
                if symbol in self.rows:
                    self.rows[symbol].failure = item.message
            self.note = f"{', '.join(item.symbols)}: {item.message}"
        return None

    def _update(self, update: PriceUpdate, now: float) -> Row | None:
        row = self.rows.get(update.symbol)
        if row is None:
            return None
        row.latest, row.failure = update, None
        if update.kind == "T":
            row.last_trade_ms = update.timestamp_ms
        row.rate.record(now)
        self.rate.record(now)
        return row
