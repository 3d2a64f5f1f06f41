"""Property-based tests (hypothesis) of both upstream parsers (issue 11 §4).

Whatever a KIS or FMP upstream sends, a parser either raises one of its documented
exceptions or returns values every client encoder can write. For generated junk and for
near-valid input (a valid frame or record with one field mutated), these check:

- no exception other than the documented ones escapes (``ValueError`` from the KIS
  parsers, ``MalformedJson`` from ``decode_frame``, ``RestError`` from ``parse_quotes``;
  from the providers' ``handle_message``, ``MalformedFrame`` and the session-ending
  ``UpstreamError`` family);
- every tick produced has every field within the documented bounds
  (:func:`~trio_stock.upstream.session.tick_problem`);
- every state the hub would fold from those ticks encodes, in both client protocols, to a
  frame whose payload is JSON (``orjson`` and ``datetime`` are where an unbounded number
  used to break every client's writer).

No sockets and no Trio run: the providers get a recording link (``RecordingLink``).
"""

from __future__ import annotations

import json
import math
import ssl
from collections.abc import Iterable
from typing import Any

import httpx
import hypothesis.strategies as st
import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings

from trio_stock.config import Secret
from trio_stock.endpoints.prices import encode_price_update
from trio_stock.endpoints.stock import encode_stock_price
from trio_stock.errors import UpstreamError
from trio_stock.model import Market, SymbolState, Tick, TickKind, merge
from trio_stock.results import FailureReason
from trio_stock.transport.wsserver import frame_payload
from trio_stock.upstream import bounds
from trio_stock.upstream.bounds import tick_problem
from trio_stock.upstream.contract import Command, Subscribe
from trio_stock.upstream.fmp import FmpProvider
from trio_stock.upstream.fmp_wire import (
    MalformedJson,
    RestError,
    decode_frame,
    parse_data,
    parse_quotes,
)
from trio_stock.upstream.kis import KisProvider
from trio_stock.upstream.kis_wire import (
    ORDERBOOK_FIELDS,
    TRADE_FIELDS,
    DataFrame,
    parse_frame,
    parse_orderbook,
    parse_trade,
)

from .conftest import EPOCH_NS
from .fakes.fake_fmp import quote_frame, trade_frame
from .fakes.fake_kis import EXAMPLE_TRADE

RECEIVED_NS = EPOCH_NS
NOW_NS = 1_689_947_444_488_938_500  # FMP's captured `t` (fmp.md §4)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # nothing written to .hypothesis/ by a shared test run
    suppress_health_check=[HealthCheck.too_slow],
)

# ---- what every produced tick must satisfy ------------------------------------------------


def check_ticks(ticks: Iterable[Tick], market: Market) -> None:
    """Each tick is within bounds, and every state folded from them encodes to JSON."""
    states: dict[str, SymbolState] = {}
    for tick in ticks:
        assert tick_problem(tick) is None, (tick_problem(tick), tick)
        state = merge(states.get(tick.symbol), tick, market=market, provider="p", epoch=1)
        states[tick.symbol] = state
        for encode in (encode_price_update, encode_stock_price):
            payload = orjson.loads(frame_payload(encode(state)))
            assert isinstance(payload, dict) and payload["type"]
            for value in payload.values():
                assert not isinstance(value, float) or math.isfinite(value)


# ---- strategies: junk ------------------------------------------------------------------------

# Numbers that broke, or nearly broke, something: out of every bound, at every edge.
EDGY_NUMBERS: st.SearchStrategy[Any] = st.sampled_from(
    [
        0,
        -1,
        1,
        1e-9,
        1e-6,
        1e9,
        1e10,
        1e15,
        1e16,
        1e17,
        1e19,
        1e29,
        1e300,
        -1e300,
        2**53 + 1,
        2**63 - 1,
        2**63,
        2**64 - 1,
        10**25,
        NOW_NS,
        NOW_NS // 1_000_000,
        NOW_NS // 1_000_000_000,
        946_684_800_000_000_000,
        4_102_444_800_000_000_000,
        True,
        False,
    ]
)
NUMBERS = st.one_of(
    EDGY_NUMBERS,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20))
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)


# Nesting deeper than Python's recursion limit (json.loads raised RecursionError) and
# deeper than orjson's 1,024 levels.
DEEP_JSON = st.integers(1, 3_000).map(lambda n: "[" * n + "]" * n)


def json_text(value: Any) -> str:
    """JSON as a lax server might write it: big integers, NaN and Infinity included."""
    return json.dumps(value, allow_nan=True)


# ---- strategies: FMP -------------------------------------------------------------------------

FMP_KEYS = ("s", "t", "type", "lp", "ls", "bp", "bs", "ap", "as", "event", "status", "message")


@st.composite
def fmp_objects(draw: st.DrawFn) -> Any:
    """A valid T/Q/B/control object with one field mutated or deleted, or any JSON."""
    kind = draw(st.sampled_from(["T", "Q", "B", "event", "junk"]))
    if kind == "junk":
        return draw(JSON_VALUES)
    if kind == "event":
        base: dict[str, Any] = {"event": "subscribe", "status": 200, "message": "Subscribed"}
    elif kind == "Q":
        base = quote_frame("aapl", 189.5, 100, 189.6, 200, NOW_NS)
    else:
        base = trade_frame("aapl", 189.5, 100, NOW_NS) | {"type": kind}
    key = draw(st.sampled_from(FMP_KEYS))
    if draw(st.booleans()):
        base.pop(key, None)
    else:
        base[key] = draw(st.one_of(NUMBERS, JSON_VALUES))
    return base


FMP_FRAMES = st.one_of(
    fmp_objects().map(json_text),
    DEEP_JSON,
    st.lists(fmp_objects(), max_size=5).map(json_text),
    st.text(max_size=50),
    st.binary(max_size=50),
)


# ---- strategies: KIS -------------------------------------------------------------------------

NUMERIC_TEXT = st.one_of(
    NUMBERS.map(str),
    st.sampled_from(["", "0", "-0", "nan", "inf", "-inf", "1_000", " 7 ", "1e5", "0x10", "²"]),
    st.text(alphabet="0123456789.-+e", max_size=12),
)
DIGITS = st.text(alphabet="0123456789", min_size=0, max_size=9)


@st.composite
def kis_records(draw: st.DrawFn, width: int) -> list[str]:
    """The portal's example (or an orderbook record) with one or two fields mutated."""
    if width == TRADE_FIELDS:
        record = list(EXAMPLE_TRADE)
    else:
        record = ["005930", "093354", "0"] + ["72000"] * 10 + ["71900"] * 10 + ["100"] * 36
    for _ in range(draw(st.integers(1, 2))):
        index = draw(st.integers(0, len(record) - 1))
        record[index] = draw(st.one_of(NUMERIC_TEXT, DIGITS, st.text(max_size=10)))
    extra = draw(st.integers(0, 3))  # live widths drift (kis.md §6)
    return record + [f"X{i}" for i in range(extra)]


@st.composite
def kis_data_frames(draw: st.DrawFn) -> str:
    tr_id = draw(st.sampled_from(["H0STCNT0", "H0STASP0", "H0STCNI0", "X"]) | st.text(max_size=9))
    width = ORDERBOOK_FIELDS if tr_id == "H0STASP0" else TRADE_FIELDS
    records = draw(st.lists(kis_records(width), min_size=1, max_size=3))
    count = draw(st.one_of(st.just(f"{len(records):03d}"), DIGITS, st.text(max_size=5)))
    flag = draw(st.sampled_from(["0", "1"]))
    return f"{flag}|{tr_id}|{count}|" + "^".join(v for r in records for v in r)


@st.composite
def kis_controls(draw: st.DrawFn) -> str:
    """An acknowledgement or PINGPONG with any field replaced by any JSON."""
    frame: dict[str, Any] = {
        "header": {"tr_id": "H0STCNT0", "tr_key": "005930", "encrypt": "N"},
        "body": {"rt_cd": "0", "msg_cd": "OPSP0000", "msg1": "SUBSCRIBE SUCCESS"},
    }
    part = draw(st.sampled_from(["header", "body"]))
    key = draw(st.sampled_from(["tr_id", "tr_key", "rt_cd", "msg_cd", "msg1", "output"]))
    frame[part][key] = draw(
        st.one_of(
            JSON_VALUES,
            st.sampled_from(["PINGPONG", "(null)", "OPSP0008", "OPSP0002", "OPSP0001", "1"]),
        )
    )
    if draw(st.booleans()):
        frame[draw(st.sampled_from(["header", "body"]))] = draw(JSON_VALUES)
    return json_text(frame)


KIS_FRAMES = st.one_of(
    kis_data_frames(),
    kis_controls(),
    st.text(max_size=60),
    st.text(max_size=60).map(lambda t: "0|H0STCNT0|001|" + t),
    JSON_VALUES.map(json_text),
    DEEP_JSON,
    st.binary(max_size=60),
)


# ---- a recording link, so the providers run without Trio or sockets -------------------------


class RecordingLink:
    """An :class:`~trio_stock.upstream.contract.UpstreamLink` that records what it is told."""

    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self.answers: list[tuple[str, FailureReason | None]] = []
        self._send, self._receive = trio.open_memory_channel[Command](1)

    @property
    def commands(self) -> trio.MemoryReceiveChannel[Command]:
        return self._receive

    def registered(self, command: Subscribe) -> None:
        self.answers.append((command.symbol, None))

    def rejected(self, command: Subscribe, reason: FailureReason, detail: str) -> None:
        self.answers.append((command.symbol, reason))

    def revoked(self, symbol: str, reason: FailureReason, detail: str) -> None:
        self.answers.append((symbol, reason))

    def publish(self, tick: Tick) -> None:
        self.ticks.append(tick)

    def session_started(self) -> None:
        pass

    def now_ns(self) -> int:
        return RECEIVED_NS


def kis_provider(link: RecordingLink) -> KisProvider:
    provider = KisProvider(
        app_key=Secret("app-key"),
        app_secret=Secret("app-secret"),
        ws_url="ws://127.0.0.1:1",
        rest_url="http://127.0.0.1:1",
        orderbook=True,
    )
    provider._link = link  # what run() sets; these tests need no session
    return provider


TLS = ssl.create_default_context()  # once: loading the trust store costs ~20 ms
NO_REST = httpx.MockTransport(lambda request: httpx.Response(404))


def fmp_provider(link: RecordingLink) -> FmpProvider:
    provider = FmpProvider(
        api_key=Secret("fmp-key"),
        ws_url="ws://127.0.0.1:1",
        rest_url="http://127.0.0.1:1",
        ssl_context=TLS,
        http_transport=NO_REST,
    )
    provider._link = link
    return provider


# ---- KIS -------------------------------------------------------------------------------------


@FUZZ
@given(KIS_FRAMES)
def test_kis_parse_frame_raises_only_value_error(frame: str | bytes) -> None:
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    try:
        parsed = parse_frame(text)
    except ValueError:
        return
    if not isinstance(parsed, DataFrame):
        return
    ticks = []
    for record in parsed.records:
        try:
            if parsed.tr_id == "H0STASP0":
                ticks.append(parse_orderbook(record, "20230612", parsed.count, RECEIVED_NS))
            else:
                ticks.append(parse_trade(record).tick(parsed.count, RECEIVED_NS))
        except ValueError:
            continue
    check_ticks(ticks, Market.KR)


@FUZZ
@given(kis_records(TRADE_FIELDS))
def test_kis_trade_records_are_bounded_or_refused(record: list[str]) -> None:
    try:
        trade = parse_trade(record)
    except ValueError:
        return
    check_ticks([trade.tick("001", RECEIVED_NS)], Market.KR)


@FUZZ
@given(kis_records(ORDERBOOK_FIELDS), DIGITS)
def test_kis_orderbook_records_are_bounded_or_refused(record: list[str], today: str) -> None:
    for day in ("20230612", today):
        try:
            tick = parse_orderbook(record, day, "001", RECEIVED_NS)
        except ValueError:
            continue
        check_ticks([tick], Market.KR)


@FUZZ
@given(st.lists(KIS_FRAMES, min_size=1, max_size=4))
def test_kis_provider_handles_any_frame(frames: list[str | bytes]) -> None:
    link = RecordingLink()
    provider = kis_provider(link)
    provider._approval_key = Secret("approval")  # as before_connect() leaves it
    provider._wanted = dict.fromkeys(["005930"])
    provider._unanswered = {"005930": Subscribe("005930", 1)}
    provider._sent = dict.fromkeys(["005930"])
    provider.register_frames(["005930"])  # an acknowledgement may come
    for frame in frames:
        try:
            replies = provider.handle_message(frame)
        except UpstreamError:  # MalformedFrame, SessionRefused (OPSP8996), OPSP0011
            continue
        assert all(isinstance(r, str) for r in replies)
    check_ticks(link.ticks, Market.KR)
    assert 1 <= provider.quota <= 20  # an OPSP0008 may have adapted it, never below 1


# ---- FMP -------------------------------------------------------------------------------------


@FUZZ
@given(FMP_FRAMES)
def test_fmp_decode_frame_raises_only_malformed_json(frame: str | bytes) -> None:
    try:
        decoded = decode_frame(frame, RECEIVED_NS)
    except MalformedJson:
        return
    check_ticks(decoded.ticks, Market.US)
    for control in decoded.controls:
        assert len(control.event) <= 64 and len(control.message) <= 500
        assert control.status is None or 100 <= control.status <= 999


@FUZZ
@given(st.dictionaries(st.sampled_from(FMP_KEYS), st.one_of(NUMBERS, JSON_VALUES), max_size=9))
def test_fmp_parse_data_of_any_dict_is_a_bounded_tick_or_none(item: dict[str, Any]) -> None:
    """Python values straight in (no JSON on the way): ints beyond 64 bits, NaN, ..."""
    tick = parse_data(item, RECEIVED_NS)
    if tick is not None:
        check_ticks([tick], Market.US)


QUOTE_KEYS = ("symbol", "price", "timestamp", "change", "changePercentage", "volume", "open")


@st.composite
def quote_bodies(draw: st.DrawFn) -> bytes:
    item: dict[str, Any] = {
        "symbol": "AAPL",
        "price": 254.43,
        "changePercentage": 0.34,
        "change": 0.86,
        "volume": 37_545_393,
        "dayLow": 253.58,
        "dayHigh": 257.17,
        "open": 255.88,
        "previousClose": 253.57,
        "timestamp": 1_758_648_182,
    }
    for _ in range(draw(st.integers(1, 3))):
        item[draw(st.sampled_from(QUOTE_KEYS))] = draw(st.one_of(NUMBERS, JSON_VALUES))
    body = draw(st.sampled_from(["list", "junk", "error"]))
    if body == "list":
        return json_text([item, draw(JSON_VALUES)]).encode()
    if body == "error":
        return json_text({"Error Message": draw(JSON_VALUES)}).encode()
    return draw(st.one_of(JSON_VALUES.map(json_text).map(str.encode), st.binary(max_size=40)))


@FUZZ
@given(st.integers(100, 599), quote_bodies())
def test_fmp_parse_quotes_raises_only_rest_error(status: int, body: bytes) -> None:
    try:
        ticks = parse_quotes(status, body, RECEIVED_NS)
    except RestError as exc:
        assert len(exc.message) <= 300
        return
    check_ticks(ticks, Market.US)


@FUZZ
@given(st.lists(FMP_FRAMES, min_size=1, max_size=4))
def test_fmp_provider_handles_any_frame(frames: list[str | bytes]) -> None:
    link = RecordingLink()
    provider = fmp_provider(link)
    for frame in frames:
        try:
            replies = provider.handle_message(frame)
        except UpstreamError:  # MalformedFrame; AuthFailed/SessionRefused from a login event
            continue
        assert replies == ()
    check_ticks(link.ticks, Market.US)
    assert "fmp-key" not in repr(provider.statistics())


@pytest.mark.parametrize("t", [1e29, 10**25, 2**64 - 1, -1, "x", [1]])
def test_the_kill_path_of_a_huge_t_is_closed(t: Any) -> None:
    """The kill path of issue 11 §4 as plain examples: a huge ``t`` reaching the encoders."""
    (tick,) = decode_frame(json_text({"s": "aapl", "type": "T", "lp": 1.0, "t": t}), 5).ticks
    assert tick.provider_time_ns == 5
    check_ticks([Tick("AAPL", tick.kind, RECEIVED_NS, RECEIVED_NS, price=tick.price)], Market.US)


TICK_NUMBERS = [
    *("price", "size", "bid", "bid_size", "ask", "ask_size", "open", "high", "low"),
    *("volume", "prev_close", "change", "change_rate"),
]
PRICE_LIKE = (
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | EDGY_NUMBERS.filter(lambda v: not isinstance(v, bool))
)


@FUZZ
@given(
    st.integers(-(2**65), 2**65) | EDGY_NUMBERS.filter(lambda v: isinstance(v, int)),
    st.lists(PRICE_LIKE, min_size=13, max_size=13),
)
def test_tick_problems_fast_path_agrees_with_the_reasons(t: int, values: list[Any]) -> None:
    numbers = dict(zip(TICK_NUMBERS, values, strict=True))
    tick = Tick("AAPL", TickKind.TRADE, int(t), RECEIVED_NS, **numbers)
    problem = tick_problem(tick)
    assert (problem is None) == (bounds._problem(tick) is None), problem
    if problem is None:
        check_ticks([tick], Market.US)
