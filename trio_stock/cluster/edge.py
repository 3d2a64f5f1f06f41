"""On a client-serving node, an upstream session held somewhere in the cluster: a provider.

The node's hub runs a :class:`ClusterProvider` per market exactly as it runs KIS or FMP: it
sends ``Subscribe``/``Unsubscribe`` and gets ``registered``/``rejected``/``revoked`` and
ticks back. Behind the contract (DESIGN.md: "the bus can be one more provider"):

- a subscribe joins the symbol's channel, adds the symbol to this node's demand set and
  announces it to the holder, which answers once its own upstream acknowledged; then the
  latest state is read from Redis, so the node's clients get a snapshot first;
- states arrive on the symbols' channels and become ticks of the node's hub
  (:func:`~.wire.ticks_of`); per symbol, a state not newer than the last one (by fence,
  epoch and seq) is dropped, and a new holder or upstream session is a new epoch;
- the reader never waits on the hub, and Redis never waits on the reader: coredis buffers
  what arrives, and this task drains it at once into the hub's synchronous ``publish``.

The node's heartbeat (:mod:`.node`) rewrites the demand set, so a lost write or a Redis
restart heals within one period; :meth:`ClusterProvider.resync` re-announces what waits for
an answer and re-reads every snapshot after Redis came back.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from typing import Any

import trio

from ..model import Market
from ..results import FailureReason
from ..upstream.contract import (
    ProviderState,
    ProviderStatistics,
    ProviderStatus,
    Subscribe,
    Unsubscribe,
    UpstreamLink,
)
from .keys import Keys
from .messages import DemandChanged, MalformedMessage, decode_answers, encode
from .redis import is_redis_failure, open_pubsub
from .statistics import HopStatistics
from .wire import MalformedState, RemoteState, decode_state, ticks_of

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, math.inf)


class ClusterProvider:
    """A session held by some node of the cluster, reached through Redis."""

    def __init__(
        self,
        redis: Any,
        keys: Keys,
        node: str,
        *,
        session: str,
        kind: str,
        market: Market,
        quota: int,
        live: bool,
    ) -> None:
        self.name = session
        self.market = market
        self.quota = quota
        self._redis = redis
        self._keys = keys
        self._node = node
        self._status = ProviderStatus(session, kind, market, live)
        self._pending: dict[str, Subscribe] = {}  # awaiting the holder's answer
        self._held: set[str] = set()  # registered by the holder
        self._order: dict[str, tuple[int, int, int]] = {}  # last state forwarded, per symbol
        self._trades: dict[str, int] = {}  # trade_seq of the last trade forwarded
        self._session: tuple[int, int] | None = None  # (fence, epoch) of the newest state
        self._pubsub: Any = None
        self._nursery: trio.Nursery | None = None
        self._confirmations = 0  # of the answers channel: more than one is a reconnect
        self._link: UpstreamLink | None = None
        self.stale = False  # Redis is unreachable: the data may be old
        self.lag_counts = [0] * len(LAG_BUCKETS)  # the Redis hop (published to read)
        self.lag_sum = 0.0
        self.dropped_old = 0
        self.received = 0

    # ---- the provider contract ------------------------------------------------------

    def statistics(self) -> ProviderStatistics:
        status = self._status
        status.registrations = len(self._held)
        return status.snapshot(self.quota)

    @property
    def demand(self) -> frozenset[str]:
        """The symbols this node asks the cluster for (held or awaiting an answer)."""
        return frozenset(self._held | self._pending.keys())

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._link = link
        channel = self._keys.answers(self.name, self._node)
        # Subscribe confirmations are read too: a second one for the answers channel means
        # the PubSub reconnected by itself, and what was published meanwhile is lost.
        async with (
            open_pubsub(self._redis, [channel], ignore_subscribe_messages=False) as pubsub,
            trio.open_nursery() as nursery,
        ):
            self._pubsub = pubsub
            self._nursery = nursery
            self._status.state = ProviderState.CONNECTED
            self._status.connects += 1
            link.session_started()
            nursery.start_soon(self._read, pubsub, channel)
            task_status.started()
            async for command in link.commands:
                try:
                    await self._apply(command)
                except Exception as error:  # Redis down: the heartbeat heals the demand
                    if not is_redis_failure(error):
                        raise
                    self._failed(command, error)

    async def _apply(self, command: Subscribe | Unsubscribe) -> None:
        keys, redis, symbol = self._keys, self._redis, command.symbol
        if isinstance(command, Subscribe):
            self._pending[symbol] = command
            await self._pubsub.subscribe(keys.ticks(symbol))
            await self._write_demand([symbol])
        else:
            self._pending.pop(symbol, None)
            self._held.discard(symbol)
            self._forget(symbol)
            await self._pubsub.unsubscribe(keys.ticks(symbol))
            await redis.srem(keys.demand(self.name, self._node), [symbol])
            await self._announce(())

    def _failed(self, command: Subscribe | Unsubscribe, error: Exception) -> None:
        log.warning("%s: Redis: %s", self.name, error)
        self._status.last_error = f"redis: {type(error).__name__}"
        if isinstance(command, Subscribe) and self._pending.pop(command.symbol, None) is not None:
            assert self._link is not None
            self._link.rejected(command, FailureReason.UNAVAILABLE, "cluster store unreachable")

    async def _write_demand(self, awaited: list[str]) -> None:
        """Add ``awaited`` to this node's demand (the heartbeat rewrites the whole set)."""
        keys, node = self._keys, self._node
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.demand(self.name, node), awaited)
            pipe.sadd(keys.demanders(self.name), [node])
        await self._announce(awaited)

    async def _announce(self, awaited: list[str] | tuple[str, ...]) -> None:
        message = encode(DemandChanged(self._node, tuple(awaited)))
        await self._redis.publish(self._keys.demand_changed(self.name), message)

    # ---- what the node's heartbeat calls ---------------------------------------------

    async def refresh_demand(self) -> None:
        """Rewrite this node's demand set exactly (heals lost writes and Redis restarts)."""
        keys, node, demand = self._keys, self._node, list(self.demand)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete([keys.demand(self.name, node)])
            if demand:
                pipe.sadd(keys.demand(self.name, node), demand)
                pipe.sadd(keys.demanders(self.name), [node])

    async def _resync_after_reconnect(self) -> None:
        log.info("%s: the cluster's pub/sub reconnected; re-reading snapshots", self.name)
        try:
            await self.resync()
        except Exception as error:
            if not is_redis_failure(error):
                raise
            # Redis went away again: the node's heartbeat resyncs once it is back.

    async def resync(self) -> None:
        """Redis is back: ask again for what awaits an answer, re-read every snapshot."""
        self._order.clear()
        self._session = None
        await self.refresh_demand()
        await self._announce(sorted(self._pending))
        for symbol in sorted(self._held):
            await self._snapshot(symbol)

    def hop_statistics(self) -> HopStatistics:
        return HopStatistics(
            session=self.name,
            stale=self.stale,
            received=self.received,
            dropped_old=self.dropped_old,
            lag_buckets=LAG_BUCKETS,
            lag_counts=tuple(itertools.accumulate(self.lag_counts)),
            lag_sum=self.lag_sum,
        )

    def set_stale(self, stale: bool) -> None:
        self.stale = stale
        self._status.state = ProviderState.BACKING_OFF if stale else ProviderState.CONNECTED
        self._status.detail = "cluster store unreachable; prices may be stale" if stale else None

    # ---- reading ------------------------------------------------------------------------

    async def _read(self, pubsub: Any, answers: str) -> None:
        # The answers channel's name as the PubSub may report it, so that telling it from
        # the tick channels costs no decode per state.
        answer_channel = frozenset({answers, answers.encode()})
        while True:
            # Not ``async for``: coredis's iterator ends for good when the PubSub reconnects
            # after Redis went away (its cleanup clears the event ``__anext__`` checks), while
            # ``get_message`` goes on reading the same stream across reconnects.
            message = await pubsub.get_message()
            if message is None:
                continue
            if message["type"] == "subscribe" and message["channel"] in answer_channel:
                self._confirmations += 1
                if self._confirmations > 1 and self._nursery is not None:
                    self._nursery.start_soon(self._resync_after_reconnect)
                continue
            if message["type"] != "message":
                continue
            self._status.messages += 1
            if message["channel"] in answer_channel:
                await self._answered(message["data"])
            else:
                self._received(message["data"])

    async def _answered(self, data: bytes | str) -> None:
        assert self._link is not None
        try:
            answers = decode_answers(data)
        except MalformedMessage:
            self._status.malformed += 1
            return
        for answer in answers:
            command = self._pending.pop(answer.symbol, None)
            if answer.ok and command is not None:
                self._held.add(answer.symbol)
                self._link.registered(command)
                await self._snapshot(answer.symbol)
            elif not answer.ok:
                reason = answer.reason or FailureReason.REJECTED
                if command is not None:
                    self._link.rejected(command, reason, answer.detail)
                elif answer.symbol in self._held:
                    self._held.discard(answer.symbol)
                    self._link.revoked(answer.symbol, reason, answer.detail)
                else:
                    continue
                self._forget(answer.symbol)
                await self._pubsub.unsubscribe(self._keys.ticks(answer.symbol))

    async def _snapshot(self, symbol: str) -> None:
        try:
            data = await self._redis.get(self._keys.state(symbol))
        except Exception as error:
            if not is_redis_failure(error):
                raise
            return  # the resync after Redis comes back reads it again
        if data is not None:
            self._received(data)

    def _received(self, data: bytes | str) -> None:
        self.received += 1
        try:
            state = decode_state(data.encode() if isinstance(data, str) else data)
        except MalformedState:
            self._status.malformed += 1
            return
        if state.symbol not in self._held:
            return  # released meanwhile, or not yet answered (the snapshot follows)
        last = self._order.get(state.symbol)
        if last is not None and state.order <= last:
            self.dropped_old += 1
            return
        self._forward(state)

    def _forward(self, state: RemoteState) -> None:
        assert self._link is not None
        link = self._link
        self._order[state.symbol] = state.order
        session = (state.fence, state.epoch)
        if self._session is None or session > self._session:
            if self._session is not None:
                link.session_started()
                self._trades.clear()  # trade_seq counts anew in a new holder's hub
            self._session = session
        now = link.now_ns()
        self._status.last_message_at = now / 1e9
        self._count_lag((now - state.published_ns) / 1e9)
        seen = self._trades.get(state.symbol) == state.trade_seq
        for tick in ticks_of(state, seen):
            link.publish(tick)
        self._trades[state.symbol] = state.trade_seq

    def _forget(self, symbol: str) -> None:
        self._order.pop(symbol, None)
        self._trades.pop(symbol, None)

    def _count_lag(self, seconds: float) -> None:
        self.lag_sum += max(seconds, 0.0)
        self.lag_counts[bisect.bisect_left(LAG_BUCKETS, seconds)] += 1  # first bound ≥ it
