"""Seed 000 shows trades only: a quote never hides a trade from a ``/ws/stock/`` client.

The hub's merged state keeps the last trade when a quote arrives (KIS_ORDERBOOK). A client
that subscribes to a warm code whose latest tick was a quote gets that code's last trade at
once, and a client whose backlog collapses a trade into a later quote still gets the trade.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
import trio_websocket

from trio_stock import Config, Hub, Market, Tick, TickKind
from trio_stock.endpoints.client import ClientLimits
from trio_stock.endpoints.stock import StockProtocol, UnsentTrades
from trio_stock.hub import Policy
from trio_stock.state import client_limits

from .clients import MemoryServer, recv, recv_type, send
from .scripted import ScriptedProvider

STOCK = "/ws/stock/"
CODE = "005930"


@asynccontextmanager
async def scripted_server(
    limits: ClientLimits | None = None,
) -> AsyncIterator[tuple[MemoryServer, ScriptedProvider]]:
    provider = ScriptedProvider(Market.KR)
    config = Config.from_mapping({})
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([provider]).run)
        server = MemoryServer(hub, nursery, config, limits or client_limits(config))
        yield server, provider
        nursery.cancel_scope.cancel()


def trade(provider: ScriptedProvider, price: float, size: float = 10) -> None:
    assert provider.link is not None
    now = provider.link.now_ns()
    provider.link.publish(Tick(CODE, TickKind.TRADE, now, now, price=price, size=size))


def quote(provider: ScriptedProvider, bid: float, ask: float) -> None:
    assert provider.link is not None
    now = provider.link.now_ns()
    provider.link.publish(Tick(CODE, TickKind.QUOTE, now, now, bid=bid, ask=ask))


async def subscribe(ws: trio_websocket.WebSocketConnection, code: str = CODE) -> None:
    await recv_type(ws, "connection_established")
    await send(ws, {"action": "subscribe", "codes": [code]})
    result = await recv_type(ws, "subscription_result")
    assert result["success"] is True


async def test_a_warm_code_whose_latest_tick_is_a_quote_gives_its_last_trade_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted_server() as (server, provider), server.websocket(STOCK) as first:
        await subscribe(first)
        trade(provider, 70_100, size=7)
        assert (await recv(first))["price"] == 70_100
        quote(provider, 70_000, 70_200)  # the latest tick: a quote
        async with server.websocket(STOCK) as second:
            await subscribe(second)
            snapshot = await recv(second)  # at once, before any new tick
            assert snapshot["type"] == "stock_price"
            assert (snapshot["price"], snapshot["volume"]) == (70_100, 7)
            assert (snapshot["bid_price"], snapshot["ask_price"]) == (70_000, 70_200)
        # The first client saw the trade already: the quote is not sent as a second trade.
        trade(provider, 70_200)
        assert (await recv(first))["price"] == 70_200


async def test_a_collapsed_backlog_keeps_the_last_trade(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        scripted_server() as (server, provider),
        server.websocket(STOCK, lockstep=True) as ws,
    ):
        await subscribe(ws)
        # The client stops reading: the server's writer blocks, the backlog grows.
        for price in range(70_000, 70_500, 100):
            trade(provider, price)
            await trio.sleep(0.01)  # the writer takes each and blocks in its send
        trade(provider, 71_000)
        quote(provider, 70_900, 71_100)
        # Past the backlog's max_delay the next update collapses it: the trade is
        # folded into the later quotes' state.
        await trio.sleep(1)
        quote(provider, 70_800, 71_200)
        prices: list[object] = []
        with trio.fail_after(30):
            while not prices or prices[-1] != 71_000:
                prices.append((await recv(ws))["price"])
        assert prices[-1] == 71_000


async def test_a_quote_only_code_sends_nothing_and_a_resubscribe_starts_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted_server() as (server, provider), server.websocket(STOCK) as ws:
        await subscribe(ws)
        quote(provider, 70_000, 70_200)  # no trade yet: nothing a seed 000 client shows
        trade(provider, 70_100)
        assert (await recv(ws))["price"] == 70_100
        await send(ws, {"action": "unsubscribe", "codes": [CODE]})
        await recv_type(ws, "unsubscription_result")
        # Resubscribed: the last trade again at once, although this client saw it before.
        await send(ws, {"action": "subscribe", "codes": [CODE]})
        assert (await recv_type(ws, "subscription_result"))["success"] is True
        snapshot = await recv(ws)
        assert (snapshot["type"], snapshot["price"]) == ("stock_price", 70_100)


async def test_unsent_trades_passes_each_trade_once_even_inside_a_quote(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(Market.KR)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([provider]).run)
        async with hub.subscriber(Policy.CONFLATE, max_backlog=0) as updates:
            await hub.subscribe(updates, [CODE])
            selected = UnsentTrades()
            quote(provider, 1, 2)
            assert selected.select(await updates.receive_batch()) == []
            trade(provider, 100)
            quote(provider, 99, 101)  # strict conflation: only the quote's state is pending
            (state,) = await updates.receive_batch()
            assert state.kind is TickKind.QUOTE
            assert selected.select([state]) == [state]
            assert b'"price":100' in StockProtocol().encode(state)
            quote(provider, 98, 102)
            assert selected.select(await updates.receive_batch()) == []
        nursery.cancel_scope.cancel()
