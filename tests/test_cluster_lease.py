"""The lease on an upstream session, against a real redis-server (and Trio's clock for arithmetic).

Times in Redis run on the real clock, so these tests use TTLs of about a second and wait for
conditions with bounded timeouts; the arithmetic alone runs on ``MockClock``. Bounds on
takeover times allow ``SLACK`` seconds for a loaded two-core CI machine.
"""

from __future__ import annotations

import itertools
import math
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from trio_stock.cluster.keys import Keys
from trio_stock.cluster.lease import (
    Fence,
    Lease,
    LeaseTiming,
    fenced_publish,
    hold_while_leased,
)
from trio_stock.cluster.redis import RedisClient, open_redis

from .redis_server import RedisServer, running_redis

HOLDER = Path(__file__).resolve().parent / "lease_holder.py"
TTL = 1.5
RETRY = 0.2
SLACK = 1.0  # scheduling on a loaded machine; a bound is checked to within this
NAME = "kis:test"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    async with open_redis(redis_server.url) as client:
        yield client


@pytest.fixture
def keys() -> Keys:
    """A prefix of its own per test, so tests share one redis-server without meeting."""
    return Keys(prefix=f"test-{uuid.uuid4().hex[:12]}")


async def known(redis: RedisClient, keys: Keys, name: str = NAME) -> None:
    """Give the lease a history (a fence counter), as after its first use: no quarantine."""
    await redis.set(keys.fence(name), b"1")


def lease(
    redis: RedisClient, keys: Keys, node: str, *, ttl: float = TTL, retry: float = RETRY
) -> Lease:
    return Lease(redis, NAME, node, keys=keys, rng=random.Random(node), ttl=ttl, retry=retry)


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``condition()`` holds, polling; fail after ``within`` seconds."""
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - state of Redis, another process, the clock
            await trio.sleep(0.01)


@attrs.define
class Holding:
    """One run of a holder's work: who, with which token, from when to when (Trio time)."""

    node: str
    token: int
    start: float
    end: float | None = None
    deadline_at_end: float = math.nan


def recording_work(node: Lease, log: list[Holding]) -> Callable[[Fence], object]:
    """A session that records when it starts and stops in ``log``."""

    async def work(fence: Fence) -> None:
        holding = Holding(node.node_id, fence.token, trio.current_time())
        log.append(holding)
        try:
            await trio.sleep_forever()
        finally:
            holding.end = trio.current_time()
            holding.deadline_at_end = node.deadline

    return work


def renewed(node: Lease, times: int) -> bool:
    return node.statistics().renewals >= times


def assert_no_overlap(log: list[Holding]) -> None:
    spans = sorted(log, key=lambda h: h.start)
    for before, after in itertools.pairwise(spans):
        assert before.end is not None, f"{before} still running when {after} started"
        assert before.end <= after.start, f"{before} overlaps {after}"
        assert before.token < after.token


# --- the arithmetic, on Trio's clock ---------------------------------------------------------


def test_timing_defaults_and_arithmetic() -> None:
    timing = LeaseTiming.of(10.0, 1.0, None)
    assert timing.margin == 2.5
    assert timing.renew_every == pytest.approx(10 / 3)
    assert timing.deadline(100.0) == 107.5
    assert timing.ttl_ms == 10_000
    assert LeaseTiming.of(0.0015, 1.0, 0.0001).ttl_ms == 1
    rng = random.Random(1)
    delays = [timing.retry_delay(rng) for _ in range(1000)]
    assert min(delays) >= 0.5
    assert max(delays) <= 1.0
    assert max(delays) - min(delays) > 0.4  # jittered, not constant


@pytest.mark.parametrize(
    ("ttl", "retry", "margin"),
    [(0, 1, None), (-1, 1, None), (math.inf, 1, None), (10, 0, None), (10, 1, 0), (10, 1, 7)],
)
def test_timing_rejects_nonsense(ttl: float, retry: float, margin: float | None) -> None:
    with pytest.raises(ValueError):
        LeaseTiming.of(ttl, retry, margin)


def test_error_backoff_is_capped() -> None:
    timing = LeaseTiming.of(10.0, 1.0, None)
    backoff = timing.error_backoff(random.Random(2))
    delays = [backoff.failed() for _ in range(20)]
    assert delays[0] <= 0.5 * 1.2
    assert max(delays) <= 4.0 * 1.2
    renew = timing.renew_backoff(random.Random(3))
    # Several renewal attempts fit between the first failure (ttl/3) and the deadline (3ttl/4).
    waits = [renew.failed() for _ in range(10)]
    assert sum(waits[:4]) < 10 * (3 / 4 - 1 / 3)
    assert max(waits) <= 10 / 10 * 1.2


async def test_deadline_cancels_the_work_before_the_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timing = LeaseTiming.of(10.0, 1.0, None)
    sent_at = trio.current_time()
    with trio.CancelScope(deadline=timing.deadline(sent_at)) as scope:
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(sent_at + 10.0 - 2.5)
    assert trio.current_time() < sent_at + timing.ttl


def test_node_id_must_be_one_word() -> None:
    for bad in ["", "two words", "tab\there"]:
        with pytest.raises(ValueError):
            Lease(None, NAME, bad)  # type: ignore[arg-type]


# --- one holder ------------------------------------------------------------------------------


async def test_exactly_one_of_two_holds(redis: RedisClient, keys: Keys) -> None:
    await known(redis, keys)
    a, b = lease(redis, keys, "a"), lease(redis, keys, "b")
    got: list[tuple[Lease, Fence]] = []

    async def take(node: Lease) -> None:
        got.append((node, await node.acquire()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, a)
        nursery.start_soon(take, b)
        await wait_for(lambda: len(got) >= 1)
        winner, fence = got[0]
        loser = b if winner is a else a
        tried = loser.statistics().attempts
        await wait_for(lambda: loser.statistics().attempts >= tried + 3)
        assert len(got) == 1
        assert winner.statistics().token == fence.token
        assert loser.statistics().token is None
        assert await redis.get(keys.lease(NAME)) == f"{winner.node_id} {fence.token}".encode()
        nursery.cancel_scope.cancel()


async def test_released_lease_goes_to_the_standby(redis: RedisClient, keys: Keys) -> None:
    await known(redis, keys)
    a, b = lease(redis, keys, "a", ttl=5.0), lease(redis, keys, "b", ttl=5.0)
    first = await a.acquire()
    got: list[Fence] = []

    async def take() -> None:
        got.append(await b.acquire())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await wait_for(lambda: b.statistics().attempts >= 2)
        await a.release(first)
        released_at = trio.current_time()
        assert a.statistics().token is None
        await wait_for(lambda: bool(got))
        # Taken at the standby's next attempt, not after the 5 s TTL.
        assert trio.current_time() - released_at <= RETRY + SLACK
        assert got[0].token > first.token


async def test_tokens_only_grow(redis: RedisClient, keys: Keys) -> None:
    await known(redis, keys)
    nodes = [lease(redis, keys, "a"), lease(redis, keys, "b")]
    tokens = []
    for i in range(6):
        node = nodes[i % 2]
        fence = await node.acquire()
        tokens.append(fence.token)
        await node.release(fence)
    assert tokens == sorted(set(tokens))


async def test_a_lease_without_history_waits_one_ttl(redis: RedisClient, keys: Keys) -> None:
    """The first use of a name, or a Redis that lost its data: nothing is granted for a TTL."""
    a = lease(redis, keys, "a", ttl=1.0)
    asked_at = trio.current_time()
    with trio.fail_after(1.0 + RETRY + SLACK):
        fence = await a.acquire()
    assert trio.current_time() - asked_at >= 1.0 - 0.01
    assert fence.token > 1_600_000_000 * 1_000_000  # seeded from Redis's clock, in µs


async def test_lease_not_renewed_is_taken_only_after_the_ttl(
    redis: RedisClient, keys: Keys
) -> None:
    await known(redis, keys)
    a, b = lease(redis, keys, "a"), lease(redis, keys, "b")
    fence = await a.acquire()
    work_ended: list[float] = []
    got: list[float] = []

    async def work(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        async with trio.open_nursery() as inner:
            with trio.CancelScope(deadline=a.deadline) as work_scope:
                keeping = trio.CancelScope()

                async def keep() -> None:
                    with keeping:
                        await a.keep(fence, work_scope)

                inner.start_soon(keep)
                task_status.started(keeping)
                await trio.sleep_forever()
            work_ended.append(trio.current_time())
            inner.cancel_scope.cancel()

    async def take() -> None:
        await b.acquire()
        got.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        keeping = await nursery.start(work)
        await wait_for(lambda: a.statistics().renewals >= 2)
        nursery.start_soon(take)
        keeping.cancel()  # a stops renewing, as a stuck or partitioned holder would
        last_sent = a.deadline - (TTL - a.timing.margin)
        await wait_for(lambda: bool(got), within=TTL + RETRY + SLACK)
        assert got[0] >= last_sent + TTL - 0.01  # never before the lease expired in Redis
        assert got[0] <= last_sent + TTL + RETRY + SLACK
        # a's work was stopped by its deadline, margin seconds before the expiry.
        assert work_ended
        assert work_ended[0] < last_sent + TTL
        assert work_ended[0] < got[0]


async def test_keep_sets_the_deadline_before_the_expiry(redis: RedisClient, keys: Keys) -> None:
    await known(redis, keys)
    a = lease(redis, keys, "a")
    fence = await a.acquire()
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(a.keep, fence, scope)
            await wait_for(lambda: scope.deadline != math.inf)
            for renewals in range(1, 4):
                await wait_for(partial(renewed, a, renewals))
                asked_at = trio.current_time()
                pttl = await redis.pttl(keys.lease(NAME))
                # Redis will not expire the lease before asked_at + pttl (ms, rounded down):
                # the work's deadline comes at least the margin earlier.
                earliest_expiry = asked_at + pttl / 1000
                assert scope.deadline == a.deadline
                assert scope.deadline + a.timing.margin <= earliest_expiry + 0.002
                assert scope.deadline > trio.current_time()
        nursery.cancel_scope.cancel()


async def test_keep_cancels_the_work_when_the_lease_is_taken(
    redis: RedisClient, keys: Keys
) -> None:
    await known(redis, keys)
    a = lease(redis, keys, "a")
    fence = await a.acquire()
    # Someone else holds it now (as after an expiry and a takeover).
    await redis.set(keys.lease(NAME), f"b {fence.token + 1}".encode())
    with trio.fail_after(TTL), trio.CancelScope() as scope:
        await a.keep(fence, scope)  # returns at its first renewal, refused
    assert scope.cancel_called
    assert a.statistics().losses == 1
    assert a.statistics().token is None
    with pytest.raises(ValueError):
        await a.keep(fence, scope)


# --- the fence -------------------------------------------------------------------------------


async def test_fenced_publish_sets_and_publishes(redis: RedisClient, keys: Keys) -> None:
    await known(redis, keys)
    fence = await lease(redis, keys, "a").acquire()
    channels = [f"{keys.prefix}:ch1", f"{keys.prefix}:ch2"]
    async with redis.pubsub(channels=channels, ignore_subscribe_messages=True) as pubsub:
        items = [
            (f"{keys.prefix}:k1", channels[0], b"v1"),
            (f"{keys.prefix}:k2", channels[1], b"v2"),
        ]
        assert await fenced_publish(redis, fence, items, keys=keys)
        received: list[tuple[object, object]] = []
        with trio.fail_after(5):
            while len(received) < 2:
                message = await pubsub.get_message()
                if message is not None:
                    received.append((message["channel"], message["data"]))
    assert received == [(channels[0].encode(), b"v1"), (channels[1].encode(), b"v2")]
    assert await redis.get(f"{keys.prefix}:k1") == b"v1"
    assert await redis.get(f"{keys.prefix}:k2") == b"v2"
    assert await fenced_publish(redis, fence, [], keys=keys)  # only checks the lease


async def test_former_holder_cannot_write_after_takeover(redis: RedisClient, keys: Keys) -> None:
    await known(redis, keys)
    a, b = lease(redis, keys, "a", ttl=0.6), lease(redis, keys, "b", ttl=0.6)
    old = await a.acquire()
    key, channel = f"{keys.prefix}:state", f"{keys.prefix}:ticks"
    assert await fenced_publish(redis, old, [(key, channel, b"a")], keys=keys)
    new = await b.acquire()  # once a's lease expired: a never renewed it
    assert new.token > old.token
    assert await fenced_publish(redis, new, [(key, channel, b"b")], keys=keys)
    assert not await fenced_publish(redis, old, [(key, channel, b"a again")], keys=keys)
    assert await redis.get(key) == b"b"
    await b.release(new)
    # Released, the lease carries no token: nobody's writes pass.
    assert not await fenced_publish(redis, new, [(key, channel, b"b again")], keys=keys)
    assert await redis.get(key) == b"b"


# --- hold_while_leased -----------------------------------------------------------------------


async def test_hold_while_leased_hands_over_on_shutdown(redis: RedisClient, keys: Keys) -> None:
    await known(redis, keys)
    a, b = lease(redis, keys, "a", ttl=5.0), lease(redis, keys, "b", ttl=5.0)
    log: list[Holding] = []
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as a_nursery:
            await a_nursery.start(hold_while_leased, a, recording_work(a, log))
            await wait_for(lambda: bool(log))
            await outer.start(hold_while_leased, b, recording_work(b, log))
            await wait_for(lambda: b.statistics().attempts >= 2)
            a_nursery.cancel_scope.cancel()  # a shuts down: it releases the lease
        stopped_at = trio.current_time()
        await wait_for(lambda: len(log) == 2)
        assert log[1].node == "b"
        assert log[1].start - stopped_at <= RETRY + SLACK  # not the 5 s TTL
        assert_no_overlap(log)
        outer.cancel_scope.cancel()


async def test_work_that_fails_releases_the_lease(redis: RedisClient, keys: Keys) -> None:
    await known(redis, keys)
    a, b = lease(redis, keys, "a", ttl=5.0), lease(redis, keys, "b", ttl=5.0)

    async def failing(fence: Fence) -> None:
        raise RuntimeError("session broke")

    with pytest.raises(ExceptionGroup) as caught:
        await hold_while_leased(a, failing)
    assert caught.group_contains(RuntimeError, match="session broke")
    with trio.fail_after(RETRY + SLACK):
        await b.acquire()  # at once: a released it on the way out


# --- a holder in another process -------------------------------------------------------------


@attrs.define
class Lines:
    """The lines a subprocess prints, as they come."""

    lines: list[str] = attrs.Factory(list)

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        pending = b""
        async for chunk in stream:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            self.lines += [line.decode() for line in complete]

    async def first(self, prefix: str, *, after: int = 0, within: float = 20.0) -> str:
        def found() -> bool:
            return any(line.startswith(prefix) for line in self.lines[after:])

        await wait_for(found, within)
        return next(line for line in self.lines[after:] if line.startswith(prefix))


async def start_holder(
    nursery: trio.Nursery, url: str, keys: Keys, key: str
) -> tuple[trio.Process, Lines]:
    command = [sys.executable, str(HOLDER), url, NAME, key, "--ttl", str(TTL)]
    command += ["--retry", str(RETRY), "--prefix", keys.prefix]
    process: trio.Process = await nursery.start(
        partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
    )
    lines = Lines()
    assert process.stdout is not None
    nursery.start_soon(lines.pump, process.stdout)
    return process, lines


async def test_paused_holder_is_replaced_and_fenced_off(
    redis_server: RedisServer, redis: RedisClient, keys: Keys
) -> None:
    await known(redis, keys)
    key = f"{keys.prefix}:state"
    async with trio.open_nursery() as nursery:
        process, lines = await start_holder(nursery, redis_server.url, keys, key)
        theirs = int((await lines.first("write applied")).split()[-1])
        process.send_signal(signal.SIGSTOP)  # paused, past its TTL: its deadline passes
        try:
            ours = lease(redis, keys, "test")
            with trio.fail_after(TTL + RETRY + SLACK):
                fence = await ours.acquire()
            kept = trio.CancelScope()  # no work of ours runs: we only keep the lease
            nursery.start_soon(ours.keep, fence, kept)
            assert fence.token > theirs
            assert await fenced_publish(redis, fence, [(key, "c", b"ours")], keys=keys)
            seen = len(lines.lines)
        finally:
            process.send_signal(signal.SIGCONT)
        late = await lines.first("late write", after=seen)
        after = lines.lines[seen:]
        assert f"stopped {theirs}" in after
        assert late == f"late write refused {theirs}"
        assert f"write applied {theirs}" not in after
        assert await redis.get(key) == b"ours"
        assert not kept.cancel_called  # we still hold it
        process.kill()
        nursery.cancel_scope.cancel()


async def test_killed_holder_is_taken_over_within_ttl_and_retry(
    redis_server: RedisServer, redis: RedisClient, keys: Keys
) -> None:
    await known(redis, keys)
    async with trio.open_nursery() as nursery:
        process, lines = await start_holder(nursery, redis_server.url, keys, f"{keys.prefix}:s")
        theirs = int((await lines.first("holding")).split()[-1])
        ours = lease(redis, keys, "test")
        got: list[tuple[float, Fence]] = []

        async def take() -> None:
            fence = await ours.acquire()
            got.append((trio.current_time(), fence))

        nursery.start_soon(take)
        await wait_for(lambda: ours.statistics().attempts >= 2)
        assert not got
        process.kill()
        killed_at = trio.current_time()
        await wait_for(lambda: bool(got), within=TTL + RETRY + SLACK)
        taken_at, fence = got[0]
        assert taken_at - killed_at <= TTL + RETRY + SLACK
        assert fence.token > theirs
        nursery.cancel_scope.cancel()


# --- Redis in trouble ------------------------------------------------------------------------


async def test_redis_restart_never_gives_two_holders() -> None:
    """Redis loses every key; the holder stops, and a new one starts only after it."""
    with running_redis() as server:
        async with open_redis(server.url) as redis, trio.open_nursery() as nursery:
            keys = Keys(prefix="restart")
            await known(redis, keys)
            log: list[Holding] = []
            a, b = lease(redis, keys, "a"), lease(redis, keys, "b")
            await nursery.start(hold_while_leased, a, recording_work(a, log))
            await nursery.start(hold_while_leased, b, recording_work(b, log))
            await wait_for(lambda: bool(log))
            first = log[0]
            holder = a if first.node == "a" else b
            await wait_for(lambda: holder.statistics().renewals >= 1)

            await server.restart()
            restarted_at = trio.current_time()
            # Quarantine (one TTL) plus the acquire backoff while Redis was away.
            await wait_for(lambda: log[-1].start > restarted_at, within=2 * TTL + 10 * RETRY + 5)
            assert first.end is not None  # refused its renewal, or reached its deadline
            assert log[-1].token > first.token  # tokens grow across the loss of every key
            assert_no_overlap(log)
            assert not nursery.cancel_scope.cancel_called  # both hold loops are still running
            nursery.cancel_scope.cancel()


async def test_stalled_redis_stops_the_holder_before_its_lease_expires() -> None:
    with running_redis() as server:
        async with open_redis(server.url) as redis, trio.open_nursery() as nursery:
            keys = Keys(prefix="stall")
            await known(redis, keys)
            log: list[Holding] = []
            a = lease(redis, keys, "a")
            await nursery.start(hold_while_leased, a, recording_work(a, log))
            await wait_for(lambda: bool(log) and a.statistics().renewals >= 1)
            server.stop()
            try:
                await wait_for(lambda: log[0].end is not None, within=TTL + SLACK)
            finally:
                server.cont()
            holding = log[0]
            assert holding.end is not None
            # Stopped by its deadline, which is margin seconds before the lease's expiry.
            assert holding.end <= holding.deadline_at_end + 0.2
            assert holding.end < holding.deadline_at_end + a.timing.margin
            assert a.statistics().redis_errors >= 1
            # Redis answers again: the holder comes back by itself.
            await wait_for(lambda: len(log) >= 2, within=2 * TTL + 10 * RETRY + 5)
            assert_no_overlap(log)
            nursery.cancel_scope.cancel()
