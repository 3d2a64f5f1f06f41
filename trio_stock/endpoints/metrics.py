"""``GET /metrics``: the hub's, providers' and server's statistics in Prometheus text format.

Written straight from the ``statistics()`` values rather than through prometheus-client:
every number already lives in one frozen snapshot, the format is a few lines of text, and
it keeps the gateway free of a global metrics registry and one more dependency.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..server import ServerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels(**labels)} {value:g}" for labels, value in samples]
    return lines


def render(state: ServerState) -> str:
    """The metrics page."""
    hub = state.hub.statistics()
    lines: list[str] = []
    for name, kind, text, value in (
        (
            "trio_stock_ticks_published_total",
            "counter",
            "Ticks accepted by the hub.",
            hub.published,
        ),
        (
            "trio_stock_ticks_unrouted_total",
            "counter",
            "Ticks for symbols nobody holds.",
            hub.unrouted,
        ),
        (
            "trio_stock_updates_delivered_total",
            "counter",
            "Updates received by subscribers.",
            hub.delivered,
        ),
        (
            "trio_stock_updates_conflated_total",
            "counter",
            "Updates replaced by newer ones.",
            hub.conflated,
        ),
        (
            "trio_stock_subscribers_too_slow_total",
            "counter",
            "Lossless subscribers cut off.",
            hub.too_slow,
        ),
        (
            "trio_stock_commands_dropped_total",
            "counter",
            "Provider commands refused.",
            hub.commands_dropped,
        ),
        ("trio_stock_subscribers", "gauge", "Hub subscribers.", hub.subscribers),
        ("trio_stock_symbols", "gauge", "Symbols held upstream.", hub.symbols),
        ("trio_stock_cached_symbols", "gauge", "Symbols with a cached state.", hub.cached_symbols),
    ):
        lines += _family(name, kind, text, [({}, value)])
    usage = [({"provider": u.provider, "market": u.market.value}, u) for u in hub.upstream]
    lines += _family(
        "trio_stock_upstream_used",
        "gauge",
        "Upstream subscriptions in use.",
        [(lb, u.used) for lb, u in usage],
    )
    lines += _family(
        "trio_stock_upstream_quota",
        "gauge",
        "Upstream subscription quota.",
        [(lb, u.quota) for lb, u in usage],
    )
    lines += _family(
        "trio_stock_upstream_pending",
        "gauge",
        "Upstream requests unanswered.",
        [(lb, u.pending) for lb, u in usage],
    )
    lines += _family(
        "trio_stock_upstream_lingering",
        "gauge",
        "Unheld symbols lingering.",
        [(lb, u.lingering) for lb, u in usage],
    )
    providers = [({"provider": p.name, "kind": p.kind}, p) for p in hub.providers]
    lines += _family(
        "trio_stock_provider_connected",
        "gauge",
        "1 when the provider's session is up.",
        [(lb, p.state.value == "connected") for lb, p in providers],
    )
    lines += _family(
        "trio_stock_provider_connects_total",
        "counter",
        "Sessions opened.",
        [(lb, p.connects) for lb, p in providers],
    )
    lines += _family(
        "trio_stock_provider_reconnect_attempts",
        "gauge",
        "Consecutive failed attempts.",
        [(lb, p.reconnect_attempts) for lb, p in providers],
    )
    lines += _family(
        "trio_stock_provider_messages_total",
        "counter",
        "Inbound frames.",
        [(lb, p.messages) for lb, p in providers],
    )
    lines += _family(
        "trio_stock_provider_malformed_total",
        "counter",
        "Frames skipped.",
        [(lb, p.malformed) for lb, p in providers],
    )
    lines += _family(
        "trio_stock_provider_last_message_timestamp_seconds",
        "gauge",
        "Time of the last inbound frame.",
        [(lb, p.last_message_at) for lb, p in providers if p.last_message_at is not None],
    )
    lines += _family(
        "trio_stock_websocket_clients",
        "gauge",
        "Connected WebSocket clients.",
        [({"protocol": name}, count) for name, count in sorted(state.clients_by_protocol.items())],
    )
    lines += _family(
        "trio_stock_http_connections", "gauge", "Open TCP connections.", [({}, state.connections)]
    )
    return "\n".join(lines) + "\n"
