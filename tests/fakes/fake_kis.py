"""A protocol-faithful fake of KIS real-time: the approval endpoint and the WebSocket.

Both are real servers on 127.0.0.1, port 0 (protocols/kis.md §9): a small h11 HTTP server
answering ``POST /oauth2/Approval`` and a trio-websocket server (any path). Start it with
``fake = await nursery.start(FakeKis().serve)`` and point ``KIS_REST_URL`` / ``KIS_WS_URL``
at ``fake.rest_url`` / ``fake.ws_url``.

What it does, as KIS is reported to:

- approval: ``grant_type=client_credentials`` plus a known ``appkey`` and its ``secretkey``
  → ``{"approval_key": "<uuid>"}``, remembered key → appkey (§1.1); anything else → 403;
- a connection is bound to the app key of its first request's ``approval_key``; a second
  live connection of the same app key (or one of :attr:`FakeKis.in_use_elsewhere`) gets
  the ``OPSP8996`` frame (``tr_id`` "(null)", ``rt_cd`` "9") and is closed (§3.1, §7);
- register (``tr_type`` "1"): ``OPSP0000`` with iv/key, ``OPSP0002`` (``rt_cd`` "1", no
  output) when already registered, ``OPSP0008`` (``rt_cd`` "1") past :attr:`FakeKis.cap`
  registrations across TRs, ``OPSP8991`` unknown TR; unregister ("2"): ``OPSP0001`` or
  ``OPSP0003``; malformed requests: the ``OPSP99xx``/``89xx`` codes (§3.1, §9);
- ``PINGPONG`` after :attr:`FakeKis.ping_interval` seconds without a frame to the client,
  and the socket dropped (no close frame) when no echo comes within
  :attr:`FakeKis.pong_timeout` (§4, §9);
- ``0|H0STCNT0|NNN|...`` frames of NNN 46-field records built from the portal's example
  record (§6.1), with :attr:`FakeKis.extra_fields` trailing fields appended (§6 drift).

Fault switches: :meth:`FakeKis.drop` (TCP reset, no close frame), :meth:`FakeKis.stall`
(live sessions go silent and deaf but stay open), :meth:`FakeKis.send_raw` (garbage: any
text, or bytes as a binary frame), :attr:`FakeKis.interleave` (raw frames slipped in
before each data frame :meth:`FakeKis.send_trades` sends: junk in the middle of a tape),
:attr:`FakeKis.sticky` (registrations outlive a dropped session, so re-registering after a
reconnect answers ``ALREADY IN SUBSCRIBE``), :attr:`FakeKis.failing_keys` (approval
answers 500 for these app keys: a transient failure), ``drop(app_key)`` (one key's
sessions only). An app key missing from :attr:`FakeKis.accounts` is refused at approval
(403). :attr:`FakeKis.live_connections` counts open TCP connections and
:attr:`FakeKis.max_live_connections` the most open at once, so tests prove no socket leaks
and never two sessions at a time; :attr:`FakeKis.sessions_per_key` counts the sessions
each app key bound, :attr:`FakeKis.max_sessions_per_key` the most live at once for one
key, and :attr:`FakeKis.max_registrations` the most registrations one session held.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import socket
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import h11
import trio
import trio_websocket

from trio_stock import Config, Secret

from .serving import TwoPortFake, next_request, send_json

DEFAULT_APP_KEY = "PSfakeAppKey0123456789abcdefghijklmn"  # 36 chars, like real ones
DEFAULT_APP_SECRET = "fake-app-secret-do-not-log"
MAX_FRAME = 64 * 1024  # client frames larger than this close the connection (1009)
MAX_BODY = 16 * 1024  # approval request bodies larger than this get 413
KNOWN_TRS = {"H0STCNT0", "H0STASP0", "H0STCNI0", "H0STCNI9"}
KST = dt.timezone(dt.timedelta(hours=9))

# The portal's Response Example frame for H0STCNT0 (protocols/kis.md §6.1): one 46-field record.
EXAMPLE_FRAME = (
    "0|H0STCNT0|001|005930^093354^71900^5^-100^-0.14^72023.83^72100^72400^71700^71900^71800^1^"
    "3052507^219853241700^5105^6937^1832^84.90^1366314^1159996^1^0.39^20.28^090020^5^-200^"
    "090820^5^-500^092619^2^200^20230612^20^N^65945^216924^1118750^2199206^0.05^2424142^125.92^"
    "0^^72100"
)
EXAMPLE_TRADE = EXAMPLE_FRAME.split("|", 3)[3].split("^")
assert len(EXAMPLE_TRADE) == 46


def trade_record(
    code: str,
    price: int,
    *,
    size: int = 1,
    volume: int = 3_052_507,
    time: str = "093354",
    date: str = "20230612",
    prev_close: int = 72_000,
) -> list[str]:
    """A realistic H0STCNT0 record: the portal example with these values put in."""
    record = list(EXAMPLE_TRADE)
    change = price - prev_close
    sign = "2" if change > 0 else "5" if change < 0 else "3"
    record[0], record[1], record[2], record[3] = code, time, str(price), sign
    record[4], record[5] = str(change), f"{change / prev_close * 100:.2f}"
    record[12], record[13], record[33] = str(size), str(volume), date
    record[10], record[11] = str(price + 100), str(price)  # best ask / bid, one tick apart
    return record


@attrs.define(eq=False)
class Session:
    """One client connection as the fake sees it."""

    number: int
    ws: trio_websocket.WebSocketConnection
    stream: trio.SocketStream
    scope: trio.CancelScope
    app_key: str | None = None  # bound by the first request's approval_key
    registered: set[tuple[str, str]] = attrs.Factory(set)  # (tr_id, tr_key)
    stalled: bool = False
    last_sent: float = 0.0
    ping_text: str | None = None  # the PINGPONG awaiting its echo
    changed: trio.Event = attrs.Factory(trio.Event)  # something was sent or echoed


@attrs.define(eq=False)
class FakeKis(TwoPortFake):
    """The fake KIS servers and their switches. See the module docstring.

    Args:
        accounts: app key → app secret the approval endpoint accepts.
        cap: Registrations a session may hold across TRs (41 measured, §7).
        ping_interval: Seconds without a frame to the client before a PINGPONG.
        pong_timeout: Seconds allowed for the echo before the socket is dropped.
        extra_fields: Trailing fields appended to every H0STCNT0 record.
        in_use_elsewhere: App keys another process holds (every session gets OPSP8996).
        sticky: Registrations outlive a dropped session of the same app key.
        seed: Seed of the approval keys.
        interleave: Raw frames (text, or bytes sent as binary frames) to slip in: while
            it is not empty, each :meth:`send_trades` first sends the next one of them to
            the same sessions.
    """

    accounts: dict[str, str] = attrs.Factory(lambda: {DEFAULT_APP_KEY: DEFAULT_APP_SECRET})
    cap: int = 41
    ping_interval: float = 10.0
    pong_timeout: float = 10.0
    extra_fields: int = 0
    in_use_elsewhere: set[str] = attrs.Factory(set)
    failing_keys: set[str] = attrs.Factory(set)  # approval answers 500 for these (transient)
    sticky: bool = False
    seed: int = 0
    interleave: list[str | bytes] = attrs.Factory(list)
    # ---- observations ----
    approvals: dict[str, str] = attrs.field(factory=dict, init=False)  # approval key → appkey
    approval_requests: int = attrs.field(default=0, init=False)
    connections_total: int = attrs.field(default=0, init=False)
    live_connections: int = attrs.field(default=0, init=False)
    max_live_connections: int = attrs.field(default=0, init=False)
    refused_sessions: int = attrs.field(default=0, init=False)  # OPSP8996 sent
    requests: list[dict[str, Any]] = attrs.field(factory=list, init=False)  # parsed, in order
    answers: list[dict[str, Any]] = attrs.field(factory=list, init=False)  # acks sent
    pings_sent: list[str] = attrs.field(factory=list, init=False)
    pongs: list[str] = attrs.field(factory=list, init=False)  # echoed texts, as received
    pong_drops: int = attrs.field(default=0, init=False)
    sessions: list[Session] = attrs.field(factory=list, init=False)  # live ones
    sessions_per_key: dict[str, int] = attrs.field(factory=dict, init=False)  # bound, ever
    max_sessions_per_key: int = attrs.field(default=0, init=False)  # live at once, one key
    max_registrations: int = attrs.field(default=0, init=False)  # most one session held
    ws_port: int = attrs.field(default=0, init=False)
    rest_port: int = attrs.field(default=0, init=False)
    _stale: dict[str, set[tuple[str, str]]] = attrs.field(factory=dict, init=False)
    _rng: random.Random = attrs.field(init=False)
    _changed: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # ---- running -------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/tryitout"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def gateway_config(self) -> Config:
        """A gateway serving the Korean market from this fake: its default key, no pacing."""
        return Config(
            port=0,
            kis_app_key=Secret(DEFAULT_APP_KEY),
            kis_app_secret=Secret(DEFAULT_APP_SECRET),
            kis_register_interval=0.0,
            kis_ws_url=self.ws_url,
            kis_rest_url=self.rest_url,
        )

    # ---- what tests look at --------------------------------------------------------

    def registered(self, tr_id: str = "H0STCNT0") -> set[str]:
        """Codes registered for ``tr_id`` by live sessions."""
        return {k for s in self.sessions for t, k in s.registered if t == tr_id}

    def requests_of(self, tr_type: str, tr_id: str = "H0STCNT0") -> list[str]:
        """The ``tr_key`` of every request of ``tr_type`` ("1"/"2") for ``tr_id``, in order."""
        found = []
        for request in self.requests:
            header, body = request.get("header", {}), request.get("body", {})
            entry = body.get("input", {}) if isinstance(body, dict) else {}
            if header.get("tr_type") == tr_type and entry.get("tr_id") == tr_id:
                found.append(str(entry.get("tr_key")))
        return found

    # ---- faults --------------------------------------------------------------------

    def drop(self, app_key: str | None = None) -> int:
        """Reset every live connection (of ``app_key`` only, if given) without a close
        frame (the peer vanished, 1006)."""
        chosen = [s for s in self.sessions if app_key is None or s.app_key == app_key]
        for session in chosen:
            _reset(session.stream)
            session.scope.cancel()
        return len(chosen)

    def registered_by_key(self, tr_id: str = "H0STCNT0") -> dict[str, set[str]]:
        """Codes registered for ``tr_id`` by the live sessions of each app key."""
        found: dict[str, set[str]] = {}
        for session in self.sessions:
            if session.app_key is not None:
                codes = {k for t, k in session.registered if t == tr_id}
                found.setdefault(session.app_key, set()).update(codes)
        return found

    def stall(self) -> int:
        """Make every live session silent and deaf (no acks, pings or data) but open."""
        for session in self.sessions:
            session.stalled = True
            session.changed.set()
        return len(self.sessions)

    async def send_raw(self, text: str | bytes) -> int:
        """Send ``text`` as is (e.g. garbage) to every live session; bytes as a binary frame."""
        return await self._send_to(text, self.sessions)

    # ---- data ----------------------------------------------------------------------

    async def send_trades(self, records: Sequence[Sequence[str]]) -> int:
        """Send one ``0|H0STCNT0|NNN|...`` frame with ``records`` to the sessions that
        registered the first record's code; returns how many it reached."""
        values: list[str] = []
        for record in records:
            values += [*record, *(f"X{i}" for i in range(self.extra_fields))]
        text = f"0|H0STCNT0|{len(records):03d}|" + "^".join(values)
        code = records[0][0]
        audience = [s for s in self.sessions if ("H0STCNT0", code) in s.registered]
        if self.interleave:
            await self._send_to(self.interleave.pop(0), audience)
        return await self._send_to(text, audience)

    async def send_encrypted(self) -> int:
        """Send an encrypted notice frame (flag 1, base64 payload, §5.1) to every session."""
        return await self.send_raw("1|H0STCNI0|001|c2VjcmV0IG5vdGljZSBwYXlsb2FkAAAAAA==")

    async def _send_to(self, text: str | bytes, sessions: Iterable[Session]) -> int:
        reached = 0
        for session in list(sessions):
            if await self._send(session, text):
                reached += 1
        return reached

    async def _send(self, session: Session, text: str | bytes) -> bool:
        if session.stalled:
            return False
        try:
            await session.ws.send_message(text)
        except (
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            return False
        session.last_sent = trio.current_time()
        session.changed.set()
        return True

    # ---- the WebSocket side --------------------------------------------------------

    async def _handle_ws(self, stream: trio.SocketStream) -> None:
        self.connections_total += 1
        self.live_connections += 1
        self.max_live_connections = max(self.max_live_connections, self.live_connections)
        self._notify()
        try:
            async with trio.open_nursery() as nursery:
                request = await trio_websocket.wrap_server_stream(
                    nursery, stream, max_message_size=MAX_FRAME
                )
                ws = await request.accept()
                session = Session(self.connections_total, ws, stream, nursery.cancel_scope)
                session.last_sent = trio.current_time()
                self.sessions.append(session)
                self._notify()
                try:
                    nursery.start_soon(self._keepalive, session)
                    await self._converse(session)
                finally:
                    self._end(session)
                nursery.cancel_scope.cancel()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            self.live_connections -= 1
            self._notify()

    def _end(self, session: Session) -> None:
        self.sessions.remove(session)
        if self.sticky and session.app_key is not None:
            self._stale.setdefault(session.app_key, set()).update(session.registered)
        self._notify()

    async def _keepalive(self, session: Session) -> None:
        """PINGPONG after an idle period; drop the socket if the echo does not come (§4)."""
        while True:
            session.changed = trio.Event()
            if session.stalled:
                await trio.sleep_forever()
            if session.ping_text is not None:
                with trio.move_on_at(session.last_sent + self.pong_timeout):
                    await session.changed.wait()
                    continue
                self.pong_drops += 1
                _reset(session.stream)  # no close frame, as a dead link looks
                session.scope.cancel()
                return
            with trio.move_on_at(session.last_sent + self.ping_interval):
                await session.changed.wait()
                continue
            stamp = trio.current_time()  # KST "now" for the datetime field
            now = dt.datetime(2023, 6, 12, 9, 0, tzinfo=KST) + dt.timedelta(seconds=stamp)
            text = json.dumps(
                {"header": {"tr_id": "PINGPONG", "datetime": now.strftime("%Y%m%d%H%M%S")}}
            )
            if await self._send(session, text):
                session.ping_text = text
                self.pings_sent.append(text)
                self._notify()

    async def _converse(self, session: Session) -> None:
        while True:
            try:
                text = await session.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            if session.stalled:
                continue
            if not isinstance(text, str):
                continue
            if not await self._request(session, text):
                return

    async def _request(self, session: Session, text: str) -> bool:
        """Answer one client frame; False means the fake closes the connection."""
        try:
            message = json.loads(text)
        except ValueError:
            await self._ack(
                session, "", "", "9", "OPSP9999", "JSON PARSING ERROR : invalid json format"
            )
            return True
        header = message.get("header") if isinstance(message, dict) else None
        if not isinstance(header, dict):
            await self._ack(
                session, "", "", "9", "OPSP9998", "JSON PARSING ERROR : header not found"
            )
            return True
        if header.get("tr_id") == "PINGPONG":
            self.pongs.append(text)
            if text == session.ping_text:
                session.ping_text = None
                session.changed.set()
            self._notify()
            return True
        self.requests.append(message)
        self._notify()
        body = message.get("body")
        entry = body.get("input") if isinstance(body, dict) else None
        if not isinstance(body, dict):
            await self._ack(session, "", "", "9", "OPSP9992", "JSON PARSING ERROR : body not found")
            return True
        if not isinstance(entry, dict):
            await self._ack(
                session, "", "", "9", "OPSP9991", "JSON PARSING ERROR : input not found"
            )
            return True
        tr_id, tr_key = str(entry.get("tr_id", "")), entry.get("tr_key")
        if not isinstance(tr_key, str):
            await self._ack(
                session, tr_id, "", "9", "OPSP9990", "JSON PARSING ERROR : tr_key not found"
            )
            return True
        app_key = self.approvals.get(str(header.get("approval_key")))
        if app_key is None:
            await self._ack(
                session, tr_id, tr_key, "9", "OPSP0011", "invalid approval(appkey) : NOT FOUND"
            )
            return True
        if session.app_key is None and not self._bind(session, app_key):
            self.refused_sessions += 1
            frame = {
                "header": {"tr_id": "(null)", "tr_key": "", "encrypt": "N"},
                "body": {"rt_cd": "9", "msg_cd": "OPSP8996", "msg1": "ALREADY IN USE appkey"},
            }
            await self._send(session, json.dumps(frame))
            with trio.move_on_after(1.0):
                await session.ws.aclose()
            return False
        if header.get("custtype") not in ("P", "B"):
            await self._ack(
                session, tr_id, tr_key, "9", "OPSP8998", "JSON PARSING ERROR : invalid custtype"
            )
        elif tr_id not in KNOWN_TRS:
            await self._ack(
                session, tr_id, tr_key, "9", "OPSP8991", "SUBSCRIBE ERROR : invalid tr_id"
            )
        elif header.get("tr_type") == "1":
            await self._register(session, tr_id, tr_key)
        elif header.get("tr_type") == "2":
            if (tr_id, tr_key) in session.registered:
                session.registered.discard((tr_id, tr_key))
                await self._ack(session, tr_id, tr_key, "0", "OPSP0001", "UNSUBSCRIBE SUCCESS")
            else:
                await self._ack(
                    session, tr_id, tr_key, "1", "OPSP0003", "UNSUBSCRIBE ERROR(not found!)"
                )
        else:
            await self._ack(
                session, tr_id, tr_key, "9", "OPSP8997", "JSON PARSING ERROR : invalid tr_type"
            )
        return True

    def _bind(self, session: Session, app_key: str) -> bool:
        """Bind ``session`` to ``app_key``; False if the key is in use (OPSP8996)."""
        others = [s for s in self.sessions if s is not session and s.app_key == app_key]
        if others or app_key in self.in_use_elsewhere:
            return False
        session.app_key = app_key
        session.registered |= self._stale.pop(app_key, set())
        self.sessions_per_key[app_key] = self.sessions_per_key.get(app_key, 0) + 1
        live = sum(s.app_key == app_key for s in self.sessions)
        self.max_sessions_per_key = max(self.max_sessions_per_key, live)
        return True

    async def _register(self, session: Session, tr_id: str, tr_key: str) -> None:
        if (tr_id, tr_key) in session.registered:
            await self._ack(session, tr_id, tr_key, "1", "OPSP0002", "ALREADY IN SUBSCRIBE")
        elif len(session.registered) >= self.cap:
            await self._ack(session, tr_id, tr_key, "1", "OPSP0008", "MAX SUBSCRIBE OVER")
        else:
            session.registered.add((tr_id, tr_key))
            self.max_registrations = max(self.max_registrations, len(session.registered))
            output = {"iv": self._token(16), "key": self._token(32)}
            await self._ack(session, tr_id, tr_key, "0", "OPSP0000", "SUBSCRIBE SUCCESS", output)
        self._notify()

    async def _ack(
        self,
        session: Session,
        tr_id: str,
        tr_key: str,
        rt_cd: str,
        msg_cd: str,
        msg1: str,
        output: dict[str, str] | None = None,
    ) -> None:
        encrypt = "Y" if tr_id.startswith("H0STCNI") else "N"
        body: dict[str, Any] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
        if output is not None:
            body["output"] = output
        frame = {"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": encrypt}, "body": body}
        self.answers.append(frame)
        await self._send(session, json.dumps(frame))

    def _token(self, length: int) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        return "".join(self._rng.choice(alphabet) for _ in range(length))

    # ---- the approval endpoint -----------------------------------------------------

    async def _handle_http(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        try:
            while True:
                request = await next_request(conn, stream, max_body=MAX_BODY)
                if request is None:
                    return
                if not await send_json(conn, stream, *self._approve(*request)):
                    return
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return

    def _approve(self, head: h11.Request, body: bytes) -> tuple[int, dict[str, str]]:
        self.approval_requests += 1
        self._notify()
        if head.method != b"POST" or head.target != b"/oauth2/Approval":
            return 404, {"error_description": "not found"}
        try:
            fields = json.loads(body)
        except ValueError:
            return 400, {"error_description": "invalid json"}
        if not isinstance(fields, dict) or fields.get("grant_type") != "client_credentials":
            return 400, {"error_description": "invalid grant_type"}
        app_key = fields.get("appkey")
        if app_key in self.failing_keys:
            return 500, {"error_description": "internal error"}
        if not isinstance(app_key, str) or self.accounts.get(app_key) != fields.get("secretkey"):
            return 403, {"error_code": "EGW00105", "error_description": "invalid appkey/secretkey"}
        key = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self.approvals[key] = app_key
        return 200, {"approval_key": key}


def _reset(stream: trio.SocketStream) -> None:
    """Make the next close of ``stream`` send a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):  # already closed
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
