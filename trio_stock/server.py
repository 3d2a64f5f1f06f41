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

import contextlib
import functools
import importlib.resources
import itertools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import trio

from .config import Config
from .endpoints import metrics, rest
from .endpoints.client import CLOSE_GOING_AWAY, CLOSE_INTERNAL, ClientLimits, ClientSession
from .endpoints.keepalive import KeepAlive
from .endpoints.prices import PricesProtocol
from .endpoints.protocol import ClientProtocol
from .endpoints.stock import StockProtocol
from .http import (
    HEAD_TIMEOUT,
    HttpConnection,
    PeerStalled,
    Request,
    RequestError,
    Response,
    error_response,
)
from .hub import Hub, Policy
from .limits import Admission, AdmissionLimits
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

    def __init__(self, hub: Hub, config: Config, limits: ClientLimits) -> None:
        self.hub = hub
        self.config = config
        self.limits = limits
        self.rest_holds = hub.subscriber(Policy.DISCARD, name="rest", max_symbols=REST_HOLD_LIMIT)
        self.admission = Admission(
            AdmissionLimits(
                max_connections=config.max_clients,
                max_per_ip=config.max_connections_per_ip,
                rate_per_ip=config.connect_rate_per_ip,
            )
        )
        self.clients_by_protocol: Counter[str] = Counter()
        self.connection_errors: Counter[str] = Counter()  # by kind: "http", "websocket"
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


class ListenError(OSError):
    """The listening socket could not be opened (the kernel's reason is in ``strerror``)."""


async def serve_http(
    hub: Hub,
    config: Config,
    *,
    limits: ClientLimits | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``config.host:config.port``; ``task_status.started`` gets the bound port.

    Raises:
        ListenError: the address cannot be bound (in use, not local, no permission).
    """
    try:
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    except OSError as exc:
        where = f"{config.host}:{config.port}"
        raise ListenError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc
    port = int(listeners[0].socket.getsockname()[1])
    state = ServerState(hub, config, limits or client_limits(config))
    handler = functools.partial(handle_connection, state=state)
    async with state.rest_holds, trio.open_nursery() as nursery:
        await nursery.start(state.keep_alive.run)
        await nursery.start(trio.serve_listeners, handler, listeners)
        log.info("listening on http://%s:%d", config.host, port)
        task_status.started(port)


async def handle_connection(stream: trio.abc.Stream, *, state: ServerState) -> None:
    """Serve one TCP connection: HTTP requests until it closes, or one WebSocket.

    This is the connection's error boundary: whatever fails here ends this connection
    only (counted, logged with the connection id); cancellation still propagates.
    """
    connection_id = state.next_connection_id()
    ip = _peer_ip(stream)
    refusal = state.admission.admit(ip)
    if refusal is not None:
        headers = (("retry-after", str(refusal.retry_after)),)
        with _boundary(state, connection_id, "http"):
            await HttpConnection(stream).send_error(RequestError(503, refusal.detail, headers))
        return
    try:
        with _boundary(state, connection_id, "http"):
            upgraded = await _serve_requests(HttpConnection(stream), state, connection_id)
        if upgraded is not None:  # the HTTP state is gone by now: a WebSocket keeps none of it
            with _boundary(state, connection_id, "websocket"):
                await _run_client(*upgraded, state, connection_id)
    finally:
        state.admission.release(ip)


@contextlib.contextmanager
def _boundary(state: ServerState, connection_id: int, kind: str) -> Iterator[None]:
    """End the connection, and only the connection, on any error; let cancellation through."""
    try:
        yield
    except* (trio.BrokenResourceError, trio.ClosedResourceError, PeerStalled):
        pass  # the client vanished or stopped reading; nothing to answer
    except* Exception as group:
        state.connection_failed(connection_id, kind, group)


def _peer_ip(stream: trio.abc.Stream) -> str | None:
    if not isinstance(stream, trio.SocketStream):
        return None  # in-memory streams (tests, embedding): no address to limit
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return None  # reset before we looked: the first read will say so


async def _serve_requests(
    http: HttpConnection, state: ServerState, connection_id: int
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
        try:
            response = await route(request, state)
        except Exception as exc:  # a bug of ours: this request gets a 500, the server lives
            state.connection_failed(connection_id, "http", exc)
            detail = f"internal error (connection {connection_id}); the server log has details"
            await http.send_error(RequestError(500, detail))
            return None
        await http.send(response)
        if not http.keep_alive:
            return None


async def _upgrade(
    http: HttpConnection, request: Request, state: ServerState
) -> tuple[ServerWebSocket, ClientProtocol] | None:
    protocol = PROTOCOLS.get(request.path)
    if protocol is None:
        await http.send_error(RequestError(404, f"no WebSocket endpoint at {request.path[:200]}"))
        return None
    key = request.headers.get("sec-websocket-key")
    if key is None or request.headers.get("sec-websocket-version") != "13":
        await http.send_error(RequestError(400, "not a valid WebSocket handshake (version 13)"))
        return None
    with trio.move_on_after(HEAD_TIMEOUT):  # the handshake only, not the session
        await http.stream.send_all(handshake_response(key))
        received = http.take_trailing_data()
        ws = ServerWebSocket(http.stream, received, limits=state.limits.websocket)
        return ws, protocol
    return None  # the client did not take the handshake answer in time


async def _run_client(
    ws: ServerWebSocket, protocol: ClientProtocol, state: ServerState, connection_id: int
) -> None:
    name = f"{protocol.name}-{connection_id}"
    session = ClientSession(ws, state.hub, protocol, state.limits, name)
    state.clients_by_protocol[protocol.name] += 1
    state.keep_alive.sessions.add(session)
    code, reason = CLOSE_GOING_AWAY, "server shutting down"
    try:
        code, reason = await session.run()
    except* Exception as group:  # a bug of ours: close this client with 1011, nothing else
        state.connection_failed(connection_id, "websocket", group)
        code, reason = CLOSE_INTERNAL, f"internal error (connection {connection_id})"
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
        return _static(path.removeprefix("/static/"), request, state)
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


def _static(name: str, request: Request, state: ServerState) -> Response:
    if request.method != "GET":
        return _not_allowed("GET")
    response = state.static_files.get(name)
    if response is None:
        return error_response(404, f"not found: /static/{name[:200]}")
    return response


_ROUTES: dict[str, tuple[str, Route]] = {
    "/": ("GET", lambda req, st: _static("index.html", req, st)),
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
