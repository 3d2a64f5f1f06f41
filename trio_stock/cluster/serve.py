"""The gateway as one node of a cluster (``--redis-url``): the same service, other providers.

The node's hub runs a :class:`~.edge.ClusterProvider` per market in place of the upstream
providers; those run, on whichever node holds each session's lease, behind a holder hub of
their own (:mod:`.holder`). Everything else — protocols, REST, limits, the hub's policies —
is the one-process gateway's.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from ..config import Config
from ..hub import Hub
from ..upstream.contract import Provider
from .edge import ClusterProvider
from .holder import HolderSettings
from .keys import Keys
from .node import ClusterNode, ClusterSettings, new_node_id
from .redis import RedisClient, open_redis

EDGE_ACK_MARGIN = 5.0  # seconds an edge waits beyond the holder's own acknowledgement timeout
# A node's hub releases a symbol nobody holds at once: the linger happens once, in the
# holder's hub. Were the node's hub to linger too, the symbol would stay in the node's demand
# and count against the cluster's quota, so another node could not take its slot (in one
# process a lingering symbol yields its slot when it is needed), and a released symbol would
# reach the upstream after two lingers. A page switch costs a round trip through Redis.
EDGE_LINGER = 0.0


def settings_of(config: Config) -> ClusterSettings:
    return ClusterSettings(
        role=config.role,
        node_id=config.node_id or new_node_id(),
        node_ttl=config.node_ttl,
        lease_ttl=config.lease_ttl,
        lease_retry=min(1.0, config.lease_ttl / 3),
        prefix=config.cluster_prefix,
    )


def edge_providers(
    redis: RedisClient, keys: Keys, node_id: str, local: Sequence[Provider]
) -> list[ClusterProvider]:
    """A cluster provider in place of each upstream provider (same name, market, quota)."""
    edges = []
    for provider in local:
        stats = provider.statistics()
        edges.append(
            ClusterProvider(
                redis,
                keys,
                node_id,
                session=provider.name,
                kind=stats.kind,
                market=provider.market,
                quota=provider.quota,
                live=stats.live,
            )
        )
    return edges


async def serve_node(
    config: Config,
    local: Sequence[Provider],
    rebuild: bool,
    *,
    task_status: trio.TaskStatus[tuple[Hub, ClusterNode]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run this node's hub, heartbeat and standbys until cancelled.

    Args:
        config: The settings; ``config.redis_url`` is set.
        local: The upstream providers this node may hold, one per session.
        rebuild: Build a fresh provider from ``config`` for every holding (a provider given
            by the embedding program is reused instead).
    """
    assert config.redis_url is not None
    settings = settings_of(config)
    async with open_redis(config.redis_url) as redis:
        keys = Keys(settings.prefix)
        edges = edge_providers(redis, keys, settings.node_id, local)
        hub = Hub(
            edges,
            linger=EDGE_LINGER,
            ack_timeout=config.ack_timeout + EDGE_ACK_MARGIN,
            max_symbols_per_subscriber=config.max_symbols_per_client,
        )
        by_name = {p.name: p for p in local}

        def provider_for(session: str) -> Provider:
            if not rebuild:
                return by_name[session]
            from ..gateway import build_providers

            return next(p for p in build_providers(config) if p.name == session)

        holder = HolderSettings(
            linger=config.linger, ack_timeout=config.ack_timeout, period=settings.node_ttl / 3
        )
        node = ClusterNode(
            redis, config.redis_url, settings, edges, list(by_name), holder, provider_for
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            await nursery.start(node.run)
            task_status.started((hub, node))
