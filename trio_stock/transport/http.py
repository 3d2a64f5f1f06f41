"""The HTTP/1.1 front on h11: read a request head with limits, answer, keep alive.

Reading is bounded three ways: the head's size (``MAX_HEAD_BYTES``, h11 answers 431 past
it), the time a client may take to send it (``HEAD_TIMEOUT``, against slow senders), and
the body's size (``MAX_BODY_BYTES``, 413). Writing is bounded by ``WRITE_TIMEOUT``: a
client that does not read its answer (a large ``/cache`` or ``/health``) loses the
connection instead of holding it for ever (:class:`PeerStalled`). A WebSocket upgrade is
not answered here: the caller answers it (:mod:`trio_stock.transport.wsserver`) and takes the bytes
that followed the head with :meth:`HttpConnection.take_trailing_data`.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import attrs
import h11
import orjson
import trio

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
HEAD_TIMEOUT = 10.0  # seconds to send a request head once the connection is idle-read
KEEPALIVE_TIMEOUT = 30.0  # seconds an idle keep-alive connection may wait for its next request
WRITE_TIMEOUT = 30.0  # seconds a client may take to read one response before it is dropped
RECEIVE_CHUNK = 16 * 1024
SERVER_HEADER = b"trio_stock"


@attrs.frozen
class Request:
    """One HTTP request: method, path, query string, lower-cased headers and body."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def is_websocket_upgrade(self) -> bool:
        """True for ``GET`` with ``Upgrade: websocket``."""
        return (
            self.method == "GET"
            and self.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in self.headers.get("connection", "").lower()
        )


@attrs.frozen
class Response:
    """An HTTP response to send."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """A JSON response."""
    return Response(status, orjson.dumps(payload), headers=headers)


def error_response(status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """An error as JSON ``{"detail": ...}``, as seed 003's REST API answers errors."""
    return json_response(status, {"detail": detail}, headers)


class RequestError(Exception):
    """The request cannot be read or served; answer ``status`` with ``detail`` and close."""

    def __init__(self, status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


class PeerStalled(Exception):
    """The client did not take a response within ``WRITE_TIMEOUT``: drop the connection."""


class HttpConnection:
    """One client's HTTP/1.1 connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.raw_head = bytearray()
        self._head_only = False  # the request being answered is a HEAD

    async def next_request(self, *, first: bool) -> Request | None:
        """Read the next request; None when the client closed or idled out between requests.

        Raises:
            RequestError: malformed, too large, or too slow.
        """
        if not first and self._conn.our_state is not h11.IDLE:
            self._conn.start_next_cycle()
        self.raw_head = bytearray(self._conn.trailing_data[0])
        with trio.move_on_after(HEAD_TIMEOUT if first else KEEPALIVE_TIMEOUT) as idle:
            event = await self._next_event(record=True)
        if idle.cancelled_caught:
            if first or self.raw_head:
                raise RequestError(408, "request head not received in time")
            return None
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        # h11 bounds only an incomplete head; one that arrived whole is measured here.
        if len(self.raw_head) - len(self._conn.trailing_data[0]) > MAX_HEAD_BYTES:
            raise RequestError(431, f"request head over {MAX_HEAD_BYTES} bytes")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        if "content-length" in headers and "transfer-encoding" in headers:
            # Two framings: a proxy in front may read the other one (request smuggling).
            # RFC 9112 §6.1: such a request must end with the connection closed.
            raise RequestError(400, "Content-Length together with Transfer-Encoding")
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        body = b"" if _is_upgrade(headers) else await self._read_body(headers)
        self._head_only = event.method == b"HEAD"
        return Request(event.method.decode("ascii"), path, query, headers, body)

    def take_trailing_data(self) -> bytes:
        """The bytes received after the request head: an upgraded protocol's first bytes."""
        data = bytes(self._conn.trailing_data[0])
        self.raw_head = bytearray()
        return data

    async def _read_body(self, headers: Mapping[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
        body = bytearray()
        with trio.move_on_after(HEAD_TIMEOUT) as slow:
            while True:
                event = await self._next_event(record=False)
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY_BYTES:
                        raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                else:
                    raise RequestError(400, "connection closed mid-body")
        assert slow.cancelled_caught
        raise RequestError(408, "request body not received in time")

    async def _next_event(self, *, record: bool) -> h11.Event:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise RequestError(exc.error_status_hint, f"malformed request: {exc}") from None
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(RECEIVE_CHUNK)
                if record:
                    self.raw_head += data
                self._conn.receive_data(bytes(data))
                continue
            assert not isinstance(event, type)  # h11's sentinels are handled above
            return event

    @property
    def keep_alive(self) -> bool:
        """True if the connection may carry another request."""
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    async def send(self, response: Response) -> None:
        """Send ``response`` to the request just read."""
        if self._conn.our_state is not h11.SEND_RESPONSE:
            return  # nothing is waiting for an answer
        headers = [
            (b"content-type", response.content_type.encode()),
            (b"content-length", str(len(response.body)).encode()),
            (b"server", SERVER_HEADER),
            (b"cache-control", b"no-store"),
            *((k.encode(), v.encode()) for k, v in response.headers),
        ]
        try:
            data = self._conn.send(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_reason(response.status)
                )
            )
            if not self._head_only:  # HEAD: the same head, no body (RFC 9110 §9.3.2)
                data += self._conn.send(h11.Data(data=response.body)) or b""
            data += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        await self._send_bytes(data or b"")

    async def send_error(self, error: RequestError) -> None:
        """Answer a request that could not be read, then the connection must close."""
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = orjson.dumps({"detail": error.detail})
        try:
            data = self._conn.send(
                h11.Response(
                    status_code=error.status,
                    reason=_reason(error.status),
                    headers=[
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                        (b"server", SERVER_HEADER),
                        *((k.encode(), v.encode()) for k, v in error.headers),
                    ],
                )
            )
            if not self._head_only:
                data = (data or b"") + (self._conn.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (self._conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return
        await self._send_bytes(data)

    async def _send_bytes(self, data: bytes) -> None:
        with trio.move_on_after(WRITE_TIMEOUT) as stalled:
            await self.stream.send_all(data)
        if stalled.cancelled_caught:
            raise PeerStalled(f"the client did not read {len(data)} bytes in {WRITE_TIMEOUT:g} s")


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _is_upgrade(headers: Mapping[str, str]) -> bool:
    return headers.get("upgrade", "").lower() == "websocket"
