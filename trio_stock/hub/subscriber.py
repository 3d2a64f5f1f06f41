"""Subscriber endpoints: what a client task receives updates from.

A :class:`Subscriber` is a ``trio.abc.ReceiveChannel`` of :class:`SymbolState`. The hub
offers it updates synchronously from ``publish``; the policy decides what happens when the
consumer is slower than the feed:

- ``CONFLATE`` (default): at most one pending update per symbol, latest wins, first-arrival
  order kept. Memory is bounded by the number of symbols held, never by the tick rate.
- ``LOSSLESS``: every update, in a bounded ``trio.open_memory_channel``. When it is full
  the consumer is too slow: its stream ends with :class:`SubscriberTooSlow` (the server
  closes such a client with 1013) and memory never grows past the bound.
- ``DISCARD``: holds symbols upstream and warm in the cache without receiving anything
  (the server's own REST subscriptions).

Per symbol, a subscriber never receives an older state after a newer one.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs
import trio

from ..errors import SubscriberTooSlow
from ..model import SymbolState

if TYPE_CHECKING:
    from .hub import Hub

DEFAULT_LOSSLESS_CAPACITY = 1024  # updates; ~1 KiB each as encoded text → ~1 MiB per client


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
        self._hub = hub
        self._symbols: set[str] = set()
        self._closed = False
        self._delivered = 0
        self._conflated = 0

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
        self._wake_receivers()

    async def aclose(self) -> None:
        """Close (synchronously) and checkpoint."""
        self.close()
        await trio.lowlevel.checkpoint()

    async def receive_batch(self) -> list[SymbolState]:
        """Wait for at least one update and return every pending one, in order.

        Raises:
            trio.ClosedResourceError: the subscriber was closed.
            SubscriberTooSlow: a lossless subscriber overflowed.
        """
        raise NotImplementedError

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

    # The hub's side. `_offer` runs inside `publish` for every subscriber of a symbol:
    # it must never block and must stay cheap.

    async def wait_too_slow(self) -> None:
        """Return when this subscriber is cut off for being too slow (lossless only).

        A consumer blocked in a write never calls ``receive`` again; a watcher task awaiting
        this learns of the overflow anyway.
        """
        await trio.sleep_forever()

    def _offer(self, state: SymbolState) -> None:
        raise NotImplementedError

    def _attach(self, symbol: str) -> None:
        self._symbols.add(symbol)

    def _detach(self, symbol: str) -> None:
        self._symbols.discard(symbol)

    def _pending_count(self) -> int:
        return 0

    def _too_slow(self) -> bool:
        return False

    def _wake_receivers(self) -> None:
        pass

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("subscriber is closed")


class ConflatingSubscriber(Subscriber):
    """At most one pending update per symbol; the latest wins, first-arrival order kept."""

    policy = Policy.CONFLATE

    def __init__(self, hub: Hub, name: str, max_symbols: int) -> None:
        super().__init__(hub, name, max_symbols)
        self._pending: dict[str, SymbolState] = {}
        self._lot = trio.lowlevel.ParkingLot()

    def _offer(self, state: SymbolState) -> None:
        pending = self._pending
        if state.symbol in pending:
            self._conflated += 1
        pending[state.symbol] = state  # an existing key keeps its place: arrival order holds
        if self._lot:
            self._lot.unpark_all()

    def _detach(self, symbol: str) -> None:
        super()._detach(symbol)
        self._pending.pop(symbol, None)

    def _pending_count(self) -> int:
        return len(self._pending)

    def _wake_receivers(self) -> None:
        self._pending.clear()
        self._lot.unpark_all()

    async def _wait_for_pending(self) -> bool:
        """Wait until something is pending; return True if this already yielded."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._pending:
            self._check_open()
            await self._lot.park()
            parked = True
        self._check_open()
        return parked

    async def receive(self) -> SymbolState:
        """Return the oldest pending update, waiting for one if needed."""
        parked = await self._wait_for_pending()
        state = self._pending.pop(next(iter(self._pending)))
        self._delivered += 1
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return state

    async def receive_batch(self) -> list[SymbolState]:
        parked = await self._wait_for_pending()
        batch = list(self._pending.values())
        self._pending.clear()
        self._delivered += len(batch)
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return batch


class LosslessSubscriber(Subscriber):
    """Every update, through a bounded memory channel; overflow ends the stream."""

    policy = Policy.LOSSLESS

    def __init__(self, hub: Hub, name: str, max_symbols: int, capacity: int) -> None:
        super().__init__(hub, name, max_symbols)
        self.capacity = capacity
        self._send, self._recv = trio.open_memory_channel[SymbolState](capacity)
        self._overflowed = False
        self._cut_off = trio.Event()
        # Last seq delivered per symbol in the current subscription. A memory channel cannot
        # take back what an unsubscribe made stale, so receive skips anything not newer:
        # no repeat after a resubscribe's snapshot, never an older state.
        self._delivered_seq: dict[str, int] = {}

    def _offer(self, state: SymbolState) -> None:
        if self._overflowed:
            return
        try:
            self._send.send_nowait(state)
        except trio.WouldBlock:
            self._overflowed = True
            self._send.close()
            self._discard_buffer()  # the stream is over: free its memory now
            self._cut_off.set()
        except trio.ClosedResourceError:
            pass  # closed by the consumer; the hub detaches it right away

    async def wait_too_slow(self) -> None:
        await self._cut_off.wait()

    def _discard_buffer(self) -> None:
        while True:
            try:
                self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    def _detach(self, symbol: str) -> None:
        super()._detach(symbol)
        self._delivered_seq.pop(symbol, None)

    def _fresh(self, state: SymbolState) -> bool:
        if state.symbol not in self._symbols or state.seq <= self._delivered_seq.get(
            state.symbol, 0
        ):
            return False
        self._delivered_seq[state.symbol] = state.seq
        return True

    def _pending_count(self) -> int:
        return self._recv.statistics().current_buffer_used

    def _too_slow(self) -> bool:
        return self._overflowed

    def _wake_receivers(self) -> None:
        self._send.close()
        self._recv.close()

    def _raise_if_too_slow(self) -> None:
        if self._overflowed:
            raise SubscriberTooSlow(
                f"subscriber {self.name!r} fell {self.capacity} updates behind and was cut off"
            )

    async def receive(self) -> SymbolState:
        """Return the next update of a symbol still held, waiting for one if needed."""
        while True:
            self._raise_if_too_slow()
            self._check_open()
            try:
                state = await self._recv.receive()
            except trio.EndOfChannel:
                continue  # the send side closed: overflow (raised above) or close
            if self._fresh(state):
                self._delivered += 1
                return state

    async def receive_batch(self) -> list[SymbolState]:
        batch = [await self.receive()]
        while True:
            try:
                state = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if self._fresh(state):
                batch.append(state)
        self._delivered += len(batch) - 1
        return batch


class DiscardingSubscriber(Subscriber):
    """Holds symbols without receiving anything (server-side REST subscriptions)."""

    policy = Policy.DISCARD

    def __init__(self, hub: Hub, name: str, max_symbols: int) -> None:
        super().__init__(hub, name, max_symbols)
        self._lot = trio.lowlevel.ParkingLot()

    def _offer(self, state: SymbolState) -> None:
        pass

    def _wake_receivers(self) -> None:
        self._lot.unpark_all()

    async def receive(self) -> SymbolState:
        """Never returns an update; raises once closed."""
        while True:
            self._check_open()
            await self._lot.park()

    async def receive_batch(self) -> list[SymbolState]:
        return [await self.receive()]
