"""The front door: one port for the REST API, both WebSocket protocols and the dashboard.

::

    serve_http(hub, config)                  the listener (trio.serve_listeners)
    └── one task per TCP connection          HTTP/1.1 on h11: REST with keep-alive, or
        └── its own nursery                    hand an upgrade to trio-websocket with the
            ├── trio-websocket's reader        bytes already read, then a ClientSession:
            ├── the session's writer           reader (here), writer and keep-alive
            └── the session's keep-alive

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
import trio_websocket

from .config import Config
from .endpoints import metrics, rest
from .endpoints.client import CLOSE_GOING_AWAY, ClientLimits, ClientSession
from .endpoints.prices import PricesProtocol
from .endpoints.protocol import ClientProtocol
from .endpoints.stock import StockProtocol
from .http import (
    HEAD_TIMEOUT,
    HttpConnection,
    ReplayStream,
    Request,
    RequestError,
    Response,
    error_response,
)
from .hub import Hub, Policy

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
        await nursery.start(trio.serve_listeners, handler, listeners)
        log.info("listening on http://%s:%d", config.host, port)
        task_status.started(port)


async def handle_connection(stream: trio.abc.Stream, *, state: ServerState) -> None:
    """Serve one TCP connection: HTTP requests until it closes, or one WebSocket."""
    http = HttpConnection(stream)
    if state.connections >= state.config.max_clients:
        await http.send_error(RequestError(503, "server is at its connection limit; retry later"))
        return
    state.connections += 1
    try:
        await _serve_requests(http, state)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client vanished; nothing to answer
    finally:
        state.connections -= 1


async def _serve_requests(http: HttpConnection, state: ServerState) -> None:
    first = True
    while True:
        try:
            request = await http.next_request(first=first)
        except RequestError as error:
            await http.send_error(error)
            return
        if request is None:
            return
        first = False
        if request.is_websocket_upgrade:
            await _upgrade(http, request, state)
            return
        await http.send(await route(request, state))
        if not http.keep_alive:
            return


async def _upgrade(http: HttpConnection, request: Request, state: ServerState) -> None:
    protocol = PROTOCOLS.get(request.path)
    if protocol is None:
        await http.send_error(RequestError(404, f"no WebSocket endpoint at {request.path}"))
        return
    if (
        "sec-websocket-key" not in request.headers
        or request.headers.get("sec-websocket-version") != "13"
    ):
        await http.send_error(RequestError(400, "not a valid WebSocket handshake (version 13)"))
        return
    replay = ReplayStream(http.stream, bytes(http.raw_head))
    async with trio.open_nursery() as nursery:
        ws = None
        with trio.move_on_after(HEAD_TIMEOUT):  # the handshake only, not the session
            ws_request = await trio_websocket.wrap_server_stream(
                nursery, replay, max_message_size=state.limits.max_message_bytes
            )
            ws = await ws_request.accept()
        if ws is not None:
            await _run_client(ws, protocol, state)
        nursery.cancel_scope.cancel()


async def _run_client(
    ws: trio_websocket.WebSocketConnection, protocol: ClientProtocol, state: ServerState
) -> None:
    session = ClientSession(ws, state.hub, protocol, state.limits, state.next_client_name(protocol))
    state.clients_by_protocol[protocol.name] += 1
    code, reason = CLOSE_GOING_AWAY, "server shutting down"
    try:
        code, reason = await session.run()
    finally:
        state.clients_by_protocol[protocol.name] -= 1
        if not session.write_interrupted:  # else the TCP stream just closes (serve_listeners)
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
                await ws.aclose(code, reason)


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
