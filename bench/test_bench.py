"""Checks of the benchmark's own Python parts (no load is generated).

Run: ``/work/venv/bin/python -m pytest bench/test_bench.py -q`` (the load generator's parser
has its own: ``node --test bench/loadgen/selftest.js``).
"""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from bench import cluster, procstat, rawws, report
from bench.report import cluster_window
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


def test_conflated_counts_of_a_cluster_sum_its_nodes_metrics() -> None:
    def metrics(n: int) -> str:
        return f"trio_stock_updates_conflated_total {n}\n"

    stats = {
        "start": [
            {"url": "e1/metrics", "body": metrics(1)},
            {"url": "e2/metrics", "body": metrics(2)},
        ],
        "end": [
            {"url": "e1/metrics", "body": metrics(4)},
            {"url": "e2/metrics", "body": metrics(7)},
        ],
    }
    assert report.conflated_delta(stats) == {"url": "e1/metrics + e2/metrics", "during_window": 8.0}


def test_redis_info_parsed_and_turned_into_rates() -> None:
    text = (
        "# Stats\r\ntotal_commands_processed:100\r\ninstantaneous_ops_per_sec:7\r\n"
        "# Commandstats\r\ncmdstat_publish:calls=40,usec=80,usec_per_call=2.00,rejected_calls=0\r\n"
        "# CPU\r\nused_cpu_user:1.5\r\n"
    )
    start = cluster._parse_info(text)
    assert start["cmdstat_publish.calls"] == 40 and start["used_cpu_user"] == 1.5
    end = {**start, "total_commands_processed": 300, "cmdstat_publish.calls": 140}
    end["instantaneous_ops_per_sec"] = 9  # a gauge, not a counter: left out
    assert cluster.redis_delta(start, end, 2.0) == {
        "cmdstat_publish.calls": 50.0,
        "total_commands_processed": 100.0,
    }


def test_cluster_window_reads_the_redis_hop_from_health() -> None:
    def health(received: int, counts: list[int]) -> dict[str, object]:
        hop = {
            "session": "fmp",
            "received": received,
            "dropped_old": 0,
            "lag_buckets": [0.001, 0.002, 0.005, None],
            "lag_counts": counts,
            "lag_sum": received * 0.0015,
        }
        return {"cluster": {"node": "edge1", "role": "edge", "leases": [], "hops": [hop]}}

    lgr = {
        "window": {"seconds": 2.0},
        "per_url": [{"url": "ws://e1", "delivered_per_s": 10.0, "symbols": 100}],
        "server_stats": {
            "start": [{"url": "h", "body": health(100, [50, 100, 100, 100])}],
            "end": [{"url": "h", "body": health(300, [90, 198, 200, 200])}],
        },
    }
    (node,) = cluster_window(lgr)["nodes"]
    (hop,) = node["hops"]
    assert hop["received_per_s"] == 100.0
    assert hop["lag_window_counts"] == [40, 98, 100, 100]
    assert hop["lag_p50_le_ms"] == 2.0 and hop["lag_p99_le_ms"] == 5.0
    assert hop["lag_mean_ms"] == pytest.approx(1.5)


def test_redis_cost_writes_commands_in_resp() -> None:
    from bench.redis_cost import command

    assert command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert (
        command(b"EVALSHA", "ab", 1, b"k")
        == b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n"
    )
