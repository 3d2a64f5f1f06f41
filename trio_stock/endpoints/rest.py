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
from ..http import Request, Response, error_response, json_response
from ..hub import FailureReason, SubscribeResult
from ..symbols import normalize_symbol
from ..upstream.contract import ProviderState, ProviderStatistics
from .prices import state_fields

if TYPE_CHECKING:
    from ..server import ServerState

PREFIX = "/api/v2/realtime"
MAX_SYMBOLS_PER_REQUEST = 100
DEFAULT_CACHE_LIMIT = 50
MAX_CACHE_LIMIT = 1_000


def provider_fields(stats: ProviderStatistics) -> dict[str, Any]:
    """A provider's statistics as JSON (no secrets are ever in them)."""
    return {
        "name": stats.name,
        "kind": stats.kind,
        "market": stats.market.value,
        "live": stats.live,
        "state": stats.state.value,
        "registrations": stats.registrations,
        "quota": stats.quota,
        "connects": stats.connects,
        "reconnect_attempts": stats.reconnect_attempts,
        "messages": stats.messages,
        "malformed": stats.malformed,
        "last_message_at": stats.last_message_at,
        "last_error": stats.last_error,
        "detail": stats.detail,
    }


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
    return json_response(
        200,
        {
            "status": overall_status(stats.providers),
            "is_running": True,
            "api_configured": state.config.fmp_api_key is not None,
            "kis_configured": state.config.kis_configured,
            "simulated": [p.market.value for p in stats.providers if not p.live],
            "subscribed_symbols": state.hub.held(),
            "lingering_symbols": state.hub.lingering(),
            "cached_symbols": [s.symbol for s in state.hub.cached()],
            "callbacks_registered": state.websocket_clients,
            "reconnect_attempts": sum(p.reconnect_attempts for p in stats.providers),
            "providers": [provider_fields(p) for p in stats.providers],
        },
    )


def status(state: ServerState) -> Response:
    stats = state.hub.statistics()
    cached = [s.symbol for s in state.hub.cached()]
    return json_response(
        200,
        {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "connection_status": {
                "is_connected": overall_status(stats.providers) == "connected",
                "is_running": True,
                "subscribed_symbols": state.hub.held(),
                "lingering_symbols": state.hub.lingering(),
                "total_clients": state.websocket_clients,
            },
            "cached_data": {"count": len(cached), "symbols": cached},
            "hub": {
                "subscribers": stats.subscribers,
                "symbols": stats.symbols,
                "published": stats.published,
                "delivered": stats.delivered,
                "conflated": stats.conflated,
                "too_slow": stats.too_slow,
            },
            "upstream": [
                {
                    "provider": u.provider,
                    "market": u.market.value,
                    "used": u.used,
                    "lingering": u.lingering,
                    "quota": u.quota,
                }
                for u in stats.upstream
            ],
            "providers": [provider_fields(p) for p in stats.providers],
        },
    )


def _symbols_body(request: Request) -> list[str] | Response:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return error_response(400, 'body must be JSON: a list of symbols, e.g. ["AAPL", "005930"]')
    if isinstance(body, dict) and "symbols" in body:
        body = body["symbols"]
    if not isinstance(body, list) or not all(isinstance(s, str) for s in body):
        return error_response(422, "body must be a JSON list of symbol strings")
    if not body:
        return error_response(422, "the list of symbols is empty")
    if len(body) > MAX_SYMBOLS_PER_REQUEST:
        return error_response(422, f"at most {MAX_SYMBOLS_PER_REQUEST} symbols per request")
    return body


_STATUS_BY_REASON = {
    FailureReason.INVALID: 422,
    FailureReason.LIMIT: 409,
    FailureReason.QUOTA: 409,
    FailureReason.REJECTED: 502,
    FailureReason.TIMEOUT: 504,
    FailureReason.UNAVAILABLE: 503,
    FailureReason.FORBIDDEN: 403,
}


def _failures(result: SubscribeResult) -> list[dict[str, str]]:
    return [
        {"symbol": f.symbol, "reason": f.reason.value, "detail": f.detail} for f in result.failed
    ]


async def subscribe(request: Request, state: ServerState) -> Response:
    symbols = _symbols_body(request)
    if isinstance(symbols, Response):
        return symbols
    result = await state.hub.subscribe(state.rest_holds, symbols)
    if not result.accepted:
        first = result.failed[0]
        detail = "; ".join(
            f"{f.symbol}: {f.reason.value} {f.detail}".strip() for f in result.failed
        )
        return error_response(_STATUS_BY_REASON[first.reason], detail)
    payload: dict[str, Any] = {
        "status": "success" if result.ok else "partial",
        "message": f"Subscribed to {len(result.accepted)} symbols",
        "symbols": list(result.accepted),
        "subscribed_total": len(state.rest_holds.symbols),
    }
    if result.failed:
        payload["failed"] = _failures(result)
    return json_response(200, payload)


async def unsubscribe(request: Request, state: ServerState) -> Response:
    symbols = _symbols_body(request)
    if isinstance(symbols, Response):
        return symbols
    released = state.hub.unsubscribe(state.rest_holds, symbols)
    return json_response(
        200,
        {
            "status": "success",
            "message": f"Unsubscribed from {len(released)} symbols",
            "symbols": list(released),
            "subscribed_total": len(state.rest_holds.symbols),
        },
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


def _cache_entry(fields: Mapping[str, Any], kind: str) -> dict[str, Any]:
    entry = dict(fields)
    entry["type"] = kind
    return entry


def cache(request: Request, state: ServerState, grant: Grant = ANONYMOUS) -> Response:
    limit = DEFAULT_CACHE_LIMIT
    for part in filter(None, request.query.split("&")):
        key, _, value = part.partition("=")
        if key == "limit":
            parsed = bounded_int(value, 1, MAX_CACHE_LIMIT)
            if parsed is None:
                return error_response(422, f"limit must be an integer from 1 to {MAX_CACHE_LIMIT}")
            limit = parsed
    states = [s for s in state.hub.cached() if grant.allows(s.market)]
    data = {s.symbol: _cache_entry(state_fields(s), s.kind.value) for s in states[:limit]}
    return json_response(
        200, {"total": len(states), "returned": len(data), "limit": limit, "data": data}
    )


def cache_symbol(symbol: str, state: ServerState, grant: Grant = ANONYMOUS) -> Response:
    try:
        canonical, market = normalize_symbol(symbol)
    except ValueError:
        return error_response(422, f"invalid symbol: {symbol[:32]!r}")
    if not grant.allows(market):
        return error_response(403, f"this token is not entitled to the {market.value} market")
    latest = state.hub.latest(canonical)
    if latest is None:
        return error_response(404, f"no cached data for {canonical}")
    return json_response(
        200, {"symbol": canonical, "data": _cache_entry(state_fields(latest), latest.kind.value)}
    )
