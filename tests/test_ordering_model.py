"""Hypothesis: the subscriber guarantees hold for any program of hub operations.

Random programs of publishes, pauses (virtual time), subscribes, unsubscribes and partial
reads run against the hub and against a model that remembers, per subscriber and symbol,
the updates owed in the current subscription (the snapshot, then every publish) and the
last ``seq`` delivered. Checked after every step (and after every tick of a burst) and at
the end:

- per symbol, never an older state after a newer one, nor the same state twice (a new
  subscription may start with the state the previous one ended on);
- only owed updates arrive, in order; one skipped was conflated: a lossless subscriber
  skips nothing, a conflating one skips at most what its ``conflated`` counter says;
- a conflating subscriber never holds more than ``max_backlog`` plus its symbol count;
- after a final drain, every subscriber holds the latest state of each symbol it holds.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from trio_stock.clock import WallClock
from trio_stock.hub import DEFAULT_MAX_BACKLOG, Hub, Policy, Subscriber
from trio_stock.model import Market, SymbolState

from .scripted import ScriptedProvider

SYMBOLS = ["000001", "000002", "000003"]
publish = st.tuples(st.just("publish"), st.sampled_from(SYMBOLS))
# Several ticks in a row with nothing read: without them a program of hypothesis's typical
# length (a handful of operations) rarely queues more than a few updates, and a broken
# backlog bound would go unnoticed.
burst = st.tuples(st.just("burst"), st.lists(st.sampled_from(SYMBOLS), min_size=2, max_size=12))
operations = st.lists(
    st.one_of(
        publish,
        publish,  # three times as likely as the others: backlogs build up
        publish,
        burst,
        st.tuples(st.just("pause"), st.sampled_from([0.001, 0.02, 0.06])),
        st.tuples(st.just("subscribe"), st.integers(0, 1), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("unsubscribe"), st.integers(0, 1), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("read"), st.integers(0, 1)),
        st.tuples(st.just("read_one"), st.integers(0, 1)),
    ),
    min_size=5,
    max_size=80,
)
# (policy, Hub.subscriber keyword arguments): the default, strict conflation, and small
# bounds that make both collapse rules trigger often.
setups = st.sampled_from(
    [
        (Policy.CONFLATE, {}),
        (Policy.CONFLATE, {"max_backlog": 0}),
        (Policy.CONFLATE, {"max_backlog": 1, "max_delay": math.inf}),
        (Policy.CONFLATE, {"max_backlog": 3, "max_delay": 0.01}),
        (Policy.CONFLATE, {"max_backlog": 1_000, "max_delay": 0.0}),
        (Policy.LOSSLESS, {}),
    ]
)


@attrs.define
class Model:
    """What one subscriber is owed and has seen."""

    owed: dict[str, list[int]] = attrs.Factory(dict)  # symbol → seqs not yet delivered
    seen: dict[str, int] = attrs.Factory(dict)  # symbol → last seq delivered
    renewed: set[str] = attrs.Factory(set)  # resubscribed: the snapshot may repeat a state
    skipped: int = 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=operations, setup=setups)
def test_subscriber_guarantees_hold_for_any_program(
    program: list[tuple[Any, ...]], setup: tuple[Policy, dict[str, Any]]
) -> None:
    policy, options = setup
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(_run_program, program, policy, options, clock=clock)


async def _run_program(
    program: list[tuple[Any, ...]], policy: Policy, options: dict[str, Any]
) -> None:
    provider = ScriptedProvider(Market.KR, quota=10)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([provider], clock=WallClock(0)).run)
        subs = [hub.subscriber(policy, **options), hub.subscriber(policy, **options)]
        models = [Model(), Model()]
        for sub, model in zip(subs, models, strict=True):  # both start holding everything
            for symbol in SYMBOLS:
                await _subscribe(hub, sub, model, symbol)
        price = 0

        def publish(symbol: str) -> None:
            nonlocal price
            price += 1
            provider.trade(symbol, price)
            latest = hub.latest(symbol)  # None (or stale) when nobody holds it
            for sub, model in zip(subs, models, strict=True):
                if sub.holds(symbol):
                    assert latest is not None
                    model.owed[symbol].append(latest.seq)

        for op in program:
            if op[0] == "publish":
                publish(op[1])
            elif op[0] == "burst":
                for symbol in op[1]:
                    publish(symbol)
                    for sub, model in zip(subs, models, strict=True):
                        _check_bounds(sub, model, options)  # after every offer
            elif op[0] == "pause":
                await trio.sleep(op[1])
            elif op[0] == "subscribe":
                await _subscribe(hub, subs[op[1]], models[op[1]], op[2])
            elif op[0] == "unsubscribe":
                if hub.unsubscribe(subs[op[1]], [op[2]]):
                    del models[op[1]].owed[op[2]]
                    models[op[1]].renewed.add(op[2])
            else:
                await _read(subs[op[1]], models[op[1]], whole_batch=op[0] == "read")
            for sub, model in zip(subs, models, strict=True):
                _check_bounds(sub, model, options)
        for sub, model in zip(subs, models, strict=True):
            await _read(sub, model, whole_batch=True)
            for symbol in sub.symbols:
                latest = hub.latest(symbol)
                if latest is not None:
                    assert model.seen[symbol] == latest.seq, "the final state must arrive"
                assert model.owed[symbol] == [], "a drained subscriber owes nothing"
            sub.close()
        nursery.cancel_scope.cancel()


async def _subscribe(hub: Hub, sub: Subscriber, model: Model, symbol: str) -> None:
    was_held = sub.holds(symbol)
    assert (await hub.subscribe(sub, [symbol])).ok
    if not was_held:
        snapshot = hub.latest(symbol)
        model.owed[symbol] = [] if snapshot is None else [snapshot.seq]


async def _read(sub: Subscriber, model: Model, *, whole_batch: bool) -> None:
    batch: list[SymbolState] = []
    with trio.move_on_after(1):  # virtual time: nothing may be pending
        batch = await sub.receive_batch() if whole_batch else [await sub.receive()]
    for state in batch:
        _check_delivery(model, state)


def _check_delivery(model: Model, state: SymbolState) -> None:
    previous = model.seen.get(state.symbol, 0)
    if state.symbol in model.renewed:  # a new subscription starts with the current state
        assert state.seq >= previous, "an older state after a newer one"
        model.renewed.discard(state.symbol)
    else:
        assert state.seq > previous, "an older (or repeated) state after a newer one"
    model.seen[state.symbol] = state.seq
    owed = model.owed[state.symbol]
    assert state.seq in owed, "an update that was not owed"
    position = owed.index(state.seq)
    model.skipped += position
    del owed[: position + 1]


def _check_bounds(sub: Subscriber, model: Model, options: dict[str, Any]) -> None:
    stats = sub.statistics()
    owed = sum(map(len, model.owed.values()))
    assert stats.pending <= owed, "more pending than was offered"
    # Owed but not pending, or skipped on delivery: conflated (and counted) updates.
    assert owed - stats.pending + model.skipped <= stats.conflated
    if stats.policy is Policy.LOSSLESS:
        assert (stats.pending, stats.conflated) == (owed, 0), "a lossless subscriber lost one"
    else:
        max_backlog = options.get("max_backlog", DEFAULT_MAX_BACKLOG)
        assert stats.pending <= max_backlog + stats.symbols, "memory grew with the tick rate"
