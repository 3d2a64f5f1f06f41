"""CPU time and memory of processes, read from /proc, sampled in a background thread.

CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (clock ticks, 10 ms here); memory is
``VmRSS`` and the peak ``VmHWM`` of ``/proc/<pid>/status``. A sample holds every watched
process, so a window's CPU fraction is the difference of two samples over their time apart.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY_S = 0.5


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    rss_kib: int
    hwm_kib: int


@dataclass(frozen=True)
class Sample:
    t: float  # epoch seconds
    procs: dict[str, ProcSample]
    cpus: dict[str, float]  # busy seconds per core ("cpu0", "cpu1"), from /proc/stat


def read_cpus() -> dict[str, float]:
    """Busy (non-idle, non-iowait) seconds of each core since boot."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in vals[:8]]
                out[name] = (sum(v) - v[3] - v[4]) / CLK_TCK  # minus idle, iowait
    return out


def read_proc(pid: int) -> ProcSample | None:
    """One process's CPU seconds and memory; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (proc(5) fields 14, 15)
    mem = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            mem[name] = int(value.split()[0])
    return ProcSample(cpu, mem.get("VmRSS", 0), mem.get("VmHWM", 0))


@dataclass
class Sampler:
    """Samples the named pids every ``SAMPLE_EVERY_S`` until stopped; ``mark()`` samples now."""

    pids: dict[str, int]
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def mark(self) -> Sample:
        procs = {}
        for role, pid in self.pids.items():
            s = read_proc(pid)
            if s is not None:
                procs[role] = s
        sample = Sample(time.time(), procs, read_cpus())
        with self._lock:
            self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.mark()

    def start(self) -> None:
        self.mark()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.mark()


def cpu_fraction(a: Sample, b: Sample, roles: list[str]) -> dict[str, float]:
    """CPU used between two samples, as a fraction of one core, per role."""
    dt = b.t - a.t
    out = {}
    for role in roles:
        if role in a.procs and role in b.procs and dt > 0:
            out[role] = (b.procs[role].cpu_s - a.procs[role].cpu_s) / dt
    return out


def core_busy(a: Sample, b: Sample) -> dict[str, float]:
    """How busy each core was between two samples (fraction), whoever used it."""
    dt = b.t - a.t
    return {c: (b.cpus[c] - a.cpus[c]) / dt for c in a.cpus if c in b.cpus and dt > 0}


def nearest(samples: list[Sample], t: float) -> Sample:
    """The sample closest in time to ``t``."""
    return min(samples, key=lambda s: abs(s.t - t))
