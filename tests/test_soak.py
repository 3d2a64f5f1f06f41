"""Soak: thousands of connect → subscribe → disconnect cycles against one gateway (issue 11).

Every cycle opens a WebSocket, waits for the greeting, subscribes and waits for the
answer, then leaves: half the cycles with a TCP reset (``SO_LINGER`` 0), half with a
clean close handshake; half on each protocol. ``SOAK_WORKERS`` run at a time. Afterwards
the gateway's open file descriptors must be back to what they were before the first
client, its RSS within ``RSS_GROWTH_BOUND`` of the baseline after a warm-up, no WebSocket
client counted, and the hub's subscribers back to the baseline.

CI runs 2,000 cycles; ``TRIO_STOCK_SOAK_CYCLES=10000 .venv/bin/python -m pytest
tests/test_soak.py -s`` runs a longer soak by hand and prints the numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from .attack import (
    GatewayProcess,
    MiB,
    assert_healthy,
    generous_admission,
    open_websocket,
    poll_fds,
    read_metrics,
    running_gateway,
    wait_for_metric,
)

SOAK_CYCLES = int(os.environ.get("TRIO_STOCK_SOAK_CYCLES", "2000"))
SOAK_WORKERS = 20  # cycles in flight at once
WARM_UP_CYCLES = 100  # before the RSS baseline: the first clients allocate for good
# A descriptor the gateway opens once and keeps (none does yet) is not a leak; a leak of
# one per cycle, even one per hundred cycles, shows as tens.
FD_SLACK = 2
# The gateway holds nothing per client once it left (+3 MiB after 10,000 cycles). Python
# keeps freed memory for reuse, and 20 clients in flight cost a few MiB; a leak of 2 KiB
# per cycle would pass this bound within 10,000 cycles (10 KiB per cycle within 2,000).
RSS_GROWTH_BOUND = 20 * MiB
CYCLE_TIMEOUT = 30.0  # seconds for one cycle, a hang guard (speed is the benchmark's job)

# (path, greeting, subscribe request, answer type) for each protocol
PROTOCOLS = [
    (
        "/ws/stock/",
        "connection_established",
        {"action": "subscribe", "codes": ["005930", "000660"]},
        "subscription_result",
    ),
    (
        "/api/v2/realtime/ws/prices",
        "connected",
        {"action": "subscribe", "symbols": ["AAPL", "005930"]},
        "subscription",
    ),
]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    args = ("--sim-ticks-per-second", "50", *generous_admission())
    with running_gateway(*args, log_dir=tmp_path, name="soak") as process:
        yield process


def ends_with_reset(index: int) -> bool:
    """Cycles 0, 1 reset, 2, 3 close cleanly, ...: each protocol gets both endings."""
    return (index // 2) % 2 == 0


async def cycle(port: int, index: int) -> bool:
    """One client's life; True if it ended with a reset."""
    path, greeting, subscribe, answer = PROTOCOLS[index % 2]
    resets = ends_with_reset(index)
    with trio.fail_after(CYCLE_TIMEOUT):
        ws = await open_websocket(port, path)
        try:
            await ws.expect(greeting)
            await ws.send_json(subscribe)
            reply = await ws.expect(answer)
        except BaseException:
            await ws.aclose()
            raise
        if resets:
            await ws.reset()
        else:
            ending = await ws.close_cleanly()
            assert ending.close_code == 1000, f"cycle {index}: {ending}"
    assert reply.get("success", True) is True, f"cycle {index}: {reply}"
    assert reply.get("subscribed_total", reply.get("total_subscribed")) == 2, reply
    return resets


async def run_cycles(port: int, count: int) -> int:
    """``count`` cycles, ``SOAK_WORKERS`` at a time; the number that ended with a reset."""
    indices = iter(range(count))
    resets = 0

    async def worker() -> None:
        nonlocal resets
        for index in indices:
            ended_with_reset = await cycle(port, index)
            resets += ended_with_reset

    async with trio.open_nursery() as nursery:
        for _ in range(SOAK_WORKERS):
            nursery.start_soon(worker)
    return resets


async def test_soak_connect_subscribe_disconnect(gateway: GatewayProcess) -> None:
    fds_before = gateway.open_fds()  # no client has connected yet
    await run_cycles(gateway.port, WARM_UP_CYCLES)
    await wait_for_metric(gateway, "trio_stock_websocket_clients", 0)
    subscribers_before = (await read_metrics(gateway))["trio_stock_subscribers"]
    gateway.baseline_rss = rss_before = gateway.rss()

    started = trio.current_time()
    resets = await run_cycles(gateway.port, SOAK_CYCLES)
    seconds = trio.current_time() - started

    fds_after = await poll_fds(gateway, lambda fds: fds <= fds_before + FD_SLACK)
    rss_after = gateway.rss()
    rate = SOAK_CYCLES / max(seconds, 1e-3)
    print(
        f"\nsoak: {SOAK_CYCLES} cycles ({resets} resets, {SOAK_WORKERS} at a time) in "
        f"{seconds:.1f} s ({rate:.0f}/s); open fds {fds_before} before, "
        f"{fds_after} after; RSS {rss_before / MiB:.1f} MiB after warm-up, "
        f"{rss_after / MiB:.1f} MiB after (+{(rss_after - rss_before) / MiB:.1f} MiB)"
    )
    assert resets == sum(map(ends_with_reset, range(SOAK_CYCLES)))  # every cycle ran
    assert fds_after <= fds_before + FD_SLACK, (
        f"open fds {fds_before} -> {fds_after} after {SOAK_CYCLES} cycles\n{gateway.report()}"
    )
    await wait_for_metric(gateway, "trio_stock_websocket_clients", 0)
    await wait_for_metric(gateway, "trio_stock_subscribers", subscribers_before)
    await assert_healthy(gateway, rss_bound=RSS_GROWTH_BOUND, what=f"{SOAK_CYCLES} cycles")
