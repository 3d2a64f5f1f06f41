"""End to end: the gateway with FMP_* pointed at the fake FMP, serving seed 003 clients.

One test runs the gateway in-process (``nursery.start(trio_stock.serve, config)``) on
MockClock; one runs ``python -m trio_stock --port 0`` as a real process. Both connect a
real WebSocket client to ``/api/v2/realtime/ws/prices`` and follow an FMP tick from the
fake's socket to the client's ``price_update``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

import trio_stock
from trio_stock.config import Config, Secret

from .clients import real_websocket
from .fakes.fake_fmp import FakeFmp

KEY = "fmp-e2e-key-c0ffee42"
PRICES = "/api/v2/realtime/ws/prices"
READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")  # not a logged request URL


@pytest.fixture
async def fake() -> AsyncIterator[FakeFmp]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(FakeFmp(api_key=KEY).serve)
        nursery.cancel_scope.cancel()


async def receive(ws: trio_websocket.WebSocketConnection, kind: str) -> dict[str, Any]:
    """The next message of type ``kind`` (others in between are skipped)."""
    with trio.fail_after(20):
        while True:
            message = orjson.loads(await ws.get_message())
            assert isinstance(message, dict)
            if message.get("type") == kind:
                return message


async def follow_a_tick(port: int, fake: FakeFmp) -> None:
    """Subscribe a seed 003 client to AAPL and check snapshot, trade and quote updates."""
    async with real_websocket(port, PRICES) as ws:
        assert (await receive(ws, "connected"))["message"]
        await ws.send_message(orjson.dumps({"action": "subscribe", "symbols": ["aapl"]}).decode())
        subscribed = await receive(ws, "subscription")
        assert subscribed["symbols"] == ["AAPL"] and subscribed["subscribed_total"] == 1
        assert "aapl" in fake.subscribed()  # lower-case upstream (fmp.md §3)

        snapshot = await receive(ws, "price_update")  # from /stable/quote, before any tick
        book = fake.book("aapl")
        assert (snapshot["symbol"], snapshot["data_type"]) == ("AAPL", "T")
        assert snapshot["last_price"] == book.price
        assert snapshot["previous_close"] == book.prev_close_cents / 100

        t_trade = 1_763_700_000_123_456_789  # ns, as the stocks host sends (fmp.md §4)
        assert await fake.trade("AAPL", 201.5, 300, t=t_trade) == 1
        trade = await receive(ws, "price_update")
        assert (trade["data_type"], trade["last_price"], trade["last_size"]) == ("T", 201.5, 300)
        assert trade["timestamp"] == 1_763_700_000_123  # epoch milliseconds

        assert await fake.quote("aapl", 201.4, 201.6, 500, 700, t=t_trade + 10**9) == 1
        quote = await receive(ws, "price_update")
        assert quote["data_type"] == "Q" and quote["timestamp"] == 1_763_700_001_123
        assert (quote["bid_price"], quote["bid_size"]) == (201.4, 500)
        assert (quote["ask_price"], quote["ask_size"]) == (201.6, 700)
        assert (quote["last_price"], quote["last_size"]) == (201.5, 300)  # merged
        assert quote["previous_close"] == snapshot["previous_close"]


async def test_in_process_gateway_serves_fmp_ticks_to_seed_003_clients(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    config = Config(
        port=0,
        fmp_api_key=Secret(KEY),
        fmp_ws_url=fake.ws_url,
        fmp_rest_url=fake.rest_url,
    )
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(trio_stock.serve, config)
        assert gateway.port
        await follow_a_tick(gateway.port, fake)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{gateway.port}/api/v2/realtime/health")
        body = health.json()
        (fmp,) = [p for p in body["providers"] if p["kind"] == "fmp"]
        assert (fmp["state"], fmp["live"], fmp["market"]) == ("connected", True, "US")
        assert fmp["messages"] >= 3 and fmp["connects"] == 1
        assert KEY not in health.text
        nursery.cancel_scope.cancel()


async def test_a_huge_t_never_reaches_the_clients_encoders(
    autojump_clock: trio.testing.MockClock, fake: FakeFmp
) -> None:
    """``"t": 1e29`` became a provider time of 10**29 ns: orjson could not encode its
    millisecond ``timestamp`` (over 64 bits) in any seed 003 client's writer, nor
    ``datetime`` its seed 000 ``time``. Now it gives way to the receive time."""
    config = Config(
        port=0,
        fmp_api_key=Secret(KEY),
        fmp_ws_url=fake.ws_url,
        fmp_rest_url=fake.rest_url,
    )
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(trio_stock.serve, config)
        assert gateway.port
        async with (
            real_websocket(gateway.port, PRICES) as first,
            real_websocket(gateway.port, PRICES) as second,
        ):
            for ws in (first, second):
                await receive(ws, "connected")
                subscribe = {"action": "subscribe", "symbols": ["AAPL"]}
                await ws.send_message(orjson.dumps(subscribe).decode())
                await receive(ws, "subscription")
                await receive(ws, "price_update")  # the snapshot
            huge = [
                b'{"s":"aapl","type":"T","lp":150.25,"ls":10,"t":1e29}',
                b'{"s":"aapl","type":"T","lp":150.5,"ls":20,"t":100000000000000000000000000}',
                b'{"s":"aapl","type":["T"],"lp":1.0}',  # and a type that is a list
            ]
            for text in huge:
                assert await fake.send_raw(text.decode()) == 1
            t_good = 1_763_700_000_123_456_789
            assert await fake.trade("aapl", 151.0, 30, t=t_good) == 1
            for ws in (first, second):
                updates = [await receive(ws, "price_update") for _ in range(3)]
                assert [(u["last_price"], u["last_size"]) for u in updates] == [
                    (150.25, 10),
                    (150.5, 20),
                    (151.0, 30),
                ]
                # The receive time stands in: plausible epoch milliseconds.
                assert all(1.0e12 < u["timestamp"] < 4.2e12 for u in updates)
                assert updates[-1]["timestamp"] == t_good // 1_000_000
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{gateway.port}/api/v2/realtime/health")
        (fmp,) = [p for p in health.json()["providers"] if p["kind"] == "fmp"]
        assert (fmp["malformed"], fmp["connects"], fmp["state"]) == (1, 1, "connected")
        nursery.cancel_scope.cancel()


async def test_python_m_trio_stock_with_fmp_pointed_at_the_fake(
    fake: FakeFmp, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMP_", "KIS_", "TRIO_STOCK_"))}
    env |= {
        "FMP_API_KEY": KEY,
        "FMP_WS_URL": fake.ws_url,
        "FMP_REST_URL": fake.rest_url,
        "TRIO_STOCK_LOG_LEVEL": "DEBUG",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "trio_stock", "--port", "0"]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            _run_process,
            command,
            env,
            tmp_path,  # tmp_path: no stray .env is read
        )
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):  # a guard, not a wait: the line ends it
            while not (match := READY.search(output.decode(errors="replace"))):
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"exited before ready: {output!r}"
                output += chunk
        await follow_a_tick(int(match.group(1)), fake)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            while chunk := await process.stdout.receive_some(4096):
                output += chunk
            assert await process.wait() == 0
    text = output.decode(errors="replace")
    assert "fmp" in text and KEY not in text  # DEBUG logs included, stderr merged


async def _run_process(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    *,
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> None:
    await trio.run_process(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
        task_status=task_status,
    )
