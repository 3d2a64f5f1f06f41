"""KIS (Korea Investment & Securities) real-time domestic stock prices: the provider.

The wire format is :mod:`.kis_wire` (``protocols/kis.md``); this module adds the session:
a fresh approval key before every connect (§1.1, §8.9), registrations paced as the
official samples pace them (§7), acknowledgements answered to the hub once every TR of a
symbol answered, ``OPSP8996`` (the key is in use elsewhere) as a refused session with a
long wait (§8.4), and ``OPSP0008`` as a quota learnt for ``QUOTA_PROBE_AFTER`` seconds.
The shared reconnecting session (``session.py``) supplies reconnects, backoff, the
watchdog, pacing and shutdown.

One key serves one session of up to 41 registrations; several keys (``KIS_ACCOUNTS``)
are one :class:`~.kis_pool.KisPool` of these sessions.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import attrs
import httpx

from ..clock import KST
from ..config import KIS_SESSION_LIMIT, Config, Secret
from ..errors import AuthFailed, ConfigError, UpstreamError
from ..model import Market
from ..results import FailureReason
from .kis_wire import (
    APPKEY_IN_USE,
    APPROVAL_NOT_FOUND,
    MAX_SUBSCRIBE_OVER,
    NOT_SUBSCRIBED,
    ORDERBOOK,
    TRADES,
    UNSUBSCRIBED,
    Control,
    DataFrame,
    approval_body,
    parse_frame,
    parse_orderbook,
    parse_trade,
    registration,
)
from .session import MalformedFrame, SessionRefused, WebSocketProvider

log = logging.getLogger(__name__)

KEY_IN_USE_RETRY = 60.0  # seconds to wait after OPSP8996 before trying again (§8.4)
PAPER_REGISTER_INTERVAL = 0.5  # official samples' pause between registrations (§7)
REAL_REGISTER_INTERVAL = 0.05


# ---- the provider ---------------------------------------------------------------------


@attrs.define
class _Pending:
    """One symbol's registration in flight: the TRs not answered yet, the first failure."""

    trs: set[str]
    failure: tuple[FailureReason, str] | None = None


class KisProvider(WebSocketProvider):
    """Korean codes from the KIS real-time WebSocket (one app key, one session).

    Args:
        app_key: ``KIS_APP_KEY``.
        app_secret: ``KIS_APP_SECRET``.
        ws_url: The WebSocket URL (any path is accepted by KIS, §1).
        rest_url: The REST base URL for the approval key.
        max_subscriptions: ``KIS_MAX_SUBSCRIPTIONS``; capped at the session limit of 41.
        orderbook: Also register ``H0STASP0`` (uses a second registration per symbol).
        custtype: ``P`` individual or ``B`` corporate (§2).
        http_transport: An httpx transport for the approval request (tests may inject one).
        name: The name in logs and statistics (a pool's session: its account's label).
        **engine: Options of :class:`WebSocketProvider` (watchdog, register_interval, ...).

    The quota starts at ``min(max_subscriptions, 41) // TRs per symbol``. When the server
    answers ``OPSP0008`` earlier, it drops to what the server accepted; after
    ``quota_probe_after`` seconds (``session.QUOTA_PROBE_AFTER`` by default) the full quota
    is offered again, so the next subscribe over the learnt cap probes the server once
    more (and the quota adapts again if it is still refused). ``encrypted_frames`` counts
    dropped encrypted frames.
    """

    kind = "kis"

    def __init__(
        self,
        *,
        app_key: Secret,
        app_secret: Secret,
        ws_url: str,
        rest_url: str,
        max_subscriptions: int = 40,
        orderbook: bool = False,
        custtype: str = "P",
        http_transport: httpx.AsyncBaseTransport | None = None,
        name: str = "kis",
        **engine: Any,
    ) -> None:
        self.trs = (TRADES, ORDERBOOK) if orderbook else (TRADES,)
        quota = min(max_subscriptions, KIS_SESSION_LIMIT) // len(self.trs)
        super().__init__(name=name, market=Market.KR, quota=quota, **engine)
        self.frames_per_symbol = len(self.trs)
        self._app_key = app_key
        self._app_secret = app_secret
        self._ws_url = ws_url
        self._rest_url = rest_url.rstrip("/")
        self.custtype = custtype
        self._transport = http_transport
        self._approval_key: Secret | None = None
        # This session: registrations awaiting their acks, and what is live.
        self._awaiting: dict[str, _Pending] = {}
        self._live: set[tuple[str, str]] = set()  # (tr_id, code) acknowledged
        self.encrypted_frames = 0

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> KisProvider:
        """Build from ``KIS_*`` settings; ``overrides`` go to the constructor (tests)."""
        if config.kis_app_key is None or config.kis_app_secret is None:
            raise ConfigError("the KIS provider needs KIS_APP_KEY and KIS_APP_SECRET")
        interval = config.kis_register_interval
        if interval is None:
            paper = config.kis_env == "paper"
            interval = PAPER_REGISTER_INTERVAL if paper else REAL_REGISTER_INTERVAL
        options: dict[str, Any] = {
            "app_key": config.kis_app_key,
            "app_secret": config.kis_app_secret,
            "ws_url": config.kis_ws_endpoint,
            "rest_url": config.kis_rest_endpoint,
            "max_subscriptions": config.kis_max_subscriptions,
            "orderbook": config.kis_orderbook,
            "custtype": config.kis_custtype,
            "watchdog": config.kis_watchdog,
            "register_interval": interval,
        }
        options.update(overrides)
        return cls(**options)

    # ---- session hooks ------------------------------------------------------------------

    def url(self) -> str:
        return self._ws_url

    async def before_connect(self) -> None:
        """Fetch a fresh approval key (§1.1, §8.4: before connecting, never inside)."""
        self._approval_key = None
        url = f"{self._rest_url}/oauth2/Approval"
        body = approval_body(self._app_key, self._app_secret)
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=None) as client:
                response = await client.post(url, json=body)
        except httpx.HTTPError as exc:  # the text names the URL only, never the body
            raise UpstreamError(f"approval request failed: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise AuthFailed(f"approval refused (HTTP {response.status_code})")
        if response.status_code != 200:
            raise UpstreamError(f"approval failed (HTTP {response.status_code})")
        try:
            key = response.json()["approval_key"]
        except (ValueError, KeyError, TypeError):
            raise UpstreamError("approval answer without approval_key") from None
        if not isinstance(key, str) or not key:
            raise UpstreamError("approval answer without approval_key")
        self._approval_key = Secret(key)

    def register_frames(self, symbols: Sequence[str]) -> list[str]:
        frames = []
        for code in symbols:
            self._awaiting[code] = _Pending(set(self.trs))
            frames += [self._registration(tr_id, code, register=True) for tr_id in self.trs]
        return frames

    def unregister_frames(self, symbols: Sequence[str]) -> list[str]:
        frames = []
        for code in symbols:
            self._awaiting.pop(code, None)
            for tr_id in self.trs:
                self._live.discard((tr_id, code))
                frames.append(self._registration(tr_id, code, register=False))
        return frames

    def handle_message(self, message: str | bytes) -> Sequence[str | bytes]:
        """Publish a data frame's records, echo a PINGPONG, act on an acknowledgement.

        Raises:
            MalformedFrame: not a frame of KIS's (a binary frame, any other text).
            SessionRefused: ``OPSP8996``, the app key is in use elsewhere (§8.4).
            UpstreamError: ``OPSP0011``, the approval key is not accepted.
        """
        if isinstance(message, bytes):
            raise MalformedFrame("a binary frame (KIS sends text only)")
        text = message
        try:
            frame = parse_frame(text)
            if isinstance(frame, DataFrame):
                self._publish(frame)
                return []
        except ValueError as exc:
            raise MalformedFrame(str(exc)) from None
        if frame.is_ping:
            return [text]  # echo the identical text frame (§4)
        return self._control(frame)

    def session_ended(self) -> None:
        self._awaiting.clear()
        self._live.clear()
        self._approval_key = None

    # ---- inbound ------------------------------------------------------------------------

    def _publish(self, frame: DataFrame) -> None:
        if frame.encrypted:
            self.encrypted_frames += 1
            if self.encrypted_frames == 1:
                log.warning(
                    "kis: dropping encrypted frames (%s): notices are not used", frame.tr_id
                )
            return
        received = self.now_ns()
        if frame.tr_id == TRADES:
            for record in frame.records:  # each record on its own (module doc)
                try:
                    tick = parse_trade(record).tick(frame.count, received)
                except ValueError as exc:
                    self._malformed_record(exc)
                    continue
                self.publish(tick)
        elif frame.tr_id == ORDERBOOK:
            today = dt.datetime.fromtimestamp(received / 1e9, KST).strftime("%Y%m%d")
            for record in frame.records:
                try:
                    tick = parse_orderbook(record, today, frame.count, received)
                except ValueError as exc:
                    self._malformed_record(exc)
                    continue
                self.publish(tick)
        else:
            log.debug("kis: ignoring %s frame", frame.tr_id)

    def _malformed_record(self, exc: ValueError) -> None:
        self.status.malformed += 1
        log.debug("kis: skipped a malformed record: %s", exc)

    def _control(self, control: Control) -> list[str | bytes]:
        if control.msg_cd == APPKEY_IN_USE or control.tr_id == "(null)":
            raise SessionRefused(
                f"another session uses this app key ({control.msg_cd or control.tr_id})",
                retry_after=KEY_IN_USE_RETRY,
            )
        if control.msg_cd == APPROVAL_NOT_FOUND:
            raise UpstreamError(f"approval key not accepted ({control.msg_cd})")
        if control.msg_cd in (UNSUBSCRIBED, NOT_SUBSCRIBED):
            if control.msg_cd == NOT_SUBSCRIBED:
                log.warning("kis: %s %s was not registered", control.tr_id, control.tr_key)
            return []
        pending = self._awaiting.get(control.tr_key)
        if pending is None or control.tr_id not in pending.trs:
            if not control.ok:
                log.warning("kis: %s %s: %s", control.tr_id, control.tr_key, control.msg_cd)
                self.status.last_error = f"{control.msg_cd} {control.msg1}".strip()
            return []
        pending.trs.discard(control.tr_id)
        if control.ok:
            self._live.add((control.tr_id, control.tr_key))
        elif pending.failure is None:
            pending.failure = self._failure(control)
        if pending.trs:
            return []  # another TR of this symbol has not answered yet
        return self._settle(control.tr_key, pending.failure)

    def _failure(self, control: Control) -> tuple[FailureReason, str]:
        detail = f"{control.msg_cd} {control.msg1}".strip()
        if control.msg_cd == MAX_SUBSCRIBE_OVER:
            # The server's cap may be below 41 (§7, U15): learn it from what it accepted,
            # for a while (its cause, e.g. registrations of an earlier session, may pass).
            accepted = len(self._live) // len(self.trs)
            self.adapt_quota(max(1, min(self.quota, accepted)))
            return FailureReason.QUOTA, detail
        return FailureReason.REJECTED, detail

    def _settle(self, code: str, failure: tuple[FailureReason, str] | None) -> list[str | bytes]:
        """Answer ``code`` once each of its TRs answered; undo a half registration."""
        del self._awaiting[code]
        if failure is None:
            self.answer(code)
            return []
        self.answer(code, *failure)
        undo = [tr_id for tr_id in self.trs if (tr_id, code) in self._live]
        for tr_id in undo:
            self._live.discard((tr_id, code))
        return [self._registration(tr_id, code, register=False) for tr_id in undo]

    def _registration(self, tr_id: str, code: str, *, register: bool) -> str:
        if self._approval_key is None:
            raise UpstreamError("no approval key for this session")
        return registration(self._approval_key.reveal(), self.custtype, tr_id, code, register)
