"""The FMP provider: US stocks from Financial Modeling Prep's real-time WebSocket.

Built on the shared session engine (:class:`~.session.WebSocketProvider`), which connects,
reconnects with backoff, re-registers everything held and runs the watchdog. This module
adds FMP's protocol (``protocols/fmp.md``; the wire format is in :mod:`.fmp_wire`):

Login (§2). ``{"event":"login","data":{"apiKey":...}}`` first. FMP documents no answer, so
``login_grace`` seconds of silence count as success; an answer is read when it comes, even
later in the session. ``Unauthorized`` / "you are not authorized" / 401 is permanent
(:class:`~trio_stock.errors.AuthFailed`: state ``auth_failed``, no retries, a log line
without the key); "Connected from another location" means another process holds the key
(§6, §8.2): the session waits ``another_location_wait`` seconds before trying again, so two
processes do not kick each other off in a loop, and health says why in ``detail``.

Subscriptions (§3). Tickers go out lower-case, batched as lists; ``s`` comes back compared
case-insensitively. Acks are not documented either, so a subscribe is answered to the hub
(a) by a ``subscribe`` control frame: a refusal ("not authorized": the plan lacks the
symbol, status >= 400) rejects the symbols it names, else the oldest batch; a success
confirms likewise; (b) by the first data frame of the symbol; or (c) when ``ack_grace``
seconds pass without a refusal. (c) is the login rule applied to subscriptions: without it
a silent server would make every subscribe time out.

Data (§4). ``T``/``Q``/``B`` become ticks; heartbeats and other control events are not data.
The hub's merge keeps a quote from moving the last price and reports a break (``B``) with
its kind without moving the last price (``model.merge``): a break corrects history, and the
next trade sets the price again. Frames are untrusted (:mod:`.fmp_wire`): every object
that is neither a control frame nor usable data counts once in ``malformed`` and is
skipped, and the frame's other objects go on.

Liveness (§5, §8.4). The engine's watchdog restarts a session after ``watchdog`` seconds
without *any* frame. Heartbeats (reported about every 30 s) keep a quiet session alive,
so a closed market is not a reason to reconnect; the default of 90 s tolerates two lost
heartbeats. A session that ends after a healthy period retries after about one second.

Snapshots (§7). When the hub asks for a symbol new to the upstream, one
``GET {rest}/stable/quote?symbol=A,B,...`` (batched) seeds its state with the last price,
the day's range and volume and the previous close, so the first subscriber sees a price at
once even when the tape is quiet. A snapshot never moves the price of a symbol that already
traded live. REST errors (invalid key, limit reached, legacy 403) are logged and shown in
``last_error``/``detail``; they never end the session. An answer is read up to
``MAX_REST_BODY`` bytes (100 quotes take ~60 KB); a longer one is an error, and so is
anything unexpected while reading or publishing it: the snapshot task never ends.

TLS (§8.1). Certificate verification is always on. ``FMP_CA_BUNDLE`` names a CA bundle
used for both ``wss://`` and ``https://`` (the stocks host is reported to serve an
incomplete chain); there is no switch to turn verification off.

Secrets. The key is revealed in two places only: the login frame and the REST transport,
which adds ``apikey`` below httpx's request logging, so neither logs, errors nor
statistics can carry it; server texts are scrubbed of it as well.
"""

from __future__ import annotations

import collections
import logging
import ssl
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import ClassVar, cast
from urllib.parse import quote

import attrs
import httpx
import trio

from ..config import Config, Secret
from ..errors import AuthFailed, ConfigError, UpstreamError
from ..model import Market, Tick, TickKind
from ..results import FailureReason
from .backoff import Backoff
from .contract import UpstreamLink
from .fmp_wire import (
    MAX_SYMBOLS_PER_QUOTE,
    MAX_TICKERS_PER_FRAME,
    Control,
    LoginOutcome,
    MalformedJson,
    RestError,
    decode_frame,
    login_frame,
    parse_quotes,
    ticker_frames,
)
from .session import MalformedFrame, SessionRefused, WebSocketProvider
from .wsclient import ClientWebSocket

log = logging.getLogger(__name__)

DEFAULT_QUOTA = 500  # FMP_MAX_SUBSCRIPTIONS; FMP states no per-connection cap (fmp.md §6)
DEFAULT_WATCHDOG = 90.0  # s; clients use 30-90 s, heartbeats reported every ~30 s (§5)
DEFAULT_LOGIN_GRACE = 3.0  # s of silence after login taken as success (§2, GH-14988597846)
DEFAULT_ACK_GRACE = 3.0  # s without a refusal after a subscribe taken as success (§3)
DEFAULT_ANOTHER_LOCATION_WAIT = 300.0  # s before retrying when the key is in use (§6)
DEFAULT_REST_TIMEOUT = 10.0  # s for one /stable/quote request
SEED_BUFFER_MIN = 64  # symbols waiting for a snapshot; at most ~quota short strings
MAX_REST_BODY = 1 << 20  # bytes of one /stable/quote answer (decoded) read at most


class FmpProvider(WebSocketProvider):
    """US tickers from FMP's WebSocket, seeded from ``/stable/quote`` (see module docs).

    Args:
        api_key: The FMP key (used for the WebSocket login and the REST quote).
        ws_url: The WebSocket URL (``FMP_WS_URL``).
        rest_url: The REST base URL (``FMP_REST_URL``).
        quota: Most tickers held upstream.
        watchdog: Seconds without any frame before reconnecting.
        login_grace: Seconds of silence after login taken as success.
        ack_grace: Seconds without a refusal after a subscribe taken as success.
        another_location_wait: Least seconds to wait when the key is used elsewhere.
        rest_timeout: Seconds for one snapshot request.
        ssl_context: For ``wss://`` and ``https://`` (default: :func:`tls_context`).
        http_transport: An httpx transport for the REST side (tests may pass
            ``httpx.MockTransport``); default: httpx's own, with ``ssl_context``.
        backoff: The reconnect policy.
        name: The provider's name.
    """

    kind: ClassVar[str] = "fmp"

    def __init__(
        self,
        *,
        api_key: Secret,
        ws_url: str,
        rest_url: str,
        quota: int = DEFAULT_QUOTA,
        watchdog: float = DEFAULT_WATCHDOG,
        login_grace: float = DEFAULT_LOGIN_GRACE,
        ack_grace: float = DEFAULT_ACK_GRACE,
        another_location_wait: float = DEFAULT_ANOTHER_LOCATION_WAIT,
        rest_timeout: float = DEFAULT_REST_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        backoff: Backoff | None = None,
        name: str = "fmp",
    ) -> None:
        context = ssl_context or tls_context(None)
        super().__init__(
            name=name,
            market=Market.US,
            quota=quota,
            watchdog=watchdog,
            backoff=backoff,
            ssl_context=context,
        )
        self._api_key = api_key
        self._ws_url = ws_url
        self._rest_url = rest_url.rstrip("/")
        self.login_grace = login_grace
        self.ack_grace = ack_grace
        self.another_location_wait = another_location_wait
        self.rest_timeout = rest_timeout
        self._transport = _KeyedTransport(
            http_transport or httpx.AsyncHTTPTransport(verify=context), api_key
        )
        # This session's subscribes not answered yet: the symbols, and the batches in the
        # order they were sent (to map an ack that names no ticker, fmp.md §3).
        self._awaiting: dict[str, None] = {}
        self._batches: collections.deque[list[str]] = collections.deque()
        self._grace: collections.deque[tuple[float, tuple[str, ...]]] = collections.deque()
        self._grace_lot = trio.lowlevel.ParkingLot()
        # Snapshots: symbols queued for /stable/quote, and which of them traded live since.
        size = max(SEED_BUFFER_MIN, quota)
        self._seed_send, self._seed_receive = trio.open_memory_channel[str](size)
        self._seeding: dict[str, bool] = {}  # symbol -> traded live since queued
        self._rest_detail: str | None = None
        self.snapshots = 0  # snapshot ticks published
        self.rest_errors = 0

    @classmethod
    def from_config(cls, config: Config) -> FmpProvider:
        """The provider as ``FMP_*`` settings describe it.

        Raises:
            ConfigError: no ``FMP_API_KEY``, or ``FMP_CA_BUNDLE`` is not a readable file.
        """
        if config.fmp_api_key is None:
            raise ConfigError("the FMP provider needs FMP_API_KEY")
        return cls(
            api_key=config.fmp_api_key,
            ws_url=config.fmp_ws_url,
            rest_url=config.fmp_rest_url,
            quota=config.fmp_max_subscriptions,
            watchdog=config.fmp_watchdog,
            ssl_context=tls_context(config.fmp_ca_bundle),
        )

    async def run(
        self,
        link: UpstreamLink,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The engine's session, plus the snapshot requester and the ack-grace timer."""
        async with (
            # No httpx timeouts: one deadline per request, ``rest_timeout`` (_seed).
            # No proxies from the environment: the WebSocket does not use them either, and
            # a proxy mount would bypass the keyed transport.
            httpx.AsyncClient(
                base_url=self._rest_url, transport=self._transport, timeout=None, trust_env=False
            ) as client,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(super().run, link)
            nursery.start_soon(self._seed_loop, client)
            nursery.start_soon(self._grace_loop)
            task_status.started()

    # ---- the engine's hooks ------------------------------------------------------------

    def url(self) -> str:
        return self._ws_url

    async def login(self, ws: ClientWebSocket) -> None:
        """Send the login, then wait up to ``login_grace`` s for an answer (fmp.md §2).

        Raises:
            AuthFailed: 401 / "Unauthorized" / "you are not authorized".
            SessionRefused: "Connected from another location" (waits long before retrying).
            UpstreamError: any other refusal.
        """
        await ws.send_message(login_frame(self._api_key.reveal()))
        with trio.move_on_after(self.login_grace):
            while True:
                message = await ws.get_message()
                self.status.messages += 1
                try:
                    decoded = decode_frame(message, self.now_ns())
                except MalformedJson:
                    self.status.malformed += 1
                    continue
                self.status.malformed += decoded.malformed
                for control in decoded.controls:
                    if control.event == "login":
                        self._check_login(control)
                        log.info("%s: logged in", self.name)
                        return
        log.info(
            "%s: no login answer in %g s; taking silence as success (protocols/fmp.md §2)",
            self.name,
            self.login_grace,
        )

    def register_frames(self, symbols: Sequence[str]) -> list[str]:
        """Subscribe frames (lower-case lists); starts the ack grace and the snapshots."""
        frames = []
        for i in range(0, len(symbols), MAX_TICKERS_PER_FRAME):
            batch = list(symbols[i : i + MAX_TICKERS_PER_FRAME])
            self._batches.append(batch)
            frames += ticker_frames("subscribe", batch)
        self._awaiting.update(dict.fromkeys(symbols))
        self._grace.append((trio.current_time() + self.ack_grace, tuple(symbols)))
        self._grace_lot.unpark_all()
        self._queue_snapshots([s for s in symbols if s in self._unanswered])
        return frames

    def unregister_frames(self, symbols: Sequence[str]) -> list[str]:
        for symbol in symbols:
            self._awaiting.pop(symbol, None)
            self._seeding.pop(symbol, None)
        return ticker_frames("unsubscribe", symbols)

    def handle_message(self, message: str | bytes) -> Sequence[str | bytes]:
        """Publish the ticks of one frame and act on its control events.

        Each unusable object of the frame counts once in ``malformed``.

        Raises:
            MalformedFrame: the frame is not JSON, or not an object or array.
            AuthFailed, SessionRefused, UpstreamError: a login event refused the session.
        """
        try:
            decoded = decode_frame(message, self.now_ns())
        except MalformedJson as exc:
            raise MalformedFrame(str(exc)) from None
        self.status.malformed += decoded.malformed
        for control in decoded.controls:
            self._on_control(control)
        for tick in decoded.ticks:
            self._on_tick(tick)
        return ()

    def session_ended(self) -> None:
        self._awaiting.clear()
        self._batches.clear()
        self._grace.clear()

    # ---- control frames ----------------------------------------------------------------

    def _check_login(self, control: Control) -> None:
        outcome = control.login_outcome()
        text = self._scrub(control.message) or f"status {control.status}"
        if outcome is LoginOutcome.UNAUTHORIZED:
            raise AuthFailed(
                f"FMP refused the API key ({text}); check FMP_API_KEY and the plan's "
                "WebSocket access"
            )
        if outcome is LoginOutcome.ANOTHER_LOCATION:
            raise SessionRefused(
                f"another process is using this FMP API key ({text}); retrying in "
                f"{self.another_location_wait:g} s",
                retry_after=self.another_location_wait,
            )
        if outcome is LoginOutcome.FAILED:
            raise UpstreamError(f"FMP login failed ({text})")

    def _on_control(self, control: Control) -> None:
        if control.event == "heartbeat":
            return  # liveness only: the engine's watchdog saw the frame (fmp.md §5)
        if control.event == "login":
            self._check_login(control)  # a late answer, or a displacement mid-session
        elif control.event == "subscribe":
            self._on_subscribe_ack(control)
        elif "connected from another location" in control.message.lower():
            self._check_login(attrs.evolve(control, event="login"))
        elif control.refused:
            log.warning(
                "%s: %s refused: %s", self.name, control.event, self._scrub(control.message)
            )
        else:
            log.debug("%s: %s event: %s", self.name, control.event, self._scrub(control.message))

    def _on_subscribe_ack(self, control: Control) -> None:
        named = control.mentions(self._awaiting) or self._oldest_batch()
        detail = self._scrub(control.message) or f"status {control.status}"
        for symbol in named:
            self._awaiting.pop(symbol, None)
            if control.refused:
                self._seeding.pop(symbol, None)
                self.answer(symbol, FailureReason.REJECTED, f"FMP: {detail}")
            else:
                self.answer(symbol)

    def _oldest_batch(self) -> list[str]:
        while self._batches:
            batch = [s for s in self._batches.popleft() if s in self._awaiting]
            if batch:
                return batch
        return []

    # ---- data --------------------------------------------------------------------------

    def _on_tick(self, tick: Tick) -> None:
        symbol = tick.symbol
        if symbol in self._awaiting:  # data proves the subscription
            del self._awaiting[symbol]
            self.answer(symbol)
        if symbol in self._seeding and tick.kind is not TickKind.QUOTE:
            self._seeding[symbol] = True  # a snapshot must not move this price back
        self.publish(tick)

    async def _grace_loop(self) -> None:
        """Confirm subscribes nobody refused within ``ack_grace`` seconds (fmp.md §3)."""
        while True:
            if not self._grace:
                await self._grace_lot.park()
                continue
            await trio.sleep_until(self._grace[0][0])
            now = trio.current_time()
            while self._grace and self._grace[0][0] <= now:
                _, symbols = self._grace.popleft()
                for symbol in symbols:
                    if symbol in self._awaiting:
                        del self._awaiting[symbol]
                        self.answer(symbol)

    # ---- snapshots ---------------------------------------------------------------------

    def _queue_snapshots(self, symbols: list[str]) -> None:
        for symbol in symbols:
            if symbol in self._seeding:
                continue
            try:
                self._seed_send.send_nowait(symbol)
            except trio.WouldBlock:
                log.debug("%s: snapshot queue full; %s not seeded", self.name, symbol)
                continue
            self._seeding[symbol] = False

    async def _seed_loop(self, client: httpx.AsyncClient) -> None:
        async for first in self._seed_receive:
            batch = [first]
            while len(batch) < MAX_SYMBOLS_PER_QUOTE:
                try:
                    batch.append(self._seed_receive.receive_nowait())
                except trio.WouldBlock:
                    break
            wanted = set(self.wanted())
            todo = [s for s in dict.fromkeys(batch) if s in wanted and s in self._seeding]
            if todo:
                try:
                    await self._seed(client, todo)
                except Exception as exc:  # a snapshot is never worth the provider task
                    log.debug("%s: snapshot failure", self.name, exc_info=True)
                    self._rest_failed(f"snapshot failed: {type(exc).__name__}", None)
            for symbol in batch:  # also those no longer wanted: they may be queued again
                self._seeding.pop(symbol, None)

    async def _seed(self, client: httpx.AsyncClient, symbols: list[str]) -> None:
        """One ``/stable/quote`` request; publish what it returns (fmp.md §7)."""
        try:
            with trio.fail_after(self.rest_timeout):
                # Literal commas, as FMP documents (fmp.md §7); tickers need no escaping.
                status, body = await _get_bounded(
                    client, f"/stable/quote?symbol={','.join(symbols)}", MAX_REST_BODY
                )
            ticks = parse_quotes(status, body, self.now_ns())
        except RestError as exc:
            self._rest_failed(f"snapshot refused: {exc.kind}, {self._scrub(str(exc))}", exc.kind)
            return
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            self._rest_failed(f"snapshot request failed: {type(exc).__name__}", None)
            return
        if self._rest_detail is not None and self.status.detail == self._rest_detail:
            self.status.detail = None
        self._rest_detail = None
        asked = set(symbols)
        for tick in ticks:
            traded = self._seeding.get(tick.symbol)
            if tick.symbol not in asked or traded is None:
                continue
            if traded:  # keep the live price; take the day's figures only
                tick = attrs.evolve(
                    tick,
                    price=None,
                    change=None,
                    change_rate=None,
                    provider_time_ns=tick.received_ns,
                )
            self.publish(tick)
            self.snapshots += 1

    def _rest_failed(self, text: str, kind: str | None) -> None:
        self.rest_errors += 1
        self.status.last_error = text
        log.warning("%s: %s", self.name, text)
        if kind in ("invalid_key", "limit", "legacy") and self.status.detail in (
            None,
            self._rest_detail,
        ):
            self._rest_detail = self.status.detail = f"REST quotes unavailable: {kind}"

    def _scrub(self, text: str) -> str:
        """``text`` with our key masked, should a server ever echo it."""
        key = self._api_key.reveal()
        return text.replace(key, "***") if key else text


async def _get_bounded(client: httpx.AsyncClient, url: str, limit: int) -> tuple[int, bytes]:
    """``GET url``: the status and at most ``limit`` bytes of the (decoded) body.

    Raises:
        RestError: the body is longer than ``limit``.
        httpx.HTTPError: the request failed.
    """
    async with client.stream("GET", url) as response:
        # An async generator, typed as an iterator: closed at once when we stop early.
        body_chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        async with aclosing(body_chunks) as chunks:
            body = bytearray()
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise RestError(response.status_code, f"answer longer than {limit} bytes")
        return response.status_code, bytes(body)


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying TLS context: the system's trust store, or ``ca_bundle`` (fmp.md §8.1).

    Raises:
        ConfigError: ``ca_bundle`` is not a readable bundle.
    """
    if ca_bundle is None:
        return ssl.create_default_context()
    if not Path(ca_bundle).is_file():
        raise ConfigError(f"FMP_CA_BUNDLE={ca_bundle!r}: no such file")
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"FMP_CA_BUNDLE={ca_bundle!r}: {exc}") from None


class _KeyedTransport(httpx.AsyncBaseTransport):
    """Adds ``apikey`` to each request below httpx's logging, which shows the URL."""

    def __init__(self, inner: httpx.AsyncBaseTransport, api_key: Secret) -> None:
        self._inner = inner
        self._api_key = api_key

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = b"apikey=" + quote(self._api_key.reveal(), safe="").encode()
        query = request.url.query + b"&" + key if request.url.query else key
        keyed = httpx.Request(
            request.method,
            request.url.copy_with(query=query),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(keyed)

    async def aclose(self) -> None:
        await self._inner.aclose()
