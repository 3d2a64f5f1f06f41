"""The FMP provider: its wire format without sockets, then the provider against the fake FMP.

The fake (tests/fakes/fake_fmp.py) is a real trio-websocket server plus a real HTTP server
on 127.0.0.1; every time-dependent test runs on MockClock (``autojump_clock``).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing

from trio_stock.clock import WallClock
from trio_stock.config import Config, Secret
from trio_stock.endpoints.prices import encode_price_update
from trio_stock.endpoints.stock import encode_stock_price
from trio_stock.errors import ConfigError
from trio_stock.hub import FailureReason, Hub, Policy
from trio_stock.hub.subscriber import Subscriber
from trio_stock.model import Market, SymbolState, Tick, TickKind, merge
from trio_stock.transport.wsserver import frame_payload
from trio_stock.upstream.backoff import Backoff
from trio_stock.upstream.bounds import TIME_MAX_NS, TIME_MIN_NS, tick_problem
from trio_stock.upstream.contract import ProviderState
from trio_stock.upstream.fmp import MAX_REST_BODY, FmpProvider, tls_context
from trio_stock.upstream.fmp_wire import (
    Control,
    LoginOutcome,
    MalformedJson,
    RestError,
    decode_frame,
    login_frame,
    normalize_time_ns,
    parse_quotes,
    provider_time_ns,
    ticker_frames,
)

from .conftest import EPOCH_NS
from .fakes.fake_fmp import (
    INVALID_KEY,
    LEGACY,
    LIMIT_REACH,
    FakeFmp,
    LoginMode,
    RestMode,
    quote_frame,
    trade_frame,
)

NOW = 1_689_947_444_488_938_500  # the captured frame's t (fmp.md §4), in ns
KEY = "fmp-secret-key-7f3a9c"

# ---- the wire format, without sockets --------------------------------------------------


def test_login_and_ticker_frames_are_fmps_documented_shapes() -> None:
    assert orjson.loads(login_frame("k")) == {"event": "login", "data": {"apiKey": "k"}}
    frames = [orjson.loads(f) for f in ticker_frames("subscribe", ["AAPL", "BRK.B"])]
    assert frames == [{"event": "subscribe", "data": {"ticker": ["aapl", "brk.b"]}}]
    many = ticker_frames("unsubscribe", [f"T{i}" for i in range(250)])
    assert [len(orjson.loads(f)["data"]["ticker"]) for f in many] == [100, 100, 50]
    with pytest.raises(ValueError, match="not a ticker event"):
        ticker_frames("login", ["AAPL"])


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (NOW, NOW),  # nanoseconds (stocks)
        (1_689_947_444_488_938, 1_689_947_444_488_938_000),  # microseconds
        (1_689_947_444_488, 1_689_947_444_488_000_000),  # milliseconds (crypto/forex)
        (1_689_947_444, 1_689_947_444_000_000_000),  # seconds (REST timestamp)
        (1_689_947_444.5, 1_689_947_444_500_000_000),
    ],
)
def test_t_is_normalised_to_epoch_ns_by_magnitude(t: int | float, expected: int) -> None:
    assert normalize_time_ns(t) == expected


def test_the_captured_quote_frame_decodes_with_its_nulls() -> None:
    captured = (
        '{"s":"key","t":1689947444488938500,"type":"Q","ap":11.84,"as":400,'
        '"bp":11.82,"bs":1000,"lp":null,"ls":null}'
    )
    decoded = decode_frame(captured, received_ns=7)
    assert decoded.controls == () and decoded.malformed == 0
    (tick,) = decoded.ticks
    assert (tick.symbol, tick.kind, tick.provider_time_ns, tick.received_ns) == (
        "KEY",
        TickKind.QUOTE,
        NOW,
        7,
    )
    assert (tick.bid, tick.bid_size, tick.ask, tick.ask_size) == (11.82, 1000, 11.84, 400)
    assert tick.price is None and tick.size is None


def test_trades_and_breaks_tolerate_missing_keys() -> None:
    trade = decode_frame('{"s":"AAPL","t":1689947444488,"type":"T","lp":189.5}', 1).ticks
    assert [(t.kind, t.price, t.size, t.provider_time_ns) for t in trade] == [
        (TickKind.TRADE, 189.5, None, 1_689_947_444_488_000_000)
    ]
    brk = decode_frame('{"s":"aapl","type":"B","lp":189.4,"ls":10}', 99).ticks
    assert [(t.kind, t.price, t.size, t.provider_time_ns) for t in brk] == [
        (TickKind.CANCEL, 189.4, 10, 99)  # no t: the time it was read
    ]


def test_control_events_are_classified_before_data() -> None:
    frame = orjson.dumps(
        [
            {"event": "heartbeat", "timestamp": 1},
            {"event": "login", "status": 200, "message": "Authenticated"},
            {"event": "mystery", "s": "aapl", "type": "T", "lp": 1.0},  # event wins
            trade_frame("msft", 370.2, 5, NOW),
        ]
    )
    decoded = decode_frame(frame, 0)
    assert [c.event for c in decoded.controls] == ["heartbeat", "login", "mystery"]
    assert [(t.symbol, t.price) for t in decoded.ticks] == [("MSFT", 370.2)]


@pytest.mark.parametrize(
    "item",
    [
        {"s": "aapl", "t": NOW, "type": "X", "lp": 1.0},  # unknown type
        {"s": "aapl", "t": NOW, "type": "T", "lp": None, "ls": 5},  # a trade without price
        {"s": "aapl", "t": NOW, "type": "Q", "bp": None, "ap": None},  # a quote without sides
        {"t": NOW, "type": "T", "lp": 1.0},  # no symbol
        {"s": "x" * 40, "type": "T", "lp": 1.0},  # not a symbol
        {"s": "aapl", "type": "T", "lp": "189.5"},  # a price as text
        {"s": "aapl", "type": "T", "lp": True},  # a bool is not a number
        7,  # not an object
    ],
)
def test_unusable_data_objects_are_counted_not_raised(item: Any) -> None:
    decoded = decode_frame(orjson.dumps([item, quote_frame("aapl", 1.0, 1, 1.01, 1, NOW)]), 0)
    assert decoded.malformed == 1
    assert [t.kind for t in decoded.ticks] == [TickKind.QUOTE]


@pytest.mark.parametrize("text", ["not json", "", "42", '"text"', "null", b"\xff\xfe"])
def test_garbage_is_malformed_json(text: str | bytes) -> None:
    with pytest.raises(MalformedJson):
        decode_frame(text, 0)


@pytest.mark.parametrize(
    ("frame", "outcome"),
    [
        ({"status": 200, "message": "Authenticated"}, LoginOutcome.OK),
        ({"message": "Authenticated"}, LoginOutcome.OK),
        ({"status": 401, "message": "Unauthorized"}, LoginOutcome.UNAUTHORIZED),
        ({"message": "You are not authorized to use the websocket"}, LoginOutcome.UNAUTHORIZED),
        ({"status": 403, "message": ""}, LoginOutcome.UNAUTHORIZED),
        (
            {"status": 401, "message": "Connected from another location"},
            LoginOutcome.ANOTHER_LOCATION,
        ),
        ({"message": "Maximum number of connections reached"}, LoginOutcome.ANOTHER_LOCATION),
        ({"status": 500, "message": "Internal error"}, LoginOutcome.FAILED),
        ({"data": {"status": 401, "message": "Unauthorized"}}, LoginOutcome.UNAUTHORIZED),
    ],
)
def test_login_answers_are_classified(frame: dict[str, Any], outcome: LoginOutcome) -> None:
    (control,) = decode_frame(orjson.dumps({"event": "login", **frame}), 0).controls
    assert control.login_outcome() is outcome


def test_acks_name_tickers_case_insensitively_as_whole_words() -> None:
    ack = Control("subscribe", 200, "Subscribed to aapl,brk.b")
    assert ack.mentions(["MSFT", "AAPL", "BRK.B", "AAP"]) == ["AAPL", "BRK.B"]
    assert not ack.refused
    assert Control("subscribe", None, "You are not authorized to subscribe to xyz").refused
    assert Control("subscribe", 429, "slow down").refused


def _quote(**fields: Any) -> dict[str, Any]:
    base = {
        "symbol": "AAPL",
        "name": "Apple Inc.",
        "price": 254.43,
        "changePercentage": 0.33906,
        "change": 0.86,
        "volume": 37_545_393,
        "dayLow": 253.58,
        "dayHigh": 257.17,
        "open": 255.88,
        "previousClose": 253.57,
        "timestamp": 1_758_648_182,
    }
    return base | fields


def test_stable_quotes_become_trade_ticks_with_day_figures() -> None:
    body = orjson.dumps([_quote(), _quote(symbol="msft", price=None), "junk"])
    (tick,) = parse_quotes(200, body, received_ns=5)
    assert (tick.symbol, tick.kind, tick.price, tick.prev_close) == (
        "AAPL",
        TickKind.TRADE,
        254.43,
        253.57,
    )
    assert (tick.open, tick.high, tick.low, tick.volume) == (255.88, 257.17, 253.58, 37_545_393)
    assert (tick.change, tick.change_rate) == (0.86, 0.33906)
    assert tick.provider_time_ns == 1_758_648_182 * 10**9  # REST timestamps are seconds
    v3 = parse_quotes(200, orjson.dumps([_quote(changesPercentage=1.5, changePercentage=None)]), 0)
    assert v3[0].change_rate == 1.5
    assert parse_quotes(200, b"[]", 0) == []  # unknown symbols: an empty array


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (401, INVALID_KEY, "invalid_key"),
        (200, INVALID_KEY, "invalid_key"),  # the same body with 200 (fmp.md §7)
        (429, LIMIT_REACH, "limit"),
        (403, LEGACY, "legacy"),
    ],
)
def test_rest_error_bodies_are_recognised_by_their_text(
    status: int, message: str, kind: str
) -> None:
    with pytest.raises(RestError) as caught:
        parse_quotes(status, orjson.dumps({"Error Message": message}), 0)
    assert caught.value.kind == kind and caught.value.status == status


def test_rest_non_json_or_bad_status_is_an_error() -> None:
    with pytest.raises(RestError, match="HTTP 502"):
        parse_quotes(502, b"<html>bad gateway</html>", 0)
    with pytest.raises(RestError, match="not a JSON array"):
        parse_quotes(200, b"<html>", 0)


# ---- untrusted input, without sockets ------------------------------------------------


ENCODERS = (encode_price_update, encode_stock_price)


def encoded_for_clients(tick: Tick) -> list[Any]:
    """The tick as both client protocols would send it (the encoders raise on bad values)."""
    state = merge(None, tick, market=Market.US, provider="fmp", epoch=1)
    return [orjson.loads(frame_payload(encode(state))) for encode in ENCODERS]


@pytest.mark.parametrize(
    "t",
    [
        1e29,  # int(1e29) ns: orjson cannot encode the millisecond timestamp of it
        10**25,  # a JSON integer beyond 64 bits (orjson reads it as a float)
        2**64 - 1,  # the largest JSON integer orjson reads as an int
        1e16,  # microseconds by magnitude: the year 2286
        TIME_MAX_NS,
        TIME_MIN_NS - 1,
        1,
        0,
        -NOW,
        "1689947444",
        [NOW],
        {"t": NOW},
        True,
        None,
    ],
)
def test_an_unusable_t_falls_back_to_the_receive_time(t: Any) -> None:
    frame = (
        orjson.dumps({"s": "aapl", "type": "T", "lp": 1.5, "t": t})
        if t != 10**25
        else (b'{"s":"aapl","type":"T","lp":1.5,"t":10000000000000000000000000}')
    )
    (tick,) = decode_frame(frame, received_ns=EPOCH_NS).ticks
    assert tick.provider_time_ns == EPOCH_NS
    assert tick_problem(tick) is None
    price_update, stock_price = encoded_for_clients(tick)
    assert price_update["timestamp"] == EPOCH_NS // 1_000_000
    assert stock_price["price"] == 1.5
    assert provider_time_ns(t, 5) == 5


def test_a_t_in_the_window_is_kept_in_any_unit() -> None:
    assert provider_time_ns(NOW, 5) == NOW
    assert provider_time_ns(NOW // 10**6, 5) == NOW // 10**6 * 10**6  # milliseconds
    assert provider_time_ns(TIME_MIN_NS, 5) == TIME_MIN_NS
    assert provider_time_ns(1_689_947_444.5, 5) == 1_689_947_444_500_000_000


@pytest.mark.parametrize(
    "item",
    [
        {"s": "aapl", "type": ["T"], "lp": 1.0},  # was TypeError (unhashable): session over
        {"s": "aapl", "type": {"T": 1}, "lp": 1.0},
        {"s": "aapl", "type": None, "lp": 1.0},
        {"s": {"sym": "aapl"}, "type": "T", "lp": 1.0},
        {"s": ["aapl"], "type": "T", "lp": 1.0},
        {"s": "   ", "type": "T", "lp": 1.0},  # nothing left once stripped
        {"s": "äpfel", "type": "T", "lp": 1.0},  # not ASCII
        {"s": "aa\npl", "type": "T", "lp": 1.0},  # not printable
        {"s": "aapl", "type": "T", "lp": 1e300},  # prices: PRICE_MIN..PRICE_MAX
        {"s": "aapl", "type": "T", "lp": 1e-9},
        {"s": "aapl", "type": "T", "lp": -5.0},
        {"s": "aapl", "type": "T", "lp": [1.0]},
        {"s": "aapl", "type": "Q", "bp": 1e10, "ap": 0.0},
        {"s": "aapl", "type": "Q", "bp": {"x": [[[]]]}, "ap": None},
    ],
)
def test_any_json_shape_in_a_data_object_is_counted_not_raised(item: Any) -> None:
    frame = orjson.dumps([item, trade_frame("msft", 370.0, 5, NOW)])
    decoded = decode_frame(frame, EPOCH_NS)
    assert decoded.malformed == 1
    assert [(t.symbol, t.price) for t in decoded.ticks] == [("MSFT", 370.0)]


def test_fields_out_of_bounds_are_absent_and_the_tick_stays_usable() -> None:
    frame = {"s": "aapl", "type": "T", "t": NOW, "lp": 10.0, "ls": 1e300}
    (trade,) = decode_frame(orjson.dumps(frame), 0).ticks
    assert (trade.price, trade.size) == (10.0, None)
    quote = {"s": "aapl", "type": "Q", "t": NOW, "bp": 1e10, "bs": -1, "ap": 10.5, "as": 2**63}
    (tick,) = decode_frame(orjson.dumps(quote), 0).ticks
    assert (tick.bid, tick.bid_size, tick.ask, tick.ask_size) == (None, None, 10.5, None)
    assert tick_problem(tick) is None
    encoded_for_clients(tick)


DEEP = "[" * 1_000 + "]" * 1_000  # orjson reads 1,024 levels; repr() of it raises


def test_control_frames_of_any_shape_are_read_safely() -> None:
    items: list[dict[str, Any]] = [
        {"event": []},
        {"event": "DEEP", "status": "DEEP", "message": "DEEP"},
        {"event": "LOGIN" * 1_000, "status": 2**63, "message": "x" * 10_000},
        {"event": "subscribe", "status": 200.0, "message": None},
        {"event": "subscribe", "status": True},
        {"event": "login", "data": {"status": "401", "message": ["Unauthorized"]}},
    ]
    text = orjson.dumps(items).decode().replace('"DEEP"', DEEP)  # too deep for dumps()
    decoded = decode_frame(text, 0)
    assert [c.event for c in decoded.controls] == [
        "<list>",
        "<list>",
        "login" * 12 + "logi",
        "subscribe",
        "subscribe",
        "login",
    ]
    assert [c.status for c in decoded.controls] == [None] * 6
    assert [len(c.message) for c in decoded.controls] == [0, 0, 500, 0, 0, 0]
    assert decoded.controls[-1].login_outcome() is LoginOutcome.OK  # no words, no status


def test_rest_quotes_are_held_to_the_same_bounds() -> None:
    body = orjson.dumps(
        [
            _quote(timestamp=1e29, change=1e300, changePercentage=1e9, volume=-1, open=0),
            _quote(symbol="  ", price=1.0),
            _quote(symbol="MSFT", price=1e300),
            _quote(symbol="NVDA", timestamp=[1], changePercentage=None, changesPercentage=1e7),
        ]
    )
    aapl, nvda = parse_quotes(200, body, received_ns=EPOCH_NS)
    assert (aapl.symbol, aapl.provider_time_ns, aapl.change, aapl.change_rate) == (
        "AAPL",
        EPOCH_NS,
        None,
        None,
    )
    assert (aapl.volume, aapl.open, aapl.price) == (None, None, 254.43)
    assert (nvda.symbol, nvda.provider_time_ns, nvda.change_rate) == ("NVDA", EPOCH_NS, None)
    for tick in (aapl, nvda):
        assert tick_problem(tick) is None
        encoded_for_clients(tick)


def test_rest_error_bodies_of_any_shape() -> None:
    with pytest.raises(RestError) as caught:
        parse_quotes(429, b'{"Error Message": ' + DEEP.encode() + b"}", 0)
    assert caught.value.message == "error object"  # str() of it raised RecursionError
    with pytest.raises(RestError) as caught:
        parse_quotes(429, orjson.dumps({"Error Message": 7, "message": LIMIT_REACH * 10}), 0)
    assert caught.value.kind == "limit" and len(caught.value.message) == 300


# ---- TLS -------------------------------------------------------------------------------


def test_tls_always_verifies_and_takes_a_ca_bundle(tmp_path: Any) -> None:
    default = tls_context(None)
    assert default.verify_mode is ssl.CERT_REQUIRED and default.check_hostname
    with pytest.raises(ConfigError, match="no such file"):
        tls_context(str(tmp_path / "missing.pem"))
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError, match="FMP_CA_BUNDLE"):
        tls_context(str(bogus))
    config = Config(fmp_api_key=Secret(KEY), fmp_ca_bundle=str(bogus))
    with pytest.raises(ConfigError):
        FmpProvider.from_config(config)
    with pytest.raises(ConfigError, match="FMP_API_KEY"):
        FmpProvider.from_config(Config())


# ---- the provider against the fake FMP -------------------------------------------------


def mock_epoch_ns() -> int:
    """The fake's clock for `t`: the same virtual epoch as the hub's WallClock."""
    return EPOCH_NS + int(trio.current_time() * 1e9)


@pytest.fixture
async def fake() -> AsyncIterator[FakeFmp]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(FakeFmp(api_key=KEY, clock=mock_epoch_ns).serve)
        nursery.cancel_scope.cancel()


def make_provider(fake: FakeFmp, *, key: str = KEY, **kwargs: Any) -> FmpProvider:
    return FmpProvider(
        api_key=Secret(key),
        ws_url=fake.ws_url,
        rest_url=fake.rest_url,
        backoff=Backoff(rng=random.Random(1)),
        **kwargs,
    )


async def run_hub(
    nursery: trio.Nursery, provider: FmpProvider, *, ack_timeout: float = 10.0
) -> Hub:
    hub = Hub([provider], clock=WallClock(EPOCH_NS), ack_timeout=ack_timeout, linger=1.0)
    result: Hub = await nursery.start(hub.run)
    return result


async def next_state(sub: Subscriber, within: float = 5.0) -> SymbolState:
    with trio.fail_after(within):
        state: SymbolState = await sub.receive()
    return state


async def test_login_subscribe_then_trades_and_quotes_reach_a_subscriber_merged(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            result = await hub.subscribe(sub, ["aapl"])
            assert result.accepted == ("AAPL",)
            # The upstream saw the login first, then a lower-case subscribe.
            (session,) = fake.sessions
            assert session.received[0] == {"event": "login", "data": {"apiKey": KEY}}
            assert session.received[1] == {"event": "subscribe", "data": {"ticker": ["aapl"]}}
            assert fake.login_outcomes == ["ok"]

            # The REST snapshot is the first update: a price at once, with the day's figures.
            seeded = await next_state(sub)
            book = fake.book("aapl")
            assert (seeded.symbol, seeded.kind, seeded.last_price) == (
                "AAPL",
                TickKind.TRADE,
                book.price,
            )
            assert seeded.prev_close == book.prev_close_cents / 100
            assert seeded.change == pytest.approx(book.price - seeded.prev_close)
            assert fake.rest_requests == [("/stable/quote", ("AAPL",))]

            t_trade = mock_epoch_ns() - 1_000
            assert await fake.trade("AAPL", 190.25, 300, t=t_trade) == 1
            traded = await next_state(sub)
            assert (traded.kind, traded.last_price, traded.last_size) == (
                TickKind.TRADE,
                190.25,
                300,
            )
            assert traded.provider_time_ns == t_trade  # nanoseconds kept exactly
            assert traded.prev_close == seeded.prev_close  # merged with the snapshot

            assert await fake.quote("AAPL", bid=190.2, ask=190.3, bid_size=200, ask_size=400) == 1
            quoted = await next_state(sub)
            assert (quoted.kind, quoted.bid, quoted.bid_size, quoted.ask, quoted.ask_size) == (
                TickKind.QUOTE,
                190.2,
                200,
                190.3,
                400,
            )
            assert (quoted.last_price, quoted.last_size) == (190.25, 300)  # the trade is kept

            assert await fake.trade_break("AAPL", 190.25, 300) == 1
            broken = await next_state(sub)
            assert broken.kind is TickKind.CANCEL
            assert broken.last_price == 190.25  # a break does not move the price (model.merge)
        stats = provider.statistics()
        assert stats.state is ProviderState.CONNECTED and stats.kind == "fmp" and stats.live
        assert stats.connects == 1 and stats.malformed == 0
        nursery.cancel_scope.cancel()


async def test_a_missing_login_ack_is_tolerated(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    fake.login_mode = LoginMode.SILENT
    provider = make_provider(fake, login_grace=3.0)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber() as sub:
            start = trio.current_time()
            assert (await hub.subscribe(sub, ["MSFT"])).ok
            assert trio.current_time() - start >= 3.0  # it waited the grace, then went on
            assert fake.early_frames == 0  # nothing was sent before the login
            await fake.trade("msft", 371.5)
            while (await next_state(sub)).last_price != 371.5:
                pass
        assert provider.statistics().state is ProviderState.CONNECTED
        nursery.cancel_scope.cancel()


async def test_an_unauthorized_key_stops_retrying_and_never_shows_the_key(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-key-5d1e2b"
    provider = make_provider(fake, key=wrong)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        await fake.wait_until(lambda: fake.login_outcomes == ["unauthorized"])
        await trio.sleep(3600)  # an hour: no retry storm, not even a slow retry
        assert fake.connections_total == 1
        assert fake.live_connections == 0
        stats = provider.statistics()
        assert stats.state is ProviderState.AUTH_FAILED
        assert stats.last_error is not None and "refused the API key" in stats.last_error
        async with hub.subscriber() as sub:
            result = await hub.subscribe(sub, ["AAPL"])
        assert [f.reason for f in result.failed] == [FailureReason.UNAVAILABLE]
        assert fake.rest_requests == []  # no snapshot for a provider that cannot log in
        nursery.cancel_scope.cancel()
    assert "refused the API key" in caplog.text
    assert wrong not in caplog.text and wrong not in repr(hub.statistics())


async def test_a_key_connected_elsewhere_backs_off_long_and_says_so(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    fake.key_in_use_elsewhere = True
    provider = make_provider(fake, another_location_wait=300.0)
    async with trio.open_nursery() as nursery:
        await run_hub(nursery, provider)
        await fake.wait_until(lambda: fake.login_outcomes == ["another_location"])
        await trio.sleep(1)
        stats = provider.statistics()
        assert stats.state is ProviderState.BACKING_OFF
        assert stats.detail is not None and "another process" in stats.detail
        await trio.sleep(1000)
        assert 3 <= fake.connections_total <= 4  # one try per ~300 s, not a kick-off loop
        fake.key_in_use_elsewhere = False  # the other process went away
        await fake.wait_until(lambda: "ok" in fake.login_outcomes)
        await trio.sleep(5)  # past the login answer
        assert provider.statistics().state is ProviderState.CONNECTED
        assert provider.statistics().detail is None
        nursery.cancel_scope.cancel()


async def test_a_second_session_with_the_same_key_is_refused_by_the_fake(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    first = make_provider(fake)
    second = make_provider(fake, another_location_wait=600.0)
    async with trio.open_nursery() as nursery:
        await run_hub(nursery, first)
        await fake.wait_until(lambda: fake.login_outcomes == ["ok"])
        await run_hub(nursery, second)
        await fake.wait_until(lambda: fake.login_outcomes == ["ok", "another_location"])
        await trio.sleep(1)
        assert second.statistics().state is ProviderState.BACKING_OFF
        assert "another process" in (second.statistics().detail or "")
        assert first.statistics().state is ProviderState.CONNECTED
        nursery.cancel_scope.cancel()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_stalled_session_is_reconnected_and_resubscribed(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    provider = make_provider(fake, watchdog=90.0)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAPL", "MSFT"])).ok
            assert fake.stall() == 1
            start = trio.current_time()
            await fake.wait_until(
                lambda: len(fake.subscribe_frames) >= 2 and fake.sessions[-1].number == 2
            )
            await fake.wait_until(lambda: fake.subscribed() == {"aapl", "msft"})
            assert 90.0 <= trio.current_time() - start <= 95.0  # watchdog + first backoff
            assert fake.live_connections == 1  # the stalled socket was closed
            assert fake.login_outcomes == ["ok", "ok"]
            # Re-registration after a reconnect asks no new snapshot.
            assert sorted(s for _, syms in fake.rest_requests for s in syms) == ["AAPL", "MSFT"]
            await fake.trade("msft", 372.0)
            while (await next_state(sub)).last_price != 372.0:
                pass
        stats = provider.statistics()
        assert stats.connects == 2 and stats.last_error is not None
        assert "no frame" in stats.last_error
        nursery.cancel_scope.cancel()


async def test_heartbeats_keep_a_quiet_market_connected(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    fake.heartbeat_interval = 30.0
    provider = make_provider(fake, watchdog=90.0)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            await trio.sleep(6 * 3600)  # a closed market: no ticks for six hours
        assert fake.connections_total == 1
        assert provider.statistics().messages >= 6 * 120  # the heartbeats
        nursery.cancel_scope.cancel()


async def test_without_heartbeats_quiet_sessions_are_refreshed_calmly(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    fake.heartbeat_interval = None  # the legacy host's heartbeats are unconfirmed (fmp.md §5)
    provider = make_provider(fake, watchdog=90.0)
    async with trio.open_nursery() as nursery:
        await run_hub(nursery, provider)
        await trio.sleep(3600)
        # At most one login per watchdog period (~91 s), never a storm.
        assert 30 <= fake.connections_total <= 3600 / 90 + 1
        assert fake.live_connections == 1
        nursery.cancel_scope.cancel()


async def test_garbage_frames_are_skipped_and_counted(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            await next_state(sub)  # the snapshot
            for junk in ("not json", "[1, 2]", '{"s":"aapl","type":"X"}', "null", "\x00"):
                assert await fake.send_raw(junk) == 1
            await fake.send_raw('{"event":"mystery","message":"new feature"}')
            await fake.send_frame([trade_frame("aapl", 191.0, 5, NOW), 3], "AAPL")  # array
            state = await next_state(sub)
            assert (state.last_price, state.provider_time_ns) == (191.0, NOW)
        stats = provider.statistics()
        # Four garbage frames, the two elements of [1, 2] and the stray element: each
        # unusable object counts once.
        assert stats.malformed == 7
        assert stats.connects == 1 and stats.state is ProviderState.CONNECTED
        nursery.cancel_scope.cancel()


async def test_no_socket_leaks_across_reconnects(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            await fake.wait_until(lambda: len(fake.rest_requests) == 1)
            await trio.sleep(1)
            baseline = open_fds()
            for session in range(2, 8):
                if session % 2:
                    assert fake.drop() == 1  # TCP reset, no close frame: 1006 on our side
                else:
                    await fake.send_raw("")  # keep some traffic in between
                    assert fake.stall() == 1  # silence: our watchdog closes it
                await fake.wait_until(
                    lambda n=session: any(s.number == n and s.tickers for s in fake.sessions)  # type: ignore[misc]
                )
                assert fake.live_connections == 1
            await trio.sleep(1)
            assert open_fds() == baseline
        assert provider.statistics().connects == 7
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (RestMode.INVALID_KEY, "invalid_key"),
        (RestMode.INVALID_KEY_200, "invalid_key"),
        (RestMode.LIMIT, "limit"),
        (RestMode.LEGACY, "legacy"),
    ],
)
async def test_rest_errors_show_in_health_and_are_never_fatal(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp, mode: RestMode, kind: str
) -> None:
    fake.rest_mode = mode
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            await fake.wait_until(lambda: len(fake.rest_requests) == 1)
            await trio.sleep(1)
            stats = provider.statistics()
            assert stats.last_error is not None and kind in stats.last_error
            assert stats.detail == f"REST quotes unavailable: {kind}"
            assert stats.state is ProviderState.CONNECTED
            await fake.trade("aapl", 188.0)
            assert (await next_state(sub)).last_price == 188.0  # no snapshot, live data flows
            fake.rest_mode = RestMode.OK  # the next snapshot succeeds and clears the detail
            assert (await hub.subscribe(sub, ["MSFT"])).ok
            assert (await next_state(sub)).symbol == "MSFT"
            assert provider.statistics().detail is None
        assert provider.rest_errors == 1 and provider.snapshots == 1
        nursery.cancel_scope.cancel()


async def test_snapshots_are_batched_and_never_move_a_live_price_back(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            result = await hub.subscribe(sub, ["AAPL", "MSFT", "NVDA", "ZZZZ"])
            assert result.ok
            await fake.wait_until(lambda: sum(len(s) for _, s in fake.rest_requests) == 4)
            assert len(fake.rest_requests) <= 2  # one request per round of new symbols
            states = [await next_state(sub) for _ in range(4)]
            assert {s.symbol for s in states} == {"AAPL", "MSFT", "NVDA", "ZZZZ"}
        # A symbol that trades before its snapshot arrives keeps the live price.
        fake.rest_delay = 5.0
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["TSLA"])).ok
            assert await fake.trade("tsla", 999.0, t=mock_epoch_ns()) == 1
            fake.book("tsla").price_cents = 100  # what REST will say, five seconds late
            live = await next_state(sub)
            assert (live.last_price, live.prev_close) == (999.0, None)
            seeded = await next_state(sub, within=10)
            assert seeded.last_price == 999.0  # not moved back to the REST price
            assert seeded.prev_close == fake.book("tsla").prev_close_cents / 100
            assert seeded.change == pytest.approx(999.0 - seeded.prev_close)
        nursery.cancel_scope.cancel()


async def test_tickers_outside_the_plan_are_rejected_with_fmps_text(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    fake.unauthorized = {"xyz"}
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber() as sub:
            result = await hub.subscribe(sub, ["AAPL", "XYZ"])
        assert result.accepted == ("AAPL",)
        (failure,) = result.failed
        assert (failure.symbol, failure.reason) == ("XYZ", FailureReason.REJECTED)
        assert "not authorized" in failure.detail
        assert provider.statistics().state is ProviderState.CONNECTED  # not an auth failure
        nursery.cancel_scope.cancel()


async def test_without_acks_a_subscribe_is_confirmed_after_the_grace(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    fake.ack_subscriptions = False
    provider = make_provider(fake, ack_grace=3.0)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber() as sub:
            start = trio.current_time()
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)
        nursery.cancel_scope.cancel()


async def test_data_confirms_a_subscribe_before_the_grace(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    fake.ack_subscriptions = False
    provider = make_provider(fake, ack_grace=30.0)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider, ack_timeout=60.0)
        async with hub.subscriber() as sub:
            start = trio.current_time()
            async with trio.open_nursery() as inner:
                inner.start_soon(hub.subscribe, sub, ["AAPL"])
                await fake.wait_until(lambda: "aapl" in fake.subscribed())
                await trio.sleep(1)
                await fake.trade("aapl", 189.0)
            assert trio.current_time() - start < 5
            assert sub.holds("AAPL")
        nursery.cancel_scope.cancel()


async def test_released_symbols_are_unsubscribed_lower_case(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)  # linger 1 s
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAPL", "MSFT"])).ok
            hub.unsubscribe(sub, ["MSFT"])
            await fake.wait_until(lambda: fake.subscribed() == {"aapl"})
        assert [syms for _, syms in fake.unsubscribe_frames] == [("msft",)]
        await fake.wait_until(lambda: not fake.subscribed())
        assert provider.statistics().registrations == 0
        nursery.cancel_scope.cancel()


async def test_the_api_key_never_reaches_logs_or_statistics(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.rest_mode = RestMode.INVALID_KEY
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            await fake.wait_until(lambda: len(fake.rest_requests) == 1)
            await trio.sleep(1)
            fake.drop()
            await fake.wait_until(lambda: fake.connections_total == 2)
            await trio.sleep(5)
            fake.login_mode = LoginMode.UNAUTHORIZED
            fake.drop()
            await fake.wait_until(lambda: "unauthorized" in fake.login_outcomes)
            await trio.sleep(5)
        shown = [repr(hub.statistics()), repr(provider.statistics()), caplog.text]
        nursery.cancel_scope.cancel()
    assert "GET http://127.0.0.1" in caplog.text and "/stable/quote" in caplog.text  # httpx's
    assert "refused the API key" in caplog.text and "invalid_key" in caplog.text
    for text in shown:
        assert KEY not in text


async def test_emit_ticks_streams_a_fixed_rate_to_subscribed_sessions_only(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS, capacity=10_000) as sub:
            assert (await hub.subscribe(sub, ["AAPL", "MSFT"])).ok
            await next_state(sub)
            await next_state(sub)  # the two snapshots
            sent_before = fake.frames_sent
            start = trio.current_time()
            made = await fake.emit_ticks(["aapl", "msft", "nvda"], rate=600.0, duration=2.0)
            assert made == 1200
            assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)
            assert fake.frames_sent - sent_before == 800  # NVDA is not subscribed
            states = [await next_state(sub) for _ in range(800)]
        assert {s.symbol for s in states} == {"AAPL", "MSFT"}
        assert {s.kind for s in states} == {TickKind.TRADE, TickKind.QUOTE}
        times = [s.provider_time_ns for s in states]
        assert times == sorted(times) and times[0] >= EPOCH_NS + int(start * 1e9)
        assert all(s.provider_time_ns <= s.received_ns for s in states)  # t is the emit time
        nursery.cancel_scope.cancel()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key), made with the openssl CLI."""
    openssl = shutil.which("openssl")
    # Debian ships openssl; a machine without it must say so rather than skip the TLS test.
    assert openssl is not None, "the openssl command is needed to make a test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_tls_with_a_ca_bundle_for_wss_and_https_and_never_without_one(
    autojump_clock: trio.testing.MockClock, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeFmp(api_key=KEY, tls=server_tls).serve)
        assert fake.ws_url.startswith("wss://") and fake.rest_url.startswith("https://")
        config = Config(
            fmp_api_key=Secret(KEY),
            fmp_ws_url=fake.ws_url,
            fmp_rest_url=fake.rest_url,
            fmp_ca_bundle=str(cert),
        )
        trusted = FmpProvider.from_config(config)
        hub = await run_hub(nursery, trusted)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok  # over wss://
            snapshot = await next_state(sub)  # over https://
            assert snapshot.last_price == fake.book("aapl").price
        assert fake.login_outcomes == ["ok"]

        # The system trust store does not know the fake's certificate: no session, no REST.
        untrusting = FmpProvider.from_config(config.replace(fmp_ca_bundle=None))
        other = Hub([untrusting], clock=WallClock(EPOCH_NS), ack_timeout=5.0)
        await nursery.start(other.run)
        async with other.subscriber() as sub:
            result = await other.subscribe(sub, ["MSFT"])
        assert [f.reason for f in result.failed] == [FailureReason.TIMEOUT]
        stats = untrusting.statistics()
        assert stats.state is ProviderState.BACKING_OFF and stats.connects == 0
        assert stats.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in stats.last_error
        assert fake.login_outcomes == ["ok"]  # the untrusting provider never sent its key
        assert ("/stable/quote", ("MSFT",)) not in fake.rest_requests
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("message", "state", "shown"),
    [
        ("Connected from another location", ProviderState.BACKING_OFF, "another process"),
        ("Unauthorized", ProviderState.AUTH_FAILED, "refused the API key"),
    ],
)
async def test_a_login_event_in_mid_session_ends_it(
    autojump_clock: trio.testing.MockClock,
    fake: FakeFmp,
    message: str,
    state: ProviderState,
    shown: str,
) -> None:
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
        frame = {"event": "login", "status": 401, "message": message}
        assert await fake.send_frame(frame) == 1
        await fake.wait_until(lambda: fake.live_connections == 0)
        await trio.sleep(1)
        stats = provider.statistics()
        assert stats.state is state
        assert shown in (stats.detail or stats.last_error or "")
        assert fake.connections_total == 1
        nursery.cancel_scope.cancel()


async def test_the_key_is_added_below_httpx_so_its_request_log_never_shows_it(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    seen: list[httpx.URL] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=[_quote(symbol="AAPL", price=123.45)])

    provider = make_provider(fake, http_transport=httpx.MockTransport(answer))
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            assert (await next_state(sub)).last_price == 123.45
        nursery.cancel_scope.cancel()
    (url,) = seen
    assert url.path == "/stable/quote" and url.query == f"symbol=AAPL&apikey={KEY}".encode()
    assert "/stable/quote?symbol=AAPL" in caplog.text and KEY not in caplog.text


# ---- untrusted input over a real socket ------------------------------------------------

JUNK: list[str | bytes] = [
    '{"s":"aapl","type":["T"],"lp":1.0}',  # was TypeError: the session ended
    '{"s":{"x":1},"type":"T","lp":1.0}',
    '{"event":[],"status":99999999999999999999}',  # an unknown control: not malformed
    '{"s":"aapl","type":"T","lp":1e300,"t":1}',
    "[" * 1_000 + "]" * 1_000,  # a deep array: its only element is not an object
    "[" * 2_000,  # deeper than orjson reads: not JSON
    b"\xff\xfe\x00 binary",  # a binary frame that is not UTF-8
    b'{"s":"aapl","type":"T","lp":2.0}',  # a binary frame of valid JSON (FMP sends text)
    "\x00",
    '{"s":"aapl","type":"T","lp":3.0,"t":1e29}',  # usable: t falls back to the read time
]
MALFORMED_IN_JUNK = 7  # all but the unknown control, the binary JSON and the last frame


async def test_junk_in_the_middle_of_a_tape_is_counted_and_prices_keep_flowing(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    provider = make_provider(fake)
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            await next_state(sub)  # the snapshot
            fake.interleave = list(JUNK)
            prices = [100.0 + i for i in range(len(JUNK))]
            for price in prices:  # junk and a trade in one write, so in one read
                t = mock_epoch_ns() - 1_000  # a provider time the receive time is not
                assert await fake.trade("aapl", price, t=t) == 1
            states = [await next_state(sub) for _ in range(len(prices) + 2)]
        got = [(s.last_price, s.provider_time_ns == s.received_ns) for s in states]
        expected = [(p, False) for p in prices]
        expected.insert(7, (2.0, True))  # the binary frame's JSON, read like text; no t
        expected.insert(10, (3.0, True))  # t=1e29 gave way to the receive time
        assert got == expected
        stats = provider.statistics()
        assert stats.malformed == MALFORMED_IN_JUNK
        assert (stats.connects, fake.connections_total, stats.state) == (
            1,
            1,
            ProviderState.CONNECTED,
        )
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (lambda: httpx.Response(200, content=b" " * (MAX_REST_BODY + 1)), "http_error"),
        (lambda: httpx.Response(200, content=b"[" * 5_000), "not a JSON array"),
        (lambda: httpx.Response(200, json=[_quote(timestamp=1e29, price=1e300)]), None),
        (lambda: 1 / 0, "ZeroDivisionError"),  # a bug below httpx: not an HTTPError
    ],
)
async def test_a_hostile_rest_answer_never_ends_the_provider(
    autojump_clock: trio.testing.MockClock,
    fake: FakeFmp,
    answer: Any,
    shown: str | None,
) -> None:
    provider = make_provider(fake, http_transport=httpx.MockTransport(lambda _: answer()))
    async with trio.open_nursery() as nursery:
        hub = await run_hub(nursery, provider)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
            await trio.sleep(1)  # the snapshot request was answered, one way or another
            await fake.trade("aapl", 188.0)
            state = await next_state(sub)
            assert (state.last_price, state.seq) == (188.0, 1)  # no snapshot got through
            assert provider.snapshots == 0
            if shown is not None:
                assert provider.rest_errors == 1
                assert shown in (provider.statistics().last_error or "")
            # The snapshot task lives on: the next symbol is asked for too.
            assert (await hub.subscribe(sub, ["MSFT"])).ok
            await trio.sleep(1)
            assert provider.rest_errors == (2 if shown else 0)
        assert provider.statistics().connects == 1
        nursery.cancel_scope.cancel()
