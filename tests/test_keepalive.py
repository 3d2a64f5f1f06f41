"""The keep-alive pings every client once per interval, in groups, and closes silent ones."""

from __future__ import annotations

import trio
import trio.testing

from trio_stock.endpoints.keepalive import SLICES, KeepAlive


class Session:
    """A client that answers its pings at once, or never (``silent``)."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.pings: list[float] = []
        self.unanswered_since: float | None = None
        self.ended_at: float | None = None

    def ping(self, now: float) -> None:
        self.pings.append(now)
        if self.silent and self.unanswered_since is None:
            self.unanswered_since = now

    def check_pong(self, now: float, timeout: float) -> None:
        since = self.unanswered_since
        if since is not None and now - since >= timeout and self.ended_at is None:
            self.ended_at = now


async def test_every_client_is_pinged_once_per_interval_in_groups_not_all_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keep_alive = KeepAlive(interval=20, timeout=20)
    sessions = [Session() for _ in range(2_000)]
    keep_alive.sessions.update(sessions)
    async with trio.open_nursery() as nursery:
        await nursery.start(keep_alive.run)
        await trio.sleep(100 + 0.1)  # five intervals
        nursery.cancel_scope.cancel()
    assert all(len(s.pings) == 5 for s in sessions)
    assert all(b - a == 20 for s in sessions for a, b in zip(s.pings, s.pings[1:], strict=False))
    per_moment: dict[float, int] = {}
    for s in sessions:
        for t in s.pings:
            per_moment[t] = per_moment.get(t, 0) + 1
    assert len(per_moment) == 5 * SLICES  # every group has its own moment
    # about a group each: no moment pings many more than len(sessions) / SLICES clients
    assert max(per_moment.values()) < 2 * len(sessions) / SLICES


async def test_a_silent_client_is_ended_its_timeout_after_its_ping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keep_alive = KeepAlive(interval=20, timeout=5)
    silent, talking = Session(silent=True), Session()
    keep_alive.sessions.update((silent, talking))
    async with trio.open_nursery() as nursery:
        await nursery.start(keep_alive.run)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert silent.unanswered_since is not None and silent.ended_at is not None
    assert silent.ended_at - silent.unanswered_since == 5  # the check runs every second
    assert talking.ended_at is None and len(talking.pings) == 3


async def test_interval_zero_pings_nobody(autojump_clock: trio.testing.MockClock) -> None:
    keep_alive = KeepAlive(interval=0, timeout=5)
    session = Session()
    keep_alive.sessions.add(session)
    async with trio.open_nursery() as nursery:
        await nursery.start(keep_alive.run)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert session.pings == []
