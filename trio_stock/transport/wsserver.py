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
a time (the client session's writer). Control frames (our pings, the pong owed to the
peer) wait for that writer in :meth:`ServerWebSocket.take_control`; the ``wake`` callback
nudges it.

Everything a peer can make us hold or do is bounded (:class:`WebSocketLimits`): one
message's bytes (1009), its fragments and the time to finish it (1008), the control
frames it may send (1008), and the pong we owe it — only the newest ping is answered
(RFC 6455 §5.5.3 allows it), so a peer that pings and never reads costs one frame. A
write that a peer does not take within ``send_timeout`` loses the connection.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
from collections.abc import Callable

import attrs
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from ..limits import TokenBucket
from .wsmessage import MESSAGE_TOO_BIG, MessageAssembler, MessageTooBig

RECEIVE_SIZE = 16 * 1024  # bytes per read; requests are small, messages are size-limited
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)
_PING = 0x89  # FIN bit + opcode 9
PING_PAYLOAD = b"tsk?"
_PING_FRAME = bytes((_PING, len(PING_PAYLOAD))) + PING_PAYLOAD

NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
ABNORMAL_CLOSURE = 1006  # never sent: the connection was lost without a close frame


@attrs.frozen
class WebSocketLimits:
    """What one client may send, and how long it may leave our writes unread."""

    max_message_bytes: int = 64 * 1024  # one message, all fragments (1009 past it)
    max_fragments: int = 64  # frames one message may arrive in (1008 past it)
    fragment_timeout: float = 10.0  # seconds from a message's first frame to its last (1008)
    control_per_second: float = 5.0  # pings and pongs from the client (1008 past the burst)
    control_burst: int = 20
    send_timeout: float = 30.0  # seconds a write may wait for a client that does not read


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
        limits: What the peer may send (:class:`WebSocketLimits`).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        received: bytes = b"",
        *,
        limits: WebSocketLimits | None = None,
    ) -> None:
        self.stream = stream
        self.limits = limits = limits or WebSocketLimits()
        self.wake: Callable[[], None] = _nothing
        self.closed: ConnectionClosed | None = None
        self.unanswered_ping_since: float | None = None
        self._ping: bytes | None = None  # our keep-alive ping, not sent yet
        self._pong: bytes | None = None  # the answer to the peer's newest ping
        self._protocol = Connection(ConnectionType.SERVER)
        self._assembler = MessageAssembler(limits.max_message_bytes)
        self._fragments = 0  # frames of the message being assembled
        self._message_deadline = math.inf  # when it must be complete
        self._control_frames = TokenBucket(limits.control_per_second, limits.control_burst)
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
            data: bytes | bytearray = b""
            with trio.move_on_at(self._message_deadline) as late:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    data = await self.stream.receive_some(RECEIVE_SIZE)  # b"": lost
            if late.cancelled_caught:
                timeout = self.limits.fragment_timeout
                self._violation(f"message not completed within {timeout:g} s")
            elif not data:
                self.closed = ConnectionClosed(ABNORMAL_CLOSURE, "connection lost")
            else:
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
        self._ping = _PING_FRAME
        self.wake()

    def take_control(self) -> list[bytes]:
        """The control frames to send before the next batch (at most a pong and a ping)."""
        frames = [f for f in (self._pong, self._ping) if f is not None]
        self._pong = self._ping = None
        return frames

    def _parse(self, data: bytes | bytearray) -> None:
        self._protocol.receive_data(bytes(data))
        for event in self._protocol.events():
            if isinstance(event, TextMessage | BytesMessage):
                self._take_part(event.data, event.frame_finished, event.message_finished)
            elif isinstance(event, Ping | Pong) and not self._control_frames.take():
                self._violation("too many control frames (pings and pongs)")
            elif isinstance(event, Ping):
                self._pong = self._protocol.send(event.response())  # the newest ping only
                self.wake()
            elif isinstance(event, Pong):
                if bytes(event.payload) == PING_PAYLOAD:  # an unsolicited pong answers nothing
                    self.unanswered_ping_since = None
            elif isinstance(event, CloseConnection):
                by_peer = self._protocol.state is ConnectionState.REMOTE_CLOSING
                # wsproto reports a frame it cannot parse as a close with the code to send
                self.closed = ConnectionClosed(event.code, event.reason or "", by_peer=by_peer)
            if self.closed is not None:
                return

    def _take_part(self, data: str | bytes | bytearray, frame_end: bool, finished: bool) -> None:
        try:
            message = self._assembler.add(data, finished)
        except MessageTooBig as exc:
            self.closed = ConnectionClosed(MESSAGE_TOO_BIG, str(exc))
            return
        if message is not None:
            self._pending.append(message)
            self._fragments, self._message_deadline = 0, math.inf
            return
        if self._message_deadline == math.inf:
            self._message_deadline = trio.current_time() + self.limits.fragment_timeout
        self._fragments += frame_end
        if self._fragments >= self.limits.max_fragments:
            self._violation(f"message in more than {self.limits.max_fragments} fragments")

    def _violation(self, reason: str) -> None:
        self.closed = ConnectionClosed(POLICY_VIOLATION, reason)

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
                with trio.move_on_after(self.limits.send_timeout) as stalled:
                    await self.stream.send_all(memoryview(data)[sent:])
                if stalled.cancelled_caught:
                    timeout = self.limits.send_timeout
                    self.closed = ConnectionClosed(ABNORMAL_CLOSURE, f"no read for {timeout:g} s")
                    raise self._closed_error()
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
