"""What the hub answers: the outcome of a subscribe, and why a symbol failed."""

from __future__ import annotations

import enum

import attrs


class FailureReason(enum.Enum):
    """Why a symbol could not be subscribed."""

    INVALID = "invalid"  # not a Korean code or US ticker
    LIMIT = "limit"  # the subscriber already holds as many symbols as it may
    QUOTA = "quota"  # the provider's upstream subscription quota is full
    REJECTED = "rejected"  # the upstream refused it (detail carries the provider's code)
    TIMEOUT = "timeout"  # the upstream did not acknowledge in time
    UNAVAILABLE = "unavailable"  # no provider serves this market, or it is not taking requests
    FORBIDDEN = "forbidden"  # the client's token is not entitled to this market (auth.py)


@attrs.frozen
class Failure:
    """One symbol that was not subscribed. ``symbol`` is as the caller wrote it."""

    symbol: str
    reason: FailureReason
    detail: str = ""


@attrs.frozen
class SubscribeResult:
    """Outcome of :meth:`Hub.subscribe`: normalised accepted symbols, and the failures.

    Both keep the order of the request. A symbol the subscriber already held is accepted.
    """

    accepted: tuple[str, ...]
    failed: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        """True when every requested symbol was accepted."""
        return not self.failed
