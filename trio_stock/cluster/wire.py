"""A symbol's state as it crosses Redis, and back into ticks for a node's hub.

The holder writes each new :class:`~trio_stock.model.SymbolState` of its hub as one compact
JSON array (the latest state key and the symbol's channel carry the same bytes). A node reads
it as a :class:`RemoteState` and feeds its own hub with ticks that rebuild the same merged
state: the hub does not learn about Redis (DESIGN.md), the cluster is one more provider.

Order: ``fence`` is the holder's fencing token (a new holder, a new fence), ``epoch`` the
holder's upstream session and ``seq`` the holder hub's sequence of the symbol, so
``(fence, epoch, seq)`` grows with every state of a symbol while one Redis lives.
"""

from __future__ import annotations

import math

import attrs
import orjson

from ..model import SymbolState, Tick, TickKind

_KINDS = {kind.value: kind for kind in TickKind}
_FIELDS = 24  # the length of the array
MAX_STATE_BYTES = 4096  # a state is ~300 bytes; anything far larger is not ours


class MalformedState(ValueError):
    """Bytes on a state channel that are not a state this version wrote."""


@attrs.frozen(slots=True)
class RemoteState:
    """One state as its holder published it."""

    symbol: str
    fence: int
    epoch: int
    seq: int
    kind: TickKind
    provider_time_ns: int
    received_ns: int
    published_ns: int  # when the holder wrote it (the Redis hop's lag starts here)
    trade_seq: int
    last_price: float | None
    last_size: float | None
    last_time_ns: int | None
    bid: float | None
    bid_size: float | None
    ask: float | None
    ask_size: float | None
    open: float | None
    high: float | None
    low: float | None
    volume: float | None
    prev_close: float | None
    change: float | None
    change_rate: float | None
    record_seq: str

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.fence, self.epoch, self.seq)


def encode_state(state: SymbolState, fence: int, published_ns: int) -> bytes:
    """The state as the holder writes it to Redis: the fields of :class:`RemoteState`."""
    return orjson.dumps(
        [
            state.symbol,
            fence,
            state.epoch,
            state.seq,
            state.kind.value,
            state.provider_time_ns,
            state.received_ns,
            published_ns,
            state.trade_seq,
            state.last_price,
            state.last_size,
            state.last_time_ns,
            state.bid,
            state.bid_size,
            state.ask,
            state.ask_size,
            state.open,
            state.high,
            state.low,
            state.volume,
            state.prev_close,
            state.change,
            state.change_rate,
            state.record_seq,
        ]
    )


def decode_state(data: bytes) -> RemoteState:
    """Bytes from Redis as a state; :class:`MalformedState` for anything else."""
    if len(data) > MAX_STATE_BYTES:
        raise MalformedState(f"state of {len(data)} bytes")
    try:
        fields = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise MalformedState("not JSON") from error
    if not isinstance(fields, list) or len(fields) != _FIELDS:
        raise MalformedState("not a state array")
    symbol, fence, epoch, seq, kind, provider_ns, received_ns, published_ns, trade_seq = fields[:9]
    numbers = fields[9:23]
    record_seq = fields[23]
    if not (
        isinstance(symbol, str)
        and all(type(n) is int for n in (fence, epoch, seq, provider_ns, received_ns))
        and all(type(n) is int for n in (published_ns, trade_seq))
        and isinstance(kind, str)  # before the lookup: a list or a dict is unhashable
        and kind in _KINDS
        and isinstance(record_seq, str)
        and all(_is_number(n) for n in numbers)
    ):
        raise MalformedState("a field of the wrong type")
    price, size, last_time, bid, bid_size, ask, ask_size = numbers[:7]
    day_open, high, low, volume, prev_close, change, change_rate = numbers[7:]
    return RemoteState(
        symbol,
        fence,
        epoch,
        seq,
        _KINDS[kind],
        provider_ns,
        received_ns,
        published_ns,
        trade_seq,
        price,
        size,
        None if last_time is None else int(last_time),
        bid,
        bid_size,
        ask,
        ask_size,
        day_open,
        high,
        low,
        volume,
        prev_close,
        change,
        change_rate,
        record_seq,
    )


def _is_number(value: object) -> bool:
    if value is None or type(value) is int:
        return True
    return type(value) is float and math.isfinite(value)


def ticks_of(state: RemoteState, trade_seen: bool) -> list[Tick]:
    """The ticks that rebuild ``state`` in a node's hub.

    A quote carries its symbol's last trade; when the node has not seen that trade (its
    first state of the symbol, or a trade the holder conflated into the quote), a trade tick
    comes first, so the node's merged state and its seed 000 clients get the trade too.
    Only a state whose own tick was the trade (``trade_seq == seq``) passes its price on
    as a trade: a trade tick without a price (which moved nothing) must not repeat the
    last trade at a new time.
    """
    trade = state.kind is TickKind.TRADE and state.trade_seq == state.seq
    tick = Tick(
        state.symbol,
        state.kind,
        state.provider_time_ns,
        state.received_ns,
        price=state.last_price if trade else None,
        size=state.last_size if trade else None,
        bid=state.bid,
        bid_size=state.bid_size,
        ask=state.ask,
        ask_size=state.ask_size,
        open=state.open,
        high=state.high,
        low=state.low,
        volume=state.volume,
        prev_close=state.prev_close,
        change=state.change,
        change_rate=state.change_rate,
        record_seq=state.record_seq,
    )
    if trade or trade_seen or not state.trade_seq:
        return [tick]
    if state.last_price is None or state.last_time_ns is None:
        return [tick]
    last_trade = Tick(
        state.symbol,
        TickKind.TRADE,
        state.last_time_ns,
        state.received_ns,
        price=state.last_price,
        size=state.last_size,
        record_seq=state.record_seq,
    )
    return [last_trade, tick]
