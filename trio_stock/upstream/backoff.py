"""The reconnect policy every upstream session shares: capped exponential backoff with jitter.

After a session ends the caller asks :meth:`Backoff.failed` how long to wait. The delay
doubles from ``initial`` up to ``maximum``, each with +/-``jitter`` of itself at random so
many gateways do not reconnect in step. A session that stayed up for ``healthy_after``
seconds resets the sequence, so one drop after a long healthy run retries quickly.
"""

from __future__ import annotations

import random

import attrs
import trio

_MAX_EXPONENT = 64  # 2**64 s is past any cap


@attrs.define
class Backoff:
    """Capped exponential backoff with jitter, reset after a healthy period.

    Args:
        initial: The first delay in seconds.
        maximum: The cap on any delay, before jitter.
        multiplier: Growth factor per consecutive failure.
        jitter: Fraction of the delay added or removed at random (0.2 = +/-20 %).
        healthy_after: Seconds a session must last to reset the sequence.
        rng: The random source; pass a seeded one for deterministic tests.
    """

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2
    healthy_after: float = 60.0
    rng: random.Random = attrs.field(factory=random.Random)
    attempts: int = attrs.field(default=0, init=False)
    _connected_at: float | None = attrs.field(default=None, init=False)

    def connected(self) -> None:
        """A session came up (call when it is established, e.g. after login)."""
        self._connected_at = trio.current_time()

    def failed(self) -> float:
        """A session ended or an attempt failed: return the seconds to wait before the next."""
        if self._connected_at is not None:
            if trio.current_time() - self._connected_at >= self.healthy_after:
                self.attempts = 0
            self._connected_at = None
        # The exponent stops growing once the cap is reached: days of failures must not
        # overflow a float.
        exponent = min(self.attempts, _MAX_EXPONENT)
        delay = min(self.maximum, self.initial * self.multiplier**exponent)
        self.attempts += 1
        spread = delay * self.jitter
        return max(0.0, delay + self.rng.uniform(-spread, spread))

    def reset(self) -> None:
        """Forget past failures."""
        self.attempts = 0
        self._connected_at = None
