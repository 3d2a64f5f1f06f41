"""Hypothesis: the provider ends up holding exactly what the hub holds, whatever happens.

Three subscribers start holding the whole quota. Then random programs of subscribes
(left running, as a client's would, or awaited, so that their commands are sent before
any other task runs), unsubscribes, closes, revocations, pauses (virtual time) and a
provider that stops reading its command channel, reads a few commands (and a request may
come in the same scheduling round), or drains again, run against a hub whose command
channel is tiny (1 to 3 commands), so commands are dropped all the time. Checked after
every step:

- the hub never counts more topics plus owed releases than the quota; a subscriber never
  holds more symbols plus untaken revocations than its ``max_symbols``;

and once the provider drains again and every request is answered or timed out:

- the provider holds exactly the symbols the hub holds (no registration leaked, none
  missing), and no release is owed any more;
- the provider was never asked to hold more than its quota at once: a release the channel
  dropped reached it before any later subscribe;
- after every subscriber leaves and the linger runs out, the provider holds nothing.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings, target

from trio_stock.clock import WallClock
from trio_stock.hub import DEFAULT_ACK_TIMEOUT, Hub, Subscriber
from trio_stock.model import Market

from .scripted import ScriptedProvider

SYMBOLS = ["000001", "000002", "000003", "000004", "000005"]
QUOTA = 3
MAX_SYMBOLS = 3
symbols = st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3)
operations = st.lists(
    st.one_of(
        # Weighted by repetition: requests come often, and the provider stalls more often
        # than it recovers, so the tiny channel overflows with releases.
        st.tuples(st.just("subscribe"), st.integers(0, 2), symbols),
        st.tuples(st.just("subscribe"), st.integers(0, 2), symbols),
        st.tuples(st.just("await_subscribe"), st.integers(0, 2), symbols),
        st.tuples(st.just("unsubscribe"), st.integers(0, 2), symbols),
        st.tuples(st.just("unsubscribe"), st.integers(0, 2), symbols),
        st.tuples(st.just("close"), st.integers(0, 2)),
        st.tuples(st.just("revoke"), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("take"), st.integers(0, 2)),
        st.tuples(st.just("stop")),
        st.tuples(st.just("stop")),
        st.tuples(st.just("resume")),
        st.tuples(st.just("pull"), st.integers(1, 3)),
        st.tuples(
            st.just("pull_then_subscribe"),
            st.integers(1, 3),
            st.integers(0, 2),
            symbols,
            st.booleans(),  # the provider drains again in the same round
        ),
        st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.5, 2.0, 11.0])),
    ),
    min_size=10,
    max_size=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    program=operations,
    buffer=st.integers(1, 3),
    linger=st.sampled_from([0.0, 1.0]),
)
def test_the_provider_holds_what_the_hub_holds_for_any_program(
    program: list[tuple[Any, ...]], buffer: int, linger: float
) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(_run_program, program, buffer, linger, clock=clock)


async def _run_program(program: list[tuple[Any, ...]], buffer: int, linger: float) -> None:
    provider = ScriptedProvider(Market.KR, quota=QUOTA)
    hub = Hub([provider], linger=linger, command_buffer=buffer, clock=WallClock(0))
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        subs = [hub.subscriber(max_symbols=MAX_SYMBOLS) for _ in range(3)]
        busy = [False] * 3  # one request at a time per subscriber, as a client session

        async def subscribe(i: int, wanted: list[str]) -> None:
            busy[i] = True
            try:
                await hub.subscribe(subs[i], wanted)
            finally:
                busy[i] = False

        backlog = 0
        for i, held in enumerate([SYMBOLS[0:2], SYMBOLS[1:3], SYMBOLS[2:3]]):
            await subscribe(i, held)  # the quota is full: every release counts
        for op in program:
            if op[0] == "subscribe" and not busy[op[1]]:
                nursery.start_soon(subscribe, op[1], op[2])
            elif op[0] == "await_subscribe" and not busy[op[1]]:
                await subscribe(op[1], op[2])  # its commands go before any other task runs
            elif op[0] == "unsubscribe":
                hub.unsubscribe(subs[op[1]], op[2])
            elif op[0] == "close" and not busy[op[1]]:
                subs[op[1]].close()
                subs[op[1]] = hub.subscriber(max_symbols=MAX_SYMBOLS)
            elif op[0] == "revoke" and op[1] in provider.registered:
                provider.revoke(op[1])
            elif op[0] == "take":
                subs[op[1]].take_revoked()
            elif op[0] == "stop":
                provider.stop_draining()
            elif op[0] == "resume":
                provider.resume_draining()
            elif op[0] == "pull":
                _pull(provider, op[1])
            elif op[0] == "pull_then_subscribe":
                # A request in the same scheduling round as the provider's read: its
                # commands are sent before the retry task can use the room.
                _pull(provider, op[1])
                idle = next((i for i in (op[2], 0, 1, 2) if not busy[i]), None)
                if op[4]:
                    provider.resume_draining()
                if idle is not None:
                    await subscribe(idle, op[3])
            elif op[0] == "sleep":
                await trio.sleep(op[1])
            await trio.testing.wait_all_tasks_blocked()
            _check_bounds(hub, subs)
            backlog += hub.statistics().releases_owed >= 2  # one waits besides the one sent
        target(backlog, label="steps with releases waiting")  # towards overflowing channels

        provider.resume_draining()
        await trio.sleep(DEFAULT_ACK_TIMEOUT + linger + 1)  # every request answered or not
        await trio.testing.wait_all_tasks_blocked()
        assert not any(busy)
        stats = hub.statistics()
        assert stats.releases_owed == 0, "a dropped release was never delivered"
        assert provider.registered == set(hub.held()), "the provider and the hub disagree"
        assert provider.peak <= QUOTA, "the provider was asked to hold more than its quota"
        for sub in subs:
            assert sub.symbols <= set(hub.held())
            sub.close()
        await trio.sleep(linger + 1)
        await trio.testing.wait_all_tasks_blocked()
        assert hub.held() == []
        assert provider.registered == set(), "a registration outlived every subscriber"
        nursery.cancel_scope.cancel()


def _pull(provider: ScriptedProvider, count: int) -> None:
    """Take up to ``count`` commands off the channel (fewer when it has fewer)."""
    for _ in range(count):
        try:
            provider.pull(1)
        except trio.WouldBlock:
            return


def _check_bounds(hub: Hub, subs: list[Subscriber]) -> None:
    stats = hub.statistics()
    (usage,) = stats.upstream
    assert usage.used + stats.releases_owed <= QUOTA, "more held upstream than the quota"
    for sub in subs:
        assert sub._slots_used() <= MAX_SYMBOLS, "revocations grew past max_symbols"
