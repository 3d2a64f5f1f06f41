"""KIS end to end: the fake KIS behind the gateway, seed 000 clients on ``/ws/stock/``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing
import trio_websocket

import trio_stock
from trio_stock.endpoints.stock import QUOTA_FAILED

from .clients import real_websocket
from .fakes.fake_kis import DEFAULT_APP_KEY, DEFAULT_APP_SECRET, FakeKis, trade_record

SAMSUNG, HYNIX, KAKAO = "005930", "000660", "035720"
READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")  # not the DEBUG log of a request


async def recv(ws: trio_websocket.WebSocketConnection, kind: str) -> dict[str, Any]:
    """The next message of type ``kind`` (pushed prices in between are skipped)."""
    while True:
        with trio.fail_after(30):
            message = json.loads(await ws.get_message())
        assert isinstance(message, dict)
        if message["type"] == kind:
            return message
        assert message["type"] == "stock_price", message


async def test_quota_error_and_prices_reach_a_seed_000_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeKis(cap=2).serve)
        gateway = await nursery.start(trio_stock.serve, fake.gateway_config())
        assert gateway.port is not None
        async with real_websocket(gateway.port, "/ws/stock/") as ws:
            await recv(ws, "connection_established")
            await ws.send_message(
                json.dumps({"action": "subscribe", "codes": [SAMSUNG, HYNIX, KAKAO]})
            )
            result = await recv(ws, "subscription_result")
            assert (result["success"], result["subscribed"], result["failed"]) == (
                False,
                [SAMSUNG, HYNIX],
                [KAKAO],
            )
            assert result["error"] == QUOTA_FAILED.format(limit=2)  # "2개 종목 구독 실패"
            assert fake.answers[-1]["body"]["msg_cd"] == "OPSP0008"

            assert await fake.send_trades([trade_record(SAMSUNG, 71_900, size=7, volume=99)]) == 1
            price = await recv(ws, "stock_price")
            assert (price["stock_code"], price["symbol"], price["time"]) == (
                SAMSUNG,
                "001",
                "093354",
            )
            assert (price["price"], price["volume"], price["accumulated_volume"]) == (71_900, 7, 99)

            await ws.send_message(json.dumps({"action": "list_subscriptions"}))
            listing = await recv(ws, "subscriptions_list")
            assert (listing["kis_active_subscriptions"], listing["kis_max_subscriptions"]) == (2, 2)

        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{gateway.port}/api/v2/realtime/health")
        assert response.status_code == 200
        kis = [p for p in response.json()["providers"] if p["kind"] == "kis"]
        assert len(kis) == 1
        assert (kis[0]["state"], kis[0]["registrations"], kis[0]["quota"]) == ("connected", 2, 2)
        for secret in (DEFAULT_APP_KEY, DEFAULT_APP_SECRET, *fake.approvals):
            assert secret not in response.text
        nursery.cancel_scope.cancel()


async def test_an_implausible_kis_date_never_reaches_the_clients_encoders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A record dated year 1 made hhmmss() raise in every seed 000 client's writer."""
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeKis().serve)
        gateway = await nursery.start(trio_stock.serve, fake.gateway_config())
        assert gateway.port is not None
        async with (
            real_websocket(gateway.port, "/ws/stock/") as first,
            real_websocket(gateway.port, "/ws/stock/") as second,
        ):
            for ws in (first, second):
                await recv(ws, "connection_established")
                await ws.send_message(json.dumps({"action": "subscribe", "codes": [SAMSUNG]}))
                assert (await recv(ws, "subscription_result"))["success"]
            bad = [
                trade_record(SAMSUNG, 70_000, date="00010101", time="000000"),
                trade_record(SAMSUNG, 70_100, date="99991231", time="235959"),
            ]
            assert await fake.send_trades(bad) == 1
            assert await fake.send_trades([trade_record(SAMSUNG, 71_000, size=4)]) == 1
            for ws in (first, second):
                price = await recv(ws, "stock_price")
                assert (price["price"], price["volume"], price["time"]) == (71_000, 4, "093354")
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{gateway.port}/api/v2/realtime/health")
        (kis,) = [p for p in response.json()["providers"] if p["kind"] == "kis"]
        assert (kis["malformed"], kis["connects"], kis["state"]) == (2, 1, "connected")
        nursery.cancel_scope.cancel()


async def test_python_m_trio_stock_serves_the_fake_kis(tmp_path: Path) -> None:
    """The real program, on the real clock: every wait is on an event, bounded by 30 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_STOCK_"))}
    output: list[bytes | bytearray] = []
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeKis().serve)
        env |= {
            "KIS_APP_KEY": DEFAULT_APP_KEY,
            "KIS_APP_SECRET": DEFAULT_APP_SECRET,
            "KIS_WS_URL": fake.ws_url,
            "KIS_REST_URL": fake.rest_url,
            "KIS_REGISTER_INTERVAL": "0",
            "TRIO_STOCK_LOG_LEVEL": "DEBUG",
        }
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_stock", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,  # no .env file
        )
        assert process.stdout is not None
        try:
            with trio.fail_after(30):
                port = await _ready_port(process.stdout, output)
                async with real_websocket(port, "/ws/stock/") as ws:
                    await recv(ws, "connection_established")
                    await ws.send_message(json.dumps({"action": "subscribe", "codes": [SAMSUNG]}))
                    result = await recv(ws, "subscription_result")
                    assert (result["success"], result["subscribed"]) == (True, [SAMSUNG])
                    await fake.send_trades([trade_record(SAMSUNG, 72_100, size=3)])
                    price = await recv(ws, "stock_price")
                    assert (price["stock_code"], price["price"], price["volume"]) == (
                        SAMSUNG,
                        72_100,
                        3,
                    )
                process.terminate()  # SIGTERM: a graceful shutdown releases upstream
                drained = trio.Event()
                nursery.start_soon(_drain, process.stdout, output, drained)
                assert await process.wait() == 0
                await drained.wait()
                await fake.wait_until(lambda: fake.live_connections == 0)
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
            await process.stdout.aclose()
        assert fake.requests_of("2") == [SAMSUNG]
        assert fake.connections_total == 1 and fake.approval_requests == 1
        log = b"".join(output).decode()
        assert "kis: session 1 up" in log
        for secret in (DEFAULT_APP_KEY, DEFAULT_APP_SECRET, *fake.approvals):
            assert secret not in log
        nursery.cancel_scope.cancel()


async def _ready_port(stdout: trio.abc.ReceiveStream, output: list[bytes | bytearray]) -> int:
    """Read the program's output until the banner names its URL."""
    while True:
        chunk = await stdout.receive_some()
        assert chunk, "the program exited before it was ready:\n" + b"".join(output).decode()
        output.append(chunk)
        match = READY.search(b"".join(output).decode(errors="replace"))
        if match and int(match.group(1)) != 0:
            return int(match.group(1))


async def _drain(
    stdout: trio.abc.ReceiveStream, output: list[bytes | bytearray], done: trio.Event
) -> None:
    while chunk := await stdout.receive_some():
        output.append(chunk)
    done.set()
