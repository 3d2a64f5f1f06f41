"""The server-side WebSocket: framing, the handshake answer, parsing and the direct write path."""

from __future__ import annotations

import os
import socket
import struct

import attrs
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from trio_stock.transport.wsserver import (
    ConnectionClosed,
    ServerWebSocket,
    WebSocketLimits,
    frame_payload,
    handshake_response,
    text_frame,
)

LIMIT = 1024
LIMITS = WebSocketLimits(max_message_bytes=LIMIT)


def server_connection() -> WSConnection:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    next(server.events())
    server.send(AcceptConnection())
    return server


def masked(payload: bytes, opcode: int = 1, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client-to-server frame (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    bit = 0x80 if mask else 0
    head = bytes((first, bit | n)) if n < 126 else struct.pack("!BBH", first, bit | 126, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_text_frame_matches_wsproto_framing(size: int) -> None:
    payload = ("가" * (size // 3) + "x" * (size % 3)).encode()
    assert text_frame(payload) == server_connection().send(TextMessage(data=payload.decode()))
    assert frame_payload(text_frame(payload)) == payload


def test_handshake_answer_carries_the_rfc_accept_key() -> None:
    # RFC 6455 §1.3's worked example
    answer = handshake_response("dGhlIHNhbXBsZSBub25jZQ==")
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")


async def test_bytes_that_came_with_the_handshake_are_read_first() -> None:
    client, server = trio.testing.memory_stream_pair()
    late = masked(b"late")
    ws = ServerWebSocket(server, masked(b"early") + late[:3], limits=LIMITS)
    assert await ws.receive_messages() == ["early"]
    await client.send_all(late[3:])  # the rest of the frame that began with the handshake
    assert await ws.receive_messages() == ["late"]


async def test_every_message_of_one_read_comes_at_once_and_fragments_join() -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    await client.send_all(
        masked(b'{"a":1}') + masked(b'{"b":', fin=False) + masked(b"2}", opcode=0) + masked(b"x")
    )
    assert await ws.receive_messages() == ['{"a":1}', '{"b":2}', "x"]


async def test_a_ping_queues_a_pong_for_the_writer_and_wakes_it() -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    woken = []
    ws.wake = lambda: woken.append(True)
    await client.send_all(masked(b"hi", opcode=9) + masked(b"m"))
    assert await ws.receive_messages() == ["m"]
    assert woken == [True]
    assert ws.take_control() == [b"\x8a\x02hi"]
    assert ws.take_control() == []  # taken once


async def test_only_the_newest_ping_is_answered_so_a_flood_costs_one_pong() -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=attrs.evolve(LIMITS, control_burst=1000))
    await client.send_all(b"".join(masked(b"%d" % i, opcode=9) for i in range(500)))
    await client.send_all(masked(b"m"))
    assert await ws.receive_messages() == ["m"]
    assert ws.take_control() == [b"\x8a\x03499"]  # RFC 6455 §5.5.3 allows this


@pytest.mark.parametrize("opcode", [9, 10])  # pings, and unsolicited pongs
async def test_too_many_control_frames_close_with_1008(opcode: int) -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    await client.send_all(masked(b"x", opcode=opcode) * (LIMITS.control_burst + 1))
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive_messages()
    assert (closed.value.code, closed.value.reason) == (
        1008,
        "too many control frames (pings and pongs)",
    )


async def test_an_unsolicited_pong_does_not_answer_our_ping() -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    ws.ping(now=5.0)
    await client.send_all(masked(b"other", opcode=10) + masked(b"m"))
    await ws.receive_messages()
    assert ws.unanswered_ping_since == 5.0


async def test_a_message_in_too_many_fragments_closes_with_1008() -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    empty = masked(b"", opcode=0, fin=False)
    await client.send_all(masked(b"{", fin=False) + empty * (LIMITS.max_fragments - 2))
    await client.send_all(masked(b"}", opcode=0))  # the 64th frame completes it: allowed
    assert await ws.receive_messages() == ["{}"]
    await client.send_all(masked(b"{", fin=False) + empty * (LIMITS.max_fragments - 1))
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive_messages()
    assert (closed.value.code, closed.value.reason) == (1008, "message in more than 64 fragments")


async def test_a_fragmented_message_must_be_finished_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    await client.send_all(masked(b"{", fin=False))
    start = trio.current_time()
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive_messages()
    assert closed.value.code == 1008
    assert trio.current_time() - start == pytest.approx(LIMITS.fragment_timeout)
    # A complete message resets the clock: an idle connection has no deadline.
    client2, server2 = trio.testing.memory_stream_pair()
    ws2 = ServerWebSocket(server2, limits=LIMITS)
    await client2.send_all(masked(b"{", fin=False) + masked(b"}", opcode=0))
    assert await ws2.receive_messages() == ["{}"]
    with trio.move_on_after(LIMITS.fragment_timeout * 10) as idle:
        await ws2.receive_messages()
    assert idle.cancelled_caught


async def test_a_write_the_peer_does_not_take_ends_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _client, server = trio.testing.lockstep_stream_pair()  # nothing is taken unless read
    ws = ServerWebSocket(server, limits=LIMITS)
    start = trio.current_time()
    with pytest.raises(ConnectionClosed) as closed:
        await ws.send(text_frame(b"x"))
    assert closed.value.code == 1006
    assert trio.current_time() - start == pytest.approx(LIMITS.send_timeout)


async def test_a_pong_answers_the_servers_ping() -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    ws.ping(now=5.0)
    ws.ping(now=7.0)
    assert ws.unanswered_ping_since == 5.0  # the oldest unanswered one counts
    assert ws.take_control() == [b"\x89\x04tsk?"]  # one ping is enough
    await client.send_all(masked(b"tsk?", opcode=10) + masked(b"m"))
    await ws.receive_messages()
    assert ws.unanswered_ping_since is None


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (masked(b"x" * (LIMIT + 1)), 1009),  # over the message limit
        (masked(b"x" * 1000, fin=False) + masked(b"x" * 100, opcode=0), 1009),  # fragments count
        (masked(b"\xff\xfe"), 1007),  # not UTF-8
        (masked(b"x", mask=False), 1002),  # a client must mask (RFC 6455 §5.1)
        (masked(b"x", opcode=3), 1002),  # a reserved opcode
    ],
)
async def test_broken_or_oversized_input_ends_with_the_right_code(data: bytes, code: int) -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    await client.send_all(data)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive_messages()
    assert closed.value.code == code
    assert not closed.value.by_peer
    with pytest.raises(ConnectionClosed):  # and it stays closed
        await ws.receive_messages()


async def test_the_peers_close_is_answered_with_its_code() -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    await client.send_all(masked(struct.pack("!H", 4000) + b"bye", opcode=8))
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive_messages()
    assert (closed.value.code, closed.value.reason, closed.value.by_peer) == (4000, "bye", True)
    await ws.close(1000, "", grace=1)
    assert await client.receive_some() == b"\x88\x02" + struct.pack("!H", 4000)
    assert await client.receive_some() == b""  # and the stream is closed


async def test_our_close_waits_for_the_answer_within_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    start = trio.current_time()
    await ws.close(1001, "x" * 300, grace=2)  # the client never answers
    assert trio.current_time() - start == pytest.approx(2)
    frame = await client.receive_some()
    assert frame[:4] == b"\x88\x7d\x03\xe9"  # 125 bytes: code + reason cut to fit
    assert frame[4:] == b"x" * 123


async def test_lost_connection_is_1006() -> None:
    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    await client.aclose()
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive_messages()
    assert closed.value.code == 1006


async def test_direct_socket_write_finishes_what_the_kernel_did_not_take() -> None:
    """More than a socket buffer holds: the first write is partial, the rest waits its turn."""
    left, right = trio.socket.socketpair()
    with left, right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        ws = ServerWebSocket(trio.SocketStream(left), limits=LIMITS)
        peer = trio.SocketStream(right)
        data = os.urandom(8 * 1024 * 1024)
        received = bytearray()

        async def read_all() -> None:
            while len(received) < len(data):
                received.extend(await peer.receive_some(1 << 20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await ws.send(data)
    assert len(received) == len(data)
    assert received == data


async def test_direct_socket_write_to_a_closed_peer_is_1006() -> None:
    left, right = trio.socket.socketpair()
    with left:
        ws = ServerWebSocket(trio.SocketStream(left), limits=LIMITS)
        right.close()
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(3):  # the first write may still land in the buffer
                await ws.send(b"x" * 100_000)
    assert closed.value.code == 1006


async def test_a_closed_connection_leaves_no_reference_cycle() -> None:
    """Its objects go with their last reference, not at some later full collection."""
    import gc
    import weakref

    client, server = trio.testing.memory_stream_pair()
    ws = ServerWebSocket(server, limits=LIMITS)
    await client.aclose()
    for _ in range(2):
        with pytest.raises(ConnectionClosed):
            await ws.receive_messages()
    gone = weakref.ref(ws)
    gc.disable()
    try:
        del ws, server
        assert gone() is None
    finally:
        gc.enable()
