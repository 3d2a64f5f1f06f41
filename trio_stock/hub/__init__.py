"""The memory-channel pub/sub hub: quotas, linger, backpressure, cancellation-safe fan-out."""

from .hub import (
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_LINGER,
    Hub,
    HubStatistics,
    UpstreamUsage,
)
from .results import Failure, FailureReason, SubscribeResult
from .subscriber import Policy, Subscriber, SubscriberStatistics

__all__ = [
    "DEFAULT_ACK_TIMEOUT",
    "DEFAULT_LINGER",
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
