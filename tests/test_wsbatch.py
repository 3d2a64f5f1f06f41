"""Frames built once per update are exactly what wsproto would send, at every length."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from trio_stock.wsbatch import frame_payload, text_frame


def server_connection() -> WSConnection:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    next(server.events())
    server.send(AcceptConnection())
    return server


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_text_frame_matches_wsproto_framing(size: int) -> None:
    payload = ("가" * (size // 3) + "x" * (size % 3)).encode()
    assert text_frame(payload) == server_connection().send(TextMessage(data=payload.decode()))
    assert frame_payload(text_frame(payload)) == payload
