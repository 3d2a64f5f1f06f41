"""Both WebSocket client protocols, over memory streams on the mock clock."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing
import trio_websocket

from trio_stock import Config
from trio_stock.endpoints.client import ClientLimits
from trio_stock.hub import DEFAULT_MAX_BACKLOG, Policy
from trio_stock.model import Tick, TickKind
from trio_stock.server import CLOSE_GRACE
from trio_stock.transport.wsserver import WebSocketLimits

from .clients import memory_server, recv, recv_type, send

STOCK = "/ws/stock/"
PRICES = "/api/v2/realtime/ws/prices"


def fast_sim(**extra: str) -> Config:
    return Config.from_mapping(
        {"TRIO_STOCK_SIM_TICKS_PER_SECOND": "5", "TRIO_STOCK_SIM_ALWAYS_OPEN": "1", **extra}
    )


async def test_seed000_vanilla_page_sequence(autojump_clock: trio.testing.MockClock) -> None:
    """connect → subscribe two codes → prices → unsubscribe → list, as seed 000's page does."""
    async with memory_server(fast_sim()) as server, server.websocket(STOCK) as ws:
        hello = await recv(ws)
        assert hello == {
            "type": "connection_established",
            "message": "실시간 주가 스트림에 연결되었습니다.",
            "actions": ["subscribe", "unsubscribe", "list_subscriptions", "ping"],
        }
        await send(ws, {"action": "subscribe", "codes": ["005930", "000660"]})
        result = await recv(ws)  # the result comes before any price of these codes
        assert result == {
            "type": "subscription_result",
            "success": True,
            "subscribed": ["005930", "000660"],
            "failed": [],
            "error": None,
            "total_subscribed": 2,
        }
        prices: dict[str, list[dict[str, object]]] = {"005930": [], "000660": []}
        while min(len(v) for v in prices.values()) < 3:
            message = await recv(ws)
            assert message["type"] == "stock_price"
            prices[str(message["stock_code"])].append(message)
        sample = prices["005930"][-1]
        assert sample["symbol"] == "001"
        assert re.fullmatch(r"\d{6}", str(sample["time"]))
        assert isinstance(sample["price"], int) and 60_000 < sample["price"] < 80_000
        assert isinstance(sample["volume"], int) and sample["volume"] > 0
        await send(ws, {"action": "unsubscribe", "codes": ["005930"]})
        assert await recv_type(ws, "unsubscription_result") == {
            "type": "unsubscription_result",
            "success": True,
            "unsubscribed": ["005930"],
            "error": None,
            "total_subscribed": 1,
        }
        await send(ws, {"action": "list_subscriptions"})
        listing = await recv_type(ws, "subscriptions_list")
        assert listing["subscribed_codes"] == ["000660"]
        assert listing["count"] == 1
        assert listing["kis_max_subscriptions"] == 40
        assert listing["kis_active_subscriptions"] == 1  # 005930 lingers: free capacity
        after = [await recv(ws) for _ in range(10)]
        assert {m["stock_code"] for m in after} == {"000660"}  # no price after the unsubscribe


async def test_seed003_python_client_sequence(autojump_clock: trio.testing.MockClock) -> None:
    """connect → subscribe AAPL, MSFT, TSLA → price_update messages, as seed 003's client does."""
    async with memory_server(fast_sim()) as server, server.websocket(PRICES) as ws:
        assert await recv(ws) == {
            "type": "connected",
            "message": "Connected to real-time price stream",
        }
        await send(ws, {"action": "subscribe", "symbols": ["AAPL", "MSFT", "TSLA"]})
        assert await recv(ws) == {
            "type": "subscription",
            "action": "subscribed",
            "symbols": ["AAPL", "MSFT", "TSLA"],
            "subscribed_total": 3,
        }
        updates = [await recv(ws) for _ in range(30)]
        assert {u["type"] for u in updates} == {"price_update"}
        assert {u["symbol"] for u in updates} == {"AAPL", "MSFT", "TSLA"}
        kinds = {u["data_type"] for u in updates}
        assert kinds <= {"T", "Q"} and "Q" in kinds
        trade = next(u for u in reversed(updates) if u["last_price"] is not None)
        for key in (
            "timestamp",
            "last_price",
            "last_size",
            "ask_price",
            "ask_size",
            "bid_price",
            "bid_size",
            "cached_at",
        ):
            assert key in trade
        assert isinstance(trade["timestamp"], int) and trade["timestamp"] > 1_600_000_000_000
        assert str(trade["cached_at"]).startswith("20")
        await send(ws, {"action": "get_subscriptions"})
        listing = await recv_type(ws, "subscriptions")
        assert listing["symbols"] == ["AAPL", "MSFT", "TSLA"]
        await send(ws, {"action": "unsubscribe", "symbols": ["aapl"]})
        assert await recv_type(ws, "subscription") == {
            "type": "subscription",
            "action": "unsubscribed",
            "symbols": ["AAPL"],
            "subscribed_total": 2,
        }


async def test_snapshot_follows_the_result_for_a_warm_symbol(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(fast_sim()) as server, server.websocket(PRICES) as first:
        await recv(first)
        await send(first, {"action": "subscribe", "symbols": ["NVDA"]})
        await recv_type(first, "subscription")
        await recv_type(first, "price_update")
        async with server.websocket(PRICES) as second:
            await recv(second)
            await send(second, {"action": "subscribe", "symbols": ["NVDA"]})
            assert (await recv(second))["type"] == "subscription"
            snapshot = await recv(second)  # at once: the cached state, before any new tick
            assert snapshot["type"] == "price_update" and snapshot["symbol"] == "NVDA"


BAD_INPUTS = [
    ("{not json", "Invalid JSON"),
    ("[1, 2]", "message must be a JSON object"),
    ('{"codes": ["005930"]}', "missing 'action'"),
    ('{"action": "dance"}', "unknown action 'dance'"),
    ('{"action": 5}', "unknown action 5"),
    ('{"action": "subscribe", "codes": "005930"}', "'codes' must be a list of strings"),
    ('{"action": "subscribe", "codes": [5930]}', "'codes' must be a list of strings"),
    ('{"action": "subscribe", "codes": []}', "'codes' must not be empty"),
    ('{"action": "unsubscribe"}', "'codes' must be a list of strings"),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_INPUTS)
async def test_bad_input_gets_an_error_and_the_connection_lives(
    autojump_clock: trio.testing.MockClock, raw: str, expected: str
) -> None:
    async with (
        memory_server(fast_sim()) as server,
        server.websocket(STOCK) as ws,
        server.websocket(STOCK) as other,
    ):
        await recv(ws)
        await recv(other)
        await send(other, {"action": "subscribe", "codes": ["005930"]})
        await recv_type(other, "subscription_result")
        await ws.send_message(raw)
        error = await recv(ws)
        assert error["type"] == "error"
        assert expected in str(error["message"])
        await send(ws, {"action": "ping"})
        assert await recv(ws) == {"type": "pong"}
        assert (await recv(other))["type"] == "stock_price"  # the other client is unaffected


async def test_binary_frame_is_refused_with_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(fast_sim()) as server, server.websocket(PRICES) as ws:
        await recv(ws)
        await ws.send_message(b"\x00\x01")
        assert "binary messages are not supported" in str((await recv(ws))["message"])
        await send(ws, {"action": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def test_invalid_codes_warn_and_valid_ones_still_subscribe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(fast_sim()) as server, server.websocket(STOCK) as ws:
        await recv(ws)
        await send(ws, {"action": "subscribe", "codes": ["ABC", "005930", "12345"]})
        assert await recv(ws) == {
            "type": "warning",
            "message": "유효하지 않은 종목 코드: ['ABC', '12345']",
        }
        result = await recv(ws)
        assert result["type"] == "subscription_result"
        assert result["subscribed"] == ["005930"]
        assert result["failed"] == ["ABC", "12345"]
        assert result["success"] is False
        assert (await recv(ws))["stock_code"] == "005930"


async def test_quota_error_uses_the_documents_text_with_the_configured_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server(fast_sim(KIS_MAX_SUBSCRIPTIONS="3")) as server,
        server.websocket(STOCK) as ws,
    ):
        await recv(ws)
        await send(
            ws, {"action": "subscribe", "codes": ["000001", "000002", "000003", "000004", "000005"]}
        )
        result = await recv_type(ws, "subscription_result")
        assert result["subscribed"] == ["000001", "000002", "000003"]
        assert result["failed"] == ["000004", "000005"]
        assert result["error"] == "3개 종목 구독 실패"
        await send(ws, {"action": "list_subscriptions"})
        listing = await recv_type(ws, "subscriptions_list")
        assert (listing["kis_active_subscriptions"], listing["kis_max_subscriptions"]) == (3, 3)


async def test_prices_protocol_reports_rejected_symbols_in_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(fast_sim()) as server, server.websocket(PRICES) as ws:
        await recv(ws)
        await send(ws, {"action": "subscribe", "symbols": ["AAPL", "$$$", "005930"]})
        reply = await recv(ws)
        assert reply["symbols"] == ["AAPL", "005930"]
        assert reply["failed"] == ["$$$"]
        error = await recv(ws)
        assert error["type"] == "error" and "$$$ (invalid" in str(error["message"])


async def test_churn_is_rate_limited_while_ping_is_answered_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(fast_sim()) as server, server.websocket(PRICES) as ws:
        await recv(ws)
        for i in range(30):
            action = "subscribe" if i % 2 == 0 else "unsubscribe"
            await send(ws, {"action": action, "symbols": ["AAPL"]})
            await send(ws, {"action": "ping"})
        replies: list[dict[str, object]] = []
        while len(replies) < 60:
            message = await recv(ws)
            if message["type"] != "price_update":
                replies.append(message)
        assert [r["type"] for r in replies[1::2]] == ["pong"] * 30  # every ping, in order
        limited = [r for r in replies[0::2] if r["type"] == "error"]
        assert len(limited) == 10  # a burst of 20 passes, the rest is refused
        assert "too many subscribe/unsubscribe requests" in str(limited[0]["message"])
        await trio.sleep(5)  # the bucket refills
        await send(ws, {"action": "subscribe", "symbols": ["MSFT"]})
        assert (await recv_type(ws, "subscription"))["symbols"] == ["MSFT"]


async def test_message_over_the_size_limit_closes_with_1009(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = ClientLimits(websocket=WebSocketLimits(max_message_bytes=1024))
    async with memory_server(fast_sim(), limits) as server, server.websocket(PRICES) as ws:
        await recv(ws)
        await send(ws, {"action": "subscribe", "symbols": ["A" * 2000]})
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.reason is not None and closed.value.reason.code == 1009


async def test_client_that_never_answers_pings_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A raw client that completes the handshake and then never reads: no pong, so closed."""
    limits = ClientLimits(ping_interval=10, ping_timeout=5)
    async with memory_server(fast_sim(), limits) as server:
        stream = server.connect_stream()
        await stream.send_all(
            b"GET /ws/stock/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        start = trio.current_time()
        received = b""
        with trio.fail_after(60):
            while chunk := await stream.receive_some():
                received += chunk
        assert b"101 Switching Protocols" in received
        assert b"\x89\x04" in received  # the server pinged (4-byte payload)
        assert received.endswith(b"\x88\x14\x03\xf3no pong within 5 s")  # close frame, 1011
        # pinged within the interval (its turn among the keep-alive's groups), closed 5 s
        # later; the TCP stream ends after the close handshake grace
        assert 5 < trio.current_time() - start - CLOSE_GRACE <= 10 + 5
        assert server.state.websocket_clients == 0


async def test_client_answering_pings_stays_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = ClientLimits(ping_interval=10, ping_timeout=5)
    async with memory_server(fast_sim(), limits) as server, server.websocket(STOCK) as ws:
        await recv(ws)
        await trio.sleep(100)  # trio-websocket's client answers pings by itself
        await send(ws, {"action": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def test_lossless_client_that_falls_behind_is_closed_with_1013(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = ClientLimits(policy=Policy.LOSSLESS, lossless_capacity=8, ping_interval=0)
    async with memory_server(fast_sim(), limits) as server, server.websocket(PRICES) as ws:
        await recv(ws)
        await send(ws, {"action": "subscribe", "symbols": ["AAPL"]})
        await recv_type(ws, "subscription")
        hub = server.state.hub
        for price in range(50):  # a burst faster than any writer: publish never waits
            hub.publish(Tick("AAPL", TickKind.TRADE, 1, 1, price=float(price)))
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                await recv(ws)
        assert closed.value.reason is not None and closed.value.reason.code == 1013
        assert hub.statistics().too_slow == 1


async def test_stalled_lossless_reader_is_cut_off_while_its_write_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over a lockstep stream the writer blocks in send while the client reads nothing."""
    limits = ClientLimits(policy=Policy.LOSSLESS, lossless_capacity=8, ping_interval=0)
    async with memory_server(fast_sim(), limits) as server:
        async with server.websocket(PRICES, lockstep=True) as ws:
            await recv(ws)
            await send(ws, {"action": "subscribe", "symbols": ["AAPL"]})
            await recv_type(ws, "subscription")
            await trio.sleep(60)  # stop reading; ticks keep coming
            assert server.state.hub.statistics().too_slow == 1
            assert server.state.websocket_clients == 0
        assert server.state.hub.statistics().subscribers == 1  # only the REST holder remains


async def test_conflating_client_that_stops_reading_keeps_bounded_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A client that does not read cannot pong either, and would be dropped after the send
    # timeout (a test of its own): here it may stall for longer, to show memory stays flat.
    limits = ClientLimits(ping_interval=0, websocket=WebSocketLimits(send_timeout=120))
    config = fast_sim(TRIO_STOCK_SIM_TICKS_PER_SECOND="50")
    async with (
        memory_server(config, limits) as server,
        server.websocket(PRICES, lockstep=True) as ws,
    ):
        await recv(ws)
        await send(ws, {"action": "subscribe", "symbols": ["AAPL", "MSFT"]})
        await recv_type(ws, "subscription")
        await trio.sleep(60)  # ~6,000 ticks while the client reads nothing
        (client,) = [s for s in server.state.hub._subscribers if s.name.startswith("seed003")]
        stats = client.statistics()
        assert stats.pending <= DEFAULT_MAX_BACKLOG + 2  # never more, however many ticks
        assert stats.conflated > 5_000
        await send(ws, {"action": "ping"})
        message = await recv(ws)  # it still works once the client reads again
        assert message["type"] in ("price_update", "pong")


async def test_unknown_websocket_path_is_404(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server(fast_sim()) as server:
        stream = server.connect_stream()
        await stream.send_all(
            b"GET /ws/nowhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
        assert response.startswith(b"HTTP/1.1 404 ")
        assert response.endswith(b'{"detail":"no WebSocket endpoint at /ws/nowhere"}')


async def test_lingering_codes_are_free_capacity_for_seed000_clients(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """kis_active_subscriptions counts held codes: after everyone leaves it is 0, and a
    client that checks the quota first, as seed 000 advises, may subscribe 40 new codes."""
    first = [f"{n:06d}" for n in range(100, 140)]
    second = [f"{n:06d}" for n in range(200, 240)]
    async with (
        memory_server(fast_sim(TRIO_STOCK_LINGER="600")) as server,
        server.websocket(STOCK) as ws,
    ):
        await recv(ws)
        await send(ws, {"action": "subscribe", "codes": first})
        assert (await recv_type(ws, "subscription_result"))["success"] is True
        await send(ws, {"action": "unsubscribe", "codes": first})
        await recv_type(ws, "unsubscription_result")
        await send(ws, {"action": "list_subscriptions"})
        listing = await recv_type(ws, "subscriptions_list")
        assert (listing["kis_active_subscriptions"], listing["kis_max_subscriptions"]) == (
            0,
            40,
        )
        assert len(server.state.hub.lingering()) == 40  # still registered upstream
        await send(ws, {"action": "subscribe", "codes": second})
        result = await recv_type(ws, "subscription_result")
        assert (result["success"], len(result["subscribed"])) == (True, 40)
        await send(ws, {"action": "list_subscriptions"})
        assert (await recv_type(ws, "subscriptions_list"))["kis_active_subscriptions"] == 40
        assert server.state.hub.lingering() == []  # evicted for the new codes
