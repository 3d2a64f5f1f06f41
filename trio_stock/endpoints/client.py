"""One WebSocket client: a reader, a writer and a keep-alive in the connection's nursery.

The reader parses requests and runs the protocol's handlers one at a time, in order; the
writer drains everything pending — control frames and replies first, then updates from
the client's hub subscriber — and sends it with one write. Replies are queued
synchronously right after the hub call that caused them, and the writer always sends
queued replies before the updates it took, so a client sees ``subscription_result``
before that symbol's first price. Pings come from the server-wide keep-alive
(:mod:`.keepalive`); a session has exactly two tasks (three for a lossless one).

Bad input never ends a connection that can still be answered: each problem gets an
``error`` message. What does end one: a message over the size limit (1009), a broken
frame (1002/1007), a message in too many fragments or too slow to complete, or too many
control frames (1008), a lossless client that fell too far behind (1013), a client that
does not answer pings (1011), a client that does not read for ``send_timeout`` (dropped),
and the server shutting down (1001). An error of ours ends this session only (1011; the
server's error boundary, :func:`trio_stock.server.handle_connection`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import attrs
import orjson
import trio

from ..access import AccessPolicy
from ..auth import ANONYMOUS, Grant, InvalidToken
from ..errors import SubscriberTooSlow
from ..hub import Failure, FailureReason, Hub, Policy, Subscriber
from ..limits import TokenBucket
from ..model import Market, SymbolState
from ..symbols import normalize_symbol
from ..transport.wsserver import ConnectionClosed, ServerWebSocket, WebSocketLimits, text_frame
from .protocol import ClientProtocol, Payload

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011  # used for "no pong in time": the peer is unresponsive
CLOSE_TRY_AGAIN_LATER = 1013  # a lossless client too slow for the feed
TOO_SLOW_REASON = "client too slow: updates could not be delivered in time"
CLOSE_UNAUTHENTICATED = 4001  # missing, invalid or expired token (README "Running it in public")
CLOSE_NOT_ENTITLED = 4003  # the token grants none of the endpoint's markets
CLOSE_TOO_MANY = 4008  # more connections than the token's max_connections
AUTH_WAIT = 5.0  # seconds a client without a token at the upgrade has to send one in band
EXPIRY_GRACE = 5.0  # seconds past the token's exp before the connection is closed
AUTH_FIRST = 'authentication required: send {"action": "auth", "token": "..."} first'
NOT_ENTITLED = "not entitled to this market"
STUCK_WRITE_GRACE = 2.0  # seconds a write may stay blocked after a lossless overflow


@attrs.frozen
class ClientLimits:
    """Per-connection limits. Every rate and size from a client is bounded.

    Replies wait in a queue of ``reply_queue`` messages; when the client stops reading, the
    reader stops reading too (TCP backpressure), so memory stays bounded. ``ping_interval``
    and ``ping_timeout`` configure the server's keep-alive (:mod:`.keepalive`).
    """

    websocket: WebSocketLimits = attrs.field(factory=WebSocketLimits)  # frames, control, writes
    churn_per_second: float = 5.0  # subscribe/unsubscribe requests
    churn_burst: int = 20
    messages_per_second: float = 50.0  # any request, ping included
    messages_burst: int = 100
    ping_interval: float = 20.0  # 0 disables server pings
    ping_timeout: float = 20.0
    reply_queue: int = 64
    policy: Policy = Policy.CONFLATE
    lossless_capacity: int = 1024


class ClientSession:
    """Serves one accepted WebSocket with a client protocol until either side ends it."""

    def __init__(
        self,
        ws: ServerWebSocket,
        hub: Hub,
        protocol: ClientProtocol,
        limits: ClientLimits,
        name: str,
        *,
        access: AccessPolicy | None = None,
        token: str | None = None,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.protocol = protocol
        self.limits = limits
        self.name = name
        self.subscriber: Subscriber = hub.subscriber(
            limits.policy, name=name, capacity=limits.lossless_capacity
        )
        self.update_filter = protocol.update_filter()
        self.access = access
        # The client's grant; None while a token is awaited (auth on, none shown yet).
        self.grant: Grant | None = ANONYMOUS if access is None or not access.enabled else None
        self._token = token  # brought with the upgrade; verified when the session starts
        # No token in time, or the token expired; made only when auth is on (idle memory).
        self._auth_deadline: trio.CancelScope | None = None
        self._counted_as: str | None = None  # the subject whose connection count we hold
        ws.wake = self.subscriber.nudge  # a pong to send wakes the writer
        self._outbox: list[bytes] = []  # replies, sent before the updates taken with them
        self._outbox_room = trio.lowlevel.ParkingLot()
        self._scope = trio.CancelScope()
        self._ended_by: tuple[int, str] | None = None
        # True while a write is in flight. If the session ends then, the write was cut
        # mid-frame and the stream is in an unknown state: no close frame may follow.
        self.write_interrupted = False
        self._churn = TokenBucket(limits.churn_per_second, limits.churn_burst)
        self._messages = TokenBucket(limits.messages_per_second, limits.messages_burst)

    async def run(self) -> tuple[int, str]:
        """Serve until the client leaves; return the close code and reason to send."""
        try:
            with self._scope:
                async with self.subscriber, trio.open_nursery() as nursery:
                    if self.grant is None:
                        self._start_authentication(nursery)
                    nursery.start_soon(self._write)
                    if self.limits.policy is Policy.LOSSLESS:  # only these are cut off
                        nursery.start_soon(self._watch_too_slow)
                    await self.reply(self.protocol.greeting())
                    await self._read()
                    nursery.cancel_scope.cancel()
        except* SubscriberTooSlow:
            self._ended_by = self._ended_by or (CLOSE_TRY_AGAIN_LATER, TOO_SLOW_REASON)
        except* ConnectionClosed:
            pass  # the writer found the connection lost: ws.closed says so
        finally:
            if self.access is not None and self._counted_as is not None:
                self.access.connections[self._counted_as] -= 1
                if not self.access.connections[self._counted_as]:
                    del self.access.connections[self._counted_as]
        if self._ended_by is not None:
            return self._ended_by
        closed = self.ws.closed
        return (closed.code, closed.reason) if closed is not None else (CLOSE_NORMAL, "")

    def ping(self, now: float) -> None:
        """Send a keep-alive ping (:mod:`.keepalive`)."""
        self.ws.ping(now)

    def check_pong(self, now: float, timeout: float) -> None:
        """End the session if the client left a ping unanswered for ``timeout`` seconds."""
        since = self.ws.unanswered_ping_since
        if since is not None and now - since >= timeout:
            self._end(CLOSE_INTERNAL, f"no pong within {timeout:g} s")

    def _end(self, code: int, reason: str) -> None:
        if self._ended_by is None:
            self._ended_by = code, reason
        self._scope.cancel()

    async def reply(self, payload: Payload) -> None:
        """Queue ``payload`` for the writer; it goes out before any update taken after it."""
        self._outbox.append(text_frame(orjson.dumps(payload)))  # no checkpoint: keeps order
        self.subscriber.nudge()
        while len(self._outbox) > self.limits.reply_queue:
            await self._outbox_room.park()  # the client is not reading: wait (backpressure)
        await trio.lowlevel.checkpoint()

    # ---- reader --------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                messages = await self.ws.receive_messages()
            except ConnectionClosed:
                return
            for message in messages:
                await self._handle(message)

    async def _handle(self, message: str | bytes) -> None:
        if not self._messages.take():
            await self._error(
                f"too many messages: at most {self.limits.messages_per_second:g} per second"
            )
            return
        if isinstance(message, bytes):
            await self._error("binary messages are not supported: send JSON text")
            return
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            await self._error("Invalid JSON")
            return
        if not isinstance(request, dict):
            await self._error("message must be a JSON object")
            return
        await self._dispatch(request)

    async def _dispatch(self, request: Mapping[str, Any]) -> None:
        action = request.get("action")
        if action == "auth":
            await self._authenticate_in_band(request.get("token"))
            return
        if self.grant is None:
            self._end(CLOSE_UNAUTHENTICATED, AUTH_FIRST)
            return
        if action is None:
            await self._error(f"missing 'action'; one of: {', '.join(self.protocol.actions)}")
            return
        handler = self.protocol.actions.get(action) if isinstance(action, str) else None
        if handler is None:
            await self._error(
                f"unknown action {action!r:.100}; one of: {', '.join(self.protocol.actions)}"
            )
            return
        if action in self.protocol.churn_actions and not self._churn.take():
            rate = self.limits.churn_per_second
            await self._error(
                f"too many subscribe/unsubscribe requests: at most {rate:g} per second"
            )
            return
        await handler(self, request)
        if action in self.protocol.churn_actions and log.isEnabledFor(logging.DEBUG):
            held = sorted(self.subscriber.symbols)
            log.debug("%s: %s; holds %d: %s", self.name, action, len(held), " ".join(held[:50]))

    async def _error(self, text: str) -> None:
        await self.reply({"type": "error", "message": text})

    # ---- authentication (auth on) --------------------------------------------------

    def _start_authentication(self, nursery: trio.Nursery) -> None:
        """Verify the upgrade's token, or give the client ``AUTH_WAIT`` s to send one."""
        self._auth_deadline = trio.CancelScope(deadline=trio.current_time() + AUTH_WAIT)
        nursery.start_soon(self._watch_auth_deadline, self._auth_deadline)
        if self._token is not None:
            token, self._token = self._token, None
            self._authenticate(token)

    async def _watch_auth_deadline(self, deadline: trio.CancelScope) -> None:
        with deadline:
            await trio.sleep_forever()
        if self.grant is None:
            self._end(CLOSE_UNAUTHENTICATED, AUTH_FIRST)
        else:
            self._end(CLOSE_UNAUTHENTICATED, "token expired")

    async def _authenticate_in_band(self, token: object) -> None:
        if self.access is None or not self.access.enabled:
            await self._error("authentication is not enabled on this server")
            return
        if not isinstance(token, str):
            token = None
        try:
            grant = self._authenticate(token)
        except InvalidToken as exc:  # a renewal refused: the current grant stays
            await self._error(f"token refused: {exc}")
            return
        if grant is None:
            return  # the session is ending (4001/4008)
        await self.reply(
            {"type": "auth", "status": "ok", "sub": grant.subject, "expires_at": grant.expires_at}
        )
        lost = [s for s in self.subscriber.symbols if not grant.allows(_market_of(s))]
        if lost:
            self.hub.unsubscribe(self.subscriber, lost)
            failures = [Failure(s, FailureReason.FORBIDDEN, NOT_ENTITLED) for s in sorted(lost)]
            await self.reply(self.protocol.revoked(failures))

    def _authenticate(self, token: str | None) -> Grant | None:
        """Take ``token``'s grant; None when the session must end (it is told so).

        Raises:
            InvalidToken: a renewal was refused (the current grant stays).
        """
        assert self.access is not None
        try:
            grant = self.access.verify(token)
            if self.grant is not None and grant.subject != self.grant.subject:
                raise InvalidToken("a renewal must be for the same subject ('sub')")
        except InvalidToken as exc:
            if self.grant is not None:
                raise
            self._end(CLOSE_UNAUTHENTICATED, str(exc))
            return None
        if grant.markets is not None and not grant.markets & self.protocol.markets:
            self._end(CLOSE_NOT_ENTITLED, "this token is not entitled to this endpoint's market")
            return None
        if self._counted_as is None:
            limit, open_now = grant.max_connections, self.access.connections[grant.subject]
            if limit is not None and open_now >= limit:
                self._end(CLOSE_TOO_MANY, f"at most {limit} connections for this user")
                return None
            self.access.connections[grant.subject] += 1
            self._counted_as = grant.subject
        self.grant = grant
        self.subscriber.markets = grant.markets
        self.subscriber.max_symbols = min(
            self.hub.max_symbols_per_subscriber, grant.max_symbols or sys.maxsize
        )
        lifetime = grant.expires_at - self.access.now()
        assert self._auth_deadline is not None  # started with the session (auth on)
        self._auth_deadline.deadline = trio.current_time() + lifetime + EXPIRY_GRACE
        return grant

    # ---- writer --------------------------------------------------------------------

    async def _write(self) -> None:
        # The hot path of the gateway: one wake-up, one batch, one write. A queued reply
        # or control frame nudges the subscriber, so receive_batch may return [].
        receive = self.subscriber.receive_batch
        while True:
            await self._send_pending(await receive())

    async def _send_pending(self, states: list[SymbolState]) -> None:
        # Its own frame so nothing of a batch (above all the joined bytes) stays referenced
        # while the writer waits for the next one: that was 4 KiB per idle client.
        # Frames come from each state's cache; only the first writer of a state encodes it.
        wire_format, encode = self.protocol.name, self.protocol.encode
        frames = self._take_outbox()
        if self.update_filter is not None:
            states = self.update_filter.select(states)
        frames += [state.wire.get(wire_format) or encode(state) for state in states]
        data = b"".join(frames)  # a state this protocol does not carry encodes to b""
        if data:
            self.write_interrupted = True
            await self.ws.send(data)
            self.write_interrupted = False

    def _take_outbox(self) -> list[bytes]:
        frames = self.ws.take_control()
        if self._outbox:
            frames += self._outbox
            self._outbox = []
            self._outbox_room.unpark_all()
        revoked = self.subscriber.take_revoked()
        if revoked:  # held symbols the upstream stopped serving, after the replies before
            if self.update_filter is not None:
                self.update_filter.forget(f.symbol for f in revoked)
            frames.append(text_frame(orjson.dumps(self.protocol.revoked(revoked))))
        return frames

    async def _watch_too_slow(self) -> None:
        # A writer that is free reports a lossless overflow itself at its next receive,
        # and the client gets 1013. One stuck in a send to a client that stopped reading
        # never gets there: after a grace period, end the session from here.
        await self.subscriber.wait_too_slow()
        await trio.sleep(STUCK_WRITE_GRACE)
        raise SubscriberTooSlow(f"{self.name} stopped reading")


def _market_of(symbol: str) -> Market:
    return normalize_symbol(symbol)[1]
