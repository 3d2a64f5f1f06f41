"""Wall-clock time derived from Trio's clock, so virtual time moves it too.

Everything time-dependent in trio_stock reads ``trio.current_time()``. Ticks, however,
carry epoch nanoseconds. :class:`WallClock` anchors Trio's clock to the wall clock once and
then derives epoch time from Trio's, which keeps tests on ``MockClock`` deterministic.
"""

from __future__ import annotations

import datetime as dt
import time

import trio

KST = dt.timezone(dt.timedelta(hours=9), "KST")  # Korea: UTC+9 all year (no daylight saving)


class WallClock:
    """Epoch time that advances with ``trio.current_time()``.

    Args:
        epoch_ns: The epoch time that corresponds to the first reading; ``None`` means the
            real wall clock at that moment. Tests pass a fixed value.
    """

    def __init__(self, epoch_ns: int | None = None) -> None:
        self._epoch_ns = epoch_ns
        self._trio_base: float | None = None

    def now_ns(self) -> int:
        """Nanoseconds since the Unix epoch. Must be called inside a Trio run."""
        now = trio.current_time()
        if self._trio_base is None:
            self._trio_base = now
            if self._epoch_ns is None:
                self._epoch_ns = time.time_ns()
        assert self._epoch_ns is not None
        return self._epoch_ns + int((now - self._trio_base) * 1e9)
