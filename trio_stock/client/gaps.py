"""Per symbol, what the program missed between two updates it read. No I/O.

The gateway numbers each symbol's states: ``seq`` grows by one per tick and ``epoch``
numbers the upstream session (DESIGN.md, "Data flow"). Comparing an update with the last
one the program read tells a continuous stream from a skip (:class:`Gap` ``"seq"``), a
reconnect in between (``"reconnect"``), and a history that started again (``"epoch"``: a
new upstream session, or ``seq`` going backwards, which is what a restarted gateway or an
evicted cache entry looks like).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .values import Gap, PriceUpdate


@attrs.frozen
class _Seen:
    seq: int
    epoch: int | None
    connection: int  # which connection of the stream brought it


@attrs.define
class GapFinder:
    """Remembers the last update the program read of each symbol, and judges the next one."""

    _seen: dict[str, _Seen] = attrs.field(factory=dict)

    def check(self, update: PriceUpdate, connection: int) -> Gap | None:
        """The gap between the last update of ``update.symbol`` read and ``update``, if any.

        Args:
            update: The update about to be handed to the program.
            connection: The number of the connection that brought it.
        """
        last = self._seen.get(update.symbol)
        self._seen[update.symbol] = _Seen(update.seq, update.epoch, connection)
        if last is None:
            return None  # the first update of a subscription: nothing came before it
        known = update.epoch is not None and last.epoch is not None
        if (known and update.epoch != last.epoch) or update.seq < last.seq:
            return Gap("epoch", None)
        missed = max(0, update.seq - last.seq - 1)  # equal seq: the same state once more
        if not missed:
            return None
        return Gap("reconnect" if connection != last.connection else "seq", missed)

    def repeats(self, update: PriceUpdate) -> bool:
        """True when ``update`` is the very state last read (a reconnect's snapshot)."""
        last = self._seen.get(update.symbol)
        return last is not None and (last.seq, last.epoch) == (update.seq, update.epoch)

    def forget(self, symbols: Iterable[str]) -> None:
        """The program stopped asking for ``symbols``: a later subscription starts afresh."""
        for symbol in symbols:
            self._seen.pop(symbol, None)
