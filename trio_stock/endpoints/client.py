"""One WebSocket client: a reader, a writer and a keep-alive in the connection's nursery.

The reader parses requests and runs the protocol's handlers one at a time, in order; the
writer drains everything pending — replies first, then updates from the client's hub
subscriber — and sends it with one write. Replies are queued synchronously right after
the hub call that caused them, and the writer always sends queued replies before the
updates it took, so a client sees ``subscription_result`` before that symbol's first price.

Bad input never ends a connection that can still be answered: each problem gets an
``error`` message. What does end one: a message over the size limit (1009, by
trio-websocket), a lossless client that fell too far behind (1013), a client that does
not answer pings (1011), and the server shutting down (1001).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import orjson
import trio
import trio_websocket

from ..errors import SubscriberTooSlow
from ..hub import Hub, Policy, Subscriber
from ..wsbatch import send_frames, text_frame
from .protocol import ClientProtocol, Payload

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011  # used for "no pong in time": the peer is unresponsive
CLOSE_TRY_AGAIN_LATER = 1013  # a lossless client too slow for the feed
STUCK_WRITE_GRACE = 2.0  # seconds a write may stay blocked after a lossless overflow


@attrs.frozen
class ClientLimits:
    """Per-connection limits. Every rate and size from a client is bounded.

    Replies wait in a queue of ``reply_queue`` messages; when the client stops reading, the
    reader stops reading too (TCP backpressure), so memory stays bounded.
    """

    max_message_bytes: int = 64 * 1024
    churn_per_second: float = 5.0  # subscribe/unsubscribe requests
    churn_burst: int = 20
    messages_per_second: float = 50.0  # any request, ping included
    messages_burst: int = 100
    ping_interval: float = 20.0  # 0 disables server pings
    ping_timeout: float = 20.0
    reply_queue: int = 64
    policy: Policy = Policy.CONFLATE
    lossless_capacity: int = 1024


class PingTimeout(Exception):
    """The client did not answer a ping in time."""


@attrs.define
class TokenBucket:
    """A rate limit: ``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: int
    _tokens: float = attrs.field(init=False)
    _at: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.burst)

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = trio.current_time()
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class ClientSession:
    """Serves one accepted WebSocket with a client protocol until either side ends it."""

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        hub: Hub,
        protocol: ClientProtocol,
        limits: ClientLimits,
        name: str,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.protocol = protocol
        self.limits = limits
        self.name = name
        self.subscriber: Subscriber = hub.subscriber(
            limits.policy, name=name, capacity=limits.lossless_capacity
        )
        self._send_reply, self._replies = trio.open_memory_channel[bytes](limits.reply_queue)
        self._writer_idle: trio.CancelScope | None = None
        # True while a write is in flight. If the session ends then, the write was cut
        # mid-frame and the stream is in an unknown state: no close frame may follow.
        self.write_interrupted = False
        self._churn = TokenBucket(limits.churn_per_second, limits.churn_burst)
        self._messages = TokenBucket(limits.messages_per_second, limits.messages_burst)

    async def run(self) -> tuple[int, str]:
        """Serve until the client leaves; return the close code and reason to send."""
        try:
            async with self.subscriber, trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                if self.limits.policy is Policy.LOSSLESS:  # only lossless subscribers are cut off
                    nursery.start_soon(self._watch_too_slow)
                if self.limits.ping_interval > 0:
                    nursery.start_soon(self._keep_alive)
                await self.reply(self.protocol.greeting())
                await self._read()
                nursery.cancel_scope.cancel()
        except* SubscriberTooSlow:
            outcome = (
                CLOSE_TRY_AGAIN_LATER,
                "client too slow: updates could not be delivered in time",
            )
        except* PingTimeout:
            outcome = CLOSE_INTERNAL, f"no pong within {self.limits.ping_timeout:g} s"
        except* trio_websocket.ConnectionClosed:
            outcome = CLOSE_NORMAL, ""
        else:
            outcome = CLOSE_NORMAL, ""
        return outcome

    async def reply(self, payload: Payload) -> None:
        """Queue ``payload`` for the writer; it goes out before any update taken after it."""
        frame = text_frame(orjson.dumps(payload))
        try:
            self._send_reply.send_nowait(frame)  # no checkpoint before queuing: keeps the order
        except trio.WouldBlock:
            await self._send_reply.send(frame)  # the client is not reading: wait (backpressure)
        if self._writer_idle is not None:
            self._writer_idle.cancel()
        await trio.lowlevel.checkpoint()

    # ---- reader --------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
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
        if action is None:
            await self._error(f"missing 'action'; one of: {', '.join(self.protocol.actions)}")
            return
        handler = self.protocol.actions.get(action) if isinstance(action, str) else None
        if handler is None:
            await self._error(
                f"unknown action {action!r}; one of: {', '.join(self.protocol.actions)}"
            )
            return
        if action in self.protocol.churn_actions and not self._churn.take():
            rate = self.limits.churn_per_second
            await self._error(
                f"too many subscribe/unsubscribe requests: at most {rate:g} per second"
            )
            return
        await handler(self, request)

    async def _error(self, text: str) -> None:
        await self.reply({"type": "error", "message": text})

    # ---- writer --------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            frames = self._take_replies()
            if not frames:
                with trio.CancelScope() as self._writer_idle:  # a new reply cancels the wait
                    for state in await self.subscriber.receive_batch():
                        frame = self.protocol.encode(state)
                        if frame is not None:
                            frames.append(frame)
                self._writer_idle = None
                frames = self._take_replies() + frames
            if frames:
                self.write_interrupted = True
                await send_frames(self.ws, frames)
                self.write_interrupted = False

    def _take_replies(self) -> list[bytes]:
        frames: list[bytes] = []
        while True:
            try:
                frames.append(self._replies.receive_nowait())
            except trio.WouldBlock:
                return frames

    async def _watch_too_slow(self) -> None:
        # A writer that is free reports a lossless overflow itself at its next receive,
        # and the client gets 1013. One stuck in a send to a client that stopped reading
        # never gets there: after a grace period, end the session from here.
        await self.subscriber.wait_too_slow()
        await trio.sleep(STUCK_WRITE_GRACE)
        raise SubscriberTooSlow(f"{self.name} stopped reading")

    # ---- keep-alive ----------------------------------------------------------------

    async def _keep_alive(self) -> None:
        while True:
            await trio.sleep(self.limits.ping_interval)
            with trio.move_on_after(self.limits.ping_timeout) as timeout:
                await self.ws.ping()
            if timeout.cancelled_caught:
                raise PingTimeout
