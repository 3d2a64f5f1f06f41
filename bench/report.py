"""Turn the raw run records into medians and spread, a Markdown table and PNG plots.

One PNG per workload: the latency CDF, the delivered rate per second, and the p99 latency per
second (so growth over the window shows), each from the median run (by p99) of every stack.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

Rec = dict[str, Any]


# ---------------------------------------------------------------- server statistics
def _conflated_in(body: Any) -> float | None:
    """Sum of every numeric field whose name mentions conflation (JSON or Prometheus text)."""
    total, found = 0.0, False
    if isinstance(body, dict):
        for k, v in body.items():
            if (
                "conflat" in str(k).lower()
                and isinstance(v, int | float)
                and not isinstance(v, bool)
            ):
                total, found = total + v, True
            elif isinstance(v, dict | list):
                sub = _conflated_in(v)
                if sub is not None:
                    total, found = total + sub, True
    elif isinstance(body, list):
        for v in body:
            sub = _conflated_in(v)
            if sub is not None:
                total, found = total + sub, True
    elif isinstance(body, str):
        for line in body.splitlines():
            if "conflat" in line.lower() and not line.startswith("#"):
                try:
                    total, found = total + float(line.split()[-1]), True
                except ValueError:
                    continue
    return total if found else None


def conflated_delta(stats: dict[str, Any]) -> dict[str, Any] | None:
    """Conflated updates during the window, from the first stats URL that reports them.

    Several ``/metrics`` URLs (a cluster's nodes) are summed; other URLs of the same server
    report the same hub again, so only the first of those counts.
    """
    found = []
    for start, end in zip(stats.get("start", []), stats.get("end", []), strict=False):
        a, b = _conflated_in(start.get("body")), _conflated_in(end.get("body"))
        if a is not None and b is not None:
            found.append((str(start["url"]), b - a))
    metrics = [(url, n) for url, n in found if url.endswith("/metrics")]
    if len(metrics) > 1:
        return {
            "url": " + ".join(u for u, _ in metrics),
            "during_window": sum(n for _, n in metrics),
        }
    return {"url": found[0][0], "during_window": found[0][1]} if found else None


# ---------------------------------------------------------------- a cluster's window
def _hop_quantile(bounds: list[float | None], counts: list[int], q: float) -> float | None:
    """The upper bound (s) of the bucket holding quantile ``q`` (None: above the last bound)."""
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= q * total:
            return bound
    return None


def cluster_window(lgr: dict[str, Any]) -> dict[str, Any]:
    """Per node of a cluster, from its health at the window's start and end: the Redis hop.

    ``hops``: states each edge read from Redis per second and the hop's lag (holder's write
    → edge's read) as the bucket bounds of its p50 and p99 in the window (the buckets are
    1, 2, 5, 10, 20, 50 ms ...: coarse). ``per_url``: what the load generator got per edge.
    """
    stats = lgr.get("server_stats", {})
    seconds = lgr["window"]["seconds"]
    nodes = []
    for start, end in zip(stats.get("start", []), stats.get("end", []), strict=False):
        a, b = start.get("body"), end.get("body")
        if not (isinstance(a, dict) and isinstance(b, dict)) or "cluster" not in b:
            continue
        ca, cb = a.get("cluster") or {}, b["cluster"] or {}
        node: dict[str, Any] = {"url": end["url"], "node": cb.get("node"), "role": cb.get("role")}
        node["leases_held"] = [x["session"] for x in cb.get("leases", []) if x.get("held")]
        node["holder_quota"] = cb.get("holder_quota")
        hops = []
        before = {h["session"]: h for h in ca.get("hops", [])}
        for h in cb.get("hops", []):
            h0 = before.get(h["session"], {})
            c0 = h0.get("lag_counts") or [0] * len(h["lag_counts"])
            counts = [y - x for x, y in zip(c0, h["lag_counts"], strict=True)]
            received = h["received"] - h0.get("received", 0)
            if received <= 0:
                continue
            bounds = h["lag_buckets"]
            hops.append(
                {
                    "session": h["session"],
                    "received_per_s": received / seconds,
                    "dropped_old": h["dropped_old"] - h0.get("dropped_old", 0),
                    "lag_mean_ms": (h["lag_sum"] - h0.get("lag_sum", 0.0)) * 1e3 / received,
                    "lag_p50_le_ms": _ms(_hop_quantile(bounds, counts, 0.5)),
                    "lag_p99_le_ms": _ms(_hop_quantile(bounds, counts, 0.99)),
                    "lag_buckets_ms": [_ms(x) for x in bounds],
                    "lag_window_counts": counts,
                }
            )
        node["hops"] = hops
        nodes.append(node)
    return {"nodes": nodes, "per_url": lgr.get("per_url", [])}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


# ---------------------------------------------------------------- one record
def _get(rec: Rec, path: str) -> float | None:
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or cur.get(part) is None:
            return None
        cur = cur[part]
    return float(cur) if isinstance(cur, int | float) else None


def one_line(rec: Rec, seconds: float) -> str:
    head = f"[{rec['workload']:9} {rec['stack']:10} run {rec.get('run', 0)}]"
    if "skipped" in rec:
        return f"{head} skipped: {rec['skipped']}"
    if "error" in rec:
        return f"{head} ERROR: {rec['error']}"
    lg = rec["loadgen"]
    lat = lg["latency"]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    gen, feed = rec["loadgen_cpu_proc"] or 0, rec["feed_cpu_proc"] or 0
    return (
        f"{head} delivered {lg['delivered_per_s']:.0f}/s of {rec['expected_per_s']:.0f} "
        f"p50 {fmt(lat['p50_ms'])} p99 {fmt(lat['p99_ms'])} max {fmt(lat['max_ms'])} ms; "
        f"server CPU {rec['server_cpu']:.0%} peak {rec['server_peak_rss_kib'] / 1024:.0f} MiB; "
        f"loadgen CPU {gen:.0%} feed CPU {feed:.0%}; "
        f"others on CPU 0/1 {rec['other_load_server_core']:.0%}/{rec['other_load_client_core']:.0%}"
        f" ({seconds:.0f} s)"
    )


# ---------------------------------------------------------------- aggregation
def _groups(records: list[Rec]) -> dict[tuple[str, str], list[Rec]]:
    out: dict[tuple[str, str], list[Rec]] = {}
    for r in records:
        if "loadgen" in r and "error" not in r:  # a run with an error is listed, not counted
            out.setdefault((r["workload"], r["stack"]), []).append(r)
    return out


def _stat(recs: list[Rec], f: Callable[[Rec], float | None]) -> tuple[float, float, float] | None:
    vals = [v for v in (f(r) for r in recs) if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def _fmt(s: tuple[float, float, float] | None, fmt: str = "{:.1f}", spread: bool = True) -> str:
    if s is None:
        return "–"
    med, lo, hi = s
    text = fmt.format(med)
    if spread and hi != lo:
        text += f" ({fmt.format(lo)}–{fmt.format(hi)})"
    return text


def _p99_trend(rec: Rec) -> float | None:
    """p99 of the last third of the window over the first third (>1: latency grows)."""
    secs = [s for s in rec["loadgen"]["per_second"] if s.get("p99_ms") is not None]
    if len(secs) < 3:
        return None
    third = len(secs) // 3
    first = statistics.median(s["p99_ms"] for s in secs[:third])
    last = statistics.median(s["p99_ms"] for s in secs[-third:])
    return last / first if first > 0 else None


def _m(path: str) -> Callable[[Rec], float | None]:
    return lambda r: _get(r, path)


def _rss_growth_mib(r: Rec) -> float:
    return float(r["server_rss_window_end_kib"] - r["server_rss_window_start_kib"]) / 1024


def _conflated_per_s(r: Rec) -> float | None:
    c = r.get("conflated")
    return c["during_window"] / r["loadgen"]["window"]["seconds"] if c else None


def _cpu_per_update(r: Rec) -> float | None:
    """Server CPU time per delivered update: robust to a shared machine, unlike rates."""
    rate = _get(r, "loadgen.delivered_per_s")
    return r["server_cpu"] * 1e6 / rate if rate else None


def _cpu1(r: Rec) -> float:
    return float((r["loadgen_cpu_proc"] or 0) + (r["feed_cpu_proc"] or 0))


def _other(r: Rec) -> float | None:
    return r.get("other_load_server_core")


# (header, metric, format, show spread)
MAIN_COLUMNS: list[tuple[str, Callable[[Rec], float | None], str, bool]] = [
    ("feed ticks/s", lambda r: r.get("feed_rate_actual"), "{:,.0f}", False),
    ("delivered/s", _m("loadgen.delivered_per_s"), "{:,.0f}", True),
    ("of expected", _m("loadgen.delivered_fraction"), "{:.0%}", False),
    ("fresh/s (≤100 ms)", _m("loadgen.fresh_per_s"), "{:,.0f}", False),
    ("p50 ms", _m("loadgen.latency.p50_ms"), "{:.1f}", False),
    ("p99 ms", _m("loadgen.latency.p99_ms"), "{:.1f}", True),
    ("max ms", _m("loadgen.latency.max_ms"), "{:.0f}", False),
    ("server CPU", lambda r: r["server_cpu"], "{:.0%}", False),
    ("server CPU µs / update", _cpu_per_update, "{:.1f}", False),
    ("peak RSS MiB", lambda r: r["server_peak_rss_kib"] / 1024, "{:.0f}", False),
    ("worst client", _m("loadgen.per_client_delivered_fraction.min"), "{:.0%}", False),
    ("conflated/s", _conflated_per_s, "{:,.0f}", False),
    ("CPU 1: gen + feed", _cpu1, "{:.0%}", False),
    ("CPU 1 busy", lambda r: r.get("core_busy", {}).get("cpu1"), "{:.0%}", False),
    ("others on CPU 0", _other, "{:.0%}", False),
]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(meta: dict[str, Any], records: list[Rec]) -> str:
    """The results as Markdown: the main table, idle, slow, W3 growth and the targets."""
    m = meta["machine"]
    lines = [
        f"Benchmark {meta['stamp']} — `{meta['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
        f"Node {m['node']}; load average at start {' '.join(m['loadavg_at_start'])}. "
        f"Server on CPU 0, feed + load generator on CPU 1. {meta['runs']} run(s) per point, "
        f"{meta['warmup_s']:g} s warm-up, {meta['duration_s']:g} s window; median (min–max).",
        "",
    ]
    cap = meta.get("loadgen_capacity")
    if cap:
        lines += [
            f"Load generator check: fed flat out (bench/loadgen/blaster.js) it absorbed "
            f"{cap['per_s']:,.0f} updates/s with {cap['clients']} clients at {cap['cpu']:.0%} "
            f"of a core ({cap['us_per_update']:.2f} µs CPU per update).",
            "",
        ]
    if meta.get("quick"):
        lines += ["**QUICK SMOKE RUN: short windows, one run each — not a result.**", ""]
    g = _groups(records)
    rows = [
        [wl, st] + [_fmt(_stat(recs, f), fmt, spread) for _, f, fmt, spread in MAIN_COLUMNS]
        for (wl, st), recs in g.items()
        if wl != "idle"
    ]
    lines += _table(["workload", "stack"] + [c[0] for c in MAIN_COLUMNS], rows)
    lines += _cluster_table(g)
    lines += _idle_table(g) + _slow_table(g) + _w3_table(g) + _targets(g)
    skipped = sorted({f"{r['stack']} ({r['skipped']})" for r in records if "skipped" in r})
    errors = [
        f"{r['workload']}/{r['stack']} run {r.get('run')}: {r['error']}"
        for r in records
        if "error" in r
    ]
    short = [
        f"{wl}/{st}: {c['subscribed']} of {c['total']} clients subscribed"
        for (wl, st), recs in g.items()
        for r in recs
        if (c := r["loadgen"]["clients"])["subscribed"] < c["total"]
    ]
    backlog = [
        f"{wl}/{st}"
        for (wl, st), recs in g.items()
        if (_stat(recs, _m("loadgen.delivered_fraction")) or (0, 0, 0))[0] > 1.02
    ]
    if backlog:
        backlog = [
            ", ".join(backlog) + " delivered above 100 % of expected: draining a backlog from "
            "before the window, not a steady state (a longer warm-up helps)"
        ]
    profiled = [
        f"{r['workload']}/{r['stack']} run {r.get('run')}" for r in records if r.get("profiled")
    ]
    for title, items in (
        ("Skipped", skipped),
        ("Errors", errors),
        ("Incomplete", short),
        ("Not steady", backlog),
        ("Profiled with py-spy attached (slightly slower)", profiled),
    ):
        if items:
            lines += ["", f"{title}: " + "; ".join(items)]
    lines += [
        "",
        "Latency = client receipt − upstream emit (`t`); servers send epoch ms, so a value may "
        "over-state the true latency by up to 1 ms. CPU is a fraction of one core, from /proc; "
        "'others on CPU 0' is what processes outside the benchmark took from the server's core; "
        "'CPU 1 busy' near 100 % means the client core (generator + feed) was saturated and the "
        "run may be limited by the client side, not the server.",
    ]
    return "\n".join(lines) + "\n"


def _role_cpu(role: str) -> Callable[[Rec], float | None]:
    return lambda r: r.get("server_cpu_by_role", {}).get(f"server.{role}")


def _edges_cpu(r: Rec) -> float | None:
    cpu = r.get("server_cpu_by_role", {})
    edges = [v for k, v in cpu.items() if k.startswith("server.edge")]
    return sum(edges) if edges else cpu.get("server.server")


def _per(
    num: Callable[[Rec], float | None], den: Callable[[Rec], float | None]
) -> Callable[[Rec], float | None]:
    """µs of CPU (``num``, a fraction of a core) per event (``den``, per second)."""

    def f(r: Rec) -> float | None:
        a, b = num(r), den(r)
        return None if a is None or not b else a * 1e6 / b

    return f


def _redis(key: str) -> Callable[[Rec], float | None]:
    return lambda r: (r.get("redis_per_s") or {}).get(key)


def _hops(r: Rec) -> list[dict[str, Any]]:
    return [h for n in (r.get("cluster") or {}).get("nodes", []) for h in n["hops"]]


def _hop_received(r: Rec) -> float | None:
    hops = _hops(r)
    return sum(h["received_per_s"] for h in hops) if hops else None


def _hop_worst(key: str) -> Callable[[Rec], float | None]:
    def f(r: Rec) -> float | None:
        vals = [h[key] for h in _hops(r) if h.get(key) is not None]
        return max(vals) if vals else None

    return f


def _per_edge(r: Rec) -> str:
    urls = (r.get("cluster") or {}).get("per_url", [])
    return " / ".join(f"{u['delivered_per_s']:,.0f} ({u['symbols']} sym)" for u in urls)


# A cluster against the one process: CPU per process, what each costs per unit of work, Redis.
CLUSTER_COLUMNS: list[tuple[str, Callable[[Rec], float | None], str, bool]] = [
    ("delivered/s", _m("loadgen.delivered_per_s"), "{:,.0f}", False),
    ("p50 ms", _m("loadgen.latency.p50_ms"), "{:.2f}", False),
    ("p99 ms", _m("loadgen.latency.p99_ms"), "{:.2f}", True),
    ("ingest CPU", _role_cpu("ingest"), "{:.0%}", False),
    ("edge 1 CPU", _role_cpu("edge1"), "{:.0%}", False),
    ("edge 2 CPU", _role_cpu("edge2"), "{:.0%}", False),
    ("Redis CPU", _role_cpu("redis"), "{:.0%}", False),
    ("all server CPU", lambda r: r["server_cpu"], "{:.0%}", False),
    (
        "edges (or the process) µs / update",
        _per(_edges_cpu, _m("loadgen.delivered_per_s")),
        "{:.1f}",
        False,
    ),
    (
        "ingest µs / feed tick",
        _per(_role_cpu("ingest"), lambda r: r.get("feed_rate_actual")),
        "{:.1f}",
        False,
    ),
    ("Redis PUBLISH/s", _redis("cmdstat_publish.calls"), "{:,.0f}", False),
    ("Redis scripts/s", _redis("cmdstat_evalsha.calls"), "{:,.0f}", False),
    ("states read by edges/s", _hop_received, "{:,.0f}", False),
    ("Redis µs / state read", _per(_role_cpu("redis"), _hop_received), "{:.1f}", False),
    ("hop lag p50 / p99 ≤ ms (worst edge)", lambda r: None, "", False),
]


def _cluster_table(g: dict[tuple[str, str], list[Rec]]) -> list[str]:
    clusters = [(wl, st) for (wl, st), recs in g.items() if any("cluster" in r for r in recs)]
    if not clusters:
        return []
    keys = []
    for wl in dict.fromkeys(wl for wl, _ in clusters):
        keys += [
            (wl, st) for (w, st) in g if w == wl and (st == "trio_stock" or (w, st) in clusters)
        ]
    rows = []
    for wl, st in keys:
        recs = g[(wl, st)]
        row = [wl, st]
        for header, f, fmt, spread in CLUSTER_COLUMNS:
            if header.startswith("hop lag"):
                p50 = _stat(recs, _hop_worst("lag_p50_le_ms"))
                p99 = _stat(recs, _hop_worst("lag_p99_le_ms"))
                row.append("–" if p50 is None else f"{p50[0]:g} / {p99[0]:g}" if p99 else "–")
            else:
                row.append(_fmt(_stat(recs, f), fmt, spread))
        row.append(_per_edge(_median_run(recs)) or "–")
        rows.append(row)
    return [
        "",
        "Cluster (bench/cluster.py: the edges on CPU 0; the ingest node and Redis on CPU 1, with "
        "the feed and the load generator) against the one process (CPU 0); CPU as a fraction of "
        "one core, µs of CPU per unit of work; hop lag = holder's write → edge's read, as the "
        "bounds of the buckets holding p50 and p99:",
        "",
        *_table(
            ["workload", "stack"] + [c[0] for c in CLUSTER_COLUMNS] + ["per edge: delivered/s"],
            rows,
        ),
    ]


def _idle_table(g: dict[tuple[str, str], list[Rec]]) -> list[str]:
    rows = [
        [
            st,
            _fmt(_stat(recs, lambda r: r["rss_per_client_kib"])),
            _fmt(_stat(recs, lambda r: r["server_rss_before_clients_kib"] / 1024), "{:.0f}", False),
        ]
        for (wl, st), recs in g.items()
        if wl == "idle"
    ]
    if not rows:
        return []
    return [
        "",
        *_table(
            ["idle (1,000 subscribed clients)", "KiB per client", "RSS before clients MiB"], rows
        ),
    ]


def _slow_table(g: dict[tuple[str, str], list[Rec]]) -> list[str]:
    rows = []
    for (wl, st), recs in g.items():
        if wl != "slow":
            continue
        p99 = _stat(recs, _m("loadgen.latency.p99_ms"))
        p99b = _stat(g.get(("slow-base", st), []), _m("loadgen.latency.p99_ms"))
        delta = "–" if not (p99 and p99b) else f"{p99[0] - p99b[0]:+.1f}"
        rows.append(
            [
                st,
                _fmt(p99),
                _fmt(p99b),
                delta,
                _fmt(_stat(recs, _rss_growth_mib), "{:+.1f}"),
                _fmt(_stat(recs, _m("loadgen.clients.closed_stalled")), "{:.0f}", False),
            ]
        )
    if not rows:
        return []
    return [
        "",
        *_table(
            [
                "slow (100 stalled of 1,100)",
                "healthy p99 ms",
                "same without stalled",
                "Δ p99 ms",
                "RSS growth in window MiB",
                "stalled closed by server",
            ],
            rows,
        ),
    ]


def _w3_table(g: dict[tuple[str, str], list[Rec]]) -> list[str]:
    rows = [
        [st, _fmt(_stat(recs, _p99_trend), "{:.2f}"), _fmt(_stat(recs, _rss_growth_mib), "{:+.1f}")]
        for (wl, st), recs in g.items()
        if wl == "W3"
    ]
    if not rows:
        return []
    return [
        "",
        *_table(["W3 growth", "p99 last third ÷ first third", "RSS growth in window MiB"], rows),
    ]


def _med(
    g: dict[tuple[str, str], list[Rec]], wl: str, st: str, f: Callable[[Rec], float | None]
) -> float | None:
    s = _stat(g.get((wl, st), []), f)
    return None if s is None else s[0]


def _targets(g: dict[tuple[str, str], list[Rec]]) -> list[str]:
    """trio_stock against issue 6's targets (medians); '?' where a point was not measured."""
    t = "trio_stock"
    p99 = _m("loadgen.latency.p99_ms")
    ceil_w2 = _med(g, "W2", "ceiling", _m("loadgen.delivered_per_s"))
    ceil_w3 = _med(g, "W3", "ceiling", _m("loadgen.delivered_per_s"))
    w2 = _med(g, "W2", t, _m("loadgen.delivered_per_s"))
    fresh_w3 = _med(g, "W3", t, _m("loadgen.fresh_per_s"))
    base, slow = _med(g, "slow-base", t, p99), _med(g, "slow", t, p99)
    checks: list[tuple[str, float | None, Callable[[float], bool], str]] = [
        (
            "W1 delivered ≥ 99.5 %",
            _med(g, "W1", t, _m("loadgen.delivered_fraction")),
            lambda v: v >= 0.995,
            "{:.1%}",
        ),
        ("W1 p99 ≤ 2 ms", _med(g, "W1", t, p99), lambda v: v <= 2, "{:.1f} ms"),
        (
            "W1 server CPU ≤ 50 %",
            _med(g, "W1", t, lambda r: r["server_cpu"]),
            lambda v: v <= 0.5,
            "{:.0%}",
        ),
        (
            "W2 ≥ 90 % of the ceiling's rate",
            None if not (w2 and ceil_w2) else w2 / ceil_w2,
            lambda v: v >= 0.9,
            "{:.0%}",
        ),
        ("W2 p99 ≤ 100 ms", _med(g, "W2", t, p99), lambda v: v <= 100, "{:.1f} ms"),
        ("W3 p99 ≤ 100 ms", _med(g, "W3", t, p99), lambda v: v <= 100, "{:.1f} ms"),
        (
            "W3 no latency growth (last/first third ≤ 1.5)",
            _med(g, "W3", t, _p99_trend),
            lambda v: v <= 1.5,
            "{:.2f}",
        ),
        (
            "W3 no memory growth (≤ 5 MiB in window)",
            _med(g, "W3", t, _rss_growth_mib),
            lambda v: v <= 5,
            "{:+.1f} MiB",
        ),
        (
            "W3 fresh/s ≥ ceiling delivered/s",
            None if not (ceil_w3 and fresh_w3 is not None) else fresh_w3 / ceil_w3,
            lambda v: v >= 1,
            "{:.0%} of it",
        ),
        (
            "idle ≤ 20 KiB per client",
            _med(g, "idle", t, lambda r: r["rss_per_client_kib"]),
            lambda v: v <= 20,
            "{:.1f} KiB",
        ),
        (
            "slow: healthy p99 within 5 ms of no-stall run",
            None if base is None or slow is None else slow - base,
            lambda v: v <= 5,
            "{:+.1f} ms",
        ),
        (
            "slow: memory bounded (≤ 5 MiB growth in window)",
            _med(g, "slow", t, _rss_growth_mib),
            lambda v: v <= 5,
            "{:+.1f} MiB",
        ),
    ]
    rows = [
        [
            name,
            "?" if v is None else fmt.format(v),
            "?" if v is None else ("yes" if ok(v) else "NO"),
        ]
        for name, v, ok, fmt in checks
    ]
    return [
        "",
        "trio_stock against the targets of issue 6 (medians):",
        "",
        *_table(["target", "measured", "met"], rows),
    ]


# ---------------------------------------------------------------- plots
def _median_run(recs: list[Rec]) -> Rec:
    key = lambda r: _get(r, "loadgen.latency.p99_ms") or 0.0  # noqa: E731
    ordered = sorted(recs, key=key)
    return ordered[len(ordered) // 2]


def plots(records: list[Rec], outdir: Path) -> list[Path]:
    import matplotlib  # type: ignore[import-not-found,unused-ignore]  # bench venv only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    groups = _groups(records)
    written = []
    for wl in sorted({w for w, _ in groups if w != "idle"}):
        stacks = [(st, _median_run(recs)) for (w, st), recs in groups.items() if w == wl]
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.5))
        for st, rec in stacks:
            cdf = rec["loadgen"]["latency_cdf"]
            if cdf:
                ax1.plot([max(x, 1e-3) for x, _ in cdf], [y for _, y in cdf], label=st)
            secs = rec["loadgen"]["per_second"]
            ax2.plot(
                [s["second"] for s in secs], [s["count"] for s in secs], marker="o", ms=3, label=st
            )
            p99 = [(s["second"], s["p99_ms"]) for s in secs if s.get("p99_ms") is not None]
            ax3.plot(
                [x for x, _ in p99], [max(y, 1e-3) for _, y in p99], marker="o", ms=3, label=st
            )
        exp = stacks[0][1]["expected_per_s"] if stacks else 0
        ax2.axhline(exp, color="grey", ls="--", lw=1, label="expected")
        ax1.set(
            xscale="log",
            xlabel="latency, emit → receipt (ms)",
            ylabel="fraction of updates",
            title=f"{wl}: latency CDF (median run)",
        )
        ax2.set(
            xlabel="second of the window",
            ylabel="updates delivered per second",
            title=f"{wl}: delivered rate over time",
        )
        ax3.set(
            yscale="log",
            xlabel="second of the window",
            ylabel="p99 latency in that second (ms)",
            title=f"{wl}: latency over time",
        )
        for ax in (ax1, ax2, ax3):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = outdir / f"{wl}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
