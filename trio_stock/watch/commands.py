"""What ``python -m trio_stock watch`` reads on stdin: ``+SYMBOL`` and ``-SYMBOL`` lines.

``+TSLA`` adds a symbol to the watch, ``-005930`` removes one; several may follow one sign,
separated by spaces or commas (``+MSFT, NVDA``). Blank lines are ignored. Input is text
typed at a terminal (one key at a time, with Backspace and Ctrl-U) or lines piped in; both
go through :class:`LineBuffer`, which turns chunks of text into complete lines.
"""

from __future__ import annotations

import re

import attrs

from ..errors import InvalidSymbol
from ..symbols import normalize_symbol

MAX_LINE = 256  # characters kept of a line being typed; a command is a few symbols
HELP = "type +SYMBOL to add, -SYMBOL to remove (e.g. +TSLA, -005930)"

_BACKSPACES = ("\x7f", "\b")  # DEL is what terminals send for Backspace; ^H on some
_KILL_LINE = "\x15"  # Ctrl-U


@attrs.frozen
class Add:
    """Watch these symbols too (canonical, in the order typed)."""

    symbols: tuple[str, ...]


@attrs.frozen
class Remove:
    """Stop watching these symbols."""

    symbols: tuple[str, ...]


@attrs.frozen
class Rejected:
    """A line that is not a command; ``reason`` says why, for the screen."""

    line: str
    reason: str


Command = Add | Remove


def parse_command(line: str) -> Command | Rejected | None:
    """The command of one line, ``None`` for a blank one."""
    text = line.strip()
    if not text:
        return None
    sign, rest = text[0], text[1:]
    if sign not in "+-":
        return Rejected(text, HELP)
    raw = [word for word in re.split(r"[\s,]+", rest) if word]
    if not raw:
        return Rejected(text, HELP)
    symbols: list[str] = []
    invalid: list[str] = []
    for word in raw:
        try:
            symbol, _ = normalize_symbol(word)
        except InvalidSymbol:
            invalid.append(word)
            continue
        if symbol not in symbols:
            symbols.append(symbol)
    if invalid:
        return Rejected(text, f"not a Korean code or US ticker: {', '.join(invalid)}")
    return Add(tuple(symbols)) if sign == "+" else Remove(tuple(symbols))


@attrs.define(eq=False)
class LineBuffer:
    """Complete lines out of text that arrives in pieces, with a terminal's line editing.

    In the live view the terminal does not echo (the table would be torn by it), so the
    line being typed is kept here and drawn by the view: :attr:`pending`.
    """

    pending: str = ""

    def feed(self, text: str) -> list[str]:
        """Add ``text``; return the lines it completed (without their ends)."""
        lines: list[str] = []
        for char in text:
            if char in "\r\n":
                lines.append(self.pending)
                self.pending = ""
            elif char in _BACKSPACES:
                self.pending = self.pending[:-1]
            elif char == _KILL_LINE:
                self.pending = ""
            elif char.isprintable() and len(self.pending) < MAX_LINE:
                self.pending += char
        return lines
