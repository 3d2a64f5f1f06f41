"""The I/O-free parts of trio_stock.client: wire, gaps, the buffer, endings, the address."""

from __future__ import annotations

import inspect
import random
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

import trio_stock.client
from trio_stock.client import Connected, Disconnected, Gap, PriceUpdate, StreamRefused
from trio_stock.client.address import PRICES_PATH, Address, bearer_header
from trio_stock.client.endings import Ended, refusal, retry_delay
from trio_stock.client.gaps import GapFinder
from trio_stock.client.pending import MAX_EVENTS, Arrived, Pending
from trio_stock.client.wire import (
    SYMBOLS_PER_REQUEST,
    ErrorReply,
    Greeting,
    MalformedMessage,
    SubscriptionReply,
    parse,
    subscribe_requests,
    unsubscribe_requests,
)
from trio_stock.endpoints.prices import encode_price_update
from trio_stock.model import Market, SymbolState, TickKind
from trio_stock.upstream.backoff import Backoff


def update(symbol: str = "AAPL", seq: int = 1, epoch: int | None = 1) -> PriceUpdate:
    return PriceUpdate(
        symbol=symbol, market="US", provider="sim-us", kind="T", seq=seq, epoch=epoch,
        timestamp_ms=1_700_000_000_000, last_price=1.0, last_size=1.0, bid_price=None,
        bid_size=None, ask_price=None, ask_size=None, change=None, change_percent=None,
        open=None, high=None, low=None, volume=None, previous_close=None, name=None,
    )  # fmt: skip


# ---- wire ---------------------------------------------------------------------------------


def test_the_gateways_own_price_update_parses_into_every_field() -> None:
    state = SymbolState(
        symbol="005930", market=Market.KR, provider="sim-kr", seq=42, epoch=3,
        kind=TickKind.QUOTE, provider_time_ns=1_700_000_000_123_456_789,
        received_ns=1_700_000_000_200_000_000, last_price=71_500.0, last_size=10.0,
        bid=71_400.0, bid_size=5.0, ask=71_600.0, ask_size=7.0, open=71_000.0,
        high=72_000.0, low=70_900.0, volume=12_345.0, prev_close=71_100.0, change=400.0,
        change_rate=0.56, name="삼성전자",
    )  # fmt: skip
    frame = encode_price_update(state)
    text = frame[frame.index(b"{") :].decode()  # the payload after the frame's header
    assert parse(text) == PriceUpdate(
        symbol="005930", market="KR", provider="sim-kr", kind="Q", seq=42, epoch=3,
        timestamp_ms=1_700_000_000_123, last_price=71_500.0, last_size=10.0,
        bid_price=71_400.0, bid_size=5.0, ask_price=71_600.0, ask_size=7.0, change=400.0,
        change_percent=0.56, open=71_000.0, high=72_000.0, low=70_900.0, volume=12_345.0,
        previous_close=71_100.0, name="삼성전자",
    )  # fmt: skip


def wire_update(**changes: Any) -> dict[str, Any]:
    base = attrs.asdict(update())
    base |= {"type": "price_update", "data_type": base.pop("kind")}
    base["timestamp"] = base.pop("timestamp_ms")
    del base["gap"]
    return base | changes


def test_unknown_fields_are_ignored_and_a_missing_epoch_is_none() -> None:
    message = wire_update(cached_at="2024-01-01T00:00:00.000+00:00", something_new=[1, 2])
    del message["epoch"]
    parsed = parse(orjson.dumps(message))
    assert isinstance(parsed, PriceUpdate) and parsed.epoch is None and parsed.gap is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not JSON",
        b"[1, 2]",
        b'"price_update"',
        orjson.dumps(wire_update(seq="x")),
        orjson.dumps(wire_update(seq=None)),
        orjson.dumps(wire_update(last_price="high")),
        orjson.dumps({"type": "price_update", "symbol": "AAPL"}),
        orjson.dumps({"type": "subscription", "action": "subscribed", "symbols": 5}),
        orjson.dumps({"type": "error"}),
    ],
)
def test_a_malformed_message_raises_malformed_message(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"type": "pong"}, None),
        ({"type": ["price_update"]}, None),  # not a name: not one of ours
        ({"no type": 1}, None),
        ({"type": "connected", "message": "hi"}, Greeting("hi")),
        (
            {"type": "subscription", "action": "subscribed", "symbols": ["A"], "failed": ["B"]},
            SubscriptionReply("subscribed", ("A",), ("B",)),
        ),
        ({"type": "error", "message": "no"}, ErrorReply("no")),
    ],
)
def test_other_messages(raw: dict[str, Any], expected: object) -> None:
    assert parse(orjson.dumps(raw)) == expected


def test_requests_come_in_parts_the_gateway_accepts() -> None:
    symbols = [f"S{i}" for i in range(SYMBOLS_PER_REQUEST * 2 + 1)]
    parts = [orjson.loads(r) for r in subscribe_requests(symbols)]
    assert [len(p["symbols"]) for p in parts] == [SYMBOLS_PER_REQUEST, SYMBOLS_PER_REQUEST, 1]
    assert [s for p in parts for s in p["symbols"]] == symbols
    assert {p["action"] for p in parts} == {"subscribe"}
    assert orjson.loads(unsubscribe_requests(["A"])[0]) == {
        "action": "unsubscribe",
        "symbols": ["A"],
    }
    assert subscribe_requests([]) == []


# ---- gaps ---------------------------------------------------------------------------------


def test_gap_finder_tells_skips_reconnects_new_epochs_and_repeats() -> None:
    gaps = GapFinder()
    assert gaps.check(update(seq=5), 1) is None  # the first: nothing before it
    assert gaps.check(update(seq=6), 1) is None
    assert gaps.check(update(seq=9), 1) == Gap("seq", 2)
    assert gaps.check(update(seq=10), 2) is None  # reconnected, nothing missed
    assert gaps.check(update(seq=14), 3) == Gap("reconnect", 3)
    assert gaps.repeats(update(seq=14)) and not gaps.repeats(update(seq=14, epoch=2))
    assert gaps.check(update(seq=15, epoch=2), 3) == Gap("epoch", None)
    assert gaps.check(update(seq=3, epoch=2), 4) == Gap("epoch", None)  # seq went back
    assert gaps.check(update(seq=4, epoch=None), 4) is None  # an epoch not sent: seq only
    assert gaps.check(update("MSFT", seq=100), 4) is None  # per symbol
    gaps.forget(["AAPL"])
    assert gaps.check(update(seq=50), 4) is None  # subscribed again: a fresh start


# ---- the buffer ---------------------------------------------------------------------------


def taken(pending: Pending) -> list[object]:
    items: list[object] = []
    while (item := pending.take()) is not None:
        items.append(item.update if isinstance(item, Arrived) else item)
    return items


def test_conflate_queues_then_keeps_the_newest_of_each_symbol() -> None:
    pending = Pending(4, conflate=True)
    for seq in (1, 2, 3):
        pending.put_update(update("AAPL", seq), 1)
    pending.put_event(Connected("ws://x", 1))
    pending.put_update(update("MSFT", 1), 1)  # the fourth update: still a queue
    assert (len(pending), pending.dropped) == (5, 0)
    pending.put_update(update("AAPL", 4), 1)  # over the bound: collapse
    assert pending.dropped == 3
    for seq in range(5, 100):
        pending.put_update(update("AAPL", seq), 1)
    assert len(pending) == 3 and pending.dropped == 98
    assert taken(pending) == [Connected("ws://x", 1), update("MSFT", 1), update("AAPL", 99)]
    for seq in (100, 101):  # caught up: a queue again
        pending.put_update(update("AAPL", seq), 1)
    assert taken(pending) == [update("AAPL", 100), update("AAPL", 101)]


def test_lossless_fills_up_and_never_drops() -> None:
    pending = Pending(2, conflate=False)
    pending.put_update(update(seq=1), 1)
    pending.put_update(update(seq=2), 1)
    assert not pending.has_room()
    pending.put_event(Disconnected(1001, "bye", 1.0))  # events always fit
    with pytest.raises(AssertionError):
        pending.put_update(update(seq=3), 1)
    assert taken(pending)[:2] == [update(seq=1), update(seq=2)]
    assert pending.has_room() and pending.dropped == 0


def test_waiting_events_are_bounded() -> None:
    pending = Pending(2, conflate=False)
    for n in range(MAX_EVENTS + 10):
        pending.put_event(Disconnected(None, "refused", float(n)))
    pending.put_update(update(), 1)
    items = taken(pending)
    assert len(items) == MAX_EVENTS + 1
    assert items[0] == Disconnected(None, "refused", 10.0)  # the oldest gave way
    assert items[-1] == update()


def test_a_buffer_holds_at_least_one_update() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Pending(0, conflate=True)


# ---- endings ------------------------------------------------------------------------------


def rejected(status: int, body: bytes = b"", **headers: str) -> Ended:
    raw = tuple((k.replace("_", "-").encode(), v.encode()) for k, v in headers.items())
    return Ended.rejected(trio_websocket.ConnectionRejected(status, raw, body))


def test_auth_closes_and_client_errors_are_refusals() -> None:
    for code in (4001, 4003):
        refused = refusal(Ended(code, "no"))
        assert isinstance(refused, StreamRefused) and (refused.code, refused.reason) == (code, "no")
    not_found = refusal(rejected(404, b"no WebSocket endpoint at /x"))
    assert not_found is not None and not_found.code == 404
    assert not_found.reason == "HTTP 404: no WebSocket endpoint at /x"
    for ended in (Ended(1001, ""), Ended(1013, ""), Ended(4008, ""), Ended(None, "lost")):
        assert refusal(ended) is None
    for status in (408, 429, 500, 502, 503):
        assert refusal(rejected(status)) is None


async def test_later_means_at_least_five_seconds_or_retry_after() -> None:
    def backoff() -> Backoff:
        return Backoff(initial=0.5, maximum=30, rng=random.Random(1))

    assert 0.4 <= retry_delay(Ended(1001, ""), backoff()) <= 0.6
    assert 5 <= retry_delay(Ended(1013, ""), backoff()) <= 6
    assert 5 <= retry_delay(Ended(4008, ""), backoff()) <= 6
    assert retry_delay(rejected(503, retry_after="12"), backoff()) == 12
    assert retry_delay(rejected(503, retry_after="99999"), backoff()) == 300
    assert 5 <= retry_delay(rejected(503, retry_after="soon"), backoff()) <= 6
    short = Backoff(initial=0.5, maximum=2, rng=random.Random(1))
    assert retry_delay(Ended(1013, ""), short) <= 2 * 1.2  # the cap holds for "later" too


async def test_backoff_grows_to_its_cap_and_starts_over_after_a_healthy_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(initial=0.5, maximum=4, healthy_after=30, jitter=0)
    delays = [retry_delay(Ended(None, "refused"), backoff) for _ in range(6)]
    assert delays == [0.5, 1, 2, 4, 4, 4]
    backoff.connected()
    await trio.sleep(30)
    assert retry_delay(Ended(1001, ""), backoff) == 0.5


def test_a_closed_connection_is_described_by_its_close_frame() -> None:
    assert Ended.closed(trio_websocket.CloseReason(1001, "bye")) == Ended(1001, "bye")
    assert Ended.closed(trio_websocket.CloseReason(1011, None)) == Ended(1011, "internal error")
    assert Ended.closed(None) == Ended(None, "connection lost")


# ---- the address --------------------------------------------------------------------------


def test_the_address_of_a_url() -> None:
    plain = Address.from_url("ws://127.0.0.1:8000")
    assert (plain.host, plain.port, plain.resource, plain.tls) == (
        "127.0.0.1",
        8000,
        PRICES_PATH,
        False,
    )
    assert plain.host_header == "127.0.0.1:8000"
    secure = Address.from_url("wss://example.com/api/v2/realtime/ws/prices?access_token=s3cret")
    assert (secure.port, secure.tls, secure.host_header) == (443, True, "example.com")
    assert secure.resource == "/api/v2/realtime/ws/prices?access_token=s3cret"
    assert secure.public_url == "wss://example.com/api/v2/realtime/ws/prices?access_token=***"
    assert Address.from_url("ws://[::1]:9000/").host_header == "[::1]:9000"
    for bad in ("http://127.0.0.1:8000", "ws://", "127.0.0.1:8000", "ws:///path"):
        with pytest.raises(ValueError, match="not a ws:// or wss:// URL"):
            Address.from_url(bad)
    with pytest.raises(ValueError) as refused:
        Address.from_url("https://x/?access_token=s3cret")
    assert "s3cret" not in str(refused.value)


def test_the_token_goes_in_a_bearer_header_or_is_refused_unseen() -> None:
    assert bearer_header(None) == []
    assert bearer_header("a.b-c_d") == [(b"Authorization", b"Bearer a.b-c_d")]
    for bad in ("", "two words", "line\r\nX-Evil: 1", "é", "x" * 8193):
        with pytest.raises(ValueError) as refused:
            bearer_header(bad)
        assert bad not in str(refused.value) or bad == ""


def test_the_clients_public_names_are_exactly_the_intended_ones() -> None:
    public = {
        name
        for name in dir(trio_stock.client)
        if not name.startswith("_") and not inspect.ismodule(getattr(trio_stock.client, name))
    }
    assert public == {
        "Connected", "Disconnected", "Gap", "PriceStream", "PriceUpdate", "StreamEvent",
        "StreamRefused", "StreamStatistics", "SubscriptionFailed", "open_price_stream",
    }  # fmt: skip


def test_the_closing_pong_of_trio_websocket_is_no_error_but_others_are() -> None:
    from wsproto.utilities import LocalProtocolError

    from trio_stock.client.endings import tolerating_the_closing_pong

    closing = LocalProtocolError(
        "Event Pong(payload=b'x') cannot be sent in state ConnectionState.LOCAL_CLOSING."
    )
    with tolerating_the_closing_pong():
        raise ExceptionGroup("reader", [closing])
    other = LocalProtocolError("Event Ping cannot be sent in state ConnectionState.CLOSED.")
    with pytest.raises(ExceptionGroup) as raised, tolerating_the_closing_pong():
        raise ExceptionGroup("reader", [closing, other])
    assert raised.value.exceptions == (other,)
    with pytest.raises(ExceptionGroup) as raised, tolerating_the_closing_pong():
        raise ExceptionGroup("reader", [ValueError("bug")])
    assert isinstance(raised.value.exceptions[0], ValueError)
