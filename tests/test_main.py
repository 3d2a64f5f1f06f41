"""``python -m trio_stock`` as an operator runs it: banner, serving, graceful shutdown, errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from .clients import gateway_process, real_websocket, recv, recv_type, send


async def test_serves_then_shuts_down_gracefully_on_sigint(tmp_path: Path) -> None:
    async with gateway_process("--sim-ticks-per-second", "50", cwd=str(tmp_path)) as (
        process,
        port,
    ):
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{port}/api/v2/realtime/health")
            assert health.json()["simulated"] == ["KR", "US"]
        async with real_websocket(port, "/api/v2/realtime/ws/prices") as ws:
            assert (await recv(ws))["type"] == "connected"
            await send(ws, {"action": "subscribe", "symbols": ["AAPL"]})
            await recv_type(ws, "subscription")
            assert (await recv(ws))["type"] == "price_update"
            process.send_signal(signal.SIGINT)
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason is not None and closed.value.reason.code == 1001
        with trio.fail_after(10):
            assert await process.wait() == 0


async def test_sigterm_exits_zero(tmp_path: Path) -> None:
    async with gateway_process(cwd=str(tmp_path)) as (process, _):
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0


async def test_dotenv_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KIS_MAX_SUBSCRIPTIONS=7\n")
    async with gateway_process(cwd=str(tmp_path)) as (process, port):
        async with httpx.AsyncClient() as http:  # closed before the server goes away
            status = (await http.get(f"http://127.0.0.1:{port}/api/v2/realtime/status")).json()
        assert {u["market"]: u["quota"] for u in status["upstream"]}["KR"] == 7
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await process.wait() == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "eighty"], {}, "--port='eighty': must be a whole number"),
        (["--port", "70000"], {}, "--port='70000': must be between 0 and 65535"),
        ([], {"TRIO_STOCK_PORT": "70000"}, "TRIO_STOCK_PORT='70000': must be between 0 and 65535"),
        (["--kis-env", "prod"], {}, "--kis-env='prod': must be one of real, paper"),
        ([], {"TRIO_STOCK_AUTH": "maybe"}, "TRIO_STOCK_AUTH='maybe': must be one of none, jwt"),
        ([], {"FMP_API_KEY": "k", "FMP_MAX_SUBSCRIPTIONS": "0"}, "FMP_MAX_SUBSCRIPTIONS='0'"),
        ([], {"TRIO_STOCK_PROT": "1"}, "unknown setting(s): TRIO_STOCK_PROT"),
        ([], {"KIS_ENV": "prod"}, "KIS_ENV='prod'"),
        (["--kr-provider", "kis"], {}, "needs KIS_APP_KEY and KIS_APP_SECRET"),
    ],
)
def test_configuration_errors_exit_2_with_a_clear_message(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    import os

    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_STOCK_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "trio_stock", *args],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_help_documents_every_setting_with_its_environment_variable() -> None:
    from trio_stock.__main__ import build_parser

    text = build_parser().format_help()
    for flag, env in (
        ("--port", "TRIO_STOCK_PORT"),
        ("--kis-max-subscriptions", "KIS_MAX_SUBSCRIPTIONS"),
        ("--linger", "TRIO_STOCK_LINGER"),
        ("--fmp-ws-url", "FMP_WS_URL"),
    ):
        assert flag in text and env in text
    assert "--kis-app-key" not in text and "--fmp-api-key" not in text  # secrets: env only


def test_garbage_collector_tuning_freezes_the_start_up_heap() -> None:
    import gc

    from trio_stock.__main__ import GC_YOUNG_THRESHOLD, tune_garbage_collector

    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 1000  # modules, classes: out of every collection
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_port_in_use_is_reported_as_such(tmp_path: Path) -> None:
    """The kernel's reason reaches the operator, not "Exceptions from Trio nursery"."""
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_STOCK_")}
        result = subprocess.run(
            [sys.executable, "-m", "trio_stock", "--port", str(port)],
            env=base,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr and "sub-exception" not in result.stderr
