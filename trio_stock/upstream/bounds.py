"""What an upstream number may be: the plausibility bounds every provider checks.

Upstream data is untrusted input (issue 11): a number that reaches a client, ``orjson`` or
``datetime`` must be one that cannot overflow them and that a market could produce. Each
wire format (``kis_wire.py``, ``fmp_wire.py``) reads its numbers with :func:`bounded`
against these bounds, and the session engine checks every tick once more before the hub
sees it (:func:`tick_problem`), so a parser's slip cannot reach the clients either.
"""

from __future__ import annotations

import math

from ..model import Tick

NS_PER_S = 1_000_000_000
# Provider times: 2000-01-01T00:00:00Z inclusive .. 2100-01-01T00:00:00Z exclusive, in epoch
# ns. Far inside int64 and datetime's range, so no encoder can overflow on them.
TIME_MIN_NS = 946_684_800 * NS_PER_S
TIME_MAX_NS = 4_102_444_800 * NS_PER_S
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what orjson writes as a signed integer
# Prices (trade, bid, ask, open, high, low, previous close), in the market's currency: a
# millionth of a unit up to a billion units (Berkshire A is under $1e6, the dearest KRX
# stock under 1e7 won). The floor keeps a derived change rate (change / previous close)
# finite.
PRICE_MIN = 1e-6
PRICE_MAX = 1e9
# Sizes and volumes (shares): 0 up to 1e15, above any day's volume of any stock and still
# exact in a float (< 2**53).
SIZE_MAX = 1e15
# Change vs the previous close: |change| <= PRICE_MAX; |change rate| <= 1e6 percent.
CHANGE_RATE_MAX = 1e6


def bounded(value: float, low: float, high: float) -> float | None:
    """``value`` if it is finite and within ``low..high``, else None (the one number check)."""
    return value if math.isfinite(value) and low <= value <= high else None


def in_time_window(epoch_ns: int) -> bool:
    """True if ``epoch_ns`` lies in ``TIME_MIN_NS`` (inclusive) .. ``TIME_MAX_NS``."""
    return TIME_MIN_NS <= epoch_ns < TIME_MAX_NS


def tick_problem(tick: Tick) -> str | None:
    """What makes ``tick`` unfit for clients, or None if every field is within the bounds.

    ``provider_time_ns`` must lie in the time window, unless it is ``received_ns`` (the
    gateway's own clock, which parsers fall back to when an upstream time is unusable).
    Every published tick pays for this check, so a plain pass over the fields comes first
    (~0.5 µs); the reason is looked for only when it fails.
    """
    if _plausible(tick):
        return None
    return _problem(tick) or "implausible"


def _plausible(tick: Tick) -> bool:
    try:
        t, received = tick.provider_time_ns, tick.received_ns
        if not tick.symbol or not INT64_MIN <= received <= INT64_MAX:
            return False
        if not (TIME_MIN_NS <= t < TIME_MAX_NS or t == received):
            return False
        prices = (tick.price, tick.bid, tick.ask, tick.open, tick.high, tick.low, tick.prev_close)
        for value in prices:
            if value is not None and not PRICE_MIN <= value <= PRICE_MAX:  # NaN fails too
                return False
        for value in (tick.size, tick.bid_size, tick.ask_size, tick.volume):
            if value is not None and not 0.0 <= value <= SIZE_MAX:
                return False
        change, rate = tick.change, tick.change_rate
        return (change is None or -PRICE_MAX <= change <= PRICE_MAX) and (
            rate is None or -CHANGE_RATE_MAX <= rate <= CHANGE_RATE_MAX
        )
    except TypeError:  # a field of the wrong type
        return False


def _problem(tick: Tick) -> str | None:
    if not isinstance(tick.symbol, str) or not tick.symbol:
        return "no symbol"
    for name in ("provider_time_ns", "received_ns"):
        value = getattr(tick, name)
        if not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
            return f"{name} is not a 64-bit integer"
    if tick.provider_time_ns != tick.received_ns and not in_time_window(tick.provider_time_ns):
        return "provider_time_ns outside the time window"
    for name in ("price", "bid", "ask", "open", "high", "low", "prev_close"):
        if not _within(getattr(tick, name), PRICE_MIN, PRICE_MAX):
            return f"{name} outside {PRICE_MIN:g}..{PRICE_MAX:g}"
    for name in ("size", "bid_size", "ask_size", "volume"):
        if not _within(getattr(tick, name), 0.0, SIZE_MAX):
            return f"{name} outside 0..{SIZE_MAX:g}"
    if not _within(tick.change, -PRICE_MAX, PRICE_MAX):
        return "change out of bounds"
    if not _within(tick.change_rate, -CHANGE_RATE_MAX, CHANGE_RATE_MAX):
        return "change_rate out of bounds"
    return None


def _within(value: float | None, low: float, high: float) -> bool:
    """None, or a finite real number (not a bool) in ``low..high``."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and low <= value <= high
