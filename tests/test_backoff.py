"""The shared reconnect policy."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from trio_stock.upstream.backoff import Backoff


async def test_doubles_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(initial=1, maximum=10, jitter=0)
    assert [backoff.failed() for _ in range(6)] == [1, 2, 4, 8, 10, 10]


async def test_jitter_stays_within_its_fraction() -> None:
    backoff = Backoff(initial=4, maximum=4, jitter=0.25, rng=random.Random(1))
    delays = [backoff.failed() for _ in range(200)]
    assert all(3.0 <= d <= 5.0 for d in delays)
    assert len(set(delays)) > 100  # actually random


async def test_a_healthy_session_resets_the_sequence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(initial=1, maximum=60, jitter=0, healthy_after=30)
    for _ in range(4):
        backoff.failed()
    backoff.connected()
    await trio.sleep(29)
    assert backoff.failed() == 16  # a short session does not reset
    backoff.connected()
    await trio.sleep(30)
    assert backoff.failed() == 1


@pytest.mark.parametrize("seed", [1, 2])
async def test_same_seed_same_delays(seed: int) -> None:
    a = Backoff(rng=random.Random(seed))
    b = Backoff(rng=random.Random(seed))
    assert [a.failed() for _ in range(5)] == [b.failed() for _ in range(5)]


async def test_endless_failures_stay_at_the_cap() -> None:
    backoff = Backoff(initial=1, maximum=60, jitter=0)
    delays = [backoff.failed() for _ in range(5_000)]
    assert delays[-1] == 60 and backoff.attempts == 5_000
