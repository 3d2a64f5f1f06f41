"""A state's crossing of Redis (``trio_stock/cluster/wire.py``), without Redis: the holder's
encoding and the node's decoding, what is refused, and the ticks that rebuild the state in a
node's hub — above all the trade a quote carries when the node never saw it."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import attrs
import hypothesis.strategies as st
import orjson
import pytest
from hypothesis import given

from trio_stock.cluster.wire import (
    MAX_STATE_BYTES,
    MalformedState,
    RemoteState,
    decode_state,
    encode_state,
    ticks_of,
)
from trio_stock.model import Market, SymbolState, Tick, TickKind, merge

T0 = 1_700_000_000_000_000_000  # epoch ns
FENCE = 1_795_993_028_950_205  # tokens are Redis's TIME in microseconds: large integers
# The market data a node's merged state must share with the holder's (seq and epoch are
# each hub's own).
MARKET_FIELDS = (
    "kind",
    "provider_time_ns",
    "received_ns",
    "last_price",
    "last_size",
    "last_time_ns",
    "bid",
    "bid_size",
    "ask",
    "ask_size",
    "open",
    "high",
    "low",
    "volume",
    "prev_close",
    "change",
    "change_rate",
    "record_seq",
)


def holder_states(ticks: list[Tick], epoch: int = 3) -> list[SymbolState]:
    """The states the holder's hub makes of ``ticks``, one per tick."""
    states: list[SymbolState] = []
    for tick in ticks:
        prev = states[-1] if states else None
        states.append(merge(prev, tick, market=Market.KR, provider="kis", epoch=epoch))
    return states


def trade(price: float, at: int, size: float = 10.0, **fields: Any) -> Tick:
    return Tick("005930", TickKind.TRADE, T0 + at, T0 + at + 5, price=price, size=size, **fields)


def quote(bid: float, ask: float, at: int) -> Tick:
    return Tick("005930", TickKind.QUOTE, T0 + at, T0 + at + 5, bid=bid, ask=ask, bid_size=3.0)


def crossed(state: SymbolState, fence: int = FENCE) -> RemoteState:
    """``state`` as a node reads it from Redis."""
    return decode_state(encode_state(state, fence, T0 + 99))


def market_data(state: SymbolState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in MARKET_FIELDS}


@attrs.define
class Node:
    """A node's side as ``ClusterProvider._forward`` does it: the trade last forwarded, and
    its own hub's merged state."""

    state: SymbolState | None = None
    trade_seq: int | None = None
    trades: int = 0  # trades (trade ticks with a price) the node's hub got

    def receive(self, remote: RemoteState) -> None:
        for tick in ticks_of(remote, self.trade_seq == remote.trade_seq):
            self.trades += tick.kind is TickKind.TRADE and tick.price is not None
            self.state = merge(self.state, tick, market=Market.KR, provider="kis", epoch=1)
        self.trade_seq = remote.trade_seq


# ---- encode and decode --------------------------------------------------------------------


def test_a_state_round_trips_with_its_fence_and_publish_time() -> None:
    (state,) = holder_states(
        [trade(71_900, 0, volume=3e6, prev_close=72_000, open=71_800, high=72_400, low=71_700)]
    )
    remote = crossed(state)
    assert (remote.symbol, remote.fence, remote.epoch, remote.seq) == ("005930", FENCE, 3, 1)
    assert (remote.published_ns, remote.trade_seq) == (T0 + 99, 1)
    assert remote.order == (FENCE, 3, 1)
    for name in MARKET_FIELDS:
        assert getattr(remote, name) == getattr(state, name), name


def test_every_field_round_trips_including_absent_ones() -> None:
    first, second = holder_states([trade(187.25, 0, size=100.0), quote(187.2, 187.3, 1)])
    for state in (first, second):
        remote = crossed(state)
        assert {n: getattr(remote, n) for n in MARKET_FIELDS} == market_data(state)
        assert (remote.seq, remote.trade_seq) == (state.seq, state.trade_seq)
    assert crossed(first).ask is None  # absent stays absent, not 0


def test_the_order_grows_with_a_new_fence_before_epoch_and_seq() -> None:
    (state,) = holder_states([trade(100, 0)], epoch=9)
    old = crossed(state, fence=FENCE)
    (restarted,) = holder_states([trade(100, 0)], epoch=1)  # a new holder's hub starts over
    new = crossed(restarted, fence=FENCE + 1)
    assert new.order > old.order


# ---- what is refused --------------------------------------------------------------------


def valid_fields() -> list[Any]:
    (state,) = holder_states([trade(71_900, 0, prev_close=72_000)])
    fields = orjson.loads(encode_state(state, FENCE, T0))
    assert isinstance(fields, list)
    return fields


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"{}",
        b'"005930"',
        b"[]",
        b"[1, 2, 3]",
        b"[" + b"0," * 24 + b"0]",  # one field too many
        b"\xff\xfe",
        b"1e999",  # infinity is not JSON a state holds
    ],
)
def test_bytes_that_are_not_a_state_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedState):
        decode_state(data)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, 5930),  # symbol
        (1, 1.5),  # fence
        (1, "1"),
        (1, True),  # a bool is not an int here
        (2, None),  # epoch
        (3, [1]),  # seq
        (4, "X"),  # kind
        (4, ["T"]),  # unhashable: must be refused, not raise TypeError
        (4, {"T": 1}),
        (7, None),  # published_ns
        (8, 1.0),  # trade_seq
        (9, "71900"),  # last_price
        (9, True),
        (12, [71_800]),  # bid
        (19, {}),  # volume
        (23, 1),  # record_seq
        (23, None),
    ],
)
def test_a_field_of_the_wrong_type_is_refused(index: int, value: Any) -> None:
    fields = valid_fields()
    fields[index] = value
    with pytest.raises(MalformedState):
        decode_state(orjson.dumps(fields))


def test_a_state_far_larger_than_any_real_one_is_refused_before_parsing() -> None:
    fields = valid_fields()
    fields[23] = "x" * MAX_STATE_BYTES
    with pytest.raises(MalformedState, match="bytes"):
        decode_state(orjson.dumps(fields))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_are_refused(data: bytes) -> None:
    with contextlib.suppress(MalformedState):  # anything else fails the test
        assert isinstance(decode_state(data), RemoteState)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@given(st.data())
def test_any_json_in_any_field_decodes_or_is_refused(data: st.DataObject) -> None:
    """Whatever another writer puts on the channel, a node's reader gets a state or
    :class:`MalformedState`, never another exception (which would end the reader)."""
    fields = valid_fields()
    for index in data.draw(st.sets(st.integers(0, len(fields) - 1), min_size=1, max_size=4)):
        fields[index] = data.draw(json_values)
    try:
        encoded = orjson.dumps(fields)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
        return
    try:
        remote = decode_state(encoded)
    except MalformedState:
        return
    numbers = [remote.last_price, remote.bid, remote.ask, remote.volume, remote.change_rate]
    assert all(n is None or math.isfinite(n) for n in numbers)


# ---- ticks_of: rebuilding the state in a node's hub ---------------------------------------


def test_a_quote_whose_trade_the_node_never_saw_brings_the_trade_first() -> None:
    """The holder conflated a trade into the quote after it (or the node joined late): the
    node's hub gets the trade, at its own time and size, then the quote."""
    states = holder_states([trade(71_900, 0, size=7.0), quote(71_800, 72_000, 50)])
    remote = crossed(states[-1])
    last_trade, the_quote = ticks_of(remote, trade_seen=False)
    assert (last_trade.kind, last_trade.price, last_trade.size) == (TickKind.TRADE, 71_900, 7.0)
    assert last_trade.provider_time_ns == T0  # the trade's own time, not the quote's
    assert (the_quote.kind, the_quote.price, the_quote.bid, the_quote.ask) == (
        TickKind.QUOTE,
        None,
        71_800,
        72_000,
    )
    node = Node()
    node.receive(remote)
    assert node.state is not None and node.trades == 1
    assert market_data(node.state) == market_data(states[-1])


def test_a_quote_whose_trade_the_node_saw_is_only_a_quote() -> None:
    states = holder_states([trade(71_900, 0), quote(71_800, 72_000, 50)])
    node = Node()
    for state in states:
        node.receive(crossed(state))
    assert node.trades == 1  # not twice: the quote brought no second copy of the trade
    assert node.state is not None
    assert market_data(node.state) == market_data(states[-1])
    assert ticks_of(crossed(states[-1]), trade_seen=True)[0].kind is TickKind.QUOTE


def test_a_quote_before_any_trade_is_only_a_quote() -> None:
    (state,) = holder_states([quote(71_800, 72_000, 0)])
    (tick,) = ticks_of(crossed(state), trade_seen=False)
    assert (tick.kind, tick.price) == (TickKind.QUOTE, None)


def test_a_trade_without_a_price_is_not_a_second_copy_of_the_last_trade() -> None:
    """A trade tick without a price does not move the last trade (``merge``), so the state
    it makes is not a new trade either: the node must not get the old trade again."""
    states = holder_states([trade(71_900, 0), Tick("005930", TickKind.TRADE, T0 + 9, T0 + 9)])
    node = Node()
    for state in states:
        node.receive(crossed(state))
    assert node.trades == 1
    assert node.state is not None
    assert market_data(node.state) == market_data(states[-1])


prices = st.integers(1, 2_000).map(lambda n: n * 50.0)
tick_strategy = st.one_of(
    st.builds(lambda p, s: ("T", p, s), prices, st.integers(1, 500).map(float)),
    st.builds(lambda b, a: ("Q", b, a), prices, prices),
    st.builds(lambda p: ("B", p, None), prices),
    st.just(("T", None, None)),
)


def tick_of(spec: tuple[str, float | None, float | None], at: int) -> Tick:
    kind, first, second = spec
    if kind == "Q":
        return quote(first or 0.0, second or 0.0, at)
    if kind == "B":
        return Tick("005930", TickKind.CANCEL, T0 + at, T0 + at + 5, price=first, size=1.0)
    return Tick("005930", TickKind.TRADE, T0 + at, T0 + at + 5, price=first, size=second)


@given(st.lists(tick_strategy, min_size=1, max_size=30), st.data())
def test_a_node_rebuilds_the_holders_state_from_whichever_states_reach_it(
    specs: list[tuple[str, float | None, float | None]], data: st.DataObject
) -> None:
    """The holder conflates (a slow write) and Redis loses messages, so a node sees some of
    the states, in order, the last one always (it is also the snapshot). After each one the
    node's merged state has the holder's market data, and its hub got each trade once at
    most: never a trade the holder did not have, never the same one twice."""
    states = holder_states([tick_of(spec, at) for at, spec in enumerate(specs)])
    kept = data.draw(st.lists(st.booleans(), min_size=len(states), max_size=len(states)))
    delivered = [s for s, keep in zip(states, kept, strict=True) if keep] + [states[-1]]
    delivered = list({s.seq: s for s in delivered}.values())
    node = Node()
    for state in delivered:
        node.receive(crossed(state))
        assert node.state is not None
        assert market_data(node.state) == market_data(state)
    trades_delivered = {s.trade_seq for s in delivered if s.trade_seq}
    assert node.trades == len(trades_delivered)
