"""The node that holds an upstream session: a hub of its own, fed by the cluster's demand.

While a node holds a session's lease it runs the real provider behind a hub of its own (the
*holder hub*). Each node's demand enters that hub like any subscriber: one ``DISCARD``
subscriber per node holds the symbols the node registered, so the hub's rules (one upstream
slot per symbol however many nodes hold it, the quota, linger, acknowledgements) hold for
the whole cluster at once, in one place. Every new state the holder hub makes is written to
Redis once, fenced (:class:`StatePublisher`); the nodes fan it out to their own clients.

Demand (:class:`DemandReconciler`): each node keeps its set in Redis and announces changes
on the session's channel, naming the symbols it awaits answers for. The holder reconciles a
node's subscriber with its set on every announcement and every ``period`` seconds, answers
the awaited symbols, forwards revocations, and drops the demand of a node whose heartbeat
expired — its codes are then released upstream after the hub's linger.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import trio
from coredis.commands.script import Script

from ..clock import WallClock
from ..hub import Hub, Policy, Subscriber
from ..model import SymbolState
from ..upstream.contract import Provider
from .keys import Keys
from .lease import Fence, fenced_publish
from .messages import Answer, MalformedMessage, decode_demand, encode
from .redis import as_text, describe_failure, is_redis_failure, open_pubsub
from .wire import encode_state

log = logging.getLogger(__name__)


class StatePublisher:
    """Writes the holder hub's states to Redis, fenced, in batches, never blocking a tick.

    ``offer`` is the hub's ``on_state``: one dict store. A task writes what accumulated
    while the previous write was in flight, latest state per symbol (first arrival order);
    a state replaced before it was written is counted in ``conflated``. Memory is bounded by
    the symbols the hub holds. A refused write (the lease moved on) ends the holding.
    """

    def __init__(self, redis: Any, keys: Keys, fence: Fence, clock_ns: Callable[[], int]) -> None:
        self._redis = redis
        self._keys = keys
        self._fence = fence
        self._clock_ns = clock_ns
        self._pending: dict[str, SymbolState] = {}
        self._wake = trio.Event()
        self.published = 0
        self.conflated = 0
        self.batches = 0
        self.write_errors = 0

    def offer(self, state: SymbolState) -> None:
        pending = self._pending
        if state.symbol in pending:
            self.conflated += 1
        pending[state.symbol] = state
        self._wake.set()

    async def run(self) -> None:
        """Write until a write is refused (the lease moved on): then return."""
        failures = 0
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._pending = self._pending, {}
            try:
                if not await self._write(batch.values()):
                    log.warning("%s: a write was refused: the lease moved on", self._fence.name)
                    return
                failures = 0
            except Exception as error:
                if not is_redis_failure(error):
                    raise
                # Keep what was not written (newer states win) and try again shortly; the
                # lease's deadline stops this holding if Redis stays away.
                self._pending = batch | self._pending
                self.write_errors += 1
                failures += 1
                log.debug("%s: write failed: %s", self._fence.name, describe_failure(error))
                self._wake.set()
                await trio.sleep(min(0.05 * 2**failures, 1.0))

    async def _write(self, states: Iterable[SymbolState]) -> bool:
        now = self._clock_ns()
        keys, token = self._keys, self._fence.token
        items = []
        for state in states:
            data = encode_state(state, token, now)
            items.append((keys.state(state.symbol), keys.ticks(state.symbol), data))
        if not await fenced_publish(self._redis, self._fence, items, keys=keys):
            return False
        self.published += len(items)
        self.batches += 1
        return True


# A node's demand is dropped only if its heartbeat is still missing, in one step: a node
# that beats again between the check and the delete keeps the demand it just wrote.
_DROP_SILENT_NODE: Script[bytes] = Script(
    script="""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
"""
)


@attrs.define
class _NodeDemand:
    """The holder's view of one node: its subscriber and the symbols being answered."""

    subscriber: Subscriber
    in_flight: set[str] = attrs.field(factory=set)
    refused: set[str] = attrs.field(factory=set)  # failed once: not retried until dropped


class DemandReconciler:
    """Keeps one subscriber per node in the holder hub equal to the node's demand set."""

    def __init__(
        self,
        hub: Hub,
        redis: Any,
        keys: Keys,
        session: str,
        *,
        period: float,
        max_symbols: int,
    ) -> None:
        self._hub = hub
        self._redis = redis
        self._keys = keys
        self._session = session
        self._period = period
        self._max_symbols = max_symbols
        self._nodes: dict[str, _NodeDemand] = {}
        self._nursery: trio.Nursery | None = None
        self.malformed = 0
        self.redis_errors = 0

    def demand(self) -> dict[str, int]:
        """Symbols held per node (for health)."""
        return {node: len(d.subscriber.symbols) for node, d in self._nodes.items()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        channel = self._keys.demand_changed(self._session)
        async with open_pubsub(self._redis, [channel]) as pubsub, trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reconcile_periodically)
            task_status.started()
            while True:
                # Not ``async for``: it ends for good when the PubSub reconnects (edge.py).
                message = await pubsub.get_message()
                if message is not None and message["type"] == "message":
                    await self._guarded(self._announced(message["data"]))

    async def _announced(self, data: bytes | str) -> None:
        try:
            change = decode_demand(data)
        except MalformedMessage:
            self.malformed += 1
            return
        await self._reconcile_node(change.node, awaited=change.subscribe)

    async def _reconcile_periodically(self) -> None:
        while True:
            await self._guarded(self.reconcile_all())
            await trio.sleep(self._period)

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run ``work``; a Redis failure is logged and left to the next period to repair."""
        try:
            await work
        except Exception as error:
            if not is_redis_failure(error):
                raise
            self.redis_errors += 1
            log.debug("%s: demand: %s", self._session, describe_failure(error))

    async def reconcile_all(self) -> None:
        """Every node with demand: keep it, or drop it when its heartbeat expired."""
        members = await self._redis.smembers(self._keys.demanders(self._session))
        for node in {as_text(m) for m in members} | set(self._nodes):
            await self._reconcile_node(node)

    async def _reconcile_node(self, node: str, awaited: Iterable[str] = ()) -> None:
        keys, redis = self._keys, self._redis
        if not await redis.exists([keys.node(node)]):
            await self._drop(node)
            return
        wanted = {as_text(s) for s in await redis.smembers(keys.demand(self._session, node))}
        demand = self._node(node)
        demand.refused &= wanted
        await self._answer(node, self._revocations(demand))
        awaited = set(awaited) & wanted
        # A symbol the node asks for now is a new request, tried again like a client's
        # second subscribe in one process: an earlier refusal (kept only so that periodic
        # reconciles do not retry it while the node's set still lists it) is no answer.
        demand.refused -= awaited
        held = demand.subscriber.symbols
        released = held - wanted - demand.in_flight
        if released:
            self._hub.unsubscribe(demand.subscriber, released)
        await self._answer(node, [Answer(s, True) for s in awaited & held])
        new = wanted - held - demand.in_flight - demand.refused
        if new and self._nursery is not None:
            demand.in_flight |= new
            self._nursery.start_soon(self._subscribe, node, demand, sorted(new))

    async def _subscribe(self, node: str, demand: _NodeDemand, symbols: list[str]) -> None:
        try:
            result = await self._hub.subscribe(demand.subscriber, symbols)
        finally:
            demand.in_flight.difference_update(symbols)
        demand.refused.update(f.symbol for f in result.failed)
        answers = [Answer(s, True) for s in result.accepted]
        await self._guarded(self._answer(node, answers + [Answer.failed(f) for f in result.failed]))

    def _revocations(self, demand: _NodeDemand) -> list[Answer]:
        revoked = demand.subscriber.take_revoked()
        demand.refused.update(f.symbol for f in revoked)
        return [Answer.failed(f) for f in revoked]

    def _node(self, node: str) -> _NodeDemand:
        demand = self._nodes.get(node)
        if demand is None:
            subscriber = self._hub.subscriber(
                Policy.DISCARD, name=f"node {node}", max_symbols=self._max_symbols
            )
            demand = self._nodes[node] = _NodeDemand(subscriber)
        return demand

    async def _drop(self, node: str) -> None:
        keys = self._keys
        dropped: object = await _DROP_SILENT_NODE(
            keys=[keys.node(node), keys.demanders(self._session), keys.demand(self._session, node)],
            args=[node],
            client=self._redis,
        )
        if dropped != 1:
            return  # it beat again in between: its demand stands
        demand = self._nodes.pop(node, None)
        if demand is not None:
            log.info("%s: node %s stopped beating; its demand is released", self._session, node)
            demand.subscriber.close()  # its symbols linger, then go upstream

    async def _answer(self, node: str, answers: list[Answer]) -> None:
        if answers:
            await self._redis.publish(self._keys.answers(self._session, node), encode(answers))


@attrs.frozen
class Holding:
    """A session this node holds: its hub, its publisher and its demand."""

    hub: Hub
    publisher: StatePublisher
    reconciler: DemandReconciler

    def usage(self) -> tuple[int, int]:
        """Symbols held upstream for the whole cluster, and the quota."""
        (upstream,) = self.hub.statistics().upstream
        return upstream.used, upstream.quota


@attrs.frozen
class HolderSettings:
    linger: float
    ack_timeout: float
    period: float  # how often every node's demand is checked


async def hold_session(
    provider: Provider,
    fence: Fence,
    redis: Any,
    keys: Keys,
    settings: HolderSettings,
    *,
    task_status: trio.TaskStatus[Holding] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the cluster's demand for ``provider`` while the lease ``fence`` holds."""
    clock = WallClock()
    publisher = StatePublisher(redis, keys, fence, clock.now_ns)
    max_symbols = max(provider.quota, 1) * 4
    hub = Hub(
        [provider],
        clock=clock,
        linger=settings.linger,
        ack_timeout=settings.ack_timeout,
        max_symbols_per_subscriber=max_symbols,
        on_state=publisher.offer,
    )
    reconciler = DemandReconciler(
        hub, redis, keys, provider.name, period=settings.period, max_symbols=max_symbols
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await nursery.start(reconciler.run)
        log.info("%s: held by this node (fence %d)", provider.name, fence.token)
        task_status.started(Holding(hub, publisher, reconciler))
        await publisher.run()  # returns when the lease moved on
        nursery.cancel_scope.cancel()
