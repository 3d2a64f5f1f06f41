"""The shared reconnecting-session engine, against a tiny JSON echo-style server.

The server is real (trio-websocket on 127.0.0.1, port 0) and speaks a toy protocol just
rich enough to drive every path of :class:`WebSocketProvider`: login, per-symbol acks,
ticks, server pings, refusals, and faults (stall, drop, garbage).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
from wsproto.events import TextMessage

from trio_stock.clock import WallClock
from trio_stock.errors import AuthFailed
from trio_stock.hub import FailureReason, Hub, Policy
from trio_stock.model import Market, Tick, TickKind
from trio_stock.upstream.backoff import Backoff
from trio_stock.upstream.bounds import TIME_MAX_NS, tick_problem
from trio_stock.upstream.contract import ProviderState
from trio_stock.upstream.session import (
    HANDLER_WARNING_INTERVAL,
    QUOTA_PROBE_AFTER,
    MalformedFrame,
    SessionRefused,
    WebSocketProvider,
)
from trio_stock.upstream.wsclient import ClientWebSocket

from .conftest import EPOCH_NS
from .test_wsclient import connected

# ---- the toy upstream ------------------------------------------------------------------


@attrs.define(eq=False)
class ToyServer:
    """Accepts any path. Frames are JSON objects; see ``ToyProvider`` for the client side."""

    port: int = 0
    deny_login: bool = False
    busy: bool = False  # answer login with {"busy": true} and close
    mute_login: bool = False  # never answer a login (connects time out)
    stall: bool = False  # after login, never send anything and ignore everything
    reject: set[str] = attrs.Factory(set)
    received: list[tuple[float, dict[str, Any]]] = attrs.Factory(list)
    sessions: list[trio_websocket.WebSocketConnection] = attrs.Factory(list)
    connects: int = 0
    live: int = 0
    close_codes: list[int | None] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def serve(self, *, task_status: trio.TaskStatus[ToyServer]) -> None:
        async with trio.open_nursery() as nursery:
            ws_server = await nursery.start(
                trio_websocket.serve_websocket, self._handle, "127.0.0.1", 0, None
            )
            self.port = ws_server.port
            task_status.started(self)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/toy"

    def frames(self, op: str) -> list[dict[str, Any]]:
        return [frame for _, frame in self.received if frame.get("op") == op]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait (on events, not polling) until ``predicate()`` holds."""
        while not predicate():
            await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def push(self, frame: dict[str, Any] | str) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        for ws in list(self.sessions):
            await ws.send_message(text)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        self.connects += 1
        self.live += 1
        self._touch()
        try:
            await self._session(ws)
        except trio_websocket.ConnectionClosed as closed:
            self.close_codes.append(closed.reason.code if closed.reason else None)
        finally:
            if ws in self.sessions:
                self.sessions.remove(ws)
            self.live -= 1
            self._touch()

    async def _session(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            frame = json.loads(await ws.get_message())
            self.received.append((trio.current_time(), frame))
            self._touch()
            op = frame.get("op")
            if (op == "login" and self.mute_login) or (op != "login" and self.stall):
                continue
            if op == "login":
                if self.busy:
                    await ws.send_message(json.dumps({"busy": True}))
                    await ws.aclose()
                    return
                await ws.send_message(json.dumps({"login": not self.deny_login}))
                self.sessions.append(ws)
            elif op == "sub":
                ok = frame["s"] not in self.reject
                await ws.send_message(json.dumps({"ack": frame["s"], "ok": ok}))


class ToyProvider(WebSocketProvider):
    """Logs in with a key, registers one frame per symbol, echoes pings, publishes ticks."""

    kind = "toy"

    def __init__(self, url: str, **kwargs: Any) -> None:
        kwargs.setdefault("backoff", Backoff(initial=1.0, maximum=8.0, jitter=0.0))
        kwargs.setdefault("watchdog", 30.0)
        kwargs.setdefault("quota", 10)
        super().__init__(name="toy", market=Market.US, **kwargs)
        self._url = url
        self.ended = 0
        self.explode: set[str] = set()  # symbols whose register_frames raises KeyError once
        self.explode_on_end = False  # session_ended raises RuntimeError

    def url(self) -> str:
        return self._url

    async def login(self, ws: ClientWebSocket) -> None:
        await ws.send_message(json.dumps({"op": "login", "key": "sekrit"}))
        answer = json.loads(await ws.get_message())
        if answer.get("busy"):
            raise SessionRefused("key in use elsewhere", retry_after=100.0)
        if answer.get("login") is not True:
            raise AuthFailed("toy login denied")

    def register_frames(self, symbols: Sequence[str]) -> list[str]:
        for symbol in symbols:
            if symbol in self.explode:
                self.explode.discard(symbol)
                raise KeyError(symbol)  # a bug in a hook, raised inside the sender task
        return [json.dumps({"op": "sub", "s": s}) for s in symbols]

    def unregister_frames(self, symbols: Sequence[str]) -> list[str]:
        return [json.dumps({"op": "unsub", "s": s}) for s in symbols]

    def handle_message(self, message: str | bytes) -> Sequence[str | bytes]:
        try:
            frame = json.loads(message)
        except ValueError as exc:
            raise MalformedFrame("not JSON") from exc
        if "ping" in frame:
            return [json.dumps({"op": "pong", "n": frame["ping"]})]
        if "ack" in frame:
            reason = None if frame["ok"] else FailureReason.REJECTED
            self.answer(frame["ack"], reason, "" if frame["ok"] else "toy says no")
        elif "tick" in frame:
            now = self.now_ns()
            t = frame.get("t", now)
            self.publish(Tick(frame["tick"], TickKind.TRADE, t, now, price=frame["price"]))
        return []

    def session_ended(self) -> None:
        self.ended += 1
        if self.explode_on_end:
            raise RuntimeError("session_ended broke")


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[ToyServer]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(ToyServer().serve)
        nursery.cancel_scope.cancel()


async def start(server: ToyServer, nursery: trio.Nursery, **kwargs: Any) -> tuple[ToyProvider, Hub]:
    provider = ToyProvider(server.url, **kwargs)
    hub = Hub([provider], linger=0, ack_timeout=20, clock=WallClock(EPOCH_NS))
    await nursery.start(hub.run)
    return provider, hub


# ---- tests ---------------------------------------------------------------------------------


async def test_login_register_and_ticks_reach_a_subscriber(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            result = await hub.subscribe(sub, ["AAA", "BBB"])
            assert result.accepted == ("AAA", "BBB")
            assert [f["s"] for f in server.frames("sub")] == ["AAA", "BBB"]
            await server.push({"tick": "AAA", "price": 12.5})
            state = await sub.receive()
            assert (state.symbol, state.last_price) == ("AAA", 12.5)
        stats = provider.statistics()
        assert stats.state is ProviderState.CONNECTED
        assert (stats.connects, stats.registrations, stats.kind) == (1, 2, "toy")
        assert stats.messages == 3  # two acks, one tick (login() reads the login answer)
        assert stats.last_message_at is not None
        nursery.cancel_scope.cancel()


async def test_rejection_and_intake_quota(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    server.reject.add("BAD")
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery, quota=2)
        async with hub.subscriber() as sub:
            result = await hub.subscribe(sub, ["BAD", "AAA"])
            assert result.accepted == ("AAA",)
            assert [(f.symbol, f.reason, f.detail) for f in result.failed] == [
                ("BAD", FailureReason.REJECTED, "toy says no")
            ]
            assert provider.wanted() == ["AAA"]
            # The engine's own quota check, when its quota shrank below the hub's view.
            provider.set_quota(1)
            result = await hub.subscribe(sub, ["CCC"])
            assert [f.reason for f in result.failed] == [FailureReason.QUOTA]
        nursery.cancel_scope.cancel()


async def test_registrations_are_paced(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    async with trio.open_nursery() as nursery:
        _, hub = await start(server, nursery, register_interval=0.5)
        async with hub.subscriber() as sub:
            symbols = ["AAA", "BBB", "CCC", "DDD"]
            assert (await hub.subscribe(sub, symbols)).ok
        times = [t for t, f in server.received if f["op"] == "sub"]
        assert len(times) == 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= 0.5 - 1e-9 for gap in gaps), gaps
        nursery.cancel_scope.cancel()


async def test_ping_answered_and_malformed_frames_skipped(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAA"])).ok
            await server.push("{{ not json")
            await server.push({"ping": 7})
            await server.wait_until(lambda: bool(server.frames("pong")))
            assert server.frames("pong") == [{"op": "pong", "n": 7}]
            await server.push({"tick": "AAA", "price": 1.0})
            assert (await sub.receive()).last_price == 1.0
        stats = provider.statistics()
        assert stats.malformed == 1
        assert (stats.connects, stats.state) == (1, ProviderState.CONNECTED)
        nursery.cancel_scope.cancel()


async def test_silent_session_is_reconnected_and_resubscribed_without_leaks(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery, watchdog=30.0)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAA", "BBB"])).ok
            server.stall = True
            start_time = trio.current_time()
            await server.wait_until(lambda: server.connects == 4)  # three watchdog expiries
            elapsed = trio.current_time() - start_time
            assert elapsed >= 3 * 30.0  # each silent session lived a full watchdog period
            server.stall = False
            await server.wait_until(lambda: len(server.frames("sub")) == 5 * 2)
            assert server.live == 1  # every earlier socket was closed
            assert [f["s"] for f in server.frames("sub")] == ["AAA", "BBB"] * 5
            await server.push({"tick": "BBB", "price": 3.0})
            assert (await sub.receive()).last_price == 3.0
            assert provider.statistics().registrations == 2  # both acks came before the tick
        stats = provider.statistics()
        assert stats.connects == 5
        assert stats.last_error == "no frame for 30 s"
        assert provider.ended == 4
        nursery.cancel_scope.cancel()
    await server.wait_until(lambda: server.live == 0)
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 2  # the server's listeners


async def test_commands_are_kept_while_backing_off(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    server.mute_login = True  # every connect times out
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery, connect_timeout=5.0)
        await server.wait_until(lambda: server.connects == 2)
        assert provider.statistics().state is ProviderState.CONNECTING
        async with hub.subscriber() as sub:
            with trio.move_on_after(1.0):  # the caller gives up: the hub withdraws AAA
                await hub.subscribe(sub, ["AAA"])
            server.mute_login = False
            result = await hub.subscribe(sub, ["BBB"])  # answered after the next reconnect
            assert result.accepted == ("BBB",)
        assert [f["s"] for f in server.frames("sub")] == ["BBB"]
        assert provider.statistics().connects == 1
        nursery.cancel_scope.cancel()


async def test_backoff_grows_and_connects_time_out(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    server.mute_login = True
    async with trio.open_nursery() as nursery:
        provider, _ = await start(server, nursery, connect_timeout=5.0)
        await server.wait_until(lambda: len(server.frames("login")) == 4)
        times = [t for t, f in server.received if f["op"] == "login"]
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
        assert gaps == [5.0 + 1.0, 5.0 + 2.0, 5.0 + 4.0]  # timeout + 1, 2, 4 s of backoff
        stats = provider.statistics()
        assert (stats.reconnect_attempts, stats.connects) == (3, 0)
        assert stats.last_error == "connect timed out after 5 s"
        assert server.live == 1
        nursery.cancel_scope.cancel()


async def test_auth_failure_stops_retrying_and_rejects_subscribes(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    server.deny_login = True
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery)
        async with hub.subscriber() as sub:
            result = await hub.subscribe(sub, ["AAA"])
            assert [f.reason for f in result.failed] == [FailureReason.UNAVAILABLE]
            assert "auth failed" in result.failed[0].detail
            await trio.sleep(3600)
            result = await hub.subscribe(sub, ["BBB"])
            assert [f.reason for f in result.failed] == [FailureReason.UNAVAILABLE]
        assert server.connects == 1  # no hot retry loop
        stats = provider.statistics()
        assert stats.state is ProviderState.AUTH_FAILED
        assert stats.last_error == "toy login denied"
        nursery.cancel_scope.cancel()


async def test_refused_session_waits_its_retry_after(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    server.busy = True
    async with trio.open_nursery() as nursery:
        provider, _ = await start(server, nursery)
        await server.wait_until(lambda: len(server.frames("login")) == 2)
        logins = [t for t, f in server.received if f["op"] == "login"]
        assert logins[1] - logins[0] >= 100.0
        stats = provider.statistics()
        assert stats.detail == "key in use elsewhere"
        assert server.live <= 1  # never two sessions at once
        nursery.cancel_scope.cancel()


async def test_unsubscribe_is_sent_and_shutdown_unregisters_and_closes(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAA", "BBB"])).ok
            hub.unsubscribe(sub, ["AAA"])  # linger 0: released at once
            await server.wait_until(lambda: bool(server.frames("unsub")))
            assert server.frames("unsub") == [{"op": "unsub", "s": "AAA"}]
            assert provider.statistics().registrations == 1
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
    # The close handshake completed at once, not by waiting out the grace period.
    assert trio.current_time() - cancelled_at < 0.5
    await server.wait_until(lambda: server.live == 0)
    assert [f["s"] for f in server.frames("unsub")] == ["AAA", "BBB"]
    assert server.close_codes == [1000]
    assert provider.statistics().state is ProviderState.STOPPED


async def test_answers_for_withdrawn_symbols_are_ignored(
    autojump_clock: trio.testing.MockClock, server: ToyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["AAA"])).ok
            await server.push({"ack": "ZZZ", "ok": True})  # never asked for
            await server.push({"tick": "AAA", "price": 2.0})
            assert (await sub.receive()).last_price == 2.0
        assert provider.statistics().registrations == 1
        nursery.cancel_scope.cancel()
    assert "sekrit" not in caplog.text


# ---- the error boundary ------------------------------------------------------------------


async def test_a_frame_that_breaks_the_handler_is_counted_and_the_session_lives(
    autojump_clock: trio.testing.MockClock, server: ToyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAA"])).ok
            await server.push({"ack": "AAA"})  # no "ok": the toy handler raises KeyError
            await server.push({"tick": "AAA"})  # no "price": KeyError again
            await server.push({"tick": "AAA", "price": 4.0})
            assert (await sub.receive()).last_price == 4.0
            await trio.sleep(HANDLER_WARNING_INTERVAL)
            await server.push("7")  # TypeError: argument of type 'int' is not iterable
            await server.push({"tick": "AAA", "price": 5.0})
            assert (await sub.receive()).last_price == 5.0
        stats = provider.statistics()
        assert stats.malformed == 3
        assert (stats.connects, server.connects, stats.state) == (1, 1, ProviderState.CONNECTED)
        nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # One line per interval, not one per frame: the first two failures were in one interval.
    assert [r.getMessage() for r in warnings] == [
        "toy: skipped a frame its handler failed on (KeyError); the session goes on",
        "toy: skipped a frame its handler failed on (TypeError); the session goes on",
    ]
    assert all(r.exc_info is None for r in warnings)
    tracebacks = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert len(tracebacks) == 3  # every failure's traceback, at DEBUG
    assert "sekrit" not in caplog.text


async def test_a_bug_in_the_sender_task_ends_the_session_only(
    autojump_clock: trio.testing.MockClock, server: ToyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery)
        provider.explode = {"BBB"}
        provider.explode_on_end = True  # and the cleanup hook fails too
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAA"])).ok
            # The sender raises KeyError('BBB') in the session's nursery: the session ends,
            # the provider reconnects and registers both (the hook works the second time).
            assert (await hub.subscribe(sub, ["BBB"])).ok
            assert server.connects == 2
            await server.push({"tick": "BBB", "price": 2.5})
            assert (await sub.receive()).last_price == 2.5
        stats = provider.statistics()
        assert stats.connects == 2 and stats.state is ProviderState.CONNECTED
        assert stats.last_error == "unexpected KeyError: 'BBB'"
        assert provider.ended == 1
        nursery.cancel_scope.cancel()
    assert "session_ended failed" in caplog.text


def test_tick_problem_names_the_field_out_of_bounds() -> None:
    now = EPOCH_NS
    good = Tick("AAA", TickKind.TRADE, now, now, price=1.0, size=0.0, change=-0.5)
    assert tick_problem(good) is None
    assert tick_problem(Tick("AAA", TickKind.TRADE, 5, 5, price=1.0)) is None  # our own clock
    bad = [
        (Tick("AAA", TickKind.TRADE, 2**64, now, price=1.0), "provider_time_ns"),
        (Tick("AAA", TickKind.TRADE, TIME_MAX_NS, now, price=1.0), "time window"),
        (Tick("AAA", TickKind.TRADE, now, now, price=0.0), "price"),
        (Tick("AAA", TickKind.TRADE, now, now, price=1e300), "price"),
        (Tick("AAA", TickKind.QUOTE, now, now, bid=float("nan")), "bid"),
        (Tick("AAA", TickKind.TRADE, now, now, price=1.0, size=-1.0), "size"),
        (Tick("AAA", TickKind.TRADE, now, now, price=1.0, volume=float("inf")), "volume"),
        (Tick("AAA", TickKind.TRADE, now, now, price=1.0, change_rate=1e7), "change_rate"),
        (Tick("", TickKind.TRADE, now, now, price=1.0), "symbol"),
    ]
    for tick, field in bad:
        problem = tick_problem(tick)
        assert problem is not None and field in problem, (tick, problem)


async def test_implausible_ticks_never_reach_the_hub(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    async with trio.open_nursery() as nursery:
        provider, hub = await start(server, nursery)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["AAA"])).ok
            await server.push({"tick": "AAA", "price": 1e300})
            await server.push({"tick": "AAA", "price": 1.0, "t": 10**30})
            await server.push({"tick": "AAA", "price": 6.0})
            state = await sub.receive()
            assert state.last_price == 6.0 and state.seq == 1  # the first update the hub saw
        assert provider.statistics().malformed == 2
        nursery.cancel_scope.cancel()


async def test_an_adapted_quota_is_probed_again_after_a_while(
    autojump_clock: trio.testing.MockClock, server: ToyServer
) -> None:
    provider = ToyProvider(server.url, quota=10)
    provider.adapt_quota(2)
    assert (provider.quota, provider.statistics().quota) == (2, 2)
    await trio.sleep(QUOTA_PROBE_AFTER - 1)
    provider.adapt_quota(3)  # a second refusal restarts the wait
    await trio.sleep(QUOTA_PROBE_AFTER - 1)
    assert provider.quota == 3
    await trio.sleep(1)
    assert provider.quota == 10
    provider.adapt_quota(1)
    provider.set_quota(4)  # for good: no probe brings 10 back
    await trio.sleep(2 * QUOTA_PROBE_AFTER)
    assert provider.quota == 4


async def test_the_client_socket_keeps_no_empty_fragments() -> None:
    """A server sending empty fragments for ever grew the parts list below any size limit."""
    ws, server = await connected(max_message_size=1_000)
    first = server.protocol.send(TextMessage(data="", message_finished=False))
    more = server.protocol.send(TextMessage(data="", message_finished=False))  # continuation
    received: list[str | bytes] = []

    async def read() -> None:
        received.extend(await ws.get_messages())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await server.stream.send_all(first)
        for _ in range(20):
            await server.stream.send_all(more * 3_000)
            await trio.testing.wait_all_tasks_blocked()  # the client read all of it
        assert len(ws._assembler._parts) == 0
        await server.stream.send_all(server.protocol.send(TextMessage(data="done")))
    assert received == ["done"]
