"""A client WebSocket for upstream feeds that hands over every message one read brings.

trio-websocket's connection delivers messages through a task that yields after each one,
so an upstream reader ingests one tick per scheduling round while every client writer runs
in between: ticks queue in the kernel instead of conflating in the hub, and each client
write carries a single update. Here one ``receive_some`` is parsed whole (wsproto, the
library trio-websocket itself is built on), and :meth:`ClientWebSocket.get_messages`
returns all of it, so the engine publishes a read's ticks in one synchronous step and each
writer wakes once for all of them. The busier the feed, the larger the batches.

It also owns its stream: :meth:`ClientWebSocket.aclose` always closes it, which settles
trio-websocket 0.12's client-side socket leak after an abnormal closure (DESIGN.md).
Pings from the server are answered; no pings are sent (protocols/kis.md §8.2).

What a server sends is bounded: one message by ``max_message_size`` (bigger closes with
1009), one batch by what one read brings (``RECEIVE_SIZE``), and the parts of a message
being assembled by its size too (empty fragments are not kept). A server that never
finishes a message is the engine's watchdog's to end.
"""

from __future__ import annotations

from collections import deque

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..errors import UpstreamError
from ..transport.wsmessage import MESSAGE_TOO_BIG, MessageAssembler, MessageTooBig

RECEIVE_SIZE = 64 * 1024  # bytes per read: also the most one batch of messages can span
ABNORMAL_CLOSURE = 1006
PROTOCOL_ERROR = 1002


class WebSocketClosed(UpstreamError):
    """The upstream WebSocket is closed; ``code`` is its close code (1006: connection lost)."""

    def __init__(self, code: int, reason: str | None) -> None:
        super().__init__(f"websocket closed: {code}" + (f" {reason}" if reason else ""))
        self.code = code
        self.reason = reason


class ClientWebSocket:
    """One client WebSocket over ``stream`` (see the module doc). Create with :meth:`connect`.

    Only one task may receive at a time; sends are serialised by a lock, so a reader may
    answer pings while another task sends.
    """

    def __init__(self, stream: trio.abc.Stream, *, max_message_size: int) -> None:
        self.stream = stream
        self.max_message_size = max_message_size
        self.closed: WebSocketClosed | None = None
        self._protocol = WSConnection(ConnectionType.CLIENT)
        self._messages: deque[str | bytes] = deque()
        self._assembler = MessageAssembler(max_message_size)
        self._send_lock = trio.Lock()

    @classmethod
    async def connect(
        cls, stream: trio.abc.Stream, host: str, resource: str, *, max_message_size: int
    ) -> ClientWebSocket:
        """Run the opening handshake on ``stream``.

        Raises:
            UpstreamError: the server refused the handshake or closed the connection.
        """
        ws = cls(stream, max_message_size=max_message_size)
        await ws._send_bytes(ws._protocol.send(Request(host=host, target=resource)))
        while ws._state() is ConnectionState.CONNECTING:
            await ws._read()
        return ws

    async def get_message(self) -> str | bytes:
        """The next message, waiting for one if needed."""
        while not self._messages:
            await self._read()
        return self._messages.popleft()

    async def get_messages(self) -> list[str | bytes]:
        """Every message received so far (at least one, waiting if needed), in order."""
        while not self._messages:
            await self._read()
        messages = list(self._messages)
        self._messages.clear()
        return messages

    async def send_message(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        if self.closed is not None:
            raise self.closed
        event = (
            TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        )
        await self._send_bytes(self._protocol.send(event))

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a close frame if the connection is open, wait for the server's, close the stream.

        Callers bound the wait (the engine's shutdown grace); the stream is closed either way.
        """
        try:
            if self._protocol.state is ConnectionState.OPEN:
                await self._send_bytes(
                    self._protocol.send(CloseConnection(code=code, reason=reason))
                )
                while self._state() is not ConnectionState.CLOSED:  # the server's close frame
                    await self._read()
        except (UpstreamError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # already gone: nothing left to say
        finally:
            self.closed = self.closed or WebSocketClosed(code, reason)
            await trio.aclose_forcefully(self.stream)

    def _state(self) -> ConnectionState:
        return self._protocol.state

    async def _read(self) -> None:
        """Read once from the stream and turn everything it brought into messages."""
        if self.closed is not None:
            raise self.closed
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.closed = WebSocketClosed(ABNORMAL_CLOSURE, "connection lost")
            raise self.closed
        try:
            self._protocol.receive_data(bytes(data))
            replies = b"".join(self._handle(event) for event in self._protocol.events())
        except RemoteProtocolError as exc:
            self.closed = WebSocketClosed(PROTOCOL_ERROR, str(exc))
            raise self.closed from None
        if replies:
            await self._send_bytes(replies)
        if self.closed is not None and not self._messages:
            raise self.closed

    def _handle(self, event: object) -> bytes:
        """Apply one wsproto event; return bytes to send back (pong, close reply)."""
        if isinstance(event, TextMessage | BytesMessage):
            self._take_part(event.data, event.message_finished)
        elif isinstance(event, Ping):
            return self._protocol.send(event.response())
        elif isinstance(event, CloseConnection):
            self.closed = WebSocketClosed(event.code, event.reason or None)
            if self._protocol.state is ConnectionState.REMOTE_CLOSING:
                return self._protocol.send(event.response())
        elif isinstance(event, RejectConnection):
            self.closed = WebSocketClosed(
                ABNORMAL_CLOSURE, f"handshake refused: HTTP {event.status_code}"
            )
        elif isinstance(event, AcceptConnection):
            pass  # the handshake loop in connect() sees the state change
        return b""

    def _take_part(self, data: str | bytes | bytearray, finished: bool) -> None:
        try:
            message = self._assembler.add(data, finished)
        except MessageTooBig as exc:
            self.closed = WebSocketClosed(MESSAGE_TOO_BIG, str(exc))
            return
        if message is not None:
            self._messages.append(message)

    async def _send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed = self.closed or WebSocketClosed(ABNORMAL_CLOSURE, "connection lost")
                raise self.closed from None
            except LocalProtocolError as exc:  # pragma: no cover - wsproto state misuse
                raise UpstreamError(str(exc)) from None
