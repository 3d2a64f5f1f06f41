"""The seed 000 client protocol at ``/ws/stock/``: Korean stocks by 6-digit code.

Every message name, field name and type is exactly the document's; pushed ``stock_price``
messages carry extra fields with real data (change, best bid/ask, day volume) and drop
none. Settled points (DESIGN.md): ``symbol`` is the KIS frame's record-sequence field
("001"); ``time`` is HHMMSS in Korean time; ``volume`` is this trade's size;
``total_subscribed``/``count`` are the client's own; ``kis_active_subscriptions`` is the
Korean provider's active upstream count and ``kis_max_subscriptions`` its quota. Invalid
codes get the document's ``warning`` and are listed in ``failed``; valid codes in the same
request still subscribe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from ..clock import KST
from ..hub import Failure, FailureReason, SubscribeResult
from ..model import Market, SymbolState
from ..symbols import is_korean_code
from ..transport.wsserver import text_frame
from .protocol import ClientContext, Handler, Payload, takes
from .requests import CodesRequest

GREETING = "실시간 주가 스트림에 연결되었습니다."
INVALID_CODES = "유효하지 않은 종목 코드: {codes!r}"  # seed 000, "경고 메시지 (warning)"
QUOTA_FAILED = "{limit}개 종목 구독 실패"  # seed 000, "40개 초과 시" (with the configured limit)
# Not in seed 000: held codes the upstream stopped serving (refused again after a reconnect).
SUBSCRIPTION_ENDED = "종목 구독 종료: {details}"


def _korean_quota(ctx: ClientContext) -> int:
    provider = ctx.hub.provider_for(Market.KR)
    return 0 if provider is None else provider.quota


def _split_codes(codes: Sequence[str]) -> tuple[list[str], list[str]]:
    valid = [c.strip() for c in codes if is_korean_code(c)]
    invalid = [c for c in codes if not is_korean_code(c)]
    return valid, invalid


def _error_text(ctx: ClientContext, result: SubscribeResult) -> str | None:
    if not result.failed:
        return None
    if any(f.reason is FailureReason.QUOTA for f in result.failed):
        return QUOTA_FAILED.format(limit=_korean_quota(ctx))
    return "; ".join(f"{f.symbol}: {f.detail or f.reason.value}" for f in result.failed)


async def _warn_invalid(ctx: ClientContext, request: CodesRequest) -> tuple[list[str], list[str]]:
    """The request's valid and invalid codes, after warning about the invalid ones."""
    valid, invalid = _split_codes(request.codes)
    if invalid:
        await ctx.reply({"type": "warning", "message": INVALID_CODES.format(codes=invalid)})
    return valid, invalid


@takes(CodesRequest)
async def subscribe(ctx: ClientContext, request: CodesRequest) -> None:
    valid, invalid = await _warn_invalid(ctx, request)
    result = await ctx.hub.subscribe(ctx.subscriber, valid)
    failed = [f.symbol for f in result.failed] + invalid
    error = _error_text(ctx, result)
    if error is None and invalid:
        error = INVALID_CODES.format(codes=invalid)
    await ctx.reply(
        {
            "type": "subscription_result",
            "success": not failed,
            "subscribed": list(result.accepted),
            "failed": failed,
            "error": error,
            "total_subscribed": len(ctx.subscriber.symbols),
        }
    )


@takes(CodesRequest)
async def unsubscribe(ctx: ClientContext, request: CodesRequest) -> None:
    valid, invalid = await _warn_invalid(ctx, request)
    released = ctx.hub.unsubscribe(ctx.subscriber, valid)
    if ctx.update_filter is not None:
        ctx.update_filter.forget(released)
    await ctx.reply(
        {
            "type": "unsubscription_result",
            "success": not invalid,
            "unsubscribed": list(released),
            "error": INVALID_CODES.format(codes=invalid) if invalid else None,
            "total_subscribed": len(ctx.subscriber.symbols),
        }
    )


async def list_subscriptions(ctx: ClientContext, message: Mapping[str, Any]) -> None:
    codes = sorted(s for s in ctx.subscriber.symbols if is_korean_code(s))
    await ctx.reply(
        {
            "type": "subscriptions_list",
            "subscribed_codes": codes,
            "count": len(codes),
            "kis_active_subscriptions": len(ctx.hub.held(Market.KR)),
            "kis_max_subscriptions": _korean_quota(ctx),
        }
    )


async def ping(ctx: ClientContext, message: Mapping[str, Any]) -> None:
    await ctx.reply({"type": "pong"})


def _number(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def hhmmss(epoch_ns: int) -> str:
    """Epoch nanoseconds as HHMMSS in Korean time (the KIS trade-time format)."""
    return datetime.fromtimestamp(epoch_ns / 1e9, UTC).astimezone(KST).strftime("%H%M%S")


def encode_stock_price(state: SymbolState) -> bytes:
    """A ``stock_price`` message: the document's fields first, then extras with real data."""
    payload: Payload = {
        "type": "stock_price",
        "stock_code": state.symbol,
        "symbol": state.record_seq,
        "time": hhmmss(state.last_time_ns or state.provider_time_ns),
        "price": _number(state.last_price),
        "volume": _number(state.last_size),
        "change": _number(state.change),
        "change_rate": state.change_rate,
        "accumulated_volume": _number(state.volume),
        "open": _number(state.open),
        "high": _number(state.high),
        "low": _number(state.low),
        "ask_price": _number(state.ask),
        "bid_price": _number(state.bid),
        "name": state.name,
    }
    return text_frame(orjson.dumps({k: v for k, v in payload.items() if v is not None}))


class UnsentTrades:
    """Per connection: the states that carry a trade this client has not been sent.

    A ``stock_price`` is a trade (체결). The hub's merged state keeps the last trade when a
    quote arrives, so a quote can carry a trade the client never saw: the snapshot of a warm
    code whose latest tick was a quote, or a trade collapsed into a later quote when the
    client's backlog fell behind. Such a state is sent, as the trade it carries; a quote
    after a trade already sent is not. Memory: one entry per held code.
    """

    def __init__(self) -> None:
        self._sent: dict[str, int] = {}  # code -> trade_seq of the last trade sent

    def select(self, states: list[SymbolState]) -> list[SymbolState]:
        sent = self._sent
        fresh = []
        for state in states:
            trade_seq = state.trade_seq
            if trade_seq and sent.get(state.symbol) != trade_seq:
                sent[state.symbol] = trade_seq
                fresh.append(state)
        return fresh

    def forget(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            self._sent.pop(symbol, None)


class StockProtocol:
    """Seed 000: ``connection_established``, subscribe/unsubscribe by ``codes``, ``stock_price``."""

    name = "seed000"
    path = "/ws/stock/"
    markets = frozenset({Market.KR})
    actions: Mapping[str, Handler] = {
        "subscribe": subscribe,
        "unsubscribe": unsubscribe,
        "list_subscriptions": list_subscriptions,
        "ping": ping,
    }
    churn_actions = frozenset({"subscribe", "unsubscribe"})

    def greeting(self) -> Payload:
        return {
            "type": "connection_established",
            "message": GREETING,
            "actions": list(self.actions),
        }

    def revoked(self, failures: Sequence[Failure]) -> Payload:
        # The document's `error` message, with the codes in an extra `failed` field as in
        # `subscription_result`.
        details = "; ".join(f"{f.symbol}: {f.detail or f.reason.value}" for f in failures)
        return {
            "type": "error",
            "message": SUBSCRIPTION_ENDED.format(details=details),
            "failed": [f.symbol for f in failures],
        }

    def update_filter(self) -> UnsentTrades:
        return UnsentTrades()

    def encode(self, state: SymbolState) -> bytes:
        # The last trade the state carries (UnsentTrades passes only states with one).
        if state.market is not Market.KR or state.last_price is None:
            return b""
        return state.encoded(self.name, encode_stock_price)
