"""The memory-channel pub/sub hub: quotas, linger, backpressure, cancellation-safe fan-out."""

from ..results import Failure, FailureReason, SubscribeResult
from .history import BAR_SECONDS, DEFAULT_HISTORY_BARS, Bar
from .hub import (
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_LINGER,
    Hub,
    HubStatistics,
    UpstreamUsage,
)
from .subscriber import (
    DEFAULT_LOSSLESS_CAPACITY,
    DEFAULT_MAX_BACKLOG,
    DEFAULT_MAX_DELAY,
    Policy,
    Subscriber,
    SubscriberStatistics,
)

__all__ = [
    "BAR_SECONDS",
    "DEFAULT_ACK_TIMEOUT",
    "DEFAULT_HISTORY_BARS",
    "DEFAULT_LINGER",
    "DEFAULT_LOSSLESS_CAPACITY",
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_MAX_DELAY",
    "Bar",
    "Failure",
    "FailureReason",
    "Hub",
    "HubStatistics",
    "Policy",
    "SubscribeResult",
    "Subscriber",
    "SubscriberStatistics",
    "UpstreamUsage",
]
