"""Server-to-client WebSocket frames: built once per update, written many at a time.

A frame from server to client is unmasked (RFC 6455 §5.1), so the complete frame of an
update — header and UTF-8 payload — is the same bytes for every subscriber: it is built
once (:func:`text_frame`, cached on the ``SymbolState``) and never re-framed per client.
:func:`send_frames` writes everything a client has pending with one ``send_all``.

trio-websocket's ``send_message`` would frame each message through wsproto and call
``send_all`` once per message. Here the frames go to the connection's stream under the
connection's own send lock (``_stream_lock``), so they never interleave with the pings,
pongs and close frames trio-websocket sends. No extension is ever negotiated, so plain
frames are exactly what wsproto would produce. This reaches into private attributes of
``WebSocketConnection`` (trio-websocket 0.12); if an upgrade moves them, sending falls back
to one ``send_message`` per frame, and a test pins the fast path.
"""

from __future__ import annotations

import trio
import trio_websocket

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)


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


def coalescing_supported(ws: trio_websocket.WebSocketConnection) -> bool:
    """True if ``ws`` has the internals :func:`send_frames` relies on."""
    return all(hasattr(ws, name) for name in ("_stream_lock", "_stream", "_abort_web_socket"))


async def send_frames(ws: trio_websocket.WebSocketConnection, frames: list[bytes]) -> None:
    """Send ``frames`` (from :func:`text_frame`), in order, with one write.

    Raises:
        trio_websocket.ConnectionClosed: the connection is closed or broke while sending.
    """
    if ws.closed:
        raise trio_websocket.ConnectionClosed(ws.closed)
    if not coalescing_supported(ws):
        for frame in frames:
            await ws.send_message(frame_payload(frame).decode())
        return
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(b"".join(frames))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise trio_websocket.ConnectionClosed(ws.closed) from None
