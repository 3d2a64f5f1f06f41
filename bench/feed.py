"""Run the upstream as its own process: tests/fakes/fake_fmp.py emitting a fixed tick rate.

The fake FMP server (the project's protocol-faithful fake) streams ticks round-robin over the
S symbols at a fixed aggregate rate with :meth:`FakeFmp.emit_ticks`; each frame carries its
emit time (wall-clock ns) in ``t``. Only sessions subscribed to a symbol receive its ticks.

Prints ``{"port": N, "rest_port": M, "api_key": K}`` once it listens, then one line every 0.25 s
``{"t": epoch_s, "frames_sent": n}`` (the fake's own count of frames written), so the harness
can tell the rate the feed really achieved from the rate it was asked for. Runs until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fakes.fake_fmp import FakeFmp

API_KEY = "bench-fmp-key"  # a fake key for a fake server on 127.0.0.1
REPORT_EVERY_S = 0.25


async def report(fake: FakeFmp) -> None:
    while True:
        print(json.dumps({"t": time.time(), "frames_sent": fake.frames_sent}), flush=True)
        await trio.sleep(REPORT_EVERY_S)


async def main(args: argparse.Namespace) -> None:
    symbols = [s for s in args.symbols.split(",") if s]
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeFmp(api_key=API_KEY, seed=args.seed).serve)
        print(
            json.dumps({"port": fake.ws_port, "rest_port": fake.rest_port, "api_key": API_KEY}),
            flush=True,
        )
        nursery.start_soon(report, fake)
        if args.rate > 0 and symbols:
            await fake.emit_ticks(symbols, args.rate, duration=args.duration, kinds=args.kinds)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, required=True, help="aggregate ticks per second (0: none)")
    p.add_argument("--symbols", required=True, help="comma-separated tickers")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of ticks at most")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kinds", default="T", help="tick kinds cycled per symbol (T: trades only)")
    trio.run(main, p.parse_args())
