"""Values that flow through the gateway: markets, ticks and the merged per-symbol state.

A provider turns each upstream record into a :class:`Tick`. The hub folds ticks into one
:class:`SymbolState` per symbol (last trade, best bid/ask, day statistics) and hands that
same object to every subscriber of the symbol: it is both the cache entry and the update.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from .names import name_of


class Market(enum.Enum):
    """Which market (and so which provider) a symbol belongs to."""

    KR = "KR"  # Korean stocks: 6-digit codes (KIS or simulated)
    US = "US"  # US stocks: tickers (FMP or simulated)


class TickKind(enum.Enum):
    """What an upstream record reports. Values are FMP's `type` letters (seed 003 `data_type`)."""

    TRADE = "T"
    QUOTE = "Q"
    CANCEL = "B"  # a trade break / cancel


@attrs.frozen(slots=True)
class Tick:
    """One upstream record, normalised. Fields a record does not carry are ``None``.

    Times are nanoseconds since the Unix epoch. ``received_ns`` is when the gateway read the
    frame, so latency can be told apart from the provider's own clock.
    """

    symbol: str
    kind: TickKind
    provider_time_ns: int
    received_ns: int
    price: float | None = None
    size: float | None = None
    bid: float | None = None
    bid_size: float | None = None
    ask: float | None = None
    ask_size: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    volume: float | None = None  # accumulated day volume
    prev_close: float | None = None
    change: float | None = None  # vs previous close
    change_rate: float | None = None  # percent vs previous close
    record_seq: str = "001"  # KIS frame record count field; seed 000 calls it `symbol`


@attrs.frozen(slots=True)
class SymbolState:
    """The merged latest state of one symbol after a tick: the cache entry and the update.

    ``seq`` grows by one with every tick of the symbol (never reused, never reordered), and
    ``epoch`` is the provider's session number: it changes when the upstream session restarts.
    ``kind`` is the kind of the tick that produced this state (seed 003 ``data_type``).
    """

    symbol: str
    market: Market
    provider: str
    seq: int
    epoch: int
    kind: TickKind
    provider_time_ns: int
    received_ns: int
    last_price: float | None = None
    last_size: float | None = None
    last_time_ns: int | None = None
    bid: float | None = None
    bid_size: float | None = None
    ask: float | None = None
    ask_size: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    volume: float | None = None
    prev_close: float | None = None
    change: float | None = None
    change_rate: float | None = None
    record_seq: str = "001"
    name: str | None = None  # e.g. "삼성전자", "Apple" (names.py); None when not known
    # The seq of the state whose tick was the last trade (0: none yet). A quote keeps it, so
    # a consumer that shows trades only can tell a state carrying a trade it has not shown.
    trade_seq: int = 0
    # Each wire format encodes a state once; every subscriber then sends the same bytes.
    # Client writers read it directly (``wire.get(name)``): the hottest lookup there is.
    wire: dict[str, bytes] = attrs.field(init=False, factory=dict, eq=False, repr=False)

    def encoded(self, wire_format: str, encode: Callable[[SymbolState], bytes]) -> bytes:
        """Return this state in ``wire_format``, encoding it on first use only."""
        text = self.wire.get(wire_format)
        if text is None:
            text = self.wire[wire_format] = encode(self)
        return text


def merge(
    prev: SymbolState | None, tick: Tick, *, market: Market, provider: str, epoch: int
) -> SymbolState:
    """Fold ``tick`` into the previous state and return the new state.

    A trade moves the last price and size; a quote moves bid/ask and keeps the last trade; a
    cancel (``B``) is reported with its kind but does not move the last price, because a
    break corrects history and the next trade sets the price again. Day statistics and
    bid/ask carried by any tick (KIS trades carry best bid/ask) are taken when present.
    Change vs the previous close is taken from the provider or derived from ``prev_close``.
    The name is looked up once, for a symbol's first state, and carried from then on.
    """
    if prev is None:
        prev = _EMPTY
        seq = 1
        name = name_of(tick.symbol)
    else:
        seq = prev.seq + 1
        name = prev.name
    last_price, last_size, last_time = prev.last_price, prev.last_size, prev.last_time_ns
    trade_seq = prev.trade_seq
    if tick.kind is TickKind.TRADE and tick.price is not None:
        last_price, last_size, last_time = tick.price, tick.size, tick.provider_time_ns
        trade_seq = seq
    prev_close = _pick(tick.prev_close, prev.prev_close)
    change, change_rate = tick.change, tick.change_rate
    if change is None and prev_close and last_price is not None:
        change = round(last_price - prev_close, 6)
        change_rate = round(change / prev_close * 100.0, 2)
    elif change is None:
        change, change_rate = prev.change, prev.change_rate
    return SymbolState(
        symbol=tick.symbol,
        market=market,
        provider=provider,
        seq=seq,
        epoch=epoch,
        kind=tick.kind,
        provider_time_ns=tick.provider_time_ns,
        received_ns=tick.received_ns,
        last_price=last_price,
        last_size=last_size,
        last_time_ns=last_time,
        bid=_pick(tick.bid, prev.bid),
        bid_size=_pick(tick.bid_size, prev.bid_size),
        ask=_pick(tick.ask, prev.ask),
        ask_size=_pick(tick.ask_size, prev.ask_size),
        open=_pick(tick.open, prev.open),
        high=_pick(tick.high, prev.high),
        low=_pick(tick.low, prev.low),
        volume=_pick(tick.volume, prev.volume),
        prev_close=prev_close,
        change=change,
        change_rate=change_rate,
        record_seq=tick.record_seq,
        name=name,
        trade_seq=trade_seq,
    )


def _pick(new: float | None, old: float | None) -> float | None:
    return old if new is None else new


_EMPTY = SymbolState(
    symbol="",
    market=Market.US,
    provider="",
    seq=0,
    epoch=0,
    kind=TickKind.TRADE,
    provider_time_ns=0,
    received_ns=0,
)
