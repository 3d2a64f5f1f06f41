"""Seed 003 as the client speaks it: messages parsed into values, requests encoded. No I/O.

The gateway's messages (``endpoints/prices.py``) are read through the project's cattrs
converter. Unknown keys are ignored, so a gateway that adds fields does not break an older
client; a message that cannot be read raises :class:`MalformedMessage`, which the stream
counts and skips (a gateway's bug must not end the program).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, override

from ..converter import converter
from .values import PriceUpdate


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


ServerMessage = PriceUpdate | SubscriptionReply | ErrorReply


class MalformedMessage(ValueError):
    """A message from the gateway that is not JSON, or not the shape of its ``type``."""


converter.register_structure_hook(
    PriceUpdate,
    make_dict_structure_fn(
        PriceUpdate,
        converter,
        kind=override(rename="data_type"),
        timestamp_ms=override(rename="timestamp"),
        epoch=override(struct_hook=lambda value, _: None if value is None else int(value)),
        gap=override(omit=True),  # the stream's finding, never the wire's
    ),
)

_TYPES: dict[str, type[ServerMessage]] = {
    "price_update": PriceUpdate,
    "subscription": SubscriptionReply,
    "error": ErrorReply,
}


def parse(message: str | bytes) -> ServerMessage | None:
    """The typed value of one message; ``None`` for those a stream has no use for.

    ``connected``, ``pong``, ``subscriptions`` and ``auth`` carry nothing the stream needs.

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


def subscribe_request(symbols: Iterable[str]) -> str:
    """A ``subscribe`` request for ``symbols``."""
    return _request("subscribe", symbols)


def unsubscribe_request(symbols: Iterable[str]) -> str:
    """An ``unsubscribe`` request for ``symbols``."""
    return _request("unsubscribe", symbols)


def _request(action: str, symbols: Iterable[str]) -> str:
    payload: dict[str, Any] = {"action": action, "symbols": list(symbols)}
    return orjson.dumps(payload).decode()
