"""``GET /metrics``: the hub's, providers' and server's statistics in Prometheus text format.

Written straight from the ``statistics()`` values rather than through prometheus-client:
every number already lives in one frozen snapshot, the format is a few lines of text, and
it keeps the gateway free of a global metrics registry and one more dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ..cluster.statistics import HopStatistics, NodeStatistics
from ..hub import HubStatistics, UpstreamUsage
from ..upstream.contract import ProviderStatistics, SessionStatistics

if TYPE_CHECKING:
    from ..state import ServerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name, type, help, value) per family; one sample each, or one per provider.
HUB_FAMILIES: Sequence[tuple[str, str, str, Callable[[HubStatistics], float]]] = (
    ("ticks_published_total", "counter", "Ticks accepted by the hub.", lambda h: h.published),
    ("ticks_unrouted_total", "counter", "Ticks for symbols nobody holds.", lambda h: h.unrouted),
    (
        "updates_delivered_total",
        "counter",
        "Updates received by subscribers.",
        lambda h: h.delivered,
    ),
    (
        "updates_conflated_total",
        "counter",
        "Updates replaced by newer ones.",
        lambda h: h.conflated,
    ),
    (
        "subscribers_too_slow_total",
        "counter",
        "Lossless subscribers cut off.",
        lambda h: h.too_slow,
    ),
    (
        "commands_dropped_total",
        "counter",
        "Provider commands refused.",
        lambda h: h.commands_dropped,
    ),
    ("subscribers", "gauge", "Hub subscribers.", lambda h: h.subscribers),
    ("symbols", "gauge", "Symbols held upstream.", lambda h: h.symbols),
    ("cached_symbols", "gauge", "Symbols with a cached state.", lambda h: h.cached_symbols),
)
USAGE_FAMILIES: Sequence[tuple[str, str, str, Callable[[UpstreamUsage], float]]] = (
    ("upstream_used", "gauge", "Upstream subscriptions somebody holds.", lambda u: u.used),
    (
        "upstream_registered",
        "gauge",
        "Upstream subscriptions registered, lingering included.",
        lambda u: u.registered,
    ),
    ("upstream_quota", "gauge", "Upstream subscription quota.", lambda u: u.quota),
    ("upstream_pending", "gauge", "Upstream requests unanswered.", lambda u: u.pending),
    ("upstream_lingering", "gauge", "Unheld symbols lingering.", lambda u: u.lingering),
)
PROVIDER_FAMILIES: Sequence[tuple[str, str, str, Callable[[ProviderStatistics], float | None]]] = (
    ("provider_connected", "gauge", "1 when the session is up.",
     lambda p: p.state.value == "connected"),
    ("provider_connects_total", "counter", "Sessions opened.", lambda p: p.connects),
    ("provider_reconnect_attempts", "gauge", "Consecutive failed attempts.",
     lambda p: p.reconnect_attempts),
    ("provider_registrations", "gauge", "Symbols registered upstream.", lambda p: p.registrations),
    ("provider_messages_total", "counter", "Inbound frames.", lambda p: p.messages),
    ("provider_malformed_total", "counter", "Inbound frames skipped.", lambda p: p.malformed),
    ("provider_last_message_timestamp_seconds", "gauge", "Time of the last inbound frame.",
     lambda p: p.last_message_at),
)  # fmt: skip

# The sessions of a pool (KIS_ACCOUNTS), labelled by their account's label (never a key) and
# the pool's name; only written when some provider is a pool.
SESSION_FAMILIES: Sequence[tuple[str, str, str, Callable[[SessionStatistics], float | None]]] = (
    ("session_connected", "gauge", "1 when the pool's session is up.",
     lambda s: s.state.value == "connected"),
    ("session_used", "gauge", "Codes the pool placed on the session.", lambda s: s.used),
    ("session_quota", "gauge", "The session's quota.", lambda s: s.quota),
    ("session_registrations", "gauge", "Codes registered upstream.", lambda s: s.registrations),
    ("session_connects_total", "counter", "Sessions opened.", lambda s: s.connects),
    ("session_reconnect_attempts", "gauge", "Consecutive failed attempts.",
     lambda s: s.reconnect_attempts),
    ("session_failed", "gauge", "1 while the pool has moved the session's codes away.",
     lambda s: s.failed),
)  # fmt: skip


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"') for v in labels.values())
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped, strict=True)) + "}"


def _family(
    name: str, kind: str, text: str, samples: Iterable[tuple[dict[str, str], float | None]]
) -> list[str]:
    lines = [f"# HELP trio_stock_{name} {text}", f"# TYPE trio_stock_{name} {kind}"]
    lines += [f"trio_stock_{name}{_labels(lb)} {_value(v)}" for lb, v in samples if v is not None]
    return lines


def _value(value: float) -> str:
    """Exact integers, and floats at full precision (``:g`` made 1712345678.9 "1.71235e+09")."""
    if isinstance(value, bool | int):
        return str(int(value))
    return repr(float(value))


def render(state: ServerState) -> str:
    """The metrics page."""
    hub = state.hub.statistics()
    lines: list[str] = []
    for name, kind, text, value in HUB_FAMILIES:
        lines += _family(name, kind, text, [({}, value(hub))])
    samples: list[tuple[dict[str, str], float | None]]
    for name, kind, text, of_usage in USAGE_FAMILIES:
        samples = [
            ({"provider": u.provider, "market": u.market.value}, of_usage(u)) for u in hub.upstream
        ]
        lines += _family(name, kind, text, samples)
    for name, kind, text, of_provider in PROVIDER_FAMILIES:
        samples = [({"provider": p.name, "kind": p.kind}, of_provider(p)) for p in hub.providers]
        lines += _family(name, kind, text, samples)
    if any(p.sessions for p in hub.providers):
        for name, kind, text, of_session in SESSION_FAMILIES:
            samples = [
                ({"provider": s.label, "pool": p.name}, of_session(s))
                for p in hub.providers
                for s in p.sessions
            ]
            lines += _family(name, kind, text, samples)
    clients = [
        ({"protocol": name}, count) for name, count in sorted(state.clients_by_protocol.items())
    ]
    lines += _family("websocket_clients", "gauge", "Connected WebSocket clients.", clients)
    lines += _family(
        "http_connections", "gauge", "Open TCP connections.", [({}, state.connections)]
    )
    errors = [({"kind": kind}, state.connection_errors[kind]) for kind in ("http", "websocket")]
    lines += _family(
        "connection_errors_total", "counter", "Connections ended by an internal error.", errors
    )
    refused = [({"reason": reason}, n) for reason, n in state.admission.refused.items()]
    lines += _family("connections_refused_total", "counter", "Connections refused (503).", refused)
    if state.cluster is not None:
        lines += cluster_lines(state.cluster.statistics())
    return "\n".join(lines) + "\n"


def cluster_lines(node: NodeStatistics) -> list[str]:
    """This node of a cluster: who it is, Redis, leases, demand, quota, the Redis hop."""
    lines = _family(
        "cluster_node_info", "gauge", "This node.", [({"node": node.node, "role": node.role}, 1)]
    )
    lines += _family(
        "cluster_redis_connected",
        "gauge",
        "1 while the cluster's Redis answers this node's heartbeat.",
        [({}, int(node.redis_connected))],
    )
    lines += _family(
        "cluster_lease_held",
        "gauge",
        "1 while this node holds the upstream session.",
        [({"session": lease.session}, int(lease.held)) for lease in node.leases],
    )
    lines += _family(
        "cluster_demand_symbols",
        "gauge",
        "Symbols this node's clients hold, per session.",
        [({"session": session}, n) for session, n in node.demand.items()],
    )
    lines += _family(
        "cluster_holder_demand_symbols",
        "gauge",
        "Held sessions: symbols each node of the cluster asks for.",
        [
            ({"session": session, "node": other}, n)
            for session, by_node in node.holder_demand.items()
            for other, n in by_node.items()
        ],
    )
    for name, text, index in (
        ("cluster_quota_used", "Held sessions: upstream slots the whole cluster uses.", 0),
        ("cluster_quota", "Held sessions: the upstream quota.", 1),
    ):
        samples = [({"session": s}, usage[index]) for s, usage in node.holder_quota.items()]
        lines += _family(name, "gauge", text, samples)
    return lines + _hop_lines(node.hops)


def _hop_lines(hops: Sequence[HopStatistics]) -> list[str]:
    name = "trio_stock_cluster_hop_lag_seconds"
    lines = [
        f"# HELP {name} Time from the holder's write to this node's read of a state.",
        f"# TYPE {name} histogram",
    ]
    for hop in hops:
        session = _labels({"session": hop.session})[1:-1]
        for bound, count in zip(hop.lag_buckets, hop.lag_counts, strict=True):
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{name}_bucket{{{session},le="{le}"}} {count}')
        lines.append(f"{name}_sum{{{session}}} {hop.lag_sum!r}")
        lines.append(f"{name}_count{{{session}}} {hop.lag_counts[-1]}")
    lines += _family(
        "cluster_hop_dropped_old_total",
        "counter",
        "States older than one already forwarded (dropped).",
        [({"session": hop.session}, hop.dropped_old) for hop in hops],
    )
    lines += _family(
        "cluster_stale",
        "gauge",
        "1 while this node cannot reach Redis: the session's prices may be stale.",
        [({"session": hop.session}, int(hop.stale)) for hop in hops],
    )
    return lines
