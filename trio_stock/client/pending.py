"""What a price stream received and the program has not read yet: bounded either way. No I/O.

Two policies, as the gateway has for its own clients (DESIGN.md, "Data flow"):

- conflate: a queue of up to ``capacity`` updates. A program that keeps up reads every
  update; one that falls behind past the bound has its backlog collapsed to the newest
  update of each symbol, arrival order kept, and stays collapsed (one update per symbol,
  each newer one replacing the one waiting) until it has read everything. Memory: at most
  ``max(capacity, symbols)`` updates. Each update replaced counts in ``dropped``, and the
  program sees the skip as a ``seq`` gap.
- lossless: a queue of at most ``capacity`` updates; :meth:`Pending.has_room` says when it
  is full, and the stream then stops reading from the socket until the program catches up.

Events (connected, disconnected, refused symbols) keep their place among the updates; at
most ``MAX_EVENTS`` wait, the oldest giving way.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque

import attrs

from .values import PriceUpdate, StreamEvent

MAX_EVENTS = 64  # events waiting for the program; a stream reconnecting for hours makes many


@attrs.frozen
class Arrived:
    """An update as it arrived, with the number of the connection that brought it."""

    update: PriceUpdate
    connection: int


Item = Arrived | StreamEvent


class Pending:
    """The bounded buffer between a stream's reader and the program (see the module doc)."""

    def __init__(self, capacity: int, *, conflate: bool) -> None:
        if capacity < 1:
            raise ValueError(f"the buffer must hold at least one update, not {capacity}")
        self.capacity = capacity
        self.conflate = conflate
        self.dropped = 0
        # Keyed by a number in arrival order; while collapsed, updates by their symbol.
        self._items: OrderedDict[int | str, Item] = OrderedDict()
        self._numbers = itertools.count()
        self._updates = 0
        self._events: deque[int] = deque()  # keys of waiting events, oldest first
        self._collapsed = False

    def __len__(self) -> int:
        return len(self._items)

    def has_room(self) -> bool:
        """False when a lossless buffer is full (a conflating one always has room)."""
        return self.conflate or self._updates < self.capacity

    def put_update(self, update: PriceUpdate, connection: int) -> None:
        """Keep ``update`` for the program (lossless: only when :meth:`has_room`)."""
        if self.conflate and not self._collapsed and self._updates >= self.capacity:
            self._collapse()
        arrived = Arrived(update, connection)
        if not self._collapsed:
            assert self.has_room(), "a lossless buffer was overfilled"
            self._items[next(self._numbers)] = arrived
            self._updates += 1
            return
        if self._items.pop(update.symbol, None) is not None:
            self.dropped += 1
            self._updates -= 1
        self._items[update.symbol] = arrived  # at the end: arrival order of the newest
        self._updates += 1

    def put_event(self, event: StreamEvent) -> None:
        """Keep ``event`` in its place among the updates."""
        if len(self._events) >= MAX_EVENTS:
            del self._items[self._events.popleft()]
        key = next(self._numbers)
        self._items[key] = event
        self._events.append(key)

    def take(self) -> Item | None:
        """The oldest item waiting, or None."""
        if not self._items:
            return None
        _, item = self._items.popitem(last=False)
        if isinstance(item, Arrived):
            self._updates -= 1
        else:
            self._events.popleft()  # the oldest item waiting is the oldest event too
        if not self._items:
            self._collapsed = False  # caught up: queue again
        return item

    def _collapse(self) -> None:
        collapsed: OrderedDict[int | str, Item] = OrderedDict()
        for key, item in self._items.items():
            if isinstance(item, Arrived):
                symbol = item.update.symbol
                if collapsed.pop(symbol, None) is not None:
                    self.dropped += 1
                collapsed[symbol] = item
            else:
                collapsed[key] = item
        self._items = collapsed
        self._updates = sum(isinstance(item, Arrived) for item in collapsed.values())
        self._collapsed = True
