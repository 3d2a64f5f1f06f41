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

import base64
import contextlib
import errno
import functools
import logging
import ssl
import time
from collections.abc import Iterator
from typing import Any

import attrs
import trio

from .access import build_verifier, redact
from .cluster.statistics import ClusterView
from .config import Config
from .endpoints.client import CLOSE_GOING_AWAY, CLOSE_INTERNAL, ClientLimits, ClientSession
from .endpoints.prices import PricesProtocol
from .endpoints.protocol import ClientProtocol
from .endpoints.stock import StockProtocol
from .errors import ConfigError
from .hub import Hub
from .routes import route
from .state import ServerState, client_limits
from .transport.http import (
    HEAD_TIMEOUT,
    HttpConnection,
    PeerStalled,
    Request,
    RequestError,
)
from .transport.wsserver import ServerWebSocket, handshake_response

log = logging.getLogger(__name__)

CLOSE_GRACE = 2.0  # seconds a closing handshake may take at shutdown
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take to finish the TLS handshake
PROTOCOLS: dict[str, ClientProtocol] = {
    "/ws/stock/": StockProtocol(),
    "/ws/stock": StockProtocol(),
    "/api/v2/realtime/ws/prices": PricesProtocol(),
}


_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there: stop it, or pick another --port",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address: check --host",
    errno.EACCES: "ports below 1024 need privileges: pick a --port above 1023",
}


class ListenError(OSError):
    """The listening socket could not be opened (the kernel's reason is in ``strerror``)."""


async def serve_http(
    hub: Hub,
    config: Config,
    *,
    limits: ClientLimits | None = None,
    cluster: ClusterView | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``config.host:config.port``; ``task_status.started`` gets the bound port.

    Raises:
        ListenError: the address cannot be bound (in use, not local, no permission).
    """
    verifier = build_verifier(config)  # refuses an anonymous public bind, bad keys
    tls = server_ssl_context(config)
    try:
        tcp = await trio.open_tcp_listeners(config.port, host=config.host)
    except OSError as exc:
        where = f"{config.host}:{config.port}"
        text = f"cannot listen on {where}: {exc.strerror or exc}"
        hint = _LISTEN_HINTS.get(exc.errno or 0)
        raise ListenError(exc.errno, f"{text} ({hint})" if hint else text) from exc
    port = int(tcp[0].socket.getsockname()[1])
    listeners: list[trio.abc.Listener[Any]] = list(tcp)
    if tls is not None:
        listeners = [trio.SSLListener(t, tls, https_compatible=True) for t in tcp]
    scheme = "http" if tls is None else "https"
    state = ServerState(
        hub,
        config,
        limits or client_limits(config),
        verifier=verifier,
        scheme=scheme,
        cluster=cluster,
    )
    handler = functools.partial(handle_connection, state=state)
    async with state.rest_holds, trio.open_nursery() as nursery:
        await nursery.start(state.keep_alive.run)
        await nursery.start(trio.serve_listeners, handler, listeners)
        auth = "jwt" if verifier is not None else "none"
        log.info("listening on %s://%s:%d (auth: %s)", scheme, config.host, port, auth)
        task_status.started(port)


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context of ``--tls-cert``/``--tls-key``: TLS 1.2 or newer, HTTP/1.1 by ALPN.

    Raises:
        ConfigError: the files cannot be loaded.
    """
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --tls-cert/--tls-key: {exc}") from None
    return context


async def handle_connection(stream: trio.abc.Stream, *, state: ServerState) -> None:
    """Serve one TCP connection: HTTP requests until it closes, or one WebSocket.

    This is the connection's error boundary: whatever fails here ends this connection
    only (counted, logged with the connection id); cancellation still propagates.
    """
    connection_id = state.next_connection_id()
    if isinstance(stream, trio.SSLStream):
        handshaken = False
        with _boundary(state, connection_id, "tls"):
            handshaken = await _tls_handshake(stream)
        if not handshaken:
            return  # serve_listeners closes the stream
    ip = _peer_ip(stream)
    refusal = state.admission.admit(ip)
    if refusal is not None:
        headers = (("retry-after", str(refusal.retry_after)),)
        with _boundary(state, connection_id, "http"):
            await HttpConnection(stream).send_error(RequestError(503, refusal.detail, headers))
        return
    try:
        upgraded = None  # stays None when the boundary ends the connection
        peer = _peer(stream)
        with _boundary(state, connection_id, "http"):
            upgraded = await _serve_requests(HttpConnection(stream), state, connection_id, peer)
        if upgraded is not None:  # the HTTP state is gone by now: a WebSocket keeps none of it
            with _boundary(state, connection_id, "websocket"):
                await _run_client(upgraded, state, connection_id, peer)
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


async def _tls_handshake(stream: trio.SSLStream[Any]) -> bool:
    """True once the handshake is done; False for a peer too slow, not TLS, or too old."""
    with trio.move_on_after(TLS_HANDSHAKE_TIMEOUT):
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # e.g. plain HTTP, or TLS 1.1: the TLS layer has said so already
        return True
    return False


def _peer(stream: trio.abc.Stream) -> str:
    """``ip:port`` of the client, for logs (``memory`` for in-memory streams)."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return "memory"
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "unknown"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _peer_ip(stream: trio.abc.Stream) -> str | None:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return None  # in-memory streams (tests, embedding): no address to limit
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return None  # reset before we looked: the first read will say so


@attrs.frozen
class Upgraded:
    """A WebSocket whose handshake was answered, and what its request brought."""

    ws: ServerWebSocket
    protocol: ClientProtocol
    token: str | None  # from Authorization or access_token; verified by the session


async def _serve_requests(
    http: HttpConnection, state: ServerState, connection_id: int, peer: str
) -> Upgraded | None:
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
        refused = state.access.check_request(request)
        if refused is not None:
            await http.send_error(refused)
            return None
        if request.is_websocket_upgrade:
            return await _upgrade(http, request, state)
        started = time.perf_counter()
        try:
            response = await route(request, state)
        except Exception as exc:  # a bug of ours: this request gets a 500, the server lives
            state.connection_failed(connection_id, "http", exc)
            detail = f"internal error (connection {connection_id}); the server log has details"
            await http.send_error(RequestError(500, detail))
            return None
        await http.send(response)
        _log_request(connection_id, peer, request, response.status, started)
        if not http.keep_alive:
            return None


async def _upgrade(http: HttpConnection, request: Request, state: ServerState) -> Upgraded | None:
    protocol = PROTOCOLS.get(request.path) if state.serves_clients else None
    if protocol is None:
        await http.send_error(RequestError(404, f"no WebSocket endpoint at {request.path[:200]}"))
        return None
    key = request.headers.get("sec-websocket-key")
    if key is None or not _valid_key(key) or request.headers.get("sec-websocket-version") != "13":
        await http.send_error(RequestError(400, "not a valid WebSocket handshake (version 13)"))
        return None
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        # Bytes after the head would be read as frames: a body must not be smuggled in.
        await http.send_error(RequestError(400, "a WebSocket upgrade request has no body"))
        return None
    with trio.move_on_after(HEAD_TIMEOUT):  # the handshake only, not the session
        await http.stream.send_all(handshake_response(key))
        received = http.take_trailing_data()
        ws = ServerWebSocket(http.stream, received, limits=state.limits.websocket)
        return Upgraded(ws, protocol, state.access.token_of(request))
    return None  # the client did not take the handshake answer in time


def _valid_key(key: str) -> bool:
    """RFC 6455 §4.2.1: the key is 16 random bytes, base64-encoded (24 characters)."""
    if len(key.strip()) != 24:
        return False
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except ValueError:
        return False


async def _run_client(
    upgraded: Upgraded, state: ServerState, connection_id: int, peer: str
) -> None:
    ws, protocol = upgraded.ws, upgraded.protocol
    name = f"{protocol.name}-{connection_id}"
    session = ClientSession(
        ws, state.hub, protocol, state.limits, name, access=state.access, token=upgraded.token
    )
    state.clients_by_protocol[protocol.name] += 1
    state.keep_alive.sessions.add(session)
    code, reason = CLOSE_GOING_AWAY, "server shutting down"
    opened = time.perf_counter()
    log.info(
        "connection %d from %s: websocket %s opened",
        connection_id,
        peer,
        protocol.name,
        extra={"connection": connection_id, "peer": peer, "protocol": protocol.name},
    )
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
        _log_closed(connection_id, peer, session, code, reason, opened)


def _log_request(
    connection_id: int, peer: str, request: Request, status: int, started: float
) -> None:
    """One line per REST request; a token in the query string is never written."""
    query = redact(request.query)
    target = request.path[:200] + (f"?{query[:200]}" if query else "")
    milliseconds = (time.perf_counter() - started) * 1000
    log.info(
        "connection %d from %s: %s %s %d %.1f ms",
        connection_id,
        peer,
        request.method,
        target,
        status,
        milliseconds,
        extra={
            "connection": connection_id,
            "peer": peer,
            "method": request.method,
            "path": request.path[:200],
            "status": status,
            "ms": round(milliseconds, 1),
        },
    )


def _log_closed(
    connection_id: int,
    peer: str,
    session: ClientSession,
    code: int,
    reason: str,
    opened: float,
) -> None:
    seconds = time.perf_counter() - opened
    updates = session.subscriber.statistics().delivered
    user = session.grant.subject if session.grant is not None else None
    log.info(
        "connection %d from %s: websocket %s closed %d%s after %.1f s, %d updates sent%s",
        connection_id,
        peer,
        session.protocol.name,
        code,
        f" ({reason})" if reason else "",
        seconds,
        updates,
        f", user {user}" if user and user != "anonymous" else "",
        extra={
            "connection": connection_id,
            "peer": peer,
            "protocol": session.protocol.name,
            "close_code": code,
            "reason": reason,
            "seconds": round(seconds, 3),
            "updates": updates,
            "user": user,
        },
    )
