"""Who may connect, and to what: tokens, entitlements, origins, hosts and TLS (auth on)."""

from __future__ import annotations

import json
import logging
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import trio_stock
from trio_stock import Config, Gateway
from trio_stock.errors import ConfigError
from trio_stock.server import TLS_HANDSHAKE_TIMEOUT

from .clients import MemoryServer, memory_server, recv, recv_type, send

SECRET = "a-development-secret-of-40-characters!!!"
STOCK = "/ws/stock/"
PRICES = "/api/v2/realtime/ws/prices"
API = "/api/v2/realtime"


def auth_config(**settings: str) -> Config:
    return Config.from_mapping(
        {
            "TRIO_STOCK_AUTH": "jwt",
            "TRIO_STOCK_JWT_SECRET": SECRET,
            "TRIO_STOCK_SIM_TICKS_PER_SECOND": "5",
            "TRIO_STOCK_SIM_ALWAYS_OPEN": "1",
            **settings,
        }
    )


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A token for alice valid for an hour (the hub's clock starts at the real time)."""
    payload = {"sub": "alice", "exp": time.time() + 3600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm)


async def closed_code(
    ws: trio_websocket.WebSocketConnection, within: float = 60
) -> tuple[int, str]:
    """Read until the server closes (within ``within`` seconds); the close code and reason."""
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        with trio.fail_after(within):
            while True:
                await ws.get_message()
    reason = closed.value.reason
    assert reason is not None
    return reason.code, reason.reason or ""


# ---- transports ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["header", "query", "in-band"])
async def test_each_token_transport_is_accepted(
    autojump_clock: trio.testing.MockClock, transport: str
) -> None:
    bearer = token()
    path = PRICES + (f"?access_token={bearer}" if transport == "query" else "")
    headers = [("Authorization", f"Bearer {bearer}")] if transport == "header" else None
    async with (
        memory_server(auth_config()) as server,
        server.websocket(path, headers=headers) as ws,
    ):
        assert (await recv(ws))["type"] == "connected"
        if transport == "in-band":
            await send(ws, {"action": "auth", "token": bearer})
            reply = await recv(ws)
            assert reply["type"] == "auth" and reply["status"] == "ok"
            assert reply["sub"] == "alice"
        await send(ws, {"action": "subscribe", "symbols": ["AAPL"]})
        assert (await recv_type(ws, "subscription"))["symbols"] == ["AAPL"]
        assert (await recv(ws))["type"] == "price_update"


# ---- refusals --------------------------------------------------------------------------


def rsa_key_file(tmp_path: Path) -> tuple[Any, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "public.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, path


def hs256_with(key: bytes) -> str:
    """An HS256 token signed with ``key`` as the HMAC secret, built by hand."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "alice", "exp": time.time() + 3600}).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def unsigned() -> str:
    parts = token().split(".")
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    return f"{header}.{parts[1]}."


def tampered() -> str:
    head, _, signature = token().split(".")
    richer = jwt.utils.base64url_encode(
        json.dumps({"sub": "alice", "exp": time.time() + 3600, "admin": True}).encode()
    ).decode()
    return f"{head}.{richer}.{signature}"


REFUSED: dict[str, tuple[dict[str, str], Callable[[], str], str]] = {
    "alg none": ({}, unsigned, "not signed with HS256"),
    "wrong aud": ({"TRIO_STOCK_JWT_AUDIENCE": "trio"}, lambda: token(aud="other"), "audience"),
    "wrong iss": ({"TRIO_STOCK_JWT_ISSUER": "https://id"}, lambda: token(iss="evil"), "issuer"),
    "missing exp": ({}, lambda: jwt.encode({"sub": "alice"}, SECRET, "HS256"), "'exp'"),
    "expired": ({}, lambda: token(exp=time.time() - 120), "expired"),
    "not yet valid": ({}, lambda: token(nbf=time.time() + 600), "not valid yet"),
    "tampered": ({}, tampered, "signature"),
    "other secret": ({}, lambda: token(key="b" * 40), "signature"),
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize("transport", ["query", "in-band"])
async def test_refused_tokens_close_4001_and_subscribe_nothing(
    autojump_clock: trio.testing.MockClock, case: str, transport: str
) -> None:
    settings, make, reason = REFUSED[case]
    bad = make()
    path = PRICES + (f"?access_token={bad}" if transport == "query" else "")
    async with memory_server(auth_config(**settings)) as server, server.websocket(path) as ws:
        if transport == "in-band":
            await send(ws, {"action": "auth", "token": bad})
        await send(ws, {"action": "subscribe", "symbols": ["AAPL", "005930"]})
        code, text = await closed_code(ws)
        assert code == 4001
        assert reason in text and bad not in text
        assert server.state.hub.held() == []
        assert server.state.hub.statistics().published == 0 or not server.state.hub.held()


async def test_public_key_config_refuses_hs256_signed_with_the_public_key(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    private, path = rsa_key_file(tmp_path)
    config = Config.from_mapping({"TRIO_STOCK_AUTH": "jwt", "TRIO_STOCK_JWT_KEY_FILE": str(path)})
    forged = hs256_with(path.read_bytes())
    async with memory_server(config) as server:
        async with server.websocket(f"{PRICES}?access_token={forged}") as ws:
            assert await closed_code(ws) == (4001, "token is not signed with RS256")
        good = token(private, "RS256")
        async with server.websocket(f"{PRICES}?access_token={good}") as ws:
            assert (await recv(ws))["type"] == "connected"
            await send(ws, {"action": "get_subscriptions"})
            assert (await recv(ws))["type"] == "subscriptions"


async def test_an_unknown_kid_is_refused(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    private, _ = rsa_key_file(tmp_path)
    jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(private.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "2026-11"}]}))
    config = Config.from_mapping({"TRIO_STOCK_AUTH": "jwt", "TRIO_STOCK_JWT_KEY_FILE": str(path)})
    other = jwt.encode(
        {"sub": "alice", "exp": time.time() + 60}, private, "RS256", headers={"kid": "2025-01"}
    )
    async with (
        memory_server(config) as server,
        server.websocket(f"{PRICES}?access_token={other}") as ws,
    ):
        assert await closed_code(ws) == (4001, "token names an unknown key (kid)")


async def test_without_a_token_the_first_message_must_be_auth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(auth_config()) as server:
        async with server.websocket(STOCK) as ws:
            assert (await recv(ws))["type"] == "connection_established"
            await send(ws, {"action": "subscribe", "codes": ["005930"]})
            code, text = await closed_code(ws)
            assert code == 4001 and text.startswith("authentication required")
        async with server.websocket(STOCK) as ws:  # silence: closed after a few seconds
            start = trio.current_time()
            assert (await closed_code(ws))[0] == 4001
            assert 4.9 < trio.current_time() - start < 6
        assert server.state.hub.held() == []


# ---- renewal, expiry and entitlements ---------------------------------------------------


async def test_renewal_in_band_extends_the_session(autojump_clock: trio.testing.MockClock) -> None:
    short = token(exp=time.time() + 60)
    async with (
        memory_server(auth_config()) as server,
        server.websocket(f"{PRICES}?access_token={short}") as ws,
    ):
        await recv(ws)
        await send(ws, {"action": "subscribe", "symbols": ["AAPL"]})
        await recv_type(ws, "subscription")
        with trio.move_on_after(50):
            while True:
                await ws.get_message()
        await send(ws, {"action": "auth", "token": token(exp=time.time() + 600)})
        await recv_type(ws, "auth")
        with trio.move_on_after(300):  # well past the first token's expiry, reading prices
            while True:
                await ws.get_message()
        await send(ws, {"action": "get_subscriptions"})
        assert (await recv_type(ws, "subscriptions"))["symbols"] == ["AAPL"]
        start = trio.current_time()
        code, text = await closed_code(ws, within=400)  # the renewed token runs out too
        assert (code, text) == (4001, "token expired")
        assert 250 < trio.current_time() - start < 320  # ~600 s from the renewal, + grace


async def test_a_renewal_for_another_subject_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server(auth_config()) as server,
        server.websocket(f"{PRICES}?access_token={token()}") as ws,
    ):
        await recv(ws)
        await send(ws, {"action": "auth", "token": token(sub="mallory")})
        error = await recv_type(ws, "error")
        assert error["message"] == ("token refused: a renewal must be for the same subject ('sub')")
        await send(ws, {"action": "get_subscriptions"})  # still alice's session
        assert (await recv_type(ws, "subscriptions"))["subscribed_total"] == 0


async def test_narrowed_entitlements_end_the_lost_subscriptions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(auth_config()) as server:
        wide = token(markets=["KR", "US"])
        async with server.websocket(f"{PRICES}?access_token={wide}") as ws:
            await recv(ws)
            await send(ws, {"action": "subscribe", "symbols": ["AAPL", "005930"]})
            assert (await recv_type(ws, "subscription"))["subscribed_total"] == 2
            await send(ws, {"action": "auth", "token": token(markets=["KR"])})
            await recv_type(ws, "auth")
            ended = await recv_type(ws, "error")
            assert ended["failed"] == ["AAPL"]
            assert "AAPL (forbidden: not entitled to this market)" in ended["message"]
            await send(ws, {"action": "get_subscriptions"})
            assert (await recv_type(ws, "subscriptions"))["symbols"] == ["005930"]


async def test_a_symbol_outside_the_entitlement_is_an_in_band_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(auth_config()) as server:
        kr_only = token(markets=["KR"])
        async with server.websocket(f"{PRICES}?access_token={kr_only}") as ws:
            await recv(ws)
            await send(ws, {"action": "subscribe", "symbols": ["AAPL", "005930"]})
            reply = await recv_type(ws, "subscription")
            assert (reply["symbols"], reply["failed"]) == (["005930"], ["AAPL"])
            error = await recv_type(ws, "error")
            assert "AAPL (forbidden: not entitled to the US market)" in error["message"]
            await send(ws, {"action": "ping"})  # the connection stays open
            assert (await recv_type(ws, "pong"))["type"] == "pong"
        async with server.websocket(f"{STOCK}?access_token={token(markets=['US'])}") as ws:
            code, text = await closed_code(ws)  # seed 000 carries Korean codes only
            assert (code, text) == (4003, "this token is not entitled to this endpoint's market")
        assert not server.state.access.connections


async def test_max_symbols_claim_narrows_the_servers_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server(auth_config()) as server,
        server.websocket(f"{PRICES}?access_token={token(max_symbols=2)}") as ws,
    ):
        await recv(ws)
        await send(ws, {"action": "subscribe", "symbols": ["AAPL", "MSFT", "TSLA"]})
        assert (await recv_type(ws, "error"))["message"] == ("'symbols' may hold at most 2 entries")
        await send(ws, {"action": "subscribe", "symbols": ["AAPL", "MSFT"]})
        assert (await recv_type(ws, "subscription"))["subscribed_total"] == 2
        await send(ws, {"action": "subscribe", "symbols": ["TSLA"]})
        reply = await recv_type(ws, "subscription")
        assert reply["subscribed_total"] == 2 and reply["failed"] == ["TSLA"]


async def test_per_user_connection_limit_closes_4008(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limited = token(max_connections=2)
    path = f"{PRICES}?access_token={limited}"
    async with memory_server(auth_config()) as server:
        async with server.websocket(path) as first, server.websocket(path) as second:
            await recv(first)
            await recv(second)
            async with server.websocket(path) as third:
                assert await closed_code(third) == (4008, "at most 2 connections for this user")
        async with server.websocket(path) as again:  # both left: room again
            await recv(again)
            await send(again, {"action": "get_subscriptions"})
            assert (await recv_type(again, "subscriptions"))["symbols"] == []
        assert not server.state.access.connections


# ---- REST ------------------------------------------------------------------------------


async def rest(server: MemoryServer, method: str, path: str, bearer: str | None = None) -> Any:
    headers = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
    body = b'["AAPL"]' if method == "POST" else b""
    stream = server.connect_stream()
    await stream.send_all(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode().lower(), payload


async def test_rest_needs_a_token_and_admin_for_writes_and_metrics(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(auth_config()) as server:
        status, head, payload = await rest(server, "GET", f"{API}/status")
        assert status == 401
        assert 'www-authenticate: bearer realm="trio_stock", error="invalid_request"' in head
        assert json.loads(payload) == {"detail": "authentication required: a bearer token"}
        status, head, _ = await rest(server, "GET", f"{API}/status", token(exp=1))
        assert status == 401 and 'error="invalid_token"' in head
        user, admin = token(), token(admin=True)
        assert (await rest(server, "GET", f"{API}/health"))[0] == 200  # public
        assert (await rest(server, "GET", "/"))[0] == 200  # the page itself is public
        assert (await rest(server, "GET", f"{API}/status", user))[0] == 200
        assert (await rest(server, "GET", f"{API}/cache", user))[0] == 200
        assert (await rest(server, "POST", f"{API}/subscribe", user))[0] == 403
        assert (await rest(server, "GET", "/metrics", user))[0] == 403
        assert (await rest(server, "POST", f"{API}/subscribe", admin))[0] == 200
        assert (await rest(server, "GET", "/metrics", admin))[0] == 200
        await trio.sleep(5)  # AAPL trades; a KR-only token does not see it
        kr_only = token(markets=["KR"])
        status, _, payload = await rest(server, "GET", f"{API}/cache/AAPL", kr_only)
        assert status == 403
        assert json.loads(payload)["detail"] == "this token is not entitled to the US market"
        assert json.loads((await rest(server, "GET", f"{API}/cache", kr_only))[2])["data"] == {}
        assert "AAPL" in json.loads((await rest(server, "GET", f"{API}/cache", user))[2])["data"]


# ---- origins and hosts -----------------------------------------------------------------


async def upgrade_status(server: MemoryServer, origin: str | None, host: str = "gw.test") -> int:
    stream = server.connect_stream()
    origin_line = f"Origin: {origin}\r\n" if origin is not None else ""
    await stream.send_all(
        f"GET {PRICES} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{origin_line}\r\n".encode()
    )
    answer = await stream.receive_some()
    await stream.aclose()
    return int(answer.split()[1])


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 101),  # not a browser
        ("http://gw.test", 101),  # our own origin
        ("http://localhost:3000", 101),  # a dev server on loopback
        ("http://127.0.0.1:5173", 101),
        ("https://example.com", 101),  # listed
        ("https://evil.example", 403),
        ("null", 403),  # a page opened from a file: only when listed
        ("https://evil-example.com", 403),  # look-alikes
        ("https://example.com.evil", 403),
        ("http://example.com", 403),  # another scheme is another origin
        ("http://localhost.evil.com:3000", 403),
        ("http://localhost@evil.com", 403),
    ],
)
async def test_origin_allow_list_is_exact(
    autojump_clock: trio.testing.MockClock, origin: str | None, status: int
) -> None:
    config = Config.from_mapping({"TRIO_STOCK_ALLOWED_ORIGINS": "https://example.com"})
    async with memory_server(config) as server:
        assert await upgrade_status(server, origin) == status


async def test_null_and_star_origins_when_listed(autojump_clock: trio.testing.MockClock) -> None:
    for listed, origin in (("null", "null"), ("*", "https://anywhere.example")):
        config = Config.from_mapping({"TRIO_STOCK_ALLOWED_ORIGINS": listed})
        async with memory_server(config) as server:
            assert await upgrade_status(server, origin) == 101


@pytest.fixture
async def loopback_gateway() -> AsyncIterator[Gateway]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(trio_stock.serve, Config(port=0))
        nursery.cancel_scope.cancel()


async def test_host_allow_list_guards_a_loopback_gateway_against_dns_rebinding(
    loopback_gateway: Gateway,
) -> None:
    port = loopback_gateway.port
    async with httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}{API}/health"
        assert (await http.get(url)).status_code == 200
        assert (await http.get(url, headers={"Host": f"localhost:{port}"})).status_code == 200
        rebound = await http.get(url, headers={"Host": f"attacker.example:{port}"})
        assert rebound.status_code == 403
        assert "TRIO_STOCK_ALLOWED_HOSTS" in rebound.json()["detail"]


def test_public_bind_needs_auth_said_explicitly() -> None:
    from trio_stock.access import build_verifier

    with pytest.raises(ConfigError, match="--auth none"):
        build_verifier(Config(host="0.0.0.0"))
    assert (
        build_verifier(
            Config.from_mapping({"TRIO_STOCK_HOST": "0.0.0.0", "TRIO_STOCK_AUTH": "none"})
        )
        is None
    )
    with pytest.raises(ConfigError, match="never both"):
        build_verifier(auth_config(TRIO_STOCK_JWT_KEY_FILE="/nonexistent"))
    with pytest.raises(ConfigError, match="exactly one"):
        build_verifier(Config.from_mapping({"TRIO_STOCK_AUTH": "jwt"}))


# ---- secrets in logs -------------------------------------------------------------------


async def test_tokens_never_reach_a_log_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = token(), token(key="c" * 40)
    with caplog.at_level(logging.DEBUG):
        async with memory_server(auth_config()) as server:
            async with server.websocket(f"{PRICES}?access_token={good}") as ws:
                await recv(ws)
                await send(ws, {"action": "auth", "token": bad})
                await recv_type(ws, "error")
            async with server.websocket(f"{STOCK}?access_token={bad}") as ws:
                await closed_code(ws)
            await rest(server, "GET", f"{API}/status?access_token={bad}")
            await rest(server, "GET", f"{API}/status", good)
    assert caplog.records  # something was logged at DEBUG
    for record in caplog.records:
        text = record.getMessage() + (str(record.exc_info) if record.exc_info else "")
        for secret in (good, bad, SECRET):
            assert secret not in text


# ---- TLS -------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[trustme.CA, dict[str, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return ca, {"TRIO_STOCK_TLS_CERT": str(cert_path), "TRIO_STOCK_TLS_KEY": str(key_path)}


@pytest.fixture
async def tls_gateway(
    tls_files: tuple[trustme.CA, dict[str, str]],
) -> AsyncIterator[tuple[Gateway, trustme.CA]]:
    ca, files = tls_files
    config = Config.from_mapping({"TRIO_STOCK_PORT": "0", **files})
    async with trio.open_nursery() as nursery:
        yield await nursery.start(trio_stock.serve, config), ca
        nursery.cancel_scope.cancel()


async def test_https_and_wss_on_the_same_port(tls_gateway: tuple[Gateway, trustme.CA]) -> None:
    gateway, ca = tls_gateway
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with httpx.AsyncClient(verify=client_context) as http:
        health = await http.get(f"https://127.0.0.1:{gateway.port}{API}/health")
        assert health.status_code == 200 and health.json()["is_running"] is True
    async with trio_websocket.open_websocket_url(
        f"wss://127.0.0.1:{gateway.port}{PRICES}", ssl_context=client_context
    ) as ws:
        assert (await recv(ws))["type"] == "connected"


async def test_tls_1_1_and_plain_http_are_refused(
    tls_gateway: tuple[Gateway, trustme.CA],
) -> None:
    gateway, ca = tls_gateway
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(old)
    with warnings.catch_warnings():  # deprecated, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    tcp = await trio.open_tcp_stream("127.0.0.1", gateway.port or 0)
    tls = trio.SSLStream(tcp, old, server_hostname="127.0.0.1")
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(10):
        await tls.do_handshake()
    await trio.aclose_forcefully(tls)
    plain = await trio.open_tcp_stream("127.0.0.1", gateway.port or 0)
    await plain.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    with trio.fail_after(10):
        answer = await plain.receive_some()
    assert not answer.startswith(b"HTTP/1.1 200")  # no plaintext service on a TLS port
    await plain.aclose()
    async with httpx.AsyncClient(verify=False) as http:  # the server still serves TLS
        assert (await http.get(f"https://127.0.0.1:{gateway.port}{API}/health")).status_code == 200


async def test_a_stalled_tls_handshake_is_closed_at_its_deadline(
    autojump_clock: trio.testing.MockClock, tls_gateway: tuple[Gateway, trustme.CA]
) -> None:
    gateway, _ = tls_gateway
    stalled = await trio.open_tcp_stream("127.0.0.1", gateway.port or 0)
    start = trio.current_time()
    with trio.fail_after(TLS_HANDSHAKE_TIMEOUT * 3):
        assert await stalled.receive_some() == b""  # closed by the server, not by us
    assert trio.current_time() - start >= TLS_HANDSHAKE_TIMEOUT - 0.1
    await stalled.aclose()


# ---- the seeds' own pages, changed only by the token in the URL -------------------------


async def test_seed000_page_sequence_with_a_token_in_the_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server(auth_config()) as server,
        server.websocket(f"{STOCK}?access_token={token()}") as ws,
    ):
        assert (await recv(ws))["type"] == "connection_established"
        await send(ws, {"action": "subscribe", "codes": ["005930", "000660"]})
        result = await recv(ws)
        assert result["type"] == "subscription_result" and result["success"] is True
        prices = [await recv(ws) for _ in range(4)]
        assert {p["type"] for p in prices} == {"stock_price"}
        await send(ws, {"action": "unsubscribe", "codes": ["005930"]})
        assert (await recv_type(ws, "unsubscription_result"))["unsubscribed"] == ["005930"]
        await send(ws, {"action": "list_subscriptions"})
        assert (await recv_type(ws, "subscriptions_list"))["subscribed_codes"] == ["000660"]
        await send(ws, {"action": "ping"})
        assert (await recv_type(ws, "pong")) == {"type": "pong"}


# ---- the token command -----------------------------------------------------------------


def run_token_command(*args: str, env: dict[str, str], cwd: Path) -> Any:
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_STOCK_")}
    return subprocess.run(
        [sys.executable, "-m", "trio_stock", "token", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_token_command_signs_what_the_gateway_verifies(tmp_path: Path) -> None:
    from trio_stock.access import build_verifier

    env = {"TRIO_STOCK_JWT_SECRET": SECRET, "TRIO_STOCK_JWT_AUDIENCE": "trio"}
    result = run_token_command(
        "--sub", "alice", "--markets", "KR,US", "--ttl", "1h", "--admin", env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    issued = result.stdout.strip()
    verifier = build_verifier(auth_config(TRIO_STOCK_JWT_AUDIENCE="trio"))
    assert verifier is not None
    grant = verifier.verify(issued, time.time())
    assert (grant.subject, grant.admin) == ("alice", True)
    assert grant.markets is not None and {m.value for m in grant.markets} == {"KR", "US"}
    assert 3590 < grant.expires_at - time.time() <= 3600


def test_the_token_command_signs_with_a_private_key(tmp_path: Path) -> None:
    from trio_stock.auth import TokenVerifier

    private, public_path = rsa_key_file(tmp_path)
    key_path = tmp_path / "private.pem"
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = run_token_command(
        "--sub", "bob", "--private-key", str(key_path), "--ttl", "15m", env={}, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    grant = TokenVerifier.from_key_file(public_path).verify(result.stdout.strip(), time.time())
    assert grant.subject == "bob" and grant.markets is None and not grant.admin


def test_the_token_command_needs_something_to_sign_with(tmp_path: Path) -> None:
    result = run_token_command("--sub", "alice", env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert "set TRIO_STOCK_JWT_SECRET" in result.stderr
    result = run_token_command("--sub", "a", "--ttl", "soon", env={}, cwd=tmp_path)
    assert result.returncode == 2 and "90s, 15m, 1h or 7d" in result.stderr
