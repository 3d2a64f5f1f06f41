"""A protocol-faithful fake of Financial Modeling Prep: the stocks WebSocket and `/stable/quote`.

Both are real servers on 127.0.0.1, port 0 (optionally TLS): a WebSocket server (wsproto
over Trio streams, so frames due together leave in one write) speaking the legacy cluster
protocol (protocols/fmp.md §2-§5, §10) and a small h11 HTTP server answering the stable
quote endpoint (§7). Start it with ``fake = await nursery.start(FakeFmp().serve)``
and point ``FMP_WS_URL`` / ``FMP_REST_URL`` at ``fake.ws_url`` / ``fake.rest_url``.

What it does, as FMP is reported to:

- login ``{"event":"login","data":{"apiKey":...}}`` → ``{"event":"login","status":200,
  "message":"Authenticated"}`` (or nothing, :attr:`LoginMode.SILENT`, §2: the ack is not
  documented); a wrong key or :attr:`LoginMode.UNAUTHORIZED` → 401 "Unauthorized" and a
  close; a second session with a key already connected → 401 "Connected from another
  location" and a close (§6: one connection per key; the newcomer is refused here, which
  socket FMP refuses is unconfirmed);
- subscribe/unsubscribe with ``ticker`` a string or a list, lower-cased (§3), each answered
  with a control frame naming the tickers; tickers in :attr:`FakeFmp.unauthorized` are
  refused with "you are not authorized" (§3);
- ``T``/``Q``/``B`` frames with ``null`` in the fields that do not apply and ``t`` in
  nanoseconds (§4), only to sessions that subscribed the symbol;
- ``{"event":"heartbeat","timestamp":<ms>}`` every :attr:`FakeFmp.heartbeat_interval` (§5);
- ``GET /stable/quote?symbol=A,B&apikey=K`` → a JSON array of stable quote objects (§7),
  with the error bodies of §6/§7 under :class:`RestMode`.

Fault switches: :meth:`FakeFmp.drop` (TCP reset, no close frame), :meth:`FakeFmp.stall`
(the session goes silent but stays open), :meth:`FakeFmp.send_raw` (garbage frames: any
text, or bytes as a binary frame), :attr:`FakeFmp.interleave` (raw frames slipped in
before each data frame, in the same write: junk in the middle of a tape).
:attr:`FakeFmp.live_connections` counts open TCP connections, so tests prove that a client
leaves no socket behind across reconnects.

For the benchmark, :meth:`FakeFmp.emit_ticks` streams ticks at a fixed rate over many
symbols, each frame carrying its emit time (``clock()``, wall-clock ns) in ``t``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import random
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .serving import TwoPortFake, next_request, send_json

MAX_FRAME = 64 * 1024  # client frames larger than this close the connection (1009)
MAX_REQUEST_HEAD = 16 * 1024  # request heads (REST, WebSocket upgrade) larger are refused
RECEIVE_BYTES = 64 * 1024
EMIT_BATCH = 256  # frames per write at most when ticks are due together (~25 KB)
MAX_TICKERS_PER_FRAME = 1_000  # a subscribe naming more is refused as a whole
DEFAULT_API_KEY = "fake-fmp-key-0123456789"

LIMIT_REACH = (
    "Limit Reach . Please upgrade your plan or visit our documentation for more details at "
    "https://site.financialmodelingprep.com/"
)  # protocols/fmp.md §6
INVALID_KEY = (
    "Invalid API KEY. Feel free to create a Free API Key or visit "
    "https://site.financialmodelingprep.com/faqs?search=why-is-my-api-key-invalid for more "
    "information."
)  # protocols/fmp.md §7
LEGACY = (
    "Legacy Endpoint : Due to Legacy endpoints being no longer supported - This endpoint is "
    "only available for legacy users who have valid subscriptions prior August 31, 2025. "
    "Please visit our documentation page https://site.financialmodelingprep.com/developer/docs "
    "for our current APIs."
)  # protocols/fmp.md §7


REST_MAX_BODY = 64 * 1024  # quote requests carry no body; anything bigger is refused


class LoginMode(enum.Enum):
    """How the fake answers a login with the right key."""

    ACK = "ack"  # {"event":"login","status":200,"message":"Authenticated"}
    SILENT = "silent"  # accepted, but no acknowledgement at all (fmp.md §2)
    UNAUTHORIZED = "unauthorized"  # 401 "Unauthorized" even for the right key (no entitlement)


class RestMode(enum.Enum):
    """How the fake answers ``/stable/quote``."""

    OK = "ok"
    INVALID_KEY = "invalid_key"  # 401 + "Invalid API KEY..." (also for a wrong key)
    INVALID_KEY_200 = "invalid_key_200"  # the same body with HTTP 200 (fmp.md §7)
    LIMIT = "limit"  # 429 "Limit Reach ..." (fmp.md §6)
    LEGACY = "legacy"  # 403 "Legacy Endpoint ..." (fmp.md §7)


@attrs.define(eq=False)
class Book:
    """The fake's market for one ticker: prices in cents, a deterministic walk."""

    price_cents: int
    prev_close_cents: int
    volume: int = 0

    @property
    def price(self) -> float:
        return self.price_cents / 100


@attrs.define(eq=False)
class Session:
    """One client connection as the fake sees it: wsproto over the (TLS) stream.

    The fake speaks WebSocket through wsproto directly rather than trio-websocket so that
    frames due at the same moment go out in one write (:meth:`FakeFmp.emit_ticks`): one
    system call per frame would cap the benchmark's feed.
    """

    number: int
    tcp: trio.SocketStream
    stream: trio.abc.Stream  # ``tcp``, or TLS over it
    wsp: WSConnection = attrs.Factory(lambda: WSConnection(ConnectionType.SERVER))
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    lock: trio.StrictFIFOLock = attrs.Factory(trio.StrictFIFOLock)  # one writer at a time
    open: bool = True
    parts: list[str] = attrs.Factory(list)  # fragments of the message being received
    key: str | None = None  # the key it logged in with, once authenticated
    tickers: set[str] = attrs.Factory(set)  # lower-case
    stalled: bool = False
    received: list[Any] = attrs.Factory(list)  # every parsed client frame, in order

    @property
    def authenticated(self) -> bool:
        return self.key is not None


@attrs.define(eq=False)
class FakeFmp(TwoPortFake):
    """The fake FMP servers and their switches. See the module docstring.

    Args:
        api_key: The one key the fake accepts (WebSocket and REST).
        login_mode: How a login with the right key is answered.
        heartbeat_interval: Seconds between heartbeats per session; ``None`` sends none.
        ack_subscriptions: Answer subscribe/unsubscribe with control frames.
        rest_mode: How ``/stable/quote`` answers.
        unauthorized: Lower-case tickers whose subscription is refused ("not authorized").
        key_in_use_elsewhere: Act as if another process holds the key (every login gets
            "Connected from another location").
        rest_delay: Seconds (Trio's clock) before each REST answer.
        seed: Seed of the price walk.
        clock: Epoch nanoseconds for ``t`` (default the wall clock; tests pass their own).
        tls: A server TLS context: both endpoints then speak ``wss://`` / ``https://``.
        interleave: Raw frames (text, or bytes sent as binary frames) to slip in: while it
            is not empty, each data frame :meth:`send_frame` sends to a symbol's sessions
            (trades, quotes, breaks) goes out right after the next one of them, in the
            same write, so both arrive in one read.
    """

    api_key: str = DEFAULT_API_KEY
    login_mode: LoginMode = LoginMode.ACK
    heartbeat_interval: float | None = 30.0
    ack_subscriptions: bool = True
    rest_mode: RestMode = RestMode.OK
    unauthorized: set[str] = attrs.Factory(set)
    key_in_use_elsewhere: bool = False
    rest_delay: float = 0.0
    seed: int = 0
    clock: Callable[[], int] = time.time_ns
    tls: ssl.SSLContext | None = None
    interleave: list[str | bytes] = attrs.Factory(list)
    # ---- observations ----
    connections_total: int = attrs.field(default=0, init=False)
    live_connections: int = attrs.field(default=0, init=False)
    login_outcomes: list[str] = attrs.field(factory=list, init=False)  # "ok", "unauthorized", ...
    subscribe_frames: list[tuple[int, tuple[str, ...]]] = attrs.field(factory=list, init=False)
    unsubscribe_frames: list[tuple[int, tuple[str, ...]]] = attrs.field(factory=list, init=False)
    early_frames: int = attrs.field(default=0, init=False)  # frames sent before logging in
    rest_requests: list[tuple[str, tuple[str, ...]]] = attrs.field(factory=list, init=False)
    frames_sent: int = attrs.field(default=0, init=False)
    sessions: list[Session] = attrs.field(factory=list, init=False)  # live ones
    ws_port: int = attrs.field(default=0, init=False)
    rest_port: int = attrs.field(default=0, init=False)
    _books: dict[str, Book] = attrs.field(factory=dict, init=False)
    _rng: random.Random = attrs.field(init=False)
    _changed: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)
    _numbers: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # ---- running -------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.ws_port}"

    @property
    def rest_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.rest_port}"

    # ---- what tests look at --------------------------------------------------------

    def subscribed(self) -> set[str]:
        """Lower-case tickers held by live authenticated sessions."""
        return {t for s in self.sessions if s.authenticated for t in s.tickers}

    def book(self, ticker: str) -> Book:
        """The fake's market for ``ticker`` (any case), created on first use."""
        key = ticker.lower()
        book = self._books.get(key)
        if book is None:
            # A deterministic plausible price: $5..$500, log-uniform by the name.
            fraction = zlib.crc32(key.encode()) / 2**32
            cents = round(500 * 100**fraction)
            book = self._books[key] = Book(cents, prev_close_cents=cents - 1 - cents // 100)
        return book

    # ---- faults --------------------------------------------------------------------

    def drop(self) -> int:
        """Reset every live connection without a close frame (the peer vanished, 1006).

        Returns:
            How many connections were dropped.
        """
        dropped = 0
        for session in list(self.sessions):
            _reset(session.tcp)
            session.scope.cancel()
            dropped += 1
        return dropped

    def stall(self) -> int:
        """Make every live session silent (no acks, heartbeats or data) but keep it open.

        New connections are not affected. Returns how many sessions were stalled.
        """
        for session in self.sessions:
            session.stalled = True
        return len(self.sessions)

    async def send_raw(self, text: str | bytes) -> int:
        """Send ``text`` as is (e.g. garbage) to every live authenticated session.

        Bytes go out as a binary frame (FMP sends text; a binary frame is a fault).
        """
        return await self._send_to(text, (s for s in self.sessions if s.authenticated))

    # ---- data ----------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any] | list[Any], symbol: str | None = None) -> int:
        """Send one JSON frame to every session subscribed to ``symbol`` (or to all).

        Returns:
            How many sessions it reached.
        """
        text = json.dumps(frame, separators=(",", ":"))
        if symbol is None:
            return await self.send_raw(text)
        audience = self._audience(symbol.lower())
        if self.interleave:
            junk = self.interleave.pop(0)
            reached = 0
            for session in audience:
                reached += await self._send(session, [junk, text])
            return reached
        return await self._send_to(text, audience)

    async def trade(
        self, symbol: str, price: float, size: int = 100, *, t: int | None = None
    ) -> int:
        """Send a ``T`` frame: ``lp``/``ls`` set, quote fields null (fmp.md §4)."""
        self.book(symbol).price_cents = round(price * 100)  # REST quotes follow the tape
        return await self.send_frame(trade_frame(symbol, price, size, self._t(t)), symbol)

    async def quote(
        self,
        symbol: str,
        bid: float,
        ask: float,
        bid_size: int = 100,
        ask_size: int = 100,
        *,
        t: int | None = None,
    ) -> int:
        """Send a ``Q`` frame: ``bp``/``bs``/``ap``/``as`` set, ``lp``/``ls`` null (fmp.md §4)."""
        frame = quote_frame(symbol, bid, bid_size, ask, ask_size, self._t(t))
        return await self.send_frame(frame, symbol)

    async def trade_break(
        self, symbol: str, price: float, size: int = 100, *, t: int | None = None
    ) -> int:
        """Send a ``B`` frame (a trade break/cancel of ``price`` x ``size``)."""
        frame = trade_frame(symbol, price, size, self._t(t))
        frame["type"] = "B"
        return await self.send_frame(frame, symbol)

    async def emit_ticks(
        self,
        symbols: Sequence[str],
        rate: float,
        *,
        count: int | None = None,
        duration: float | None = None,
        kinds: str = "TQ",
    ) -> int:
        """Stream ticks at ``rate`` per second in total, round-robin over ``symbols``.

        Each frame carries ``clock()`` at the moment it is built in ``t`` (nanoseconds), so a
        consumer can measure latency from the fake to itself. Frames due at the same moment
        go out back to back; pacing follows Trio's clock, so it also runs on MockClock.
        Prices walk by a cent at a time; ``kinds`` cycles per symbol (``"TQ"``: trade, then
        quote).

        Args:
            symbols: Tickers to tick (any case; frames carry them lower-case as FMP does).
            rate: Ticks per second over all symbols.
            count: Stop after this many ticks.
            duration: Stop after this many seconds.

        Returns:
            How many ticks were built (each goes to every session subscribed to its symbol).
        """
        if rate <= 0 or not symbols:
            raise ValueError("emit_ticks needs a positive rate and at least one symbol")
        if count is None and duration is None:
            raise ValueError("emit_ticks needs a count or a duration")
        lowered = [s.lower() for s in symbols]
        books = [self.book(s) for s in lowered]
        limit = count if count is not None else int(rate * (duration or 0.0))
        start = trio.current_time()
        made = 0
        while made < limit:
            # Tick `made` is due (we slept until its time); so is any later one whose time
            # passed while sending. max() guards against float rounding stalling the loop.
            due = min(limit, max(made + 1, int((trio.current_time() - start) * rate) + 1))
            while made < due:
                # Frames due together go to each session in one write (EMIT_BATCH at most).
                batch: dict[Session, list[str]] = {}
                for _ in range(min(EMIT_BATCH, due - made)):
                    i = made % len(lowered)
                    kind = kinds[(made // len(lowered)) % len(kinds)]
                    text = self._walk_frame(lowered[i], books[i], kind)
                    for session in self._audience(lowered[i]):
                        batch.setdefault(session, []).append(text)
                    made += 1
                for session, texts in batch.items():
                    await self._send(session, texts)
            if made < limit:
                await trio.sleep_until(start + made / rate)
        return made

    def _walk_frame(self, ticker: str, book: Book, kind: str) -> str:
        # Hand-built text: this is the benchmark's hot path, so no dict and no json.dumps.
        book.price_cents = max(1, book.price_cents + self._rng.choice((-1, 0, 0, 1)))
        t = self.clock()
        p = book.price_cents
        if kind == "Q":
            size_b, size_a = self._rng.randrange(1, 50) * 100, self._rng.randrange(1, 50) * 100
            return (
                f'{{"s":"{ticker}","t":{t},"type":"Q","ap":{(p + 1) / 100},"as":{size_a},'
                f'"bp":{p / 100},"bs":{size_b},"lp":null,"ls":null}}'
            )
        size = self._rng.choice((1, 5, 10, 100, 200, 500))
        book.volume += size
        return (
            f'{{"s":"{ticker}","t":{t},"type":"{kind}","ap":null,"as":null,"bp":null,'
            f'"bs":null,"lp":{p / 100},"ls":{size}}}'
        )

    def _t(self, t: int | None) -> int:
        return self.clock() if t is None else t

    def _audience(self, ticker: str) -> Iterable[Session]:
        return [s for s in self.sessions if ticker in s.tickers]

    async def _send_to(self, text: str | bytes, sessions: Iterable[Session]) -> int:
        reached = 0
        for session in list(sessions):
            if await self._send(session, [text]):
                reached += 1
        return reached

    async def _send(self, session: Session, texts: Sequence[str | bytes]) -> bool:
        """Send ``texts`` as frames (text, or binary for bytes) in one write; False if the
        session is mute or gone."""
        if session.stalled or not session.open:
            return False
        try:
            data = b"".join(session.wsp.send(_message(text)) for text in texts)
        except LocalProtocolError:  # closing
            return False
        if not await self._write(session, data):
            return False
        self.frames_sent += len(texts)
        return True

    async def _write(self, session: Session, data: bytes) -> bool:
        try:
            async with session.lock:
                await session.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            session.open = False
            return False
        return True

    async def _close(self, session: Session, code: int, reason: str) -> None:
        with contextlib.suppress(LocalProtocolError):
            await self._write(session, session.wsp.send(CloseConnection(code, reason)))
        session.open = False

    # ---- the WebSocket side --------------------------------------------------------

    async def _secure(self, tcp: trio.SocketStream) -> trio.abc.Stream:
        """``tcp``, or TLS over it when the fake serves TLS (handshake done)."""
        if self.tls is None:
            return tcp
        tls = trio.SSLStream(tcp, self.tls, server_side=True)
        await tls.do_handshake()
        return tls

    async def _handle_ws(self, tcp: trio.SocketStream) -> None:
        self.connections_total += 1
        self.live_connections += 1
        self._numbers += 1
        self._notify()
        try:
            session = Session(self._numbers, tcp, await self._secure(tcp))
            if not await self._handshake(session):
                return
            async with trio.open_nursery() as nursery:
                session.scope = nursery.cancel_scope
                self.sessions.append(session)
                self._notify()
                try:
                    await self._converse(session, nursery)
                finally:
                    self.sessions.remove(session)
                    self._notify()
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError):
            pass  # the client went away, broke the protocol, or refused our certificate
        finally:
            await trio.aclose_forcefully(tcp)  # no TLS close_notify: a drop is a drop
            self.live_connections -= 1
            self._notify()

    async def _handshake(self, session: Session) -> bool:
        """Accept the WebSocket upgrade (any path: FMP's endpoint has none, fmp.md §1)."""
        received = 0
        while received <= MAX_REQUEST_HEAD:
            for event in session.wsp.events():
                if isinstance(event, Request):
                    return await self._write(session, session.wsp.send(AcceptConnection()))
            data = await session.stream.receive_some(RECEIVE_BYTES)
            if not data:
                return False
            received += len(data)
            session.wsp.receive_data(bytes(data))
        return False

    async def _next_message(self, session: Session) -> str | None:
        """The next text message; answers pings and the close handshake. None at the end."""
        while True:
            for event in session.wsp.events():
                if isinstance(event, TextMessage):
                    session.parts.append(event.data)
                    if sum(len(p) for p in session.parts) > MAX_FRAME:
                        await self._close(session, 1009, "message too big")
                        return None
                    if event.message_finished:
                        text = "".join(session.parts)
                        session.parts.clear()
                        return text
                elif isinstance(event, Ping):
                    await self._write(session, session.wsp.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if session.wsp.state is ConnectionState.REMOTE_CLOSING:
                        await self._write(session, session.wsp.send(event.response()))
                    session.open = False
                    return None
            data = await session.stream.receive_some(RECEIVE_BYTES)
            if not data:
                session.open = False
                return None
            session.wsp.receive_data(bytes(data))

    async def _converse(self, session: Session, nursery: trio.Nursery) -> None:
        while (text := await self._next_message(session)) is not None:
            try:
                frame = json.loads(text)
            except ValueError:
                continue  # FMP's behaviour on garbage is unknown; ignore it
            session.received.append(frame)
            if not isinstance(frame, dict):
                continue
            event = frame.get("event")
            raw_data = frame.get("data")
            data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
            if event == "login":
                if not await self._login(session, data.get("apiKey"), nursery):
                    return
            elif event in ("subscribe", "unsubscribe"):
                if not session.authenticated:
                    self.early_frames += 1  # unconfirmed what FMP does (§2): ignore
                    self._notify()
                    continue
                await self._register(session, event, data.get("ticker"))

    async def _login(self, session: Session, key: object, nursery: trio.Nursery) -> bool:
        """Answer a login; False means the fake closes the connection."""
        taken = self.key_in_use_elsewhere or any(
            s.key == key for s in self.sessions if s is not session
        )
        status, message = 401, "Unauthorized"
        if key != self.api_key or self.login_mode is LoginMode.UNAUTHORIZED:
            outcome = "unauthorized"
        elif taken:
            outcome, message = "another_location", "Connected from another location"
        else:
            session.key = self.api_key
            outcome, status, message = "ok", 200, "Authenticated"
            if self.heartbeat_interval is not None:
                nursery.start_soon(self._heartbeats, session, self.heartbeat_interval)
        self.login_outcomes.append(outcome)
        self._notify()
        if outcome != "ok" or self.login_mode is LoginMode.ACK:
            reply = {"event": "login", "status": status, "message": message}
            await self._send(session, [json.dumps(reply)])
        if outcome != "ok":
            await self._close(session, 1008, message)
            return False
        return True

    async def _register(self, session: Session, event: str, raw: object) -> None:
        tickers = _tickers(raw)
        if tickers is None:
            reply = {"event": event, "status": 400, "message": "Invalid ticker"}
            await self._send(session, [json.dumps(reply)])
            return
        if event == "unsubscribe":
            self.unsubscribe_frames.append((session.number, tickers))
            session.tickers.difference_update(tickers)
            self._notify()
            if self.ack_subscriptions:
                message = f"Unsubscribed from {','.join(tickers)}"
                await self._send(
                    session, [json.dumps({"event": event, "status": 200, "message": message})]
                )
            return
        self.subscribe_frames.append((session.number, tickers))
        granted = tuple(t for t in tickers if t not in self.unauthorized)
        refused = tuple(t for t in tickers if t in self.unauthorized)
        session.tickers.update(granted)
        self._notify()
        if not self.ack_subscriptions:
            return
        if granted:
            message = f"Subscribed to {','.join(granted)}"
            await self._send(
                session, [json.dumps({"event": event, "status": 200, "message": message})]
            )
        if refused:
            message = f"You are not authorized to subscribe to {','.join(refused)}"
            await self._send(
                session, [json.dumps({"event": event, "status": 401, "message": message})]
            )

    async def _heartbeats(self, session: Session, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            frame = {"event": "heartbeat", "timestamp": self.clock() // 1_000_000}
            await self._send(session, [json.dumps(frame)])

    # ---- the REST side -------------------------------------------------------------

    async def _handle_http(self, tcp: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            stream = await self._secure(tcp)
            while True:
                request = await next_request(conn, stream, max_body=REST_MAX_BODY)
                if request is None:
                    return
                status, body = self._answer_rest(request[0].target.decode("latin-1"))
                if self.rest_delay:
                    await trio.sleep(self.rest_delay)
                if not await send_json(conn, stream, status, body):
                    return
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return

    def _answer_rest(self, target: str) -> tuple[int, Any]:
        url = urlsplit(target)
        query = parse_qs(url.query)
        symbols = tuple(s for raw in query.get("symbol", []) for s in raw.split(",") if s)
        self.rest_requests.append((url.path, symbols))
        self._notify()
        if url.path.startswith("/api/v3/"):
            return 403, {"Error Message": LEGACY}
        if url.path != "/stable/quote":
            return 404, {"Error Message": "Not found"}
        key = query.get("apikey", [None])[0]
        mode = self.rest_mode
        if key != self.api_key or mode is RestMode.INVALID_KEY:
            return 401, {"Error Message": INVALID_KEY}
        if mode is RestMode.INVALID_KEY_200:
            return 200, {"Error Message": INVALID_KEY}
        if mode is RestMode.LIMIT:
            return 429, {"Error Message": LIMIT_REACH}
        if mode is RestMode.LEGACY:
            return 403, {"Error Message": LEGACY}
        return 200, [self._quote_object(s) for s in symbols if s.lower() not in self.unauthorized]

    def _quote_object(self, symbol: str) -> dict[str, Any]:
        """A stable quote object (fmp.md §7), field for field as the recorded response."""
        book = self.book(symbol)
        price, prev = book.price, book.prev_close_cents / 100
        change = round(price - prev, 2)
        return {
            "symbol": symbol.upper(),
            "name": f"{symbol.upper()} Inc.",
            "price": price,
            "changePercentage": round(change / prev * 100, 5),
            "change": change,
            "volume": 51_234_567 + book.volume,
            "dayLow": round(min(price, prev) - 0.5, 2),
            "dayHigh": round(max(price, prev) + 0.5, 2),
            "yearHigh": round(price * 1.3, 2),
            "yearLow": round(price * 0.7, 2),
            "marketCap": 2_900_000_000_000,
            "priceAvg50": round(price * 0.98, 4),
            "priceAvg200": round(price * 0.95, 4),
            "exchange": "NASDAQ",
            "open": prev,
            "previousClose": prev,
            "timestamp": self.clock() // 1_000_000_000,  # seconds (fmp.md §7)
        }


# ---- frame builders (also handy in tests) ----------------------------------------------


def trade_frame(symbol: str, price: float, size: int, t: int) -> dict[str, Any]:
    """A ``T`` frame as FMP sends it: quote fields present and null (fmp.md §4)."""
    return {
        "s": symbol.lower(),
        "t": t,
        "type": "T",
        "ap": None,
        "as": None,
        "bp": None,
        "bs": None,
        "lp": price,
        "ls": size,
    }


def quote_frame(
    symbol: str, bid: float, bid_size: int, ask: float, ask_size: int, t: int
) -> dict[str, Any]:
    """A ``Q`` frame, shaped like the captured one in fmp.md §4."""
    return {
        "s": symbol.lower(),
        "t": t,
        "type": "Q",
        "ap": ask,
        "as": ask_size,
        "bp": bid,
        "bs": bid_size,
        "lp": None,
        "ls": None,
    }


def _message(text: str | bytes) -> TextMessage | BytesMessage:
    return TextMessage(data=text) if isinstance(text, str) else BytesMessage(data=text)


def _tickers(raw: object) -> tuple[str, ...] | None:
    """``ticker`` as a string or a list of strings, lower-cased (fmp.md §3); None if neither."""
    if isinstance(raw, str):
        return (raw.lower(),)
    if (
        isinstance(raw, list)
        and 0 < len(raw) <= MAX_TICKERS_PER_FRAME
        and all(isinstance(t, str) for t in raw)
    ):
        return tuple(t.lower() for t in raw)
    return None


def _reset(stream: trio.SocketStream) -> None:
    """Make the next close of ``stream`` send a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):  # already closed
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
