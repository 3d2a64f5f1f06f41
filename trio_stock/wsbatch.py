"""Send several WebSocket text messages with one write.

trio-websocket's ``send_message`` encodes one frame and calls ``send_all`` once per message
under a lock. A writer with twenty pending updates would pay twenty system calls. Here the
frames are encoded with the connection's own wsproto state and written in one ``send_all``
under the same lock, so framing, masking rules and close handling stay the library's.

This reaches into three private attributes of ``WebSocketConnection`` (``_wsproto``,
``_stream_lock``, ``_stream``) of trio-websocket 0.12; :func:`coalescing_supported` checks
they are there, and a test pins the behaviour, so an upgrade that moves them falls back to
one ``send_message`` per update instead of breaking.
"""

from __future__ import annotations

import trio
import trio_websocket
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError


def coalescing_supported(ws: trio_websocket.WebSocketConnection) -> bool:
    """True if ``ws`` has the internals :func:`send_texts` relies on."""
    return all(hasattr(ws, name) for name in ("_wsproto", "_stream_lock", "_stream"))


async def send_texts(ws: trio_websocket.WebSocketConnection, texts: list[str]) -> None:
    """Send ``texts`` as separate text messages, in order, with one write when possible.

    Raises:
        trio_websocket.ConnectionClosed: the connection is closed or broke while sending.
    """
    if len(texts) == 1 or not coalescing_supported(ws):
        for text in texts:
            await ws.send_message(text)
        return
    if ws.closed:
        raise trio_websocket.ConnectionClosed(ws.closed)
    try:
        data = b"".join(ws._wsproto.send(TextMessage(data=text)) for text in texts)
    except LocalProtocolError:  # the close handshake started under us
        raise trio_websocket.ConnectionClosed(ws.closed) from None
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise trio_websocket.ConnectionClosed(ws.closed) from None
