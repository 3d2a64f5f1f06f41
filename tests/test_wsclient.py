"""The upstream WebSocket client: every frame of one read at once; pings, closes, limits."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request, TextMessage

from trio_stock.upstream.wsclient import ClientWebSocket, WebSocketClosed


class RawServer:
    """The server side of a memory stream, speaking WebSocket through wsproto by hand."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.protocol = WSConnection(ConnectionType.SERVER)

    async def accept(self) -> None:
        while True:
            self.protocol.receive_data(bytes(await self.stream.receive_some()))
            for event in self.protocol.events():
                if isinstance(event, Request):
                    await self.stream.send_all(self.protocol.send(AcceptConnection()))
                    return

    async def events(self) -> list[object]:
        self.protocol.receive_data(bytes(await self.stream.receive_some()))
        return list(self.protocol.events())


async def connected(max_message_size: int = 1 << 20) -> tuple[ClientWebSocket, RawServer]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = RawServer(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept)
        ws = await ClientWebSocket.connect(
            client_stream, "feed.test", "/", max_message_size=max_message_size
        )
    return ws, server


async def test_every_frame_of_one_read_comes_at_once() -> None:
    ws, server = await connected()
    burst = b"".join(server.protocol.send(TextMessage(data=f"tick {i}")) for i in range(50))
    await server.stream.send_all(burst)  # one write: one read on the client side
    assert await ws.get_messages() == [f"tick {i}" for i in range(50)]


async def test_fragmented_message_is_joined_and_get_message_takes_one() -> None:
    ws, server = await connected()
    data = server.protocol.send(TextMessage(data="hel", message_finished=False))
    data += server.protocol.send(TextMessage(data="lo"))
    data += server.protocol.send(TextMessage(data="next"))
    await server.stream.send_all(data)
    assert await ws.get_message() == "hello"
    assert await ws.get_message() == "next"


async def test_pings_are_answered() -> None:
    ws, server = await connected()
    await server.stream.send_all(server.protocol.send(Ping(payload=b"are you there")))
    await server.stream.send_all(server.protocol.send(TextMessage(data="after")))
    assert await ws.get_message() == "after"
    assert any(isinstance(e, Pong) and e.payload == b"are you there" for e in await server.events())


async def test_server_close_is_answered_and_reported_with_its_code() -> None:
    ws, server = await connected()
    await server.stream.send_all(server.protocol.send(CloseConnection(code=4001, reason="bye")))
    with pytest.raises(WebSocketClosed) as closed:
        await ws.get_messages()
    assert (closed.value.code, closed.value.reason) == (4001, "bye")
    assert any(isinstance(e, CloseConnection) for e in await server.events())  # the reply


async def test_lost_connection_is_1006_and_aclose_closes_the_stream() -> None:
    ws, server = await connected()
    await server.stream.aclose()
    with pytest.raises(WebSocketClosed) as closed:
        await ws.get_message()
    assert closed.value.code == 1006
    await ws.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await ws.stream.send_all(b"x")  # our side of the stream is closed too


async def test_oversized_message_ends_the_connection_with_1009() -> None:
    ws, server = await connected(max_message_size=100)
    await server.stream.send_all(server.protocol.send(TextMessage(data="x" * 500)))
    with pytest.raises(WebSocketClosed) as closed:
        await ws.get_message()
    assert closed.value.code == 1009


async def test_client_close_sends_a_close_frame_then_closes_the_stream() -> None:
    ws, server = await connected()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.aclose, 1000, "done")
        events = await server.events()
        close = next(e for e in events if isinstance(e, CloseConnection))
        assert close.code == 1000
        await server.stream.send_all(server.protocol.send(close.response()))
    assert ws.closed is not None
