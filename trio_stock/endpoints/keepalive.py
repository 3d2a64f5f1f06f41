"""Keep-alive for every WebSocket client, from one task.

Every ``interval`` seconds the server pings each client; a client whose oldest unanswered
ping is ``timeout`` seconds old is closed (1011). One task for all clients instead of one
per client: an idle client then costs no task and no timer of its own (issue 6: memory per
idle client).
"""

from __future__ import annotations

import math
from collections import deque
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
        next_ping = trio.current_time() + self.interval
        rounds: deque[float] = deque()  # when each ping round still being checked went out
        while True:
            next_check = rounds[0] + self.timeout if rounds else math.inf
            await trio.sleep_until(min(next_ping, next_check))
            now = trio.current_time()
            if now >= next_ping:
                for session in list(self.sessions):
                    session.ping(now)
                rounds.append(now)
                next_ping = now + self.interval
            while rounds and rounds[0] + self.timeout <= now:
                rounds.popleft()
                for session in list(self.sessions):
                    session.check_pong(now, self.timeout)
