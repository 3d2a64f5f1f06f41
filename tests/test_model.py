"""Symbols and the merged state."""

from __future__ import annotations

import pytest

from trio_stock import InvalidSymbol, Market, Tick, TickKind, normalize_symbol
from trio_stock.model import SymbolState, merge


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("005930", ("005930", Market.KR)),
        (" 000660 ", ("000660", Market.KR)),
        ("aapl", ("AAPL", Market.US)),
        ("BRK.B", ("BRK.B", Market.US)),
        ("bf-b", ("BF-B", Market.US)),
    ],
)
def test_valid_symbols(raw: str, expected: tuple[str, Market]) -> None:
    assert normalize_symbol(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "12345", "1234567", "ABCDEFGHIJK", "A B", "$AAPL", None, 5, "x" * 1000]
)
def test_invalid_symbols(raw: object) -> None:
    with pytest.raises(InvalidSymbol):
        normalize_symbol(raw)


def _merge(prev: SymbolState | None, tick: Tick) -> SymbolState:
    return merge(prev, tick, market=Market.US, provider="p", epoch=1)


def test_quote_keeps_the_last_trade_and_cancel_does_not_move_it() -> None:
    trade = _merge(None, Tick("AAPL", TickKind.TRADE, 1, 1, price=10.0, size=5, prev_close=8.0))
    assert (trade.seq, trade.last_price, trade.change, trade.change_rate) == (1, 10.0, 2.0, 25.0)
    quote = _merge(
        trade, Tick("AAPL", TickKind.QUOTE, 2, 2, bid=9.99, bid_size=100, ask=10.01, ask_size=200)
    )
    assert (quote.seq, quote.kind, quote.last_price, quote.bid, quote.ask) == (
        2,
        TickKind.QUOTE,
        10.0,
        9.99,
        10.01,
    )
    cancel = _merge(quote, Tick("AAPL", TickKind.CANCEL, 3, 3, price=11.0, size=5))
    assert (cancel.kind, cancel.last_price, cancel.last_time_ns) == (TickKind.CANCEL, 10.0, 1)


def test_provider_change_wins_over_derived_change() -> None:
    state = _merge(
        None, Tick("005930", TickKind.TRADE, 1, 1, price=71_900, change=-100, change_rate=-0.14)
    )
    assert (state.change, state.change_rate) == (-100, -0.14)


def test_encoding_happens_once_per_wire_format() -> None:
    state = _merge(None, Tick("AAPL", TickKind.TRADE, 1, 1, price=1.0))
    calls: list[str] = []

    def encode(s: object) -> bytes:
        calls.append("x")
        return b"frame"

    assert state.encoded("a", encode) == state.encoded("a", encode) == b"frame"
    state.encoded("b", encode)
    assert len(calls) == 2
