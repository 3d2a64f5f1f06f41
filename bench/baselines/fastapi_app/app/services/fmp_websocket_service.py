"""seed 003's `FMP WebSocket Service` (app/services/fmp_websocket_service.py), as shown.

Responsibilities listed by the guide: connection management, subscription management, data
receive & processing, caching (latest value per symbol), reconnect with exponential backoff,
callback-based processing ("데이터 수신 시 등록된 콜백 함수 실행"). A `websockets` client
(`pip install websockets>=12.0`) on asyncio. Benchmark baseline: not optimised, not sabotaged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import websockets

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict[str, Any]], Awaitable[None]]


class FMPWebSocketService:
    def __init__(self) -> None:
        self.api_key: str | None = os.getenv("FMP_API_KEY")
        self.ws_url: str = os.getenv("FMP_WS_URL", "wss://websockets.financialmodelingprep.com")
        self.websocket: Any = None
        self.is_connected = False
        self.is_running = False
        self.subscribed_symbols: set[str] = set()
        self.price_cache: dict[str, dict[str, Any]] = {}
        self.callbacks: list[Callback] = []
        self.reconnect_attempts = 0
        self.max_reconnect_attempts = 10
        self.reconnect_delay = 1

    def register_callback(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    async def start(self) -> None:
        if not self.api_key:
            logger.error("FMP API Key not configured")
            return
        self.is_running = True
        while self.is_running:
            try:
                await self._connect_and_listen()
            except Exception as exc:
                logger.warning("FMP WebSocket error: %s", exc)
            self.is_connected = False
            if not self.is_running:
                break
            self.reconnect_attempts += 1
            if self.reconnect_attempts > self.max_reconnect_attempts:
                logger.error("Max reconnection attempts reached")
                break
            delay = min(self.reconnect_delay * 2 ** (self.reconnect_attempts - 1), 60)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        self.is_running = False
        if self.websocket is not None:
            await self.websocket.close()

    async def _connect_and_listen(self) -> None:
        async with websockets.connect(self.ws_url) as websocket:
            self.websocket = websocket
            await websocket.send(json.dumps({"event": "login", "data": {"apiKey": self.api_key}}))
            self.is_connected = True
            self.reconnect_attempts = 0
            if self.subscribed_symbols:
                await self._send_subscribe(list(self.subscribed_symbols))
            async for message in websocket:
                await self._handle_message(message)

    async def _send_subscribe(self, symbols: list[str]) -> None:
        await self.websocket.send(
            json.dumps({"event": "subscribe", "data": {"ticker": [s.lower() for s in symbols]}})
        )

    async def subscribe(self, symbols: list[str]) -> list[str]:
        new = [s.upper() for s in symbols if s.upper() not in self.subscribed_symbols]
        self.subscribed_symbols.update(new)
        if new and self.is_connected:
            await self._send_subscribe(new)
        return new

    async def unsubscribe(self, symbols: list[str]) -> list[str]:
        gone = [s.upper() for s in symbols if s.upper() in self.subscribed_symbols]
        self.subscribed_symbols.difference_update(gone)
        if gone and self.is_connected:
            await self.websocket.send(
                json.dumps({"event": "unsubscribe", "data": {"ticker": [s.lower() for s in gone]}})
            )
        return gone

    async def _handle_message(self, message: str) -> None:
        data = json.loads(message)
        if "event" in data:
            logger.info("FMP event: %s", data)
            return
        symbol = data.get("s", "").upper()
        if not symbol:
            return
        price_data = {
            "symbol": symbol,
            "timestamp": int(data.get("t") or 0) // 1_000_000,  # ns -> epoch ms (guide's examples)
            "type": data.get("type"),
            "last_price": data.get("lp"),
            "last_size": data.get("ls"),
            "ask_price": data.get("ap"),
            "ask_size": data.get("as"),
            "bid_price": data.get("bp"),
            "bid_size": data.get("bs"),
            "cached_at": datetime.now().isoformat(),
        }
        self.price_cache[symbol] = price_data
        for callback in self.callbacks:
            try:
                await callback(symbol, price_data)
            except Exception as exc:
                logger.error("callback error: %s", exc)

    def get_cached_data(self, symbol: str | None = None) -> Any:
        if symbol:
            return self.price_cache.get(symbol.upper())
        return self.price_cache

    def get_status(self) -> dict[str, Any]:
        return {
            "status": "connected" if self.is_connected else "disconnected",
            "is_running": self.is_running,
            "api_configured": bool(self.api_key),
            "subscribed_symbols": sorted(self.subscribed_symbols),
            "cached_symbols": sorted(self.price_cache),
            "callbacks_registered": len(self.callbacks),
            "reconnect_attempts": self.reconnect_attempts,
        }


fmp_service = FMPWebSocketService()
