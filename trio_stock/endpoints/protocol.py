"""What a WebSocket client protocol (seed 000's or seed 003's) supplies to a client session.

A protocol is I/O-free: it turns hub states into wire text and client requests into hub
calls and replies. :mod:`trio_stock.endpoints.client` moves the bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..hub import Failure, Hub, Subscriber, SubscribeResult
from ..model import Market, SymbolState
from .requests import InvalidRequest, R, structure_request

Payload = dict[str, Any]


class UpdateFilter(Protocol):
    """Per connection: which of the hub's updates a protocol that shows only some sends."""

    def select(self, states: list[SymbolState]) -> list[SymbolState]:
        """The states of a batch to send, in order."""
        ...

    def forget(self, symbols: Iterable[str]) -> None:
        """The client no longer holds ``symbols``: a later subscribe starts afresh."""
        ...


class ClientContext(Protocol):
    """What a protocol's handlers may use of the client session."""

    hub: Hub
    subscriber: Subscriber
    update_filter: UpdateFilter | None

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

    def update_filter(self) -> UpdateFilter | None:
        """A new connection's filter of updates, or ``None`` to send every update."""
        ...

    def revoked(self, failures: Sequence[Failure]) -> Payload:
        """The message telling the client that subscriptions it held ended: the upstream
        stopped serving those symbols (``Subscriber.take_revoked``). ``failures`` is not
        empty; the client no longer holds any of them."""
        ...


def changed_symbols(result: SubscribeResult, held_before: frozenset[str]) -> list[str]:
    """Accepted symbols the subscriber did not hold before the request."""
    return [s for s in result.accepted if s not in held_before]


def takes(
    request_type: type[R],
) -> Callable[[Callable[[ClientContext, R], Awaitable[None]]], Handler]:
    """Make a handler of ``request_type`` (:mod:`.requests`) a handler of client messages.

    The message is structured into a ``request_type`` first, bounded by the client's own
    ``max_symbols``; one that cannot be gets an ``error`` with the converter's text, and the
    handler is not called.
    """

    def decorate(handle: Callable[[ClientContext, R], Awaitable[None]]) -> Handler:
        @functools.wraps(handle)
        async def handler(ctx: ClientContext, message: Mapping[str, Any]) -> None:
            try:
                request = structure_request(message, request_type, ctx.subscriber.max_symbols)
            except InvalidRequest as exc:
                await ctx.reply({"type": "error", "message": str(exc)})
                return
            await handle(ctx, request)

        return handler

    return decorate
