"""The hub's guarantees: acks, quotas, linger, snapshot, backpressure, cancellation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_stock import SubscriberTooSlow
from trio_stock.clock import WallClock
from trio_stock.hub import FailureReason, Hub, Policy
from trio_stock.model import Market

from .conftest import EPOCH_NS
from .scripted import ScriptedProvider


async def settle() -> None:
    """Let every runnable task run (the provider answers, the hub settles)."""
    await trio.testing.wait_all_tasks_blocked()


async def test_subscribe_answers_after_the_upstream_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = ScriptedProvider(Market.KR, ack_delay=3.0)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([slow]).run)
        async with hub.subscriber() as sub:
            start = trio.current_time()
            result = await hub.subscribe(sub, ["005930"])
            assert result.accepted == ("005930",)
            assert trio.current_time() - start == pytest.approx(3.0)
            assert slow.registered == {"005930"}
        nursery.cancel_scope.cancel()


async def test_symbols_are_normalised_and_invalid_ones_fail(hub: Hub) -> None:
    async with hub.subscriber() as sub:
        result = await hub.subscribe(sub, [" 005930", "ABC", "12345", 7])
    assert result.accepted == ("005930",)
    assert [(f.symbol, f.reason) for f in result.failed] == [
        ("ABC", FailureReason.UNAVAILABLE),  # a US ticker, but this hub has no US provider
        ("12345", FailureReason.INVALID),
        ("7", FailureReason.INVALID),
    ]


async def test_resubscribing_a_held_symbol_has_no_side_effects(
    hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, ["005930"])
        result = await hub.subscribe(sub, ["005930", "005930"])
        assert result.accepted == ("005930", "005930")
        await settle()
        assert kr.log == [("sub", "005930")]
        assert hub.statistics().upstream[0].used == 1


async def test_rejected_symbols_fail_with_the_upstream_reason(
    hub: Hub, kr: ScriptedProvider
) -> None:
    kr.reject.add("000660")
    async with hub.subscriber() as sub:
        result = await hub.subscribe(sub, ["005930", "000660"])
    assert result.accepted == ("005930",)
    (failure,) = result.failed
    assert (failure.symbol, failure.reason) == ("000660", FailureReason.REJECTED)
    assert "OPSP8992" in failure.detail
    assert hub.statistics().upstream[0].used == 1  # the rejected one holds no slot


async def test_silent_upstream_times_out_and_the_request_is_withdrawn(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    kr.silent.add("005930")
    async with hub.subscriber() as sub:
        start = trio.current_time()
        result = await hub.subscribe(sub, ["005930"])
        assert trio.current_time() - start == pytest.approx(hub.ack_timeout)
    (failure,) = result.failed
    assert failure.reason is FailureReason.TIMEOUT
    await settle()
    assert kr.log == [("sub", "005930"), ("unsub", "005930")]
    assert hub.held() == []
    # A late answer to the withdrawn request is ignored.
    assert kr.link is not None
    from trio_stock.upstream.contract import Subscribe

    kr.link.registered(Subscribe("005930", token=1))
    assert hub.held() == []


async def test_quota_is_enforced_and_shared_symbols_count_once(
    hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as a, hub.subscriber() as b:
        assert (await hub.subscribe(a, ["000001", "000002", "000003"])).ok
        result = await hub.subscribe(b, ["000001", "000002", "000003", "000004"])
        assert result.accepted == ("000001", "000002", "000003")
        (failure,) = result.failed
        assert (failure.symbol, failure.reason) == ("000004", FailureReason.QUOTA)
        usage = hub.statistics().upstream[0]
        assert (usage.used, usage.quota) == (3, 3)
        await settle()
        assert kr.registered == {"000001", "000002", "000003"}


async def test_lingering_symbol_is_evicted_at_once_when_its_slot_is_needed(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as a:
        await hub.subscribe(a, ["000001", "000002", "000003"])
        hub.unsubscribe(a, ["000001"])
        await settle()
        assert "000001" in kr.registered  # lingering, still registered upstream
        before = trio.current_time()
        result = await hub.subscribe(a, ["000004"])
        assert result.ok
        assert trio.current_time() == before  # no waiting for the linger to run out
        await settle()
        assert kr.registered == {"000002", "000003", "000004"}


async def test_linger_releases_upstream_after_the_delay_and_resubscribe_cancels_it(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, ["005930", "000660"])
        hub.unsubscribe(sub, ["005930", "000660"])
        await trio.sleep(hub.linger - 0.1)
        assert kr.registered == {"005930", "000660"}
        await hub.subscribe(sub, ["000660"])  # back within the linger: no churn upstream
        await trio.sleep(0.2)
        assert kr.registered == {"000660"}
        assert kr.log.count(("sub", "000660")) == 1
        assert hub.statistics().upstream[0].lingering == 0


async def test_snapshot_is_the_first_update_then_live_updates(
    hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as first, hub.subscriber(max_backlog=0) as late:
        await hub.subscribe(first, ["005930"])
        kr.trade("005930", 71_500)
        kr.trade("005930", 71_600)
        await hub.subscribe(late, ["005930"])
        kr.trade("005930", 71_700)
        (snapshot,) = await late.receive_batch()  # strict: snapshot replaced by latest
        assert (snapshot.seq, snapshot.last_price) == (3, 71_700)
        assert [s.seq for s in await first.receive_batch()] == [1, 2, 3]  # queued, not conflated
    async with hub.subscriber(Policy.LOSSLESS) as lossless:
        await hub.subscribe(lossless, ["005930"])
        kr.trade("005930", 71_800)
        batch = await lossless.receive_batch()
        assert [s.last_price for s in batch] == [71_700, 71_800]
        assert [s.seq for s in batch] == [3, 4]


async def test_strict_conflating_memory_is_bounded_by_symbols_not_by_tick_rate(
    hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(max_backlog=0) as stalled:
        await hub.subscribe(stalled, ["000001", "000002"])
        for i in range(10_000):
            kr.trade("000001" if i % 2 else "000002", 1_000 + i)
        stats = stalled.statistics()
        assert stats.pending == 2
        assert stats.conflated == 10_000 - 2
        batch = await stalled.receive_batch()
        assert [s.symbol for s in batch] == ["000002", "000001"]  # first-arrival order
        assert [s.last_price for s in batch] == [1_000 + 9_998, 1_000 + 9_999]


async def test_a_stalled_subscriber_delays_neither_publish_nor_others(
    hub: Hub, kr: ScriptedProvider
) -> None:
    received: list[float] = []

    async def healthy_reader(sub: trio.abc.ReceiveChannel[object]) -> None:
        async for state in sub:
            received.append(state.last_price)  # type: ignore[attr-defined]

    async with (
        hub.subscriber(Policy.LOSSLESS, capacity=10) as stalled,
        hub.subscriber(Policy.LOSSLESS, capacity=10) as healthy,
        trio.open_nursery() as nursery,
    ):
        await hub.subscribe(stalled, ["005930"])
        await hub.subscribe(healthy, ["005930"])
        nursery.start_soon(healthy_reader, healthy)
        for price in range(100):
            kr.trade("005930", price)  # synchronous: returns without waiting on anyone
            await trio.testing.wait_all_tasks_blocked()  # the healthy reader keeps up
        assert received == list(range(100))
        assert stalled.statistics().pending == 0  # cut off, buffer released
        with pytest.raises(SubscriberTooSlow):
            await stalled.receive()
        nursery.cancel_scope.cancel()
    assert hub.statistics().too_slow == 1


async def test_closing_releases_everything_even_mid_stream(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, ["005930", "000660"])
        kr.trade("005930", 1)
    assert sub.symbols == frozenset()
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive()
    await trio.sleep(hub.linger + 1)
    assert kr.registered == set()
    assert hub.held() == []
    assert hub.statistics().subscribers == 0


async def test_closing_wakes_a_waiting_receiver(hub: Hub) -> None:
    sub = hub.subscriber()
    with pytest.RaisesGroup(trio.ClosedResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub.receive)
            await trio.testing.wait_all_tasks_blocked()
            sub.close()


@pytest.mark.parametrize("cancel_after", range(12))
async def test_cancel_at_every_checkpoint_of_subscribe_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock, cancel_after: int
) -> None:
    """Cancel a client task after N scheduling rounds, for every N a subscribe spans."""
    kr = ScriptedProvider(Market.KR, ack_delay=0.5)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr], clock=WallClock(EPOCH_NS)).run)
        async with hub.subscriber() as holder:  # one symbol already live: the other path
            await hub.subscribe(holder, ["000001"])
            async with trio.open_nursery() as client:

                async def subscribe_all() -> None:
                    async with hub.subscriber() as sub:
                        await hub.subscribe(sub, ["000001", "000002", "000003"])
                        await trio.sleep_forever()

                client.start_soon(subscribe_all)
                for _ in range(cancel_after):
                    await trio.lowlevel.checkpoint()
                client.cancel_scope.cancel()
            assert hub.statistics().subscribers == 1
            await trio.sleep(hub.linger + 2 * kr.ack_delay + 1)
            await settle()
            assert hub.held() == ["000001"]
            assert kr.registered == {"000001"}
            usage = hub.statistics().upstream[0]
            assert (usage.used, usage.pending, usage.lingering) == (1, 0, 0)
        nursery.cancel_scope.cancel()


async def test_cancelled_subscribe_keeps_the_subscriber_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kr = ScriptedProvider(Market.KR, ack_delay=5.0)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr]).run)
        async with hub.subscriber() as sub:
            with trio.move_on_after(1.0):
                await hub.subscribe(sub, ["005930"])
            assert sub.symbols == frozenset()
            result = await hub.subscribe(sub, ["005930"])
            assert result.accepted == ("005930",)
        nursery.cancel_scope.cancel()


async def test_subscriber_symbol_limit(hub: Hub) -> None:
    async with hub.subscriber(max_symbols=2) as sub:
        result = await hub.subscribe(sub, ["000001", "000002", "000003"])
        assert result.accepted == ("000001", "000002")
        assert result.failed[0].reason is FailureReason.LIMIT


async def test_unsubscribe_drops_pending_updates_of_that_symbol(
    hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub, hub.subscriber(Policy.LOSSLESS) as lossless:
        for s in (sub, lossless):
            await hub.subscribe(s, ["000001", "000002"])
        kr.trade("000001", 1)
        kr.trade("000002", 2)
        assert hub.unsubscribe(sub, ["000001", "999999", "bad!"]) == ("000001",)
        hub.unsubscribe(lossless, ["000001"])
        assert [s.symbol for s in await sub.receive_batch()] == ["000002"]
        assert [s.symbol for s in await lossless.receive_batch()] == ["000002"]


async def test_statistics_count_published_delivered_conflated(
    hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(max_backlog=0) as sub:
        await hub.subscribe(sub, ["005930"])
        for price in (1, 2, 3):
            kr.trade("005930", price)
        kr.trade("000660", 9)  # nobody holds it upstream
        await sub.receive_batch()
    stats = hub.statistics()
    assert (stats.published, stats.unrouted, stats.delivered, stats.conflated) == (3, 1, 1, 2)
    assert stats.cached_symbols == 1


def test_two_providers_for_one_market_are_refused() -> None:
    with pytest.raises(ValueError, match="two providers"):
        Hub([ScriptedProvider(Market.KR), ScriptedProvider(Market.KR)])
