"""Hypothesis: no subscriber ever receives an older state of a symbol after a newer one.

Random programs of publishes, subscribes, unsubscribes and partial reads run against the
hub and against a model that only remembers the last ``seq`` each subscriber saw per
symbol. After a final drain, a conflating subscriber must hold exactly the latest state of
every symbol it holds, and a lossless one must have seen every update since it subscribed.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from trio_stock.clock import WallClock
from trio_stock.hub import Hub, Policy, Subscriber
from trio_stock.model import Market

from .scripted import ScriptedProvider

SYMBOLS = ["000001", "000002", "000003"]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("subscribe"), st.integers(0, 1), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("unsubscribe"), st.integers(0, 1), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("read"), st.integers(0, 1)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=operations, policy=st.sampled_from([Policy.CONFLATE, Policy.LOSSLESS]))
def test_per_symbol_order_is_never_reversed(program: list[tuple[Any, ...]], policy: Policy) -> None:
    trio.run(_run_program, program, policy, clock=trio.testing.MockClock(autojump_threshold=0))


async def _run_program(program: list[tuple[Any, ...]], policy: Policy) -> None:
    provider = ScriptedProvider(Market.KR, quota=10)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([provider], clock=WallClock(0)).run)
        subs = [hub.subscriber(policy), hub.subscriber(policy)]
        last_seen: list[dict[str, int]] = [{}, {}]
        fresh: list[set[str]] = [set(), set()]  # re-subscribed: the snapshot may repeat a state
        price = 0
        for op in program:
            if op[0] == "publish":
                price += 1
                provider.trade(op[1], price)
            elif op[0] == "subscribe":
                await hub.subscribe(subs[op[1]], [op[2]])
            elif op[0] == "unsubscribe":
                if hub.unsubscribe(subs[op[1]], [op[2]]):
                    fresh[op[1]].add(op[2])
            else:
                await _read(subs[op[1]], last_seen[op[1]], fresh[op[1]])
        for sub, seen, renewed in zip(subs, last_seen, fresh, strict=True):
            await _read(sub, seen, renewed)
            for symbol in sub.symbols:
                latest = hub.latest(symbol)
                if latest is not None:
                    assert seen[symbol] == latest.seq, "the final state must reach the subscriber"
            sub.close()
        nursery.cancel_scope.cancel()


async def _read(sub: Subscriber, seen: dict[str, int], renewed: set[str]) -> None:
    batch = []
    with trio.move_on_after(1):  # virtual time: queued items may all be stale and skipped
        batch = await sub.receive_batch()
    for state in batch:
        previous = seen.get(state.symbol, 0)
        if state.symbol in renewed:  # a new subscription starts with the current state
            assert state.seq >= previous, "an older state after a newer one"
            renewed.discard(state.symbol)
        else:
            assert state.seq > previous, "an older (or repeated) state after a newer one"
        seen[state.symbol] = state.seq
