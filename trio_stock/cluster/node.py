"""One gateway process in a cluster: its heartbeat, its demand, and the sessions it may hold.

A node beats every ``node_ttl / 3`` seconds: it renews its key (which expires after
``node_ttl``: the holders then drop its demand) and rewrites its demand sets exactly, so a
lost write or a restarted Redis heals within one beat. A beat that fails marks the node's
data stale (health, and the providers' state) while clients stay connected; the first beat
that succeeds again makes every cluster provider re-announce what it awaits and re-read its
snapshots.

Roles: ``all`` serves clients and may hold upstream sessions, ``edge`` only serves clients,
``ingest`` only holds sessions (and serves health and metrics). A node that may hold runs,
per session, a standby that takes the lease when it is free (:mod:`.lease`) and then serves
the cluster's demand for it (:mod:`.holder`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import orjson
import trio

from ..upstream.contract import Provider
from .edge import ClusterProvider
from .holder import HolderSettings, Holding, hold_session
from .keys import Keys
from .lease import Fence, Lease, hold_while_leased
from .redis import MAX_IDLE_TIME, describe_failure, is_redis_failure, redact_url
from .role import Role
from .statistics import LeaseStatistics, NodeStatistics

log = logging.getLogger(__name__)


def new_node_id() -> str:
    """A node's name: host, process and a random part, unique across restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


@attrs.frozen
class ClusterSettings:
    role: Role = Role.ALL
    node_id: str = attrs.field(factory=new_node_id)
    node_ttl: float = 30.0  # a silent node's demand expires after this
    lease_ttl: float = 10.0  # a silent holder's sessions are taken over after this
    lease_retry: float = 1.0  # how often a standby tries a free lease (with jitter)
    prefix: str = "trio_stock"


class ClusterNode:
    """The node's beat, its standbys and holders; ``statistics()`` for health and metrics."""

    def __init__(
        self,
        redis: Any,
        redis_url: str,
        settings: ClusterSettings,
        edges: Sequence[ClusterProvider],
        sessions: Sequence[str],
        holder: HolderSettings,
        provider_factory: Callable[[str], Provider],
    ) -> None:
        self.redis = redis
        self.redis_url = redis_url
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.edges = list(edges)
        self._sessions = list(sessions)
        self._holder = holder
        self._provider_factory = provider_factory
        self._connected = True
        self._last_error: str | None = None
        self._beats = 0
        self._held: dict[str, tuple[Fence, float]] = {}
        self._leases: dict[str, Lease] = {}
        self._holdings: dict[str, Holding] = {}

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await self._beat()
            nursery.start_soon(self._beat_forever)
            if self.settings.role.holds_sessions:
                for session in self._sessions:
                    await nursery.start(self._stand_by, session)
            task_status.started()

    # ---- heartbeat --------------------------------------------------------------------

    @property
    def beat_period(self) -> float:
        # Beats also keep the node's pooled connection busier than MAX_IDLE_TIME, after which
        # coredis's reader closes an idle connection (sometimes just as a beat takes it).
        return min(self.settings.node_ttl / 3, MAX_IDLE_TIME / 2)

    async def _beat_forever(self) -> None:
        while True:
            await trio.sleep(self.beat_period)
            await self._beat()

    async def _beat(self) -> None:
        try:
            try:
                await self._beat_once()
            except Exception as error:
                if not is_redis_failure(error):
                    raise
                # One failed command is not an outage (a connection closed under it): the
                # node is stale only if an immediate second try fails too.
                await self._beat_once()
        except Exception as error:
            if not is_redis_failure(error):
                raise
            self._lost(error)
            return
        if not self._connected:
            log.info("cluster store reachable again; demand and snapshots restored")
        self._connected = True
        self._beats += 1
        for edge in self.edges:
            edge.set_stale(False)

    async def _beat_once(self) -> None:
        settings, keys = self.settings, self.keys
        info = orjson.dumps({"role": settings.role.value, "pid": os.getpid(), "at": time.time()})
        with trio.fail_after(self.beat_period):
            await self.redis.set(keys.node(self.node_id), info, px=int(settings.node_ttl * 1e3))
            for edge in self.edges:
                await edge.refresh_demand()
            if not self._connected:
                for edge in self.edges:
                    await edge.resync()

    def _lost(self, error: BaseException) -> None:
        self._last_error = describe_failure(error)
        if self._connected:
            log.warning("cluster store unreachable (%s); prices may be stale", self._last_error)
        self._connected = False
        for edge in self.edges:
            edge.set_stale(True)

    # ---- holding upstream sessions ----------------------------------------------------

    async def _stand_by(
        self, session: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        lease = Lease(
            self.redis,
            session,
            self.node_id,
            ttl=self.settings.lease_ttl,
            retry=self.settings.lease_retry,
            keys=self.keys,
            url=self.redis_url,
        )
        self._leases[session] = lease

        async def hold(fence: Fence) -> None:
            # A holding is an error boundary: a bug in it ends this holding only (the lease
            # is released and tried again), never the standby or the node.
            try:
                await self._hold(session, fence)
            except Exception:
                log.exception("%s: the holding failed; the lease is released", session)

        await hold_while_leased(lease, hold, task_status=task_status)

    async def _hold(self, session: str, fence: Fence) -> None:
        self._held[session] = (fence, time.time())
        try:
            provider = self._provider_factory(session)
            async with trio.open_nursery() as nursery:
                self._holdings[session] = await nursery.start(
                    hold_session, provider, fence, self.redis, self.keys, self._holder
                )
        finally:
            self._held.pop(session, None)
            self._holdings.pop(session, None)
            log.info("%s: no longer held by this node", session)

    # ---- statistics ---------------------------------------------------------------------

    def statistics(self) -> NodeStatistics:
        leases = []
        for session in self._sessions if self.settings.role.holds_sessions else ():
            held = self._held.get(session)
            token, since = (held[0].token, held[1]) if held else (None, None)
            leases.append(LeaseStatistics(session, held is not None, token, since))
        holdings = self._holdings.items()
        return NodeStatistics(
            node=self.node_id,
            role=self.settings.role.value,
            redis=redact_url(self.redis_url),
            redis_connected=self._connected,
            redis_last_error=self._last_error,
            beats=self._beats,
            leases=tuple(leases),
            demand={edge.name: len(edge.demand) for edge in self.edges},
            holder_demand={s: h.reconciler.demand() for s, h in holdings},
            holder_quota={s: h.usage() for s, h in holdings},
            hops=tuple(edge.hop_statistics() for edge in self.edges),
        )
