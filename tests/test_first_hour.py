"""The operator's first hour: messages that name their cause, .env as users write it, logs,
health for machines."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_stock import Config, ConfigError
from trio_stock.gateway import build_providers
from trio_stock.logs import JsonFormatter

from .clients import memory_server, recv, recv_type, send

PRICES = "/api/v2/realtime/ws/prices"
ALWAYS_OPEN = {"TRIO_STOCK_SIM_ALWAYS_OPEN": "true", "TRIO_STOCK_SIM_TICKS_PER_SECOND": "5"}


def run_gateway(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_STOCK_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "trio_stock", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"KIS_APP_KEY": "k"}, "KIS_APP_SECRET is missing"),
        ({"KIS_APP_SECRET": "s"}, "KIS_APP_KEY is missing"),
        (
            {"TRIO_STOCK_KR_PROVIDER": "kis"},
            "--kr-provider kis needs KIS_APP_KEY and KIS_APP_SECRET",
        ),
        ({"TRIO_STOCK_US_PROVIDER": "fmp"}, "--us-provider fmp needs FMP_API_KEY"),
    ],
)
def test_a_half_configured_provider_stops_the_start_naming_what_is_missing(
    tmp_path: Path, env: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        build_providers(Config.from_mapping(env))
    result = run_gateway("--port", "0", env=env, cwd=tmp_path)
    assert result.returncode == 2 and words in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_says_what_the_kernel_said_and_what_to_do(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_gateway("--port", str(port), env={}, cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "stop it, or pick another --port" in result.stderr


def test_dotenv_as_users_write_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# keys for development\n"
        "FMP_API_KEY=abc # my key\n"
        "export KIS_APP_KEY='PS-key'\n"
        'KIS_APP_SECRET="a secret # with a hash"\n'
        "TRIO_STOCK_LOG_LEVEL=debug\n"
    )
    config = Config.from_env({}, dotenv=tmp_path / ".env")
    assert config.fmp_api_key is not None and config.fmp_api_key.reveal() == "abc"
    assert config.kis_app_key is not None and config.kis_app_key.reveal() == "PS-key"
    assert config.kis_app_secret is not None
    assert config.kis_app_secret.reveal() == "a secret # with a hash"
    assert config.log_level == "DEBUG"


def test_help_describes_every_flag_with_its_variable_and_default() -> None:
    from trio_stock.__main__ import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "env TRIO_STOCK_SIM_ALWAYS_OPEN (default: False; true or false)" in text
    assert "env TRIO_STOCK_LOG_FORMAT (default: text; one of text, json)" in text


async def test_connection_and_request_log_lines_carry_their_fields(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="trio_stock.server"):
        async with memory_server(Config.from_mapping(ALWAYS_OPEN)) as server:
            async with server.websocket(PRICES) as ws:
                await recv(ws)
                await send(ws, {"action": "subscribe", "symbols": ["AAPL"]})
                await recv_type(ws, "subscription")
                for _ in range(3):
                    assert (await recv(ws))["type"] == "price_update"
            stream = server.connect_stream()
            await stream.send_all(
                b"GET /api/v2/realtime/health?access_token=s3cr3t HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n"
            )
            while await stream.receive_some():
                pass
            await trio.testing.wait_all_tasks_blocked()
    opened = [r for r in caplog.records if "websocket seed003 opened" in r.getMessage()]
    closed = [r for r in caplog.records if "websocket seed003 closed" in r.getMessage()]
    assert len(opened) == len(closed) == 1
    record = closed[0]
    assert record.__dict__["close_code"] == 1000
    assert record.__dict__["protocol"] == "seed003"
    assert record.__dict__["updates"] >= 3
    assert record.__dict__["peer"] == "memory"
    assert "updates sent" in record.getMessage()
    (request,) = [r for r in caplog.records if "GET /api/v2/realtime/health" in r.getMessage()]
    assert request.__dict__["status"] == 200 and request.__dict__["ms"] >= 0
    assert "s3cr3t" not in request.getMessage() and "access_token=***" in request.getMessage()


def test_json_logs_are_one_object_per_line_without_secrets() -> None:
    record = logging.LogRecord("trio_stock.server", logging.INFO, "", 0, "closed %d", (1000,), None)
    record.__dict__.update({"connection": 7, "peer": "127.0.0.1:5000", "close_code": 1000})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "closed 1000"
    assert (entry["connection"], entry["peer"], entry["close_code"]) == (7, "127.0.0.1:5000", 1000)
    assert entry["level"] == "INFO" and entry["logger"] == "trio_stock.server"


def test_json_logs_of_a_real_start_carry_no_secret(tmp_path: Path) -> None:
    import signal

    env = {
        "TRIO_STOCK_LOG_FORMAT": "json",
        "TRIO_STOCK_LOG_LEVEL": "DEBUG",
        "FMP_API_KEY": "fmp-secret-in-env",
        "TRIO_STOCK_US_PROVIDER": "sim",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_stock", "--port", "0"],
        env={**base, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the banner's first line: it is listening
    assert "listening on" in line
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=20)
    assert process.returncode == 0
    lines = [json.loads(line) for line in errors.splitlines() if line.strip()]
    assert any("listening on" in entry["message"] for entry in lines)
    assert "fmp-secret-in-env" not in errors


async def test_health_and_readiness_for_machines(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server(Config.from_mapping(ALWAYS_OPEN)) as server:
        assert await server.get_json("/health") == {"status": "ok"}
        status, raw = await server.get("/ready")
        body = json.loads(raw)
        assert (status, body["ready"]) == (200, True)
    kis_down = {
        **ALWAYS_OPEN,
        "TRIO_STOCK_KR_PROVIDER": "kis",
        "KIS_APP_KEY": "k",
        "KIS_APP_SECRET": "s",
        "KIS_REST_URL": "http://127.0.0.1:9",
        "KIS_WS_URL": "ws://127.0.0.1:9",
    }
    async with memory_server(Config.from_mapping(kis_down)) as server:
        await trio.sleep(1)
        assert (await server.get("/health"))[0] == 200  # alive, though not ready
        status, raw = await server.get("/ready")
        body = json.loads(raw)
        assert status == 503 and body["ready"] is False
        assert "KR: kis is" in str(body["detail"])
        markets = body["markets"]
        assert isinstance(markets, dict) and markets["US"] == "connected"
        assert markets["KR"] in ("connecting", "backing_off")


def test_help_describes_every_flag() -> None:
    import attrs

    from trio_stock.__main__ import HELP, build_parser
    from trio_stock.config import is_secret

    flags = [f for f in attrs.fields(Config) if not is_secret(f)]
    assert {f.name for f in flags} == set(HELP)  # a description for each, no stale one
    text = " ".join(build_parser().format_help().split())
    assert "env TRIO_STOCK_PORT (default: 8000; 0 to 65535)" in text
    assert "env TRIO_STOCK_KR_PROVIDER (default: auto; one of auto, sim, kis)" in text
    assert "env TRIO_STOCK_LOG_LEVEL (default: INFO; one of DEBUG, INFO, WARNING, ERROR)" in text
