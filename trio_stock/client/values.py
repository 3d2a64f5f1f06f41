"""What a price stream hands the program: updates, events, statistics, and its one error.

All are frozen values. A :class:`PriceUpdate` is one seed 003 ``price_update`` with the
wire's names made Python's (``data_type`` → ``kind``, ``timestamp`` → ``timestamp_ms``);
the rest of the stream's story (connected, disconnected, a refused subscription) comes as
a :data:`StreamEvent` in the same iteration, in the order it happened.
"""

from __future__ import annotations

import attrs

from ..errors import TrioStockError


@attrs.frozen
class Gap:
    """Updates of one symbol the program did not see, reported on the first one after them.

    ``reason`` says why:

    - ``"epoch"``: the symbol's history restarted (a new upstream session, or ``seq`` went
      backwards: a restarted gateway). What was missed is unknown.
    - ``"reconnect"``: the stream reconnected; ``missed`` counts the ``seq`` numbers skipped
      meanwhile.
    - ``"seq"``: ``seq`` numbers skipped on a live connection, because the gateway or this
      stream conflated a backlog (newest state per symbol kept).
    """

    reason: str  # "reconnect" | "seq" | "epoch"
    missed: int | None  # seq numbers skipped when known, else None


@attrs.frozen
class PriceUpdate:
    """One seed 003 ``price_update``: the merged latest state of a symbol after a tick.

    ``kind`` is the wire's ``data_type`` (``"T"`` trade, ``"Q"`` quote, ``"B"`` a trade
    break); ``timestamp_ms`` the provider's time in epoch milliseconds; ``seq`` grows by one
    per tick of the symbol and ``epoch`` numbers the upstream session (``None`` from a
    gateway that does not send it). ``gap`` is set on the first update of a symbol after a
    :class:`Gap`.
    """

    symbol: str
    market: str
    provider: str
    kind: str
    seq: int
    epoch: int | None
    timestamp_ms: int
    last_price: float | None
    last_size: float | None
    bid_price: float | None
    bid_size: float | None
    ask_price: float | None
    ask_size: float | None
    change: float | None
    change_percent: float | None
    open: float | None
    high: float | None
    low: float | None
    volume: float | None
    previous_close: float | None
    name: str | None
    gap: Gap | None = None


@attrs.frozen
class Connected:
    """The stream is connected; ``attempt`` is how many tries it took (1: the first)."""

    url: str
    attempt: int


@attrs.frozen
class Disconnected:
    """The connection ended or an attempt failed; the next try is in ``retry_in`` seconds.

    ``code`` is the gateway's close code (1001: going away, 1013: try again later, 4008:
    too many connections for the user), or ``None`` when there was none: refused, lost,
    timed out, or the upgrade answered with an HTTP error (503: full), which ``reason``
    then names.
    """

    code: int | None
    reason: str
    retry_in: float


@attrs.frozen
class SubscriptionFailed:
    """The gateway refused ``symbols`` (or a request, then ``symbols`` may be empty)."""

    symbols: tuple[str, ...]
    message: str


StreamEvent = Connected | Disconnected | SubscriptionFailed


@attrs.frozen
class StreamStatistics:
    """A price stream's counters (:meth:`PriceStream.statistics`).

    ``updates`` counts ``price_update`` messages received; ``dropped`` those this stream
    replaced by a newer one of their symbol before the program read them (conflate); ``gaps``
    the :class:`Gap` values reported; ``malformed`` messages from the server that could not
    be read and were skipped; ``buffered`` what waits for the program now. ``symbols`` are
    the symbols the stream asks for (and asks for again after every reconnect).
    """

    connected: bool
    reconnects: int
    updates: int
    gaps: int
    dropped: int
    symbols: tuple[str, ...]
    malformed: int = 0
    buffered: int = 0


class StreamRefused(TrioStockError):
    """The gateway refused this client: retrying would not help, so the stream ended.

    ``code`` is the close code (4001: no valid token, 4003: the token is not entitled to
    this endpoint) or the HTTP status when the upgrade itself was refused (e.g. 404 for a
    wrong path). ``reason`` is the gateway's text; it never holds the token.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the gateway refused the price stream ({code}): {reason}")
        self.code = code
        self.reason = reason
