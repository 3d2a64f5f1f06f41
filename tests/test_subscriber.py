"""Subscriber policies: queue-then-conflate, the lossless bound, nudges, checkpoints.

Every test runs on ``MockClock``: a conflating subscriber collapses its backlog when the
queued updates span ``max_delay`` seconds of ``received_ns``, which follows Trio's clock, so
on the real clock a slow machine would collapse where a fast one queues (the autouse
fixture below refuses a test without the clock).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from trio_stock import SubscriberTooSlow
from trio_stock.hub import DEFAULT_MAX_BACKLOG, Hub, Policy, Subscriber
from trio_stock.hub.subscriber import ConflatingSubscriber, StrictConflatingSubscriber
from trio_stock.model import SymbolState

from .scripted import ScriptedProvider

A, B, C = "000001", "000002", "000003"


@pytest.fixture(autouse=True)
async def _on_virtual_time() -> None:
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock), (
        "tests of subscribers run on MockClock: add the autojump_clock fixture"
    )


def prices(batch: list[SymbolState]) -> list[tuple[str, float | None]]:
    return [(state.symbol, state.last_price) for state in batch]


def generic_strict(hub: Hub) -> Subscriber:
    """The generic conflating class with ``max_backlog=0`` (the hub picks the strict one)."""
    return ConflatingSubscriber(hub, "generic", 10, max_backlog=0, max_delay=math.inf)


async def test_a_consumer_that_keeps_up_gets_every_update_in_order(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, [A, B])
        for price in range(500):  # under max_backlog, all within one instant
            kr.trade(A if price % 3 else B, price)
        assert sub.statistics().pending == 500
        batch = await sub.receive_batch()
        assert [state.last_price for state in batch] == list(range(500))
        stats = sub.statistics()
        assert (stats.delivered, stats.conflated, stats.pending) == (500, 0, 0)


async def test_a_backlog_past_max_backlog_collapses_to_the_latest_per_symbol(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(max_backlog=4) as sub:
        await hub.subscribe(sub, [A, B, C])
        for symbol, price in [(A, 1), (B, 1), (A, 2), (C, 1)]:
            kr.trade(symbol, price)
        assert sub.statistics().pending == 4  # at the bound: still every update
        kr.trade(B, 2)  # one too many: collapse, first-arrival order
        stats = sub.statistics()
        assert (stats.pending, stats.conflated) == (3, 2)
        kr.trade(A, 3)  # after a collapse, updates queue again
        kr.trade(A, 4)
        assert sub.statistics().pending == 5
        batch = await sub.receive_batch()
        assert prices(batch) == [(A, 2), (B, 2), (C, 1), (A, 3), (A, 4)]
        assert [s.seq for s in batch if s.symbol == A] == [2, 3, 4]
    assert (hub.statistics().delivered, hub.statistics().conflated) == (5, 2)


async def test_a_backlog_spanning_max_delay_collapses(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(max_delay=0.05) as sub:
        await hub.subscribe(sub, [A, B])
        kr.trade(A, 1)
        kr.trade(B, 1)
        kr.trade(A, 2)
        await trio.sleep(0.03)
        kr.trade(B, 2)
        assert sub.statistics().pending == 4  # 30 ms of feed queued: every update kept
        await trio.sleep(0.03)
        kr.trade(A, 3)  # 60 ms after the oldest queued one: collapse
        stats = sub.statistics()
        assert (stats.pending, stats.conflated) == (2, 3)
        await trio.sleep(0.03)
        kr.trade(B, 3)  # a new window starts with this one
        await trio.sleep(0.03)
        kr.trade(B, 4)  # 30 ms into it: queued
        assert sub.statistics().pending == 4
        batch = await sub.receive_batch()
        assert prices(batch) == [(A, 3), (B, 2), (B, 3), (B, 4)]


@pytest.mark.parametrize("max_backlog", [1, 7, DEFAULT_MAX_BACKLOG])
async def test_memory_is_bounded_by_max_backlog_plus_symbols_not_by_tick_rate(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider, max_backlog: int
) -> None:
    """Whatever the tick rate, a stalled consumer never has more than max_backlog + symbols
    updates queued: checked after every offer, on a clock that stands still (so only the
    backlog rule collapses) and on one that moves (so both rules do)."""
    bound = max_backlog + 3
    async with hub.subscriber(max_backlog=max_backlog, max_delay=math.inf) as still:
        await hub.subscribe(still, [A, B, C])
        highest = 0
        for price in range(10_000):
            kr.trade((A, B, C)[price % 3], price)
            pending = still.statistics().pending
            assert pending <= bound, f"{pending} queued after {price + 1} updates"
            highest = max(highest, pending)
        assert highest == bound  # the bound is reached, so the rule under test did the work
        stats = still.statistics()
        batch = await still.receive_batch()
        assert len(batch) == stats.pending
        assert stats.pending + stats.conflated == 10_000
        latest = {symbol: price for symbol, price in prices(batch)}
        assert latest == {A: 9_999, B: 9_997, C: 9_998}
    async with hub.subscriber(max_backlog=max_backlog, max_delay=0.05) as moving:
        await hub.subscribe(moving, [A, B, C])
        for price in range(2_000):
            if price % 50 == 0:
                await trio.sleep(0.01)  # the feed's time moves on: max_delay collapses too
            kr.trade((A, B, C)[price % 3], price)
            pending = moving.statistics().pending
            assert pending <= bound, f"{pending} queued after {price + 1} updates"
        stats = moving.statistics()
        assert stats.conflated > 0
        assert stats.pending + stats.conflated == 3 + 2_000  # the snapshots, then the feed


async def test_the_generic_class_with_max_backlog_zero_is_strict_conflation(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    """The hub's fast strict subscriber and the generic one with 0 behave the same."""
    generic = generic_strict(hub)
    async with generic, hub.subscriber(max_backlog=0) as strict:
        assert isinstance(strict, StrictConflatingSubscriber)
        outcomes: list[tuple[list[tuple[str, float | None]], int]] = []
        for sub in (generic, strict):
            await hub.subscribe(sub, [A, B, C])
        for price, symbol in enumerate([A, B, A, C, B, A, A]):
            kr.trade(symbol, price)
        hub.unsubscribe(generic, [C])
        hub.unsubscribe(strict, [C])
        for sub in (generic, strict):
            first = await sub.receive()
            rest = await sub.receive_batch()
            outcomes.append((prices([first, *rest]), sub.statistics().conflated))
        assert outcomes[0] == outcomes[1] == ([(A, 6), (B, 4)], 4)


async def test_unsubscribe_drops_pending_updates_before_and_after_a_collapse(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(max_backlog=2) as sub:
        await hub.subscribe(sub, [A, B])
        for symbol, price in [(A, 1), (B, 1), (A, 2)]:  # collapses to A2, B1
            kr.trade(symbol, price)
        kr.trade(A, 3)  # queued after the collapse
        kr.trade(B, 2)
        assert hub.unsubscribe(sub, [A]) == (A,)
        assert sub.statistics().pending == 2
        await hub.subscribe(sub, [A])  # its snapshot comes after what was queued
        assert prices(await sub.receive_batch()) == [(B, 1), (B, 2), (A, 3)]


@pytest.mark.parametrize(
    "make",
    [
        lambda hub: hub.subscriber(),
        lambda hub: hub.subscriber(max_backlog=0),
        lambda hub: hub.subscriber(max_backlog=1),
        generic_strict,
        lambda hub: hub.subscriber(Policy.LOSSLESS),
    ],
    ids=["default", "strict", "backlog-1", "generic-strict", "lossless"],
)
@pytest.mark.parametrize("whole_batches", [False, True])
async def test_a_waiting_consumer_is_woken_by_every_update(
    autojump_clock: trio.testing.MockClock,
    hub: Hub,
    kr: ScriptedProvider,
    make: Callable[[Hub], Subscriber],
    whole_batches: bool,
) -> None:
    """A consumer that keeps up parks between updates; each offer must wake it."""
    received: list[float | None] = []
    async with make(hub) as sub, trio.open_nursery() as nursery:
        await hub.subscribe(sub, [A, B])

        async def consumer() -> None:
            while True:
                batch = await sub.receive_batch() if whole_batches else [await sub.receive()]
                received.extend(state.last_price for state in batch)

        nursery.start_soon(consumer)
        for price in range(20):  # all at one instant: only the wake-up can deliver them
            kr.trade((A, B)[price % 2], price)
            await trio.testing.wait_all_tasks_blocked()
            assert received == list(range(price + 1))
        nursery.cancel_scope.cancel()


# ---- lossless ----------------------------------------------------------------------


async def test_lossless_overflow_cuts_off_and_frees_the_buffer_at_once(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(Policy.LOSSLESS, capacity=5) as sub, trio.open_nursery() as nursery:
        await hub.subscribe(sub, [A])
        told = trio.Event()

        async def watch() -> None:
            await sub.wait_too_slow()
            told.set()

        nursery.start_soon(watch)
        for price in range(5):
            kr.trade(A, price)
        await trio.testing.wait_all_tasks_blocked()
        assert (sub.statistics().pending, told.is_set()) == (5, False)
        kr.trade(A, 5)  # one over the bound
        stats = sub.statistics()
        assert (stats.pending, stats.too_slow) == (0, True)
        kr.trade(A, 6)  # offers after the cut-off are dropped, memory stays freed
        assert sub.statistics().pending == 0
        with trio.fail_after(1):
            await told.wait()
        with pytest.raises(SubscriberTooSlow, match="fell 5 updates behind"):
            await sub.receive()
        with pytest.raises(SubscriberTooSlow):
            await sub.receive_batch()
    assert hub.statistics().too_slow == 1


async def test_lossless_keeps_every_update_up_to_its_bound_in_order(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(Policy.LOSSLESS, capacity=100) as sub:
        await hub.subscribe(sub, [A, B])
        for price in range(100):
            kr.trade(A if price % 2 else B, price)
        first = await sub.receive()
        rest = await sub.receive_batch()
        assert [s.last_price for s in [first, *rest]] == list(range(100))
        assert not sub.statistics().too_slow


async def test_lossless_resubscribe_does_not_repeat_what_was_queued(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber(Policy.LOSSLESS) as sub:
        await hub.subscribe(sub, [A, B])
        for price in (1, 2, 3):
            kr.trade(A, price)
        kr.trade(B, 9)
        hub.unsubscribe(sub, [A])
        await hub.subscribe(sub, [A])  # snapshot: A at 3, once, after B
        assert prices(await sub.receive_batch()) == [(B, 9), (A, 3)]


# ---- nudges ------------------------------------------------------------------------

POLICIES = [Policy.CONFLATE, Policy.LOSSLESS, Policy.DISCARD]


@pytest.mark.parametrize("policy", POLICIES)
async def test_nudge_wakes_a_blocked_receive_batch_with_nothing(
    autojump_clock: trio.testing.MockClock, hub: Hub, policy: Policy
) -> None:
    async with hub.subscriber(policy) as sub, trio.open_nursery() as nursery:
        await hub.subscribe(sub, [A])
        batches: list[list[SymbolState]] = []

        async def receiver() -> None:
            with trio.fail_after(5):  # a lost nudge fails the test instead of hanging it
                batches.append(await sub.receive_batch())

        nursery.start_soon(receiver)
        await trio.sleep(1)
        assert batches == []  # really blocked
        sub.nudge()
        await trio.testing.wait_all_tasks_blocked()
        assert batches == [[]]


@pytest.mark.parametrize("policy", POLICIES)
async def test_a_nudge_before_the_wait_is_kept_and_consumed_once(
    autojump_clock: trio.testing.MockClock, hub: Hub, policy: Policy
) -> None:
    async with hub.subscriber(policy) as sub:
        sub.nudge()
        sub.nudge()  # nudges do not add up
        start = trio.current_time()
        with trio.fail_after(5):
            assert await sub.receive_batch() == []
        assert trio.current_time() == start
        with trio.move_on_after(5) as waited:
            await sub.receive_batch()
        assert waited.cancelled_caught  # the flag was cleared: this one blocked


async def test_a_nudge_with_updates_pending_returns_them_and_is_consumed(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider
) -> None:
    async with hub.subscriber() as sub:
        await hub.subscribe(sub, [A])
        kr.trade(A, 1)
        sub.nudge()
        assert prices(await sub.receive_batch()) == [(A, 1)]
        with trio.move_on_after(5) as waited:
            await sub.receive_batch()
        assert waited.cancelled_caught


@pytest.mark.parametrize("policy", [Policy.CONFLATE, Policy.LOSSLESS])
async def test_receive_ignores_nudges(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider, policy: Policy
) -> None:
    async with hub.subscriber(policy) as sub, trio.open_nursery() as nursery:
        await hub.subscribe(sub, [A])
        received: list[SymbolState] = []

        async def receiver() -> None:
            received.append(await sub.receive())

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        sub.nudge()
        await trio.testing.wait_all_tasks_blocked()
        assert received == []  # still waiting
        kr.trade(A, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert prices(received) == [(A, 1)]
        with trio.fail_after(5):
            assert await sub.receive_batch() == []  # the nudge was left for receive_batch


async def test_a_closed_subscriber_raises_even_when_nudged(
    autojump_clock: trio.testing.MockClock, hub: Hub
) -> None:
    sub = hub.subscriber()
    sub.nudge()
    sub.close()
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive_batch()


# ---- checkpoints -------------------------------------------------------------------


@pytest.mark.parametrize("policy", [Policy.CONFLATE, Policy.LOSSLESS])
async def test_a_receive_that_does_not_wait_still_yields(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider, policy: Policy
) -> None:
    async with hub.subscriber(policy) as sub:
        await hub.subscribe(sub, [A])
        kr.trade(A, 1)
        kr.trade(A, 2)
        with trio.testing.assert_checkpoints():
            await sub.receive()
        with trio.testing.assert_checkpoints():
            assert prices(await sub.receive_batch()) == [(A, 2)]


@pytest.mark.parametrize("policy", [Policy.CONFLATE, Policy.LOSSLESS])
async def test_a_cancelled_receive_loses_nothing(
    autojump_clock: trio.testing.MockClock, hub: Hub, kr: ScriptedProvider, policy: Policy
) -> None:
    async with hub.subscriber(policy) as sub:
        await hub.subscribe(sub, [A])
        kr.trade(A, 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.receive_batch()
        assert scope.cancelled_caught
        assert prices(await sub.receive_batch()) == [(A, 1)]


# ---- bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "options"),
    [
        (Policy.CONFLATE, {"max_backlog": -1}),
        (Policy.CONFLATE, {"max_delay": -0.1}),
        (Policy.CONFLATE, {"max_delay": math.nan}),
        (Policy.CONFLATE, {"max_backlog": 0, "max_delay": -1}),
        (Policy.LOSSLESS, {"capacity": 0}),
    ],
)
async def test_out_of_range_bounds_are_refused(
    autojump_clock: trio.testing.MockClock,
    policy: Policy,
    options: dict[str, Any],
    kr: ScriptedProvider,
) -> None:
    hub = Hub([kr])
    with pytest.raises(ValueError, match="must be >= "):
        hub.subscriber(policy, **options)
    assert hub.statistics().subscribers == 0
