"""A price stream: a seed 003 connection to the gateway, kept up for as long as it is open.

:func:`open_price_stream` starts one task that connects, asks for every symbol the
program wants, reads, and reconnects by itself when the connection ends (when and whether:
:mod:`.endings`); the program iterates the stream. Everything that happens reaches the
program in order: :class:`Connected` once the gateway greets the client,
:class:`Disconnected` with the wait before the next try, :class:`SubscriptionFailed`, and
per symbol a :class:`Gap` on the first update after updates it did not see (:mod:`.gaps`).
What the program has not read yet waits in a bounded buffer (:mod:`.pending`).

The connection owns its TCP stream and always closes it: trio-websocket 0.12 may leave it
open after an abnormal closure (DESIGN.md, "Known library pitfalls").
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import attrs
import trio
import trio_websocket

from ..limits import TokenBucket
from ..symbols import normalize_symbol
from ..upstream.backoff import Backoff
from .address import Address, bearer_header
from .endings import Ended, refusal, retry_delay, tolerating_the_closing_pong
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
    Greeting,
    MalformedMessage,
    ServerMessage,
    SubscriptionReply,
    parse,
    subscribe_requests,
    unsubscribe_requests,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds for TCP, TLS and the WebSocket handshake, each
CLOSE_GRACE = 2.0  # seconds the close handshake may take when the program leaves
INITIAL_BACKOFF = 0.5  # seconds before the first retry (then doubling, up to max_backoff)
HEALTHY_AFTER = 30.0  # seconds a connection must last for the backoff to start over
MAX_MESSAGE_SIZE = 256 * 1024  # bytes; a larger message closes the connection (1009)
READ_AHEAD = 16  # messages trio-websocket may read ahead of the stream
# Under the gateway's churn limit (5 requests a second, 20 at once, ClientLimits), so
# that no subscribe is refused for its rate, however the program calls.
REQUESTS_PER_SECOND = 4.0
REQUEST_BURST = 16


class PriceStream:
    """The program's side of a price stream. Made by :func:`open_price_stream`.

    Iterate it for :class:`PriceUpdate` values and :data:`StreamEvent` events, in the order
    they happened. One task iterates; any task may subscribe and unsubscribe.
    """

    def __init__(
        self,
        address: Address,
        symbols: Iterable[str],
        *,
        token: str | None,
        pending: Pending,
        max_backoff: float,
        ping_interval: float,
        ping_timeout: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        if max_backoff <= 0 or ping_interval < 0 or ping_timeout <= 0:
            raise ValueError("max_backoff and ping_timeout must be positive, ping_interval >= 0")
        self._address = address
        self._headers = bearer_header(token)  # the only place the token is kept
        self._pending = pending
        self._backoff = Backoff(
            initial=min(INITIAL_BACKOFF, max_backoff),
            maximum=max_backoff,
            healthy_after=HEALTHY_AFTER,
        )
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ssl_context = ssl_context
        self._wanted = dict.fromkeys(_canonical(symbols))  # an ordered set
        self._requests = TokenBucket(REQUESTS_PER_SECOND, REQUEST_BURST)
        self._pacing = trio.Lock()
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._attempt = 0  # tries since the stream was last connected
        self._connection = 0  # the number of the current (or last) WebSocket connection
        self._greeted = False  # the gateway greeted the current connection
        self._sessions = 0  # connections the gateway greeted
        self._paused = False  # lossless and full: not reading until the program reads
        self._refused: StreamRefused | None = None
        self._leaving = False  # the program left the `async with`: closing for good
        self._failed_in_reply: tuple[str, ...] = ()  # the next `error` is about these
        self._gaps = GapFinder()
        self._arrived = trio.lowlevel.ParkingLot()  # the program waits here for items
        self._room = trio.lowlevel.ParkingLot()  # the reader waits here (lossless, full)
        self._updates = self._gap_count = self._malformed = 0

    def __repr__(self) -> str:
        return f"<PriceStream {self._address.public_url} connected={self._greeted}>"

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
                self._check_open()
                await self._arrived.park()
                continue
            self._room.unpark_all()
            delivered = self._deliverable(item) if isinstance(item, Arrived) else item
            if delivered is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return delivered

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """Ask for ``symbols`` too, now and after every reconnect.

        Returns once the request is sent, or kept for the next connection; the gateway's
        refusals come in the stream as :class:`SubscriptionFailed`. Requests are paced
        under the gateway's rate limit, so a burst of calls may wait a little.

        Raises:
            InvalidSymbol: a symbol is neither a Korean code nor a US ticker (then nothing
                is asked for).
            StreamRefused: the stream has ended.
        """
        new = [s for s in _canonical(symbols) if s not in self._wanted]
        self._check_open()
        self._wanted.update(dict.fromkeys(new))
        await self._send(self._ws, subscribe_requests(new))

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
        await self._send(self._ws, unsubscribe_requests(gone))

    def statistics(self) -> StreamStatistics:
        """The stream's counters now."""
        return StreamStatistics(
            connected=self._greeted,
            reconnects=max(0, self._sessions - 1),
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
        if self._refused is not None:  # a new one each time: tracebacks do not pile up
            raise StreamRefused(self._refused.code, self._refused.reason)

    async def _send(
        self, ws: trio_websocket.WebSocketConnection | None, requests: Sequence[str]
    ) -> None:
        await trio.lowlevel.checkpoint()
        for request in requests:
            if ws is not None and ws is self._ws:
                await self._pace()
            if ws is None or ws is not self._ws:
                return  # not connected: the next connection asks for every wanted symbol
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.send_message(request)  # lost meanwhile: the same

    async def _pace(self) -> None:
        async with self._pacing:  # one sender waits at a time, so its token is its own
            if not self._requests.take():
                await trio.sleep(1 / REQUESTS_PER_SECOND)  # a token's worth of refill
                self._requests.take()

    async def _say_goodbye(self) -> None:
        """Close with 1000 if connected (bounded), while the connection's reader still runs."""
        self._leaving = True  # the close that follows is ours: no reconnect
        ws = self._ws
        if ws is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
                await ws.aclose()

    # ---- the connection's side -------------------------------------------------------

    async def run(self) -> None:
        """Connect, read and reconnect until cancelled or refused."""
        while True:
            self._attempt += 1
            ended = await self._connect_and_read()
            if self._leaving:
                return
            refused = refusal(ended)
            if refused is not None:
                log.warning("price stream to %s: %s", self._address.public_url, refused)
                self._refused = refused
                self._arrived.unpark_all()
                return
            delay = retry_delay(ended, self._backoff)
            log.info(
                "price stream to %s: %s; retry in %.1f s",
                self._address.public_url,
                ended.reason,
                delay,
            )
            self._put_event(Disconnected(ended.code, ended.reason, round(delay, 3)))
            await trio.sleep(delay)

    async def _connect_and_read(self) -> Ended:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await self._open_stream()
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            return Ended(None, _why_not_connected(exc))
        rejected: trio_websocket.ConnectionRejected | None = None
        try:
            with tolerating_the_closing_pong():
                async with trio.open_nursery() as nursery:
                    ended = await self._upgrade_and_read(stream, nursery)
                    nursery.cancel_scope.cancel()
                    return ended
            return Ended(None, "closed while the gateway pinged")
        except* trio_websocket.ConnectionRejected as group:  # raised by its reader task
            rejected = _first(group)
        finally:
            await trio.aclose_forcefully(stream)
        return Ended.rejected(rejected)

    async def _open_stream(self) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        tcp = await trio.open_tcp_stream(self._address.host, self._address.port)
        if not self._address.tls:
            return tcp
        context = self._ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(tcp, context, server_hostname=self._address.host)
        try:
            await tls.do_handshake()  # here, so a certificate error is told as one
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls

    async def _upgrade_and_read(
        self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream], nursery: trio.Nursery
    ) -> Ended:
        ws = None
        with trio.move_on_after(CONNECT_TIMEOUT):
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                self._address.host_header,
                self._address.resource,
                extra_headers=self._headers,
                message_queue_size=READ_AHEAD,
                max_message_size=MAX_MESSAGE_SIZE,
            )
        if ws is None:  # also a stream closed mid-handshake: trio-websocket 0.12 waits on
            return Ended(None, f"no WebSocket handshake within {CONNECT_TIMEOUT:g} s")
        return await self._read(ws, nursery)

    async def _read(self, ws: trio_websocket.WebSocketConnection, nursery: trio.Nursery) -> Ended:
        self._connection += 1
        connection = self._connection
        self._ws, wanted = ws, list(self._wanted)  # together: a subscribe now is sent once
        try:
            with trio.CancelScope() as unanswered:
                if self._ping_interval:
                    nursery.start_soon(self._keep_alive, ws, unanswered)
                await self._send(ws, subscribe_requests(wanted))
                while True:
                    await self._take(await ws.get_message(), connection)
            return Ended(None, f"no pong within {self._ping_timeout:g} s")
        except trio_websocket.ConnectionClosed as exc:
            return Ended.closed(exc.reason or ws.closed)
        finally:
            self._ws = None
            self._greeted = False

    async def _keep_alive(
        self, ws: trio_websocket.WebSocketConnection, unanswered: trio.CancelScope
    ) -> None:
        # A gateway that vanished without a FIN (a cable, a NAT) would leave the reader
        # waiting forever: a ping no pong answers ends the connection instead. Not while
        # the stream itself stopped reading (lossless, full): then no pong can come in.
        try:
            while True:
                await trio.sleep(self._ping_interval)
                if self._paused:
                    continue
                with trio.move_on_after(self._ping_timeout) as waited:
                    await ws.ping()
                if waited.cancelled_caught and not self._paused:
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
            await self._wait_for_room()
            self._pending.put_update(value, connection)
            self._arrived.unpark_all()
        elif value is not None:
            self._answer(value)

    async def _wait_for_room(self) -> None:
        # Lossless and full: stop reading. The socket fills, and the gateway applies its
        # own policy (it conflates, or closes with 1013); nothing grows here.
        while not self._pending.has_room():
            self._paused = True
            try:
                await self._room.park()
            finally:
                self._paused = False

    def _answer(self, reply: ServerMessage) -> None:
        if isinstance(reply, Greeting):
            self._greet()
        elif isinstance(reply, SubscriptionReply):
            # The gateway follows a reply listing `failed` symbols with an `error` saying why.
            self._failed_in_reply = reply.failed
        elif isinstance(reply, ErrorReply):
            symbols = reply.failed or self._failed_in_reply
            self._failed_in_reply = ()
            self._put_event(SubscriptionFailed(symbols, reply.message))

    def _greet(self) -> None:
        # The gateway greets a client it accepted (a refused token is closed before), so
        # only now is the stream connected, and a lasting connection resets the backoff.
        self._greeted = True
        self._sessions += 1
        self._backoff.connected()
        self._put_event(Connected(self._address.public_url, self._attempt))
        self._attempt = 0
        log.info("price stream connected to %s", self._address.public_url)

    def _put_event(self, event: StreamEvent) -> None:
        self._pending.put_event(event)
        self._arrived.unpark_all()


def _canonical(symbols: Iterable[str]) -> list[str]:
    if isinstance(symbols, str):
        symbols = [symbols]  # one symbol, not its letters
    return list(dict.fromkeys(normalize_symbol(s)[0] for s in symbols))


def _why_not_connected(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"cannot connect: no connection within {CONNECT_TIMEOUT:g} s"
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    return f"cannot connect: {cause or exc}"


def _first(
    group: BaseExceptionGroup[trio_websocket.ConnectionRejected],
) -> trio_websocket.ConnectionRejected:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, trio_websocket.ConnectionRejected)
    return leaf


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
        conflate: When the program falls more than ``buffer`` updates behind, keep the
            newest update of each symbol (the skips are reported as gaps). ``False``:
            lossless; at ``buffer`` updates the stream stops reading and the gateway's
            own policy applies (it conflates, or closes with 1013 and the stream
            reconnects later); either way a skip is reported as a gap.
        buffer: Updates the stream holds for the program before either policy steps in.
        max_backoff: The longest wait between reconnect attempts, in seconds, before jitter.
        ping_interval: Seconds between the stream's pings (0: none).
        ping_timeout: Seconds a pong may take before the connection is given up.
        ssl_context: For ``wss://``; the system's default trust otherwise.

    Raises:
        ValueError: ``url`` is not a ws:// or wss:// URL, ``buffer`` is below 1, a
            duration is out of range, or the token cannot be sent as a header.
        InvalidSymbol: one of ``symbols`` is neither a Korean code nor a US ticker.
    """
    stream = PriceStream(
        Address.from_url(url),
        symbols,
        token=token,
        pending=Pending(buffer, conflate=conflate),
        max_backoff=max_backoff,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        ssl_context=ssl_context,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.run)
        try:
            yield stream
        finally:
            await stream._say_goodbye()
            nursery.cancel_scope.cancel()
