"""What clients ask for: the WebSocket protocols' subscribe/unsubscribe and the REST bodies.

Each request is an attrs value structured by the shared converter
(:data:`trio_stock.converter.converter`). The checks are the converter's hook for
:data:`SymbolList` (a JSON list of strings, nothing else) and the request types' own
validators; a request that fails them raises :class:`InvalidRequest`, whose text is the one
the client gets, in the words the README and the tests fix::

    seed 000 / seed 003 (WebSocket)             REST (body of subscribe / unsubscribe)
    'codes' must be a list of strings           body must be a JSON list of symbol strings
    'codes' must not be empty                   the list of symbols is empty
    'codes' may hold at most 200 entries        at most 100 symbols per request

(``'symbols' ...`` on seed 003's endpoint.) Unknown keys are ignored, ``action`` among them:
browsers and the seeds' clients send what they like. The symbols themselves stay as sent;
the hub normalises them one by one and answers for each (``FailureReason.INVALID``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NewType, TypeVar

import attrs
from attrs import AttrsInstance
from cattrs.errors import ClassValidationError
from cattrs.gen import make_dict_structure_fn

from ..converter import converter
from ..errors import TrioStockError

MAX_SYMBOLS_PER_BODY = 100  # REST; a WebSocket client's bound is its own (max_symbols)

R = TypeVar("R", bound=AttrsInstance)


class InvalidRequest(TrioStockError, ValueError):
    """A client request that cannot be served as sent; ``str(exc)`` is what the client is told.

    Raised by the converter while structuring a request (and by :func:`structure_request`),
    caught by the endpoint that answers it: it never leaves :mod:`trio_stock.endpoints`.
    """


SymbolList = NewType("SymbolList", tuple[str, ...])
"""A JSON list of strings, kept as sent."""


def _structure_symbol_list(value: object, _: object) -> SymbolList:
    # Strict on purpose: cattrs' own hooks would make "5930" of 5930 and ("A", "A", "P", "L")
    # of "AAPL", and a client is better told than guessed at.
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return SymbolList(tuple(value))
    raise TypeError("expected a JSON list of strings")


converter.register_structure_hook(SymbolList, _structure_symbol_list)


def _not_empty(instance: object, attribute: attrs.Attribute[SymbolList], value: SymbolList) -> None:
    if not value:
        raise InvalidRequest(f"'{attribute.name}' must not be empty")


def _body_bounds(
    instance: object, attribute: attrs.Attribute[SymbolList], value: SymbolList
) -> None:
    if not value:
        raise InvalidRequest("the list of symbols is empty")
    if len(value) > MAX_SYMBOLS_PER_BODY:
        raise InvalidRequest(f"at most {MAX_SYMBOLS_PER_BODY} symbols per request")


@attrs.frozen
class CodesRequest:
    """Seed 000 ``subscribe`` and ``unsubscribe``: ``{"action": "subscribe", "codes": [...]}``."""

    codes: SymbolList = attrs.field(validator=_not_empty)


@attrs.frozen
class SymbolsRequest:
    """Seed 003 ``subscribe`` and ``unsubscribe``: ``{"action": "subscribe", "symbols": [...]}``."""

    symbols: SymbolList = attrs.field(validator=_not_empty)


@attrs.frozen
class SymbolsBody:
    """The body of REST ``subscribe`` and ``unsubscribe``: seed 003's bare list
    ``["AAPL", "005930"]``, or the same list as ``{"symbols": [...]}`` (the WebSocket's key)."""

    symbols: SymbolList = attrs.field(validator=_body_bounds)


def _register(request_type: type[R], malformed: str, *, bare_list: bool = False) -> None:
    """Structure ``request_type`` with cattrs' generated hook, its errors in the client's words.

    A validator's :class:`InvalidRequest` passes through as it is; a field that is missing or
    not a list of strings is ``malformed`` (``{field}`` is the key). ``bare_list``: a JSON
    list is the value of the only field.
    """
    structure = make_dict_structure_fn(request_type, converter, _cattrs_detailed_validation=True)
    (field,) = attrs.fields(request_type)

    def hook(value: Any, _: object) -> R:
        if bare_list and isinstance(value, list):
            value = {field.name: value}
        try:
            return structure(value, request_type)
        except ClassValidationError as exc:
            with_notes, without = exc.group_exceptions()
            told = [e for e in without if isinstance(e, InvalidRequest)]
            if told:
                raise told[0] from None
            if with_notes and not without:
                raise InvalidRequest(malformed.format(field=with_notes[0][1].name)) from None
            raise  # neither the client's mistake nor one we describe: a bug of ours

    converter.register_structure_hook(request_type, hook)


_register(CodesRequest, "'{field}' must be a list of strings")
_register(SymbolsRequest, "'{field}' must be a list of strings")
_register(SymbolsBody, "body must be a JSON list of symbol strings", bare_list=True)


def structure_request(message: Mapping[str, Any], request_type: type[R], max_symbols: int) -> R:
    """``message`` as a ``request_type`` whose list holds at most ``max_symbols`` symbols.

    The bound is the client's own (``Subscriber.max_symbols``, which a token may lower),
    known only at run time, so it is checked here and not by a validator.

    Raises:
        InvalidRequest: the text the client gets.
    """
    request = converter.structure(message, request_type)
    (field,) = attrs.fields(request_type)  # each request is one list of symbols
    if len(getattr(request, field.name)) > max_symbols:
        raise InvalidRequest(f"'{field.name}' may hold at most {max_symbols} entries")
    return request


def structure_body(body: bytes) -> SymbolsBody:
    """A REST body as :class:`SymbolsBody`.

    Raises:
        orjson.JSONDecodeError: the body is not JSON (400).
        InvalidRequest: it is, but not a usable list of symbols (422); the text is the detail.
    """
    return converter.loads(body, SymbolsBody)
