"""Joining a WebSocket message's fragments under a size limit, for both of our connections.

wsproto hands over a message as the fragments and partial frames it has parsed so far
(``TextMessage``/``BytesMessage`` events with ``message_finished``); the server side
(:mod:`trio_stock.transport.wsserver`) and the upstream client (:mod:`trio_stock.upstream.wsclient`)
join them here, so a message larger than the limit is refused before it is held whole.
"""

from __future__ import annotations

from typing import cast

MESSAGE_TOO_BIG = 1009  # the close code for a message over the limit (RFC 6455 §7.4.1)


class MessageTooBig(Exception):
    """A message grew past the limit; its text says by how much."""


class MessageAssembler:
    """Joins the parts of one message at a time; at most ``max_size`` bytes (or characters)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._parts: list[str | bytes] = []
        self._size = 0

    def add(self, data: str | bytes | bytearray, finished: bool) -> str | bytes | None:
        """Take one part; return the whole message with its last part, else None.

        Raises:
            MessageTooBig: the message so far is over ``max_size``.
        """
        self._size += len(data)
        if self._size > self.max_size:
            raise MessageTooBig(f"message over {self.max_size} bytes")
        if data:  # an empty fragment adds nothing: keeping it would let a peer sending
            # only those grow the list without ever reaching the size limit
            self._parts.append(bytes(data) if isinstance(data, bytearray) else data)
        if not finished:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if not parts:  # an empty message (its type is that of every part of it)
            return "" if isinstance(data, str) else b""
        if isinstance(parts[0], str):
            return "".join(cast("list[str]", parts))
        return b"".join(cast("list[bytes]", parts))
