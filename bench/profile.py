"""Sampling profiles of a stack's server during the measured window (``run.py --profile``).

py-spy (from the bench venv) samples the server process from outside, so the server runs its
normal code; it runs on the client core and writes collapsed stacks (``--format raw``, which
speedscope and flamegraph.pl read), plus a text summary of the functions that took the most
time, by self time and inclusive time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.stacks import CLIENT_CPU, pinned

RATE_HZ = 200
TOP = 30
_LINE_NO = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` for ``seconds``; None when py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(RATE_HZ),
        "--duration",
        str(max(1, int(seconds))),
        "--format",
        "raw",
        "--nonblocking",
        "-o",
        str(out),
    ]
    return subprocess.Popen(
        pinned(CLIENT_CPU, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def summarize(collapsed: Path) -> str:
    """Top functions by self and inclusive samples, from py-spy's collapsed stacks."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE_NO.sub(")", f) for f in stack.split(";")]
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if total == 0:
        return "no samples\n"
    out = [f"{total} samples at {RATE_HZ} Hz", "", "self %  function"]
    out += [f"{100 * n / total:5.1f}  {f}" for f, n in self_t.most_common(TOP)]
    out += ["", "incl %  function"]
    out += [f"{100 * n / total:5.1f}  {f}" for f, n in incl.most_common(TOP)]
    return "\n".join(out) + "\n"
