"""A cluster node's health and metrics: node, role, Redis, leases, demand, quota, the hop."""

from __future__ import annotations

import math

from trio_stock.cluster.statistics import HopStatistics, LeaseStatistics, NodeStatistics
from trio_stock.endpoints.metrics import cluster_lines

NODE = NodeStatistics(
    node="host-1-ab12",
    role="all",
    redis="redis://:***@127.0.0.1:6379",
    redis_connected=True,
    redis_last_error=None,
    beats=7,
    leases=(LeaseStatistics("kis", True, 17, 1.7e9), LeaseStatistics("fmp", False, None, None)),
    demand={"kis": 3, "fmp": 0},
    holder_demand={"kis": {"host-1-ab12": 3, "host-2-cd34": 38}},
    holder_quota={"kis": (40, 40)},
    hops=(
        HopStatistics(
            session="kis",
            stale=False,
            received=5,
            dropped_old=1,
            lag_buckets=(0.001, 0.01, math.inf),
            lag_counts=(2, 4, 5),
            lag_sum=0.0125,
        ),
    ),
)


def test_cluster_metrics_name_the_node_its_leases_demand_quota_and_hop() -> None:
    text = "\n".join(cluster_lines(NODE))
    assert 'trio_stock_cluster_node_info{node="host-1-ab12",role="all"} 1' in text
    assert "trio_stock_cluster_redis_connected 1" in text
    assert 'trio_stock_cluster_lease_held{session="kis"} 1' in text
    assert 'trio_stock_cluster_lease_held{session="fmp"} 0' in text
    assert 'trio_stock_cluster_holder_demand_symbols{session="kis",node="host-2-cd34"} 38' in text
    assert 'trio_stock_cluster_quota_used{session="kis"} 40' in text
    assert 'trio_stock_cluster_quota{session="kis"} 40' in text
    assert 'trio_stock_cluster_hop_lag_seconds_bucket{session="kis",le="0.01"} 4' in text
    assert 'trio_stock_cluster_hop_lag_seconds_bucket{session="kis",le="+Inf"} 5' in text
    assert 'trio_stock_cluster_hop_lag_seconds_count{session="kis"} 5' in text
    assert 'trio_stock_cluster_hop_lag_seconds_sum{session="kis"} 0.0125' in text
    assert 'trio_stock_cluster_hop_dropped_old_total{session="kis"} 1' in text
    assert "***" not in text  # the Redis URL (and its password) is not a metric


def test_every_family_is_declared_once_before_its_samples() -> None:
    declared: list[str] = []
    for line in cluster_lines(NODE):
        if line.startswith("# TYPE "):
            declared.append(line.split()[2])
        elif not line.startswith("#"):
            family = line.split("{")[0].split(" ")[0]
            base = family.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
            assert declared and base.startswith(declared[-1]), line
    assert len(declared) == len(set(declared))
