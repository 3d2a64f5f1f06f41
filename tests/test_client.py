"""trio_stock.client against the real gateway on 127.0.0.1, on Trio's mock clock.

Each test starts the gateway (``trio_stock.serve``, or its hub and listener with other
client limits) in its own nursery and points a price stream at it. Waiting is virtual:
``trio.sleep`` in a test stands for a program busy elsewhere, and a test that waits for
an item fails after 60 virtual seconds rather than hanging.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from unittest.mock import ANY

import jwt
import pytest
import trio
import trio.testing
import trustme

import trio_stock
from trio_stock import Config, Gateway, Hub, InvalidSymbol, Policy, Tick, TickKind
from trio_stock.client import (
    Connected,
    Disconnected,
    Gap,
    PriceStream,
    PriceUpdate,
    StreamEvent,
    StreamRefused,
    SubscriptionFailed,
    open_price_stream,
)
from trio_stock.endpoints.client import TOO_SLOW_REASON, ClientLimits
from trio_stock.endpoints.prices import PricesProtocol
from trio_stock.gateway import build_hub
from trio_stock.model import SymbolState
from trio_stock.server import serve_http
from trio_stock.transport.wsserver import text_frame

from .clients import gateway_process

Item = PriceUpdate | StreamEvent
SECRET = "a-development-secret-of-40-characters!!!"


def sim_config(port: int = 0, /, **settings: str) -> Config:
    return Config.from_mapping(
        {
            "TRIO_STOCK_PORT": str(port),
            "TRIO_STOCK_SIM_ALWAYS_OPEN": "1",
            "TRIO_STOCK_SIM_TICKS_PER_SECOND": "5",
            **settings,
        }
    )


@asynccontextmanager
async def gateway(config: Config | None = None) -> AsyncIterator[Gateway]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(trio_stock.serve, config or sim_config())
        nursery.cancel_scope.cancel()


async def start_gateway(nursery: trio.Nursery, config: Config) -> tuple[Gateway, trio.CancelScope]:
    """A gateway in ``nursery`` that the test can stop (its cancel scope) and start again."""
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[Gateway]) -> None:
        with scope:
            await trio_stock.serve(config, task_status=task_status)

    served: Gateway = await nursery.start(run)
    return served, scope


def url_of(served: Gateway | int) -> str:
    return f"ws://127.0.0.1:{served if isinstance(served, int) else served.port}"


async def next_item(stream: PriceStream) -> Item:
    """The stream's next item; fails the test if none comes within 60 virtual seconds."""
    with trio.fail_after(60):
        return await anext(stream)


async def updates_of(stream: PriceStream, count: int) -> list[PriceUpdate]:
    """The next ``count`` updates, events in between skipped."""
    updates: list[PriceUpdate] = []
    while len(updates) < count:
        item = await next_item(stream)
        if isinstance(item, PriceUpdate):
            updates.append(item)
    return updates


async def items_until(stream: PriceStream, last: Callable[[Item], bool]) -> list[Item]:
    """Items up to and including the first for which ``last`` holds."""
    items = [await next_item(stream)]
    while not last(items[-1]):
        items.append(await next_item(stream))
    return items


def contiguous(updates: list[PriceUpdate], symbol: str) -> bool:
    seqs = [u.seq for u in updates if u.symbol == symbol]
    return bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def token(**claims: object) -> str:
    """A token for alice valid for an hour (the gateway's clock starts at the real time)."""
    payload = {"sub": "alice", "exp": time.time() + 3600, **claims}
    return jwt.encode(payload, SECRET, "HS256")


def auth_config(**settings: str) -> Config:
    return sim_config(TRIO_STOCK_AUTH="jwt", TRIO_STOCK_JWT_SECRET=SECRET, **settings)


# ---- receiving, subscribing ---------------------------------------------------------------


async def test_a_stream_connects_and_receives_typed_updates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gateway() as served, open_price_stream(url_of(served), ["aapl", "005930"]) as s:
        assert await next_item(s) == Connected(url_of(served), attempt=1)
        updates = await updates_of(s, 20)
        assert {u.symbol for u in updates} == {"AAPL", "005930"}
        assert {u.market for u in updates} == {"US", "KR"}
        assert {u.provider for u in updates} == {"sim-us", "sim-kr"}
        assert {u.kind for u in updates} <= {"T", "Q", "B"}
        assert all(u.gap is None and u.epoch == 1 for u in updates)
        assert all(u.timestamp_ms > 1_600_000_000_000 for u in updates)
        trade = next(u for u in updates if u.kind == "T")
        assert trade.last_price is not None and trade.last_size is not None
        assert {u.name for u in updates} == {"Apple", "삼성전자"}
        assert contiguous(updates, "AAPL") and contiguous(updates, "005930")
        stats = s.statistics()
        assert stats.connected and stats.reconnects == 0 and stats.gaps == 0
        assert stats.symbols == ("AAPL", "005930")
        assert stats.updates >= 20 and stats.dropped == 0 and stats.malformed == 0


async def test_leaving_the_stream_closes_it_for_good(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway() as served:
        async with open_price_stream(url_of(served), ["AAPL"]) as s:
            assert isinstance(await next_item(s), Connected)
        await trio.sleep(10)
    # Our own 1000 close is not a disconnect: the stream never connected a second time.
    opened = [r for r in caplog.records if "websocket seed003 opened" in r.getMessage()]
    assert len(opened) == 1
    assert not any("retry in" in r.getMessage() for r in caplog.records)


async def test_subscribe_and_unsubscribe_on_the_fly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gateway() as served, open_price_stream(url_of(served)) as s:
        assert isinstance(await next_item(s), Connected)
        await s.subscribe(["msft"])
        assert {u.symbol for u in await updates_of(s, 5)} == {"MSFT"}
        await s.subscribe(["000660", "MSFT"])  # MSFT again: asked for once
        assert {u.symbol for u in await updates_of(s, 30)} == {"MSFT", "000660"}
        await s.unsubscribe(["msft"])
        assert s.statistics().symbols == ("000660",)
        # In flight or not, no MSFT update is handed out after unsubscribe returned.
        assert {u.symbol for u in await updates_of(s, 20)} == {"000660"}
        with pytest.raises(InvalidSymbol):
            await s.subscribe(["TSLA", "not a symbol!"])
        assert s.statistics().symbols == ("000660",)  # nothing of a bad request is kept
        await s.subscribe(["MSFT"])  # back: a fresh start, not a gap
        again = [u for u in await updates_of(s, 30) if u.symbol == "MSFT"]
        assert again and again[0].gap is None


async def test_refused_symbols_are_reported_with_the_gateways_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = sim_config(KIS_MAX_SUBSCRIPTIONS="1")
    async with gateway(config) as served, open_price_stream(url_of(served)) as s:
        await s.subscribe(["005930", "000660"])
        items = await items_until(s, lambda item: isinstance(item, SubscriptionFailed))
        failed = items[-1]
        assert isinstance(failed, SubscriptionFailed)
        assert failed.symbols == ("000660",)
        assert "000660" in failed.message
        assert {u.symbol for u in await updates_of(s, 5)} == {"005930"}


# ---- reconnecting ---------------------------------------------------------------------------


async def test_a_restarted_gateway_is_reconnected_and_the_gap_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        first, scope = await start_gateway(nursery, sim_config())
        port = first.port
        assert port is not None
        async with open_price_stream(url_of(port), ["AAPL", "005930"], max_backoff=4) as s:
            before = await updates_of(s, 20)
            scope.cancel()  # the gateway shuts down: its clients get 1001
            items = await items_until(s, lambda item: isinstance(item, Disconnected))
            going_away = items[-1]
            assert isinstance(going_away, Disconnected)
            assert (going_away.code, going_away.reason) == (1001, "server shutting down")
            assert 0 < going_away.retry_in <= 4 * 1.2
            await trio.sleep(10)  # nobody listens meanwhile: the stream keeps trying
            assert not s.statistics().connected
            await start_gateway(nursery, sim_config(port))
            items = await items_until(s, lambda item: isinstance(item, Connected))
            refused = [i for i in items if isinstance(i, Disconnected)]
            assert len(refused) >= 2 and all(d.code is None for d in refused)
            assert all(d.reason.startswith("cannot connect: ") for d in refused)
            assert all(0 < d.retry_in <= 4 * 1.2 for d in refused)  # capped, with jitter
            connected = items[-1]
            assert isinstance(connected, Connected) and connected.attempt == len(refused) + 1
            after = await updates_of(s, 20)
        nursery.cancel_scope.cancel()
    for symbol in ("AAPL", "005930"):  # every symbol asked for again
        last = max(u.seq for u in before if u.symbol == symbol)
        first_after = next(u for u in after if u.symbol == symbol)
        assert first_after.seq < last  # a new gateway numbers from 1 again
        assert first_after.gap == Gap("epoch", None)
        assert contiguous(after, symbol)
    stats = s.statistics()
    assert (stats.reconnects, stats.gaps) == (1, 2)


async def test_1013_from_the_gateway_reconnects_later_with_the_gap_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lossless gateway cuts a client that falls behind with 1013 ("try again later")."""
    config = sim_config()
    limits = ClientLimits(policy=Policy.LOSSLESS, lossless_capacity=8)
    async with trio.open_nursery() as nursery:
        hub: Hub = await nursery.start(build_hub(config).run)
        port = await nursery.start(lambda task_status: serve_http(
            hub, config, limits=limits, task_status=task_status
        ))  # fmt: skip
        async with open_price_stream(url_of(port), ["AAPL"]) as s:
            seen = await updates_of(s, 3)
            for price in range(50):  # faster than any writer: publish never waits
                hub.publish(Tick("AAPL", TickKind.TRADE, 1, 1, price=100.0 + price))
            items = await items_until(s, lambda item: isinstance(item, Disconnected))
            seen += [i for i in items if isinstance(i, PriceUpdate)]
            cut = items[-1]
            assert isinstance(cut, Disconnected)
            assert cut == Disconnected(1013, TOO_SLOW_REASON, cut.retry_in)
            assert cut.retry_in >= 5  # "later": not at once
            started = trio.current_time()
            assert await next_item(s) == Connected(url_of(port), attempt=1)
            assert trio.current_time() - started >= 5
            (snapshot,) = await updates_of(s, 1)
        nursery.cancel_scope.cancel()
    assert snapshot.symbol == "AAPL"
    assert snapshot.gap == Gap("reconnect", snapshot.seq - seen[-1].seq - 1)
    assert snapshot.gap.missed is not None and snapshot.gap.missed > 0


async def test_4008_too_many_connections_is_retried_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bearer = token(max_connections=1)

    async def first_stream(task_status: trio.TaskStatus[None]) -> None:
        async with open_price_stream(url, ["AAPL"], token=bearer) as first:
            await updates_of(first, 1)
            task_status.started()
            await trio.sleep_forever()

    async with gateway(auth_config()) as served, trio.open_nursery() as nursery:
        url = url_of(served)
        await nursery.start(first_stream)
        async with open_price_stream(url, ["MSFT"], token=bearer) as second:
            over = await next_item(second)
            assert isinstance(over, Disconnected)
            assert (over.code, over.reason) == (4008, "at most 1 connections for this user")
            assert over.retry_in >= 5
            started = trio.current_time()
            assert await next_item(second) == Disconnected(4008, over.reason, ANY)
            assert trio.current_time() - started >= 5  # later, not at once
            nursery.cancel_scope.cancel()  # the first stream ends: a place is free
            assert await next_item(second) == Connected(url, attempt=3)
            assert {u.symbol for u in await updates_of(second, 3)} == {"MSFT"}


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bearer", "code", "reason"),
    [
        (jwt.encode({"sub": "alice", "exp": time.time() + 3600}, "x" * 40, "HS256"), 4001,
         "token signature does not verify"),
        (token(markets=[]), 4003, "this token is not entitled to this endpoint's market"),
    ],
)  # fmt: skip
async def test_an_auth_refusal_ends_the_stream_with_an_error_and_no_retry(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    bearer: str,
    code: int,
    reason: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        gateway(auth_config()) as served,
        open_price_stream(url_of(served), ["AAPL"], token=bearer) as s,
    ):
        with pytest.raises(StreamRefused) as refused:  # not greeted: never connected
            await next_item(s)
        assert (refused.value.code, refused.value.reason) == (code, reason)
        await trio.sleep(600)  # no retry, ever
        with pytest.raises(StreamRefused):
            await anext(s)
        with pytest.raises(StreamRefused):
            await s.subscribe(["MSFT"])
        assert not s.statistics().connected
    opened = [r for r in caplog.records if "websocket seed003 opened" in r.getMessage()]
    assert len(opened) == 1
    assert bearer not in caplog.text
    assert bearer not in repr(s) and bearer not in str(refused.value)


async def test_a_valid_token_goes_in_the_header_and_entitlements_apply(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bearer = token(markets=["KR"])
    async with (
        gateway(auth_config()) as served,
        open_price_stream(url_of(served), ["005930", "AAPL"], token=bearer) as s,
    ):
        items = await items_until(s, lambda item: isinstance(item, SubscriptionFailed))
        assert items[-1] == SubscriptionFailed(
            ("AAPL",), "Could not subscribe: AAPL (forbidden: not entitled to the US market)"
        )
        assert {u.symbol for u in await updates_of(s, 5)} == {"005930"}
    assert bearer not in caplog.text


async def test_a_wrong_path_is_refused_without_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        gateway() as served,
        open_price_stream(f"{url_of(served)}/no/such/path", ["AAPL"]) as s,
    ):
        with pytest.raises(StreamRefused) as refused:
            await next_item(s)
        assert refused.value.code == 404
        assert "no WebSocket endpoint at /no/such/path" in refused.value.reason


async def test_a_full_gateway_503_is_retried_after_its_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gateway(sim_config(TRIO_STOCK_MAX_CLIENTS="1")) as served:
        assert served.port is not None
        blocker = await trio.open_tcp_stream("127.0.0.1", served.port)  # the only place
        async with open_price_stream(url_of(served), ["AAPL"]) as s:
            full = await next_item(s)
            assert isinstance(full, Disconnected)
            assert full.code is None and full.reason.startswith("HTTP 503")
            assert full.retry_in >= 5
            await blocker.aclose()
            assert isinstance(await next_item(s), Connected)
            assert {u.symbol for u in await updates_of(s, 2)} == {"AAPL"}


# ---- a program slower than the feed -------------------------------------------------------


async def test_conflate_keeps_the_newest_per_symbol_and_reports_the_skips(
    autojump_clock: trio.testing.MockClock,
) -> None:
    symbols = ["AAPL", "005930"]
    async with gateway() as served, open_price_stream(url_of(served), symbols, buffer=4) as s:
        await updates_of(s, 4)
        for _ in range(10):  # the program is busy elsewhere; ticks keep coming
            await trio.sleep(1)
            assert s.statistics().buffered <= 4
        stats = s.statistics()
        assert stats.dropped > 20 and stats.buffered <= 2
        backlog = await updates_of(s, 2)
        assert {u.symbol for u in backlog} == set(symbols)
        assert all(u.gap is not None and u.gap.reason == "seq" for u in backlog)
        assert sum(u.gap.missed or 0 for u in backlog if u.gap) >= stats.dropped
        assert s.statistics().gaps == 2
        live = await updates_of(s, 20)  # caught up: every update again
        assert contiguous(live, "AAPL") and contiguous(live, "005930")


async def test_lossless_stops_reading_when_full_and_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    symbols = ["AAPL", "005930"]
    async with (
        gateway() as served,
        open_price_stream(url_of(served), symbols, conflate=False, buffer=4) as s,
    ):
        read = await updates_of(s, 4)
        await trio.sleep(10)  # ~100 updates come meanwhile; the socket holds them
        stats = s.statistics()
        assert stats.buffered == 4 and stats.dropped == 0
        read += await updates_of(s, 120)
        assert contiguous(read, "AAPL") and contiguous(read, "005930")
        assert s.statistics().gaps == 0


async def test_malformed_messages_are_counted_and_skipped(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway that garbles every other update: the rest still arrive, the skips show."""
    encode = PricesProtocol.encode

    def garbling(self: PricesProtocol, state: SymbolState) -> bytes:
        if state.seq % 4 == 0:
            return text_frame(b"not JSON")
        if state.seq % 4 == 2:
            return text_frame(b'{"type": "price_update", "symbol": "AAPL", "seq": "x"}')
        return encode(self, state)

    monkeypatch.setattr(PricesProtocol, "encode", garbling)
    async with gateway() as served, open_price_stream(url_of(served), ["AAPL"]) as s:
        updates = await updates_of(s, 10)
        assert all(u.seq % 2 == 1 for u in updates)
        assert all(u.gap == Gap("seq", 1) for u in updates[1:])
        assert s.statistics().malformed >= 9


# ---- a gateway that stops answering -----------------------------------------------------------


async def silent_server(task_status: trio.TaskStatus[int]) -> None:
    """Accepts the WebSocket upgrade, greets, then answers nothing (a peer behind a dead link).

    It still reads raw bytes, unparsed, only to close its end when the client closes its own.
    """
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request, TextMessage

    async def handle(stream: trio.SocketStream) -> None:
        protocol = WSConnection(ConnectionType.SERVER)
        while not any(isinstance(e, Request) for e in protocol.events()):
            protocol.receive_data(await stream.receive_some())
        await stream.send_all(protocol.send(AcceptConnection()))
        await stream.send_all(protocol.send(TextMessage('{"type": "connected", "message": ""}')))
        while await stream.receive_some():
            pass  # a ping, a close: nothing is answered

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_a_gateway_that_stops_answering_pings_is_left_and_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(silent_server)
        async with open_price_stream(url_of(port), ping_interval=5, ping_timeout=3) as s:
            started = trio.current_time()
            assert isinstance(await next_item(s), Connected)
            lost = await next_item(s)
            assert isinstance(lost, Disconnected)
            assert (lost.code, lost.reason) == (None, "no pong within 3 s")
            assert trio.current_time() - started == pytest.approx(8)
            assert isinstance(await next_item(s), Connected)  # and tried again
            open_files = len(os.listdir("/proc/self/fd"))
            for _ in range(5):  # every connection left closes its socket (DESIGN.md pitfalls)
                assert isinstance(await next_item(s), Disconnected)
                assert isinstance(await next_item(s), Connected)
                assert len(os.listdir("/proc/self/fd")) == open_files
            assert s.statistics().reconnects == 6
        nursery.cancel_scope.cancel()


# ---- requests, TLS ----------------------------------------------------------------------------


async def test_a_burst_of_subscribes_is_paced_under_the_gateways_churn_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The gateway refuses more than 20 requests at once (5/s after): none is lost here."""
    tickers = [f"T{letter}{digit}" for letter in "ABC" for digit in range(10)]
    async with gateway() as served, open_price_stream(url_of(served)) as s:
        assert isinstance(await next_item(s), Connected)
        started = trio.current_time()
        for ticker in tickers:  # one request each
            await s.subscribe([ticker])
        assert trio.current_time() - started >= (len(tickers) - 16) / 4  # paced after a burst
        seen: set[str] = set()
        while seen != set(tickers):
            item = await next_item(s)
            assert not isinstance(item, SubscriptionFailed), item
            if isinstance(item, PriceUpdate):
                seen.add(item.symbol)


async def test_wss_with_the_programs_own_trust(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    for pem in cert.cert_chain_pems:
        pem.write_to_path(str(cert_path), append=True)
    config = sim_config(TRIO_STOCK_TLS_CERT=str(cert_path), TRIO_STOCK_TLS_KEY=str(key_path))
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with gateway(config) as served:
        url = f"wss://127.0.0.1:{served.port}"
        async with open_price_stream(url, ["AAPL"], ssl_context=trusted) as s:
            assert await next_item(s) == Connected(url, attempt=1)
            assert {u.symbol for u in await updates_of(s, 3)} == {"AAPL"}
        async with open_price_stream(url, ["AAPL"]) as untrusting:  # the system's trust
            refused = await next_item(untrusting)
            assert isinstance(refused, Disconnected) and refused.code is None
            assert "CERTIFICATE_VERIFY_FAILED" in refused.reason


# ---- the README's example -------------------------------------------------------------------


def write_readme_example(script: Path) -> None:
    """The README's client example, the block after its marker, into ``script``."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- readme-client -->", 1)[1]
    script.write_text(block.split("```python\n", 1)[1].split("```", 1)[0], encoding="utf-8")


async def test_the_readme_client_example_runs_against_a_gateway_process(tmp_path: Path) -> None:
    """As written in the README, against ``python -m trio_stock`` (real time: two processes)."""
    script = tmp_path / "example.py"
    write_readme_example(script)
    ticking = {"TRIO_STOCK_SIM_TICKS_PER_SECOND": "20"}
    async with gateway_process(env=ticking) as (_, port):
        with trio.fail_after(60):
            run = await trio.run_process(
                [sys.executable, str(script), url_of(port)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert run.returncode == 0, run.stderr.decode()
    lines = run.stdout.decode().splitlines()
    assert lines[0] == f"Connected(url='{url_of(port)}', attempt=1)"
    assert {line.split()[0] for line in lines[1:-1]} == {"005930", "AAPL", "MSFT"}
    assert lines[-1].startswith("StreamStatistics(connected=True, reconnects=0, ")
