"""FMP's wire format, free of I/O: client frames out, server frames and REST quotes in.

Everything here takes text or parsed JSON and returns values, so the protocol rules of
``protocols/fmp.md`` are tested without sockets (``tests/test_fmp.py``):

- frames are classified by ``event`` first (``login``, ``subscribe``, ``unsubscribe``,
  ``heartbeat``; any other event is a control frame too), and only frames without an
  ``event`` are data, dispatched on ``type`` (§10);
- data fields may be ``null`` *or missing* (§4); a frame may be an array of objects (§4,
  accepted defensively);
- ``t`` has no documented unit: it is normalised by magnitude to epoch nanoseconds (§4);
- tickers go out lower-case and come back compared case-insensitively (§3); the hub's
  symbols are upper-case;
- ``/stable/quote`` answers seed a symbol's state (§7), and its error bodies are told
  apart by their text, not only their status (§6, §7).

Untrusted input: any JSON shape is tolerated, and no value leaves here unchecked.

- A value of the wrong JSON type is treated as absent (``"type": ["T"]``, ``"s": {}``,
  ``"event": []``, a ``status`` that is not an HTTP status); texts are cut.
- Numbers are held to the engine's bounds (``session.py``): a price outside
  ``PRICE_MIN``..``PRICE_MAX``, a size or volume outside ``0``..``SIZE_MAX``, a change
  beyond ``±PRICE_MAX`` or a change rate beyond ``±CHANGE_RATE_MAX`` is absent. An object
  left without what its kind needs (a trade's price, one side of a quote, a symbol) is
  malformed: counted and skipped, the frame's other objects go on.
- A ``t`` (or REST ``timestamp``) that is missing, not a number, not positive, or outside
  the time window after normalisation (``TIME_MIN_NS``..``TIME_MAX_NS``: years 2000 to
  2099) is replaced by the time the frame was read. The price is still good, and the
  receive time is the honest stamp for it; an untrusted time never reaches an encoder.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import orjson

from ..model import Tick, TickKind
from .bounds import (
    CHANGE_RATE_MAX,
    NS_PER_S,
    PRICE_MAX,
    PRICE_MIN,
    SIZE_MAX,
    bounded,
    in_time_window,
)

MAX_ITEMS_PER_FRAME = 1_000  # objects in one array frame; the rest are counted malformed
MAX_SYMBOL_LENGTH = 32  # longer `s` values are not symbols
MAX_TICKERS_PER_FRAME = 100  # tickers per subscribe/unsubscribe frame (our own bound; §6)
MAX_SYMBOLS_PER_QUOTE = 100  # symbols per /stable/quote request (URL stays short)
MAX_EVENT_LENGTH = 64  # characters kept of an `event` name (logs)
MAX_MESSAGE_LENGTH = 500  # characters kept of a control frame's `message` (logs, clients)
MAX_REST_MESSAGE = 300  # characters kept of a REST error body's text


def login_frame(api_key: str) -> str:
    """The login message (protocols/fmp.md §2). The only place the key is written."""
    return orjson.dumps({"event": "login", "data": {"apiKey": api_key}}).decode()


def ticker_frames(event: str, symbols: Sequence[str]) -> list[str]:
    """``subscribe``/``unsubscribe`` frames for ``symbols``, lower-cased, batched as lists.

    fmp.md §3: ``ticker`` may be a string or a list; every documented example is lower-case.
    """
    if event not in ("subscribe", "unsubscribe"):
        raise ValueError(f"not a ticker event: {event!r}")
    lowered = [s.lower() for s in symbols]
    return [
        orjson.dumps(
            {"event": event, "data": {"ticker": lowered[i : i + MAX_TICKERS_PER_FRAME]}}
        ).decode()
        for i in range(0, len(lowered), MAX_TICKERS_PER_FRAME)
    ]


def normalize_time_ns(t: int | float) -> int:
    """Epoch nanoseconds from a ``t`` of unknown unit, by magnitude (fmp.md §4).

    Above 1e17 the value is nanoseconds (stocks), above 1e14 microseconds, above 1e11
    milliseconds (reported for crypto/forex), otherwise seconds (REST ``timestamp``).
    The result is not range-checked: see :func:`provider_time_ns`.
    """
    if t > 1e17:
        return int(t)
    if t > 1e14:
        return int(t * 1_000)
    if t > 1e11:
        return int(t * 1_000_000)
    return int(t * NS_PER_S)


def provider_time_ns(t: object, received_ns: int) -> int:
    """The provider time of a ``t`` or ``timestamp``: normalised, or ``received_ns``.

    The receive time stands in when ``t`` is missing, not a finite positive number, or
    outside the time window once normalised (module doc). Integers stay exact.
    """
    if isinstance(t, bool):
        return received_ns
    if isinstance(t, int):
        value: int | float = t
    else:
        number = _number(t)
        if number is None:
            return received_ns
        value = number
    if value <= 0:
        return received_ns
    ns = normalize_time_ns(value)
    return ns if in_time_window(ns) else received_ns


class LoginOutcome(enum.Enum):
    """What a ``login`` event says (fmp.md §2)."""

    OK = "ok"  # status 200 / "Authenticated"
    UNAUTHORIZED = "unauthorized"  # bad key or no WebSocket entitlement: permanent
    ANOTHER_LOCATION = "another_location"  # the key is connected elsewhere (§6: one per key)
    FAILED = "failed"  # some other refusal (status >= 400): retry with backoff


@attrs.frozen
class Control:
    """A frame carrying an ``event``: a login answer, an ack, a heartbeat, or anything else.

    ``message`` is the server's own text, which never contains our key.
    """

    event: str
    status: int | None = None
    message: str = ""

    @property
    def refused(self) -> bool:
        """True when the server said no: status >= 400, or the texts of fmp.md §2/§3."""
        if self.status is not None and self.status >= 400:
            return True
        text = self.message.lower()
        return "unauthorized" in text or "not authorized" in text

    def login_outcome(self) -> LoginOutcome:
        """Classify a ``login`` event (fmp.md §2, §6)."""
        text = self.message.lower()
        if "connected from another location" in text or "maximum number of connections" in text:
            return LoginOutcome.ANOTHER_LOCATION
        if "unauthorized" in text or "not authorized" in text or self.status in (401, 403):
            return LoginOutcome.UNAUTHORIZED
        return LoginOutcome.FAILED if self.refused else LoginOutcome.OK

    def mentions(self, symbols: Iterable[str]) -> list[str]:
        """The ``symbols`` (upper-case) this control frame's message names, in its order.

        FMP's ack text is unconfirmed (fmp.md §3); when it names tickers, they are matched
        case-insensitively as whole words.
        """
        words = _words(self.message)
        return [s for s in symbols if s.upper() in words]


@attrs.frozen
class Decoded:
    """What one inbound WebSocket frame held."""

    ticks: tuple[Tick, ...] = ()
    controls: tuple[Control, ...] = ()
    malformed: int = 0  # objects that were neither control nor usable data (skipped)


class MalformedJson(ValueError):
    """The frame is not JSON, or not an object or array of objects."""


def decode_frame(text: str | bytes, received_ns: int) -> Decoded:
    """Parse one inbound frame: a JSON object, or (defensively) an array of objects.

    Raises:
        MalformedJson: not JSON at all, or JSON that is neither object nor array.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"not JSON: {exc}") from None
    if isinstance(value, dict):
        items: Sequence[Any] = (value,)
    elif isinstance(value, list):
        items = value
    else:
        raise MalformedJson(f"a JSON {type(value).__name__}, not an object")
    ticks: list[Tick] = []
    controls: list[Control] = []
    malformed = max(0, len(items) - MAX_ITEMS_PER_FRAME)
    for item in items[:MAX_ITEMS_PER_FRAME]:
        if not isinstance(item, dict):
            malformed += 1
        elif "event" in item:
            controls.append(parse_control(item))
        else:
            tick = parse_data(item, received_ns)
            if tick is None:
                malformed += 1
            else:
                ticks.append(tick)
    return Decoded(tuple(ticks), tuple(controls), malformed)


def parse_control(item: dict[str, Any]) -> Control:
    """A control frame: top-level ``event``/``status``/``message`` (fmp.md §2).

    The newer socket nests them in ``data`` (§9); that form is read too, since it costs
    nothing and a wrong host should still produce a readable error.
    """
    event = item.get("event")
    status, message = item.get("status"), item.get("message")
    nested = item.get("data")
    if isinstance(nested, dict):
        status = nested.get("status", status)
        message = nested.get("message", message)
    return Control(
        # Not repr(): that of a deeply nested value can raise RecursionError.
        event=event[:MAX_EVENT_LENGTH].lower()
        if isinstance(event, str)
        else f"<{type(event).__name__}>",
        status=status if _is_status(status) else None,
        message=message[:MAX_MESSAGE_LENGTH] if isinstance(message, str) else "",
    )


def _is_status(value: object) -> bool:
    """An HTTP-like status code: an integer 100..999 (bools and floats are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 999


def parse_data(item: dict[str, Any], received_ns: int) -> Tick | None:
    """One data object as a :class:`Tick`, or None when it is unusable.

    Dispatch on ``type`` (fmp.md §4): ``T`` trade (``lp``/``ls``), ``Q`` quote
    (``bp``/``bs``/``ap``/``as``), ``B`` trade break (``lp``/``ls`` of the broken trade).
    Fields that do not apply are null or missing; a ``T``/``B`` without a usable price or
    a ``Q`` without any usable side is unusable, and so is an object whose ``s`` is not a
    symbol or whose ``type`` is not one of those letters (any JSON value may stand there).
    An unusable ``t`` falls back to the time the frame was read (:func:`provider_time_ns`).
    """
    symbol = _symbol(item.get("s"))
    if symbol is None:
        return None
    name = item.get("type")
    kind = _KINDS.get(name) if isinstance(name, str) else None  # a list is unhashable
    if kind is None:
        return None
    provider_ns = provider_time_ns(item.get("t"), received_ns)
    if kind is TickKind.QUOTE:
        bid, ask = _price(item.get("bp")), _price(item.get("ap"))
        if bid is None and ask is None:
            return None
        return Tick(
            symbol,
            kind,
            provider_ns,
            received_ns,
            bid=bid,
            bid_size=_size(item.get("bs")),
            ask=ask,
            ask_size=_size(item.get("as")),
        )
    price = _price(item.get("lp"))
    if price is None:
        return None
    return Tick(symbol, kind, provider_ns, received_ns, price=price, size=_size(item.get("ls")))


class RestError(ValueError):
    """``/stable/quote`` answered with an error body (its text is FMP's, never our key)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message

    @property
    def kind(self) -> str:
        """``invalid_key``, ``limit``, ``legacy``, or ``http_error`` (fmp.md §6, §7)."""
        text = self.message.lower()
        if "invalid api key" in text:
            return "invalid_key"
        if "limit reach" in text:
            return "limit"
        if "legacy endpoint" in text:
            return "legacy"
        return "http_error"


def parse_quotes(status: int, body: bytes, received_ns: int) -> list[Tick]:
    """``/stable/quote`` ticks, one per symbol in the answer (fmp.md §7).

    Each is a ``T`` tick with the last price, the day's open/high/low/volume, the previous
    close and the change, timestamped by the quote's ``timestamp`` (seconds). Unknown
    symbols are simply absent (an empty array). Both the stable ``changePercentage`` and
    the v3 ``changesPercentage`` are read.

    Raises:
        RestError: an error body (``{"Error Message": ...}``, with any status, §7) or a
            non-2xx status, or a body that is not a JSON array.
    """
    try:
        value = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        texts = (value.get(k) for k in ("Error Message", "message", "error"))
        message = next((t for t in texts if isinstance(t, str) and t), None)
        raise RestError(status, message[:MAX_REST_MESSAGE] if message else "error object")
    if not 200 <= status < 300:
        raise RestError(status, "unexpected status")
    if not isinstance(value, list):
        raise RestError(status, "the body is not a JSON array")
    ticks = []
    for item in value[:MAX_SYMBOLS_PER_QUOTE]:
        tick = _quote_tick(item, received_ns) if isinstance(item, dict) else None
        if tick is not None:
            ticks.append(tick)
    return ticks


def _quote_tick(item: dict[str, Any], received_ns: int) -> Tick | None:
    symbol = _symbol(item.get("symbol"))
    price = _price(item.get("price"))
    if symbol is None or price is None:
        return None
    rate = _bounded(item.get("changePercentage"), CHANGE_RATE_MAX)
    if rate is None:
        rate = _bounded(item.get("changesPercentage"), CHANGE_RATE_MAX)  # the v3 name (§7)
    return Tick(
        symbol,
        TickKind.TRADE,
        provider_time_ns(item.get("timestamp"), received_ns),  # seconds (§7)
        received_ns,
        price=price,
        open=_price(item.get("open")),
        high=_price(item.get("dayHigh")),
        low=_price(item.get("dayLow")),
        volume=_size(item.get("volume")),
        prev_close=_price(item.get("previousClose")),
        change=_bounded(item.get("change"), PRICE_MAX),
        change_rate=rate,
    )


_KINDS = {"T": TickKind.TRADE, "Q": TickKind.QUOTE, "B": TickKind.CANCEL}


def _symbol(value: object) -> str | None:
    """An upper-case symbol: printable ASCII, 1..``MAX_SYMBOL_LENGTH`` once stripped."""
    if not isinstance(value, str) or len(value) > MAX_SYMBOL_LENGTH:
        return None
    symbol = value.strip().upper()
    if not symbol or not symbol.isascii() or not symbol.isprintable():
        return None
    return symbol


def _number(value: object, low: float = -math.inf, high: float = math.inf) -> float | None:
    """A finite JSON number within ``low..high`` (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float's range (not from orjson: 64 bits)
        return None
    return bounded(number, low, high)


def _price(value: object) -> float | None:
    return _number(value, PRICE_MIN, PRICE_MAX)


def _size(value: object) -> float | None:
    return _number(value, 0.0, SIZE_MAX)


def _bounded(value: object, bound: float) -> float | None:
    return _number(value, -bound, bound)


def _words(text: str) -> set[str]:
    """Upper-case ticker-like words of ``text`` (letters, digits, ``.``, ``-``)."""
    cleaned = "".join(c if c.isalnum() or c in ".-" else " " for c in text.upper())
    return {w.strip(".-") for w in cleaned.split()}
