"""Subscriber endpoints: what a client task receives updates from.

A :class:`Subscriber` is a ``trio.abc.ReceiveChannel`` of :class:`SymbolState`. The hub
offers it updates synchronously from ``publish``; the policy decides what happens when the
consumer is slower than the feed:

- ``CONFLATE`` (default): queue, then conflate. While the consumer keeps up it gets every
  update, in arrival order. When the backlog grows past ``max_backlog`` updates, or the
  oldest update queued since the last collapse is more than ``max_delay`` seconds older
  than the newest (by ``SymbolState.received_ns``), the backlog collapses to the latest
  state per symbol, in first-arrival order; later updates queue again until the rule
  triggers again. Memory is bounded by ``max_backlog`` plus the number of symbols held,
  never by the tick rate. ``max_backlog=0`` is strict conflation: at most one pending
  update per symbol, latest wins.
- ``LOSSLESS``: every update, in a buffer bounded by ``capacity``. When it is full the
  consumer is too slow: its stream ends with :class:`SubscriberTooSlow` (the server closes
  such a client with 1013), and the buffer is freed at once.
- ``DISCARD``: holds symbols upstream and warm in the cache without receiving anything
  (the server's own REST subscriptions).

Per symbol, a subscriber never receives an older state after a newer one, nor the same
state twice; unsubscribing a symbol drops its pending updates. :meth:`Subscriber.nudge`
wakes a task blocked in :meth:`Subscriber.receive_batch` without an update (a client
writer with a reply to send), so no cancel scope is needed around each wait.

A symbol the upstream stops serving (it refused the registration again after a reconnect)
is *revoked*: the subscriber no longer holds it, its pending updates are dropped, and a
:class:`~.results.Failure` waits in :meth:`Subscriber.take_revoked` for the consumer, who
is woken as by :meth:`~Subscriber.nudge`. Until taken, a revocation keeps its symbol's
place in the subscriber's ``max_symbols``: held symbols plus untaken revocations never
exceed it, so they are bounded even for a consumer that never takes them.
"""

from __future__ import annotations

import collections
import enum
import math
from typing import TYPE_CHECKING

import attrs
import trio

from ..errors import SubscriberTooSlow
from ..model import Market, SymbolState
from ..results import Failure

if TYPE_CHECKING:
    from .hub import Hub

DEFAULT_LOSSLESS_CAPACITY = 1024  # updates; ~1 KiB each as encoded text → ~1 MiB per client
# Conflation starts past this many queued updates (~8 KiB of references per client: the
# states themselves are shared by every subscriber of the symbol) …
DEFAULT_MAX_BACKLOG = 1024
# … or when the queued updates span more than this many seconds of feed time.
DEFAULT_MAX_DELAY = 0.05
# `_window_end` while nothing is queued since the last collapse or delivery: below any
# received_ns (nanoseconds since the epoch), so the next offer takes the slow path.
_NO_WINDOW = -(1 << 63)


class Policy(enum.Enum):
    """How a subscriber copes with a consumer slower than the feed."""

    CONFLATE = "conflate"
    LOSSLESS = "lossless"
    DISCARD = "discard"


@attrs.frozen
class SubscriberStatistics:
    """One subscriber's counters."""

    name: str
    policy: Policy
    symbols: int
    pending: int
    delivered: int
    conflated: int
    too_slow: bool


class Subscriber(trio.abc.ReceiveChannel[SymbolState]):
    """A hub subscriber. Create with :meth:`Hub.subscriber`; close to release everything.

    Closing is synchronous (:meth:`close`) and releases every symbol at once, so a task
    cancelled at any point leaves no subscription behind when it exits ``async with``.
    """

    policy: Policy

    def __init__(self, hub: Hub, name: str, max_symbols: int) -> None:
        self.name = name
        self.max_symbols = max_symbols
        self.markets: frozenset[Market] | None = None  # the markets it may hold; None: all
        self._hub = hub
        self._symbols: set[str] = set()
        self._closed = False
        self._delivered = 0
        self._conflated = 0
        self._lot = trio.lowlevel.ParkingLot()  # receivers waiting for an update or a nudge
        self._nudged = False
        # Revoked symbols not yet taken by the consumer, one per symbol, in revocation
        # order. Each was a held symbol and still counts in max_symbols (see _slots_used).
        self._revoked: dict[str, Failure] = {}

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols this subscriber holds."""
        return frozenset(self._symbols)

    def holds(self, symbol: str) -> bool:
        """True if this subscriber holds ``symbol``."""
        return symbol in self._symbols

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def close(self) -> None:
        """Release every symbol and end the stream. Idempotent, never blocks."""
        if self._closed:
            return
        self._closed = True
        self._hub._retire(self)
        self._release()
        self._revoked.clear()
        self._lot.unpark_all()

    async def aclose(self) -> None:
        """Close (synchronously) and checkpoint."""
        self.close()
        await trio.lowlevel.checkpoint()

    def nudge(self) -> None:
        """Wake a task blocked in :meth:`receive_batch`, which then returns ``[]``.

        A nudge while nobody waits is kept: the next :meth:`receive_batch` returns at once
        (with whatever is pending, possibly nothing). Every return of ``receive_batch``
        consumes it. :meth:`receive` ignores nudges. Never blocks.
        """
        self._nudged = True
        if self._lot:
            self._lot.unpark_all()

    def take_revoked(self) -> list[Failure]:
        """Return, and forget, the symbols revoked since the last call, oldest first.

        A revoked symbol is one this subscriber held until the upstream refused it (e.g. its
        re-registration after a reconnect); the subscriber no longer holds it. Each
        revocation wakes :meth:`receive_batch` as a :meth:`nudge` does, so a consumer
        calls this after every ``receive_batch`` (it is cheap when there is nothing).
        Until taken, a revocation counts in ``max_symbols``; a later subscribe of the same
        symbol replaces it. Never blocks.
        """
        if not self._revoked:
            return []
        taken = list(self._revoked.values())
        self._revoked.clear()
        return taken

    async def receive(self) -> SymbolState:
        """Return the oldest pending update, waiting for one if needed.

        Raises:
            trio.ClosedResourceError: the subscriber was closed.
            SubscriberTooSlow: a lossless subscriber overflowed.
        """
        parked = await self._wait(nudgeable=False)
        state = self._take_one()
        self._delivered += 1
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()  # a busy consumer still yields
        return state

    async def receive_batch(self) -> list[SymbolState]:
        """Wait for at least one update (or a nudge) and return every pending one, in order.

        Returns:
            The pending updates, oldest first; ``[]`` only after a :meth:`nudge`.

        Raises:
            trio.ClosedResourceError: the subscriber was closed.
            SubscriberTooSlow: a lossless subscriber overflowed.
        """
        parked = await self._wait(nudgeable=True)
        batch = self._take_all()
        self._delivered += len(batch)
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()  # a busy consumer still yields
        return batch

    def statistics(self) -> SubscriberStatistics:
        """This subscriber's counters."""
        return SubscriberStatistics(
            name=self.name,
            policy=self.policy,
            symbols=len(self._symbols),
            pending=self._pending_count(),
            delivered=self._delivered,
            conflated=self._conflated,
            too_slow=self._too_slow(),
        )

    async def wait_too_slow(self) -> None:
        """Return when this subscriber is cut off for being too slow (lossless only).

        A consumer blocked in a write never calls ``receive`` again; a watcher task awaiting
        this learns of the overflow anyway.
        """
        await trio.sleep_forever()

    async def _wait(self, *, nudgeable: bool) -> bool:
        """Wait until an update is pending (or a nudge came); return True if this parked."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._has_pending():
            self._check_usable()
            if nudgeable and self._nudged:
                break
            await self._lot.park()
            parked = True
        self._check_usable()
        if nudgeable:
            self._nudged = False
        return parked

    # The hub's side. `_offer` runs inside `publish` for every subscriber of a symbol:
    # it must never block and must stay cheap (an append and one comparison).

    def _offer(self, state: SymbolState) -> None:
        raise NotImplementedError

    def _attach(self, symbol: str) -> None:
        self._symbols.add(symbol)
        if self._revoked:
            self._revoked.pop(symbol, None)  # held again: the consumer is told by the subscribe

    def _detach(self, symbol: str) -> None:
        self._symbols.discard(symbol)

    def _revoke(self, failure: Failure) -> None:
        """Keep ``failure`` for the consumer and wake it (the hub detaches the symbol)."""
        self._revoked[failure.symbol] = failure
        self.nudge()

    def _slots_used(self) -> int:
        """Symbols held plus revocations not yet taken: at most ``max_symbols``."""
        return len(self._symbols) + len(self._revoked)

    # What each policy provides to the shared receive path.

    def _has_pending(self) -> bool:
        return False

    def _take_one(self) -> SymbolState:
        raise NotImplementedError

    def _take_all(self) -> list[SymbolState]:
        return []

    def _pending_count(self) -> int:
        return 0

    def _too_slow(self) -> bool:
        return False

    def _release(self) -> None:
        """Free whatever is pending (the subscriber was closed)."""

    def _check_usable(self) -> None:
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("subscriber is closed")


class ConflatingSubscriber(Subscriber):
    """Every update while the consumer keeps up; the latest per symbol when it falls behind.

    Pending updates are a *head* (the collapsed backlog: one latest state per symbol, in
    first-arrival order) followed by a *tail* (updates queued since, in arrival order). A
    collapse folds the tail into the head, so its cost is amortised over the updates that
    filled the tail, and with ``max_backlog=0`` it is the old strict conflation.

    Args:
        hub: The hub that offers updates.
        name: For statistics and logs.
        max_symbols: How many symbols it may hold.
        max_backlog: Queued updates (tail) beyond which the backlog collapses; 0 keeps at
            most one pending update per symbol.
        max_delay: Seconds of feed time (``received_ns``) the tail may span before the
            backlog collapses; ``math.inf`` disables this rule.
    """

    policy = Policy.CONFLATE

    def __init__(
        self,
        hub: Hub,
        name: str,
        max_symbols: int,
        *,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        if max_backlog < 0:
            raise ValueError(f"max_backlog must be >= 0, not {max_backlog}")
        if not max_delay >= 0:  # also refuses NaN
            raise ValueError(f"max_delay must be >= 0 seconds, not {max_delay}")
        super().__init__(hub, name, max_symbols)
        self.max_backlog = max_backlog
        self.max_delay = max_delay
        self._max_delay_ns = -_NO_WINDOW if math.isinf(max_delay) else round(max_delay * 1e9)
        self._head: dict[str, SymbolState] = {}
        self._tail: list[SymbolState] = []
        # received_ns past which an offer collapses the backlog: the tail's first update's
        # received_ns + max_delay, or _NO_WINDOW while the tail is empty.
        self._window_end = _NO_WINDOW

    def _offer(self, state: SymbolState) -> None:
        tail = self._tail
        tail.append(state)
        if len(tail) > self.max_backlog or state.received_ns > self._window_end:
            self._rare_offer(state)

    def _rare_offer(self, state: SymbolState) -> None:
        """The tail just got its first update, or the backlog must collapse."""
        if self._window_end == _NO_WINDOW:  # the first: the window starts with it
            self._window_end = state.received_ns + self._max_delay_ns
            if self._lot:  # a receiver parks only while nothing is pending
                self._lot.unpark_all()
            if len(self._tail) <= self.max_backlog:
                return
        self._collapse()

    def _collapse(self) -> None:
        """Fold the tail into the head: the latest state per symbol, first arrival first."""
        head = self._head
        before = len(head) + len(self._tail)
        for state in self._tail:
            head[state.symbol] = state  # an existing key keeps its place: arrival order holds
        self._conflated += before - len(head)
        self._tail.clear()
        self._window_end = _NO_WINDOW

    def _detach(self, symbol: str) -> None:
        super()._detach(symbol)
        self._head.pop(symbol, None)
        if any(state.symbol == symbol for state in self._tail):
            self._tail = [state for state in self._tail if state.symbol != symbol]
            self._restart_window()

    def _restart_window(self) -> None:
        tail = self._tail
        self._window_end = tail[0].received_ns + self._max_delay_ns if tail else _NO_WINDOW

    def _has_pending(self) -> bool:
        return bool(self._tail or self._head)

    def _take_one(self) -> SymbolState:
        head = self._head
        if head:
            return head.pop(next(iter(head)))
        state = self._tail.pop(0)  # at most max_backlog long: a short move
        self._restart_window()
        return state

    def _take_all(self) -> list[SymbolState]:
        batch = self._tail
        self._tail = []
        self._window_end = _NO_WINDOW
        if self._head:  # only after a collapse
            batch[:0] = self._head.values()
            self._head.clear()
        return batch

    def _pending_count(self) -> int:
        return len(self._head) + len(self._tail)

    def _release(self) -> None:
        self._head.clear()
        self._tail = []
        self._window_end = _NO_WINDOW


class StrictConflatingSubscriber(ConflatingSubscriber):
    """A :class:`ConflatingSubscriber` with ``max_backlog=0``: one pending update per symbol.

    The same behaviour as the generic class with that setting, with an ``_offer`` that
    writes straight into the head instead of collapsing a one-update tail every time.
    """

    def __init__(
        self, hub: Hub, name: str, max_symbols: int, *, max_delay: float = DEFAULT_MAX_DELAY
    ) -> None:
        super().__init__(hub, name, max_symbols, max_backlog=0, max_delay=max_delay)

    def _offer(self, state: SymbolState) -> None:
        head = self._head
        symbol = state.symbol
        if symbol in head:
            self._conflated += 1
        elif not head and self._lot:  # a receiver parks only while nothing is pending
            self._lot.unpark_all()
        head[symbol] = state  # an existing key keeps its place: arrival order holds


class LosslessSubscriber(Subscriber):
    """Every update, in a buffer of at most ``capacity``; overflow ends the stream.

    Args:
        hub: The hub that offers updates.
        name: For statistics and logs.
        max_symbols: How many symbols it may hold.
        capacity: Pending updates beyond which the consumer is cut off (at least 1).
    """

    policy = Policy.LOSSLESS

    def __init__(self, hub: Hub, name: str, max_symbols: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        super().__init__(hub, name, max_symbols)
        self.capacity = capacity
        self._buffer: collections.deque[SymbolState] = collections.deque()
        # The common path of `_offer` is one comparison against this: 0 while the buffer is
        # empty (so its first update takes the slow path and wakes the receiver), else
        # `capacity` (so an overflow takes it).
        self._room = 0
        self._overflowed = False
        self._cut_off = trio.Event()

    def _offer(self, state: SymbolState) -> None:
        buffer = self._buffer
        buffer.append(state)
        if len(buffer) > self._room:
            self._rare_offer()

    def _rare_offer(self) -> None:
        """The buffer just got its first update, overflowed, or is already cut off."""
        buffer = self._buffer
        if self._overflowed:
            buffer.clear()
        elif len(buffer) > self.capacity:
            self._overflowed = True
            self._release()  # the stream is over: free its memory now
            self._cut_off.set()
            # No receiver to wake: one parks only while the buffer is empty, and the offer
            # that ended that woke it. It raises SubscriberTooSlow when it runs.
        else:
            self._room = self.capacity
            if self._lot:  # a receiver parks only while nothing is pending
                self._lot.unpark_all()

    async def wait_too_slow(self) -> None:
        await self._cut_off.wait()

    def _detach(self, symbol: str) -> None:
        super()._detach(symbol)
        # A resubscribe's snapshot must not repeat, nor precede, what is still queued.
        if any(state.symbol == symbol for state in self._buffer):
            self._buffer = collections.deque(s for s in self._buffer if s.symbol != symbol)
            if not self._buffer:
                self._room = 0

    def _has_pending(self) -> bool:
        return bool(self._buffer)

    def _take_one(self) -> SymbolState:
        state = self._buffer.popleft()
        if not self._buffer:
            self._room = 0
        return state

    def _take_all(self) -> list[SymbolState]:
        batch = list(self._buffer)
        self._buffer.clear()
        self._room = 0
        return batch

    def _pending_count(self) -> int:
        return len(self._buffer)

    def _too_slow(self) -> bool:
        return self._overflowed

    def _release(self) -> None:
        self._buffer.clear()
        self._room = 0

    def _check_usable(self) -> None:
        if self._overflowed:
            raise SubscriberTooSlow(
                f"subscriber {self.name!r} fell {self.capacity} updates behind and was cut off"
            )
        self._check_open()


class DiscardingSubscriber(Subscriber):
    """Holds symbols without receiving anything (server-side REST subscriptions)."""

    policy = Policy.DISCARD

    def _offer(self, state: SymbolState) -> None:
        pass

    def _revoke(self, failure: Failure) -> None:
        pass  # nobody consumes it: the hub logged the revocation
