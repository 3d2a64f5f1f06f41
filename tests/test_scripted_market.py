"""The scripted market users drive in their own tests (trio_stock.testing.ScriptedMarket).

Behind the bare hub on the mock clock, and behind the whole gateway on a real socket.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

import trio_stock
from trio_stock import Config, Failure, FailureReason, Hub, InvalidSymbol, Market, Tick, TickKind
from trio_stock.clock import WallClock
from trio_stock.testing import ScriptedMarket

from .clients import real_websocket, recv, recv_type, send
from .conftest import EPOCH_NS

PRICES = "/api/v2/realtime/ws/prices"


@pytest.fixture
def us() -> ScriptedMarket:
    return ScriptedMarket(Market.US)


@pytest.fixture
def kr() -> ScriptedMarket:
    return ScriptedMarket(Market.KR)


@pytest.fixture
async def hub(us: ScriptedMarket, kr: ScriptedMarket) -> AsyncIterator[Hub]:
    """A running hub on both scripted markets (linger 5 s, ack timeout 10 s)."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(Hub([kr, us], clock=WallClock(EPOCH_NS)).run)
        nursery.cancel_scope.cancel()


async def test_a_trade_reaches_the_subscriber_as_the_merged_state(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    async with hub.subscriber() as updates:
        result = await hub.subscribe(updates, ["aapl"])
        assert result.accepted == ("AAPL",)
        assert us.subscribed == {"AAPL"}
        assert us.trade("AAPL", 190.12, size=100)
        state = await updates.receive()
        assert (state.symbol, state.last_price, state.last_size) == ("AAPL", 190.12, 100.0)
        assert (state.kind, state.market, state.provider) == (TickKind.TRADE, Market.US, us.name)
        assert (state.seq, state.epoch) == (1, 1)
        first_ns = state.provider_time_ns
        await trio.sleep(1.5)  # ticks are stamped with the hub's clock, which follows Trio's
        assert us.trade("aapl", 190.15)  # any spelling; size defaults to one share
        state = await updates.receive()
        assert (state.last_price, state.last_size, state.seq) == (190.15, 1.0, 2)
        assert state.provider_time_ns == state.last_time_ns == first_ns + 1_500_000_000
    stats = us.statistics()
    assert (stats.kind, stats.live, stats.messages) == ("scripted", False, 2)
    assert (stats.state.value, stats.registrations, stats.connects) == ("connected", 1, 1)


async def test_korean_codes_trade_in_their_own_market(
    hub: Hub, kr: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    async with hub.subscriber() as updates:
        assert (await hub.subscribe(updates, ["005930"])).ok
        assert kr.trade("005930", 71_500, size=10)
        state = await updates.receive()
        assert (state.symbol, state.market, state.last_price) == ("005930", Market.KR, 71_500)
        assert state.name == "삼성전자"


async def test_a_quote_moves_bid_and_ask_and_keeps_the_last_trade(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    async with hub.subscriber() as updates:
        await hub.subscribe(updates, ["AAPL"])
        us.trade("AAPL", 190.12, size=100)
        us.quote("AAPL", bid=190.10, ask=190.14, bid_size=300, ask_size=500)
        trade, quote = await updates.receive(), await updates.receive()
        assert trade.kind is TickKind.TRADE and quote.kind is TickKind.QUOTE
        assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (190.10, 190.14, 300, 500)
        assert (quote.last_price, quote.last_size) == (190.12, 100.0)
        us.quote("AAPL", bid=190.11, ask=190.13)  # sizes not given: the last ones stay
        quote = await updates.receive()
        assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (190.11, 190.13, 300, 500)


async def test_any_tick_can_be_published_as_it_is(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    async with hub.subscriber() as updates:
        await hub.subscribe(updates, ["AAPL"])
        us.trade("AAPL", 190.0)
        at = EPOCH_NS - 60_000_000_000
        assert us.publish(Tick("aapl", TickKind.CANCEL, at, at, price=150.0, prev_close=180.0))
        await updates.receive()
        state = await updates.receive()
        assert (state.symbol, state.kind, state.provider_time_ns) == ("AAPL", TickKind.CANCEL, at)
        assert state.last_price == 190.0  # a break does not move the last price
        assert (state.prev_close, state.change) == (180.0, 10.0)


async def test_trading_a_symbol_nobody_holds_does_nothing(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    assert not us.trade("AAPL", 190.12)
    assert not us.quote("MSFT", bid=1, ask=2)
    assert hub.latest("AAPL") is None and hub.statistics().published == 0
    async with hub.subscriber() as updates:
        await hub.subscribe(updates, ["AAPL"])
    await us.wait_unsubscribed("AAPL")  # released after the linger
    assert not us.trade("AAPL", 191.0)
    assert hub.statistics().published == 0


async def test_a_market_not_running_trades_nothing() -> None:
    market = ScriptedMarket(Market.US)
    assert not market.trade("AAPL", 1.0)
    assert market.subscribed == frozenset()
    with pytest.raises(RuntimeError, match="not running"):
        market.disconnect()


async def test_symbols_of_the_other_market_or_none_are_refused_loudly(us: ScriptedMarket) -> None:
    with pytest.raises(ValueError, match="'005930' is a KR symbol; scripted-us serves US"):
        us.trade("005930", 71_500)
    with pytest.raises(InvalidSymbol):
        us.fail_next_subscribe("not a symbol")


async def test_fail_next_subscribe_fails_exactly_the_next_one_with_the_reason(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    us.fail_next_subscribe("aapl", reason="no such ticker")
    async with hub.subscriber() as updates:
        result = await hub.subscribe(updates, ["AAPL", "MSFT"])
        assert result.accepted == ("MSFT",)
        assert result.failed == (Failure("AAPL", FailureReason.REJECTED, "no such ticker"),)
        assert us.subscribed == {"MSFT"}
        assert (await hub.subscribe(updates, ["AAPL"])).accepted == ("AAPL",)
        assert us.subscribed == {"AAPL", "MSFT"}


async def test_each_call_refuses_one_more_registration(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    us.fail_next_subscribe("AAPL", reason="first")
    us.fail_next_subscribe("AAPL")
    async with hub.subscriber() as updates:
        outcomes = [(await hub.subscribe(updates, ["AAPL"])).failed for _ in range(3)]
    assert [[f.detail for f in failed] for failed in outcomes] == [
        ["first"],
        ["refused by the scripted market"],
        [],
    ]


async def test_disconnect_starts_a_new_epoch_with_every_symbol_registered_again(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    async with hub.subscriber() as updates:
        await hub.subscribe(updates, ["AAPL", "MSFT"])
        us.trade("AAPL", 190.0)
        assert (await updates.receive()).epoch == 1
        us.disconnect()
        assert us.subscribed == {"AAPL", "MSFT"}
        assert us.statistics().connects == 2
        us.trade("AAPL", 189.5)
        us.trade("MSFT", 370.0)
        after = [await updates.receive(), await updates.receive()]
        assert [(s.symbol, s.epoch, s.seq) for s in after] == [("AAPL", 2, 2), ("MSFT", 2, 1)]
        assert updates.take_revoked() == []


async def test_a_refused_registration_after_disconnect_revokes_the_symbol(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    async with hub.subscriber() as updates:
        await hub.subscribe(updates, ["AAPL", "MSFT"])
        us.fail_next_subscribe("AAPL", reason="delisted")  # held: waits for the next session
        assert us.subscribed == {"AAPL", "MSFT"}
        us.disconnect()
        assert us.subscribed == {"MSFT"}
        assert updates.take_revoked() == [Failure("AAPL", FailureReason.REJECTED, "delisted")]
        assert updates.symbols == {"MSFT"}
        assert hub.held() == ["MSFT"]


async def test_wait_subscribed_and_unsubscribed_follow_the_upstream(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    done = trio.Event()

    async def program() -> None:  # a program under test that subscribes on its own
        async with hub.subscriber() as updates:
            await hub.subscribe(updates, ["AAPL"])
            state = await updates.receive()
            assert state.last_price == 190.12
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(program)
        with trio.fail_after(1):
            await us.wait_subscribed("aapl")
        await us.wait_subscribed("AAPL")  # at once: it is live
        us.trade("AAPL", 190.12, size=100)
        await done.wait()
        released_from = trio.current_time()
        await us.wait_unsubscribed("AAPL")
        assert trio.current_time() - released_from == pytest.approx(hub.linger)
        await us.wait_unsubscribed("AAPL")  # at once: it is gone


async def test_after_wait_subscribed_every_trade_reaches_the_subscriber_live(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    """The subscribe that asked for the symbol has attached its subscriber by then, so no
    trade is folded into its first snapshot. (Trio wakes tasks in a random order: without
    that, about every other run would see only the last of these trades.)"""
    for _ in range(20):
        async with hub.subscriber() as updates, trio.open_nursery() as nursery:
            nursery.start_soon(hub.subscribe, updates, ["AAPL"])
            await us.wait_subscribed("AAPL")
            us.trade("AAPL", 190.12)
            us.trade("AAPL", 190.13)
            with trio.fail_after(1):
                prices = [(await updates.receive()).last_price for _ in range(2)]
            assert prices == [190.12, 190.13]
        await us.wait_unsubscribed("AAPL")


async def test_the_hubs_quota_check_meets_the_markets_quota(
    autojump_clock: trio.testing.MockClock,
) -> None:
    market = ScriptedMarket(Market.KR, quota=1, name="tiny")
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([market], linger=0).run)
        async with hub.subscriber() as updates:
            result = await hub.subscribe(updates, ["005930", "000660"])
        assert result.accepted == ("005930",)
        assert [f.reason for f in result.failed] == [FailureReason.QUOTA]
        assert hub.statistics().providers[0].name == "tiny"
        nursery.cancel_scope.cancel()


async def test_one_market_serves_one_hub_at_a_time(
    hub: Hub, us: ScriptedMarket, autojump_clock: trio.testing.MockClock
) -> None:
    refused = pytest.RaisesExc(RuntimeError, match="scripted-us already serves a hub")
    with pytest.RaisesGroup(refused):
        await Hub([us]).run()


async def test_the_gateway_serves_a_scripted_trade_to_a_websocket_client() -> None:
    """serve(config, providers=[...]) on 127.0.0.1, a real client on seed 003's endpoint.

    Real sockets run on the real clock; nothing here sleeps, every wait has a deadline.
    """
    market = ScriptedMarket(Market.US)
    config = Config(port=0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio_stock.serve, providers=[market])
            gateway = await nursery.start(serve, config)
            assert gateway.port
            async with real_websocket(gateway.port, PRICES) as ws:
                assert (await recv(ws))["type"] == "connected"
                await send(ws, {"action": "subscribe", "symbols": ["AAPL", "005930"]})
                answer = await recv_type(ws, "subscription")
                assert (answer["symbols"], answer["failed"]) == (["AAPL"], ["005930"])
                error = await recv_type(ws, "error")
                assert "no provider for KR" in error["message"]  # no market but the given ones
                assert market.subscribed == {"AAPL"}
                assert market.trade("AAPL", 190.12, size=100)
                update = await recv_type(ws, "price_update", skip=())
                assert (update["symbol"], update["last_price"], update["last_size"]) == (
                    "AAPL",
                    190.12,
                    100.0,
                )
                assert (update["data_type"], update["provider"]) == ("T", "scripted-us")
            nursery.cancel_scope.cancel()
