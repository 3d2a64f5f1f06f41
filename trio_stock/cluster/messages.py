"""The small messages nodes and holders exchange over Redis channels, typed (cattrs).

A node tells a session's holder that its demand changed (``DemandChanged``, with the symbols
it awaits an answer for); the holder answers each awaited symbol, and tells a node about a
held symbol it can no longer serve, with ``Answer``. Everything read is size-bounded and
structured through the project's converter; anything else is skipped and counted.
"""

from __future__ import annotations

import attrs
import cattrs

from ..converter import converter
from ..results import Failure, FailureReason

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SYMBOLS_PER_MESSAGE = 1000


class MalformedMessage(ValueError):
    """A channel message that is not one of ours."""


@attrs.frozen
class DemandChanged:
    """``node`` rewrote its demand set; ``subscribe`` lists the symbols it awaits answers for."""

    node: str
    subscribe: tuple[str, ...] = ()


@attrs.frozen
class Answer:
    """The holder's word on one symbol for one node: registered, or failed with a reason."""

    symbol: str
    ok: bool
    reason: FailureReason | None = None
    detail: str = ""

    @classmethod
    def failed(cls, failure: Failure) -> Answer:
        return cls(failure.symbol, False, failure.reason, failure.detail)


def encode(message: DemandChanged | list[Answer]) -> bytes:
    return converter.dumps(message)


def _checked_text(data: bytes | str) -> bytes | str:
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message of {len(data)} bytes")
    return data


def decode_demand(data: bytes | str) -> DemandChanged:
    try:
        message = converter.loads(_checked_text(data), DemandChanged)
    except (cattrs.BaseValidationError, ValueError, TypeError) as error:
        raise MalformedMessage("not a demand message") from error
    if len(message.subscribe) > MAX_SYMBOLS_PER_MESSAGE:
        raise MalformedMessage("too many symbols")
    return message


def decode_answers(data: bytes | str) -> list[Answer]:
    try:
        answers = converter.loads(_checked_text(data), list[Answer])
    except (cattrs.BaseValidationError, ValueError, TypeError) as error:
        raise MalformedMessage("not a list of answers") from error
    if len(answers) > MAX_SYMBOLS_PER_MESSAGE:
        raise MalformedMessage("too many answers")
    return answers
