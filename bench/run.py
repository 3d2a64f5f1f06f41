"""The benchmark, in one command: every stack on every workload, several runs, one report.

    .bench-venv/bin/python bench/run.py            # the full run (~1 h)
    .bench-venv/bin/python bench/run.py --quick    # smoke: short windows, one run

First the load generator is fed flat out to show its capacity (``--no-capacity`` skips it).
Then, for each run, it starts the fake FMP feed (bench/feed.py, CPU 1), the stack under test
(bench/stacks.py, CPU 0) and the load generator (bench/loadgen/loadgen.js, CPU 1), samples
every process's CPU and memory from /proc, and writes ``bench/results/<UTC stamp>/``:
``results.json`` (every run, raw), ``table.md`` (medians and spread) and PNG plots; process
logs go to a temporary directory (``--logs``). Runs are interleaved (workload → run → stack)
so drift on a shared machine hits every stack alike. ``--profile`` adds py-spy profiles.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import procstat, profile, report  # noqa: E402
from bench.cluster import redis_delta, redis_info  # noqa: E402
from bench.stacks import (  # noqa: E402
    CLIENT_CPU,
    EXTRA_STACKS,
    SERVER_CPU,
    STACKS,
    Stack,
    StackUnavailable,
    pinned,
    start_feed,
    start_stack,
)

LOADGEN = ROOT / "bench" / "loadgen" / "loadgen.js"


@dataclass(frozen=True)
class Workload:
    """One point of the benchmark (issue 6): N clients x K of S symbols at R ticks/s."""

    name: str
    symbols: int
    clients: int
    per_client: int
    rate: float
    stalled: int = 0
    what: str = ""

    @property
    def expected_per_s(self) -> float:
        return self.clients * self.per_client * self.rate / self.symbols


WORKLOADS: dict[str, list[Workload]] = {
    "W1": [Workload("W1", 100, 200, 10, 2_000, what="ticker board")],
    # Not part of the table: 100 clients x 10 of 100 symbols, raised in steps to see
    # where one process stops delivering everything (the server issue's rough number).
    "C100": [
        Workload("C100-40k", 100, 100, 10, 4_000, what="100 clients, 40,000 updates/s"),
        Workload("C100-80k", 100, 100, 10, 8_000, what="100 clients, 80,000 updates/s"),
    ],
    "W2": [Workload("W2", 5, 1_000, 5, 500, what="hot symbols")],
    "W3": [Workload("W3", 50, 200, 20, 20_000, what="overload")],
    "idle": [Workload("idle", 100, 1_000, 10, 0, what="1,000 subscribed idle clients")],
    # slow: 1,000 healthy clients x 10 of 100 at 400 ticks/s (40,000 updates/s, W1's volume),
    # plus 100 clients that stop reading at the window start; "slow-base" is the same run
    # without them, so the healthy clients' p99 can be compared within one benchmark.
    "slow": [
        Workload("slow-base", 100, 1_000, 10, 400, what="1,000 healthy clients"),
        Workload("slow", 100, 1_000, 10, 400, stalled=100, what="... plus 100 stalled"),
    ],
    # On request only (--workloads R): one client holding every symbol, so a server's CPU is
    # mostly its per-tick cost (reading upstream or Redis, the hub), with almost no fan-out;
    # at W1's rate and at 2.5 times it, where a cluster's holder writes bigger batches.
    "R": [
        Workload("R-2k", 100, 1, 100, 2_000, what="1 client, every symbol: the per-tick cost"),
        Workload("R-5k", 100, 1, 100, 5_000, what="the same at 5,000 ticks/s"),
    ],
}
ON_REQUEST = ("R",)  # not in the default run


def tickers(n: int) -> list[str]:
    """n distinct letter-only tickers (XAA, XAB, ...): valid for every stack's validator."""
    return [
        "X" + chr(65 + i // 676 % 26) + chr(65 + i // 26 % 26) + chr(65 + i % 26) for i in range(n)
    ]


def run_once(
    stack_name: str,
    w: Workload,
    warmup: float,
    duration: float,
    logdir: Path,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """One run of one stack on one workload; returns the raw record (or why it was skipped)."""
    syms = tickers(w.symbols)
    logdir.mkdir(parents=True, exist_ok=True)
    feed = start_feed(w.rate, syms, warmup + duration + 120, logdir)
    follower = threading.Thread(target=feed.follow, daemon=True)
    follower.start()
    stack: Stack | None = None
    try:
        try:
            stack = start_stack(stack_name, feed.port, feed.rest_port, feed.api_key, syms, logdir)
        except StackUnavailable as exc:
            return {"stack": stack_name, "workload": w.name, "skipped": str(exc)}
        except (RuntimeError, TimeoutError, OSError) as exc:  # the stack did not come up
            return {"stack": stack_name, "workload": w.name, "error": f"start: {exc}"}
        rec = _drive(stack, feed, w, warmup, duration, logdir, profile_to)
        exited = {role: p.returncode for role, p in stack.procs.items() if p.poll() is not None}
        if exited:  # a server process died before we stopped it: the run is not a result
            rec["exited"] = exited
            rec["error"] = (
                "exited during the run: "
                + ", ".join(f"{role} ({code})" for role, code in exited.items())
                + f"; logs in {logdir}"
            )
        if "loadgen" in rec:  # let the feed report past the window's end before stopping it
            deadline = time.time() + 3
            while time.time() < deadline and (
                not feed.counts or feed.counts[-1][0] < rec["loadgen"]["window"]["end"]
            ):
                time.sleep(0.05)
    finally:
        if stack is not None:
            stack.stop()
        feed.stop()
        follower.join(timeout=5)
    if "loadgen" in rec:
        window = rec["loadgen"]["window"]
        rec["feed_rate_actual"] = feed.rate_between(window["start"], window["end"])
    return rec


def _drive(
    stack: Stack,
    feed: Any,
    w: Workload,
    warmup: float,
    duration: float,
    logdir: Path,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    out = logdir / "loadgen.json"
    argv = ["node", str(LOADGEN), "--spread", stack.spread]
    for url in stack.urls:
        argv += ["--url", url]
    argv += [
        "--protocol",
        stack.protocol,
        "--clients",
        str(w.clients),
        "--per-client",
        str(w.per_client),
        "--symbols",
        ",".join(stack.symbols),
        "--tick-rate",
        str(w.rate),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
        "--stalled",
        str(w.stalled),
        "--out",
        str(out),
    ]
    for url in stack.stats_urls:
        argv += ["--stats-url", url]
    with open(logdir / "loadgen.log", "wb") as err:
        lg = subprocess.Popen(pinned(CLIENT_CPU, argv), stdout=subprocess.PIPE, stderr=err)
    roles = {f"server.{r}": pid for r, pid in stack.pids().items()}
    sampler = procstat.Sampler({**roles, "loadgen": lg.pid, "feed": feed.proc.pid})
    sampler.start()
    marks: dict[str, procstat.Sample] = {}
    redis: dict[str, dict[str, float]] = {}  # Redis's INFO at the window's start and end
    spies: dict[Path, subprocess.Popen[bytes] | None] = {}
    events: dict[str, dict[str, Any]] = {}
    assert lg.stdout is not None
    for line in lg.stdout:
        ev = json.loads(line)
        events[ev["ev"]] = ev
        if ev["ev"] in ("connecting", "window_start", "window_end"):
            marks[ev["ev"]] = sampler.mark()
            if stack.redis_port is not None and ev["ev"] != "connecting":
                redis[ev["ev"]] = redis_info(stack.redis_port)
        if ev["ev"] == "window_start" and profile_to is not None:
            for role in stack.profiled:
                # One process: <workload>-<stack>.collapsed; several: ...-<role>.collapsed.
                to = profile_to
                if len(stack.profiled) > 1:
                    to = profile_to.with_name(f"{profile_to.stem}-{role}{profile_to.suffix}")
                spies[to] = profile.start(stack.procs[role].pid, duration, to)
    rc = lg.wait()
    for to, spy in spies.items():
        if spy is None:
            continue
        spy.wait(timeout=duration + 30)
        if to.exists():
            to.with_suffix(".top.txt").write_text(profile.summarize(to))
    sampler.stop()
    if rc != 0 or not out.exists():
        return {
            "stack": stack.name,
            "workload": w.name,
            "error": f"loadgen exited {rc}",
            "log": (logdir / "loadgen.log").read_text()[-2000:],
        }
    lgr = json.loads(out.read_text())
    missing = {"connecting", "window_start", "window_end"} - set(marks)
    if missing:
        return {"stack": stack.name, "workload": w.name, "error": f"no {sorted(missing)} event"}
    rec = _record(stack, feed, w, lgr, sampler, marks, list(roles))
    if redis.get("window_start") and redis.get("window_end"):
        seconds = marks["window_end"].t - marks["window_start"].t
        rec["redis_per_s"] = redis_delta(redis["window_start"], redis["window_end"], seconds)
    if stack.name in EXTRA_STACKS:
        rec["cluster"] = report.cluster_window(lgr)
    return rec


def _record(
    stack: Stack,
    feed: Any,
    w: Workload,
    lgr: dict[str, Any],
    sampler: procstat.Sampler,
    marks: dict[str, procstat.Sample],
    server_roles: list[str],
) -> dict[str, Any]:
    a, b = marks["window_start"], marks["window_end"]
    cpu = procstat.cpu_fraction(a, b, [*server_roles, "loadgen", "feed"])
    last = sampler.samples[-1].procs

    def rss(s: procstat.Sample) -> int:
        return sum(s.procs[r].rss_kib for r in server_roles if r in s.procs)

    timeline = [(s.t - a.t, rss(s)) for s in sampler.samples]
    clients = w.clients + w.stalled
    busy = procstat.core_busy(a, b)
    server_cpu = sum(cpu.get(r, 0.0) for r in server_roles)
    client_cpu = (cpu.get("loadgen") or 0.0) + (cpu.get("feed") or 0.0)
    ours = {f"cpu{SERVER_CPU}": 0.0, f"cpu{CLIENT_CPU}": client_cpu}  # this run's, per core
    for r in server_roles:
        core = f"cpu{stack.cpu_of.get(r.removeprefix('server.'), SERVER_CPU)}"
        ours[core] = ours.get(core, 0.0) + cpu.get(r, 0.0)
    return {
        "stack": stack.name,
        "workload": w.name,
        "protocol": stack.protocol,
        "workload_def": w.__dict__,
        "expected_per_s": w.expected_per_s,
        "loadgen": lgr,
        "server_cpu": server_cpu,
        "core_busy": busy,
        # CPU used on each core by processes that are not part of this benchmark run
        "other_load_server_core": max(0.0, busy.get("cpu0", 0.0) - ours["cpu0"]),
        "other_load_client_core": max(0.0, busy.get("cpu1", 0.0) - ours["cpu1"]),
        "server_cpu_layout": {
            r: stack.cpu_of.get(r.removeprefix("server."), SERVER_CPU) for r in server_roles
        },
        "server_cpu_by_role": {r: cpu[r] for r in server_roles if r in cpu},
        "loadgen_cpu_proc": cpu.get("loadgen"),
        "feed_cpu_proc": cpu.get("feed"),
        "server_peak_rss_kib": sum(last[r].hwm_kib for r in server_roles if r in last),
        "server_rss_before_clients_kib": rss(marks["connecting"]),
        "server_rss_window_start_kib": rss(a),
        "server_rss_window_end_kib": rss(b),
        "rss_per_client_kib": (rss(a) - rss(marks["connecting"])) / clients if clients else None,
        "rss_timeline": timeline,
        "conflated": report.conflated_delta(lgr.get("server_stats", {})),
    }


def main() -> None:
    p = argparse.ArgumentParser(description="trio_stock benchmark (issue 6)")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 2 s warm-up, 5 s window, 1 run"
    )
    p.add_argument(
        "--stacks", default=",".join(STACKS), help=f"of {','.join(STACKS + EXTRA_STACKS)}"
    )
    p.add_argument(
        "--workloads",
        default=",".join(w for w in WORKLOADS if w not in ON_REQUEST),
        help=f"of {','.join(WORKLOADS)}",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per point (default 3; quick: 1)")
    p.add_argument("--warmup", type=float, default=None, help="seconds (default 5; quick: 2)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default 20; quick: 5)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results root")
    p.add_argument("--logs", type=Path, default=None, help="per-run logs (default: a temp dir)")
    p.add_argument("--no-capacity", action="store_true", help="skip the load generator check")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the server of each stack during the first run's window (results/profiles/)",
    )
    args = p.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    duration = args.duration if args.duration is not None else (5.0 if args.quick else 20.0)
    stacks = [s for s in args.stacks.split(",") if s]
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS] + [
        s for s in stacks if s not in STACKS + EXTRA_STACKS
    ]
    if unknown:
        p.error(f"unknown workload or stack: {', '.join(unknown)}")
    raise_fd_limit()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    outdir = args.out / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    logs = args.logs or Path(tempfile.mkdtemp(prefix=f"bench-{stamp}-"))
    print(f"logs: {logs}", flush=True)
    capacity = None if args.no_capacity else loadgen_capacity(logs / "capacity")
    if capacity:
        print(
            f"load generator capacity: {capacity['per_s']:,.0f} updates/s at "
            f"{capacity['cpu']:.0%} of CPU 1",
            flush=True,
        )
    records = []
    for name in names:
        for run in range(runs):
            for w in WORKLOADS[name]:
                for s in stacks:
                    t0 = time.time()
                    prof = None
                    if args.profile and run == 0:
                        prof = outdir / "profiles" / f"{w.name}-{s}.collapsed"
                    rec = run_once(s, w, warmup, duration, logs / f"{w.name}-{s}-{run}", prof)
                    rec["run"] = run
                    rec["profiled"] = prof is not None
                    records.append(rec)
                    print(report.one_line(rec, time.time() - t0), flush=True)
    meta = {
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "stamp": stamp,
        "quick": args.quick,
        "runs": runs,
        "warmup_s": warmup,
        "duration_s": duration,
        "machine": machine(),
        "loadgen_capacity": capacity,
    }
    (outdir / "results.json").write_text(json.dumps({"meta": meta, "runs": records}))
    table = report.markdown(meta, records)
    (outdir / "table.md").write_text(table)
    report.plots(records, outdir)
    (args.out / "LATEST").write_text(stamp + "\n")
    print(table)
    print(f"results: {outdir}")


def loadgen_capacity(logdir: Path, clients: int = 200, seconds: float = 5.0) -> dict[str, Any]:
    """How many updates/s the load generator absorbs, and at what CPU, when fed flat out.

    bench/loadgen/blaster.js (CPU 0) pushes price_update frames as fast as each socket takes
    them; the generator (CPU 1) counts and times them exactly as in a real run. Its CPU per
    update here bounds what it needs in any run with the same frame sizes.
    """
    logdir.mkdir(parents=True, exist_ok=True)
    blaster = subprocess.Popen(
        pinned("0", ["node", str(LOADGEN.parent / "blaster.js")]),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert blaster.stdout is not None
        port = json.loads(blaster.stdout.readline())["port"]
        out = logdir / "loadgen.json"
        subprocess.run(
            pinned(
                CLIENT_CPU,
                [
                    "node",
                    str(LOADGEN),
                    "--url",
                    f"ws://127.0.0.1:{port}/",
                    "--clients",
                    str(clients),
                    "--symbols",
                    "XAAA",
                    "--tick-rate",
                    "1",
                    "--warmup",
                    "1",
                    "--duration",
                    str(seconds),
                    "--out",
                    str(out),
                ],
            ),
            stdout=subprocess.DEVNULL,
            check=True,
        )
        r = json.loads(out.read_text())
        cpu = r["loadgen_cpu"]
        busy = cpu["window_user_s"] + cpu["window_system_s"]
        return {
            "clients": clients,
            "per_s": r["delivered_per_s"],
            "cpu": cpu["window_fraction"],
            "us_per_update": busy * 1e6 / max(1, r["delivered_total"]),
        }
    finally:
        blaster.terminate()
        blaster.wait()


def raise_fd_limit(want: int = 8192) -> None:
    """1,100 clients need more descriptors than a default soft limit of 1,024 (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "cpu": cpu,
        "cores": __import__("os").cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "loadavg_at_start": load,
    }


if __name__ == "__main__":
    main()
