"""The simulated market: realistic and exact prices, its rate, determinism, the quota, and
a market that keeps its exchange's hours with one trading day per symbol.

Every test runs on ``MockClock`` with a fixed ``WallClock``, so none depends on the hour it
runs at; the always-open tests run at a Saturday and a weekday night as well.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing

from trio_stock.clock import KST, WallClock
from trio_stock.config import Config
from trio_stock.gateway import build_providers
from trio_stock.hub import FailureReason, Hub, Policy, Subscriber
from trio_stock.model import Market, SymbolState, TickKind
from trio_stock.upstream.sim import SimulatedMarket, krx_tick_size, starting_price

from .conftest import EPOCH_NS, NS, at

NEW_YORK = ZoneInfo("America/New_York")


SATURDAY = at(KST, 2024, 3, 16, 12, 0)  # both markets closed (Friday 23:00 in New York)
WEEKDAY_NIGHT = at(KST, 2024, 3, 13, 7, 0)  # Wednesday 07:00 KST, Tuesday 18:00 in New York
ANY_HOUR = pytest.mark.parametrize(
    "epoch", [EPOCH_NS, SATURDAY, WEEKDAY_NIGHT], ids=["epoch", "saturday", "weekday-night"]
)


async def collect(
    market: Market,
    symbols: list[str],
    seconds: float,
    *,
    seed: int = 7,
    tps: float = 4.0,
    epoch: int = EPOCH_NS,
) -> list[SymbolState]:
    """Every state of ``symbols`` for ``seconds`` of an always-open simulated market."""
    sim = SimulatedMarket(market, ticks_per_second=tps, seed=seed, always_open=True)
    states: list[SymbolState] = []
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([sim], clock=WallClock(epoch)).run)
        async with hub.subscriber(Policy.LOSSLESS, capacity=200_000) as sub:
            assert (await hub.subscribe(sub, symbols)).ok
            with trio.move_on_after(seconds):
                async for state in sub:
                    states.append(state)
        nursery.cancel_scope.cancel()
    return states


@asynccontextmanager
async def running(sim: SimulatedMarket, epoch: int) -> AsyncIterator[Hub]:
    """A hub running ``sim`` whose wall clock reads ``epoch`` at the start."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(Hub([sim], clock=WallClock(epoch)).run)
        nursery.cancel_scope.cancel()


async def until(hub: Hub, sub: Subscriber, epoch: int) -> list[SymbolState]:
    """Everything ``sub`` receives until the hub's wall clock reads ``epoch``."""
    states: list[SymbolState] = []
    with trio.move_on_after((epoch - hub.clock.now_ns()) / NS):
        async for state in sub:
            states.append(state)
    return states


async def sleep_until(hub: Hub, epoch: int) -> None:
    await trio.sleep((epoch - hub.clock.now_ns()) / NS)


# ---- prices --------------------------------------------------------------------------------


@ANY_HOUR
async def test_korean_prices_move_on_the_krx_tick_grid(
    autojump_clock: trio.testing.MockClock, epoch: int
) -> None:
    states = await collect(Market.KR, ["005930", "207940", "123456"], seconds=60, epoch=epoch)
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


@ANY_HOUR
async def test_us_prices_are_in_cents_with_trades_and_quotes(
    autojump_clock: trio.testing.MockClock, epoch: int
) -> None:
    states = await collect(Market.US, ["AAPL", "ZZZZ"], seconds=60, epoch=epoch)
    kinds = {s.kind for s in states}
    assert kinds == {TickKind.TRADE, TickKind.QUOTE}
    for state in states:
        assert state.bid is not None and round(state.bid, 2) == state.bid
        if state.last_price is not None:
            assert round(state.last_price, 2) == state.last_price
    aapl = [s for s in states if s.symbol == "AAPL" and s.last_price is not None]
    assert aapl[0].last_price == pytest.approx(189.45, rel=0.01)


def decimals(value: float) -> int:
    """Digits after the point in the shortest text of ``value`` (189.2 → 1)."""
    text = repr(value)
    assert "e" not in text, text
    return len(text.partition(".")[2])


async def test_prices_and_the_day_range_are_exact_to_the_cent_over_many_ticks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tickers = ["AAPL", "MSFT", "BRK.B", "ZZZZ", "Q", "PENNY", "TSLA", "KO", "V", "X"]
    states = await collect(Market.US, tickers, seconds=120, tps=40.0)
    assert len(states) > 40_000
    trades: dict[str, list[float]] = {t: [] for t in tickers}
    for state in states:
        values = [state.bid, state.ask, state.open, state.high, state.low, state.prev_close]
        if state.kind is TickKind.TRADE:
            assert state.last_price is not None
            trades[state.symbol].append(state.last_price)
            values += [state.last_price, state.change]
        for value in values:
            assert value is not None and decimals(value) <= 2, (state, value)
    last = {s.symbol: s for s in states}
    for ticker in tickers:
        # The day's range is its trades' range, to the cent: nothing accumulated any noise.
        assert len(trades[ticker]) > 1_000
        assert (last[ticker].low, last[ticker].high) == (min(trades[ticker]), max(trades[ticker]))


async def test_korean_prices_are_whole_won_and_the_day_range_exact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    codes = ["005930", "207940", "123456", "000001", "999999"]
    states = await collect(Market.KR, codes, seconds=120, tps=40.0)
    prices: dict[str, list[float]] = {c: [] for c in codes}
    for state in states:
        assert state.last_price is not None
        prices[state.symbol].append(state.last_price)
        for value in (state.last_price, state.bid, state.ask, state.open, state.high, state.low):
            assert value is not None and value.is_integer()
            assert value % krx_tick_size(value) == 0
    last = {s.symbol: s for s in states}
    for code in codes:
        assert (last[code].low, last[code].high) == (min(prices[code]), max(prices[code]))


async def test_rate_follows_ticks_per_second(autojump_clock: trio.testing.MockClock) -> None:
    states = await collect(Market.KR, ["005930"], seconds=100, tps=5.0)
    assert 400 <= len(states) <= 600  # Poisson, mean 500


async def test_a_symbol_subscribed_again_at_once_keeps_its_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = SimulatedMarket(Market.KR, ticks_per_second=5.0, always_open=True)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([sim], linger=0, clock=WallClock(EPOCH_NS)).run)
        for _ in range(20):  # released upstream and registered again before its next tick
            async with hub.subscriber() as sub:
                assert (await hub.subscribe(sub, ["005930"])).ok
            await trio.sleep(0.001)
        assert sim.statistics().registrations == 0
        async with hub.subscriber(Policy.LOSSLESS, capacity=10_000) as sub:
            assert (await hub.subscribe(sub, ["005930"])).ok
            states = await until(hub, sub, hub.clock.now_ns() + 100 * NS)
        nursery.cancel_scope.cancel()
    assert 400 <= len(states) <= 600  # one Poisson process, mean 500, not one per cycle


async def test_same_seed_same_market(autojump_clock: trio.testing.MockClock) -> None:
    first = await collect(Market.KR, ["005930", "000660"], seconds=20, seed=3)
    second = await collect(Market.KR, ["005930", "000660"], seconds=20, seed=3)
    other = await collect(Market.KR, ["005930", "000660"], seconds=20, seed=4)
    key = [(s.symbol, s.last_price, s.provider_time_ns) for s in first]
    assert key == [(s.symbol, s.last_price, s.provider_time_ns) for s in second]
    assert key != [(s.symbol, s.last_price, s.provider_time_ns) for s in other]


async def test_quota_is_the_korean_default_of_40(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimulatedMarket(Market.KR)
    async with running(sim, WEEKDAY_NIGHT) as hub:
        async with hub.subscriber(max_symbols=100) as sub:
            codes = [f"{n:06d}" for n in range(1, 42)]
            result = await hub.subscribe(sub, codes)
            assert len(result.accepted) == 40
            assert [f.reason for f in result.failed] == [FailureReason.QUOTA]
        assert sim.statistics().registrations == 40
        await trio.sleep(hub.linger + 1)
        assert sim.statistics().registrations == 0


def test_starting_prices_are_deterministic_and_plausible() -> None:
    assert starting_price("ABCD", Market.US) == starting_price("ABCD", Market.US)
    assert 5 <= starting_price("ABCD", Market.US) <= 500
    price = starting_price("123456", Market.KR)
    assert 1_000 <= price <= 300_000 and price % krx_tick_size(price) == 0


# ---- hours ---------------------------------------------------------------------------------


async def test_a_krx_morning_last_close_then_the_auction_then_trades_from_nine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = SimulatedMarket(Market.KR, ticks_per_second=0.5)
    async with running(sim, at(KST, 2024, 3, 13, 8, 0)) as hub, hub.subscriber() as sub:
        assert (await hub.subscribe(sub, ["005930"])).ok
        night = await until(hub, sub, at(KST, 2024, 3, 13, 8, 30))
        auction = await until(hub, sub, at(KST, 2024, 3, 13, 9, 0))
        morning = await until(hub, sub, at(KST, 2024, 3, 13, 9, 5))

    # Before 08:30 nothing trades: one state, the last trade of the day before (made up,
    # as the symbol was never seen), stamped with its own time.
    assert len(night) == 1
    close = night[0]
    assert close.kind is TickKind.TRADE and close.last_price is not None
    assert close.provider_time_ns == at(KST, 2024, 3, 12, 15, 19, 59)
    assert close.received_ns == at(KST, 2024, 3, 13, 8, 0)
    assert close.volume is not None and close.volume > 0
    assert close.prev_close == 71_500
    assert close.low is not None and close.high is not None
    assert close.low <= close.last_price <= close.high

    # The opening auction: quotes only, on a new day whose previous close is that trade.
    assert len(auction) > 100  # 0.5 per second for 30 minutes
    assert {s.kind for s in auction} == {TickKind.QUOTE}
    for state in auction:
        assert at(KST, 2024, 3, 13, 8, 30) <= state.provider_time_ns < at(KST, 2024, 3, 13, 9)
        assert state.prev_close == close.last_price and state.volume == 0
        assert state.last_price == close.last_price  # still the last close
    assert len({s.bid for s in auction}) > 1  # the quotes move

    # From 09:00 it trades, and the day's open is its first trade.
    assert morning, "no trade after the open"
    assert {s.kind for s in morning} == {TickKind.TRADE}
    first = morning[0]
    assert first.provider_time_ns >= at(KST, 2024, 3, 13, 9, 0)
    assert first.open == first.last_price == first.high == first.low
    assert first.volume == first.last_size
    assert first.prev_close == close.last_price


async def test_the_krx_closing_auction_then_nothing(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimulatedMarket(Market.KR, ticks_per_second=0.5)
    async with running(sim, at(KST, 2024, 3, 13, 15, 0)) as hub, hub.subscriber() as sub:
        assert (await hub.subscribe(sub, ["000660"])).ok
        trading = await until(hub, sub, at(KST, 2024, 3, 13, 15, 20))
        auction = await until(hub, sub, at(KST, 2024, 3, 13, 15, 30))
        evening = await until(hub, sub, at(KST, 2024, 3, 14, 8, 0))

    assert len(trading) > 300 and {s.kind for s in trading} == {TickKind.TRADE}
    assert len(auction) > 100 and {s.kind for s in auction} == {TickKind.QUOTE}
    assert {s.last_price for s in auction} == {trading[-1].last_price}
    assert {s.volume for s in auction} == {trading[-1].volume}
    assert max(s.provider_time_ns for s in auction) < at(KST, 2024, 3, 13, 15, 30)
    assert evening == []


@pytest.mark.parametrize(
    ("day", "open_utc"),
    [
        ((2024, 3, 8), (14, 30)),  # Friday, New York on standard time (UTC-5)
        ((2024, 3, 11), (13, 30)),  # Monday after the switch to daylight saving (UTC-4)
        ((2024, 11, 1), (13, 30)),  # Friday, still daylight saving
        ((2024, 11, 4), (14, 30)),  # Monday, standard time again
    ],
)
async def test_the_us_market_opens_at_half_past_nine_in_new_york(
    autojump_clock: trio.testing.MockClock, day: tuple[int, int, int], open_utc: tuple[int, int]
) -> None:
    opens = at(dt.UTC, *day, *open_utc)
    sim = SimulatedMarket(Market.US, ticks_per_second=1.0)
    async with running(sim, at(dt.UTC, *day, 12, 0)) as hub, hub.subscriber() as sub:
        assert (await hub.subscribe(sub, ["AAPL"])).ok
        before = await until(hub, sub, opens)
        after = await until(hub, sub, opens + 60 * NS)
    assert len(before) == 1 and before[0].provider_time_ns < at(dt.UTC, *day, 0, 0)
    assert after and opens <= after[0].provider_time_ns < opens + 60 * NS
    assert any(s.kind is TickKind.TRADE for s in after)


@pytest.mark.parametrize("market", [Market.KR, Market.US])
async def test_nothing_on_a_saturday_but_fridays_close(
    autojump_clock: trio.testing.MockClock, market: Market
) -> None:
    symbol = "005930" if market is Market.KR else "AAPL"
    sim = SimulatedMarket(market, ticks_per_second=5.0)
    async with running(sim, SATURDAY) as hub, hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [symbol])).ok
        states = await until(hub, sub, SATURDAY + 12 * 3600 * NS)
    assert len(states) == 1
    friday_close = (
        at(KST, 2024, 3, 15, 15, 20) if market is Market.KR else at(NEW_YORK, 2024, 3, 15, 16)
    )
    assert states[0].provider_time_ns == friday_close - NS
    assert sim.statistics().messages == 0  # no tick, only the snapshot


@pytest.mark.parametrize("always_open", [True, False])
async def test_the_gateway_setting_trades_around_the_clock(
    autojump_clock: trio.testing.MockClock, always_open: bool
) -> None:
    providers = build_providers(Config(sim_always_open=always_open, sim_ticks_per_second=5.0))
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub(providers, clock=WallClock(SATURDAY)).run)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            assert (await hub.subscribe(sub, ["005930", "AAPL"])).ok
            states = await until(hub, sub, SATURDAY + 60 * NS)
        nursery.cancel_scope.cancel()
    if always_open:
        assert len(states) > 300
    else:
        assert sorted(s.symbol for s in states) == ["005930", "AAPL"]  # the last closes


# ---- one trading day per symbol ------------------------------------------------------------


async def test_the_day_survives_unsubscribe_and_resubscribe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = SimulatedMarket(Market.KR, ticks_per_second=2.0)
    start = at(KST, 2024, 3, 13, 10, 0)
    async with running(sim, start) as hub:
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["035720"])).ok
            before = await until(hub, sub, start + 60 * NS)
        await trio.sleep(hub.linger + 30)
        assert sim.statistics().registrations == 0  # released upstream, not just lingering
        again = hub.clock.now_ns()
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["035720"])).ok
            after = await until(hub, sub, again + 60 * NS)
    assert len(before) > 60
    fresh = [s for s in after if s.provider_time_ns > again]
    assert len(fresh) > 60
    last, first = before[-1], fresh[0]
    assert last.volume is not None and first.volume is not None
    assert first.volume > last.volume  # the day's volume keeps growing
    assert (first.open, first.prev_close) == (last.open, last.prev_close)
    assert first.open == before[0].last_price  # the open is still the day's first trade


async def test_the_next_session_is_a_new_day_from_the_last_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = SimulatedMarket(Market.KR, ticks_per_second=0.5)
    async with running(sim, at(KST, 2024, 3, 13, 15, 0)) as hub:
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["068270"])).ok
            wednesday = await until(hub, sub, at(KST, 2024, 3, 13, 15, 25))
        await sleep_until(hub, at(KST, 2024, 3, 14, 8, 40))  # Thursday's opening auction
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, ["068270"])).ok
            thursday = await until(hub, sub, at(KST, 2024, 3, 14, 9, 5))

    trades = [s for s in wednesday if s.kind is TickKind.TRADE]
    close = trades[-1]
    assert close.volume is not None and close.volume > 0
    # On subscribe in the auction: the last close once, already on Thursday's new day.
    snapshot = thursday[0]
    assert snapshot.kind is TickKind.TRADE
    assert snapshot.provider_time_ns == close.provider_time_ns
    assert (snapshot.last_price, snapshot.prev_close) == (close.last_price, close.last_price)
    assert snapshot.volume == 0
    first = next(s for s in thursday if s.kind is TickKind.TRADE and s is not snapshot)
    assert first.provider_time_ns >= at(KST, 2024, 3, 14, 9, 0)
    assert first.prev_close == close.last_price
    assert first.open == first.last_price and first.volume == first.last_size


@pytest.mark.parametrize(("max_days", "forgotten"), [(2, True), (3, False)])
async def test_remembered_days_are_bounded_oldest_first(
    autojump_clock: trio.testing.MockClock, max_days: int, forgotten: bool
) -> None:
    sim = SimulatedMarket(
        Market.US, quota=1, ticks_per_second=2.0, always_open=True, max_days=max_days
    )

    async def visit(hub: Hub, symbol: str) -> list[SymbolState]:
        since = hub.clock.now_ns()
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, [symbol])).ok
            states = await until(hub, sub, since + 30 * NS)
        await trio.sleep(hub.linger + 1)  # released upstream: the quota of 1 is free
        return [s for s in states if s.provider_time_ns > since]

    async with running(sim, EPOCH_NS) as hub:
        first = await visit(hub, "AAA")
        await visit(hub, "BBB")
        await visit(hub, "CCC")
        again = await visit(hub, "AAA")
    trade = next(s for s in again if s.kind is TickKind.TRADE)
    assert first[-1].volume is not None and trade.volume is not None
    if forgotten:
        assert trade.volume == trade.last_size  # a new day
    else:
        assert trade.volume > first[-1].volume  # the same day
