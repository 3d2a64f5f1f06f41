"""Fail fast, per market: a provider that is down does not hold back a healthy market."""

from __future__ import annotations

import trio
import trio.testing

from trio_stock import Config
from trio_stock.model import Market
from trio_stock.upstream.contract import ProviderState

from .clients import memory_server, recv, recv_type, send

PRICES = "/api/v2/realtime/ws/prices"
KIS_DOWN = {  # KIS configured, but nothing listens where it should be
    "TRIO_STOCK_KR_PROVIDER": "kis",
    "KIS_APP_KEY": "PSfail-fast-key",
    "KIS_APP_SECRET": "fail-fast-secret",
    "KIS_REST_URL": "http://127.0.0.1:9",
    "KIS_WS_URL": "ws://127.0.0.1:9",
    "TRIO_STOCK_SIM_ALWAYS_OPEN": "true",
    "TRIO_STOCK_SIM_TICKS_PER_SECOND": "5",
}


async def test_a_provider_that_is_down_fails_its_symbols_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(Config.from_mapping(KIS_DOWN)) as server:
        kis = server.state.hub.provider_for(Market.KR)
        assert kis is not None
        with trio.fail_after(60):  # the first connect is refused: the provider backs off
            while kis.statistics().state is not ProviderState.BACKING_OFF:  # noqa: ASYNC110
                await trio.sleep(0.05)
        async with server.websocket(PRICES) as ws:
            await recv(ws)
            start = trio.current_time()
            await send(ws, {"action": "subscribe", "symbols": ["AAPL", "005930"]})
            reply = await recv_type(ws, "subscription")
            assert trio.current_time() - start < 1.0  # not the 10 s acknowledgement timeout
            assert (reply["symbols"], reply["failed"]) == (["AAPL"], ["005930"])
            error = await recv_type(ws, "error")
            assert "005930 (unavailable: kis is not connected (backing_off)" in error["message"]
            assert (await recv(ws))["type"] == "price_update"  # the healthy market streams
