"""The REST API, metrics and HTTP limits over real sockets on 127.0.0.1, and shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

import trio_stock
from trio_stock import Config, Gateway, Secret
from trio_stock.config import KrProvider, UsProvider
from trio_stock.transport.http import MAX_BODY_BYTES

from .clients import memory_server, real_websocket, recv, recv_type, send

API = "/api/v2/realtime"
SECRETS = ("PSkis-app-key-123", "kis-secret-456", "fmp-key-789")


def fast_config() -> Config:
    """Port 0, a fast simulated market, and keys present (which must never show)."""
    return Config(
        port=0,
        sim_ticks_per_second=50.0,
        sim_always_open=True,
        kr_provider=KrProvider.SIM,
        us_provider=UsProvider.SIM,
        kis_app_key=Secret(SECRETS[0]),
        kis_app_secret=Secret(SECRETS[1]),
        fmp_api_key=Secret(SECRETS[2]),
    )


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(trio_stock.serve, fast_config())
        nursery.cancel_scope.cancel()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as client:
        yield client


async def test_health_status_and_no_secrets(http: httpx.AsyncClient) -> None:
    health = await http.get(f"{API}/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "connected"
    assert body["is_running"] is True
    assert body["api_configured"] is True
    assert body["simulated"] == ["KR", "US"]
    assert {p["name"] for p in body["providers"]} == {"sim-kr", "sim-us"}
    status = await http.get(f"{API}/status")
    assert status.json()["connection_status"]["is_connected"] is True
    for text in (health.text, status.text, (await http.get("/metrics")).text):
        for secret in SECRETS:
            assert secret not in text


async def test_rest_subscribe_fills_the_cache_and_counts_against_the_quota(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{API}/subscribe", json=["AAPL", "msft", "005930"])
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "message": "Subscribed to 3 symbols",
        "symbols": ["AAPL", "MSFT", "005930"],
        "subscribed_total": 3,
    }
    # Wait for a price of each on a WebSocket: then the cache holds all three.
    async with real_websocket(gateway.port or 0, "/api/v2/realtime/ws/prices") as ws:
        await send(ws, {"action": "subscribe", "symbols": ["AAPL", "MSFT", "005930"]})
        priced: set[object] = set()
        while priced != {"AAPL", "MSFT", "005930"}:
            message = await recv(ws)
            if message["type"] == "price_update":
                priced.add(message["symbol"])
    cache = (await http.get(f"{API}/cache", params={"limit": 2})).json()
    assert (cache["total"], cache["returned"], cache["limit"]) == (3, 2, 2)
    entry = (await http.get(f"{API}/cache/aapl")).json()
    assert entry["symbol"] == "AAPL"
    assert entry["data"]["type"] in ("T", "Q") and entry["data"]["bid_price"] > 0
    health = (await http.get(f"{API}/health")).json()
    assert set(health["subscribed_symbols"]) == {"AAPL", "MSFT", "005930"}
    status = (await http.get(f"{API}/status")).json()
    kr = next(u for u in status["upstream"] if u["market"] == "KR")
    assert kr["used"] == 1
    released = await http.post(f"{API}/unsubscribe", json=["AAPL"])
    assert released.json()["symbols"] == ["AAPL"]
    assert released.json()["subscribed_total"] == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("GET", "/nowhere", None, 404, "not found"),
        ("GET", f"{API}/subscribe", None, 405, "use POST"),
        ("POST", f"{API}/subscribe", b"{nope", 400, "body must be JSON"),
        ("POST", f"{API}/subscribe", b'"AAPL"', 422, "JSON list"),
        ("POST", f"{API}/subscribe", b"[]", 422, "empty"),
        ("POST", f"{API}/subscribe", b'["$$$"]', 422, "invalid"),
        ("POST", f"{API}/subscribe", b"[" + b'"A",' * 150 + b'"B"]', 422, "at most 100"),
        ("POST", f"{API}/subscribe", b"[" + b" " * (MAX_BODY_BYTES + 1) + b"]", 413, "over"),
        ("GET", f"{API}/cache/ZZZZ", None, 404, "no cached data for ZZZZ"),
        ("GET", f"{API}/cache/$$", None, 422, "invalid symbol"),
        ("GET", f"{API}/cache?limit=0", None, 422, "limit must be"),
        ("GET", "/static/../secrets", None, 404, "not found"),
    ],
)
async def test_errors_are_json_with_the_right_status(
    http: httpx.AsyncClient, method: str, path: str, body: bytes | None, status: int, detail: str
) -> None:
    response = await http.request(method, path, content=body)
    assert response.status_code == status
    assert detail in response.json()["detail"]
    if status == 405:
        assert response.headers["allow"] == "POST"
    assert (await http.get(f"{API}/health")).status_code == 200  # the server lives on


async def test_quota_rejection_over_rest_is_409(gateway: Gateway, http: httpx.AsyncClient) -> None:
    codes = [f"{n:06d}" for n in range(1, 41)]
    assert (await http.post(f"{API}/subscribe", json=codes)).status_code == 200
    response = await http.post(f"{API}/subscribe", json=["000041"])
    assert response.status_code == 409
    assert "quota" in response.json()["detail"]


async def test_metrics_in_prometheus_text_format(http: httpx.AsyncClient) -> None:
    await http.post(f"{API}/subscribe", json=["AAPL"])
    response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert "# TYPE trio_stock_ticks_published_total counter" in text
    assert 'trio_stock_upstream_quota{provider="sim-kr",market="KR"} 40' in text
    assert 'trio_stock_provider_connected{provider="sim-us",kind="sim"} 1' in text
    assert 'trio_stock_upstream_used{provider="sim-us",market="US"} 1' in text


async def test_dashboard_page_is_served(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert b"trio_stock" in response.content


async def test_websocket_over_a_real_socket_and_shutdown_closes_with_1001() -> None:
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(trio_stock.serve, fast_config())
        assert gateway.port is not None
        async with real_websocket(gateway.port, "/ws/stock/") as ws:
            assert (await recv(ws))["type"] == "connection_established"
            await send(ws, {"action": "subscribe", "codes": ["005930"]})
            assert (await recv_type(ws, "subscription_result"))["subscribed"] == ["005930"]
            assert (await recv(ws))["type"] == "stock_price"
            nursery.cancel_scope.cancel()  # shut the gateway down
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason is not None and closed.value.reason.code == 1001


async def test_slow_request_head_gets_408(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as server:
        stream = server.connect_stream()
        await stream.send_all(b"GET /api/v2/realtime/health HTTP/1.1\r\nHo")
        response = await stream.receive_some()
        assert response.startswith(b"HTTP/1.1 408 ")


async def test_oversized_head_gets_431(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as server:
        stream = server.connect_stream()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        response = await stream.receive_some()
        assert response.startswith(b"HTTP/1.1 431 ")


async def test_keep_alive_serves_several_requests_on_one_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server() as server:
        stream = server.connect_stream()
        request = b"GET /api/v2/realtime/health HTTP/1.1\r\nHost: x\r\n\r\n"
        await stream.send_all(request * 3)
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 3:
            chunk = await stream.receive_some()
            assert chunk, "the server closed a keep-alive connection"
            received += chunk
        assert orjson.loads(received.rsplit(b"\r\n\r\n", 1)[1])["status"] == "connected"


async def test_connection_limit_answers_503(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server(Config(max_clients=1)) as server:
        first = server.connect_stream()
        await first.send_all(b"GET /api/v2/realtime/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await first.receive_some()).startswith(b"HTTP/1.1 200")
        second = server.connect_stream()
        await second.send_all(b"GET /api/v2/realtime/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await second.receive_some()).startswith(b"HTTP/1.1 503")


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/api",
        "/api/v2",
        "/api/v2/realtime",
        "/api/v2/realtime/",
        "/api/v2/realtime/healthz",
        "/api/v2/realtime/cache/",
        "/api/v2/realtime/cache/AAPL/extra",
        "/api/v2/realtime/cache/BRK/B",
        "/api/v2/realtime/ws/prices/x",
        "/static/",
        "/static/app.js/x",
        "/static/../server.py",
        "/ws/stock/x",
        "/metrics/x",
        "/index.html",
    ],
)
async def test_unknown_paths_are_404_under_every_prefix(http: httpx.AsyncClient, path: str) -> None:
    answer = await http.get(path)
    assert answer.status_code == 404, path
    assert answer.json()["detail"].startswith("not found")


async def test_head_is_answered_like_get_without_a_body(gateway: Gateway) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", gateway.port or 0)
    async with stream:
        await stream.send_all(
            f"HEAD {API}/health HTTP/1.1\r\nHost: localhost\r\n\r\n"
            f"GET {API}/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        ).split(b":")[1]
    )
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body after the HEAD's head
    assert len(rest.split(b"\r\n\r\n", 1)[1]) == length  # the GET's body has the same length


async def test_rest_unsubscribe_moves_symbols_from_subscribed_to_lingering(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.post(f"{API}/subscribe", json=["AAPL", "005930"])).status_code == 200
    health = (await http.get(f"{API}/health")).json()
    assert sorted(health["subscribed_symbols"]) == ["005930", "AAPL"]
    assert health["lingering_symbols"] == []
    assert (await http.post(f"{API}/unsubscribe", json=["AAPL"])).status_code == 200
    health = (await http.get(f"{API}/health")).json()
    assert health["subscribed_symbols"] == ["005930"]  # at once, not after the linger
    assert health["lingering_symbols"] == ["AAPL"]  # still registered upstream: free capacity
    status = (await http.get(f"{API}/status")).json()
    assert status["connection_status"]["subscribed_symbols"] == ["005930"]
    us = next(u for u in status["upstream"] if u["market"] == "US")
    assert (us["used"], us["lingering"]) == (0, 1)
    metrics = (await http.get("/metrics")).text
    assert 'trio_stock_upstream_used{provider="sim-us",market="US"} 0' in metrics
    assert 'trio_stock_upstream_registered{provider="sim-us",market="US"} 1' in metrics
