"""Property-based tests (hypothesis) of the HTTP front and both WebSocket protocols (issue 11).

Generated input goes where a hostile client would put it: random bytes, structured and
pipelined HTTP requests with junk methods, targets, headers, framing and bodies, resets,
connections past the connection limit, garbage WebSocket frames after an upgrade, and
sequences of client messages to both WebSocket protocols' handlers. The properties:

- nothing escapes :func:`trio_stock.server.handle_connection`, and nothing reaches its error
  boundary either (a failure counted there is a bug of ours, not of the input);
- every answer is well-formed: HTTP/1.1 that h11 parses as a client, with an expected status
  and a JSON ``{"detail": ...}`` body on errors (a 500 is a bug); WebSocket frames that
  wsproto parses, each a JSON object whose ``type`` is one of the protocol's, in the shape
  the protocol documents; every request is answered;
- state stays consistent: what a client (or a REST caller) was told it holds is exactly what
  its hub subscriber holds, and no price is pushed for a symbol it was not told about.

Each example is its own ``trio.run`` on ``MockClock(autojump_threshold=0)`` with a fresh hub
and the simulated providers: timeouts (request heads, keep-alive, acknowledgements, linger)
cost no real time, and no example leaks into the next.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import re
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeGuard

import attrs
import h11
import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from trio_stock import Config, Hub
from trio_stock.endpoints.client import ClientLimits, ClientSession
from trio_stock.gateway import build_hub
from trio_stock.model import Market
from trio_stock.server import handle_connection
from trio_stock.state import ServerState, client_limits

Message = dict[str, Any]

EXAMPLE_DEADLINE = 3_600.0  # virtual seconds; an example still running then is a hang
QUIET = 1e-3  # virtual seconds of silence after which everything sent has been answered
API = "/api/v2/realtime"
HOST = b"localhost"  # bound to loopback, the gateway serves loopback host names only
STOCK_PATH = "/ws/stock/"
PRICES_PATH = "/api/v2/realtime/ws/prices"
STATIC_FILES = sorted(
    entry.name for entry in (importlib.resources.files("trio_stock") / "static").iterdir()
)
# Canonical symbols, ASCII only: a 6-digit Korean code or an upper-case US ticker.
CANONICAL = re.compile(r"[0-9]{6}|(?=[A-Z0-9.\-]*[A-Z])[A-Z0-9.\-]{1,10}", re.ASCII)

SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# A failure is shrunk and reported alone (the first found), without the costly explain phase.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
fuzz_settings = functools.partial(
    settings,
    deadline=None,
    suppress_health_check=SUPPRESSED,
    phases=PHASES,
    report_multiple_bugs=False,
)


def event(text: str) -> None:
    """Record a statistics event when hypothesis runs the test (not in plain replays)."""
    if currently_in_test_context():
        hypothesis_event(text)


# ---- the gateway under test ----------------------------------------------------------


class RecordingState(ServerState):
    """The listener's shared state, keeping what reaches the connection error boundary."""

    def __init__(self, hub: Hub, config: Config, limits: ClientLimits) -> None:
        super().__init__(hub, config, limits)
        self.failures: list[tuple[str, BaseException]] = []

    def connection_failed(self, connection_id: int, kind: str, error: BaseException) -> None:
        self.failures.append((kind, error))
        super().connection_failed(connection_id, kind, error)


ClientStream = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]


class Gateway:
    """The server's connection handler on in-memory streams, as ``serve_listeners`` runs it."""

    def __init__(self, hub: Hub, state: RecordingState) -> None:
        self.hub = hub
        self.state = state
        self.escaped: list[BaseException] = []  # what would reach the listener's nursery
        self._handlers: trio.Nursery | None = None

    @asynccontextmanager
    async def connections(self) -> AsyncIterator[None]:
        """Serve connections; on exit, wait until every one of them has been handled."""
        async with trio.open_nursery() as nursery:
            self._handlers = nursery
            yield
        self._handlers = None

    def connect(self) -> ClientStream:
        """A new client stream, its other end served by ``handle_connection``."""
        assert self._handlers is not None, "connect() inside `async with gateway.connections()`"
        client, server = trio.testing.memory_stream_pair()
        self._handlers.start_soon(self._serve, server)
        return client

    async def _serve(self, stream: trio.abc.Stream) -> None:
        try:
            await handle_connection(stream, state=self.state)
        except Exception as exc:  # in production this ends the listener, and the process
            self.escaped.append(exc)
        finally:
            await trio.aclose_forcefully(stream)  # what trio.serve_listeners does

    def check_no_failures(self) -> None:
        """Nothing escaped a connection, and nothing of ours failed inside one."""
        assert not self.escaped, "an exception escaped handle_connection:\n" + _tracebacks(
            self.escaped
        )
        assert not self.state.failures, "a connection hit the error boundary (a bug):\n" + (
            _tracebacks([error for _, error in self.state.failures])
        )


def _tracebacks(errors: Sequence[BaseException]) -> str:
    return "\n".join("".join(traceback.format_exception(error)) for error in errors)


@asynccontextmanager
async def gateway(config: Config, limits: ClientLimits | None = None) -> AsyncIterator[Gateway]:
    """A fresh hub with the simulated providers, and the server's state over it."""
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(build_hub(config).run)
        state = RecordingState(hub, config, limits or client_limits(config))
        await nursery.start(state.keep_alive.run)
        async with state.rest_holds:
            yield Gateway(hub, state)
        nursery.cancel_scope.cancel()


def run_example(scenario: Callable[[], Awaitable[None]]) -> None:
    """One hypothesis example: its own Trio run on a clock that jumps when all are idle."""

    async def bounded() -> None:
        with trio.fail_after(EXAMPLE_DEADLINE):
            await scenario()

    trio.run(bounded, clock=trio.testing.MockClock(autojump_threshold=0))


# ---- HTTP: requests, exchanges, responses --------------------------------------------


@attrs.frozen
class HttpRequest:
    """One generated request; ``raw`` bytes are sent as they are."""

    method: str = "GET"
    target: str = "/"
    version: str = "HTTP/1.1"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        head = f"{self.method} {self.target} {self.version}\r\n".encode("utf-8", "surrogateescape")
        head += b"".join(name + b": " + value + b"\r\n" for name, value in self.headers)
        return head + b"\r\n" + self.body

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


@attrs.frozen
class HttpResponse:
    """One response as h11 read it; header names lower-cased."""

    status: int
    headers: dict[str, str]
    body: bytes


async def exchange(
    gw: Gateway, chunks: Sequence[bytes], *, eof: bool = True, abort: bool = False
) -> bytes:
    """Send ``chunks`` (each read separately by the server), then read until the server closes.

    ``eof`` half-closes after sending; ``abort`` drops the connection without reading (the
    in-memory form of a reset: the server's next write fails).
    """
    client = gw.connect()
    try:
        for chunk in chunks:
            await client.send_all(chunk)
            await trio.testing.wait_all_tasks_blocked()
        if eof:
            await client.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the server closed first (an error answer); read what it said
    if abort:
        await client.aclose()
        return b""
    received = bytearray()
    while True:
        try:
            data = await client.receive_some()
        except trio.BrokenResourceError:
            break
        if not data:
            break
        received += data
    await client.aclose()
    return bytes(received)


def parse_responses(data: bytes, methods: Sequence[str] = ()) -> tuple[list[HttpResponse], bytes]:
    """Parse ``data`` with h11 as a client: the responses, then what follows a ``101``.

    ``methods`` are the methods of the requests answered, in order (a HEAD response has no
    body); unknown ones count as GET. Fails on anything that is not complete HTTP/1.1.
    """
    responses: list[HttpResponse] = []
    while data:
        if data.startswith(b"HTTP/1.1 101 "):
            head, sep, rest = data.partition(b"\r\n\r\n")
            assert sep, f"a truncated 101 head: {head!r}"
            lines = head.split(b"\r\n")[1:]
            headers = {
                k.strip().lower().decode(): v.strip().decode()
                for k, _, v in (line.partition(b":") for line in lines)
            }
            assert headers.get("upgrade", "").lower() == "websocket", head
            assert "sec-websocket-accept" in headers, head
            responses.append(HttpResponse(101, headers, b""))
            return responses, rest
        method = methods[len(responses)] if len(responses) < len(methods) else "GET"
        conn = h11.Connection(h11.CLIENT)
        conn.send(
            h11.Request(
                method="HEAD" if method == "HEAD" else "GET", target="/", headers=[("host", "x")]
            )
        )
        conn.send(h11.EndOfMessage())
        conn.receive_data(data)
        status: int | None = None
        headers = {}
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise AssertionError(f"malformed HTTP response ({exc}): {data[:300]!r}") from None
            if event is h11.NEED_DATA:
                raise AssertionError(f"truncated HTTP response: {data[:300]!r}")
            if isinstance(event, h11.Response):
                assert event.http_version == b"1.1", data[:300]
                status = event.status_code
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.InformationalResponse):
                raise AssertionError(f"unexpected informational response: {data[:300]!r}")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert status is not None
        responses.append(HttpResponse(status, headers, bytes(body)))
        data = bytes(conn.trailing_data[0])
    return responses, b""


# 500 is an internal error: a bug. 403 refuses a Host not served (DNS rebinding); 501 is
# h11's answer to a transfer coding it does not implement; 502/503/504 are the REST
# subscribe's upstream failures (rest._STATUS_BY_REASON) and 503 also the connection limit.
HTTP_STATUSES = frozenset(
    {101, 200, 400, 403, 404, 405, 408, 409, 413, 422, 431, 501, 502, 503, 504}
)
CONTENT_TYPES = ("application/json", "text/html", "text/javascript", "text/css", "image/svg+xml")


def check_response(response: HttpResponse, *, head: bool = False) -> Any:
    """A response is well-formed: an expected status, a known type, JSON that parses, and a
    ``detail`` on errors. Returns the parsed JSON body (None for other types)."""
    assert response.status != 500, f"500 internal error (a bug): {response.body[:500]!r}"
    assert response.status in HTTP_STATUSES, f"unexpected status {response}"
    if response.status == 101:
        return None  # checked by parse_responses; WebSocket frames follow
    content_type = response.headers.get("content-type", "")
    if response.status == 200 and content_type.startswith("text/plain"):
        return None  # /metrics
    assert content_type.startswith(CONTENT_TYPES), f"unexpected type {response}"
    if response.status == 405:
        assert response.headers.get("allow") in {"GET, HEAD", "POST"}, response
    if response.status >= 400:
        assert content_type.startswith("application/json"), f"a non-JSON error: {response}"
    if head:
        assert not response.body, f"a body in the answer to a HEAD: {response}"
        return None
    if not content_type.startswith("application/json"):
        return None
    try:
        payload = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        raise AssertionError(f"a JSON body that does not parse: {response}") from None
    assert isinstance(payload, dict), response
    if response.status >= 400:
        assert isinstance(payload.get("detail"), str) and payload["detail"], response
    return payload


# ---- HTTP strategies -----------------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"]
ROUTES = [
    "/",
    "/metrics",
    f"{API}/health",
    f"{API}/status",
    f"{API}/subscribe",
    f"{API}/unsubscribe",
    f"{API}/cache",
    f"{API}/cache/",
    "/static/",
    STOCK_PATH,
    PRICES_PATH,
]
VALID_SYMBOLS = ["005930", "000660", "035420", "AAPL", "msft", "TSLA", "BRK.B", " 005930 "]
ODD_SYMBOLS = [
    "12345",
    "1234567",
    "",
    " ",
    "AAPL$",
    "ABCDEFGHIJK",
    "0" * 40,
    "٠٠٥٩٣٠",  # Arabic-Indic digits: \d matches them, a KIS code is ASCII
    "００５９３０",  # full-width digits
    "ＡＡＰＬ",  # full-width letters
    "straße",
    "1.2",
    "-",
    "005930\x00",
]

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
symbols_text = (
    st.sampled_from(VALID_SYMBOLS + ODD_SYMBOLS)
    | st.from_regex(r"[0-9]{6}", fullmatch=True)
    | st.from_regex(r"[A-Za-z]{1,5}", fullmatch=True)
    | st.text(max_size=12)
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Mostly a small pool, so requests repeat symbols and run into quotas and limits.
POOL = ["005930", "000660", "035420", "068270", " 005930 ", "AAPL", "MSFT", "msft", "TSLA"]
symbol_lists = (
    st.lists(st.sampled_from(POOL), min_size=1, max_size=6)
    | st.lists(st.sampled_from(POOL) | symbols_text, min_size=1, max_size=6)
    | st.lists(symbols_text | json_scalars, max_size=8)
)
RAW_JSON = [
    b"",
    b"[",
    b"{",
    b"[" * 5000,
    b"[" * 100 + b"]" * 100,
    b'["' + b"9" * 5000 + b'"]',
    b"[" + b"9" * 5000 + b"]",
    b"[1e999]",
    b'"AAPL"',
    b'{"symbols": "AAPL"}',
    b'{"symbols": null}',
    b"\xff\xfe",
    b'["\xed\xa0\x80"]',  # a UTF-8 encoded surrogate
    b'["AAPL"]\x00',
]


@st.composite
def queries(draw: st.DrawFn) -> str:
    """A query string: ``limit`` with numbers in and out of range, huge, or junk."""
    parts = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["limit", "limit", "x", "", "LIMIT"]),
                st.sampled_from(["=", "", "=="]),
                st.integers(-5, 2_000).map(str)
                | st.sampled_from(["", "0", "01", "1000", "1001", "+5", "1e3", "٣", "²"])
                | st.integers(1, 6_000).map(lambda n: "9" * n)
                | printable,
            ),
            max_size=3,
        )
    )
    return "&".join(key + sep + value for key, sep, value in parts)


def visible_ascii(target: str) -> str:
    """``target`` as h11 accepts it: visible ASCII only."""
    return "".join(c if "\x21" <= c <= "\x7e" else "_" for c in target) or "/"


@st.composite
def targets(draw: st.DrawFn, *, valid: bool) -> str:
    """A request target: a real route, a static or cache name, or junk; a query string.

    ``valid`` keeps to what h11 accepts (visible ASCII); otherwise the target is junk.
    """
    target = draw(
        st.sampled_from(ROUTES)
        | st.sampled_from(STATIC_FILES).map(lambda name: "/static/" + name)
        | st.integers(200, 5_000).map(lambda n: "/static/" + "a" * n)
        | st.sampled_from(["/static/../pyproject.toml", "/static/.", "/static//etc/passwd"])
        | symbols_text.map(lambda s: f"{API}/cache/" + s)
        | printable.map(lambda s: "/" + s)
    )
    if draw(st.booleans()):
        target += "?" + draw(queries())
    if valid:
        return visible_ascii(target)
    junk = st.text(max_size=40) | st.sampled_from(["", "/a b", "/\x00", "/\xff", "/é"])
    return draw(junk.map(lambda j: target + j) | junk)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A request body: lists of symbols, JSON of any shape, JSON bombs, bytes."""
    return draw(
        symbol_lists.map(orjson.dumps)
        | symbol_lists.map(lambda s: orjson.dumps({"symbols": s}))
        | json_values.map(orjson.dumps)
        | st.sampled_from(RAW_JSON)
        | st.binary(max_size=64)
    )


def chunked(body: bytes, sizes: Sequence[int]) -> bytes:
    """``body`` in chunked transfer coding, in chunks of ``sizes`` (then the rest)."""
    out = bytearray()
    rest = body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[: max(1, size)], rest[max(1, size) :]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    if rest:
        out += b"%x\r\n" % len(rest) + rest + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


SPECIAL_HEADERS = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "expect",
    "sec-websocket-key",
    "sec-websocket-version",
    "origin",
    "authorization",
}


@st.composite
def valid_requests(draw: st.DrawFn) -> HttpRequest:
    """A request h11 accepts: a route, a method, safe headers, a body with a true length.

    Half are what the API is for (REST subscribe/unsubscribe with a list of symbols, a GET
    of a route), so generated input reaches the handlers, not only the router.
    """
    kind = draw(st.integers(0, 3))
    if kind == 0:
        method = "POST"
        target = draw(st.sampled_from([f"{API}/subscribe", f"{API}/unsubscribe"]))
        body = draw(symbol_lists.map(orjson.dumps) | bodies())
    elif kind == 1:
        method = "GET"
        target = draw(
            st.sampled_from(["/", "/metrics", f"{API}/health", f"{API}/status"])
            | queries().map(lambda q: visible_ascii(f"{API}/cache?{q}"))
            | st.sampled_from(POOL).map(lambda s: f"{API}/cache/{s.strip()}")
        )
        body = b""
    else:
        target = draw(targets(valid=True))
        method = draw(st.sampled_from(METHODS[:7]) | tokens)
        body = draw(bodies()) if draw(st.booleans()) else b""
    headers: list[tuple[bytes, bytes]] = [(b"Host", HOST)]
    headers += draw(
        st.lists(
            st.tuples(
                tokens.filter(lambda t: t.lower() not in SPECIAL_HEADERS).map(str.encode),
                printable.map(str.encode),
            ),
            max_size=3,
        )
    )
    if body or draw(st.booleans()):
        headers.append((b"Content-Length", str(len(body)).encode()))
    if draw(st.integers(0, 9)) == 9:
        headers.append((b"Connection", b"close"))
    return HttpRequest(method, target, "HTTP/1.1", tuple(headers), body)


CORRUPTIONS = ["method", "target", "version", "host", "header", "framing", "upgrade", "expect"]


@st.composite
def hostile_requests(draw: st.DrawFn) -> HttpRequest:
    """A request with at most two parts broken (or, now and then, bytes at all): junk
    methods, targets, versions, hosts, header lines, smuggling framings, upgrades."""
    if draw(st.integers(0, 9)) == 9:
        return HttpRequest(raw=draw(st.binary(max_size=200)))
    broken = draw(st.sets(st.sampled_from(CORRUPTIONS), max_size=2))
    # HEAD is left to the well-formed property: a HEAD answer has no body, so reading the
    # answers needs each request's method, which junk before it can shift.
    methods = st.sampled_from(["GET", "GET", "GET", "POST", *METHODS])
    if "method" in broken:
        methods = tokens | st.text(max_size=8)
    method = draw(methods.filter(_not_head))
    target = draw(targets(valid="target" not in broken))
    version = "HTTP/1.1"
    if "version" in broken:
        version = draw(st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1 x", ""]))
    body = draw(bodies()) if draw(st.booleans()) else b""
    headers: list[tuple[bytes, bytes]] = [(b"Host", HOST)]
    if "host" in broken:
        hosts = [b"127.0.0.1:8000", b"[::1]", b"", b"a b", b"evil.example", b"localhost:x"]
        headers = draw(st.lists(st.sampled_from(hosts).map(lambda h: (b"Host", h)), max_size=2))
    headers += draw(
        st.lists(
            st.tuples(
                tokens.filter(lambda t: t.lower() not in SPECIAL_HEADERS).map(str.encode),
                printable.map(str.encode),
            ),
            max_size=2,
        )
    )
    if "header" in broken:
        headers += draw(
            st.lists(
                st.tuples(
                    st.text(max_size=8).map(lambda t: t.encode("utf-8")),
                    st.text(
                        alphabet=st.characters(min_codepoint=0x00, max_codepoint=0xFF), max_size=40
                    ).map(lambda t: t.encode("latin-1")),
                )
                | st.sampled_from(
                    [
                        (b"X-A", b"b\r\nContent-Length: 5"),
                        (b" Host", b"localhost"),
                        (b"X-Long", b"v" * 20_000),
                        (b"Content-Length", b"5, 6"),
                    ]
                ),
                min_size=1,
                max_size=3,
            )
        )
    framings = ["length", "none", "chunked"]
    if "framing" in broken:
        framings = ["wrong", "both", "te-junk", "huge", "twice"]
    framing = draw(st.sampled_from(framings))
    if framing in ("length", "twice"):
        headers.append((b"Content-Length", str(len(body)).encode()))
        if framing == "twice":
            headers.append((b"Content-Length", str(len(body) + 1).encode()))
    elif framing == "wrong":
        wrong = draw(st.integers(0, 100_000).map(str) | st.sampled_from(["-1", "1e3", "0x10", ""]))
        headers.append((b"Content-Length", wrong.encode()))
    elif framing == "huge":
        headers.append((b"Content-Length", b"9" * draw(st.integers(19, 6_000))))
    elif framing in ("chunked", "both"):
        raw_body = body
        body = chunked(body, draw(st.lists(st.integers(1, 40), max_size=4)))
        headers.append((b"Transfer-Encoding", b"chunked"))
        if framing == "both":
            headers.append((b"Content-Length", str(len(raw_body)).encode()))
    elif framing == "te-junk":
        coding = draw(
            st.sampled_from([b"gzip", b"chunked, chunked", b"identity", b"chunked, gzip"])
        )
        headers.append((b"Transfer-Encoding", coding))
    if "upgrade" in broken:
        headers += [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
        headers += draw(
            st.lists(
                st.sampled_from(
                    [
                        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                        (b"Sec-WebSocket-Version", b"13"),
                        (b"Sec-WebSocket-Version", b"8"),
                        (b"Sec-WebSocket-Key", b""),
                        (b"Origin", b"http://evil.example"),
                        (b"Origin", b"null"),
                    ]
                ),
                max_size=3,
            )
        )
    if "expect" in broken:
        headers.append((b"Expect", b"100-continue"))
    headers = draw(st.permutations(headers))
    return HttpRequest(method, target, version, tuple(headers), body)


def _not_head(method: str) -> bool:
    return method != "HEAD"


def rest_subscribe(body: bytes) -> HttpRequest:
    """``POST /api/v2/realtime/subscribe`` with ``body``."""
    length = str(len(body)).encode()
    headers = ((b"Host", HOST), (b"Content-Length", length))
    return HttpRequest("POST", f"{API}/subscribe", "HTTP/1.1", headers, body)


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (modulo its length): the pieces the server reads one by one."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a] or [b""]


def http_config(**changes: Any) -> Config:
    # Slow ticks: a symbol held by REST ticks through every virtual timeout, at a real cost.
    return Config(sim_ticks_per_second=0.001, sim_always_open=True, **changes)


# ---- HTTP properties -----------------------------------------------------------------


def statuses_for(request: HttpRequest) -> set[int]:
    """What a well-formed request to this target may be answered (the REST spec).

    A prefix route (``/static/``, ``cache/``) takes one path segment; a HEAD may be
    answered as its GET (without the body) or refused with 405.
    """
    path = request.path
    method = "GET" if request.method == "HEAD" else request.method  # HEAD is GET's head
    get_only = {200} if method == "GET" else {405}
    for prefix in ("/static/", f"{API}/cache/"):
        tail = path.removeprefix(prefix)
        if tail != path and tail and "/" not in tail:
            if prefix == "/static/" and tail not in STATIC_FILES:
                return {404} if method == "GET" else {404, 405}
            if prefix == "/static/":
                return get_only
            return {200, 404, 422} if method == "GET" else get_only - {200}
    if path in ("/", "/metrics", f"{API}/health", f"{API}/status"):
        return get_only
    if path == f"{API}/cache":
        if method != "GET":
            return get_only - {200}
        return {200} if _limit_ok(request.query) else {422}
    if path in (f"{API}/subscribe", f"{API}/unsubscribe"):
        return {200, 400, 409, 422, 502, 503, 504} if method == "POST" else {405}
    return {404}


def _limit_ok(query: str) -> bool:
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key == "limit":
            digits = value.lstrip("0")
            if not re.fullmatch(r"[0-9]+", value, re.ASCII) or len(digits) > 4:
                return False
            if not 1 <= int(digits or "0") <= 1_000:
                return False
    return True


@fuzz_settings(max_examples=250)
@given(
    requests=st.lists(valid_requests(), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 10_000), max_size=3),
)
# Found by this property: a HEAD gets no answer at all; a symbol repeated after its first
# try failed (quota 2 here) is reported subscribed; Unicode digits pass as a Korean code.
@example(requests=[HttpRequest("HEAD", "/", headers=((b"Host", HOST),))], cuts=[])
@example(requests=[rest_subscribe(b'["AAPL","MSFT","TSLA","TSLA"]')], cuts=[])
@example(requests=[rest_subscribe('["٠٠٥٩٣٠"]'.encode())], cuts=[])
# Issue 11's kill paths: a long static name, a limit with thousands of digits.
@example(requests=[HttpRequest(target="/static/" + "a" * 300, headers=((b"Host", HOST),))], cuts=[])
@example(
    requests=[HttpRequest(target=f"{API}/cache?limit=" + "9" * 5_000, headers=((b"Host", HOST),))],
    cuts=[],
)
def test_every_well_formed_request_is_answered_as_the_api_says(
    requests: list[HttpRequest], cuts: list[int]
) -> None:
    """Pipelined well-formed requests: one response each, in order, with the right status;
    the REST holds are exactly what the subscribe/unsubscribe answers said."""

    async def scenario() -> None:
        # Small quotas: REST subscribes run into them (409, or a partial success).
        async with gateway(http_config(kis_max_subscriptions=2, fmp_max_subscriptions=2)) as gw:
            async with gw.connections():
                data = b"".join(r.encode() for r in requests)
                received = await exchange(gw, split(data, cuts))
            gw.check_no_failures()
            responses, rest = parse_responses(received, [r.method for r in requests])
            assert not rest, f"bytes after the last response: {rest[:200]!r}"
            told: set[str] = set()
            for index, request in enumerate(requests):
                assert index < len(responses), (
                    f"request {index} ({request.method} {request.target[:80]}) got no answer; "
                    f"answers: {[r.status for r in responses]}"
                )
                response = responses[index]
                event(
                    f"{request.method if request.method in METHODS else 'junk'} {response.status}"
                )
                payload = check_response(response, head=request.method == "HEAD")
                assert response.status in statuses_for(request), (request, response)
                if response.status == 200 and request.path in (
                    f"{API}/subscribe",
                    f"{API}/unsubscribe",
                ):
                    assert isinstance(payload, dict)
                    changed = payload["symbols"]
                    assert all(isinstance(s, str) for s in changed), payload
                    assert len(set(changed)) == len(changed), f"duplicates: {payload}"
                    if request.path.endswith("/subscribe"):
                        assert all(CANONICAL.fullmatch(s) for s in changed), payload
                        told |= set(changed)
                    else:
                        assert set(changed) <= told, payload
                        told -= set(changed)
                    assert payload["subscribed_total"] == len(told), (told, payload)
                if response.headers.get("connection", "").lower() == "close":
                    assert index == len(responses) - 1, "answers after a connection: close"
                    break
            assert set(gw.state.rest_holds.symbols) == told, (
                f"REST holds {sorted(gw.state.rest_holds.symbols)}, told {sorted(told)}"
            )
            assert gw.state.connections == 0

    run_example(scenario)


@fuzz_settings(max_examples=400)
@given(
    requests=st.lists(hostile_requests(), min_size=1, max_size=3),
    trailer=st.binary(max_size=40),
    cuts=st.lists(st.integers(0, 100_000), max_size=3),
    eof=st.booleans(),
    abort=st.integers(0, 5).map(lambda n: n == 5),
)
# Found by this property: a client gone before its answer is written makes an
# UnboundLocalError escape handle_connection (in production: the listener, the process).
@example(requests=[HttpRequest(raw=b"!")], trailer=b"", cuts=[], eof=False, abort=True)
def test_hostile_http_input_never_escapes_and_every_answer_is_well_formed(
    requests: list[HttpRequest], trailer: bytes, cuts: list[int], eof: bool, abort: bool
) -> None:
    """Junk methods, targets, versions, headers, smuggling framings, pipelines, split reads,
    half-closes and resets: the connection ends alone and every answer is HTTP/1.1."""

    data = b"".join(r.encode() for r in requests) + trailer
    # Junk can join into a HEAD the model does not know of ("HEAD" + " / HTTP/1.1 ..."),
    # whose answer has no body: HEAD is the well-formed property's, so leave such data out.
    assume(b"HEAD" not in data)

    async def scenario() -> None:
        async with gateway(http_config()) as gw:
            async with gw.connections():
                received = await exchange(gw, split(data, cuts), eof=eof, abort=abort)
            gw.check_no_failures()
            responses, _ = parse_responses(received, [r.method for r in requests])
            for response in responses:
                event(f"status {response.status}")
                check_response(response)
            assert gw.state.connections == 0

    run_example(scenario)


@fuzz_settings(max_examples=150)
@given(data=st.binary(max_size=400), eof=st.booleans())
def test_random_bytes_get_well_formed_answers(data: bytes, eof: bool) -> None:
    """Whatever bytes arrive, the answer (if any) is HTTP/1.1 and the connection ends alone."""

    async def scenario() -> None:
        async with gateway(http_config()) as gw:
            async with gw.connections():
                received = await exchange(gw, [data], eof=eof)
            gw.check_no_failures()
            responses, _ = parse_responses(received)
            assert len(responses) <= 1, "random bytes are at most one (bad) request"
            for response in responses:
                check_response(response)

    run_example(scenario)


@fuzz_settings(max_examples=80)
@given(
    max_clients=st.integers(1, 3),
    clients=st.lists(st.sampled_from(["hold", "request", "reset", "reset-late"]), max_size=8),
)
@example(max_clients=1, clients=["hold", "reset"])  # issue 11: a reset while being refused
def test_connections_past_the_limit_are_refused_alone(max_clients: int, clients: list[str]) -> None:
    """Past ``max_clients`` each connection gets a 503 with Retry-After — or, when it resets
    before reading, nothing — and the server and its count of connections survive."""

    async def scenario() -> None:
        async with gateway(http_config(max_clients=max_clients)) as gw:
            async with gw.connections():
                held: list[ClientStream] = []
                for kind in clients:
                    await trio.testing.wait_all_tasks_blocked()  # earlier ones settled
                    refused = gw.state.connections >= max_clients
                    client = gw.connect()
                    await trio.testing.wait_all_tasks_blocked()
                    if kind == "hold":  # half a request head: a slot taken for a while
                        try:
                            await client.send_all(b"GET / HTTP/1.1\r\nHo")
                        except trio.BrokenResourceError:
                            assert refused, "an admitted connection closed at once"
                        held.append(client)
                    elif kind == "reset":  # gone before the server answered
                        await client.aclose()
                    else:
                        request = f"GET {API}/health HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
                        try:
                            await client.send_all(request)
                            await client.send_eof()
                        except trio.BrokenResourceError:
                            assert refused, "an admitted connection closed before its request"
                        if kind == "reset-late":  # gone before reading the answer
                            await client.aclose()
                            continue
                        received = b""
                        while chunk := await client.receive_some():
                            received += chunk
                        await client.aclose()
                        responses, _ = parse_responses(received)
                        assert len(responses) == 1, received
                        check_response(responses[0])
                        assert (responses[0].status == 503) == refused, (refused, responses)
                        if refused:
                            assert "retry-after" in responses[0].headers, responses[0]
                        else:
                            assert responses[0].status == 200, responses[0]
                    await trio.testing.wait_all_tasks_blocked()
                for client in held:
                    await client.aclose()
            gw.check_no_failures()
            assert gw.state.connections == 0

    run_example(scenario)


# ---- WebSocket frames after an upgrade -----------------------------------------------

UPGRADE_HEAD = (
    "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)
CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013})


@st.composite
def client_frames(draw: st.DrawFn) -> bytes:
    """One client frame, mostly well-formed (masked, valid opcode), sometimes not."""
    fin = draw(st.integers(0, 4)) != 4
    rsv = draw(st.sampled_from([0] * 8 + [1, 2, 4, 7]))
    opcode = draw(st.sampled_from([0x1] * 4 + [0x0, 0x0, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB, 0xF]))
    payload = draw(
        st.builds(
            lambda action, codes: orjson.dumps({"action": action, "codes": codes}),
            st.sampled_from(["subscribe", "ping", "x"]),
            symbol_lists,
        )
        | st.binary(max_size=140)
        | st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\x03\xe8", b"\x03\xe8bye", b"\x00"])
    )
    masked = draw(st.integers(0, 9)) != 9
    key = draw(st.binary(min_size=4, max_size=4))
    size = len(payload)
    header = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header += bytes([mask_bit | size])
    elif size < 1 << 16:
        header += bytes([mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        header += bytes([mask_bit | 127]) + size.to_bytes(8, "big")
    if masked:
        payload = key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + payload


def check_server_frames(data: bytes, protocol_types: frozenset[str]) -> None:
    """Server frames parse (unmasked, valid), texts are JSON objects of the protocol's types,
    and a close carries a code the server documents."""
    frames = FrameProtocol(client=True, extensions=[])
    frames.receive_bytes(data)
    try:
        for frame in frames.received_frames():
            if not frame.frame_finished:
                break  # the last frame, cut short: the server dropped the connection mid-write
            if frame.opcode is Opcode.TEXT:
                assert frame.message_finished, "the server fragments nothing"
                message = orjson.loads(str(frame.payload))
                assert isinstance(message, dict), message
                assert message.get("type") in protocol_types, message
            elif frame.opcode is Opcode.CLOSE:
                assert isinstance(frame.payload, tuple), frame
                assert int(frame.payload[0]) in CLOSE_CODES, f"close code {frame.payload}"
            else:
                assert frame.opcode in (Opcode.PING, Opcode.PONG), frame
    except ParseFailed as exc:
        raise AssertionError(f"a malformed frame from the server: {exc}") from None


@fuzz_settings(max_examples=250)
@given(
    path=st.sampled_from([STOCK_PATH, PRICES_PATH]),
    frames=st.lists(client_frames(), max_size=6),
    trailer=st.binary(max_size=20),
    eof=st.booleans(),
)
def test_garbage_frames_after_an_upgrade_end_the_session_alone(
    path: str, frames: list[bytes], trailer: bytes, eof: bool
) -> None:
    """Frames with bad opcodes, reserved bits, no mask, invalid UTF-8, stray continuations
    and junk close payloads end one session, with well-formed frames and a valid close."""

    async def scenario() -> None:
        config = http_config()
        async with gateway(config) as gw:
            async with gw.connections():
                data = UPGRADE_HEAD.format(path=path).encode() + b"".join(frames) + trailer
                received = await exchange(gw, [data], eof=eof)
            gw.check_no_failures()
            responses, ws_bytes = parse_responses(received)
            assert [r.status for r in responses] == [101]
            check_server_frames(ws_bytes, PROTOCOLS[path].types)
            assert gw.hub.statistics().subscribers == 1, "a session left its subscriber behind"

    run_example(scenario)


# ---- WebSocket protocols: message sequences ------------------------------------------


@attrs.frozen
class Protocol:
    """What the tests know of one client protocol."""

    path: str
    key: str  # the list of symbols in a request
    list_action: str
    list_type: str
    greeting: str
    push: str  # the pushed update's type, skipped when reading replies
    push_symbol: str  # its symbol field
    types: frozenset[str]  # every reply type


STOCK = Protocol(
    STOCK_PATH,
    "codes",
    "list_subscriptions",
    "subscriptions_list",
    "connection_established",
    "stock_price",
    "stock_code",
    frozenset(
        {
            "connection_established",
            "subscription_result",
            "unsubscription_result",
            "subscriptions_list",
            "pong",
            "warning",
            "error",
            "stock_price",
        }
    ),
)
PRICES = Protocol(
    PRICES_PATH,
    "symbols",
    "get_subscriptions",
    "subscriptions",
    "connected",
    "price_update",
    "symbol",
    frozenset({"connected", "subscription", "subscriptions", "pong", "error", "price_update"}),
)
PROTOCOLS = {STOCK_PATH: STOCK, PRICES_PATH: PRICES}


def _is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_TEXT = {"message": lambda v: isinstance(v, str)}
SHAPES: dict[str, dict[str, Callable[[object], bool]]] = {
    "connection_established": {"message": lambda v: isinstance(v, str), "actions": _is_str_list},
    "connected": _TEXT,
    "warning": _TEXT,
    "error": _TEXT,
    "pong": {},
    "subscription_result": {
        "success": lambda v: isinstance(v, bool),
        "subscribed": _is_str_list,
        "failed": _is_str_list,
        "error": lambda v: v is None or isinstance(v, str),
        "total_subscribed": _is_int,
    },
    "unsubscription_result": {
        "success": lambda v: isinstance(v, bool),
        "unsubscribed": _is_str_list,
        "error": lambda v: v is None or isinstance(v, str),
        "total_subscribed": _is_int,
    },
    "subscriptions_list": {
        "subscribed_codes": _is_str_list,
        "count": _is_int,
        "kis_active_subscriptions": _is_int,
        "kis_max_subscriptions": _is_int,
    },
    "subscription": {
        "action": lambda v: v in ("subscribed", "unsubscribed"),
        "symbols": _is_str_list,
        "subscribed_total": _is_int,
    },
    "subscriptions": {"symbols": _is_str_list, "subscribed_total": _is_int},
}


def check_shape(protocol: Protocol, message: object) -> Message:
    """A reply is a JSON object with one of the protocol's types and that type's fields."""
    assert isinstance(message, dict), f"not a JSON object: {message!r}"
    kind = message.get("type")
    assert isinstance(kind, str) and kind in protocol.types, f"unknown type: {message}"
    for field, valid in SHAPES.get(kind, {}).items():
        assert field in message and valid(message[field]), f"bad {field!r} in {message}"
    return message


@attrs.define
class Client:
    """One WebSocket client, its server-side session, and what it was told it holds."""

    protocol: Protocol
    ws: trio_websocket.WebSocketConnection
    session: ClientSession
    told: set[str] = attrs.Factory(set)


@asynccontextmanager
async def ws_client(gw: Gateway, protocol: Protocol) -> AsyncIterator[Client]:
    """A trio-websocket client over memory streams, greeted, with its server session."""
    async with trio.open_nursery() as nursery:
        before = set(gw.state.keep_alive.sessions)
        # trio-websocket annotates SocketStream, but any trio Stream works
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            gw.connect(),  # type: ignore[arg-type]
            HOST.decode(),
            protocol.path,
        )
        try:
            greeting = check_shape(protocol, orjson.loads(await ws.get_message()))
            assert greeting["type"] == protocol.greeting, greeting
            (session,) = set(gw.state.keep_alive.sessions) - before
            assert isinstance(session, ClientSession)
            yield Client(protocol, ws, session)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def drain(client: Client) -> list[Message]:
    """Everything the server sent, once it has nothing more to send (virtual time is idle)."""
    messages: list[Message] = []
    with trio.move_on_after(QUIET):
        while True:
            try:
                raw = await client.ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                raise AssertionError(f"the server closed the connection: {closed.reason}") from None
            assert isinstance(raw, str), f"a binary message from the server: {raw!r}"
            messages.append(check_shape(client.protocol, orjson.loads(raw)))
    return messages


def take_replies(client: Client, messages: list[Message]) -> list[Message]:
    """Follow ``messages`` in wire order: update what the client was told it holds, check
    each push is for a symbol it was told about; return the replies (pushes left out)."""
    protocol, told = client.protocol, client.told
    replies = []
    for message in messages:
        kind = message["type"]
        if kind == protocol.push:
            symbol = message.get(protocol.push_symbol)
            assert symbol in told, f"{kind} for {symbol!r}, not subscribed (told: {sorted(told)})"
            continue
        if kind == "error" and "failed" in message:  # revoked: the upstream stopped serving
            assert _is_str_list(message["failed"]) and message["failed"], message
            told -= set(message["failed"])
            continue
        replies.append(message)
        if kind == "subscription_result":
            subscribed = message["subscribed"]
            assert len(set(subscribed)) == len(subscribed), f"duplicates: {message}"
            assert not set(subscribed) & set(message["failed"]), f"both ways: {message}"
            assert all(CANONICAL.fullmatch(s) for s in subscribed), f"not canonical: {message}"
            assert message["success"] == (not message["failed"]), message
            told |= set(subscribed)
            assert message["total_subscribed"] == len(told), (sorted(told), message)
        elif kind == "unsubscription_result":
            released = message["unsubscribed"]
            assert set(released) <= told, f"released what it was not told of: {message}"
            told -= set(released)
            assert message["total_subscribed"] == len(told), (sorted(told), message)
        elif kind == "subscription":
            changed = message["symbols"]
            assert len(set(changed)) == len(changed), f"duplicates: {message}"
            if message["action"] == "subscribed":
                assert all(CANONICAL.fullmatch(s) for s in changed), f"not canonical: {message}"
                assert not set(changed) & told, f"'changed' symbols already held: {message}"
                assert not set(changed) & set(message.get("failed", [])), f"both: {message}"
                told |= set(changed)
            else:
                assert set(changed) <= told, f"released what it was not told of: {message}"
                told -= set(changed)
            assert message["subscribed_total"] == len(told), (sorted(told), message)
    return replies


def is_churn(sent: str | bytes) -> bool:
    """True for a JSON object whose action subscribes or unsubscribes (the churn bucket's)."""
    if isinstance(sent, bytes):
        return False
    try:
        request = orjson.loads(sent)
    except orjson.JSONDecodeError:
        return False
    return isinstance(request, dict) and request.get("action") in ("subscribe", "unsubscribe")


def reply_patterns(protocol: Protocol, sent: str | bytes, max_symbols: int) -> list[list[str]]:
    """The reply types a request may get (the protocols' documents, issue 11)."""
    if isinstance(sent, bytes):
        return [["error"]]
    try:
        request = orjson.loads(sent)
    except orjson.JSONDecodeError:
        return [["error"]]
    if not isinstance(request, dict):
        return [["error"]]
    action = request.get("action")
    if action == "ping":
        return [["pong"]]
    if action == protocol.list_action:
        return [[protocol.list_type]]
    if action not in ("subscribe", "unsubscribe"):
        return [["error"]]
    codes = request.get(protocol.key)
    if not _is_str_list(codes) or not 1 <= len(codes) <= max_symbols:
        return [["error"]]
    if protocol is STOCK:
        main = "subscription_result" if action == "subscribe" else "unsubscription_result"
        return [[main], ["warning", main]]
    return [["subscription"], ["subscription", "error"]]


async def check_final_state(gw: Gateway, clients: Sequence[Client], config: Config) -> None:
    """Each client's list request and its hub subscriber say exactly what it was told."""
    for client in clients:
        await client.ws.send_message(orjson.dumps({"action": client.protocol.list_action}).decode())
        listing = take_replies(client, await drain(client))
        assert [m["type"] for m in listing] == [client.protocol.list_type], listing
        (reply,) = listing
        told = sorted(client.told)
        if client.protocol is STOCK:
            assert reply["subscribed_codes"] == told, (told, reply)
            assert reply["count"] == len(told), reply
            held_kr = {s for c in clients for s in c.session.subscriber.symbols if s.isdigit()}
            active = reply["kis_active_subscriptions"]
            assert len(held_kr) <= active <= config.kis_max_subscriptions, (held_kr, reply)
            assert active <= len(gw.hub.held(Market.KR)), reply
            assert reply["kis_max_subscriptions"] == config.kis_max_subscriptions, reply
        else:
            assert reply["symbols"] == told, (told, reply)
            assert reply["subscribed_total"] == len(told), reply
        held = sorted(client.session.subscriber.symbols)
        assert held == told, f"the server holds {held} for the client, which was told {told}"
        assert set(held) <= set(gw.hub.held()), "a subscriber holds a symbol not held upstream"


# ---- WebSocket strategies ------------------------------------------------------------

Step = tuple[int, str | bytes] | float  # (client index, message) or virtual seconds to wait

ACTIONS = ["subscribe", "unsubscribe", "list_subscriptions", "get_subscriptions", "ping"]


JUNK_MESSAGES = [
    "",
    "{",
    "[" * 3000,
    '{"action": "subscribe", "codes": [' + "9" * 5000 + "]}",
    '{"action": "subscribe", "symbols": [1e999]}',
    '{"action": "ping", "action": "subscribe"}',
    '{"action": "subscribe", "codes": ["005930"], "codes": 5}',
    "null",
]
JUNK_ACTIONS = ["SUBSCRIBE", "subscribe ", "", "auth", "__class__", "too many"]


@st.composite
def ws_messages(draw: st.DrawFn, key: str) -> str | bytes:
    """A client message: mostly an action with a list of symbols under ``key`` (the
    protocol's), sometimes the other key, a junk action, or anything at all.

    Rare choices are the high draws, so a failing example shrinks to a plain request.
    """
    kind = draw(st.integers(0, 19))
    if kind == 16:
        return draw(st.binary(max_size=40))
    if kind == 17:
        return draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
    if kind == 18:
        return orjson.dumps(draw(json_values)).decode()
    if kind == 19:
        return draw(st.sampled_from(JUNK_MESSAGES))
    if kind == 15:
        action: object = draw(
            st.sampled_from(JUNK_ACTIONS) | json_scalars | st.lists(st.just("subscribe"))
        )
    else:
        action = draw(st.sampled_from(["subscribe", "unsubscribe", *ACTIONS, "subscribe"]))
    request: dict[str, Any] = {"action": action}
    if draw(st.integers(0, 19)) == 19:
        del request["action"]
    if draw(st.integers(0, 7)) == 7:
        key = "symbols" if key == "codes" else "codes"
    if draw(st.integers(0, 4)) == 4:
        request[key] = draw(json_values)
    else:
        request[key] = draw(symbol_lists)
    if draw(st.integers(0, 7)) == 7:
        request[draw(st.text(max_size=6))] = draw(json_values)
    return orjson.dumps(request).decode()


@st.composite
def steps(draw: st.DrawFn, protocols: Sequence[Protocol]) -> list[Step]:
    """Messages from the clients, in some order, and now and then a wait."""
    plan: list[Step] = []
    for _ in range(draw(st.integers(1, 14))):
        if draw(st.integers(0, 5)) == 5:
            plan.append(draw(st.floats(0.01, 1.5)))
        else:
            index = draw(st.integers(0, len(protocols) - 1))
            plan.append((index, draw(ws_messages(protocols[index].key))))
    return plan


@attrs.frozen
class Setup:
    """The gateway's quotas and limits for one example (small, so they are reached)."""

    kis_quota: int
    fmp_quota: int
    max_symbols: int
    linger: float

    def config(self) -> Config:
        return Config(
            sim_ticks_per_second=2.0,
            sim_always_open=True,
            kis_max_subscriptions=self.kis_quota,
            fmp_max_subscriptions=self.fmp_quota,
            max_symbols_per_client=self.max_symbols,
            linger=self.linger,
        )


setups = st.builds(
    Setup,
    kis_quota=st.sampled_from([1, 2, 40]),
    fmp_quota=st.sampled_from([1, 2, 500]),
    max_symbols=st.sampled_from([2, 4, 200]),
    linger=st.sampled_from([0.0, 0.5, 5.0]),
)


GENEROUS = ClientLimits(
    churn_per_second=1e6, churn_burst=10**6, messages_per_second=1e6, messages_burst=10**6
)


@fuzz_settings(max_examples=400)
@given(
    setup=setups,
    paths=st.lists(st.sampled_from([STOCK_PATH, PRICES_PATH]), min_size=1, max_size=2),
    data=st.data(),
)
def test_ws_sessions_answer_every_message_and_hold_what_they_said(
    setup: Setup, paths: list[str], data: st.DataObject
) -> None:
    """Sequences of valid and invalid messages to one or two clients (either protocol):
    every message gets the documented replies, every reply is well-formed, no push for a
    symbol not subscribed, and what each client was told is exactly what it holds."""
    plan = data.draw(steps([PROTOCOLS[p] for p in paths]), label="steps")
    config = setup.config()

    async def scenario() -> None:
        async with gateway(config, GENEROUS) as gw:
            async with gw.connections():
                await run_clients(gw, config, [PROTOCOLS[p] for p in paths], plan)
            gw.check_no_failures()
            await check_released(gw, config)

    run_example(scenario)


# Found by the property above, kept as fixed examples (st.data() cannot take @example).
WS_REGRESSIONS = [
    pytest.param(  # repeated after its first try failed (quota 1): reported subscribed
        Setup(kis_quota=1, fmp_quota=1, max_symbols=200, linger=5.0),
        [STOCK_PATH],
        [(0, '{"action": "subscribe", "codes": ["005930", "000660", "000660"]}')],
        id="seed000-repeated-code-after-quota-failure",
    ),
    pytest.param(
        Setup(kis_quota=1, fmp_quota=1, max_symbols=200, linger=5.0),
        [PRICES_PATH],
        [(0, '{"action": "subscribe", "symbols": ["AAPL", "MSFT", "msft"]}')],
        id="seed003-repeated-symbol-after-quota-failure",
    ),
    pytest.param(
        Setup(kis_quota=40, fmp_quota=500, max_symbols=200, linger=5.0),
        [PRICES_PATH],
        [(0, '{"action": "subscribe", "symbols": ["AAPL", "aapl"]}')],
        id="seed003-one-symbol-twice",
    ),
    pytest.param(  # Arabic-Indic digits: \d{6} takes them for a KIS code
        Setup(kis_quota=40, fmp_quota=500, max_symbols=200, linger=5.0),
        [STOCK_PATH],
        [(0, '{"action": "subscribe", "codes": ["٠٠٥٩٣٠"]}')],
        id="seed000-unicode-digits",
    ),
    pytest.param(  # full-width digits
        Setup(kis_quota=40, fmp_quota=500, max_symbols=200, linger=5.0),
        [PRICES_PATH],
        [(0, '{"action": "subscribe", "symbols": ["００５９３０"]}')],
        id="seed003-fullwidth-digits",
    ),
]


@pytest.mark.parametrize(("setup", "paths", "plan"), WS_REGRESSIONS)
def test_ws_sessions_regressions(setup: Setup, paths: list[str], plan: list[Step]) -> None:
    """The property's checks on the sequences that broke them."""
    config = setup.config()

    async def scenario() -> None:
        async with gateway(config, GENEROUS) as gw:
            async with gw.connections():
                await run_clients(gw, config, [PROTOCOLS[p] for p in paths], plan)
            gw.check_no_failures()
            await check_released(gw, config)

    run_example(scenario)


async def run_clients(
    gw: Gateway, config: Config, protocols: list[Protocol], plan: list[Step]
) -> None:
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(ws_client(gw, p)) for p in protocols]
        for step in plan:
            if isinstance(step, float):
                await trio.sleep(step)
            else:
                index, sent = step
                await clients[index].ws.send_message(sent)
            for index, client in enumerate(clients):
                replies = take_replies(client, await drain(client))
                if isinstance(step, float) or index != step[0]:
                    assert not replies, f"replies to nothing: {replies}"
                    continue
                patterns = reply_patterns(client.protocol, step[1], config.max_symbols_per_client)
                kinds = [r["type"] for r in replies]
                event("replies: " + " + ".join(kinds))
                assert kinds in patterns, f"{step[1]!r} answered {replies}, expected {patterns}"
                if client.protocol is PRICES and kinds == ["subscription", "error"]:
                    if replies[0]["action"] == "subscribed":
                        assert "failed" in replies[0], replies
                elif client.protocol is PRICES and kinds == ["subscription"]:
                    assert "failed" not in replies[0], replies
        await check_final_state(gw, clients, config)
        assert gw.hub.statistics().subscribers == 1 + len(clients)  # REST's and the sessions'


async def check_released(gw: Gateway, config: Config) -> None:
    """Every client gone: no subscriber left but REST's, and nothing held after the linger."""
    assert gw.state.connections == 0
    assert gw.hub.statistics().subscribers == 1, "a session's subscriber outlived it"
    await trio.sleep(config.linger + 1)
    assert gw.hub.held() == [], f"held after every client left: {gw.hub.held()}"


@fuzz_settings(max_examples=150)
@given(path=st.sampled_from([STOCK_PATH, PRICES_PATH]), data=st.data())
def test_default_rate_limits_answer_with_well_formed_errors(path: str, data: st.DataObject) -> None:
    """With the default limits, floods of messages: a refused message gets one ``error``,
    the token buckets' bounds hold both ways, the session stays up and consistent."""
    protocol = PROTOCOLS[path]
    flood = st.tuples(ws_messages(protocol.key), st.integers(1, 60))
    bursts = data.draw(st.lists(flood | st.floats(0.05, 3.0), min_size=1, max_size=5))

    async def scenario() -> None:
        config = Config(sim_ticks_per_second=5.0, sim_always_open=True)
        limits = client_limits(config)
        async with gateway(config, limits) as gw:
            async with gw.connections(), ws_client(gw, protocol) as client:
                admitted = churn_admitted = 0  # tokens taken from each bucket
                first_at: float | None = None
                churn_first_at: float | None = None
                for burst in bursts:
                    if isinstance(burst, float):
                        await trio.sleep(burst)
                        assert not take_replies(client, await drain(client))
                        continue
                    sent, count = burst
                    churn = is_churn(sent)
                    for _ in range(count):
                        now = trio.current_time()
                        await client.ws.send_message(sent)
                        replies = take_replies(client, await drain(client))
                        assert replies, f"{sent!r} got no answer"
                        text = str(replies[0].get("message", ""))
                        if replies[0]["type"] == "error" and text.startswith("too many"):
                            assert replies == [{"type": "error", "message": text}], replies
                            if "subscribe/unsubscribe" not in text:  # the message bucket
                                event("refused: too many messages")
                                assert admitted >= limits.messages_burst, (admitted, replies)
                                continue
                            event("refused: too many subscribe/unsubscribe")
                            assert churn, f"a churn refusal for {sent!r}"
                            assert churn_admitted >= limits.churn_burst, (churn_admitted,)
                        else:
                            patterns = reply_patterns(protocol, sent, config.max_symbols_per_client)
                            kinds = [r["type"] for r in replies]
                            assert kinds in patterns, f"{sent!r} answered {replies}"
                        first_at = now if first_at is None else first_at
                        admitted += 1
                        bound = limits.messages_burst + limits.messages_per_second * (
                            now - first_at + QUIET
                        )
                        assert admitted <= bound, (admitted, now - first_at)
                        if churn and not text.startswith("too many"):
                            churn_first_at = now if churn_first_at is None else churn_first_at
                            churn_admitted += 1
                            bound = limits.churn_burst + limits.churn_per_second * (
                                now - churn_first_at + QUIET
                            )
                            assert churn_admitted <= bound, (churn_admitted, now - churn_first_at)
                await trio.sleep(3)  # let both buckets refill for the final list request
                await check_final_state(gw, [client], config)
            gw.check_no_failures()
            await check_released(gw, config)

    run_example(scenario)
