"""The REST API of seed 003 under ``/api/v2/realtime/``.

Shapes follow the document; fields with real data are added, none renamed or dropped.
Subscriptions made here are held by the server itself, independent of any client: they
keep symbols registered upstream and warm in the cache, and count against the quotas.
Errors are JSON ``{"detail": "..."}`` with the right 4xx status.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..auth import ANONYMOUS, Grant
from ..hub import BAR_SECONDS, FailureReason, HubStatistics
from ..model import Market
from ..symbols import normalize_symbol
from ..transport.http import Request, Response
from ..upstream.contract import ProviderState, ProviderStatistics
from .prices import state_fields
from .requests import InvalidRequest, SymbolsBody, structure_body
from .responses import (
    Cache,
    CachedData,
    CachedSymbol,
    ConnectionStatus,
    ErrorDetail,
    Health,
    History,
    HubCounters,
    Liveness,
    Readiness,
    Status,
    SubscriptionChange,
    UpstreamQuota,
    respond,
    trading_phases,
)

if TYPE_CHECKING:
    from ..state import ServerState

PREFIX = "/api/v2/realtime"
DEFAULT_CACHE_LIMIT = 50
MAX_CACHE_LIMIT = 1_000


def overall_status(providers: tuple[ProviderStatistics, ...]) -> str:
    """``connected`` when every provider is; else the most serious state."""
    states = {p.state for p in providers}
    if states <= {ProviderState.CONNECTED}:
        return "connected"
    if ProviderState.AUTH_FAILED in states:
        return "auth_failed"
    return "degraded"


def health(state: ServerState) -> Response:
    stats = state.hub.statistics()
    return respond(
        200,
        Health(
            status=overall_status(stats.providers),
            is_running=True,
            api_configured=state.config.fmp_api_key is not None,
            kis_configured=state.config.kis_configured,
            simulated=tuple(p.market for p in stats.providers if not p.live),
            subscribed_symbols=state.hub.held(),
            lingering_symbols=state.hub.lingering(),
            cached_symbols=[s.symbol for s in state.hub.cached()],
            callbacks_registered=state.websocket_clients,
            reconnect_attempts=sum(p.reconnect_attempts for p in stats.providers),
            providers=stats.providers,
            markets=trading_phases(state.hub.clock.now_ns(), _always_open(state, stats)),
            cluster=None if state.cluster is None else state.cluster.statistics(),
        ),
    )


def status(state: ServerState) -> Response:
    stats = state.hub.statistics()
    cached = [s.symbol for s in state.hub.cached()]
    return respond(
        200,
        Status(
            timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
            connection_status=ConnectionStatus(
                is_connected=overall_status(stats.providers) == "connected",
                is_running=True,
                subscribed_symbols=state.hub.held(),
                lingering_symbols=state.hub.lingering(),
                total_clients=state.websocket_clients,
            ),
            cached_data=CachedData(count=len(cached), symbols=cached),
            hub=HubCounters(
                subscribers=stats.subscribers,
                symbols=stats.symbols,
                published=stats.published,
                delivered=stats.delivered,
                conflated=stats.conflated,
                too_slow=stats.too_slow,
            ),
            upstream=tuple(
                UpstreamQuota(u.provider, u.market, u.used, u.lingering, u.quota)
                for u in stats.upstream
            ),
            providers=stats.providers,
            markets=trading_phases(state.hub.clock.now_ns(), _always_open(state, stats)),
        ),
    )


def error(status: int, detail: str) -> Response:
    """A REST error: ``{"detail": ...}`` with ``status``."""
    return respond(status, ErrorDetail(detail))


def _symbols_body(request: Request) -> SymbolsBody | Response:
    try:
        return structure_body(request.body)
    except orjson.JSONDecodeError:
        return error(400, 'body must be JSON: a list of symbols, e.g. ["AAPL", "005930"]')
    except InvalidRequest as exc:
        return error(422, str(exc))


_STATUS_BY_REASON = {
    FailureReason.INVALID: 422,
    FailureReason.LIMIT: 409,
    FailureReason.QUOTA: 409,
    FailureReason.REJECTED: 502,
    FailureReason.TIMEOUT: 504,
    FailureReason.UNAVAILABLE: 503,
    FailureReason.FORBIDDEN: 403,
}


async def subscribe(request: Request, state: ServerState) -> Response:
    body = _symbols_body(request)
    if isinstance(body, Response):
        return body
    result = await state.hub.subscribe(state.rest_holds, body.symbols)
    if not result.accepted:
        first = result.failed[0]
        detail = "; ".join(
            f"{f.symbol}: {f.reason.value} {f.detail}".strip() for f in result.failed
        )
        return error(_STATUS_BY_REASON[first.reason], detail)
    return respond(
        200,
        SubscriptionChange(
            status="success" if result.ok else "partial",
            message=f"Subscribed to {len(result.accepted)} symbols",
            symbols=result.accepted,
            subscribed_total=len(state.rest_holds.symbols),
            failed=result.failed,
        ),
    )


async def unsubscribe(request: Request, state: ServerState) -> Response:
    body = _symbols_body(request)
    if isinstance(body, Response):
        return body
    released = state.hub.unsubscribe(state.rest_holds, body.symbols)
    return respond(
        200,
        SubscriptionChange(
            status="success",
            message=f"Unsubscribed from {len(released)} symbols",
            symbols=released,
            subscribed_total=len(state.rest_holds.symbols),
        ),
    )


def bounded_int(text: str, low: int, high: int) -> int | None:
    """``text`` as an integer from ``low`` to ``high``, or None.

    Only ASCII digits, and no more significant ones than ``high`` has: ``int()`` alone accepts
    "²" and "٣" as digits, raises past 4,300 digits, and is quadratic below that.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(high)):
        return None
    value = int(digits)
    return value if low <= value <= high else None


def _cache_entry(fields: Mapping[str, Any], kind: str, stale: bool) -> dict[str, Any]:
    entry = dict(fields)
    entry["type"] = kind
    entry["stale"] = stale  # its provider is not connected now: newer prices may exist
    return entry


def _stale_markets(state: ServerState) -> frozenset[Market]:
    """Markets whose provider is not connected (down, backing off, or its cluster store
    unreachable): their cached states may be older than the market."""
    providers = (state.hub.provider_for(market) for market in Market)
    return frozenset(
        p.market
        for p in providers
        if p is not None and p.statistics().state is not ProviderState.CONNECTED
    )


def cache(request: Request, state: ServerState, grant: Grant = ANONYMOUS) -> Response:
    limit = DEFAULT_CACHE_LIMIT
    for part in filter(None, request.query.split("&")):
        key, _, value = part.partition("=")
        if key == "limit":
            parsed = bounded_int(value, 1, MAX_CACHE_LIMIT)
            if parsed is None:
                return error(422, f"limit must be an integer from 1 to {MAX_CACHE_LIMIT}")
            limit = parsed
    states = [s for s in state.hub.cached() if grant.allows(s.market)]
    stale = _stale_markets(state)
    data = {
        s.symbol: _cache_entry(state_fields(s), s.kind.value, s.market in stale)
        for s in states[:limit]
    }
    return respond(200, Cache(total=len(states), returned=len(data), limit=limit, data=data))


def _entitled_symbol(symbol: str, grant: Grant) -> str | Response:
    """The canonical symbol of a path, or its 422 (invalid) / 403 (not entitled) answer."""
    try:
        canonical, market = normalize_symbol(symbol)
    except ValueError:
        return error(422, f"invalid symbol: {symbol[:32]!r}")
    if not grant.allows(market):
        return error(403, f"this token is not entitled to the {market.value} market")
    return canonical


def cache_symbol(symbol: str, state: ServerState, grant: Grant = ANONYMOUS) -> Response:
    canonical = _entitled_symbol(symbol, grant)
    if isinstance(canonical, Response):
        return canonical
    latest = state.hub.latest(canonical)
    if latest is None:
        return error(404, f"no cached data for {canonical}")
    stale = latest.market in _stale_markets(state)
    entry = _cache_entry(state_fields(latest), latest.kind.value, stale)
    return respond(200, CachedSymbol(canonical, entry))


def _always_open(state: ServerState, stats: HubStatistics) -> frozenset[Market]:
    """Markets served by a simulated market that trades around the clock."""
    if not state.config.sim_always_open:
        return frozenset()
    return frozenset(p.market for p in stats.providers if not p.live)


def liveness(state: ServerState) -> Response:
    """``/health``: 200 while the process serves at all (no market data, no secrets)."""
    return respond(200, Liveness())


def readiness(state: ServerState) -> Response:
    """``/ready``: 200 when every market's provider is connected, else 503 naming who is not.

    A market whose provider is down cannot serve its symbols, so a load balancer should
    send new clients elsewhere until it is back.
    """
    providers = state.hub.statistics().providers
    markets = {p.market.value: p.state.value for p in providers}
    down = [p for p in providers if p.state is not ProviderState.CONNECTED]
    if not down:
        return respond(200, Readiness(ready=True, markets=markets))
    detail = "; ".join(f"{p.market.value}: {p.name} is {p.state.value}" for p in down)
    return respond(503, Readiness(ready=False, markets=markets, detail=detail))


def history(symbol: str, state: ServerState, grant: Grant = ANONYMOUS) -> Response:
    """``GET history/{symbol}``: the symbol's one-minute bars, for a chart at first sight."""
    canonical = _entitled_symbol(symbol, grant)
    if isinstance(canonical, Response):
        return canonical
    bars = state.hub.history(canonical)
    if not bars:
        return error(404, f"no history for {canonical}")
    return respond(200, History(canonical, BAR_SECONDS, tuple(bars)))
