"""Micro-benchmark: the CPU a cluster node spends on its Redis traffic, through coredis and bare.

    .bench-venv/bin/python bench/redis_cost.py [--rate 2000] [--batch 2] [--seconds 6]

A fresh redis-server runs on CPU 1; this process, on CPU 0, measures its own CPU time
(``time.process_time``: user + system) per unit of work, median of three windows:

- **read**, what an edge node does per state: a publisher process (CPU 1) writes ``--rate``
  states/s over 100 symbols' channels with :func:`~trio_stock.cluster.lease.fenced_publish`,
  ``--batch`` states per script, as a holder does; this process reads and decodes them
  (:func:`~trio_stock.cluster.wire.decode_state`). Once through
  :func:`~trio_stock.cluster.redis.open_pubsub` and ``get_message``, as
  :class:`~trio_stock.cluster.edge.ClusterProvider` reads; once bare: a Trio socket in RESP3
  with coredis's own parser, and nothing between the socket and the loop.
- **write**, what the holder does per batch: ``fenced_publish`` of ``--batch`` states back to
  back, and the same ``EVALSHA`` sent and its reply read on a bare Trio socket.

Both bare ways do only what a lean client would have to; the difference is what coredis's
machinery (its reader, writer and pub/sub tasks, the memory streams between them, a cancel
scope per read, the command and retry layers) costs per message and per command. Nothing
else should run meanwhile (``uptime``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coredis.parser import NotEnoughData, Parser  # noqa: E402

from bench.stacks import CLIENT_CPU, SERVER_CPU, pinned, start_redis  # noqa: E402
from trio_stock.cluster.keys import Keys  # noqa: E402
from trio_stock.cluster.lease import _FENCED_PUBLISH, Fence, Lease, fenced_publish  # noqa: E402
from trio_stock.cluster.redis import RedisClient, open_pubsub, open_redis  # noqa: E402
from trio_stock.cluster.wire import decode_state, encode_state  # noqa: E402
from trio_stock.model import Market, Tick, TickKind, merge  # noqa: E402

KEYS = Keys(prefix="cost")
SYMBOLS = [f"X{i:03d}" for i in range(100)]
CHANNELS = [KEYS.ticks(s) for s in SYMBOLS]
WINDOWS = 3


def state_bytes(n: int, fence: int) -> tuple[str, bytes]:
    """The ``n``-th state (a trade), as the holder writes it."""
    symbol = SYMBOLS[n % len(SYMBOLS)]
    now = time.time_ns()
    tick = Tick(symbol, TickKind.TRADE, now, now, price=100 + n % 50 / 8, size=10.0, volume=n)
    state = merge(None, tick, market=Market.US, provider="fmp", epoch=1)
    return symbol, encode_state(state, fence, now)


async def holding(redis: RedisClient) -> Fence:
    """A lease of our own at once: a known fence counter skips the first use's quarantine,
    and a lease left by an earlier measurement is dropped."""
    await redis.set(KEYS.fence("cost"), "1")
    await redis.delete([KEYS.lease("cost")])
    return await Lease(redis, "cost", "bench", ttl=3600.0, keys=KEYS).acquire()


def batch(n: int, size: int, fence: Fence) -> list[tuple[str, str, bytes]]:
    items = []
    for i in range(n, n + size):
        symbol, data = state_bytes(i, fence.token)
        items.append((KEYS.state(symbol), KEYS.ticks(symbol), data))
    return items


async def publish(url: str, rate: float, size: int, seconds: float) -> None:
    """The publisher process: ``rate`` states/s in fenced scripts of ``size`` states."""
    async with open_redis(url) as redis:
        fence = await holding(redis)
        start, n = trio.current_time(), 0
        while trio.current_time() < start + seconds:
            await fenced_publish(redis, fence, batch(n, size, fence), keys=KEYS)
            n += size
            await trio.sleep_until(start + n / rate)


# ---- reading -------------------------------------------------------------------------------


async def read_coredis(url: str, count: list[int]) -> None:
    async with open_redis(url) as redis, open_pubsub(redis, CHANNELS) as pubsub:
        while True:
            message = await pubsub.get_message()
            if message is not None and message["type"] == "message":
                decode_state(message["data"])
                count[0] += 1


async def read_bare(url: str, count: list[int]) -> None:
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    sock = trio.socket.socket()
    await sock.connect((host, int(port)))
    await sock.send(command(b"HELLO", b"3") + command(b"SUBSCRIBE", *CHANNELS))
    parser = Parser()
    while True:
        data = await sock.recv(65536)
        if not data:
            return
        parser.feed(data)
        while not isinstance(reply := parser.parse(decode=False, encoding="utf-8"), NotEnoughData):
            push = reply[1]
            if isinstance(push, list) and push[0] == b"message":
                decode_state(push[2])
                count[0] += 1


async def measure_read(
    url: str,
    reader: Callable[[str, list[int]], Awaitable[None]],
    rate: float,
    size: int,
    seconds: float,
) -> float:
    """µs of this process's CPU per state read and decoded."""
    count = [0]
    per_state = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, url, count)
        await trio.sleep(0.5)  # subscribed
        argv = [sys.executable, __file__, "--publish", url, "--rate", str(rate)]
        argv += ["--batch", str(size), "--seconds", str(seconds * WINDOWS + 3)]
        publisher = await trio.lowlevel.open_process(pinned(CLIENT_CPU, argv))
        await trio.sleep(1.5)  # the publisher's start-up, its lease
        for _ in range(WINDOWS):
            n, cpu = count[0], time.process_time()
            await trio.sleep(seconds)
            per_state.append((time.process_time() - cpu) / max(1, count[0] - n) * 1e6)
        await publisher.wait()
        nursery.cancel_scope.cancel()
    return statistics.median(per_state)


# ---- writing -------------------------------------------------------------------------------


async def measure_write(url: str, size: int, calls: int) -> tuple[float, float]:
    """µs of this process's CPU per fenced script of ``size`` states: coredis, then bare."""
    async with open_redis(url) as redis:
        fence = await holding(redis)
        items = batch(0, size, fence)
        sha = await redis.script_load(_FENCED_PUBLISH.script)
        args: list[Any] = [fence.token]
        for _key, channel, data in items:
            args += [channel, data]
        keys = [KEYS.lease(fence.name), *(key for key, _, _ in items)]
        request = command(b"EVALSHA", sha, len(keys), *keys, *args)
        host, port = url.removeprefix("redis://").split("/")[0].split(":")
        sock = trio.socket.socket()
        await sock.connect((host, int(port)))

        async def through_coredis() -> None:
            assert await fenced_publish(redis, fence, items, keys=KEYS)

        async def bare() -> None:
            await sock.send(request)
            assert await sock.recv(64) == b":1\r\n"

        results = []
        for way in (through_coredis, bare):
            per_call = []
            for _ in range(WINDOWS):
                cpu = time.process_time()
                for _ in range(calls):
                    await way()
                per_call.append((time.process_time() - cpu) / calls * 1e6)
            results.append(statistics.median(per_call))
        sock.close()
        return results[0], results[1]


def command(*args: bytes | str | int) -> bytes:
    """A command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=2000, help="states/s read (W1: 2000)")
    parser.add_argument("--batch", type=int, default=2, help="states per fenced script")
    parser.add_argument("--seconds", type=float, default=6, help="each of the three windows")
    parser.add_argument("--calls", type=int, default=3000, help="write: calls per window")
    parser.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        trio.run(publish, args.publish, args.rate, args.batch, args.seconds)
        return
    if os.environ.get("REDIS_COST_PINNED") != "1":  # this process on the server core
        env = {**os.environ, "REDIS_COST_PINNED": "1"}
        os.execvpe("taskset", pinned(SERVER_CPU, [sys.executable, *sys.argv]), env)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    url = f"redis://127.0.0.1:{start_redis(procs, Path(tempfile.mkdtemp()), CLIENT_CPU)}/0"
    try:
        print(f"read: {args.rate:,.0f} states/s, {len(SYMBOLS)} channels, {args.batch} per script")
        for name, reader in (("coredis PubSub", read_coredis), ("bare socket", read_bare)):
            cost = trio.run(measure_read, url, reader, args.rate, args.batch, args.seconds)
            print(f"  {name:15s} {cost:6.1f} µs of CPU per state (read + decode_state)")
        coredis_call, bare_call = trio.run(measure_write, url, args.batch, args.calls)
        print(f"write: fenced_publish of {args.batch} states, back to back")
        print(f"  {'coredis':15s} {coredis_call:6.1f} µs of CPU per call")
        print(f"  {'bare socket':15s} {bare_call:6.1f} µs of CPU per call")
    finally:
        procs["redis"].terminate()
        procs["redis"].wait()


if __name__ == "__main__":
    main()
