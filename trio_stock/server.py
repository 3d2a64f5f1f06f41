"""The front door: one port for the REST API, both WebSocket protocols and the dashboard.

::

    serve_http(hub, config)                  the listener (trio.serve_listeners)
    ├── the keep-alive                       pings every WebSocket client (one task)
    └── one task per TCP connection          HTTP/1.1 on h11: REST with keep-alive, or
        └── the session's nursery              answer an upgrade (wsserver) and run a
            └── the session's writer           ClientSession: its reader (here), its writer

Cancelling the listener closes every WebSocket client with 1001 within ``CLOSE_GRACE``.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from .config import Config
from .endpoints import metrics, rest
from .endpoints.client import CLOSE_GOING_AWAY, ClientLimits, ClientSession
from .endpoints.keepalive import KeepAlive
from .endpoints.prices import PricesProtocol
from .endpoints.protocol import ClientProtocol
from .endpoints.stock import StockProtocol
from .http import (
    HEAD_TIMEOUT,
    HttpConnection,
    Request,
    RequestError,
    Response,
    error_response,
)
from .hub import Hub, Policy
from .wsserver import ServerWebSocket, handshake_response

log = logging.getLogger(__name__)

CLOSE_GRACE = 2.0  # seconds a closing handshake may take at shutdown
REST_HOLD_LIMIT = 10_000  # server-held (REST) symbols; the provider quotas bind long before
PROTOCOLS: dict[str, ClientProtocol] = {
    "/ws/stock/": StockProtocol(),
    "/ws/stock": StockProtocol(),
    "/api/v2/realtime/ws/prices": PricesProtocol(),
}
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class ServerState:
    """What every connection of one listener shares."""

    def __init__(self, hub: Hub, config: Config, limits: ClientLimits) -> None:
        self.hub = hub
        self.config = config
        self.limits = limits
        self.rest_holds = hub.subscriber(Policy.DISCARD, name="rest", max_symbols=REST_HOLD_LIMIT)
        self.connections = 0
        self.clients_by_protocol: Counter[str] = Counter()
        self.keep_alive = KeepAlive(limits.ping_interval, limits.ping_timeout)
        self._client_ids = itertools.count(1)

    @property
    def websocket_clients(self) -> int:
        """Connected WebSocket clients across both protocols."""
        return sum(self.clients_by_protocol.values())

    def next_client_name(self, protocol: ClientProtocol) -> str:
        return f"{protocol.name}-{next(self._client_ids)}"


def client_limits(config: Config) -> ClientLimits:
    """Per-client limits from the configuration."""
    return ClientLimits(ping_interval=config.ping_interval, ping_timeout=config.ping_timeout)


async def serve_http(
    hub: Hub,
    config: Config,
    *,
    limits: ClientLimits | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``config.host:config.port``; ``task_status.started`` gets the bound port."""
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    port = int(listeners[0].socket.getsockname()[1])
    state = ServerState(hub, config, limits or client_limits(config))
    handler = functools.partial(handle_connection, state=state)
    async with state.rest_holds, trio.open_nursery() as nursery:
        await nursery.start(state.keep_alive.run)
        await nursery.start(trio.serve_listeners, handler, listeners)
        log.info("listening on http://%s:%d", config.host, port)
        task_status.started(port)


async def handle_connection(stream: trio.abc.Stream, *, state: ServerState) -> None:
    """Serve one TCP connection: HTTP requests until it closes, or one WebSocket."""
    if state.connections >= state.config.max_clients:
        error = RequestError(503, "server is at its connection limit; retry later")
        await HttpConnection(stream).send_error(error)
        return
    state.connections += 1
    try:
        upgraded = await _serve_requests(HttpConnection(stream), state)
        if upgraded is not None:  # the HTTP state is gone by now: a WebSocket keeps none of it
            await _run_client(*upgraded, state)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client vanished; nothing to answer
    finally:
        state.connections -= 1


async def _serve_requests(
    http: HttpConnection, state: ServerState
) -> tuple[ServerWebSocket, ClientProtocol] | None:
    """Answer requests until the connection ends or is upgraded (then return the WebSocket)."""
    first = True
    while True:
        try:
            request = await http.next_request(first=first)
        except RequestError as error:
            await http.send_error(error)
            return None
        if request is None:
            return None
        first = False
        if request.is_websocket_upgrade:
            return await _upgrade(http, request, state)
        await http.send(await route(request, state))
        if not http.keep_alive:
            return None


async def _upgrade(
    http: HttpConnection, request: Request, state: ServerState
) -> tuple[ServerWebSocket, ClientProtocol] | None:
    protocol = PROTOCOLS.get(request.path)
    if protocol is None:
        await http.send_error(RequestError(404, f"no WebSocket endpoint at {request.path}"))
        return None
    key = request.headers.get("sec-websocket-key")
    if key is None or request.headers.get("sec-websocket-version") != "13":
        await http.send_error(RequestError(400, "not a valid WebSocket handshake (version 13)"))
        return None
    with trio.move_on_after(HEAD_TIMEOUT):  # the handshake only, not the session
        await http.stream.send_all(handshake_response(key))
        received = http.take_trailing_data()
        ws = ServerWebSocket(http.stream, received, max_message_size=state.limits.max_message_bytes)
        return ws, protocol
    return None  # the client did not take the handshake answer in time


async def _run_client(ws: ServerWebSocket, protocol: ClientProtocol, state: ServerState) -> None:
    session = ClientSession(ws, state.hub, protocol, state.limits, state.next_client_name(protocol))
    state.clients_by_protocol[protocol.name] += 1
    state.keep_alive.sessions.add(session)
    code, reason = CLOSE_GOING_AWAY, "server shutting down"
    try:
        code, reason = await session.run()
    finally:
        state.keep_alive.sessions.discard(session)
        state.clients_by_protocol[protocol.name] -= 1
        with trio.CancelScope(shield=True):
            if session.write_interrupted:  # cut mid-frame: no close frame may follow
                await trio.aclose_forcefully(ws.stream)
            else:
                await ws.close(code, reason, grace=CLOSE_GRACE)


# ---- REST routing ------------------------------------------------------------------

Route = Callable[[Request, ServerState], Awaitable[Response] | Response]


async def route(request: Request, state: ServerState) -> Response:
    """Answer a plain HTTP request."""
    path = request.path
    if path.startswith(rest.PREFIX + "/cache/") and len(path) > len(rest.PREFIX + "/cache/"):
        if request.method != "GET":
            return _not_allowed("GET")
        return rest.cache_symbol(path.removeprefix(rest.PREFIX + "/cache/"), state)
    if path.startswith("/static/"):
        return _static(path.removeprefix("/static/"), request)
    entry = _ROUTES.get(path)
    if entry is None:
        return error_response(404, f"not found: {path[:200]}")
    method, handler = entry
    if request.method != method:
        return _not_allowed(method)
    answer = handler(request, state)
    return answer if isinstance(answer, Response) else await answer


def _not_allowed(method: str) -> Response:
    return error_response(405, f"method not allowed; use {method}", headers=(("allow", method),))


@functools.cache
def _static_file(name: str) -> bytes | None:
    files = importlib.resources.files("trio_stock") / "static"
    if "/" in name or name.startswith(".") or not (files / name).is_file():
        return None
    return (files / name).read_bytes()


def _static(name: str, request: Request) -> Response:
    if request.method != "GET":
        return _not_allowed("GET")
    body = _static_file(name)
    suffix = name[name.rfind(".") :] if "." in name else ""
    if body is None or suffix not in STATIC_TYPES:
        return error_response(404, f"not found: /static/{name[:200]}")
    return Response(200, body, STATIC_TYPES[suffix])


_ROUTES: dict[str, tuple[str, Route]] = {
    "/": ("GET", lambda req, st: _static("index.html", req)),
    rest.PREFIX + "/health": ("GET", lambda req, st: rest.health(st)),
    rest.PREFIX + "/status": ("GET", lambda req, st: rest.status(st)),
    rest.PREFIX + "/subscribe": ("POST", rest.subscribe),
    rest.PREFIX + "/unsubscribe": ("POST", rest.unsubscribe),
    rest.PREFIX + "/cache": ("GET", rest.cache),
    "/metrics": (
        "GET",
        lambda req, st: Response(200, metrics.render(st).encode(), metrics.CONTENT_TYPE),
    ),
}
