"""Server-side WebSockets: the handshake answer, messages in, pre-built frames out.

A server-to-client frame is unmasked (RFC 6455 §5.1), so the complete frame of an update —
header and UTF-8 payload — is the same bytes for every subscriber: it is built once
(:func:`text_frame`, cached on the ``SymbolState``) and never re-framed per client.
:meth:`ServerWebSocket.send` writes everything a client has pending with one system call.

Why not trio-websocket here (the benchmark, README "Performance"): its connection runs a
reader task per client, keeps the handshake's h11 state and a message channel for the
connection's life (together about half of the memory of an idle client), and its
``send_message`` frames and writes each message separately. Incoming frames are parsed by
wsproto — the library trio-websocket is built on — so masking, fragmentation, UTF-8 and
control frames are handled by the same well-tested code; this module only adds the
handshake answer, a message size limit, and batched writes.

Only one task may call :meth:`ServerWebSocket.receive_messages`, and only one may send at
a time (the client session's writer). Control frames the peer asks for (pongs) are queued
on :attr:`ServerWebSocket.control` for that writer, which the ``wake`` callback nudges.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from .wsmessage import MESSAGE_TOO_BIG, MessageAssembler, MessageTooBig

RECEIVE_SIZE = 16 * 1024  # bytes per read; requests are small, messages are size-limited
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)
_PING = 0x89  # FIN bit + opcode 9
PING_PAYLOAD = b"tsk?"

NORMAL_CLOSURE = 1000
ABNORMAL_CLOSURE = 1006  # never sent: the connection was lost without a close frame


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame carrying ``payload`` (UTF-8 bytes)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return bytes((_FIN_TEXT, 126)) + size.to_bytes(2, "big") + payload
    return bytes((_FIN_TEXT, 127)) + size.to_bytes(8, "big") + payload


def frame_payload(frame: bytes) -> bytes:
    """The payload of a frame built by :func:`text_frame`."""
    size = frame[1]
    return frame[2:] if size < 126 else frame[4:] if size == 126 else frame[10:]


def handshake_response(key: str) -> bytes:
    """The ``101 Switching Protocols`` answer to a handshake with ``Sec-WebSocket-Key: key``.

    No subprotocol and no extension is ever negotiated (RFC 6455 §4.2.2), so frames are
    exactly what :func:`text_frame` builds.
    """
    accept = base64.b64encode(hashlib.sha1(key.strip().encode("latin-1") + _GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


class ConnectionClosed(Exception):
    """The WebSocket is over.

    ``code`` and ``reason`` are what the server sends (or, when ``by_peer``, echoes) in its
    close frame; 1006 means the connection was lost and nothing can be sent.
    """

    def __init__(self, code: int, reason: str = "", *, by_peer: bool = False) -> None:
        super().__init__(f"websocket closed: {code}" + (f" {reason}" if reason else ""))
        self.code = code
        self.reason = reason
        self.by_peer = by_peer


class ServerWebSocket:
    """One accepted WebSocket on ``stream`` whose handshake was already answered.

    Args:
        stream: The connection; a ``trio.SocketStream`` gets the direct write path.
        received: Bytes read after the handshake's head (the start of the first frames).
        max_message_size: Larger messages close the connection with 1009.
    """

    def __init__(
        self, stream: trio.abc.Stream, received: bytes = b"", *, max_message_size: int
    ) -> None:
        self.stream = stream
        self.max_message_size = max_message_size
        self.control: list[bytes] = []  # frames the writer sends before its next batch
        self.wake: Callable[[], None] = _nothing
        self.closed: ConnectionClosed | None = None
        self.unanswered_ping_since: float | None = None
        self._protocol = Connection(ConnectionType.SERVER)
        self._assembler = MessageAssembler(max_message_size)
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._pending: list[str | bytes] = []
        if received:
            self._parse(received)

    # ---- receiving -----------------------------------------------------------------

    async def receive_messages(self) -> list[str | bytes]:
        """Every message one read brought (at least one, waiting if needed), in order.

        Raises:
            ConnectionClosed: the peer closed, broke the protocol, sent a message over the
                limit, or the connection was lost.
        """
        while not self._pending:
            if self.closed is not None:
                raise self._closed_error()
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closed = ConnectionClosed(ABNORMAL_CLOSURE, "connection lost")
                raise self._closed_error()
            self._parse(data)
        messages, self._pending = self._pending, []
        return messages

    def _closed_error(self) -> ConnectionClosed:
        # A copy to raise: the stored one never gets a traceback, whose frames would refer
        # back to this connection (a cycle that outlives every closed client until a full
        # garbage collection).
        assert self.closed is not None
        closed = self.closed
        return ConnectionClosed(closed.code, closed.reason, by_peer=closed.by_peer)

    def ping(self, now: float) -> None:
        """Queue a ping for the writer; remember when the oldest unanswered one went out."""
        if self.unanswered_ping_since is None:
            self.unanswered_ping_since = now
        self.control.append(bytes((_PING, len(PING_PAYLOAD))) + PING_PAYLOAD)
        self.wake()

    def _parse(self, data: bytes | bytearray) -> None:
        self._protocol.receive_data(bytes(data))
        for event in self._protocol.events():
            if isinstance(event, TextMessage | BytesMessage):
                self._take_part(event.data, event.message_finished)
            elif isinstance(event, Ping):
                self.control.append(self._protocol.send(event.response()))
                self.wake()
            elif isinstance(event, Pong):
                self.unanswered_ping_since = None  # any pong answers (RFC 6455 §5.5.3)
            elif isinstance(event, CloseConnection):
                by_peer = self._protocol.state is ConnectionState.REMOTE_CLOSING
                # wsproto reports a frame it cannot parse as a close with the code to send
                self.closed = ConnectionClosed(event.code, event.reason or "", by_peer=by_peer)
            if self.closed is not None:
                return

    def _take_part(self, data: str | bytes | bytearray, finished: bool) -> None:
        try:
            message = self._assembler.add(data, finished)
        except MessageTooBig as exc:
            self.closed = ConnectionClosed(MESSAGE_TOO_BIG, str(exc))
            return
        if message is not None:
            self._pending.append(message)

    # ---- sending -------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Write ``data`` (complete frames). The caller is the only sender.

        On a socket, one ``write`` usually takes all of it without a trip through the
        event loop; only what the kernel does not take waits for the socket to drain.

        Raises:
            ConnectionClosed: the connection is lost (1006).
        """
        if self.closed is not None and self.closed.code == ABNORMAL_CLOSURE:
            raise self._closed_error()
        try:
            sent = self._write_now(data)
            if sent < len(data):
                await self.stream.send_all(memoryview(data)[sent:])
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = ConnectionClosed(ABNORMAL_CLOSURE, "connection lost")
            raise self._closed_error() from None

    def _write_now(self, data: bytes) -> int:
        if self._fd < 0:
            return 0
        try:
            return os.write(self._fd, data)  # the socket is non-blocking (trio made it so)
        except BlockingIOError:
            return 0

    async def close(self, code: int, reason: str, *, grace: float) -> None:
        """Finish the closing handshake within ``grace`` seconds, then close the stream.

        Answers the peer's close frame, or sends ours and waits (bounded) for the answer.
        Never raises for a peer that is already gone.
        """
        try:
            with trio.move_on_after(grace):
                if self._protocol.state is ConnectionState.REMOTE_CLOSING:
                    close = CloseConnection(code=self.closed.code if self.closed else code)
                    await self.send(self._protocol.send(close))
                elif self._protocol.state is ConnectionState.OPEN:
                    close = CloseConnection(code=code, reason=_close_reason(reason))
                    await self.send(self._protocol.send(close))
                    await self._await_peer_close()
        except ConnectionClosed:
            pass  # gone already: nothing left to say
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _await_peer_close(self) -> None:
        while self._protocol.state is not ConnectionState.CLOSED:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            self._protocol.receive_data(bytes(data))
            for _ in self._protocol.events():
                pass  # only the close frame matters now


def _close_reason(reason: str) -> str:
    # A close frame's reason fits in 123 bytes of UTF-8 (RFC 6455 §5.5: control frames ≤ 125).
    encoded = reason.encode()[:123]
    return encoded.decode(errors="ignore")


def _nothing() -> None:
    pass
