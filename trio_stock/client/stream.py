"""A price stream: one seed 003 connection to the gateway, kept up for as long as it is open.

:func:`open_price_stream` starts a task that connects, asks for every symbol the program
wants, reads, and reconnects by itself when the connection ends; the program iterates the
stream. How each ending is treated:

- the gateway going away (1001), a lost connection, no pong, a refused or timed-out
  connect: try again after capped exponential backoff with jitter (``Backoff``, the policy
  of the gateway's own upstream sessions);
- 1013 (try again later), 4008 (too many connections for the user) and an HTTP 503 or
  429 at the upgrade: the same, but not before ``LATER`` seconds (or ``Retry-After``);
- 4001 (no valid token), 4003 (not entitled) and any other 4xx answer to the upgrade:
  retrying would not help, so the stream ends with :class:`StreamRefused`.

Every outcome reaches the program in order: :class:`Connected` and :class:`Disconnected`
events, and per symbol a :class:`Gap` on the first update after updates it did not see.

The token goes in the upgrade's ``Authorization: Bearer`` header; it is never logged and
never part of a value the stream hands out (a URL's ``access_token`` is masked).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import attrs
import trio
import trio_websocket

from ..access import redact
from ..symbols import normalize_symbol
from ..upstream.backoff import Backoff
from .gaps import GapFinder
from .pending import Arrived, Pending
from .values import (
    Connected,
    Disconnected,
    PriceUpdate,
    StreamEvent,
    StreamRefused,
    StreamStatistics,
    SubscriptionFailed,
)
from .wire import (
    ErrorReply,
    MalformedMessage,
    ServerMessage,
    SubscriptionReply,
    parse,
    subscribe_request,
    unsubscribe_request,
)

log = logging.getLogger(__name__)

PRICES_PATH = "/api/v2/realtime/ws/prices"  # used when the URL names no path
CONNECT_TIMEOUT = 10.0  # seconds for TCP, TLS and the WebSocket handshake together
CLOSE_GRACE = 2.0  # seconds the close handshake may take when the program leaves
INITIAL_BACKOFF = 0.5  # seconds before the first retry (then doubling, up to max_backoff)
HEALTHY_AFTER = 30.0  # seconds a connection must last for the backoff to start over
LATER = 5.0  # seconds at least before a retry the gateway asked to come "later"
MAX_RETRY_AFTER = 300.0  # a gateway's Retry-After is honoured up to this
MAX_MESSAGE_SIZE = 256 * 1024  # bytes; larger messages close the connection (1009)
READ_AHEAD = 16  # messages trio-websocket may read ahead of the stream
REFUSED_CODES = frozenset({4001, 4003})  # endpoints/client.py: auth failures
LATER_CODES = frozenset({1013, 4008})  # endpoints/client.py: slow client, too many connections


@attrs.frozen
class _Target:
    """Where to connect, from the URL."""

    host: str
    port: int
    resource: str  # path and query
    tls: bool
    public_url: str  # the URL with any access_token masked: safe to show and log

    @classmethod
    def from_url(cls, url: str) -> _Target:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL with a host: {redact(url)!r}")
        tls = parts.scheme == "wss"
        resource = parts.path if parts.path not in ("", "/") else PRICES_PATH
        if parts.query:
            resource += "?" + parts.query
        public = urllib.parse.urlunsplit(parts._replace(query=redact(parts.query)))
        return cls(parts.hostname, parts.port or (443 if tls else 80), resource, tls, public)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"


@attrs.frozen
class _Ended:
    """How one connection (or attempt) ended."""

    code: int | None  # the close code; None when there was none
    reason: str
    status: int | None = None  # the HTTP status of a refused upgrade
    retry_after: float | None = None
    was_connected: bool = False


class PriceStream:
    """The program's side of a price stream. Made by :func:`open_price_stream`.

    Iterate it for :class:`PriceUpdate` values and :data:`StreamEvent` events, in the order
    they happened. One task should iterate; any task may subscribe and unsubscribe.
    """

    def __init__(
        self,
        target: _Target,
        *,
        token: str | None,
        pending: Pending,
        max_backoff: float,
        ping_interval: float,
        ping_timeout: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._target = target
        self._headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
        self._pending = pending
        self._backoff = Backoff(
            initial=INITIAL_BACKOFF, maximum=max_backoff, healthy_after=HEALTHY_AFTER
        )
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ssl_context = ssl_context
        self._wanted: dict[str, None] = {}  # an ordered set: the symbols asked for
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._connection = 0  # the number of the current (or last) connection
        self._refused: StreamRefused | None = None
        self._failed_in_reply: tuple[str, ...] = ()  # the next `error` is about these
        self._gaps = GapFinder()
        self._arrived = trio.lowlevel.ParkingLot()  # the program waits here for items
        self._room = trio.lowlevel.ParkingLot()  # the reader waits here (lossless, full)
        self._updates = self._gap_count = self._malformed = 0

    def __repr__(self) -> str:
        return f"<PriceStream {self._target.public_url} connected={self._ws is not None}>"

    # ---- the program's side ----------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[PriceUpdate | StreamEvent]:
        return self

    async def __anext__(self) -> PriceUpdate | StreamEvent:
        """The next update or event, waiting for one.

        Raises:
            StreamRefused: the gateway refused this client (after everything before it).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            item = self._pending.take()
            if item is None:
                if self._refused is not None:
                    raise self._refused
                await self._arrived.park()
                continue
            self._room.unpark_all()
            delivered = self._deliverable(item) if isinstance(item, Arrived) else item
            if delivered is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return delivered

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """Ask for ``symbols`` too, now and after every reconnect.

        Returns once the request is sent (or kept for the next connection); the gateway's
        refusals arrive in the stream as :class:`SubscriptionFailed`.

        Raises:
            InvalidSymbol: a symbol is neither a Korean code nor a US ticker (nothing is
                asked for then).
            StreamRefused: the stream has ended.
        """
        new = [s for s in _canonical(symbols) if s not in self._wanted]
        self._check_open()
        self._wanted.update(dict.fromkeys(new))
        await self._send(subscribe_request(new) if new else None)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Stop asking for ``symbols``; none of their updates is handed out after this.

        Raises:
            InvalidSymbol: a symbol is neither a Korean code nor a US ticker.
            StreamRefused: the stream has ended.
        """
        gone = [s for s in _canonical(symbols) if s in self._wanted]
        self._check_open()
        for symbol in gone:
            del self._wanted[symbol]
        self._gaps.forget(gone)
        await self._send(unsubscribe_request(gone) if gone else None)

    def statistics(self) -> StreamStatistics:
        """The stream's counters now."""
        return StreamStatistics(
            connected=self._ws is not None,
            reconnects=max(0, self._connection - 1),
            updates=self._updates,
            gaps=self._gap_count,
            dropped=self._pending.dropped,
            symbols=tuple(self._wanted),
            malformed=self._malformed,
            buffered=len(self._pending),
        )

    def _deliverable(self, arrived: Arrived) -> PriceUpdate | None:
        update = arrived.update
        if update.symbol not in self._wanted:
            return None  # in flight when the program unsubscribed
        if self._gaps.repeats(update):
            return None  # a reconnect's snapshot of the state the program already has
        gap = self._gaps.check(update, arrived.connection)
        if gap is None:
            return update
        self._gap_count += 1
        return attrs.evolve(update, gap=gap)

    def _check_open(self) -> None:
        if self._refused is not None:
            raise self._refused

    async def _send(self, request: str | None) -> None:
        ws = self._ws
        if request is None or ws is None:
            await trio.lowlevel.checkpoint()
            return  # the next connection asks for every wanted symbol
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await ws.send_message(request)  # lost meanwhile: the reconnect asks again

    async def _close(self) -> None:
        """Say goodbye (1000) while the connection's reader still runs; bounded."""
        ws = self._ws
        if ws is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
                await ws.aclose()

    # ---- the connection's side -------------------------------------------------------

    async def run(self) -> None:
        """Connect, read and reconnect until cancelled or refused."""
        attempt = 0
        while True:
            attempt += 1
            ended = await self._connect_and_read(attempt)
            if ended.was_connected:
                attempt = 0
            refused = _refusal(ended)
            if refused is not None:
                log.warning("price stream to %s refused: %s", self._target.public_url, refused)
                self._refused = refused
                self._arrived.unpark_all()
                return
            delay = self._delay(ended)
            log.info(
                "price stream to %s: %s; retry in %.1f s",
                self._target.public_url,
                ended.reason,
                delay,
            )
            self._put_event(Disconnected(ended.code, ended.reason, round(delay, 3)))
            await trio.sleep(delay)

    def _delay(self, ended: _Ended) -> float:
        delay = self._backoff.failed()
        if ended.code in LATER_CODES or ended.status in (429, 503):
            delay = max(delay, min(LATER, self._backoff.maximum))
        if ended.retry_after is not None:
            delay = max(delay, min(ended.retry_after, MAX_RETRY_AFTER))
        return delay

    async def _connect_and_read(self, attempt: int) -> _Ended:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await self._open_stream()
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            return _Ended(None, _describe(exc))
        rejected: trio_websocket.ConnectionRejected | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            stream,
                            self._target.host_header,
                            self._target.resource,
                            extra_headers=self._headers,
                            message_queue_size=READ_AHEAD,
                            max_message_size=MAX_MESSAGE_SIZE,
                        )
                except trio.TooSlowError:
                    nursery.cancel_scope.cancel()
                    return _Ended(None, "the WebSocket handshake was not answered in time")
                ended = await self._serve(ws, nursery, attempt)
                nursery.cancel_scope.cancel()
                return ended
        except* trio_websocket.ConnectionRejected as group:  # raised by its reader task
            rejected = _first(group)
        finally:
            await trio.aclose_forcefully(stream)  # trio-websocket may leave it open (DESIGN.md)
        return _rejected(rejected)

    async def _open_stream(self) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        tcp = await trio.open_tcp_stream(self._target.host, self._target.port)
        if not self._target.tls:
            return tcp
        context = self._ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(tcp, context, server_hostname=self._target.host)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls

    async def _serve(
        self, ws: trio_websocket.WebSocketConnection, nursery: trio.Nursery, attempt: int
    ) -> _Ended:
        self._connection += 1
        connection = self._connection
        self._ws, wanted = ws, list(self._wanted)  # together: a subscribe now is sent once
        self._backoff.connected()
        self._put_event(Connected(self._target.public_url, attempt))
        log.info("price stream connected to %s", self._target.public_url)
        try:
            with trio.CancelScope() as unanswered:
                if self._ping_interval:
                    nursery.start_soon(self._keep_alive, ws, unanswered)
                if wanted:
                    await ws.send_message(subscribe_request(wanted))
                while True:
                    await self._take(await ws.get_message(), connection)
            timeout = self._ping_timeout
            return _Ended(None, f"no pong within {timeout:g} s", was_connected=True)
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason or ws.closed
            if reason is None:
                return _Ended(None, "connection lost", was_connected=True)
            text = reason.reason or reason.name.lower().replace("_", " ")
            return _Ended(reason.code, text, was_connected=True)
        finally:
            self._ws = None

    async def _keep_alive(
        self, ws: trio_websocket.WebSocketConnection, unanswered: trio.CancelScope
    ) -> None:
        # A gateway that vanished without a FIN (a cable, a NAT) would leave the reader
        # waiting forever: a ping that no pong answers ends the connection instead.
        try:
            while True:
                await trio.sleep(self._ping_interval)
                with trio.move_on_after(self._ping_timeout) as waited:
                    await ws.ping()
                if waited.cancelled_caught:
                    unanswered.cancel()
                    return
        except trio_websocket.ConnectionClosed:
            return  # the reader sees the close too

    async def _take(self, message: str | bytes, connection: int) -> None:
        try:
            value = parse(message)
        except MalformedMessage as exc:
            self._malformed += 1
            log.debug("price stream: skipped a message: %s", exc)
            return
        if isinstance(value, PriceUpdate):
            self._updates += 1
            while not self._pending.has_room():  # lossless: stop reading, the socket waits
                await self._room.park()
            self._pending.put_update(value, connection)
            self._arrived.unpark_all()
        elif value is not None:
            self._answer(value)

    def _answer(self, reply: ServerMessage) -> None:
        if isinstance(reply, SubscriptionReply):
            # The gateway follows a reply listing `failed` symbols with an `error` saying why.
            self._failed_in_reply = reply.failed
        elif isinstance(reply, ErrorReply):
            symbols = reply.failed or self._failed_in_reply
            self._failed_in_reply = ()
            self._put_event(SubscriptionFailed(symbols, reply.message))

    def _put_event(self, event: StreamEvent) -> None:
        self._pending.put_event(event)
        self._arrived.unpark_all()


def _canonical(symbols: Iterable[str]) -> list[str]:
    if isinstance(symbols, str):
        symbols = [symbols]  # one symbol, not its letters
    return list(dict.fromkeys(normalize_symbol(s)[0] for s in symbols))


def _refusal(ended: _Ended) -> StreamRefused | None:
    if ended.code in REFUSED_CODES:
        assert ended.code is not None
        return StreamRefused(ended.code, ended.reason)
    status = ended.status
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return StreamRefused(status, ended.reason)
    return None


def _first(
    group: BaseExceptionGroup[trio_websocket.ConnectionRejected],
) -> trio_websocket.ConnectionRejected:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, trio_websocket.ConnectionRejected)
    return leaf


def _rejected(exc: trio_websocket.ConnectionRejected | None) -> _Ended:
    assert exc is not None
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in exc.headers}
    body = (exc.body or b"")[:500].decode("utf-8", "replace").strip()
    retry_after = headers.get("retry-after", "")
    return _Ended(
        None,
        f"HTTP {exc.status_code}" + (f": {body}" if body else ""),
        status=exc.status_code,
        retry_after=float(retry_after) if retry_after.isdigit() else None,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"no connection within {CONNECT_TIMEOUT:g} s"
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    return f"cannot connect: {cause or exc}"


@asynccontextmanager
async def open_price_stream(
    url: str,
    symbols: Iterable[str] = (),
    *,
    token: str | None = None,
    conflate: bool = True,
    buffer: int = 1024,
    max_backoff: float = 30.0,
    ping_interval: float = 20.0,
    ping_timeout: float = 20.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[PriceStream]:
    """A price stream from the gateway at ``url``, kept connected while the block runs.

    Args:
        url: ``ws://host:port`` or ``wss://…``; the path defaults to seed 003's
            ``/api/v2/realtime/ws/prices``.
        symbols: What to ask for from the start (more with :meth:`PriceStream.subscribe`).
        token: A JWT for a gateway with auth on, sent as ``Authorization: Bearer``.
        conflate: Keep the newest update per symbol when the program falls more than
            ``buffer`` updates behind (skips reported as gaps); ``False``: lossless, the
            stream stops reading at ``buffer`` updates and the gateway's own policy applies
            (it conflates, or closes with 1013 and the stream reconnects later).
        buffer: Updates the stream holds for the program before either policy steps in.
        max_backoff: The longest wait between reconnect attempts, in seconds, before jitter.
        ping_interval: Seconds between the stream's pings (0: none).
        ping_timeout: Seconds a pong may take before the connection is given up.
        ssl_context: For ``wss://``; the system's default trust otherwise.

    Raises:
        ValueError: ``url`` is not a ws:// or wss:// URL, or ``buffer`` is below 1.
        InvalidSymbol: one of ``symbols`` is neither a Korean code nor a US ticker.
    """
    stream = PriceStream(
        _Target.from_url(url),
        token=token,
        pending=Pending(buffer, conflate=conflate),
        max_backoff=max_backoff,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        ssl_context=ssl_context,
    )
    stream._wanted.update(dict.fromkeys(_canonical(symbols)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.run)
        try:
            yield stream
        finally:
            await stream._close()
            nursery.cancel_scope.cancel()
