"""The REST routes: which path is answered by which handler, with which method, for whom.

A route is exact (``/api/v2/realtime/status``) or a prefix taking one more path segment
(``/static/{name}``, ``/api/v2/realtime/cache/{symbol}``); anything else is 404, under
known prefixes too. With auth on, each route's :class:`Access` says who may use it.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

import attrs

from .auth import ANONYMOUS, Grant
from .endpoints import metrics, rest
from .state import ServerState
from .transport.http import Request, RequestError, Response, error_response


class Access(enum.Enum):
    """Who may use a route when auth is on (with auth off, everyone may use every route)."""

    PUBLIC = "public"  # the dashboard's files and health: no market data
    USER = "user"  # market data: any valid token, filtered by its markets
    ADMIN = "admin"  # server-held subscriptions and metrics: the token's 'admin' claim


# A handler gets the request, the shared state, the caller's grant, and the path's tail
# after a prefix route's prefix ("" for exact routes).
Handler = Callable[[Request, ServerState, Grant, str], Awaitable[Response] | Response]


@attrs.frozen
class Route:
    method: str
    access: Access
    handler: Handler


async def route(request: Request, state: ServerState) -> Response:
    """Answer a plain HTTP request: find the route, check the method and the caller."""
    found = _find(request.path)
    if found is None:
        return error_response(404, f"not found: {request.path[:200]}")
    if not state.serves_clients and request.path not in NODE_ROUTES:
        return error_response(404, "this node (role ingest) serves health and metrics only")
    entry, tail = found
    method = "GET" if request.method == "HEAD" else request.method  # HEAD: GET's head
    if method != entry.method:
        return _not_allowed(entry.method)
    grant = ANONYMOUS
    if entry.access is not Access.PUBLIC:
        authorized = state.access.authorize(request, admin=entry.access is Access.ADMIN)
        if isinstance(authorized, RequestError):
            return error_response(authorized.status, authorized.detail, authorized.headers)
        grant = authorized
    answer = entry.handler(request, state, grant, tail)
    return answer if isinstance(answer, Response) else await answer


def _find(path: str) -> tuple[Route, str] | None:
    """The route of ``path``: an exact one, or a prefix one whose tail is one segment."""
    exact = _ROUTES.get(path)
    if exact is not None:
        return exact, ""
    for prefix, entry in _PREFIX_ROUTES.items():
        tail = path.removeprefix(prefix)
        if tail != path and tail and "/" not in tail:
            return entry, tail
    return None


def _not_allowed(method: str) -> Response:
    allowed = "GET, HEAD" if method == "GET" else method
    return error_response(405, f"method not allowed; use {method}", headers=(("allow", allowed),))


def _static(name: str, state: ServerState) -> Response:
    response = state.static_files.get(name)
    if response is None:
        return error_response(404, f"not found: /static/{name[:200]}")
    return response


def _metrics(state: ServerState) -> Response:
    return Response(200, metrics.render(state).encode(), metrics.CONTENT_TYPE)


_ROUTES: dict[str, Route] = {
    "/": Route("GET", Access.PUBLIC, lambda req, st, g, t: _static("index.html", st)),
    "/health": Route("GET", Access.PUBLIC, lambda req, st, g, t: rest.liveness(st)),
    "/ready": Route("GET", Access.PUBLIC, lambda req, st, g, t: rest.readiness(st)),
    rest.PREFIX + "/health": Route("GET", Access.PUBLIC, lambda req, st, g, t: rest.health(st)),
    rest.PREFIX + "/status": Route("GET", Access.USER, lambda req, st, g, t: rest.status(st)),
    rest.PREFIX + "/subscribe": Route(
        "POST", Access.ADMIN, lambda req, st, g, t: rest.subscribe(req, st)
    ),
    rest.PREFIX + "/unsubscribe": Route(
        "POST", Access.ADMIN, lambda req, st, g, t: rest.unsubscribe(req, st)
    ),
    rest.PREFIX + "/cache": Route("GET", Access.USER, lambda req, st, g, t: rest.cache(req, st, g)),
    "/metrics": Route("GET", Access.ADMIN, lambda req, st, g, t: _metrics(st)),
}
# What an ingest node (upstream sessions only) answers.
NODE_ROUTES = frozenset({"/health", "/ready", rest.PREFIX + "/health", "/metrics"})
_PREFIX_ROUTES: dict[str, Route] = {
    "/static/": Route("GET", Access.PUBLIC, lambda req, st, g, name: _static(name, st)),
    rest.PREFIX + "/cache/": Route(
        "GET", Access.USER, lambda req, st, g, symbol: rest.cache_symbol(symbol, st, g)
    ),
    rest.PREFIX + "/history/": Route(
        "GET", Access.USER, lambda req, st, g, symbol: rest.history(symbol, st, g)
    ),
}
