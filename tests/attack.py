"""Tools for attacking a running gateway the way the internet will (issue 11).

- :func:`running_gateway` starts ``python -m trio_stock`` as a child process, with its
  stderr in a log file that every failure message quotes, and reads its RSS and open file
  descriptors from ``/proc``.
- :class:`RawWebSocket` is a hand-written client end of a WebSocket: every byte it sends
  is exactly what a test built with :func:`frame`, masked or not, valid or not.
- :func:`exchange` sends raw bytes as an HTTP client and reads every answer until the
  gateway closes the connection.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import trio

MiB = 1 << 20
START_TIMEOUT = 30.0  # seconds for the banner; the gateway starts in about one
STOP_TIMEOUT = 20.0  # seconds for a graceful SIGTERM shutdown (close grace is 2 s)
HEALTH_TIMEOUT = 15.0  # seconds for /health to answer after an attack
SETTLE_TIMEOUT = 15.0  # seconds for the gateway's counts to settle after clients left
POLL_INTERVAL = 0.05  # seconds between polls of another process's state
LOG_TAIL = 12_000  # characters of the gateway's stderr quoted in a failure message
_BANNER = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

# WebSocket opcodes (RFC 6455 §5.2)
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
MASK_KEY = b"\x37\xfa\x21\x3d"  # fixed, so a flood is one frame repeated

# Pushed price updates of both protocols, skipped when waiting for a reply.
UPDATES = ("stock_price", "price_update")
Message = dict[str, Any]


# ---- the gateway process -------------------------------------------------------------


def clean_environment() -> dict[str, str]:
    """This process's environment without provider keys or gateway settings."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_STOCK_"))
    }


@functools.cache
def gateway_flags() -> frozenset[str]:
    """The flags ``python -m trio_stock --help`` lists (settings differ between versions)."""
    result = subprocess.run(
        [sys.executable, "-m", "trio_stock", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environment(),
        cwd=tempfile.gettempdir(),  # not a source tree: the package comes from sys.path
        check=True,
    )
    return frozenset(re.findall(r"--[a-z][a-z-]+", result.stdout))


def generous_admission() -> tuple[str, ...]:
    """Per-IP admission flags high enough for every test client, where the gateway has them.

    All test clients come from 127.0.0.1; a per-IP limit lower than a test's own clients
    would refuse the attack before it reaches what it attacks.
    """
    flags = gateway_flags()
    extra: list[str] = []
    if "--max-connections-per-ip" in flags:
        extra += ["--max-connections-per-ip", "2000"]
    if "--connect-rate-per-ip" in flags:
        extra += ["--connect-rate-per-ip", "1000"]
    return tuple(extra)


class GatewayProcess:
    """A ``python -m trio_stock`` child process: its port, its stderr log, its ``/proc``."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.baseline_rss = self.rss()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        """Resident set size in bytes (``VmRSS`` of ``/proc/<pid>/status``)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
        assert match is not None, f"no VmRSS for pid {self.pid}\n{self.report()}"
        return int(match.group(1)) * 1024

    def open_fds(self) -> int:
        """Open file descriptors (entries of ``/proc/<pid>/fd``)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def report(self) -> str:
        """The process's state and the tail of its stderr, for failure messages."""
        code = self.process.poll()
        state = "running" if code is None else f"exited with {code}"
        text = self.log.read_text(errors="replace")
        tail = text[-LOG_TAIL:] if len(text) > LOG_TAIL else text
        return f"--- gateway pid {self.pid} ({state}), stderr {self.log}:\n{tail}--- end"

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"the gateway died\n{self.report()}"

    def assert_rss_within(self, bound: int, what: str) -> None:
        """The RSS grew at most ``bound`` bytes over the baseline taken at start-up."""
        self.assert_alive()
        growth = self.rss() - self.baseline_rss
        assert growth <= bound, (
            f"{what}: RSS grew {growth / MiB:.1f} MiB over the baseline "
            f"{self.baseline_rss / MiB:.1f} MiB (bound {bound / MiB:.0f} MiB)\n{self.report()}"
        )


@contextmanager
def running_gateway(*args: str, log_dir: Path, name: str) -> Iterator[GatewayProcess]:
    """``python -m trio_stock --port 0 ARGS``; stopped with SIGTERM at the end.

    On exit it asserts that the gateway was still running when the test was done with it
    (it did not crash) and that it then exited because of our signal.
    """
    log = log_dir / f"{name}.stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "trio_stock", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            # Ticks at any hour: the attacks need a market that trades whenever they run.
            env={**clean_environment(), "TRIO_STOCK_SIM_ALWAYS_OPEN": "1"},
            cwd=log_dir,  # no .env of a developer's is read
        )
    assert process.stdout is not None
    exited_early: int | None = None
    code: int | None = None
    try:
        port = _read_port(process, log)
        gateway = GatewayProcess(process, port, log)
        yield gateway
    finally:
        exited_early = process.poll()
        if exited_early is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
    stopped = f"--- gateway pid {process.pid}, stderr {log}:\n{log.read_text(errors='replace')}"
    assert exited_early is None, f"the gateway crashed (exit {exited_early})\n{stopped}"
    assert code is not None, f"the gateway ignored SIGTERM for {STOP_TIMEOUT} s\n{stopped}"
    assert code in (0, -signal.SIGTERM), f"the gateway exited with {code} on SIGTERM\n{stopped}"


def _read_port(process: subprocess.Popen[bytes], log: Path) -> int:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    output = b""
    deadline = time.monotonic() + START_TIMEOUT
    while (match := _BANNER.search(output)) is None:
        left = deadline - time.monotonic()
        assert left > 0, f"no banner in {START_TIMEOUT} s:\n{output.decode()}{log.read_text()}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, (
                f"the gateway exited before listening:\n{output.decode()}{log.read_text()}"
            )
            output += chunk
    return int(match.group(1))


async def assert_healthy(gateway: GatewayProcess, *, rss_bound: int, what: str) -> None:
    """The gateway is alive, ``/health`` answers 200 with JSON, and RSS is within bound."""
    gateway.assert_alive()
    try:
        with trio.fail_after(HEALTH_TIMEOUT):
            async with httpx.AsyncClient() as http:
                response = await http.get(gateway.url + "/api/v2/realtime/health")
    except (httpx.HTTPError, trio.TooSlowError) as exc:
        raise AssertionError(f"{what}: /health failed: {exc!r}\n{gateway.report()}") from exc
    assert response.status_code == 200, f"{what}: /health answered {response.status_code}"
    assert isinstance(response.json(), dict), f"{what}: /health is not a JSON object"
    gateway.assert_rss_within(rss_bound, what)


async def read_metrics(gateway: GatewayProcess) -> dict[str, float]:
    """``/metrics``, each family summed over its labels (``trio_stock_`` names)."""
    async with httpx.AsyncClient() as http:
        response = await http.get(gateway.url + "/metrics")
    assert response.status_code == 200, f"/metrics answered {response.status_code}"
    totals: dict[str, float] = {}
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, value = line.rpartition(" ")
        name = name_and_labels.partition("{")[0]
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


async def wait_for_metric(gateway: GatewayProcess, name: str, wanted: float) -> None:
    """Poll ``/metrics`` until ``name`` is ``wanted``, for at most ``SETTLE_TIMEOUT``.

    Polling: the gateway is another process, with no event for a test to wait on.
    """
    value: float | None = None
    with trio.move_on_after(SETTLE_TIMEOUT):
        while (value := (await read_metrics(gateway)).get(name, 0.0)) != wanted:  # noqa: ASYNC110
            await trio.sleep(POLL_INTERVAL)
    assert value == wanted, f"{name} is {value}, not {wanted}, after {SETTLE_TIMEOUT} s"


async def poll_fds(gateway: GatewayProcess, done: Callable[[int], bool]) -> int:
    """The gateway's open descriptors, polled until ``done(count)`` or ``SETTLE_TIMEOUT``."""
    fds = gateway.open_fds()
    with trio.move_on_after(SETTLE_TIMEOUT):
        while not done(fds := gateway.open_fds()):  # noqa: ASYNC110 - another process
            await trio.sleep(POLL_INTERVAL)
    return fds


# ---- sockets ---------------------------------------------------------------------------


async def connect(port: int, *, rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1:``port``; ``rcvbuf`` shrinks its receive buffer."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:  # before connect, so the window is announced small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def reset(stream: trio.SocketStream) -> None:
    """Close with a TCP reset (``SO_LINGER`` 0), as a client that vanishes does."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def send_ignoring_close(stream: trio.SocketStream, data: bytes) -> bool:
    """Send ``data``; False if the peer closed or reset the connection first."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def receive_until_closed(stream: trio.SocketStream) -> tuple[bytes, bool]:
    """Everything until the peer closes; and whether it ended with a reset, not a FIN."""
    received = bytearray()
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return bytes(received), True
        if not data:
            return bytes(received), False
        received += data


async def wait_peer_closed(stream: trio.SocketStream, within: float) -> bool:
    """Wait, without reading a byte, until the peer closes or resets the connection.

    ``POLLRDHUP`` reports the peer's FIN even with unread data queued, ``POLLHUP`` and
    ``POLLERR`` a reset, so a client that never reads can still see that it was dropped.
    Returns False if the connection is still open after ``within`` seconds (a blocking
    poll in a thread cannot be cancelled, so it takes its bound as an argument).
    """
    poller = select.poll()
    poller.register(stream.socket.fileno(), select.POLLRDHUP)
    events = await trio.to_thread.run_sync(poller.poll, int(within * 1000))
    return bool(events)


# ---- HTTP ------------------------------------------------------------------------------


@attrs.frozen
class HttpResponse:
    """One response as received: status, lower-cased headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@attrs.frozen
class Exchange:
    """What came back for raw bytes sent: every complete response, and how it ended."""

    responses: list[HttpResponse]
    reset: bool
    raw: bytes

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def parse_responses(raw: bytes) -> list[HttpResponse]:
    """The complete HTTP/1.1 responses at the start of ``raw`` (Content-Length framed)."""
    responses: list[HttpResponse] = []
    while (end := raw.find(b"\r\n\r\n")) >= 0:
        lines = raw[:end].decode("latin-1").split("\r\n")
        match = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: .*)?", lines[0])
        assert match is not None, f"not an HTTP status line: {lines[0]!r}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        if len(raw) < end + 4 + size:
            break
        responses.append(HttpResponse(int(match.group(1)), headers, raw[end + 4 : end + 4 + size]))
        raw = raw[end + 4 + size :]
    return responses


async def exchange(port: int, data: bytes, *, rcvbuf: int | None = None) -> Exchange:
    """Send ``data`` and read every answer until the gateway closes the connection.

    Sending runs alongside reading, so a gateway that answers and closes before it has
    read everything (an oversized head) is seen doing so. The caller bounds the time.
    """
    stream = await connect(port, rcvbuf=rcvbuf)
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send_ignoring_close, stream, data)
        raw, was_reset = await receive_until_closed(stream)
        nursery.cancel_scope.cancel()
    return Exchange(parse_responses(raw), was_reset, raw)


def request(
    target: str | bytes, *, method: bytes = b"GET", headers: bytes = b"", body: bytes = b""
) -> bytes:
    """An HTTP/1.1 request that asks the gateway to close after answering."""
    if isinstance(target, str):
        target = target.encode()
    return (
        method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + headers + b"\r\n" + body
    )  # fmt: skip


# ---- WebSocket ---------------------------------------------------------------------------


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
) -> bytes:
    """One WebSocket frame as a client sends it (masked unless told otherwise)."""
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head.append(mask_bit | size)
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + size.to_bytes(8, "big")
    if not masked:
        return bytes(head) + payload
    return bytes(head) + MASK_KEY + apply_mask(payload, MASK_KEY)


def apply_mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (RFC 6455 §5.3)."""
    if not payload:
        return b""
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def text(payload: object) -> bytes:
    """A final masked text frame with ``payload`` as JSON."""
    return frame(OP_TEXT, orjson.dumps(payload))


@attrs.frozen
class Frame:
    """A frame from the server."""

    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int.from_bytes(self.payload[:2], "big")


def parse_frames(buffer: bytearray) -> list[Frame]:
    """Take every complete frame off the front of ``buffer``."""
    frames: list[Frame] = []
    while len(buffer) >= 2:
        first, second = buffer[0], buffer[1]
        size, at = second & 0x7F, 2
        if size == 126:
            if len(buffer) < 4:
                break
            size, at = int.from_bytes(buffer[2:4], "big"), 4
        elif size == 127:
            if len(buffer) < 10:
                break
            size, at = int.from_bytes(buffer[2:10], "big"), 10
        key = b""
        if second & 0x80:  # a server must not mask (RFC 6455 §5.1); read it anyway
            key, at = bytes(buffer[at : at + 4]), at + 4
        if len(buffer) < at + size:
            break
        payload = bytes(buffer[at : at + size])
        frames.append(Frame(bool(first & 0x80), first & 0x0F, apply_mask(payload, key)))
        del buffer[: at + size]
    return frames


@attrs.frozen
class Ending:
    """How a WebSocket connection ended, as the client saw it."""

    close_code: int | None  # the code of the server's close frame, None if none came
    close_reason: str
    reset: bool  # the TCP connection was reset rather than closed with a FIN


class ConnectionEnded(EOFError):
    """The connection ended before a whole frame arrived."""

    def __init__(self, *, reset: bool) -> None:
        super().__init__("connection reset" if reset else "connection closed (no close frame)")
        self.reset = reset


class ServerClosed(Exception):
    """The server sent a close frame while a message was expected."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"the server closed the WebSocket: {code} {reason!r}")
        self.code = code


class RawWebSocket:
    """The client end of a WebSocket whose every byte a test chose."""

    def __init__(self, stream: trio.SocketStream, received: bytes) -> None:
        self.stream = stream
        self._buffer = bytearray(received)
        self._frames: list[Frame] = []
        self.messages: list[Message] = []  # every JSON message read, updates included
        self.sent_close = False

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_json(self, payload: object) -> None:
        await self.stream.send_all(text(payload))

    async def next_frame(self) -> Frame:
        """The next frame; raises ``ConnectionEnded`` if the connection ends first."""
        if not self._frames:
            self._frames = parse_frames(self._buffer)  # what came with the handshake
        while not self._frames:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                raise ConnectionEnded(reset=True) from None
            if not data:
                raise ConnectionEnded(reset=False)
            self._buffer += data
            self._frames = parse_frames(self._buffer)
        return self._frames.pop(0)

    async def next_message(self) -> Message:
        """The next JSON text message, skipping pings; a close frame raises ServerClosed."""
        while True:
            received = await self.next_frame()
            if received.opcode == OP_CLOSE:
                await self._answer_close(received)
                raise ServerClosed(
                    received.close_code, received.payload[2:].decode(errors="replace")
                )
            if received.opcode == OP_TEXT:
                assert received.fin, "the server fragments its messages"
                message = orjson.loads(received.payload)
                assert isinstance(message, dict), f"not a JSON object: {message!r}"
                self.messages.append(message)
                return message
            assert received.opcode in (OP_PING, OP_PONG), f"unexpected frame {received}"

    async def expect(self, kind: str, *, skip: tuple[str, ...] = UPDATES) -> Message:
        """The next message of type ``kind``, skipping pushed updates; anything else fails."""
        while True:
            message = await self.next_message()
            if message.get("type") == kind:
                return message
            assert message.get("type") in skip, f"expected {kind!r}, got {message}"

    async def ending(self) -> Ending:
        """Read until the connection ends; answer the server's close frame if one comes."""
        code: int | None = None
        reason = ""
        while True:
            try:
                received = await self.next_frame()
            except ConnectionEnded as exc:
                return Ending(code, reason, reset=exc.reset)
            if received.opcode == OP_CLOSE and code is None:
                code = received.close_code
                reason = received.payload[2:].decode(errors="replace")
                await self._answer_close(received)

    async def _answer_close(self, received: Frame) -> None:
        if not self.sent_close:  # echo the code (RFC 6455 §5.5.1), once
            self.sent_close = True
            await send_ignoring_close(self.stream, frame(OP_CLOSE, received.payload[:2]))
        # Then nothing more: a server whose parser is stuck on a broken frame cannot read
        # our close frame, but it sees the end of the stream.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_eof()

    async def close_cleanly(self) -> Ending:
        """Send close 1000 and finish the closing handshake."""
        self.sent_close = True
        await send_ignoring_close(self.stream, frame(OP_CLOSE, close_payload(1000)))
        ending = await self.ending()
        await self.stream.aclose()
        return ending

    async def reset(self) -> None:
        await reset(self.stream)

    async def aclose(self) -> None:
        await self.stream.aclose()


def upgrade_request(
    path: str, key: bytes | None, *, version: bytes = b"13", extra: bytes = b""
) -> bytes:
    """A WebSocket opening handshake; ``key`` None leaves ``Sec-WebSocket-Key`` out."""
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: " + version + b"\r\n"
        + (b"Sec-WebSocket-Key: " + key + b"\r\n" if key is not None else b"")
        + extra + b"\r\n"
    )  # fmt: skip


async def read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """An HTTP response head and the bytes received after it."""
    received = b""
    while (end := received.find(b"\r\n\r\n")) < 0:
        assert len(received) < 65536, "an endless response head"
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(f"closed during the handshake answer: {received!r}")
        received += data
    return received[: end + 4], received[end + 4 :]


async def open_websocket(
    port: int, path: str, *, rcvbuf: int | None = None, after_head: bytes = b""
) -> RawWebSocket:
    """Connect and complete the opening handshake; ``after_head`` is sent with it."""
    stream = await connect(port, rcvbuf=rcvbuf)
    try:
        key = base64.b64encode(os.urandom(16))
        await stream.send_all(upgrade_request(path, key) + after_head)
        head, rest = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101 "), f"no upgrade: {head!r}"
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        fields = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        )
        assert fields.get(b"sec-websocket-accept") == accept, f"wrong accept: {head!r}"
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return RawWebSocket(stream, rest)
