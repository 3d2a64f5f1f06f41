"""How a connection ended, and what a price stream does next: try again, when, or stop.

The gateway's close codes are those of ``endpoints/client.py``:

- 1001 (going away: the gateway shuts down), 1011 (no pong), a lost connection, a refused
  or timed-out connect: try again after the backoff (capped exponential, with jitter);
- 1013 (try again later: a lossless client too slow) and 4008 (more connections than the
  token's ``max_connections``): the same, but not before ``LATER`` seconds; an HTTP 503
  or 429 answer to the upgrade (the gateway is full) not before its ``Retry-After`` either;
- 4001 (no valid token), 4003 (the token is not entitled to this endpoint) and any other
  4xx answer to the upgrade (a wrong path, a refused origin): retrying cannot help, and a
  client retrying them forever would be a storm, so the stream stops (:class:`StreamRefused`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs
import trio_websocket
from wsproto.utilities import LocalProtocolError

from ..upstream.backoff import Backoff
from .values import StreamRefused

REFUSED_CODES = frozenset({4001, 4003})
LATER_CODES = frozenset({1013, 4008})
LATER_STATUSES = frozenset({429, 503})
RETRIED_STATUSES = LATER_STATUSES | {408}  # the 4xx that are worth another try
LATER = 5.0  # seconds at least before a retry the gateway asked to come "later"
MAX_RETRY_AFTER = 300.0  # a gateway's Retry-After is honoured up to this
MAX_BODY_SHOWN = 300  # characters of a refused upgrade's body kept in the reason


@attrs.frozen
class Ended:
    """How one connection, or one attempt at one, ended."""

    code: int | None  # the WebSocket close code; None when there was none
    reason: str
    status: int | None = None  # the HTTP status of a refused upgrade
    retry_after: float | None = None  # its Retry-After, in seconds

    @classmethod
    def closed(cls, reason: trio_websocket.CloseReason | None) -> Ended:
        """The connection closed with ``reason`` (None: it was lost without a close frame)."""
        if reason is None:
            return cls(None, "connection lost")
        return cls(reason.code, reason.reason or reason.name.lower().replace("_", " "))

    @classmethod
    def rejected(cls, exc: trio_websocket.ConnectionRejected) -> Ended:
        """The gateway answered the upgrade with an HTTP error instead."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in exc.headers}
        body = (exc.body or b"").decode("utf-8", "replace").strip()[:MAX_BODY_SHOWN]
        retry_after = headers.get("retry-after", "").strip()
        return cls(
            None,
            f"HTTP {exc.status_code}" + (f": {body}" if body else ""),
            status=exc.status_code,
            retry_after=float(retry_after) if retry_after.isdigit() else None,
        )


def refusal(ended: Ended) -> StreamRefused | None:
    """The error that ends the stream, when retrying cannot help; else None."""
    if ended.code in REFUSED_CODES:
        return StreamRefused(ended.code or 0, ended.reason)
    status = ended.status
    if status is not None and 400 <= status < 500 and status not in RETRIED_STATUSES:
        return StreamRefused(status, ended.reason)
    return None


def retry_delay(ended: Ended, backoff: Backoff) -> float:
    """Seconds to wait before the next attempt (``backoff`` counts this failure)."""
    delay = backoff.failed()
    if ended.code in LATER_CODES or ended.status in LATER_STATUSES:
        delay = max(delay, min(LATER, backoff.maximum))
    if ended.retry_after is not None:
        delay = max(delay, min(ended.retry_after, MAX_RETRY_AFTER))
    return delay


@contextlib.contextmanager
def tolerating_the_closing_pong() -> Iterator[None]:
    """Around the nursery of a trio-websocket connection: its closing-pong bug is no error.

    trio-websocket (0.12) answers a ping that arrives while the connection closes with a
    pong that wsproto refuses (``LocalProtocolError``: "cannot be sent in state
    ConnectionState.LOCAL_CLOSING", trio-websocket issue #184), from its reader task. The
    connection is ending anyway; any other error passes through.
    """
    try:
        yield
    except* LocalProtocolError as group:
        rest = group.subgroup(
            lambda e: isinstance(e, LocalProtocolError) and "LOCAL_CLOSING" not in str(e)
        )
        if rest is not None:
            raise rest from None
