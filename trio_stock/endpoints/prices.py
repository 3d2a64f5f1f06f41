"""The seed 003 client protocol at ``/api/v2/realtime/ws/prices``: any symbol, merged state.

Settled points (DESIGN.md): ``subscription.symbols`` lists the symbols this request
changed and ``subscribed_total`` is the client's own total; rejected symbols come back in
an ``error`` message and in an extra ``failed`` field. ``price_update`` is the merged
latest state after the tick: ``data_type`` is the kind of the tick that caused it (T, Q,
B), ``timestamp`` the provider's time in epoch milliseconds, ``cached_at`` ISO-8601.
Korean codes are accepted here too and routed to the Korean provider.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from ..errors import InvalidSymbol
from ..hub import Failure, SubscribeResult
from ..model import Market, SymbolState
from ..symbols import normalize_symbol
from ..transport.wsserver import text_frame
from .protocol import ClientContext, Handler, Payload, changed_symbols, takes
from .requests import SymbolsRequest

GREETING = "Connected to real-time price stream"


def _describe(failures: Sequence[Failure]) -> str:
    return ", ".join(
        f"{f.symbol} ({f.reason.value}: {f.detail})"
        if f.detail
        else f"{f.symbol} ({f.reason.value})"
        for f in failures
    )


def _failure_text(result: SubscribeResult) -> str:
    return "Could not subscribe: " + _describe(result.failed)


@takes(SymbolsRequest)
async def subscribe(ctx: ClientContext, request: SymbolsRequest) -> None:
    held_before = ctx.subscriber.symbols
    result = await ctx.hub.subscribe(ctx.subscriber, request.symbols)
    reply: Payload = {
        "type": "subscription",
        "action": "subscribed",
        "symbols": changed_symbols(result, held_before),
        "subscribed_total": len(ctx.subscriber.symbols),
    }
    if result.failed:
        reply["failed"] = [f.symbol for f in result.failed]
    await ctx.reply(reply)
    if result.failed:
        await ctx.reply({"type": "error", "message": _failure_text(result)})


@takes(SymbolsRequest)
async def unsubscribe(ctx: ClientContext, request: SymbolsRequest) -> None:
    released = ctx.hub.unsubscribe(ctx.subscriber, request.symbols)
    await ctx.reply(
        {
            "type": "subscription",
            "action": "unsubscribed",
            "symbols": list(released),
            "subscribed_total": len(ctx.subscriber.symbols),
        }
    )
    invalid = [s for s in request.symbols if not _valid(s)]
    if invalid:
        await ctx.reply({"type": "error", "message": f"Invalid symbols: {', '.join(invalid)}"})


def _valid(symbol: str) -> bool:
    try:
        normalize_symbol(symbol)
    except InvalidSymbol:
        return False
    return True


async def get_subscriptions(ctx: ClientContext, message: Mapping[str, Any]) -> None:
    symbols = sorted(ctx.subscriber.symbols)
    await ctx.reply({"type": "subscriptions", "symbols": symbols, "subscribed_total": len(symbols)})


async def ping(ctx: ClientContext, message: Mapping[str, Any]) -> None:
    await ctx.reply({"type": "pong"})


@functools.lru_cache(maxsize=64)  # a feed read stamps all its ticks with one receive time
def iso_time(epoch_ns: int) -> str:
    """Epoch nanoseconds as ISO-8601 UTC with milliseconds."""
    return datetime.fromtimestamp(epoch_ns / 1e9, UTC).isoformat(timespec="milliseconds")


def state_fields(state: SymbolState) -> Payload:
    """The merged state in seed 003's field names (``price_update`` and the REST cache)."""
    return {
        "symbol": state.symbol,
        "timestamp": state.provider_time_ns // 1_000_000,
        "last_price": state.last_price,
        "last_size": state.last_size,
        "ask_price": state.ask,
        "ask_size": state.ask_size,
        "bid_price": state.bid,
        "bid_size": state.bid_size,
        "change": state.change,
        "change_percent": state.change_rate,
        "open": state.open,
        "high": state.high,
        "low": state.low,
        "volume": state.volume,
        "previous_close": state.prev_close,
        "name": state.name,
        "market": state.market.value,
        "provider": state.provider,
        "seq": state.seq,
        "epoch": state.epoch,  # the upstream session: a new one may have lost ticks between
        "cached_at": iso_time(state.received_ns),
    }


def encode_price_update(state: SymbolState) -> bytes:
    """A ``price_update`` message."""
    payload = {"type": "price_update", "data_type": state.kind.value, **state_fields(state)}
    return text_frame(orjson.dumps(payload))


class PricesProtocol:
    """Seed 003: ``connected``, subscribe/unsubscribe by ``symbols``, ``price_update``."""

    name = "seed003"
    path = "/api/v2/realtime/ws/prices"
    markets = frozenset(Market)
    actions: Mapping[str, Handler] = {
        "subscribe": subscribe,
        "unsubscribe": unsubscribe,
        "get_subscriptions": get_subscriptions,
        "ping": ping,
    }
    churn_actions = frozenset({"subscribe", "unsubscribe"})

    def greeting(self) -> Payload:
        return {"type": "connected", "message": GREETING}

    def encode(self, state: SymbolState) -> bytes:
        return state.encoded(self.name, encode_price_update)

    def update_filter(self) -> None:
        return None  # every update is a merged state worth sending

    def revoked(self, failures: Sequence[Failure]) -> Payload:
        # An `error`, like any rejected symbol, with the extra `failed` list (DESIGN.md).
        return {
            "type": "error",
            "message": "Subscription ended: " + _describe(failures),
            "failed": [f.symbol for f in failures],
        }
