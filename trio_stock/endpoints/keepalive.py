"""Keep-alive for every WebSocket client, from one task.

Every ``interval`` seconds the server pings each client; a client whose oldest unanswered
ping is ``timeout`` seconds old is closed (1011). One task for all clients instead of one
per client: an idle client then costs no task and no timer of its own (issue 6: memory per
idle client). The pings of one interval go out in ``SLICES`` groups, one every
``interval / SLICES`` seconds (a client's group is fixed by its hash), so a round's writes
and pongs do not all land in one scheduling burst that every client's updates wait behind.
A silent client is closed within ``interval / SLICES`` seconds of its deadline.
"""

from __future__ import annotations

from typing import Protocol

import trio


class Pingable(Protocol):
    """What the keep-alive needs of a client session."""

    def ping(self, now: float) -> None:
        """Send a ping (through the session's writer)."""
        ...

    def check_pong(self, now: float, timeout: float) -> None:
        """End the session if its oldest unanswered ping is ``timeout`` seconds old."""
        ...


SLICES = 20  # groups of clients pinged in turn over each interval


def turn_of(session: object) -> int:
    """The group of ``session``: 0 to ``SLICES - 1``, fixed for its life.

    Fibonacci hashing of its hash: objects of one size sit at evenly spaced addresses, so
    ``hash(session) % SLICES`` would fill a few groups only.
    """
    return ((hash(session) * 0x9E3779B97F4A7C15) & 0xFFFF_FFFF_FFFF_FFFF) * SLICES >> 64


class KeepAlive:
    """Pings every registered session; ``interval`` 0 turns it off."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.sessions: set[Pingable] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled."""
        task_status.started()
        if self.interval <= 0:
            return
        step = self.interval / SLICES
        turn = 0
        next_step = trio.current_time() + step
        while True:
            await trio.sleep_until(next_step)
            now = trio.current_time()
            for session in list(self.sessions):
                if turn_of(session) == turn:
                    session.ping(now)
                session.check_pong(now, self.timeout)
            turn = (turn + 1) % SLICES
            next_step += step
