"""The hub's guarantees: acks, quotas, linger, snapshot, backpressure, cancellation,
releases that a full command channel dropped, and revoked symbols.

Every test runs on ``MockClock``: linger, ack timeouts and a conflating subscriber's
``max_delay`` all read Trio's clock, so on the real clock an outcome could depend on the
speed of the machine (the autouse fixture below refuses a test without the clock).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_stock import SubscriberTooSlow
from trio_stock.clock import WallClock
from trio_stock.hub import Failure, FailureReason, Hub, Policy
from trio_stock.model import Market, SymbolState

from .conftest import EPOCH_NS
from .scripted import ScriptedProvider

A, B, C, D = "000001", "000002", "000003", "000004"


@pytest.fixture(autouse=True)
async def _on_virtual_time() -> None:
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock), (
        "tests of the hub run on MockClock: add the autojump_clock fixture"
    )


async def settle() -> None:
    """Let every runnable task run (the provider answers, the hub settles)."""
    await trio.testing.wait_all_tasks_blocked()


def prices(batch: list[SymbolState]) -> list[tuple[str, float | None]]:
    return [(state.symbol, state.last_price) for state in batch]


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


async def test_symbols_are_normalised_and_invalid_ones_fail(
    autojump_clock: trio.testing.MockClock, hub: Hub
) -> None:
    async with hub.subscriber() as sub:
        result = await hub.subscribe(sub, [" 005930", "ABC", "12345", 7])
    assert result.accepted == ("005930",)
    assert [(f.symbol, f.reason) for f in result.failed] == [
        ("ABC", FailureReason.UNAVAILABLE),  # a US ticker, but this hub has no US provider
        ("12345", FailureReason.INVALID),
        ("7", FailureReason.INVALID),
    ]


async def test_resubscribing_a_held_symbol_has_no_side_effects(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, ["005930"])
        result = await hub.subscribe(sub, ["005930", "005930"])
        assert result.accepted == ("005930",)  # a repeat within one request is answered once
        await settle()
        assert kr.log == [("sub", "005930")]
        assert hub.statistics().upstream[0].used == 1


async def test_rejected_symbols_fail_with_the_upstream_reason(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    kr.reject.add("000660")
    async with hub.subscriber() as sub:
        result = await hub.subscribe(sub, ["005930", "000660"])
    assert result.accepted == ("005930",)
    (failure,) = result.failed
    assert (failure.symbol, failure.reason) == ("000660", FailureReason.REJECTED)
    assert "OPSP8992" in failure.detail
    usage = hub.statistics().upstream[0]
    assert usage.registered == 1  # the rejected one holds no slot
    assert (usage.used, usage.lingering) == (0, 1)  # the subscriber left: 005930 lingers


async def test_silent_upstream_times_out_and_the_request_is_withdrawn(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    kr.silent.add("005930")
    async with hub.subscriber() as sub, trio.open_nursery() as nursery:
        start = trio.current_time()
        result = await hub.subscribe(sub, ["005930"])
        assert trio.current_time() - start == pytest.approx(hub.ack_timeout)
        (failure,) = result.failed
        assert failure.reason is FailureReason.TIMEOUT
        await settle()
        assert kr.log == [("sub", "005930"), ("unsub", "005930")]
        assert hub.held() == []
        # A late answer to the withdrawn request is ignored, also while a new request for
        # the same symbol waits: only the answer carrying its token settles it.
        withdrawn = kr.subscribes[0]
        nursery.start_soon(hub.subscribe, sub, ["005930"])
        await settle()
        assert kr.link is not None
        kr.link.registered(withdrawn)
        assert hub.statistics().upstream[0].pending == 1
        kr.link.registered(kr.subscribes[1])
        await settle()
        assert sub.symbols == {"005930"}
        assert hub.statistics().upstream[0].pending == 0


async def test_quota_is_enforced_and_shared_symbols_count_once(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
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
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
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
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
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
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
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


async def test_closing_wakes_a_waiting_receiver(
    autojump_clock: trio.testing.MockClock, hub: Hub
) -> None:
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


async def test_subscriber_symbol_limit(autojump_clock: trio.testing.MockClock, hub: Hub) -> None:
    async with hub.subscriber(max_symbols=2) as sub:
        result = await hub.subscribe(sub, ["000001", "000002", "000003"])
        assert result.accepted == ("000001", "000002")
        assert result.failed[0].reason is FailureReason.LIMIT


async def test_unsubscribe_drops_pending_updates_of_that_symbol(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
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
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
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


async def test_two_providers_for_one_market_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(ValueError, match="two providers"):
        Hub([ScriptedProvider(Market.KR), ScriptedProvider(Market.KR)])


# ---- a provider that stops draining its command channel ----------------------------------


async def test_a_release_a_full_channel_dropped_reaches_the_provider_once_it_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kr = ScriptedProvider(Market.KR, quota=3)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr], linger=0, command_buffer=2).run)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, [A, B, C])).ok
            kr.stop_draining()
            await settle()
            assert hub.unsubscribe(sub, [A, B, C]) == (A, B, C)  # C's release is dropped
            stats = hub.statistics()
            assert (stats.commands_dropped, stats.releases_owed) == (1, 1)
            assert hub.held() == []
            # The channel is still full: neither a new symbol nor C itself gets through.
            result = await hub.subscribe(sub, [D, C])
            assert [(f.symbol, f.reason) for f in result.failed] == [
                (D, FailureReason.UNAVAILABLE),
                (C, FailureReason.UNAVAILABLE),
            ]
            await trio.sleep(60)
            assert kr.registered == {A, B, C}  # still stalled: nothing reached it
            kr.resume_draining()
            await settle()
            assert kr.log[-3:] == [("unsub", A), ("unsub", B), ("unsub", C)]
            assert kr.registered == set() == set(hub.held())
            assert hub.statistics().releases_owed == 0
            assert (await hub.subscribe(sub, [D])).ok  # the channel flows again
            assert kr.registered == {D} == set(hub.held())
        nursery.cancel_scope.cancel()


async def test_a_withdrawal_a_full_channel_dropped_is_not_left_registered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kr = ScriptedProvider(Market.KR, quota=3)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr], command_buffer=1).run)
        async with hub.subscriber() as sub:
            kr.stop_draining()
            await settle()
            result = await hub.subscribe(sub, [A])  # the Subscribe fills the channel
            assert [f.reason for f in result.failed] == [FailureReason.TIMEOUT]
            assert hub.statistics().releases_owed == 1  # its withdrawal was dropped
            kr.resume_draining()
            await settle()
            # The stale request registered A upstream; the owed release took it back.
            assert kr.log == [("sub", A), ("unsub", A)]
            assert kr.registered == set() == set(hub.held())
        nursery.cancel_scope.cancel()


async def test_no_later_subscribe_overtakes_an_owed_release(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kr = ScriptedProvider(Market.KR, quota=3)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr], linger=0, command_buffer=1).run)
        async with hub.subscriber() as sub:
            for symbol in (A, B, C):  # one at a time: the channel holds one command
                assert (await hub.subscribe(sub, [symbol])).ok
            kr.stop_draining()
            await settle()
            hub.unsubscribe(sub, [A, B, C])  # A queued; B and C owed
            await settle()  # the retry task waits to send B; C stays owed
            kr.pull(2)  # the provider reads A and B: room for one, C still owed
            # The release of C goes first and takes the room: D cannot follow it in.
            result = await hub.subscribe(sub, [D])
            assert [f.reason for f in result.failed] == [FailureReason.UNAVAILABLE]
            kr.resume_draining()
            await settle()
            assert kr.log[-3:] == [("unsub", A), ("unsub", B), ("unsub", C)]
            assert (await hub.subscribe(sub, [D])).ok
            assert kr.log[-1] == ("sub", D)
            assert kr.registered == {D} == set(hub.held())
        nursery.cancel_scope.cancel()


async def test_a_subscribe_of_a_symbol_whose_release_is_owed_takes_its_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kr = ScriptedProvider(Market.KR, quota=3)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr], linger=0, command_buffer=1).run)
        async with hub.subscriber() as sub:
            for symbol in (A, B, C):  # one at a time: the channel holds one command
                assert (await hub.subscribe(sub, [symbol])).ok
            kr.stop_draining()
            await settle()
            hub.unsubscribe(sub, [A, B, C])  # A queued; B and C owed
            await settle()  # the retry task waits to send B; C stays owed
            kr.pull(2)  # the provider reads A and B: room for one, C still owed
            kr.resume_draining()
            result = await hub.subscribe(sub, [C])
            assert result.ok
            await settle()
            # The provider never let go of C: no release, no churn upstream.
            assert kr.log[-3:] == [("unsub", A), ("unsub", B), ("sub", C)]
            assert ("unsub", C) not in kr.log
            assert kr.registered == {C} == set(hub.held())
            assert hub.statistics().releases_owed == 0
        nursery.cancel_scope.cancel()


# ---- revoked symbols -------------------------------------------------------------------


async def test_a_revoked_symbol_is_dropped_and_every_holder_is_told(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with (
        hub.subscriber() as conflating,
        hub.subscriber(Policy.LOSSLESS) as lossless,
        hub.subscriber(Policy.DISCARD) as discarding,
        hub.subscriber() as bystander,
    ):
        for sub in (conflating, lossless, discarding):
            assert (await hub.subscribe(sub, [A, B, C])).ok
        assert (await hub.subscribe(bystander, [B])).ok
        kr.trade(A, 1)
        kr.trade(B, 2)
        kr.revoke(A)
        told = Failure(A, FailureReason.QUOTA, "OPSP0008 MAX SUBSCRIBE OVER")
        for sub in (conflating, lossless):
            assert sub.symbols == {B, C}
            assert sub.take_revoked() == [told]
            assert sub.take_revoked() == []  # taken once
            assert prices(await sub.receive_batch()) == [(B, 2)]  # A's update is gone
        assert discarding.symbols == {B, C}
        assert discarding.take_revoked() == []  # nobody reads a discarding subscriber
        assert bystander.take_revoked() == []
        assert hub.held() == [B, C]
        stats = hub.statistics()
        assert (stats.revoked, stats.upstream[0].used) == (1, 2)
        assert ("unsub", A) not in kr.log  # the provider dropped it itself
        # The slot is free again: a quota-full provider takes a new symbol.
        assert (await hub.subscribe(bystander, [D])).ok
        assert kr.registered == {B, C, D} == set(hub.held())


async def test_a_revocation_wakes_a_waiting_consumer(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub, trio.open_nursery() as nursery:
        assert (await hub.subscribe(sub, [A])).ok
        batches: list[list[SymbolState]] = []

        async def consumer() -> None:
            batches.append(await sub.receive_batch())

        nursery.start_soon(consumer)
        await trio.sleep(1)
        assert batches == []
        kr.revoke(A, FailureReason.REJECTED, "OPSP8992 invalid tr_key")
        await settle()
        assert batches == [[]]
        assert sub.take_revoked() == [Failure(A, FailureReason.REJECTED, "OPSP8992 invalid tr_key")]


async def test_an_untaken_revocation_keeps_its_place_in_max_symbols(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(max_symbols=2) as sub:
        assert (await hub.subscribe(sub, [A, B])).ok
        kr.revoke(A)
        kr.revoke(B)
        result = await hub.subscribe(sub, [C])  # two revocations wait: no room
        assert [f.reason for f in result.failed] == [FailureReason.LIMIT]
        assert [f.symbol for f in sub.take_revoked()] == [A, B]
        assert (await hub.subscribe(sub, [C])).ok
        kr.revoke(C)
        assert (await hub.subscribe(sub, [C])).ok  # a subscribe of C replaces its revocation
        assert sub.take_revoked() == []
        assert sub.symbols == {C}


async def test_only_registered_topics_are_revoked(autojump_clock: trio.testing.MockClock) -> None:
    kr = ScriptedProvider(Market.KR, quota=3, ack_delay=1.0)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([kr], linger=5.0).run)
        async with hub.subscriber() as sub:
            assert (await hub.subscribe(sub, [A])).ok
            hub.unsubscribe(sub, [A])  # lingering: registered, nobody holds it
            async with trio.open_nursery() as requests:
                requests.start_soon(hub.subscribe, sub, [B])
                await trio.sleep(0.5)  # B's request is in flight
                kr.revoke(B)  # a stale revocation (e.g. of a released registration)
                kr.revoke(A)
            assert sub.symbols == {B}  # the pending request was answered normally
            assert sub.take_revoked() == []  # A was held by nobody
            assert hub.held() == [B]
            assert hub.statistics().revoked == 1
        nursery.cancel_scope.cancel()
