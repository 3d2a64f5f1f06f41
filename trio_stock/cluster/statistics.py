"""What a cluster node reports in health and metrics (no Redis needed to import it)."""

from __future__ import annotations

from typing import Protocol

import attrs


@attrs.frozen
class LeaseStatistics:
    """An upstream session this node may hold."""

    session: str
    held: bool
    fence: int | None  # the fencing token while held
    since: float | None  # epoch seconds


@attrs.frozen
class HopStatistics:
    """The Redis hop of one session, as this node receives it (published → read)."""

    session: str
    stale: bool  # Redis unreachable: the session's data may be old
    received: int  # states read from Redis
    dropped_old: int  # states older than one already forwarded (dropped)
    lag_buckets: tuple[float, ...]  # upper bounds, seconds
    lag_counts: tuple[int, ...]  # cumulative counts per bucket
    lag_sum: float


@attrs.frozen
class NodeStatistics:
    node: str
    role: str
    redis: str  # the URL without its password
    redis_connected: bool
    redis_last_error: str | None
    beats: int
    leases: tuple[LeaseStatistics, ...]
    demand: dict[str, int]  # symbols this node asks the cluster for, per session
    # For sessions held here: symbols per node (the whole cluster's demand), and the quota.
    holder_demand: dict[str, dict[str, int]]
    holder_quota: dict[str, tuple[int, int]]  # session → (registered upstream, quota)
    hops: tuple[HopStatistics, ...]


class ClusterView(Protocol):
    def statistics(self) -> NodeStatistics: ...
