"""Client requests structured by the converter: the texts the seeds and the README fix,
unknown keys ignored, both WebSocket protocols and the REST bodies (issue 15)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing

from trio_stock import Config
from trio_stock.converter import converter
from trio_stock.endpoints.requests import (
    CodesRequest,
    InvalidRequest,
    SymbolList,
    SymbolsBody,
    SymbolsRequest,
    structure_body,
    structure_request,
)

from .clients import MemoryServer, memory_server, recv, recv_type, send

STOCK = "/ws/stock/"
PRICES = "/api/v2/realtime/ws/prices"
API = "/api/v2/realtime"

# ---- without I/O ---------------------------------------------------------------------

WEBSOCKET_CASES: list[tuple[dict[str, Any], str]] = [
    ({"action": "subscribe"}, "'{key}' must be a list of strings"),
    ({"action": "subscribe", "{key}": None}, "'{key}' must be a list of strings"),
    ({"action": "subscribe", "{key}": "005930"}, "'{key}' must be a list of strings"),
    ({"action": "subscribe", "{key}": [5930]}, "'{key}' must be a list of strings"),
    ({"action": "subscribe", "{key}": ["005930", None]}, "'{key}' must be a list of strings"),
    ({"action": "subscribe", "{key}": {"005930": 1}}, "'{key}' must be a list of strings"),
    ({"action": "subscribe", "{key}": []}, "'{key}' must not be empty"),
    ({"action": "subscribe", "{key}": ["A", "B", "C"]}, "'{key}' may hold at most 2 entries"),
]


def _with_key(message: dict[str, Any], key: str) -> dict[str, Any]:
    return {k.format(key=key): v for k, v in message.items()}


@pytest.mark.parametrize(("message", "text"), WEBSOCKET_CASES)
@pytest.mark.parametrize(
    ("request_type", "key"), [(CodesRequest, "codes"), (SymbolsRequest, "symbols")]
)
def test_websocket_request_errors_keep_their_texts(
    message: dict[str, Any], text: str, request_type: type[Any], key: str
) -> None:
    with pytest.raises(InvalidRequest) as error:
        structure_request(_with_key(message, key), request_type, max_symbols=2)
    assert str(error.value) == text.format(key=key)


def test_websocket_requests_ignore_unknown_keys_and_keep_symbols_as_sent() -> None:
    message = {"action": "subscribe", "codes": [" 005930 ", "x"], "id": 7, "symbols": 5}
    assert structure_request(message, CodesRequest, 200) == CodesRequest(
        SymbolList((" 005930 ", "x"))
    )
    message = {"action": "unsubscribe", "symbols": ["aapl"], "requestId": "r1", "codes": None}
    assert structure_request(message, SymbolsRequest, 200) == SymbolsRequest(SymbolList(("aapl",)))


def test_the_bound_is_the_clients_own() -> None:
    message = {"action": "subscribe", "symbols": ["A", "B", "C"]}
    assert structure_request(message, SymbolsRequest, 3).symbols == ("A", "B", "C")
    with pytest.raises(InvalidRequest, match=r"^'symbols' may hold at most 1 entries$"):
        structure_request(message, SymbolsRequest, 1)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'"AAPL"', "body must be a JSON list of symbol strings"),
        (b"null", "body must be a JSON list of symbol strings"),
        (b"5", "body must be a JSON list of symbol strings"),
        (b"[1]", "body must be a JSON list of symbol strings"),
        (b'{"symbols": "AAPL"}', "body must be a JSON list of symbol strings"),
        (b'{"symbols": null}', "body must be a JSON list of symbol strings"),
        (b'{"codes": ["005930"]}', "body must be a JSON list of symbol strings"),
        (b"[]", "the list of symbols is empty"),
        (b'{"symbols": []}', "the list of symbols is empty"),
        (b"[" + b'"A",' * 100 + b'"B"]', "at most 100 symbols per request"),
    ],
)
def test_rest_body_errors_keep_their_texts(body: bytes, text: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        structure_body(body)
    assert str(error.value) == text


def test_rest_body_is_the_seeds_bare_list_or_an_object_with_symbols() -> None:
    assert structure_body(b'["AAPL", "005930"]') == SymbolsBody(SymbolList(("AAPL", "005930")))
    assert structure_body(b'{"symbols": ["AAPL"], "note": 1}') == SymbolsBody(SymbolList(("AAPL",)))
    assert structure_body(b"[" + b'"A",' * 99 + b'"B"]').symbols[-1] == "B"
    with pytest.raises(orjson.JSONDecodeError):
        structure_body(b"{nope")


def test_the_converter_structures_requests_directly() -> None:
    """The checks are the converter's hooks and validators, not a layer beside it."""
    with pytest.raises(InvalidRequest, match=r"^'codes' must not be empty$"):
        converter.structure({"codes": []}, CodesRequest)
    with pytest.raises(InvalidRequest, match=r"^body must be a JSON list of symbol strings$"):
        converter.structure("AAPL", SymbolsBody)
    assert converter.structure(["MSFT"], SymbolsBody) == SymbolsBody(SymbolList(("MSFT",)))


# ---- over the wire -------------------------------------------------------------------


def fast_sim() -> Config:
    return Config(sim_ticks_per_second=5.0, sim_always_open=True)


async def test_seed000_client_extra_keys_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(fast_sim()) as server, server.websocket(STOCK) as ws:
        await recv(ws)
        await send(ws, {"action": "subscribe", "codes": ["005930"], "id": 1, "lang": "ko"})
        result = await recv_type(ws, "subscription_result")
        assert (result["subscribed"], result["failed"], result["error"]) == (["005930"], [], None)
        await send(ws, {"action": "unsubscribe", "codes": ["005930"], "symbols": "ignored"})
        released = await recv_type(ws, "unsubscription_result")
        assert (released["unsubscribed"], released["total_subscribed"]) == (["005930"], 0)


async def test_seed003_client_extra_keys_are_ignored_and_errors_keep_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(fast_sim()) as server, server.websocket(PRICES) as ws:
        await recv(ws)
        await send(ws, {"action": "subscribe", "symbols": ["aapl"], "requestId": "x"})
        assert await recv_type(ws, "subscription") == {
            "type": "subscription",
            "action": "subscribed",
            "symbols": ["AAPL"],
            "subscribed_total": 1,
        }
        await send(ws, {"action": "subscribe", "symbols": "MSFT"})
        error = await recv_type(ws, "error")
        assert error == {"type": "error", "message": "'symbols' must be a list of strings"}
        await send(ws, {"action": "unsubscribe", "symbols": []})
        error = await recv_type(ws, "error")
        assert error == {"type": "error", "message": "'symbols' must not be empty"}
        await send(ws, {"action": "get_subscriptions", "symbols": 5})
        assert (await recv_type(ws, "subscriptions"))["symbols"] == ["AAPL"]


async def post(server: MemoryServer, path: str, body: bytes) -> tuple[int, Any]:
    """``POST path`` with ``body`` over a memory stream: the status and the parsed JSON."""
    stream = server.connect_stream()
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    await stream.send_all(head.encode() + b"Connection: close\r\n\r\n" + body)
    answer = b""
    while chunk := await stream.receive_some():
        answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), orjson.loads(rest.partition(b"\r\n\r\n")[2])


async def test_rest_accepts_both_bodies_and_answers_errors_with_their_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server(fast_sim()) as server:
        status, body = await post(server, f"{API}/subscribe", b'["AAPL"]')
        assert (status, body["symbols"], body["subscribed_total"]) == (200, ["AAPL"], 1)
        status, body = await post(server, f"{API}/subscribe", b'{"symbols": ["msft"], "x": 1}')
        assert (status, body["symbols"], body["subscribed_total"]) == (200, ["MSFT"], 2)
        status, body = await post(server, f"{API}/unsubscribe", b'{"symbols": ["AAPL", "MSFT"]}')
        assert (status, body["symbols"], body["subscribed_total"]) == (200, ["AAPL", "MSFT"], 0)
        for raw, expected in [
            (b"{nope", (400, 'body must be JSON: a list of symbols, e.g. ["AAPL", "005930"]')),
            (b'{"symbols": "AAPL"}', (422, "body must be a JSON list of symbol strings")),
            (b'{"symbols": []}', (422, "the list of symbols is empty")),
        ]:
            status, body = await post(server, f"{API}/subscribe", raw)
            assert (status, body) == (expected[0], {"detail": expected[1]})
