"""A lease holder in its own process, for tests that SIGSTOP, SIGCONT or SIGKILL it.

``python tests/lease_holder.py URL NAME KEY --ttl S --retry S --prefix P`` holds lease NAME with
:func:`~trio_stock.cluster.lease.hold_while_leased`. While it holds it, its work writes
KEY every ``WRITE_EVERY`` seconds through the fenced publish. It prints one line per event,
flushed at once, for the test to read:

- ``holding TOKEN`` when its work starts;
- ``write applied TOKEN`` / ``write refused TOKEN`` for each write;
- ``stopped TOKEN`` when its work was cancelled (the lease lost, or not renewed in time);
- ``late write applied TOKEN`` / ``late write refused TOKEN``: one more write with the
  stopped work's fence, as a write still on its way when the process was paused would be.
"""

from __future__ import annotations

import argparse
import os

import trio

from trio_stock.cluster.keys import Keys
from trio_stock.cluster.lease import Fence, Lease, fenced_publish, hold_while_leased
from trio_stock.cluster.redis import open_redis

WRITE_EVERY = 0.1
CHANNEL = "lease-holder-writes"


def say(line: str) -> None:
    print(line, flush=True)


async def main(url: str, name: str, key: str, ttl: float, retry: float, prefix: str) -> None:
    keys = Keys(prefix=prefix)
    async with open_redis(url) as redis:

        async def write(fence: Fence, what: str) -> bool:
            value = f"{what} {os.getpid()} {fence.token}".encode()
            return await fenced_publish(redis, fence, [(key, CHANNEL, value)], keys=keys)

        async def work(fence: Fence) -> None:
            say(f"holding {fence.token}")
            try:
                while True:
                    applied = await write(fence, "write")
                    say(f"write {'applied' if applied else 'refused'} {fence.token}")
                    await trio.sleep(WRITE_EVERY)
            finally:
                say(f"stopped {fence.token}")
                with trio.move_on_after(2, shield=True):
                    applied = await write(fence, "late")
                    say(f"late write {'applied' if applied else 'refused'} {fence.token}")

        lease = Lease(redis, name, f"holder-{os.getpid()}", ttl=ttl, retry=retry, keys=keys)
        await hold_while_leased(lease, work)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("key")
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--retry", type=float, required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    trio.run(main, args.url, args.name, args.key, args.ttl, args.retry, args.prefix)
