"""Checks of the benchmark's own Python parts (no load is generated).

Run: ``/work/venv/bin/python -m pytest bench/test_bench.py -q`` (the load generator's parser
has its own: ``node --test bench/loadgen/selftest.js``).
"""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from bench import procstat, rawws, report
from bench.stacks import Feed


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 65535, 65536, 70001])
async def test_masked_frames_round_trip(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(rawws.masked_frame(payload) + rawws.masked_frame(b"x", 9))
    reader = rawws.FrameReader(server)
    assert await reader.next_frame() == (1, payload)
    assert await reader.next_frame() == (9, b"x")


async def test_server_frames_parse_across_split_reads() -> None:
    data = rawws.frame(b"a" * 300) + rawws.frame(b"bc", 10)
    client, server = trio.testing.memory_stream_pair()
    reader = rawws.FrameReader(server)
    got: list[tuple[int, bytes]] = []

    async def read() -> None:
        while len(got) < 2:
            got.append(await reader.next_frame())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for i in range(len(data)):
            await client.send_all(data[i : i + 1])
    assert got == [(1, b"a" * 300), (10, b"bc")]


async def test_handshake_accept_key() -> None:
    # RFC 6455 §1.3's worked example.
    assert rawws._accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_conflated_counts_from_prometheus_and_json() -> None:
    prom = (
        "# HELP trio_stock_updates_conflated_total Updates replaced by newer ones.\n"
        "trio_stock_updates_conflated_total 10\ntrio_stock_ticks_published_total 99\n"
    )
    later = prom.replace(" 10\n", " 25\n")
    stats = {
        "start": [{"url": "/metrics", "body": prom}],
        "end": [{"url": "/metrics", "body": later}],
    }
    assert report.conflated_delta(stats) == {"url": "/metrics", "during_window": 15.0}
    nested = {
        "start": [{"url": "s", "body": {"hub": {"conflated": 3}}}],
        "end": [{"url": "s", "body": {"hub": {"conflated": 7}}}],
    }
    assert report.conflated_delta(nested) == {"url": "s", "during_window": 4}
    assert (
        report.conflated_delta(
            {"start": [{"url": "s", "body": {"x": 1}}], "end": [{"url": "s", "body": {"x": 2}}]}
        )
        is None
    )


def test_feed_rate_interpolates_between_reports() -> None:
    feed = Feed(proc=None, port=0, rest_port=0, api_key="")  # type: ignore[arg-type]
    feed.counts = [(10.0, 0), (11.0, 2000), (12.0, 4000)]
    assert feed.rate_between(10.5, 11.5) == pytest.approx(2000)
    assert feed.rate_between(10.0, 12.0) == pytest.approx(2000)


def test_proc_sampling_sees_this_process() -> None:
    s = procstat.read_proc(os.getpid())
    assert s is not None and s.rss_kib > 0 and s.hwm_kib >= s.rss_kib and s.cpu_s > 0
    assert procstat.read_proc(2**22 + 12345) is None
    cpus = procstat.read_cpus()
    assert "cpu0" in cpus and all(v >= 0 for v in cpus.values())
