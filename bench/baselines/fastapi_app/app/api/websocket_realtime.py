"""seed 003's WebSocket router (app/api/websocket_realtime.py): endpoint and REST API.

Client protocol exactly as the guide: actions subscribe / unsubscribe / get_subscriptions /
ping; messages connected / subscription / subscriptions / pong / price_update / error. The
broadcast is the guide's callback: for every connected client subscribed to the symbol,
``await websocket.send_json(...)``, one client after another.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect

from ..services.fmp_websocket_service import fmp_service

router = APIRouter(prefix="/api/v2/realtime")


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: dict[WebSocket, set[str]] = {}

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections[websocket] = set()

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.pop(websocket, None)

    async def broadcast_price(self, symbol: str, data: dict[str, Any]) -> None:
        message = {
            "type": "price_update",
            "symbol": symbol,
            "timestamp": data.get("timestamp"),
            "data_type": data.get("type"),
            "last_price": data.get("last_price"),
            "last_size": data.get("last_size"),
            "ask_price": data.get("ask_price"),
            "ask_size": data.get("ask_size"),
            "bid_price": data.get("bid_price"),
            "bid_size": data.get("bid_size"),
            "cached_at": data.get("cached_at"),
        }
        disconnected = []
        for connection, symbols in list(self.active_connections.items()):
            if symbol in symbols:
                try:
                    await connection.send_json(message)
                except Exception:
                    disconnected.append(connection)
        for connection in disconnected:
            self.disconnect(connection)


manager = ConnectionManager()
fmp_service.register_callback(manager.broadcast_price)


@router.websocket("/ws/prices")
async def websocket_prices(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    await websocket.send_json(
        {"type": "connected", "message": "Connected to real-time price stream"}
    )
    try:
        while True:
            try:
                message = await websocket.receive_json()
            except ValueError:
                await websocket.send_json({"type": "error", "message": "Invalid JSON"})
                continue
            action = message.get("action")
            symbols = [str(s).upper() for s in message.get("symbols", [])]
            client_symbols = manager.active_connections.get(websocket, set())
            if action == "subscribe":
                client_symbols.update(symbols)
                await fmp_service.subscribe(symbols)
                await websocket.send_json(
                    {
                        "type": "subscription",
                        "action": "subscribed",
                        "symbols": symbols,
                        "subscribed_total": len(client_symbols),
                    }
                )
            elif action == "unsubscribe":
                client_symbols.difference_update(symbols)
                await websocket.send_json(
                    {
                        "type": "subscription",
                        "action": "unsubscribed",
                        "symbols": symbols,
                        "subscribed_total": len(client_symbols),
                    }
                )
            elif action == "get_subscriptions":
                await websocket.send_json(
                    {"type": "subscriptions", "symbols": sorted(client_symbols)}
                )
            elif action == "ping":
                await websocket.send_json({"type": "pong"})
            else:
                await websocket.send_json({"type": "error", "message": f"Unknown action: {action}"})
    except WebSocketDisconnect:
        manager.disconnect(websocket)
    except Exception:
        manager.disconnect(websocket)


@router.get("/health")
async def health() -> dict[str, Any]:
    return fmp_service.get_status()


@router.get("/status")
async def status() -> dict[str, Any]:
    return {
        "timestamp": datetime.now().isoformat(),
        "connection_status": {
            "is_connected": fmp_service.is_connected,
            "is_running": fmp_service.is_running,
            "subscribed_symbols": sorted(fmp_service.subscribed_symbols),
            "total_clients": len(manager.active_connections),
        },
        "cached_data": {
            "count": len(fmp_service.price_cache),
            "symbols": sorted(fmp_service.price_cache),
        },
    }


@router.post("/subscribe")
async def subscribe(symbols: list[str]) -> dict[str, Any]:
    await fmp_service.subscribe(symbols)
    return {
        "status": "success",
        "message": f"Subscribed to {len(symbols)} symbols",
        "symbols": symbols,
        "subscribed_total": len(fmp_service.subscribed_symbols),
    }


@router.post("/unsubscribe")
async def unsubscribe(symbols: list[str]) -> dict[str, Any]:
    await fmp_service.unsubscribe(symbols)
    return {
        "status": "success",
        "message": f"Unsubscribed from {len(symbols)} symbols",
        "symbols": symbols,
        "subscribed_total": len(fmp_service.subscribed_symbols),
    }


@router.get("/cache")
async def cache(limit: int = 50) -> dict[str, Any]:
    items = dict(list(fmp_service.price_cache.items())[:limit])
    return {
        "total": len(fmp_service.price_cache),
        "returned": len(items),
        "limit": limit,
        "data": items,
    }


@router.get("/cache/{symbol}")
async def cache_symbol(symbol: str) -> dict[str, Any]:
    data = fmp_service.get_cached_data(symbol)
    if data is None:
        raise HTTPException(status_code=404, detail=f"No cached data for {symbol.upper()}")
    return {"symbol": symbol.upper(), "data": data}
