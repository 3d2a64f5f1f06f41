"""``python -m trio_stock watch``: live prices from a gateway in the terminal.

    python -m trio_stock watch 005930 AAPL [--url ws://HOST:PORT/api/v2/realtime/ws/prices]

On a terminal it draws a table that updates in place; type ``+TSLA`` or ``-005930`` and
Enter to add or remove symbols. When stdout is not a terminal it writes one plain line per
update (:mod:`.render` documents the format) and takes the same commands as lines on
stdin; connection events and notes go to stderr. Ctrl-C or SIGTERM end it with exit code 0:
stopping is how a watch ends, not a failure. A gateway that refuses the token (close code
4001 or 4003) ends it with exit code 1, a usage error with 2.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import logging
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import attrs
import trio
from rich.console import Console
from rich.live import Live

from ..client import PriceStream, PriceUpdate, StreamEvent, StreamRefused, open_price_stream
from ..client.address import Address, bearer_header
from ..errors import InvalidSymbol
from ..symbols import normalize_symbol
from .board import Board, Row
from .commands import Add, LineBuffer, Rejected, Remove, parse_command
from .render import board_view, plain_event, plain_gap, plain_line

DEFAULT_URL = "ws://127.0.0.1:8000/api/v2/realtime/ws/prices"
REFRESH_PER_SECOND = 4  # redraws of the table; the rates and the retry countdown move too
INPUT_CHUNK = 1024  # bytes read from stdin at a time
STDIN = 0  # the descriptor, even where sys.stdin is None (started with stdin closed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trio_stock watch",
        description="Watch live prices from a trio_stock gateway: a table on a terminal, "
        "one line per update otherwise. Add or remove symbols while it runs with lines "
        "such as +TSLA or -005930 on stdin. Ctrl-C ends it (exit code 0).",
    )
    parser.add_argument(
        "symbols", nargs="*", type=_symbol, help="Korean codes (005930) and US tickers (AAPL)"
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the gateway's seed 003 endpoint (default: {DEFAULT_URL})",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        help="a token for a gateway run with --auth jwt (visible in ps: prefer --token-file)",
    )
    token.add_argument("--token-file", type=Path, help="read the token from this file")
    return parser


def _symbol(text: str) -> str:
    try:
        return normalize_symbol(text)[0]
    except InvalidSymbol:
        raise argparse.ArgumentTypeError(f"not a Korean code or US ticker: {text!r}") from None


@attrs.frozen
class Options:
    """What the command line asked for."""

    url: str
    symbols: tuple[str, ...]
    token: str | None = attrs.field(default=None, repr=False)  # never printed


def parse_options(argv: Sequence[str]) -> Options:
    """The options of ``argv``; exits with code 2 on a usage error (argparse's way)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    token: str | None = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            parser.error(f"--token-file: {exc.strerror}")
    try:  # checked here, as the stream will, so that a mistake is a usage error
        Address.from_url(args.url)
        bearer_header(token)
    except ValueError as exc:  # neither message shows the token
        parser.error(str(exc))
    return Options(args.url, tuple(dict.fromkeys(args.symbols)), token)


class View(Protocol):
    """Where the watch shows what happens: the live table or plain lines."""

    def show(self, item: PriceUpdate | StreamEvent, row: Row | None) -> None:
        """``item`` was applied to the board; ``row`` is the row an update changed."""

    def note(self, text: str) -> None:
        """Tell the user something (bad input)."""

    async def run(self, stream: PriceStream) -> None:
        """Keep the view up to date until cancelled."""


@attrs.define(eq=False)
class LiveView:
    """The table, redrawn in place a few times a second on a terminal."""

    board: Board
    console: Console

    def show(self, item: PriceUpdate | StreamEvent, row: Row | None) -> None:
        pass  # the next redraw shows it: drawing per update would cost more than it shows

    def note(self, text: str) -> None:
        self.board.note = text

    async def run(self, stream: PriceStream) -> None:
        # Refreshed from this task, not by rich's own thread, so the board is only ever
        # read on Trio's thread.
        with Live(console=self.console, auto_refresh=False) as live:
            while True:
                self.board.statistics = stream.statistics()
                live.update(board_view(self.board, trio.current_time()), refresh=True)
                await trio.sleep(1 / REFRESH_PER_SECOND)


@attrs.define(eq=False)
class PlainView:
    """One line per update on stdout; events and notes on stderr."""

    def show(self, item: PriceUpdate | StreamEvent, row: Row | None) -> None:
        if not isinstance(item, PriceUpdate):
            print(plain_event(item), file=sys.stderr, flush=True)
        elif row is not None:
            if item.gap is not None:
                print(plain_gap(item.symbol, item.gap), file=sys.stderr, flush=True)
            # Flushed per line: a script reading the pipe sees each update when it comes.
            print(plain_line(item), flush=True)

    def note(self, text: str) -> None:
        print(f"watch: {text}", file=sys.stderr, flush=True)

    async def run(self, stream: PriceStream) -> None:
        await trio.lowlevel.checkpoint()  # each line is written when its update comes


@attrs.define(eq=False)
class ThreadedInput(trio.abc.ReceiveStream):
    """A file descriptor (stdin) read in a worker thread.

    Not ``trio.lowlevel.FdStream``: it makes the descriptor non-blocking, and on a terminal
    that flag is shared by stdout, whose writes (the table) would then fail with
    ``BlockingIOError``. The thread is abandoned when the watch ends.
    """

    fd: int

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = max_bytes or INPUT_CHUNK
        try:
            return await trio.to_thread.run_sync(os.read, self.fd, size, abandon_on_cancel=True)
        except OSError:
            return b""  # closed (``<&-``) or a terminal hung up: no more input, same as EOF

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()  # stdin is not ours to close


async def follow_commands(
    keys: trio.abc.ReceiveStream, board: Board, stream: PriceStream, view: View
) -> None:
    """Apply ``+SYMBOL``/``-SYMBOL`` lines read from ``keys`` until it ends."""
    lines = LineBuffer()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await keys.receive_some(INPUT_CHUNK):
        for line in lines.feed(decoder.decode(chunk)):
            command = parse_command(line)
            if isinstance(command, Rejected):
                view.note(f"{command.line!r}: {command.reason}")
            elif isinstance(command, Add):
                board.note = None
                if new := board.add(command.symbols):
                    await stream.subscribe(new)
            elif isinstance(command, Remove):
                board.note = None
                if gone := board.remove(command.symbols):
                    await stream.unsubscribe(gone)
        board.typing = lines.pending


async def watch(options: Options, view: View, board: Board, keys: trio.abc.ReceiveStream) -> None:
    """Show the stream of ``options`` in ``view`` until it ends or the task is cancelled.

    Raises:
        StreamRefused: the gateway refused the token.
    """
    board.add(options.symbols)
    async with (
        open_price_stream(options.url, options.symbols, token=options.token) as stream,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(view.run, stream)
        nursery.start_soon(follow_commands, keys, board, stream, view)
        async for item in stream:
            view.show(item, board.apply(item, trio.current_time()))
        nursery.cancel_scope.cancel()


async def run(options: Options, view: View, board: Board, keys: trio.abc.ReceiveStream) -> None:
    """:func:`watch` until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            await watch(options, view, board, keys)
            nursery.cancel_scope.cancel()


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


@contextlib.contextmanager
def keys_without_echo(fd: int) -> Iterator[None]:
    """Keys reach us one by one and are not echoed, while the table is drawn.

    An echoed line would be written into the middle of the table; the view draws the
    line being typed itself. Ctrl-C still raises SIGINT (cbreak mode keeps ISIG). The
    terminal's settings come back on the way out, however it is left.
    """
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def main(argv: Sequence[str]) -> int:
    """Entry point of the subcommand; returns the exit code."""
    options = parse_options(argv)
    # The screen shows every event of the stream already; the client library's log lines
    # (Python's last-resort handler prints warnings to stderr) would only repeat them.
    logging.getLogger("trio_stock").addHandler(logging.NullHandler())
    _reserve_stdin()
    board = Board(options.url)
    live = sys.stdout.isatty()
    view: View = LiveView(board, Console()) if live else PlainView()
    keys = ThreadedInput(STDIN)
    code = 0
    with contextlib.ExitStack() as terminal:
        if live and os.isatty(STDIN):
            terminal.enter_context(keys_without_echo(STDIN))
        try:
            trio.run(run, options, view, board, keys)
        except* StreamRefused as group:
            print(f"trio_stock watch: {_first(group)}", file=sys.stderr)
            code = 1
        except* BrokenPipeError:
            _quiet_stdout()  # the reader of the pipe has had enough (``| head``)
        except* KeyboardInterrupt:
            pass  # Ctrl-C before the signal handler was up: the same clean end
    return code


def _first(group: BaseExceptionGroup[StreamRefused]) -> BaseException:
    """The first exception of nested nursery groups."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _reserve_stdin() -> None:
    """Started with stdin closed (``<&-``), take descriptor 0 with /dev/null: else the
    next socket opened would get it, and its bytes would be read as commands."""
    try:
        os.fstat(STDIN)
    except OSError:
        os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor: 0


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left of it at exit cannot fail
    again (the recipe of Python's documentation, ``signal``, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
