"""Micro-benchmark: what one ``Hub.publish`` costs with N subscribers on its symbol.

    python bench/publish_cost.py [--subscribers 1000] [--ticks 2000] [--policy conflate]

Subscribers are offered every update (nobody reads during the timed loop, so conflating
subscribers queue up to their backlog and then collapse it, and lossless ones queue up to
their bound). Reports publishes/s and
updates/s (publishes × subscribers), best of 5 runs of wall-clock time.
"""

from __future__ import annotations

import argparse
import time

import trio

from trio_stock import Hub, Market, Policy, SimulatedMarket, Tick, TickKind


async def measure(subscribers: int, ticks: int, policy: Policy) -> float:
    sim = SimulatedMarket(Market.US, quota=10, ticks_per_second=0.001, always_open=True)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([sim]).run)
        subs = [hub.subscriber(policy, capacity=ticks + 1) for _ in range(subscribers)]
        for sub in subs:
            assert (await hub.subscribe(sub, ["AAPL"])).ok
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for i in range(ticks):
                hub.publish(Tick("AAPL", TickKind.TRADE, i, i, price=100.0 + i * 0.01, size=1.0))
            best = min(best, time.perf_counter() - start)
            for sub in subs:  # drain between runs so lossless bounds are not hit
                await sub.receive_batch()
        nursery.cancel_scope.cancel()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--policy", choices=[p.value for p in Policy], default="conflate")
    args = parser.parse_args()
    seconds = trio.run(measure, args.subscribers, args.ticks, Policy(args.policy))
    per_publish = seconds / args.ticks
    print(
        f"{args.subscribers} {args.policy} subscribers: {1 / per_publish:,.0f} publishes/s, "
        f"{args.subscribers / per_publish:,.0f} updates/s, "
        f"{per_publish / args.subscribers * 1e9:.0f} ns per update"
    )


if __name__ == "__main__":
    main()
