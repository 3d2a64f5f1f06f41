"""Embedding the core in another Trio program, as the README shows."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio
import trio.testing

import trio_stock
from trio_stock import Config, Market


async def test_serve_core_in_a_nursery_and_receive_simulated_prices(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config.from_mapping(
        {"TRIO_STOCK_SIM_TICKS_PER_SECOND": "5", "TRIO_STOCK_SIM_ALWAYS_OPEN": "1"}
    )
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(
            lambda task_status: trio_stock.serve(config, listen=False, task_status=task_status)
        )
        hub = gateway.hub
        async with hub.subscriber() as updates:
            result = await hub.subscribe(updates, ["005930", "aapl"])
            assert result.accepted == ("005930", "AAPL")
            seen: dict[str, int] = {}
            with trio.move_on_after(10):
                async for state in updates:
                    seen[state.symbol] = seen.get(state.symbol, 0) + 1
            assert seen.keys() == {"005930", "AAPL"}
            assert all(count > 5 for count in seen.values())
        stats = hub.statistics()
        assert {p.name: p.state.value for p in stats.providers} == {
            "sim-kr": "connected",
            "sim-us": "connected",
        }
        assert {u.market: u.quota for u in stats.upstream} == {Market.KR: 40, Market.US: 500}
        nursery.cancel_scope.cancel()


def test_public_names_are_exactly_the_intended_ones() -> None:
    public = {
        name
        for name in dir(trio_stock)
        if not name.startswith("_") and not inspect.ismodule(getattr(trio_stock, name))
    }
    assert public == {
        "AuthFailed", "Config", "ConfigError", "Failure", "FailureReason", "Gateway", "Hub",
        "HubStatistics", "InvalidSymbol", "Market", "Policy", "Secret", "SimulatedMarket",
        "SubscribeResult", "Subscriber", "SubscriberTooSlow", "SymbolState", "Tick", "TickKind",
        "TrioStockError", "UpstreamError", "normalize_symbol", "serve",
    }  # fmt: skip


def test_the_readme_embedding_example_runs_and_ctrl_c_ends_it_cleanly(tmp_path: Path) -> None:
    """The README's example, as written there, in a process of its own."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Embedding it in a Trio program", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_"))}
    env = {**base, "TRIO_STOCK_PORT": "0", "TRIO_STOCK_SIM_ALWAYS_OPEN": "true"}
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(3)]  # port, result, a first price
    assert lines[0].startswith("serving on port ")
    assert lines[1].startswith("('005930', 'AAPL') ()")
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors
    assert "Traceback" not in errors
