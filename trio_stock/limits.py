"""Rate and admission limits: token buckets, and who may open a connection right now.

A gateway in public must not let one address take every connection slot (connections
held open) or keep the accept loop busy (connections opened and dropped in a loop), so
besides the global ``max_clients`` each client IP has a connection count and a connect
rate. A refused connection is answered ``503`` with ``Retry-After`` and closed.

Behind a reverse proxy every client has the proxy's address: raise the per-IP limits to
the global ones there (``X-Forwarded-For`` is not trusted; anyone can send it).
"""

from __future__ import annotations

import math

import attrs
import trio

SWEEP_MIN = 1024  # token buckets kept before idle ones are swept


@attrs.define
class TokenBucket:
    """A rate limit: ``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: int
    _tokens: float = attrs.field(init=False)
    _at: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.burst)

    def take(self) -> bool:
        """Spend one token if there is one."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def full(self) -> bool:
        """True when the bucket has refilled completely (it then carries no state)."""
        self._refill()
        return self._tokens >= self.burst

    def _refill(self) -> None:
        now = trio.current_time()
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


@attrs.frozen
class AdmissionLimits:
    """How many connections may be open, and how fast one IP may open them.

    Defaults let the benchmark's 1,100 clients on 127.0.0.1 connect at once; a public
    gateway lowers the per-IP values (README "Limits").
    """

    max_connections: int = 10_000
    max_per_ip: int = 2_000
    rate_per_ip: float = 500.0  # new connections per second, after a burst of max_per_ip


@attrs.frozen
class Refusal:
    """Why a connection was refused: the ``503`` detail and its ``Retry-After`` seconds."""

    reason: str  # "max_connections", "max_per_ip" or "rate_per_ip" (the metric's label)
    detail: str
    retry_after: int


class Admission:
    """Counts open connections, globally and per client IP, and refuses past the limits.

    Memory: one counter per IP with an open connection, and one token bucket per IP that
    connected within the last ``max_per_ip / rate_per_ip`` seconds (older buckets are full,
    so they are dropped on the next sweep).
    """

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.open = 0
        self._open_by_ip: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_at = SWEEP_MIN  # bucket count that triggers the next sweep
        self._next_sweep = -math.inf  # or the time that does
        self.refused: dict[str, int] = {
            "max_connections": 0,
            "max_per_ip": 0,
            "rate_per_ip": 0,
        }

    def admit(self, ip: str | None) -> Refusal | None:
        """Take a slot for a new connection from ``ip`` (None: not an IP connection).

        Returns None when admitted (call :meth:`release` when it closes), else the refusal.
        """
        refusal = self._check(ip)
        if refusal is not None:
            self.refused[refusal.reason] += 1
            return refusal
        self.open += 1
        if ip is not None:
            self._open_by_ip[ip] = self._open_by_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str | None) -> None:
        """A connection admitted for ``ip`` closed."""
        self.open -= 1
        if ip is None:
            return
        left = self._open_by_ip[ip] - 1
        if left:
            self._open_by_ip[ip] = left
        else:
            del self._open_by_ip[ip]

    def _check(self, ip: str | None) -> Refusal | None:
        limits = self.limits
        if self.open >= limits.max_connections:
            detail = "server is at its connection limit; retry later"
            return Refusal("max_connections", detail, 1)
        if ip is None:
            return None
        if self._open_by_ip.get(ip, 0) >= limits.max_per_ip:
            detail = f"at most {limits.max_per_ip} connections per client address"
            return Refusal("max_per_ip", detail, 1)
        bucket = self._buckets.get(ip)
        if bucket is None:
            self._sweep()
            bucket = self._buckets[ip] = TokenBucket(limits.rate_per_ip, limits.max_per_ip)
        if not bucket.take():
            detail = f"at most {limits.rate_per_ip:g} new connections per second per address"
            return Refusal("rate_per_ip", detail, max(1, math.ceil(1 / limits.rate_per_ip)))
        return None

    def _sweep(self) -> None:
        # Amortised: a sweep runs when the table doubled since the last one, or when every
        # bucket of the last sweep has had time to refill (at most once per refill time).
        now = trio.current_time()
        if len(self._buckets) < self._sweep_at and (
            len(self._buckets) < SWEEP_MIN or now < self._next_sweep
        ):
            return
        for ip in [ip for ip, bucket in self._buckets.items() if bucket.full()]:
            if ip not in self._open_by_ip:
                del self._buckets[ip]
        self._sweep_at = max(SWEEP_MIN, 2 * len(self._buckets))
        self._next_sweep = now + self.limits.max_per_ip / self.limits.rate_per_ip
