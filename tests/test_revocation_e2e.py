"""End to end: a code the upstream refuses after a reconnect is told to the clients holding it.

The fake KIS behind the gateway takes fewer registrations after a reconnect (kis.md §7):
the seed 000 and seed 003 clients that held the refused code get an ``error`` naming it,
and no longer hold it.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
import trio_websocket

import trio_stock

from .clients import real_websocket
from .fakes.fake_kis import FakeKis

SAMSUNG, HYNIX = "005930", "000660"


async def recv(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(120):
        message = json.loads(await ws.get_message())
    assert isinstance(message, dict)
    return message


async def test_clients_are_told_when_a_held_code_is_refused_after_a_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeKis().serve)
        gateway = await nursery.start(trio_stock.serve, fake.gateway_config())
        assert gateway.port is not None
        async with (
            real_websocket(gateway.port, "/ws/stock/") as stock,
            real_websocket(gateway.port, "/api/v2/realtime/ws/prices") as prices,
        ):
            assert (await recv(stock))["type"] == "connection_established"
            assert (await recv(prices))["type"] == "connected"
            await stock.send_message(json.dumps({"action": "subscribe", "codes": [SAMSUNG, HYNIX]}))
            assert (await recv(stock))["subscribed"] == [SAMSUNG, HYNIX]
            await prices.send_message(json.dumps({"action": "subscribe", "symbols": [HYNIX]}))
            assert (await recv(prices))["symbols"] == [HYNIX]

            fake.cap = 1  # the next session takes one registration: HYNIX is refused
            assert fake.drop() == 1

            told = await recv(stock)
            assert told == {
                "type": "error",
                "message": "종목 구독 종료: 000660: OPSP0008 MAX SUBSCRIBE OVER",
                "failed": [HYNIX],
            }
            told = await recv(prices)
            assert told == {
                "type": "error",
                "message": "Subscription ended: 000660 (quota: OPSP0008 MAX SUBSCRIBE OVER)",
                "failed": [HYNIX],
            }
            await stock.send_message(json.dumps({"action": "list_subscriptions"}))
            listing = await recv(stock)
            assert (listing["subscribed_codes"], listing["kis_active_subscriptions"]) == (
                [SAMSUNG],
                1,
            )
            await prices.send_message(json.dumps({"action": "get_subscriptions"}))
            assert (await recv(prices))["symbols"] == []
        nursery.cancel_scope.cancel()
