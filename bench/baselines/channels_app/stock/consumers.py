"""seed 000's ``StockPriceConsumer``: the ``/ws/stock/`` protocol on Django Channels.

As the document shows: ``connection_established`` on connect; actions subscribe /
unsubscribe / list_subscriptions / ping with 6-digit ``codes``; invalid codes → ``warning``;
the 40-symbol KIS limit (``KIS_MAX_SUBSCRIPTIONS``) counted over the active codes kept in
Redis ("Redis (상태)"); one channels group per code, joined with ``group_add``; the publisher
process ``group_send``s each trade and the handler ``send``s it as ``stock_price``.

Benchmark baseline: not optimised, not sabotaged. One addition: ``stock_price`` carries the
upstream ``timestamp`` (epoch ms) as an extra field, because seed 000's ``time`` (HHMMSS) is
too coarse to measure latency.
"""

from __future__ import annotations

import json
import re

import redis.asyncio as aioredis
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

CODE = re.compile(r"^\d{6}$")
ACTIVE_KEY = "kis:active_subscriptions"  # Redis set of codes subscribed upstream
_redis = None


def redis_client():
    global _redis
    if _redis is None:
        _redis = aioredis.from_url(settings.REDIS_URL)
    return _redis


class StockPriceConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.subscribed_codes = set()
        await self.accept()
        await self.send(
            text_data=json.dumps(
                {
                    "type": "connection_established",
                    "message": "실시간 주가 스트림에 연결되었습니다.",
                    "actions": ["subscribe", "unsubscribe", "list_subscriptions", "ping"],
                },
                ensure_ascii=False,
            )
        )

    async def disconnect(self, close_code):
        for code in list(getattr(self, "subscribed_codes", ())):
            await self.channel_layer.group_discard(f"stock_{code}", self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            data = json.loads(text_data)
        except (TypeError, ValueError):
            await self.send_json_msg({"type": "error", "message": "Invalid JSON"})
            return
        action = data.get("action")
        if action == "subscribe":
            await self.subscribe(data.get("codes", []))
        elif action == "unsubscribe":
            await self.unsubscribe(data.get("codes", []))
        elif action == "list_subscriptions":
            active = await redis_client().scard(ACTIVE_KEY)
            await self.send_json_msg(
                {
                    "type": "subscriptions_list",
                    "subscribed_codes": sorted(self.subscribed_codes),
                    "count": len(self.subscribed_codes),
                    "kis_active_subscriptions": active,
                    "kis_max_subscriptions": settings.KIS_MAX_SUBSCRIPTIONS,
                }
            )
        elif action == "ping":
            await self.send_json_msg({"type": "pong"})
        else:
            await self.send_json_msg({"type": "error", "message": f"Unknown action: {action}"})

    async def subscribe(self, codes):
        valid = [c for c in codes if isinstance(c, str) and CODE.match(c)]
        invalid = [c for c in codes if c not in valid]
        if invalid:
            await self.send_json_msg(
                {"type": "warning", "message": f"유효하지 않은 종목 코드: {invalid}"}
            )
        r = redis_client()
        active = set(m.decode() for m in await r.smembers(ACTIVE_KEY))
        new_upstream = [c for c in valid if c not in active]
        subscribed, failed, error = [], list(invalid), None
        if len(active) + len(new_upstream) > settings.KIS_MAX_SUBSCRIPTIONS:
            failed += valid
            error = f"{settings.KIS_MAX_SUBSCRIPTIONS}개 종목 구독 실패"
        else:
            if new_upstream:
                await r.sadd(ACTIVE_KEY, *new_upstream)
            for code in valid:
                await self.channel_layer.group_add(f"stock_{code}", self.channel_name)
                self.subscribed_codes.add(code)
                subscribed.append(code)
        await self.send_json_msg(
            {
                "type": "subscription_result",
                "success": not failed,
                "subscribed": subscribed,
                "failed": failed,
                "error": error,
                "total_subscribed": len(self.subscribed_codes),
            }
        )

    async def unsubscribe(self, codes):
        gone = [c for c in codes if c in self.subscribed_codes]
        for code in gone:
            await self.channel_layer.group_discard(f"stock_{code}", self.channel_name)
            self.subscribed_codes.discard(code)
        await self.send_json_msg(
            {
                "type": "unsubscription_result",
                "success": True,
                "unsubscribed": gone,
                "error": None,
                "total_subscribed": len(self.subscribed_codes),
            }
        )

    async def stock_price(self, event):
        await self.send(
            text_data=json.dumps(
                {
                    "type": "stock_price",
                    "stock_code": event["stock_code"],
                    "symbol": event["symbol"],
                    "time": event["time"],
                    "price": event["price"],
                    "volume": event["volume"],
                    "timestamp": event["timestamp"],
                }
            )
        )

    async def send_json_msg(self, message):
        await self.send(text_data=json.dumps(message, ensure_ascii=False))
