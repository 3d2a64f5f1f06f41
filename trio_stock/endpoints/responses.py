"""What the REST API answers (seed 003, ``/api/v2/realtime/``): frozen values, JSON by cattrs.

Field names are the document's, in its order, then the extras with real data; none is
renamed or dropped. Each response is built by :mod:`.rest` from the hub's and the
providers' ``statistics()`` and unstructured by the shared converter
(:data:`trio_stock.converter.converter`): enums become their values, tuples JSON arrays.
The latest state of a symbol inside ``cache`` is the one exception: it is the ``price_update``
fields, built by hand on the per-tick path (:func:`.prices.state_fields`) and reused here as
it is, so the two can never differ (README "How it is built" says why that path is by hand).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from cattrs.gen import make_dict_unstructure_fn, override

from .. import market_hours
from ..cluster.statistics import NodeStatistics
from ..converter import converter
from ..hub import Bar, Failure
from ..market_hours import MarketPhase
from ..model import Market
from ..transport.http import Response
from ..upstream.contract import ProviderStatistics


def respond(status: int, body: Any) -> Response:
    """``body``, one of this module's values, as a JSON response with ``status``."""
    return Response(status, converter.dumps(body))


@attrs.frozen
class ErrorDetail:
    """Every REST error: ``{"detail": "..."}``, with the right 4xx status."""

    detail: str


@attrs.frozen
class TradingPhase:
    """A market's trading phase now and when it changes next (:mod:`trio_stock.market_hours`)."""

    phase: MarketPhase
    next_change: str | None  # ISO-8601 UTC, seconds; None for a market that never closes


def trading_phases(
    epoch_ns: int, always_open: frozenset[Market] = frozenset()
) -> dict[str, TradingPhase]:
    """Every market's phase at ``epoch_ns``, by market ("KR", "US"): live or simulated,
    a board can say "closed" and when it opens. ``always_open`` markets (a simulated
    market run with ``--sim-always-open``) are open, with no next change."""
    phases = {}
    for market in Market:
        if market in always_open:
            phases[market.value] = TradingPhase(MarketPhase.OPEN, None)
            continue
        change = market_hours.next_change(market, epoch_ns) // 1_000_000_000
        phases[market.value] = TradingPhase(
            market_hours.phase(market, epoch_ns),
            datetime.fromtimestamp(change, UTC).isoformat(timespec="seconds"),
        )
    return phases


@attrs.frozen
class Health:
    """``GET health``. ``providers`` are the providers' statistics as they are (no secrets)."""

    status: str  # "connected", "degraded" or "auth_failed"
    is_running: bool
    api_configured: bool  # an FMP key is set
    kis_configured: bool
    simulated: tuple[Market, ...]  # the markets served by the simulated provider
    subscribed_symbols: list[str]  # held by somebody (a client, REST), or being registered
    lingering_symbols: list[str]  # still registered upstream, held by nobody: free capacity
    cached_symbols: list[str]
    callbacks_registered: int  # WebSocket clients
    reconnect_attempts: int
    providers: tuple[ProviderStatistics, ...]
    markets: dict[str, TradingPhase]  # by market, from the hub's clock
    cluster: NodeStatistics | None = None  # this node, when it runs in a cluster


@attrs.frozen
class ConnectionStatus:
    is_connected: bool
    is_running: bool
    subscribed_symbols: list[str]
    lingering_symbols: list[str]
    total_clients: int


@attrs.frozen
class CachedData:
    count: int
    symbols: list[str]


@attrs.frozen
class HubCounters:
    subscribers: int
    symbols: int
    published: int
    delivered: int
    conflated: int
    too_slow: int


@attrs.frozen
class UpstreamQuota:
    provider: str
    market: Market
    used: int  # held by somebody, or pending
    lingering: int
    quota: int


@attrs.frozen
class Status:
    """``GET status``."""

    timestamp: str  # ISO-8601, seconds
    connection_status: ConnectionStatus
    cached_data: CachedData
    hub: HubCounters
    upstream: tuple[UpstreamQuota, ...]
    providers: tuple[ProviderStatistics, ...]
    markets: dict[str, TradingPhase]  # by market, from the hub's clock


@attrs.frozen
class SubscriptionChange:
    """``POST subscribe`` and ``unsubscribe``. ``failed`` only when some symbols failed."""

    status: str  # "success" or "partial"
    message: str
    symbols: tuple[str, ...]  # normalised: accepted, or released
    subscribed_total: int  # symbols the server holds for REST
    failed: tuple[Failure, ...] = ()


converter.register_unstructure_hook(
    SubscriptionChange,
    make_dict_unstructure_fn(SubscriptionChange, converter, _cattrs_omit_if_default=True),
)


@attrs.frozen
class Cache:
    """``GET cache``: the latest state of each cached symbol, by symbol."""

    total: int
    returned: int
    limit: int
    data: dict[str, dict[str, Any]]  # the price_update fields and "type" (see the docstring)


@attrs.frozen
class CachedSymbol:
    """``GET cache/{symbol}``."""

    symbol: str
    data: dict[str, Any]  # the price_update fields and "type"


@attrs.frozen
class Liveness:
    """``GET /health``: the process answers (seed 003's troubleshooting step)."""

    status: str = "ok"


@attrs.frozen
class Readiness:
    """``GET /ready``: may a load balancer send clients here?"""

    ready: bool
    markets: dict[str, str]  # market -> its provider's state
    detail: str | None = None


def _as_is(value: Any) -> Any:
    return value


# The entries are JSON-ready already and go to orjson as they are: walked value by value by
# the converter, a full cache (1,000 entries) took 4.5 ms instead of 0.5.
converter.register_unstructure_hook(
    Cache, make_dict_unstructure_fn(Cache, converter, data=override(unstruct_hook=_as_is))
)
converter.register_unstructure_hook(
    CachedSymbol,
    make_dict_unstructure_fn(CachedSymbol, converter, data=override(unstruct_hook=_as_is)),
)


@attrs.frozen
class History:
    """``GET history/{symbol}``: one-minute bars, oldest first, the forming minute last."""

    symbol: str
    interval: int  # seconds per bar
    bars: tuple[Bar, ...]


def _bar_fields(bar: Bar) -> dict[str, Any]:
    # A volume that is a whole number is written as one ("volume": 1200, not 1200.0): sizes
    # are whole shares in both markets, and arrive as floats.
    volume = bar.volume
    return {
        "time": bar.time,
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": int(volume) if volume.is_integer() else volume,
    }


converter.register_unstructure_hook(Bar, _bar_fields)

# A pool's sessions (KIS_ACCOUNTS) appear under its provider; a single provider's
# statistics read exactly as before (no empty ``sessions``).
converter.register_unstructure_hook(
    ProviderStatistics,
    make_dict_unstructure_fn(
        ProviderStatistics, converter, sessions=override(omit_if_default=True)
    ),
)
