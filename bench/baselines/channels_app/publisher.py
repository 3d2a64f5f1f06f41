"""seed 000's ``kis-publisher`` role, fed by the FMP feed: one process, one upstream session.

It logs in to the feed, subscribes every ticker, and ``group_send``s each trade to the
channels group of its code — the Channels/Redis fan-out seed 000 draws. The feed's tickers
map to 6-digit codes by position (``100000 + i``), because seed 000's clients speak codes.

Run: ``python -m bench.baselines.channels_app.publisher --feed URL --key K --symbols A,B``
with ``DJANGO_SETTINGS_MODULE`` and ``REDIS_URL`` set as for the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baselines.channels_app.settings")

import django

django.setup()

import websockets  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402

from bench.baselines.channels_app.codes import code_for  # noqa: E402


async def run(feed: str, key: str, tickers: list[str]) -> None:
    codes = {t.lower(): code_for(i) for i, t in enumerate(tickers)}
    layer = get_channel_layer()
    async with websockets.connect(feed) as ws:
        await ws.send(json.dumps({"event": "login", "data": {"apiKey": key}}))
        await ws.send(json.dumps({"event": "subscribe", "data": {"ticker": list(codes)}}))
        print(json.dumps({"ready": True}), flush=True)
        async for message in ws:
            data = json.loads(message)
            if "event" in data or data.get("lp") is None:
                continue  # control frames; seed 000 forwards trades only
            code = codes.get(str(data.get("s", "")).lower())
            if code is None:
                continue
            t_ns = int(data["t"])
            await layer.group_send(
                f"stock_{code}",
                {
                    "type": "stock.price",
                    "stock_code": code,
                    "symbol": "001",  # the KIS record-sequence field (DESIGN.md: kept as "001")
                    "time": datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%H%M%S"),
                    "price": data["lp"],
                    "volume": data.get("ls"),
                    "timestamp": t_ns // 1_000_000,
                },
            )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feed", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--symbols", required=True)
    a = p.parse_args()
    asyncio.run(run(a.feed, a.key, [s for s in a.symbols.split(",") if s]))
