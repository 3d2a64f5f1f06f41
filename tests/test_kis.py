"""The KIS provider: pure parsing, then the issue's "Must show" list against the fake KIS."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_stock.clock import WallClock
from trio_stock.config import Config, Secret
from trio_stock.hub import FailureReason, Hub, Policy
from trio_stock.model import TickKind
from trio_stock.upstream.backoff import Backoff
from trio_stock.upstream.bounds import TIME_MAX_NS, TIME_MIN_NS
from trio_stock.upstream.contract import ProviderState
from trio_stock.upstream.kis import KisProvider
from trio_stock.upstream.kis_wire import (
    MAX_CONTROL_TEXT,
    Control,
    DataFrame,
    kst_ns,
    parse_frame,
    parse_orderbook,
    parse_trade,
    registration,
)
from trio_stock.upstream.session import QUOTA_PROBE_AFTER

from .conftest import EPOCH_NS
from .fakes.fake_kis import (
    DEFAULT_APP_KEY,
    DEFAULT_APP_SECRET,
    EXAMPLE_FRAME,
    EXAMPLE_TRADE,
    FakeKis,
    trade_record,
)

SAMSUNG, HYNIX, KAKAO = "005930", "000660", "035720"
EXAMPLE_TIME_NS = int(dt.datetime(2023, 6, 12, 0, 33, 54, tzinfo=dt.UTC).timestamp()) * 10**9


# ---- pure parsing ------------------------------------------------------------------------


def test_the_portal_example_record_maps_every_field() -> None:
    frame = parse_frame(EXAMPLE_FRAME)
    assert isinstance(frame, DataFrame)
    assert (frame.tr_id, frame.count, frame.encrypted, len(frame.records)) == (
        "H0STCNT0",
        "001",
        False,
        1,
    )
    trade = parse_trade(frame.records[0])
    assert trade.code == SAMSUNG
    assert trade.time_ns == EXAMPLE_TIME_NS  # 09:33:54 KST on 2023-06-12
    assert (trade.price, trade.size, trade.volume) == (71900, 1, 3052507)
    assert (trade.sign, trade.change, trade.change_rate) == ("5", -100, -0.14)
    assert (trade.open, trade.high, trade.low, trade.vwap) == (72100, 72400, 71700, 72023.83)
    assert (trade.ask, trade.bid, trade.ask_size, trade.bid_size) == (71900, 71800, 65945, 216924)
    assert (trade.side, trade.session_code, trade.halted, trade.hour_class) == (
        "1",
        "20",
        False,
        "0",
    )
    tick = trade.tick("001", received_ns=5)
    assert (tick.kind, tick.prev_close, tick.volume, tick.size) == (
        TickKind.TRADE,
        72000,
        3052507,
        1,
    )
    assert (tick.record_seq, tick.received_ns, tick.provider_time_ns) == ("001", 5, EXAMPLE_TIME_NS)


def test_multi_record_frames_split_by_width_with_extra_trailing_fields() -> None:
    records = [trade_record(SAMSUNG, 71_000 + i * 100, size=i + 1) for i in range(3)]
    values = [v for r in records for v in [*r, "extra1", "extra2"]]  # 48 fields each
    frame = parse_frame("0|H0STCNT0|003|" + "^".join(values))
    assert isinstance(frame, DataFrame)
    assert [len(r) for r in frame.records] == [48, 48, 48]
    trades = [parse_trade(r) for r in frame.records]
    assert [(t.price, t.size) for t in trades] == [(71000, 1), (71100, 2), (71200, 3)]


@pytest.mark.parametrize(
    "text",
    [
        "0|H0STCNT0|002|" + "^".join(EXAMPLE_TRADE) + "^1",  # 47 values do not split in 2
        "0|H0STCNT0|0x1|" + "^".join(EXAMPLE_TRADE),
        "0|H0STCNT0|000|",
        "0|H0STCNT0",
        "{not json",
        '{"body": {}}',
        "[1, 2]",
    ],
)
def test_malformed_frames_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_frame(text)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, "5930"),
        (1, "0933"),
        (1, "250000"),
        (2, ""),
        (2, "abc"),
        (2, "nan"),
        (12, ""),
        (13, "inf"),
        (33, "2023"),
        (33, "20231340"),
    ],
)
def test_malformed_records_raise_value_error(index: int, value: str) -> None:
    record = list(EXAMPLE_TRADE)
    record[index] = value
    with pytest.raises(ValueError):
        parse_trade(record)
    with pytest.raises(ValueError):
        parse_trade(EXAMPLE_TRADE[:45])


def test_control_frames() -> None:
    refused = parse_frame(
        '{"header":{"tr_id":"(null)","tr_key":"","encrypt":"N"},'
        '"body":{"rt_cd":"9","msg_cd":"OPSP8996","msg1":"ALREADY IN USE appkey"}}'
    )
    assert refused == Control("(null)", "", "9", "OPSP8996", "ALREADY IN USE appkey")
    assert not refused.ok
    already = parse_frame(
        '{"header":{"tr_id":"H0STCNT0","tr_key":"005930","encrypt":"N"},'
        '"body":{"rt_cd":"1","msg_cd":"OPSP0002","msg1":"ALREADY IN SUBSCRIBE"}}'
    )
    assert isinstance(already, Control) and already.ok and already.tr_key == SAMSUNG
    ping = parse_frame('{"header":{"tr_id":"PINGPONG","datetime":"20241011121818"}}')
    assert isinstance(ping, Control) and ping.is_ping
    encrypted = parse_frame("1|H0STCNI0|001|c2VjcmV0")
    assert isinstance(encrypted, DataFrame) and encrypted.encrypted and not encrypted.records


def test_registration_frame_is_the_documented_shape() -> None:
    frame = json.loads(registration("AK", "P", "H0STCNT0", SAMSUNG, register=False))
    assert frame == {
        "header": {"approval_key": "AK", "custtype": "P", "tr_type": "2", "content-type": "utf-8"},
        "body": {"input": {"tr_id": "H0STCNT0", "tr_key": SAMSUNG}},
    }


def test_orderbook_record_gives_best_bid_and_ask() -> None:
    record = [SAMSUNG, "100000", "0"] + [str(72_000 + i * 100) for i in range(10)]
    record += [str(71_900 - i * 100) for i in range(10)]
    record += [str(1000 + i) for i in range(20)] + ["0"] * 16 + ["X", "Y", "Z"]  # 62 fields
    tick = parse_orderbook(record, "20230612", "001", received_ns=1)
    assert (tick.kind, tick.symbol, tick.ask, tick.bid) == (TickKind.QUOTE, SAMSUNG, 72000, 71900)
    assert (tick.ask_size, tick.bid_size) == (1000, 1010)
    assert tick.provider_time_ns == kst_ns("20230612", "100000")
    assert kst_ns("20230612", "100000") == EXAMPLE_TIME_NS + (26 * 60 + 6) * 10**9


@pytest.mark.parametrize(
    ("date", "time"),
    [
        ("00010101", "000000"),  # year 1: hhmmss() of it raised in every client's writer
        ("19991231", "235959"),
        ("21000101", "000000"),
        ("99991231", "235959"),
        ("２０２３０６１２", "093354"),  # full-width digits: str.isdigit() says yes
        ("20230612", "０９３３５４"),
        ("2023061²", "093354"),
    ],
)
def test_dates_outside_2000_to_2099_and_non_ascii_digits_are_malformed(
    date: str, time: str
) -> None:
    with pytest.raises(ValueError):
        kst_ns(date, time)
    record = trade_record(SAMSUNG, 71_900, date=date, time=time)
    with pytest.raises(ValueError):
        parse_trade(record)


def test_kst_times_are_held_to_the_engines_time_window() -> None:
    assert kst_ns("20000101", "090000") == TIME_MIN_NS  # KST is UTC+9
    with pytest.raises(ValueError):
        kst_ns("20000101", "085959")  # still 1999 in UTC
    assert kst_ns("20991231", "235959") < TIME_MAX_NS


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (2, "0"),  # price
        (2, "-71900"),
        (2, "1e10"),
        (2, "1e308"),
        (4, "-1e10"),  # change
        (5, "1e7"),  # change rate, percent
        (7, "-5"),  # open
        (10, "1e12"),  # ask
        (12, "-1"),  # size
        (12, "1e16"),
        (13, "1e300"),  # accumulated volume
        (36, "-3"),  # ask size
    ],
)
def test_numbers_out_of_bounds_make_the_record_malformed(index: int, value: str) -> None:
    record = list(EXAMPLE_TRADE)
    record[index] = value
    with pytest.raises(ValueError):
        parse_trade(record)


def test_a_zero_optional_price_is_no_price() -> None:
    record = list(EXAMPLE_TRADE)
    record[10], record[11], record[7] = "0", "0", "0"  # empty book side, no open yet
    trade = parse_trade(record)
    assert (trade.ask, trade.bid, trade.open) == (None, None, None)
    record[2], record[4] = "100", "100"  # a change as large as the price: no prev close
    assert parse_trade(record).tick("001", received_ns=1).prev_close is None


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5_000 + "]" * 5_000,  # json.loads raised RecursionError, not ValueError
        '{"header": {"tr_id": ' + "[" * 5_000 + "]" * 5_000 + "}}",
        "0|H0STCNT0|001|",  # one empty record: it is the record that is malformed
        "0|H0STCNT0|00001|" + "^".join(EXAMPLE_TRADE),  # 5-digit count
        "0|H0STCNT0|٠٠١|" + "^".join(EXAMPLE_TRADE),  # Arabic-Indic digits
        "0|H0STCNT0|²|" + "^".join(EXAMPLE_TRADE),
        "0|" + "H" * 100 + "|001|x",  # a TR id too long to be one
        "0|H0ST CNT0|001|x",
        "\ud800",  # a lone surrogate
        '{"header": {"tr_id": "\\ud800"}}',  # an escaped one
        "",
    ],
)
def test_hostile_frames_raise_only_value_error(text: str) -> None:
    try:
        frame = parse_frame(text)
    except ValueError:
        return
    assert isinstance(frame, DataFrame)
    for record in frame.records:
        with pytest.raises(ValueError):
            parse_trade(record)


def test_control_texts_are_strings_and_bounded() -> None:
    frame = parse_frame(
        '{"header": {"tr_id": "H0STCNT0", "tr_key": {"a": [1, 2]}}, '
        '"body": {"rt_cd": 1, "msg_cd": ["OPSP0000"], "msg1": "' + "x" * 10_000 + '"}}'
    )
    assert frame == Control("H0STCNT0", "", "1", "", "x" * MAX_CONTROL_TEXT)
    assert not frame.ok


# ---- against the fake --------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeKis]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(FakeKis().serve)
        nursery.cancel_scope.cancel()


def provider_for(fake: FakeKis, **options: Any) -> KisProvider:
    settings: dict[str, Any] = {
        "app_key": Secret(DEFAULT_APP_KEY),
        "app_secret": Secret(DEFAULT_APP_SECRET),
        "ws_url": fake.ws_url,
        "rest_url": fake.rest_url,
        "backoff": Backoff(initial=1.0, maximum=30.0, jitter=0.0),
        "register_interval": 0.05,
        "watchdog": 60.0,
    }
    settings.update(options)
    return KisProvider(**settings)


@asynccontextmanager
async def running(
    fake: FakeKis, *, linger: float = 5.0, **options: Any
) -> AsyncIterator[tuple[KisProvider, Hub]]:
    provider = provider_for(fake, **options)
    hub = Hub([provider], linger=linger, ack_timeout=30.0, clock=WallClock(EPOCH_NS))
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        yield provider, hub
        nursery.cancel_scope.cancel()


async def test_approval_connect_register_and_ticks_reach_a_subscriber(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with running(fake) as (provider, hub), hub.subscriber(Policy.LOSSLESS) as sub:
        result = await hub.subscribe(sub, [SAMSUNG])
        assert result.accepted == (SAMSUNG,)
        assert fake.approval_requests == 1
        assert fake.requests_of("1") == [SAMSUNG]
        assert fake.requests_of("1", "H0STASP0") == []  # no orderbook unless enabled
        key = fake.requests[0]["header"]["approval_key"]
        assert fake.approvals[key] == DEFAULT_APP_KEY
        assert await fake.send_trades([trade_record(SAMSUNG, 71_900, size=7, volume=1234)]) == 1
        state = await sub.receive()
        assert (state.symbol, state.last_price, state.last_size, state.volume) == (
            SAMSUNG,
            71_900,
            7,
            1234,
        )
        assert state.provider_time_ns == EXAMPLE_TIME_NS
        assert (state.change, state.prev_close, state.bid, state.ask) == (
            -100,
            72_000,
            71_900,
            72_000,
        )
        assert state.record_seq == "001"
        stats = provider.statistics()
        assert (stats.kind, stats.state, stats.quota) == ("kis", ProviderState.CONNECTED, 40)
        assert (stats.connects, stats.registrations) == (1, 1)


async def test_every_record_of_a_multi_record_frame_is_delivered(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    fake.extra_fields = 1  # live records sometimes carry a 47th field (kis.md §6.1)
    async with running(fake) as (_, hub), hub.subscriber(Policy.LOSSLESS) as sub:
        assert (await hub.subscribe(sub, [SAMSUNG, HYNIX])).ok
        records = [
            trade_record(SAMSUNG, 71_900, size=1, volume=10),
            trade_record(HYNIX, 178_000, size=2, volume=20),
            trade_record(SAMSUNG, 72_000, size=3, volume=13),
            trade_record(HYNIX, 178_500, size=4, volume=24),
            trade_record(SAMSUNG, 71_800, size=5, volume=18),
        ]
        assert await fake.send_trades(records) == 1
        states = [await sub.receive() for _ in records]
        assert [(s.symbol, s.last_price, s.last_size, s.volume) for s in states] == [
            (SAMSUNG, 71_900, 1, 10),
            (HYNIX, 178_000, 2, 20),
            (SAMSUNG, 72_000, 3, 13),
            (HYNIX, 178_500, 4, 24),
            (SAMSUNG, 71_800, 5, 18),
        ]
        assert {s.record_seq for s in states} == {"005"}


async def test_pingpong_is_echoed_and_keeps_the_session(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [SAMSUNG])).ok
        await trio.sleep(300)  # five watchdog periods with no data: only PINGPONGs
        assert len(fake.pings_sent) >= 25
        assert fake.pongs == fake.pings_sent[: len(fake.pongs)]  # identical texts
        assert len(fake.pongs) >= len(fake.pings_sent) - 1
        assert (fake.pong_drops, fake.connections_total) == (0, 1)
        assert provider.statistics().connects == 1


async def test_silent_session_reconnects_with_a_fresh_key_and_already_in_subscribe(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    fake.sticky = True  # the server still holds the old registrations (kis.md §8.5)
    async with running(fake) as (provider, hub), hub.subscriber(Policy.LOSSLESS) as sub:
        assert (await hub.subscribe(sub, [SAMSUNG, HYNIX])).ok
        fake.stall()
        stalled_at = trio.current_time()
        await fake.wait_until(lambda: len(fake.requests_of("1")) == 4)
        assert trio.current_time() - stalled_at >= 60.0  # the watchdog, not earlier
        assert fake.requests_of("1") == [SAMSUNG, HYNIX, SAMSUNG, HYNIX]
        await fake.wait_until(lambda: len(fake.answers) == 4)
        assert [a["body"]["msg_cd"] for a in fake.answers] == ["OPSP0000"] * 2 + ["OPSP0002"] * 2
        keys = [r["header"]["approval_key"] for r in fake.requests]
        assert fake.approval_requests == 2 and keys[0] == keys[1] != keys[2] == keys[3]
        assert await fake.send_trades([trade_record(HYNIX, 180_000)]) == 1
        state = await sub.receive()
        assert (state.symbol, state.last_price, state.epoch) == (HYNIX, 180_000, 2)
        stats = provider.statistics()
        assert (stats.connects, stats.registrations, stats.state) == (2, 2, ProviderState.CONNECTED)
        assert stats.last_error == "no frame for 60 s"
        assert (fake.live_connections, fake.max_live_connections) == (1, 1)


async def test_drops_never_leak_sockets_nor_open_two_sessions(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [SAMSUNG])).ok
        fds = len(os.listdir("/proc/self/fd"))  # the fake resets, so count our own sockets
        for sessions in range(2, 6):

            def resubscribed(expected: int = sessions) -> bool:
                return len(fake.requests_of("1")) == expected and fake.registered() == {SAMSUNG}

            assert fake.drop() == 1  # TCP reset, no close frame: 1006 on the client
            await fake.wait_until(resubscribed)
            assert fake.live_connections == 1
            assert len(os.listdir("/proc/self/fd")) == fds
        assert fake.max_live_connections == 1
        assert provider.statistics().connects == 5
    await fake.wait_until(lambda: fake.live_connections == 0)


async def test_max_subscribe_over_is_a_quota_failure_and_adapts_the_quota(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    fake.cap = 2  # this server accepts fewer than 41 (kis.md §7, U15)
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        assert provider.quota == 40
        result = await hub.subscribe(sub, [SAMSUNG, HYNIX, KAKAO])
        assert result.accepted == (SAMSUNG, HYNIX)
        assert [(f.symbol, f.reason) for f in result.failed] == [(KAKAO, FailureReason.QUOTA)]
        assert result.failed[0].detail == "OPSP0008 MAX SUBSCRIBE OVER"
        assert provider.quota == 2
        assert provider.statistics().quota == 2
        again = await hub.subscribe(sub, ["105560"])  # the hub now refuses before asking
        assert [f.reason for f in again.failed] == [FailureReason.QUOTA]
        assert fake.requests_of("1") == [SAMSUNG, HYNIX, KAKAO]


async def test_key_in_use_backs_off_and_never_opens_a_second_session(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    fake.in_use_elsewhere.add(DEFAULT_APP_KEY)
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        async with trio.open_nursery() as waiting:
            waiting.start_soon(hub.subscribe, sub, [SAMSUNG])
            await fake.wait_until(lambda: fake.refused_sessions == 1)
            refused_at = trio.current_time()
            await trio.sleep(1.0)
            stats = provider.statistics()
            assert stats.state is ProviderState.BACKING_OFF
            assert stats.detail == "another session uses this app key (OPSP8996)"
            await fake.wait_until(lambda: fake.connections_total == 2)
            assert trio.current_time() - refused_at >= 60.0  # a long back-off, not 1 s
            fake.in_use_elsewhere.clear()
        # The first subscribe timed out meanwhile (30 s); a new one succeeds now.
        assert (await hub.subscribe(sub, [SAMSUNG])).ok
        assert fake.max_live_connections == 1
        assert provider.statistics().detail is None


async def test_an_approval_key_the_server_forgot_means_a_fresh_session(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [SAMSUNG])).ok
        fake.approvals.clear()  # expired: the next request gets OPSP0011 (kis.md §3.1)
        assert (await hub.subscribe(sub, [HYNIX])).ok  # answered by the next session
        assert [a["body"]["msg_cd"] for a in fake.answers] == [
            "OPSP0000",
            "OPSP0011",
            "OPSP0000",
            "OPSP0000",
        ]
        assert fake.approval_requests == 2
        stats = provider.statistics()
        assert (stats.connects, stats.registrations) == (2, 2)
        assert stats.last_error == "approval key not accepted (OPSP0011)"


async def test_unsubscribe_sends_tr_type_2_after_the_linger(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with running(fake, linger=5.0) as (provider, hub), hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [SAMSUNG, HYNIX])).ok
        hub.unsubscribe(sub, [SAMSUNG])
        released_at = trio.current_time()
        await trio.sleep(4.9)
        assert fake.requests_of("2") == []  # lingering
        await fake.wait_until(lambda: fake.requests_of("2") == [SAMSUNG])
        assert trio.current_time() - released_at >= 5.0
        await fake.wait_until(lambda: fake.registered() == {HYNIX})
        assert fake.answers[-1]["body"]["msg_cd"] == "OPSP0001"
        assert provider.statistics().registrations == 1


async def test_garbage_is_counted_and_the_session_lives_on(
    autojump_clock: trio.testing.MockClock, fake: FakeKis, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [SAMSUNG])).ok
        await fake.send_raw("garbage")
        # 46 values announced as 2 records: two 23-field records, each one malformed.
        await fake.send_raw("0|H0STCNT0|002|" + "^".join(EXAMPLE_TRADE))
        await fake.send_raw('{"header": 1}')
        await fake.send_encrypted()
        await fake.send_encrypted()
        await fake.send_trades([trade_record(SAMSUNG, 70_000)])
        assert (await sub.receive()).last_price == 70_000
        stats = provider.statistics()
        assert (stats.malformed, provider.encrypted_frames) == (4, 2)
        assert (stats.connects, fake.connections_total) == (1, 1)
    assert caplog.text.count("encrypted") == 1  # one warning, not one per frame


async def test_orderbook_uses_two_registrations_per_symbol(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    fake.cap = 3  # room for one symbol and a half
    async with running(fake, orderbook=True) as (provider, hub), hub.subscriber() as sub:
        assert provider.quota == 20  # min(40, 41) // 2
        result = await hub.subscribe(sub, [SAMSUNG, HYNIX])
        assert result.accepted == (SAMSUNG,)
        assert [(f.symbol, f.reason) for f in result.failed] == [(HYNIX, FailureReason.QUOTA)]
        assert fake.requests_of("1", "H0STASP0") == [SAMSUNG, HYNIX]
        # HYNIX's trade registration succeeded but its book did not: it is undone.
        await fake.wait_until(lambda: fake.requests_of("2") == [HYNIX])
        await fake.wait_until(lambda: fake.registered() == {SAMSUNG})
        assert provider.quota == 1
        assert provider.statistics().registrations == 1


async def test_refused_credentials_stop_without_a_retry_loop(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with (
        running(fake, app_secret=Secret("wrong")) as (provider, hub),
        hub.subscriber() as sub,
    ):
        result = await hub.subscribe(sub, [SAMSUNG])
        assert [f.reason for f in result.failed] == [FailureReason.UNAVAILABLE]
        await trio.sleep(3600)
        assert (fake.approval_requests, fake.connections_total) == (1, 0)
        stats = provider.statistics()
        assert stats.state is ProviderState.AUTH_FAILED
        assert stats.last_error == "approval refused (HTTP 403)"


async def test_shutdown_unregisters_and_closes(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [SAMSUNG, HYNIX])).ok
        cancelled_at = trio.current_time()
    assert trio.current_time() - cancelled_at < 0.5  # no waiting out the grace period
    await fake.wait_until(lambda: fake.live_connections == 0)
    assert sorted(fake.requests_of("2")) == [HYNIX, SAMSUNG]
    assert provider.statistics().state is ProviderState.STOPPED


async def test_secrets_never_reach_logs_or_statistics(
    autojump_clock: trio.testing.MockClock, fake: FakeKis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [SAMSUNG])).ok
        fake.drop()
        await fake.wait_until(lambda: len(fake.approvals) == 2)
        await fake.wait_until(lambda: len(fake.requests_of("1")) == 2)
        await fake.send_raw("garbage")
        shown = repr(provider.statistics()) + repr(hub.statistics()) + repr(provider.__dict__)
    secrets = [DEFAULT_APP_KEY, DEFAULT_APP_SECRET, *fake.approvals]
    assert len(secrets) == 4
    assert caplog.text  # something was logged at all
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in shown


def test_from_config() -> None:
    config = Config.from_mapping(
        {
            "KIS_APP_KEY": DEFAULT_APP_KEY,
            "KIS_APP_SECRET": DEFAULT_APP_SECRET,
            "KIS_ENV": "paper",
            "KIS_MAX_SUBSCRIPTIONS": "50",
            "KIS_WATCHDOG": "90",
            "KIS_CUSTTYPE": "B",
        }
    )
    provider = KisProvider.from_config(config)
    assert (provider.name, provider.quota, provider.custtype) == ("kis", 41, "B")
    assert (provider.watchdog, provider.register_interval) == (90.0, 0.5)
    assert provider.url() == "ws://ops.koreainvestment.com:31000"
    orderbook = KisProvider.from_config(config.replace(kis_orderbook=True))
    assert orderbook.quota == 20


# ---- untrusted input over a real socket --------------------------------------------------


async def test_one_bad_record_is_skipped_and_the_others_of_its_frame_are_published(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with running(fake) as (provider, hub), hub.subscriber(Policy.LOSSLESS) as sub:
        assert (await hub.subscribe(sub, [SAMSUNG, HYNIX])).ok
        records = [
            trade_record(SAMSUNG, 71_900, size=1),
            trade_record(HYNIX, 178_000, date="00010101", time="000000"),  # year 1
            trade_record(SAMSUNG, 72_000, size=3),
            trade_record(HYNIX, 10**12),  # a price above PRICE_MAX
            trade_record(HYNIX, 178_500, size=5),
        ]
        assert await fake.send_trades(records) == 1
        states = [await sub.receive() for _ in range(3)]
        assert [(s.symbol, s.last_price, s.last_size) for s in states] == [
            (SAMSUNG, 71_900, 1),
            (SAMSUNG, 72_000, 3),
            (HYNIX, 178_500, 5),
        ]
        stats = provider.statistics()
        assert (stats.malformed, stats.connects) == (2, 1)


JUNK: list[str | bytes] = [
    "garbage",
    "0|H0STCNT0|001|",  # a record of one empty field
    "0|H0STCNT0|003|" + "^".join(EXAMPLE_TRADE),  # 46 values do not split in 3
    "0|H0STCNT0|999999|x",
    "0|" + "^" * 1000,
    "[" * 10_000,  # json.loads raised RecursionError here: the session ended
    '{"header": {"tr_id": ["PINGPONG"]}}',
    '{"header": {"tr_id": {"nested": [[[]]]}}, "body": [1]}',
    b"\xff\xfe\x00binary",  # a binary frame, not UTF-8
    b"0|H0STCNT0|001|" + "^".join(EXAMPLE_TRADE).encode(),  # a valid record, but binary
    "\x00" * 100,
]


async def test_junk_in_the_middle_of_a_tape_is_counted_and_prices_keep_flowing(
    autojump_clock: trio.testing.MockClock, fake: FakeKis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.interleave = list(JUNK)
    async with running(fake) as (provider, hub), hub.subscriber(Policy.LOSSLESS) as sub:
        assert (await hub.subscribe(sub, [SAMSUNG])).ok
        prices = [70_000 + 100 * i for i in range(len(JUNK) + 1)]
        for price in prices:  # junk, trade, junk, trade, ...
            assert await fake.send_trades([trade_record(SAMSUNG, price)]) == 1
        assert [(await sub.receive()).last_price for _ in prices] == prices
        assert fake.interleave == []
        stats = provider.statistics()
        # Every junk frame counted once ("0|H0STCNT0|001|" is one malformed record).
        assert stats.malformed == len(JUNK)
        assert (stats.connects, fake.connections_total, stats.state) == (
            1,
            1,
            ProviderState.CONNECTED,
        )
        assert stats.last_error is None
    for secret in (DEFAULT_APP_KEY, DEFAULT_APP_SECRET, *fake.approvals):
        assert secret not in caplog.text


async def test_an_adapted_quota_recovers_after_quota_probe_after(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    fake.cap = 2  # e.g. registrations of an earlier session still count (kis.md §7, U15)
    async with running(fake) as (provider, hub), hub.subscriber() as sub:
        result = await hub.subscribe(sub, [SAMSUNG, HYNIX, KAKAO])
        assert [f.symbol for f in result.failed] == [KAKAO]
        assert provider.quota == 2
        fake.cap = 41  # whatever held the slots is gone
        await trio.sleep(QUOTA_PROBE_AFTER - 1)
        refused = await hub.subscribe(sub, [KAKAO])  # still the learnt cap: not even asked
        assert [f.reason for f in refused.failed] == [FailureReason.QUOTA]
        assert fake.requests_of("1") == [SAMSUNG, HYNIX, KAKAO]
        await trio.sleep(1)
        assert provider.quota == 40  # probing again
        assert (await hub.subscribe(sub, [KAKAO])).ok
        assert fake.registered() == {SAMSUNG, HYNIX, KAKAO}
        # If the cap is still there, the probe costs one refusal and the quota adapts again.
        fake.cap = 3
        await trio.sleep(QUOTA_PROBE_AFTER)
        again = await hub.subscribe(sub, ["105560"])
        assert [f.reason for f in again.failed] == [FailureReason.QUOTA]
        assert provider.quota == 3
        assert provider.statistics().quota == 3
