"""What every connection of one listener shares: the hub, the limits, the counters.

Built once per listener by :func:`trio_stock.server.serve_http`; the endpoints read it
(health, status, metrics, REST holds) without knowing the server that made it.
"""

from __future__ import annotations

import importlib.resources
import itertools
import logging
from collections import Counter

from .access import AccessPolicy
from .auth import TokenVerifier
from .cluster.statistics import ClusterView
from .config import Config
from .endpoints.client import ClientLimits
from .endpoints.keepalive import KeepAlive
from .hub import Hub, Policy
from .limits import Admission, AdmissionLimits
from .transport.http import Response

log = logging.getLogger("trio_stock.server")  # the connection log is the server's

REST_HOLD_LIMIT = 10_000  # server-held (REST) symbols; the provider quotas bind long before
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def load_static_files() -> dict[str, Response]:
    """The dashboard's files, read once: requests look names up here and never build a path."""
    files: dict[str, Response] = {}
    for entry in (importlib.resources.files("trio_stock") / "static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = Response(200, entry.read_bytes(), STATIC_TYPES[suffix])
    return files


class ServerState:
    """What every connection of one listener shares."""

    def __init__(
        self,
        hub: Hub,
        config: Config,
        limits: ClientLimits,
        *,
        verifier: TokenVerifier | None = None,
        scheme: str = "http",
        cluster: ClusterView | None = None,
    ) -> None:
        self.hub = hub
        self.config = config
        self.cluster = cluster  # this node of a cluster, for health and metrics
        # An ingest node holds upstream sessions only: no client endpoints.
        self.serves_clients = cluster is None or config.role.serves_clients
        self.limits = limits
        self.access = AccessPolicy(config, verifier, lambda: hub.clock.now_ns() / 1e9, scheme)
        self.rest_holds = hub.subscriber(Policy.DISCARD, name="rest", max_symbols=REST_HOLD_LIMIT)
        self.admission = Admission(
            AdmissionLimits(
                max_connections=config.max_clients,
                max_per_ip=config.max_connections_per_ip,
                rate_per_ip=config.connect_rate_per_ip,
            )
        )
        self.clients_by_protocol: Counter[str] = Counter()
        self.connection_errors: Counter[str] = Counter()  # by kind: "http", "websocket", "tls"
        self.keep_alive = KeepAlive(limits.ping_interval, limits.ping_timeout)
        self.static_files = load_static_files()
        self._connection_ids = itertools.count(1)

    @property
    def connections(self) -> int:
        """Open TCP connections."""
        return self.admission.open

    @property
    def websocket_clients(self) -> int:
        """Connected WebSocket clients across both protocols."""
        return sum(self.clients_by_protocol.values())

    def next_connection_id(self) -> int:
        return next(self._connection_ids)

    def connection_failed(self, connection_id: int, kind: str, error: BaseException) -> None:
        """The error boundary's report: counted by kind, a summary line and its traceback."""
        self.connection_errors[kind] += 1
        log.warning("connection %d (%s) failed: %s", connection_id, kind, _summary(error))
        log.debug("connection %d (%s) traceback", connection_id, kind, exc_info=error)


def _summary(error: BaseException) -> str:
    leaves = [error]
    while isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    first = leaves[0]
    text = f"{type(first).__name__}: {str(first)[:200]}"
    return text if len(leaves) == 1 else f"{text} (and {len(leaves) - 1} more)"


def client_limits(config: Config) -> ClientLimits:
    """Per-client limits from the configuration."""
    return ClientLimits(ping_interval=config.ping_interval, ping_timeout=config.ping_timeout)
