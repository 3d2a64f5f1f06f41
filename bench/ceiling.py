"""The ceiling: the simplest Trio fan-out that is still correct, to show what Trio can do at all.

One upstream reader (a raw RFC 6455 client to the FMP feed) merges each tick into the latest
state of its symbol, encodes the seed 003 ``price_update`` once (orjson) and frames it once;
each subscribed client gets that same ``bytes`` appended to its pending list and its writer
woken. The writer sends everything pending with one ``send_all`` per wake-up. No WebSocket
library on either side (bench/rawws.py), no per-tick task, lock or copy.

Lossless: a client whose pending list exceeds ``MAX_PENDING`` frames is too slow and is
dropped (its TCP connection closed), so a stalled client costs at most ``MAX_PENDING``
frames of memory.

Run: ``python -m bench.ceiling --feed ws://127.0.0.1:PORT --symbols AAA,BBB`` — prints
``{"port": N}`` on stdout once it serves and is subscribed upstream.
"""

from __future__ import annotations

import argparse
import datetime
import json
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio

from bench import rawws

MAX_PENDING = 20_000  # frames (~5 MiB at ~250 B) before a client counts as stalled
MAX_SYMBOLS_PER_CLIENT = 200
PRICE_UPDATE_FIELDS = (
    "type",
    "symbol",
    "timestamp",
    "data_type",
    "last_price",
    "last_size",
    "ask_price",
    "ask_size",
    "bid_price",
    "bid_size",
    "cached_at",
)  # seed 003 price_update fields, in the order of the document
CONNECTED = rawws.frame(b'{"type":"connected","message":"Connected to real-time price stream"}')


class Client:
    """One downstream connection: its pending frames and the event that wakes its writer."""

    __slots__ = ("cancel", "pending", "stream", "symbols", "wake")

    def __init__(self, stream: trio.abc.Stream, cancel: trio.CancelScope) -> None:
        self.stream = stream
        self.cancel = cancel
        self.pending: list[bytes] = [CONNECTED]
        self.wake = trio.Event()
        self.wake.set()
        self.symbols: set[str] = set()

    def push(self, data: bytes) -> bool:
        """Queue one frame; False when the client is over its bound (the caller drops it)."""
        pending = self.pending
        pending.append(data)
        if len(pending) == 1:
            self.wake.set()
        return len(pending) <= MAX_PENDING


class Fanout:
    """Latest state per symbol, subscriptions, and the publish path."""

    def __init__(self) -> None:
        self.subs: dict[str, set[Client]] = {}
        self.state: dict[str, dict[str, Any]] = {}
        self.frames: dict[str, bytes] = {}
        self.dropped = 0

    def publish(self, msg: dict[str, Any]) -> None:
        symbol = str(msg.get("s", "")).upper()
        st = self.state.get(symbol)
        if st is None:  # seed 003's price_update, every field present (null until known)
            st = self.state[symbol] = dict.fromkeys(PRICE_UPDATE_FIELDS)
            st["type"], st["symbol"] = "price_update", symbol
        st["timestamp"] = int(msg.get("t") or 0) // 1_000_000  # protocols/fmp.md §4: t in ns
        kind = msg.get("type")
        st["data_type"] = kind
        if kind == "Q":
            st["ask_price"], st["ask_size"] = msg.get("ap"), msg.get("as")
            st["bid_price"], st["bid_size"] = msg.get("bp"), msg.get("bs")
        else:
            st["last_price"], st["last_size"] = msg.get("lp"), msg.get("ls")
        st["cached_at"] = datetime.datetime.now(datetime.UTC).isoformat()
        data = rawws.frame(orjson.dumps(st))
        self.frames[symbol] = data
        slow = [c for c in self.subs.get(symbol, ()) if not c.push(data)]
        for client in slow:
            self.dropped += 1
            self.remove(client)
            client.cancel.cancel()

    def add(self, client: Client, symbols: list[str]) -> list[str]:
        added = []
        for s in symbols:
            if s not in client.symbols and len(client.symbols) < MAX_SYMBOLS_PER_CLIENT:
                client.symbols.add(s)
                self.subs.setdefault(s, set()).add(client)
                added.append(s)
                if s in self.frames:
                    client.push(self.frames[s])  # the snapshot first
        return added

    def remove(self, client: Client, symbols: list[str] | None = None) -> list[str]:
        gone = list(client.symbols if symbols is None else client.symbols & set(symbols))
        for s in gone:
            client.symbols.discard(s)
            self.subs.get(s, set()).discard(client)
        return gone


async def writer(client: Client) -> None:
    """Send everything pending with one ``send_all`` per wake-up."""
    while True:
        await client.wake.wait()
        client.wake = trio.Event()
        batch, client.pending = client.pending, []
        if batch:
            await client.stream.send_all(b"".join(batch))


def handle_action(fan: Fanout, client: Client, payload: bytes) -> None:
    try:
        msg = orjson.loads(payload)
        action = msg.get("action")
        symbols = [str(s).upper() for s in msg.get("symbols", [])][:MAX_SYMBOLS_PER_CLIENT]
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        client.push(rawws.frame(b'{"type":"error","message":"Invalid JSON"}'))
        return
    if action in ("subscribe", "unsubscribe"):
        changed = fan.add(client, symbols) if action == "subscribe" else fan.remove(client, symbols)
        reply = {
            "type": "subscription",
            "action": action + "d",
            "symbols": changed,
            "subscribed_total": len(client.symbols),
        }
    elif action == "get_subscriptions":
        reply = {"type": "subscriptions", "symbols": sorted(client.symbols)}
    elif action == "ping":
        reply = {"type": "pong"}
    else:
        reply = {"type": "error", "message": f"Unknown action: {action}"}
    client.push(rawws.frame(orjson.dumps(reply)))


async def serve_client(fan: Fanout, stream: trio.SocketStream) -> None:
    try:
        _path, rest = await rawws.server_handshake(stream)
    except (rawws.ProtocolError, EOFError, trio.BrokenResourceError):
        return
    with trio.CancelScope() as cancel:
        client = Client(stream, cancel)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer, client)
                reader = rawws.FrameReader(stream, rest)
                while True:
                    opcode, payload = await reader.next_frame()
                    if opcode == 8:
                        break
                    if opcode == 9:
                        client.push(rawws.frame(payload, 10))
                    elif opcode == 1:
                        handle_action(fan, client, payload)
                nursery.cancel_scope.cancel()
        except* (EOFError, rawws.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away or broke the protocol: drop it
        finally:
            fan.remove(client)


async def upstream(
    fan: Fanout,
    url: str,
    key: str,
    symbols: list[str],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read the FMP feed (protocols/fmp.md §2-§4) and publish every data frame."""
    u = urlsplit(url)
    stream = await trio.open_tcp_stream(u.hostname or "127.0.0.1", u.port or 80)
    async with stream:
        rest = await rawws.client_handshake(stream, u.netloc, u.path or "/")
        await stream.send_all(
            rawws.masked_frame(orjson.dumps({"event": "login", "data": {"apiKey": key}}))
        )
        await stream.send_all(
            rawws.masked_frame(
                orjson.dumps(
                    {"event": "subscribe", "data": {"ticker": [s.lower() for s in symbols]}}
                )
            )
        )
        task_status.started()
        reader = rawws.FrameReader(stream, rest)
        while True:
            opcode, payload = await reader.next_frame()
            if opcode == 9:
                await stream.send_all(rawws.masked_frame(payload, 10))
            elif opcode == 8:
                return
            elif opcode == 1:
                msg = orjson.loads(payload)
                items = msg if isinstance(msg, list) else [msg]
                for item in items:
                    if "event" not in item:
                        fan.publish(item)


async def main(args: argparse.Namespace) -> None:
    fan = Fanout()
    symbols = [s for s in args.symbols.split(",") if s]
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream, fan, args.feed, args.key, symbols)
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(serve_client, fan), args.port, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        print(json.dumps({"port": port}), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feed", required=True, help="FMP feed URL, e.g. ws://127.0.0.1:9000")
    p.add_argument("--key", default="bench-key", help="API key sent in the FMP login")
    p.add_argument("--symbols", required=True, help="comma-separated tickers to subscribe")
    p.add_argument("--port", type=int, default=0)
    trio.run(main, p.parse_args())
