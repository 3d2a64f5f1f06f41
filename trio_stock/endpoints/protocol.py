"""What a WebSocket client protocol (seed 000's or seed 003's) supplies to a client session.

A protocol is I/O-free: it turns hub states into wire text and client requests into hub
calls and replies. :mod:`trio_stock.endpoints.client` moves the bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from ..hub import Failure, Hub, Subscriber, SubscribeResult
from ..model import Market, SymbolState

Payload = dict[str, Any]


class ClientContext(Protocol):
    """What a protocol's handlers may use of the client session."""

    hub: Hub
    subscriber: Subscriber

    async def reply(self, payload: Payload) -> None:
        """Queue a reply; it is sent before any update that follows it."""
        ...


Handler = Callable[[ClientContext, Mapping[str, Any]], Awaitable[None]]


class ClientProtocol(Protocol):
    """One WebSocket client protocol."""

    name: str  # the wire format's name, the key of the per-state encoding cache
    actions: Mapping[str, Handler]
    churn_actions: frozenset[str]  # actions that change subscriptions (rate-limited harder)
    markets: frozenset[Market]  # the markets whose symbols it carries

    def greeting(self) -> Payload:
        """The message sent when a client connects."""
        ...

    def encode(self, state: SymbolState) -> bytes:
        """The update as a complete WebSocket frame, ``b""`` when this protocol does not
        carry it; built once per state and kept in ``state.wire[name]`` (``text_frame``)."""
        ...

    def revoked(self, failures: Sequence[Failure]) -> Payload:
        """The message telling the client that subscriptions it held ended: the upstream
        stopped serving those symbols (``Subscriber.take_revoked``). ``failures`` is not
        empty; the client no longer holds any of them."""
        ...


def changed_symbols(result: SubscribeResult, held_before: frozenset[str]) -> list[str]:
    """Accepted symbols the subscriber did not hold before the request."""
    return [s for s in result.accepted if s not in held_before]


def symbol_list(message: Mapping[str, Any], key: str, max_items: int) -> list[str] | str:
    """The list of strings under ``key``, or an error text for the client."""
    value = message.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return f"'{key}' must be a list of strings"
    if not value:
        return f"'{key}' must not be empty"
    if len(value) > max_items:
        return f"'{key}' may hold at most {max_items} entries"
    return value
