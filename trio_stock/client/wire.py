"""Seed 003 as the client speaks it: messages parsed into values, requests encoded. No I/O.

The gateway's messages (``endpoints/prices.py``) are read through the project's cattrs
converter. Unknown keys are ignored, so a gateway that adds fields does not break an older
client; a message that cannot be read raises :class:`MalformedMessage`, which the stream
counts and skips (a gateway's bug must not end the program).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, override

from ..converter import converter
from .values import PriceUpdate


@attrs.frozen
class Greeting:
    """``connected``: the gateway accepted the client (with auth on, its token too)."""

    message: str


@attrs.frozen
class SubscriptionReply:
    """``subscription``: what a subscribe or unsubscribe changed, and what it could not."""

    action: str  # "subscribed" | "unsubscribed"
    symbols: tuple[str, ...]
    failed: tuple[str, ...] = ()


@attrs.frozen
class ErrorReply:
    """``error``: a refused request or symbols; ``failed`` lists them when the gateway does."""

    message: str
    failed: tuple[str, ...] = ()


ServerMessage = PriceUpdate | Greeting | SubscriptionReply | ErrorReply


# A gateway refuses a whole request over a client's symbol limit (200 by default): a stream
# that asks for more, e.g. after a reconnect, asks in parts and loses only the excess.
SYMBOLS_PER_REQUEST = 50


class MalformedMessage(ValueError):
    """A message from the gateway that is not JSON, or not the shape of its ``type``."""


_structure_update = make_dict_structure_fn(
    PriceUpdate,
    converter,
    kind=override(rename="data_type"),
    timestamp_ms=override(rename="timestamp"),
    gap=override(omit=True),  # the stream's finding, never the wire's
)


def _structure_price_update(value: Any, _: type) -> PriceUpdate:
    if isinstance(value, dict) and "epoch" not in value:
        value = {**value, "epoch": None}  # a gateway older than the field
    return _structure_update(value, PriceUpdate)


converter.register_structure_hook(PriceUpdate, _structure_price_update)

_TYPES: dict[str, type[ServerMessage]] = {
    "price_update": PriceUpdate,
    "connected": Greeting,
    "subscription": SubscriptionReply,
    "error": ErrorReply,
}


def parse(message: str | bytes) -> ServerMessage | None:
    """The typed value of one message; ``None`` for those a stream has no use for.

    ``pong``, ``subscriptions`` and ``auth`` carry nothing the stream needs.

    Raises:
        MalformedMessage: not a JSON object, or not the shape its ``type`` promises.
    """
    try:
        payload = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedMessage("not a JSON object")
    name = payload.get("type")
    kind = _TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        return None
    try:
        value: ServerMessage = converter.structure(payload, kind)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise MalformedMessage(f"a malformed {name}: {exc!r:.200}") from None
    return value


def subscribe_requests(symbols: Sequence[str]) -> list[str]:
    """``subscribe`` requests for ``symbols``, ``SYMBOLS_PER_REQUEST`` at most in each."""
    return _requests("subscribe", symbols)


def unsubscribe_requests(symbols: Sequence[str]) -> list[str]:
    """``unsubscribe`` requests for ``symbols``, ``SYMBOLS_PER_REQUEST`` at most in each."""
    return _requests("unsubscribe", symbols)


def _requests(action: str, symbols: Sequence[str]) -> list[str]:
    return [
        orjson.dumps({"action": action, "symbols": symbols[i : i + SYMBOLS_PER_REQUEST]}).decode()
        for i in range(0, len(symbols), SYMBOLS_PER_REQUEST)
    ]
