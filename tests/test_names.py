"""Names of well-known symbols: the table, looked up once per symbol, carried in
``price_update``, ``stock_price`` and the REST cache."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from trio_stock import model
from trio_stock.model import Market, Tick, TickKind, merge
from trio_stock.names import KOREAN_NAMES, US_NAMES, name_of

from .clients import memory_server, recv, recv_type, send

STOCK = "/ws/stock/"
PRICES = "/api/v2/realtime/ws/prices"


def test_seed_000s_codes_and_large_us_companies_have_names() -> None:
    # seed 000, "주요 종목 코드": all ten codes.
    assert KOREAN_NAMES == {
        "005930": "삼성전자",
        "000660": "SK하이닉스",
        "035720": "카카오",
        "035420": "NAVER",
        "051910": "LG화학",
        "068270": "셀트리온",
        "006400": "삼성SDI",
        "207940": "삼성바이오로직스",
        "373220": "LG에너지솔루션",
        "105560": "KB금융",
    }
    assert len(US_NAMES) >= 30
    assert (name_of("AAPL"), name_of("MSFT"), name_of("BRK.B")) == (
        "Apple",
        "Microsoft",
        "Berkshire Hathaway (Class B)",
    )
    assert name_of("005930") == "삼성전자"
    assert name_of("123456") is None and name_of("ZZZZ") is None
    assert name_of("aapl") is None  # canonical spellings only: the hub normalises first


def tick(symbol: str, price: float) -> Tick:
    return Tick(symbol, TickKind.TRADE, 1, 1, price=price, size=1.0)


def test_the_name_is_looked_up_once_per_symbol_and_carried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looked_up: list[str] = []

    def counting(symbol: str) -> str | None:
        looked_up.append(symbol)
        return "Apple" if symbol == "AAPL" else None

    monkeypatch.setattr(model, "name_of", counting)
    state = None
    for n in range(100):
        state = merge(state, tick("AAPL", 100.0 + n), market=Market.US, provider="p", epoch=1)
        assert state.name == "Apple"
    assert looked_up == ["AAPL"]
    other = merge(None, tick("ZZZZ", 5.0), market=Market.US, provider="p", epoch=1)
    assert other.name is None and looked_up == ["AAPL", "ZZZZ"]


async def next_update(
    ws: trio_websocket.WebSocketConnection, kind: str, symbol_key: str, symbol: str
) -> dict[str, Any]:
    """The next ``kind`` update of ``symbol``, skipping other symbols' updates."""
    while True:
        message = await recv(ws)
        if message["type"] == kind and message[symbol_key] == symbol:
            return message


async def test_price_update_and_the_cache_carry_the_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server() as server, server.websocket(PRICES) as ws:
        assert (await recv(ws))["type"] == "connected"
        await send(ws, {"action": "subscribe", "symbols": ["005930", "aapl", "ZZZZ"]})
        assert (await recv_type(ws, "subscription"))["subscribed_total"] == 3
        samsung = await next_update(ws, "price_update", "symbol", "005930")
        apple = await next_update(ws, "price_update", "symbol", "AAPL")
        unknown = await next_update(ws, "price_update", "symbol", "ZZZZ")
        cached = await server.get_json("/api/v2/realtime/cache/005930")
    assert samsung["name"] == "삼성전자"
    assert apple["name"] == "Apple"
    assert "name" in unknown and unknown["name"] is None  # the field is always there
    assert cached["data"]["name"] == "삼성전자"


async def test_stock_price_carries_the_name_when_known(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server() as server, server.websocket(STOCK) as ws:
        assert (await recv(ws))["type"] == "connection_established"
        await send(ws, {"action": "subscribe", "codes": ["005930", "123456"]})
        assert (await recv_type(ws, "subscription_result"))["success"] is True
        samsung = await next_update(ws, "stock_price", "stock_code", "005930")
        unknown = await next_update(ws, "stock_price", "stock_code", "123456")
    assert samsung["name"] == "삼성전자"
    assert "name" not in unknown  # omitted like the other extras without data
