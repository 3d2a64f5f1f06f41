"""The bare minimum of RFC 6455 over a Trio stream, for the ceiling (bench/ceiling.py).

No extensions, no fragmentation on send, text frames only. It exists so the ceiling measures
Trio and the kernel, not a WebSocket library: frames are built and parsed with ``struct``
and written with one ``send_all`` per batch.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

import trio

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_HEAD = 8192  # bytes of HTTP request/response head we accept
MAX_FRAME = 1 << 20  # largest frame we accept from a peer


class ProtocolError(Exception):
    """The peer broke the protocol (or a limit); the connection is dropped."""


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """An unmasked (server-to-client) final frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked (client-to-server) final frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return head + mask + body


def _accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


class FrameReader:
    """Reads whole messages (opcode, payload) from a stream, answering nothing itself."""

    def __init__(self, stream: trio.abc.Stream, buf: bytes = b"") -> None:
        self.stream = stream
        self.buf = bytearray(buf)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError
        self.buf += data

    async def next_frame(self) -> tuple[int, bytes]:
        """The next frame as ``(opcode, payload)``; unmasks client frames.

        Raises:
            EOFError: the peer closed the stream.
            ProtocolError: a frame over ``MAX_FRAME``.
        """
        buf = self.buf
        while len(buf) < 2:
            await self._fill()
        b0, b1 = buf[0], buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            while len(buf) < 4:
                await self._fill()
            (n,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif n == 127:
            while len(buf) < 10:
                await self._fill()
            (n,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if n > MAX_FRAME:
            raise ProtocolError("frame too large")
        masked = b1 & 0x80
        need = pos + (4 if masked else 0) + n
        while len(buf) < need:
            await self._fill()
        if masked:
            mask = bytes(buf[pos : pos + 4])
            raw = bytes(buf[pos + 4 : need])
            key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            payload = (int.from_bytes(raw, "big") ^ key).to_bytes(n, "big") if n else b""
        else:
            payload = bytes(buf[pos:need])
        del buf[:need]
        return b0 & 0x0F, payload


async def read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """Read an HTTP head; returns ``(head, bytes after it)``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise EOFError
        data += chunk
        if len(data) > MAX_HEAD:
            raise ProtocolError("head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def server_handshake(stream: trio.abc.Stream) -> tuple[str, bytes]:
    """Accept a WebSocket upgrade; returns ``(path, bytes already read)``."""
    head, rest = await read_head(stream)
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    key = headers.get(b"sec-websocket-key")
    if len(parts) < 2 or key is None:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        raise ProtocolError("not a websocket upgrade")
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + _accept_key(key) + b"\r\n\r\n"
    )
    return parts[1].decode("latin-1"), rest


async def client_handshake(stream: trio.abc.Stream, host: str, path: str) -> bytes:
    """Open a WebSocket as a client; returns the bytes read past the response head."""
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ".encode()
        + key
        + b"\r\n\r\n"
    )
    head, rest = await read_head(stream)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ProtocolError(head.split(b"\r\n")[0].decode("latin-1"))
    return rest
