"""The reconnecting WebSocket session every live provider (KIS, FMP) is built on.

:class:`WebSocketProvider` implements the provider contract (``contract.py``) once; a
provider subclasses it and supplies only its protocol::

    class MyProvider(WebSocketProvider):
        kind = "my"

        def url(self) -> str: ...                     # the WebSocket URL to open
        async def before_connect(self) -> None: ...   # optional: e.g. fetch an approval key
        async def login(self, ws) -> None: ...        # optional: e.g. send a login frame, await ok
        def register_frames(self, symbols) -> list[str]: ...
        def unregister_frames(self, symbols) -> list[str]: ...
        def handle_message(self, message) -> Sequence[str | bytes]: ...
        def session_ended(self) -> None: ...          # optional: forget per-session state

``run(link)`` runs two tasks:

- the *intake* drains ``link.commands`` at all times (also while disconnected, backing off
  or refused) into a book: the symbols the hub wants held (``wanted``) and the
  :class:`~.contract.Subscribe` commands not answered yet. A subscribe over the quota is
  answered ``QUOTA`` at once; after an authentication failure every subscribe is answered
  ``UNAVAILABLE``.
- the *session loop*: ``before_connect`` → open the TCP stream (TLS for ``wss://``) and wrap
  it with :class:`~.wsclient.ClientWebSocket` → ``login`` (all within ``connect_timeout``)
  → ``link.session_started()`` → register every wanted symbol → read frames. While the
  session lives, a sender task brings the upstream in line with the book: it diffs
  ``wanted`` against what this session has registered and sends ``unregister_frames`` /
  ``register_frames``, at most one frame per ``register_interval`` seconds (the official
  KIS samples pause between registrations; protocols/kis.md §7). Each inbound frame goes to
  ``handle_message``; the frames it returns (e.g. a KIS PINGPONG echo) are sent at once.

Answers. ``handle_message`` parses and calls :meth:`answer` when the upstream acknowledged
a registration: ``self.answer(symbol)`` on success, ``self.answer(symbol, reason, detail)``
on refusal. Only unanswered subscribes are answered to the hub; an answer for a symbol no
longer wanted is ignored; a success marks the symbol as registered in this session (it
counts in ``registrations``). Ticks go out through :meth:`publish`, stamped with
:meth:`now_ns`.

Untrusted input. Whatever an upstream sends is input from outside, and every number in a
tick ends up in ``orjson`` and ``datetime`` in every subscribed client's writer: one
out-of-range value there would break all of them at once. So the parsers hold each field
to the bounds below (``TIME_MIN_NS``..``TIME_MAX_NS``, ``PRICE_MIN``..``PRICE_MAX``,
``SIZE_MAX``, ``CHANGE_RATE_MAX``; :func:`tick_problem` says which a tick breaks), and
:meth:`publish` checks every tick once more before the hub sees it. A frame
``handle_message`` cannot parse raises :class:`MalformedFrame`; a record it cannot use is
counted by the subclass and skipped while the frame's other records are published. The
engine is the error boundary of each frame: a :class:`MalformedFrame`, and any other
``Exception`` a handler raises except the :class:`~trio_stock.errors.UpstreamError`
family, counts the frame as ``malformed`` (one WARNING line, the traceback at DEBUG) and
the session lives on.

Failures. Any ``Exception`` ending a session (connect error, close, watchdog, an
``UpstreamError`` raised by a hook, or a bug in a hook or a task of the session, e.g. the
sender) sets ``BACKING_OFF`` and waits ``Backoff.failed()`` seconds; it never ends
:meth:`run`: only cancellation does (and a ``BaseException`` that is not an ``Exception``,
such as ``KeyboardInterrupt``). :class:`SessionRefused` may ask for a longer wait
(``retry_after``). :class:`~trio_stock.errors.AuthFailed` sets ``AUTH_FAILED`` and never
retries (the configuration must change). A *watchdog* reconnects a session that received no
frame of any kind for ``watchdog`` seconds (protocols/kis.md §8.3: dead sockets without a
close).

Quota. :meth:`adapt_quota` lowers the quota to what the upstream accepted (KIS answers
``OPSP0008`` below its documented cap, kis.md §7) for ``quota_probe_after`` seconds of
Trio's clock; then the configured quota is offered again, so the next subscribe probes the
upstream's cap once more instead of the quota shrinking for ever. :meth:`set_quota` changes
it for good.

Sockets. The engine opens the TCP stream itself and closes it itself (in a ``finally``),
and speaks WebSocket over it with :class:`~.wsclient.ClientWebSocket`, which hands the
reader every frame one socket read brought (so a busy feed is published in batches, not
one tick per scheduling round) and never leaves a stream open (trio-websocket 0.12's
client leaks one after an abnormal closure, DESIGN.md). Only one session is ever open at
a time: the next connect starts after the previous stream is closed. No pings are sent
(protocols/kis.md §4); the server's pings are answered.

Shutdown. On cancellation the session unregisters what it registered and closes the
WebSocket, shielded and bounded by ``shutdown_grace`` seconds.

Failure texts. ``last_error`` holds the text of the exception that ended the last session
(``OSError``/trio-websocket texts, or the hook's own words; an unexpected exception shows
its type), at most ``MAX_ERROR_TEXT`` characters; ``detail`` the text of a
:class:`SessionRefused`. Hooks must raise with texts that carry no secret.

Statistics (``statistics()``) come from :attr:`status`, a :class:`~.contract.ProviderStatus`
the subclass may also update (e.g. ``detail``); it must never carry a secret.
"""

from __future__ import annotations

import abc
import logging
import math
import ssl
from collections.abc import Callable, Sequence
from typing import ClassVar
from urllib.parse import urlsplit

import trio

from ..errors import AuthFailed, UpstreamError
from ..model import Market, Tick
from ..results import FailureReason
from .backoff import Backoff
from .bounds import tick_problem
from .contract import (
    ProviderState,
    ProviderStatistics,
    ProviderStatus,
    Subscribe,
    UpstreamLink,
)
from .wsclient import ClientWebSocket

log = logging.getLogger(__name__)

DEFAULT_WATCHDOG = 60.0  # seconds without any inbound frame before reconnecting
DEFAULT_CONNECT_TIMEOUT = 15.0  # seconds for before_connect + TCP + handshake + login
DEFAULT_SHUTDOWN_GRACE = 2.0  # seconds to unregister and close on cancellation
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB; batched KIS frames reach tens of KB (kis.md §5)
QUOTA_PROBE_AFTER = 300.0  # seconds an adapted (lowered) quota holds before a new probe
HANDLER_WARNING_INTERVAL = 10.0  # at most one WARNING per this many seconds for broken frames
MAX_ERROR_TEXT = 300  # characters of an exception's text kept in last_error and logs


class MalformedFrame(UpstreamError):
    """An inbound frame could not be parsed. It is counted and skipped; the session lives."""


class SessionRefused(UpstreamError):
    """The upstream refused the session (e.g. the key is in use elsewhere).

    Args:
        message: What happened, in words safe to show (no secrets).
        retry_after: The least number of seconds to wait before reconnecting.
    """

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WebSocketProvider(abc.ABC):
    """A provider speaking to one upstream WebSocket, reconnecting forever (see module doc).

    Args:
        name: Provider name ("kis", "fmp").
        market: The market it serves.
        quota: How many symbols it may hold upstream; :meth:`set_quota` may lower it.
        live: True for real market data.
        watchdog: Seconds without any inbound frame before the session is reconnected.
        register_interval: Least seconds between two (un)registration frames.
        connect_timeout: Seconds allowed for one connect, handshake and login.
        shutdown_grace: Seconds allowed to unregister and close on cancellation.
        backoff: The reconnect policy (default: ``Backoff()``).
        ssl_context: For ``wss://`` URLs (default: the system's trust store).
        max_message_size: The largest inbound frame accepted (bigger closes with 1009).
        quota_probe_after: Seconds an :meth:`adapt_quota` holds before the configured
            quota is offered again.
    """

    kind: ClassVar[str] = "websocket"

    def __init__(
        self,
        *,
        name: str,
        market: Market,
        quota: int,
        live: bool = True,
        watchdog: float = DEFAULT_WATCHDOG,
        register_interval: float = 0.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        backoff: Backoff | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        quota_probe_after: float = QUOTA_PROBE_AFTER,
    ) -> None:
        self._name = name
        self._market = market
        self._quota = quota
        self._configured_quota = quota
        self._probe_at: float | None = None  # when an adapted quota is offered again
        self.quota_probe_after = quota_probe_after
        self.watchdog = watchdog
        self.register_interval = register_interval
        self.connect_timeout = connect_timeout
        self.shutdown_grace = shutdown_grace
        self.backoff = backoff or Backoff()
        self.ssl_context = ssl_context
        self.max_message_size = max_message_size
        self.status = ProviderStatus(name, self.kind, market, live=live)
        # The book (kept across sessions): insertion-ordered like the hub's requests.
        self._wanted: dict[str, None] = {}
        self._unanswered: dict[str, Subscribe] = {}
        self._auth_failed = False
        # This session: symbols whose register frames were sent, and those acknowledged.
        self._sent: dict[str, None] = {}
        self._acked: set[str] = set()
        self._dirty = trio.Event()
        self._last_frame_at = -float("inf")
        self._last_handler_warning = -float("inf")
        self._link: UpstreamLink | None = None
        # Called (synchronously) after the state changed: a pool watches its sessions.
        self.on_state: Callable[[], None] | None = None
        self.frames_per_symbol = 1  # registration frames one symbol takes (pacing)

    # ---- the Provider contract -------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def market(self) -> Market:
        return self._market

    @property
    def quota(self) -> int:
        """The quota now: an adapted one reverts to the configured one once its time is up."""
        if self._probe_at is not None and _now() >= self._probe_at:
            self._probe_at = None
            log.info(
                "%s: probing the upstream's cap again: quota %d -> %d",
                self._name,
                self._quota,
                self._configured_quota,
            )
            self._quota = self._configured_quota
        return self._quota

    def statistics(self) -> ProviderStatistics:
        return self.status.snapshot(self.quota)

    def registration_delay(self, pending: int) -> float:
        """Seconds the paced sender needs to register ``pending`` more symbols (the hub
        extends a subscribe's acknowledgement deadline by it; contract.py)."""
        return pending * self.frames_per_symbol * self.register_interval

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``link`` until cancelled; ready at once, whether or not the upstream is up."""
        self._link = link
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._intake, link)
                nursery.start_soon(self._session_loop, link)
                task_status.started()
        finally:
            self.status.state = ProviderState.STOPPED
            self.status.registrations = 0

    # ---- the subclass's hooks --------------------------------------------------------

    @abc.abstractmethod
    def url(self) -> str:
        """The ``ws://`` or ``wss://`` URL of the next session."""

    async def before_connect(self) -> None:  # noqa: B027 - an optional hook
        """Run before every connect (e.g. fetch a fresh approval key). Default: nothing."""

    async def login(self, ws: ClientWebSocket) -> None:  # noqa: B027
        """Log in on a fresh connection; raise ``AuthFailed`` if refused. Default: nothing."""

    @abc.abstractmethod
    def register_frames(self, symbols: Sequence[str]) -> list[str]:
        """The frames that register ``symbols`` (one or more per symbol, or batched)."""

    @abc.abstractmethod
    def unregister_frames(self, symbols: Sequence[str]) -> list[str]:
        """The frames that release ``symbols``."""

    @abc.abstractmethod
    def handle_message(self, message: str | bytes) -> Sequence[str | bytes]:
        """Handle one inbound frame; return frames to send back at once (may be empty).

        Raises:
            MalformedFrame: the frame could not be parsed (counted and skipped).
            UpstreamError: the session is unusable and must be reconnected.
            SessionRefused: as ``UpstreamError``, waiting at least ``retry_after`` seconds.
            AuthFailed: the credentials were refused; the provider stops retrying.
        """

    def session_ended(self) -> None:  # noqa: B027 - an optional hook
        """Forget per-session state (e.g. encryption keys). Default: nothing."""

    # ---- helpers for the subclass ----------------------------------------------------

    def answer(self, symbol: str, reason: FailureReason | None = None, detail: str = "") -> None:
        """The upstream answered the registration of ``symbol``: ``reason`` None is success.

        Only an unanswered subscribe is answered to the hub; a symbol no longer wanted is
        ignored. A refused symbol is dropped from the book: the hub's request is rejected,
        or, for a re-registration after a reconnect, the symbol is revoked (the hub tells
        its subscribers and frees the slot).
        """
        if symbol not in self._wanted or symbol not in self._sent:
            return
        command = self._unanswered.pop(symbol, None)
        if reason is None:
            self._acked.add(symbol)
            self.status.registrations = len(self._acked)
            if command is not None:
                self._require_link().registered(command)
            return
        del self._wanted[symbol]
        del self._sent[symbol]
        if command is not None:
            self._require_link().rejected(command, reason, detail)
        else:
            log.warning("%s: re-registration of %s refused: %s", self._name, symbol, detail)
            self.status.last_error = f"re-registration of {symbol} refused: {detail}"
            self._require_link().revoked(symbol, reason, detail)

    def publish(self, tick: Tick) -> None:
        """Hand ``tick`` to the hub (synchronous, never blocks).

        A tick with a field outside the bounds (:func:`tick_problem`) is counted as
        ``malformed`` and dropped instead: the parsers should have caught it, and the
        clients' encoders must never see it.
        """
        problem = tick_problem(tick)
        if problem is not None:
            self.status.malformed += 1
            log.debug("%s: dropped an implausible tick: %s", self._name, problem)
            return
        self._require_link().publish(tick)

    def now_ns(self) -> int:
        """Epoch nanoseconds on the hub's clock."""
        return self._require_link().now_ns()

    def set_quota(self, quota: int) -> None:
        """Change the quota for good (an adapted quota's probe is cancelled)."""
        self._probe_at = None
        self._configured_quota = quota
        if quota != self._quota:
            log.warning("%s: quota %d -> %d", self._name, self._quota, quota)
            self._quota = quota

    def adapt_quota(self, quota: int) -> None:
        """Lower the quota to what the upstream accepted, for ``quota_probe_after`` seconds.

        Then :attr:`quota` reverts to the configured quota, so the next subscribe over the
        adapted quota probes the upstream again (and adapts again if it is still refused):
        a cap learnt once is not trusted for ever, since its cause may pass (kis.md §7).
        Each call restarts the wait.
        """
        self._probe_at = _now() + self.quota_probe_after
        if quota != self._quota:
            log.warning(
                "%s: quota %d -> %d for %g s (the upstream's cap)",
                self._name,
                self._quota,
                quota,
                self.quota_probe_after,
            )
            self._quota = quota

    def wanted(self) -> list[str]:
        """The symbols the hub wants held, in request order."""
        return list(self._wanted)

    # ---- intake ------------------------------------------------------------------------

    async def _intake(self, link: UpstreamLink) -> None:
        async for command in link.commands:
            if isinstance(command, Subscribe):
                self._take_subscribe(command, link)
            else:
                self._wanted.pop(command.symbol, None)
                self._unanswered.pop(command.symbol, None)  # withdrawn: the hub ignores answers
            self._dirty.set()

    def _take_subscribe(self, command: Subscribe, link: UpstreamLink) -> None:
        symbol = command.symbol
        if self._auth_failed:
            detail = f"{self._name}: auth failed: {self.status.last_error}"
            link.rejected(command, FailureReason.UNAVAILABLE, detail)
        elif symbol in self._wanted and symbol in self._acked:
            link.registered(command)  # already live in this session
        elif symbol not in self._wanted and len(self._wanted) >= self.quota:
            link.rejected(command, FailureReason.QUOTA, f"{self._name} holds {self.quota}")
        else:
            self._wanted[symbol] = None
            self._unanswered[symbol] = command

    # ---- the session loop --------------------------------------------------------------

    async def _session_loop(self, link: UpstreamLink) -> None:
        while True:
            self.status.state = ProviderState.CONNECTING
            failure = await self._one_session(link)
            if isinstance(failure, AuthFailed):
                self._give_up(failure, link)
                await trio.sleep_forever()
            delay = self.backoff.failed()
            if isinstance(failure, SessionRefused):
                delay = max(delay, failure.retry_after)
                self.status.detail = str(failure)
            self.status.state = ProviderState.BACKING_OFF
            self.status.reconnect_attempts = self.backoff.attempts
            text = _describe(failure)
            self.status.last_error = text
            log.warning("%s: session ended (%s); retry in %.1f s", self._name, text, delay)
            self._state_changed()
            await trio.sleep(delay)

    async def _one_session(self, link: UpstreamLink) -> Exception:
        """Run one session; return the exception that ended it.

        Every ``Exception`` ends only this session, also one in a group from the session's
        nursery (e.g. a ``KeyError`` in the sender task), even mixed with ``Cancelled``
        (the ``Cancelled`` part goes on up: cancellation always propagates). A
        ``BaseException`` that is not an ``Exception`` is not ours to stop.
        """
        failure: Exception | None = None
        try:
            await self._connect_and_serve(link)
        except* AuthFailed as group:
            failure = _first(group)
        except* (UpstreamError, OSError, trio.TooSlowError, trio.BrokenResourceError) as group:
            failure = failure or _first(group)
        except* Exception as group:
            unexpected = _first(group)
            log.debug("%s: unexpected error in session", self._name, exc_info=group)
            failure = failure or UpstreamError(
                f"unexpected {type(unexpected).__name__}: {_describe(unexpected)}"
            )
        finally:
            self._sent.clear()
            self._acked.clear()
            self.status.registrations = 0
            try:
                self.session_ended()
            except Exception:  # a hook's bug must not end the provider
                log.warning("%s: session_ended failed", self._name, exc_info=True)
        return failure or UpstreamError("session ended")

    def _give_up(self, failure: AuthFailed, link: UpstreamLink) -> None:
        self._auth_failed = True
        self.status.state = ProviderState.AUTH_FAILED
        self.status.last_error = str(failure) or "auth failed"
        log.error("%s: authentication failed (%s); not retrying", self._name, failure)
        for symbol, command in list(self._unanswered.items()):
            del self._unanswered[symbol]
            self._wanted.pop(symbol, None)
            link.rejected(command, FailureReason.UNAVAILABLE, f"{self._name}: auth failed")
        self._state_changed()

    def _state_changed(self) -> None:
        if self.on_state is not None:
            self.on_state()

    async def _connect_and_serve(self, link: UpstreamLink) -> None:
        url = urlsplit(self.url())
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
        ws: ClientWebSocket | None = None
        try:
            try:
                with trio.fail_after(self.connect_timeout):
                    await self.before_connect()
                    stream = await self._open_stream(url.scheme, url.hostname, url.port)
                    resource = (url.path or "/") + (f"?{url.query}" if url.query else "")
                    ws = await ClientWebSocket.connect(
                        stream, url.netloc, resource, max_message_size=self.max_message_size
                    )
                    await self.login(ws)
            except trio.TooSlowError:
                timeout = self.connect_timeout
                raise UpstreamError(f"connect timed out after {timeout:g} s") from None
            await self._serve(ws, link)
        except BaseException as exc:
            if ws is not None and _is_cancellation(exc):
                await self._goodbye(ws)
            raise
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)  # one session's socket never outlives it

    async def _open_stream(
        self, scheme: str, host: str | None, port: int | None
    ) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        if scheme not in ("ws", "wss") or not host:
            raise UpstreamError(f"{self._name}: not a ws:// or wss:// URL")
        secure = scheme == "wss"
        tcp = await trio.open_tcp_stream(host, port or (443 if secure else 80))
        if not secure:
            return tcp
        context = self.ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(tcp)
            # Say why (e.g. CERTIFICATE_VERIFY_FAILED): trio puts the SSLError in __cause__.
            raise UpstreamError(f"TLS handshake with {host} failed: {exc.__cause__}") from exc
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls

    async def _serve(self, ws: ClientWebSocket, link: UpstreamLink) -> None:
        self.status.state = ProviderState.CONNECTED
        self.status.connects += 1
        self.status.detail = None
        self.backoff.connected()
        link.session_started()
        log.info("%s: session %d up", self._name, self.status.connects)
        self._state_changed()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender, ws)
            await self._reader(ws, link)

    async def _reader(self, ws: ClientWebSocket, link: UpstreamLink) -> None:
        # One watchdog scope whose deadline each read pushes forward: a new cancel scope
        # per frame would cost more than the frame's parsing.
        with trio.CancelScope() as watchdog:
            while True:
                watchdog.deadline = trio.current_time() + self.watchdog
                messages = await ws.get_messages()  # every frame of one read, at once
                self.status.messages += len(messages)
                self.status.last_message_at = link.now_ns() / 1e9
                replies: list[str | bytes] = []
                for message in messages:
                    replies += self._take(message)
                for reply in replies:
                    await ws.send_message(reply)
        assert watchdog.cancelled_caught
        raise UpstreamError(f"no frame for {self.watchdog:g} s")

    def _take(self, message: str | bytes) -> Sequence[str | bytes]:
        """Handle one frame: the error boundary of one frame (see "Untrusted input")."""
        try:
            return self.handle_message(message)
        except MalformedFrame as exc:
            self.status.malformed += 1
            log.debug("%s: skipped a malformed frame: %s", self._name, _describe(exc))
            return ()
        except UpstreamError:
            raise  # SessionRefused, AuthFailed, ...: the handler ends the session on purpose
        except Exception as exc:
            self.status.malformed += 1
            now = trio.current_time()
            if now - self._last_handler_warning >= HANDLER_WARNING_INTERVAL:
                self._last_handler_warning = now
                log.warning(
                    "%s: skipped a frame its handler failed on (%s); the session goes on",
                    self._name,
                    type(exc).__name__,
                )
            log.debug("%s: handler failure", self._name, exc_info=True)
            return ()

    async def _sender(self, ws: ClientWebSocket) -> None:
        """Bring this session's registrations in line with the book, paced."""
        while True:
            self._dirty = trio.Event()  # changes from now on wake the next round
            gone = [s for s in self._sent if s not in self._wanted]
            for symbol in gone:
                del self._sent[symbol]
                self._acked.discard(symbol)
            self.status.registrations = len(self._acked)
            if gone:
                await self._send_paced(ws, self.unregister_frames(gone))
            new = [s for s in self._wanted if s not in self._sent]
            self._sent.update(dict.fromkeys(new))
            if new:
                await self._send_paced(ws, self.register_frames(new))
            if not gone and not new:
                await self._dirty.wait()

    async def _send_paced(self, ws: ClientWebSocket, frames: list[str]) -> None:
        for frame in frames:
            await trio.sleep_until(self._last_frame_at + self.register_interval)
            self._last_frame_at = trio.current_time()
            await ws.send_message(frame)

    async def _goodbye(self, ws: ClientWebSocket) -> None:
        """Unregister and close, shielded from the cancellation, within the grace."""
        with trio.move_on_after(self.shutdown_grace, shield=True):
            try:
                if self._sent and ws.closed is None:
                    for frame in self.unregister_frames(list(self._sent)):
                        await ws.send_message(frame)
                await ws.aclose()
            except UpstreamError:
                pass  # already gone: nothing left to release

    def _require_link(self) -> UpstreamLink:
        if self._link is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._link


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first leaf exception of a (possibly nested) exception group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, Exception)
    return exc


def _describe(exc: BaseException) -> str:
    """The text of ``exc`` for logs and ``last_error``: bounded, and never raising.

    An exception's ``str`` may be anything (a ``KeyError`` shows its key's repr); when it
    is empty or cannot be made, the type's name stands in.
    """
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text[:MAX_ERROR_TEXT] or type(exc).__name__


def _now() -> float:
    """Trio's clock, or -inf outside a Trio run (then no adapted quota expires)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return -math.inf


def _is_cancellation(exc: BaseException) -> bool:
    """True if ``exc`` is a Cancelled, or a group of nothing but Cancelled."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return rest is None
    return isinstance(exc, trio.Cancelled)
