"""The simulated market: realistic prices, its rate, determinism, and the quota."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_stock.clock import WallClock
from trio_stock.hub import FailureReason, Hub, Policy
from trio_stock.model import Market, SymbolState, TickKind
from trio_stock.upstream.sim import SimulatedMarket, krx_tick_size, starting_price

from .conftest import EPOCH_NS


async def collect(
    market: Market, symbols: list[str], seconds: float, *, seed: int = 7, tps: float = 4.0
) -> list[SymbolState]:
    sim = SimulatedMarket(market, ticks_per_second=tps, seed=seed)
    states: list[SymbolState] = []
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([sim], clock=WallClock(EPOCH_NS)).run)
        async with hub.subscriber(Policy.LOSSLESS, capacity=100_000) as sub:
            assert (await hub.subscribe(sub, symbols)).ok
            with trio.move_on_after(seconds):
                async for state in sub:
                    states.append(state)
        nursery.cancel_scope.cancel()
    return states


async def test_korean_prices_move_on_the_krx_tick_grid(
    autojump_clock: trio.testing.MockClock,
) -> None:
    states = await collect(Market.KR, ["005930", "207940", "123456"], seconds=60)
    assert len(states) > 300
    for state in states:
        assert state.kind is TickKind.TRADE
        assert state.last_price is not None and state.bid is not None and state.ask is not None
        assert state.last_price % krx_tick_size(state.last_price) == 0
        assert state.ask - state.bid == krx_tick_size(state.bid)
        assert state.low is not None and state.high is not None
        assert state.low <= state.last_price <= state.high
    samsung = [s.last_price for s in states if s.symbol == "005930"]
    assert samsung[0] == pytest.approx(71_500, rel=0.01)
    assert len(set(samsung)) > 3  # it moves


async def test_us_prices_are_in_cents_with_trades_and_quotes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    states = await collect(Market.US, ["AAPL", "ZZZZ"], seconds=60)
    kinds = {s.kind for s in states}
    assert kinds == {TickKind.TRADE, TickKind.QUOTE}
    for state in states:
        assert state.bid is not None and round(state.bid, 2) == state.bid
        if state.last_price is not None:
            assert round(state.last_price, 2) == state.last_price
    aapl = [s for s in states if s.symbol == "AAPL" and s.last_price is not None]
    assert aapl[0].last_price == pytest.approx(189.45, rel=0.01)


async def test_rate_follows_ticks_per_second(autojump_clock: trio.testing.MockClock) -> None:
    states = await collect(Market.KR, ["005930"], seconds=100, tps=5.0)
    assert 400 <= len(states) <= 600  # Poisson, mean 500


async def test_same_seed_same_market(autojump_clock: trio.testing.MockClock) -> None:
    first = await collect(Market.KR, ["005930", "000660"], seconds=20, seed=3)
    second = await collect(Market.KR, ["005930", "000660"], seconds=20, seed=3)
    other = await collect(Market.KR, ["005930", "000660"], seconds=20, seed=4)
    key = [(s.symbol, s.last_price, s.provider_time_ns) for s in first]
    assert key == [(s.symbol, s.last_price, s.provider_time_ns) for s in second]
    assert key != [(s.symbol, s.last_price, s.provider_time_ns) for s in other]


async def test_quota_is_the_korean_default_of_40(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimulatedMarket(Market.KR)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([sim]).run)
        async with hub.subscriber(max_symbols=100) as sub:
            codes = [f"{n:06d}" for n in range(1, 42)]
            result = await hub.subscribe(sub, codes)
            assert len(result.accepted) == 40
            assert [f.reason for f in result.failed] == [FailureReason.QUOTA]
        assert sim.statistics().registrations == 40
        await trio.sleep(hub.linger + 1)
        assert sim.statistics().registrations == 0
        nursery.cancel_scope.cancel()


def test_starting_prices_are_deterministic_and_plausible() -> None:
    assert starting_price("ABCD", Market.US) == starting_price("ABCD", Market.US)
    assert 5 <= starting_price("ABCD", Market.US) <= 500
    price = starting_price("123456", Market.KR)
    assert 1_000 <= price <= 300_000 and price % krx_tick_size(price) == 0
