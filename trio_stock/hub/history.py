"""A short price history per symbol: one-minute bars built from trades, bounded in memory.

The hub keeps one :class:`BarHistory` per symbol that has traded, next to its latest state
and evicted with it, so a client can draw a chart at once instead of starting empty
(``GET /api/v2/realtime/history/{symbol}``). Only trades with a price make bars: quotes and
trade breaks do not. A bar covers one minute of the provider's time
(``Tick.provider_time_ns``); minutes without trades have no bar; a bar's volume is the sum
of its trades' sizes (a trade without a size adds nothing).

Updating the forming bar is on the per-tick path (``Hub.publish``): one integer division for
the minute, one comparison with the forming bar's minute, then high/low/close/volume. Only a
new minute does more: the finished bar is appended to a flat ``array('d')`` of six numbers
per bar, and the oldest is dropped once the history is full.
"""

from __future__ import annotations

from array import array

import attrs

BAR_SECONDS = 60
BAR_NS = BAR_SECONDS * 1_000_000_000
DEFAULT_HISTORY_BARS = 60  # bars per symbol, the forming one included

# A finished bar in the flat array: minute (epoch minutes), open, high, low, close, volume.
# Doubles hold every epoch minute and every price exactly (Python floats are doubles).
_WIDTH = 6
_MINUTE_MS = BAR_SECONDS * 1000


@attrs.frozen
class Bar:
    """One minute of trades.

    ``time`` is the minute's start in epoch milliseconds (provider time); ``volume`` the
    sum of the trades' sizes.
    """

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class BarHistory:
    """The last ``limit`` one-minute bars of one symbol, the forming one included.

    Memory: 3.3 KB per symbol with a full history of 60 bars, measured with tracemalloc
    (``tests/test_history.py``): the array of 59 finished bars at 48 bytes each (3,048
    bytes with its header and growth room), this object (96 bytes, slots), the forming
    bar's numbers and the hub's dict entry. The hub's 10,000-symbol cache bound so caps all
    histories at about 33 MB; a symbol that traded for a few minutes holds a few hundred
    bytes. (Sixty ``Bar`` objects would take 15 KB.)

    A trade older than the forming bar's minute (a late print) is left out: bars are never
    reopened. More than ``limit`` minutes older means the provider's clock went back
    (a new session, a replay): the history starts over from that trade.

    Args:
        time_ns: The first trade's provider time, epoch nanoseconds.
        price: Its price.
        size: Its size, if known.
        limit: Bars kept, the forming one included (at least 1).
    """

    __slots__ = ("_finished", "_limit", "close", "high", "low", "minute", "open", "volume")

    def __init__(
        self, time_ns: int, price: float, size: float | None, limit: int = DEFAULT_HISTORY_BARS
    ) -> None:
        if limit < 1:
            raise ValueError(f"a history keeps at least 1 bar, not {limit}")
        self._limit = limit
        self._finished = array("d")
        self._start(time_ns // BAR_NS, price, size)

    def _start(self, minute: int, price: float, size: float | None) -> None:
        self.minute = minute
        self.open = self.high = self.low = self.close = price
        self.volume = float(size or 0.0)

    def trade(self, time_ns: int, price: float, size: float | None) -> None:
        """Fold one trade in. The hot path: the trade falls in the forming minute."""
        minute = time_ns // BAR_NS
        if minute == self.minute:
            if price > self.high:
                self.high = price
            elif price < self.low:
                self.low = price
            self.close = price
            if size:
                self.volume += size
        elif minute > self.minute:
            self._finish()
            self._start(minute, price, size)
        elif minute < self.minute - self._limit:
            del self._finished[:]
            self._start(minute, price, size)

    def _finish(self) -> None:
        finished = self._finished
        finished.extend((self.minute, self.open, self.high, self.low, self.close, self.volume))
        if len(finished) >= self._limit * _WIDTH:  # the forming bar takes the last place
            del finished[:_WIDTH]

    def bars(self) -> list[Bar]:
        """The bars, oldest first, the forming one last."""
        rows = [self._finished[i : i + _WIDTH] for i in range(0, len(self._finished), _WIDTH)]
        bars = [Bar(int(m) * _MINUTE_MS, o, h, lo, c, v) for m, o, h, lo, c, v in rows]
        minute_ms = self.minute * _MINUTE_MS
        bars.append(Bar(minute_ms, self.open, self.high, self.low, self.close, self.volume))
        return bars
