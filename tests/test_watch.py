"""``python -m trio_stock watch``: formats, colours, the board, input, and the command itself.

The pure parts (formatting, colours, the board, the input language) are tested on values;
the command in process against a gateway on scripted markets, and as a subprocess against
``python -m trio_stock``: once with stdout a pipe (plain lines), once on a pseudo-terminal
(the table, Ctrl-C). Real sockets run on the real clock: nothing sleeps, every wait has a
deadline.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import io
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
import trio
import trio.testing
from rich.console import Console

import trio_stock
from trio_stock import Config, Market
from trio_stock.client import (
    Connected,
    Disconnected,
    Gap,
    PriceStream,
    PriceUpdate,
    StreamEvent,
    StreamStatistics,
    SubscriptionFailed,
)
from trio_stock.testing import ScriptedMarket
from trio_stock.watch.board import RATE_BUCKETS, Board, Link, RateMeter, Row
from trio_stock.watch.command import Options, build_parser, parse_options, watch
from trio_stock.watch.commands import (
    HELP,
    MAX_LINE,
    Add,
    LineBuffer,
    Rejected,
    Remove,
    parse_command,
)
from trio_stock.watch.render import (
    board_view,
    change_style,
    connection_line,
    format_amount,
    format_change,
    format_percent,
    format_price,
    format_time,
    plain_event,
    plain_gap,
    plain_line,
    plain_number,
    shown_url,
)

from .clients import gateway_process

PRICES = "/api/v2/realtime/ws/prices"
KST_NOON_MS = 1_700_017_200_000  # 2023-11-15 12:00:00 KST, 03:00 UTC, 22:00 EST the day before
JULY_MS = 1_720_000_000_000  # 2024-07-03 09:46:40 UTC: daylight saving in New York
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PLAIN = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\S+) (KR|US) ([TQB]) (\S+) (\S+) (\S+) (\S+) (\S+)"
)


def update(symbol: str = "005930", **fields: Any) -> PriceUpdate:
    """A seed 003 update as the client types it; Korean unless ``market`` says otherwise."""
    values: dict[str, Any] = {
        "symbol": symbol,
        "market": "KR" if symbol.isdigit() else "US",
        "provider": "sim",
        "kind": "T",
        "seq": 1,
        "epoch": 1,
        "timestamp_ms": KST_NOON_MS,
        "last_price": None,
        "last_size": None,
        "bid_price": None,
        "bid_size": None,
        "ask_price": None,
        "ask_size": None,
        "change": None,
        "change_percent": None,
        "open": None,
        "high": None,
        "low": None,
        "volume": None,
        "previous_close": None,
        "name": None,
    }
    return PriceUpdate(**{**values, **fields})


# ---- formats and colours ---------------------------------------------------------------


def test_korean_prices_are_won_with_separators_and_no_decimals() -> None:
    assert format_price(Market.KR, 71500.0) == "₩71,500"
    assert format_price(Market.KR, 1234567.0) == "₩1,234,567"
    assert format_amount(Market.KR, 71600.0) == "71,600"
    assert format_change(Market.KR, 1200.0) == "+1,200"
    assert format_change(Market.KR, -100.0) == "-100"


def test_us_prices_are_dollars_and_cents() -> None:
    assert format_price(Market.US, 189.45) == "$189.45"
    assert format_price(Market.US, 1234.5) == "$1,234.50"
    assert format_amount(Market.US, 189.4) == "189.40"
    assert format_change(Market.US, 1.2) == "+1.20"
    assert format_change(Market.US, -0.351) == "-0.35"


def test_flat_and_missing_values() -> None:
    assert format_change(Market.KR, 0.0) == "0"
    assert format_change(Market.US, -0.0) == "0.00"
    assert format_percent(0.0) == "0.00%"
    assert format_percent(0.64) == "+0.64%"
    assert format_percent(-0.14) == "-0.14%"
    for text in (
        format_price(Market.KR, None),
        format_change(Market.US, None),
        format_percent(None),
        format_time(Market.KR, None),
    ):
        assert text == "—"


def test_colours_follow_each_markets_convention() -> None:
    assert (change_style(Market.KR, 100.0), change_style(Market.KR, -100.0)) == ("red", "blue")
    assert (change_style(Market.US, 1.0), change_style(Market.US, -1.0)) == ("green", "red")
    assert change_style(Market.KR, 0.0) == change_style(Market.US, None) == ""


def test_trade_times_are_in_the_markets_own_zone() -> None:
    assert format_time(Market.KR, KST_NOON_MS) == "12:00:00 KST"
    assert format_time(Market.US, KST_NOON_MS) == "22:00:00 EST"
    assert format_time(Market.US, JULY_MS) == "05:46:40 EDT"


def test_a_token_in_the_url_is_never_shown() -> None:
    url = "ws://h:1/api/v2/realtime/ws/prices?access_token=s3cr3t&x=1"
    assert shown_url(url) == "ws://h:1/api/v2/realtime/ws/prices?access_token=***&x=1"
    connected = plain_event(Connected(url=url, attempt=1))
    assert "s3cr3t" not in connected and "access_token=***" in connected
    assert "s3cr3t" not in render_text(Board(url))


# ---- the plain format --------------------------------------------------------------------


def test_plain_lines_have_the_documented_fields() -> None:
    korean = update(
        last_price=71500.0, change=-100.0, change_percent=-0.14, bid_price=71500.0,
        ask_price=71600.0, timestamp_ms=1_700_000_000_123,
    )  # fmt: skip
    line = "2023-11-14T22:13:20.123Z 005930 KR T 71500 -100 -0.14 71500 71600"
    assert plain_line(korean) == line
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert line in readme.split("## Watching prices in the terminal", 1)[1]  # as documented
    quote = update("AAPL", kind="Q", last_price=189.45, bid_price=189.44, ask_price=189.46)
    fields = plain_line(quote).split(" ")
    assert fields[1:] == ["AAPL", "US", "Q", "189.45", "-", "-", "189.44", "189.46"]
    assert PLAIN.fullmatch(plain_line(quote))


def test_plain_numbers_are_as_short_as_they_are_exact() -> None:
    assert [plain_number(v) for v in (71500.0, 189.45, 0.1 + 0.2, -0.0, None)] == [
        "71500", "189.45", "0.3", "0", "-",
    ]  # fmt: skip


def test_events_and_gaps_are_lines_for_stderr() -> None:
    assert plain_event(Disconnected(code=1001, reason="going away", retry_in=2.0)) == (
        "watch: disconnected (1001): going away; retrying in 2.0 s"
    )
    failed = SubscriptionFailed(symbols=("TSLA",), message="Could not subscribe: quota")
    assert plain_event(failed) == "watch: could not subscribe TSLA: Could not subscribe: quota"
    assert plain_gap("AAPL", Gap(reason="seq", missed=3)) == "watch: AAPL: 3 updates missed (seq)"
    unknown = plain_gap("AAPL", Gap(reason="reconnect", missed=None))
    assert unknown == "watch: AAPL: an unknown number updates missed (reconnect)"


# ---- the board ---------------------------------------------------------------------------


def test_rate_meter_counts_whole_seconds_in_constant_memory() -> None:
    meter = RateMeter()
    for tick in range(100 * 10):  # 100 per second for ten seconds
        meter.record(1000 + tick / 100)
    assert meter.per_second(1010.5) == 100.0
    assert meter.per_second(1011.5) == 100 * (RATE_BUCKETS - 2) / (RATE_BUCKETS - 1)  # one quiet
    assert len(meter.counts) == RATE_BUCKETS
    assert meter.per_second(1010.0 + RATE_BUCKETS) == 0.0  # silence empties it
    assert meter.per_second(1100.0) == 0.0


def test_rate_meter_leaves_the_current_second_out() -> None:
    meter = RateMeter()
    for _ in range(8):
        meter.record(50.2)
    assert meter.per_second(50.9) == 0.0
    assert meter.per_second(51.0) == 8 / (RATE_BUCKETS - 1)


def test_board_follows_the_connection() -> None:
    board = Board("ws://h/p")
    board.add(("005930",))
    board.apply(update(last_price=71500.0, change=100.0), now=9.0)
    assert board.link is Link.CONNECTING
    board.apply(Disconnected(code=None, reason="connection refused", retry_in=1.5), now=10.0)
    board.apply(Disconnected(code=None, reason="connection refused", retry_in=3.0), now=12.0)
    assert (board.link, board.failed_tries, board.retry_at) == (Link.RECONNECTING, 2, 15.0)
    line = connection_line(board, now=14.0).plain
    assert "reconnecting in 1.0 s (attempt 3: connection refused)" in line
    assert "\x1b[2;31m" in row_of("005930", render_text(board, colour=True))  # dimmed: stale

    board.apply(Connected(url="ws://h/p", attempt=3), now=16.0)
    assert (board.link, board.failed_tries, board.retry_at) == (Link.CONNECTED, 0, None)
    assert "\x1b[2" not in row_of("005930", render_text(board, colour=True))
    board.statistics = StreamStatistics(
        connected=True, reconnects=2, updates=5, gaps=1, dropped=4, symbols=()
    )
    assert "● connected" in (text := connection_line(board, now=16.0).plain)
    assert "reconnects 2  gaps 1  skipped 4" in text

    board.apply(Disconnected(code=1001, reason="going away", retry_in=0.5), now=17.0)
    assert "reconnecting in 0.5 s (attempt 1: going away)" in connection_line(board, 17.0).plain


def row_of(symbol: str, screen: str) -> str:
    return next(line for line in screen.splitlines() if symbol in line)


def test_board_rows_take_updates_of_their_own_symbols_only() -> None:
    board = Board("ws://h/p")
    assert board.add(("005930", "AAPL")) == ("005930", "AAPL")
    assert board.add(("AAPL", "MSFT")) == ("MSFT",)
    assert board.remove(("MSFT", "TSLA")) == ("MSFT",)
    assert list(board.rows) == ["005930", "AAPL"]
    row = board.apply(update(last_price=71500.0, timestamp_ms=1000), now=1.0)
    assert row is board.rows["005930"] and row.last_trade_ms == 1000
    board.apply(update(kind="Q", bid_price=71400.0, timestamp_ms=2000), now=1.1)
    assert board.rows["005930"].last_trade_ms == 1000  # a quote is not a trade
    assert board.apply(update("MSFT", last_price=1.0), now=1.2) is None  # removed before
    assert "MSFT" not in board.rows and board.rate.per_second(2.0) == 2 / (RATE_BUCKETS - 1)


def test_a_refused_symbol_says_so_until_it_gets_a_price() -> None:
    board = Board("ws://h/p")
    board.add(("TSLA",))
    board.apply(SubscriptionFailed(symbols=("TSLA",), message="quota full"), now=0.0)
    assert board.rows["TSLA"].failure == "quota full" and board.note == "TSLA: quota full"
    assert "not subscribed: quota full" in render_text(board)
    board.apply(update("TSLA", last_price=250.0), now=1.0)
    assert board.rows["TSLA"].failure is None


# ---- the table ---------------------------------------------------------------------------


def render_text(board: Board, *, now: float = 0.0, colour: bool = False) -> str:
    """The screen as a 140-column terminal shows it (ANSI colours kept if ``colour``)."""
    console = Console(
        file=io.StringIO(),
        width=140,
        force_terminal=colour,
        color_system="standard" if colour else None,
    )
    console.print(board_view(board, now))
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def test_the_table_draws_both_markets_in_their_colours() -> None:
    board = Board(DEFAULT := "ws://127.0.0.1:8000" + PRICES)
    board.add(("005930", "000660", "AAPL", "MSFT"))
    board.apply(Connected(url=DEFAULT, attempt=1), now=0.0)
    rows = [
        update("005930", last_price=71500.0, change=1200.0, change_percent=1.71, name="삼성전자"),
        update("000660", last_price=120000.0, change=-500.0, change_percent=-0.41),
        update("AAPL", last_price=189.45, change=1.2, change_percent=0.64, bid_price=189.44),
        update("MSFT", last_price=370.1, change=-2.5, change_percent=-0.67),
    ]
    for item in rows:
        board.apply(item, now=0.0)
    text = render_text(board)
    assert "Symbol" in text and "Last trade" in text and "Upd/s" in text
    samsung = row_of("005930", text)
    assert "삼성전자" in samsung and "₩71,500" in samsung and "+1,200" in samsung
    assert "+1.71%" in samsung and "12:00:00 KST" in samsung
    apple = row_of("AAPL", text)
    assert "$189.45" in apple and "+0.64%" in apple and "189.44" in apple
    assert DEFAULT in text and "4 symbols" in text
    coloured = render_text(board, colour=True)
    red, green, blue = r"\x1b\[31m", r"\x1b\[32m", r"\x1b\[34m"  # padding may come first
    for colour, price in (
        (red, "₩71,500"),
        (blue, "₩120,000"),
        (green, "$189.45"),
        (red, "$370.10"),
    ):
        assert re.search(colour + r" *" + re.escape(price), coloured), price


def test_the_input_line_shows_what_is_typed_or_how_to_type() -> None:
    board = Board("ws://h/p")
    assert "type +SYMBOL to add, -SYMBOL to remove" in render_text(board)
    board.typing = "+TS"
    assert "> +TS" in render_text(board)


def test_text_from_the_gateway_is_not_read_as_markup() -> None:
    board = Board("ws://h/p")
    board.add(("TSLA",))
    board.apply(SubscriptionFailed(("TSLA",), "invalid: ['[bold]X']"), now=0.0)
    assert "['[bold]X']" in render_text(board)


# ---- input -------------------------------------------------------------------------------


def test_commands_add_and_remove_canonical_symbols() -> None:
    assert parse_command("+TSLA") == Add(("TSLA",))
    assert parse_command(" + tsla, msft TSLA ") == Add(("TSLA", "MSFT"))
    assert parse_command("-005930") == Remove(("005930",))
    assert parse_command("   ") is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("TSLA", "type +SYMBOL to add"),
        ("+", "type +SYMBOL to add"),
        ("+12345 AAPL", "not a Korean code or US ticker: 12345"),
        ("-$$$", "not a Korean code or US ticker: $$$"),
    ],
)
def test_anything_else_is_rejected_with_a_reason(line: str, reason: str) -> None:
    command = parse_command(line)
    assert isinstance(command, Rejected) and reason in command.reason


def test_line_buffer_edits_as_a_terminal_does() -> None:
    lines = LineBuffer()
    assert lines.feed("+TSX\x7fLA") == [] and lines.pending == "+TSLA"
    assert lines.feed("\n-00") == ["+TSLA"] and lines.pending == "-00"
    assert lines.feed("\x15+MSFT\r\n") == ["+MSFT", ""]
    assert lines.feed("\x1b") == [] and lines.pending == ""  # control keys are not text
    lines.feed("A" * (MAX_LINE + 10))
    assert len(lines.pending) == MAX_LINE


def test_options() -> None:
    options = parse_options(["005930", "aapl", "AAPL", "--token", "t0k"])
    assert options.symbols == ("005930", "AAPL")
    assert options.url == "ws://127.0.0.1:8000/api/v2/realtime/ws/prices"
    assert "t0k" not in repr(options)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["12345"])
    assert exited.value.code == 2


def test_the_token_can_come_from_a_file(tmp_path: Any) -> None:
    (tmp_path / "token").write_text("abc.def.ghi\n")
    assert parse_options(["--token-file", str(tmp_path / "token")]).token == "abc.def.ghi"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:8000/"], "not a ws:// or wss:// URL"),
        (["--token", "two words"], "the token must be 1 to 8192 visible ASCII characters"),
        (["--token-file", "/nonexistent/token"], "--token-file: No such file or directory"),
    ],
)
def test_usage_errors_exit_2_and_never_show_the_token(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_options(args)
    assert exited.value.code == 2
    errors = capsys.readouterr().err
    assert message in errors and "two words" not in errors


# ---- the command in process, against scripted markets -------------------------------------


@attrs.define(eq=False)
class RecordingView:
    """A view that hands what it is shown to the test, in order."""

    shown: trio.MemorySendChannel[tuple[PriceUpdate | StreamEvent, Row | None]]
    notes: list[str] = attrs.Factory(list)

    def show(self, item: PriceUpdate | StreamEvent, row: Row | None) -> None:
        self.shown.send_nowait((item, row))

    def note(self, text: str) -> None:
        self.notes.append(text)

    async def run(self, stream: PriceStream) -> None:
        await trio.sleep_forever()


@asynccontextmanager
async def scripted_gateway() -> AsyncIterator[tuple[str, ScriptedMarket, ScriptedMarket]]:
    """A gateway on 127.0.0.1 serving two scripted markets; yields its URL and them."""
    kr, us = ScriptedMarket(Market.KR), ScriptedMarket(Market.US)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio_stock.serve, providers=[kr, us])
        gateway = await nursery.start(serve, Config(port=0, linger=0.0))
        yield f"ws://127.0.0.1:{gateway.port}{PRICES}", kr, us
        nursery.cancel_scope.cancel()


async def next_shown(
    shown: trio.MemoryReceiveChannel[tuple[PriceUpdate | StreamEvent, Row | None]],
    kind: type[Any],
) -> tuple[Any, Row | None]:
    """The next item of ``kind`` the view was shown (earlier ones of other kinds skipped)."""
    async for item, row in shown:
        if isinstance(item, kind):
            return item, row
    raise AssertionError("the view was closed")


async def test_the_watch_follows_prices_and_commands_from_its_input() -> None:
    send, shown = trio.open_memory_channel[tuple[PriceUpdate | StreamEvent, Row | None]](100)
    view = RecordingView(send)
    keyboard, keys = trio.testing.memory_stream_one_way_pair()
    with trio.fail_after(30):
        async with scripted_gateway() as (url, kr, us), trio.open_nursery() as nursery:
            board = Board(url)
            nursery.start_soon(watch, Options(url, ("005930",)), view, board, keys)
            await next_shown(shown, Connected)
            await kr.wait_subscribed("005930")
            assert kr.trade("005930", 71500.0)
            first, row = await next_shown(shown, PriceUpdate)
            assert (first.symbol, first.last_price) == ("005930", 71500.0)
            assert row is board.rows["005930"] and row.last_trade_ms == first.timestamp_ms

            await keyboard.send_all(b"+aap")
            await keyboard.send_all(b"l\nhello\n")
            await us.wait_subscribed("AAPL")
            assert us.trade("AAPL", 190.12)
            apple, row = await next_shown(shown, PriceUpdate)
            assert (apple.symbol, apple.market, row) == ("AAPL", "US", board.rows["AAPL"])
            assert view.notes == [f"'hello': {HELP}"]

            us.fail_next_subscribe("TSLA")
            await keyboard.send_all(b"+TSLA\n")
            failed, _ = await next_shown(shown, SubscriptionFailed)
            assert failed.symbols == ("TSLA",) and board.rows["TSLA"].failure == failed.message

            await keyboard.send_all(b"-005930\n")
            await kr.wait_unsubscribed("005930")
            assert list(board.rows) == ["AAPL", "TSLA"]
            nursery.cancel_scope.cancel()


# ---- the command as a process -------------------------------------------------------------


def watch_command(port: int, *args: str) -> list[str]:
    url = f"ws://127.0.0.1:{port}{PRICES}"
    return [sys.executable, "-m", "trio_stock", "watch", "--url", url, *args]


async def read_until(stream: trio.abc.ReceiveStream, seen: bytearray, done: Any, what: str) -> None:
    """Read ``stream`` into ``seen`` until ``done(seen)``; fail naming ``what`` at its end."""
    while not done(seen):
        chunk = await stream.receive_some()
        assert chunk, f"the output ended before {what}:\n{seen.decode(errors='replace')}"
        seen += chunk


async def test_plain_lines_when_stdout_is_a_pipe(tmp_path: Any) -> None:
    async with gateway_process("--sim-ticks-per-second", "20", cwd=str(tmp_path)) as (_, port):
        process = await trio.lowlevel.open_process(
            watch_command(port, "005930", "AAPL"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        assert process.stdin and process.stdout and process.stderr
        out = bytearray()
        try:
            with trio.fail_after(30):

                def both_seen(text: bytes) -> bool:
                    return {"005930", "AAPL"} <= set(plain_symbols(text))

                await read_until(process.stdout, out, both_seen, "prices of both")
                for line in complete_lines(out):
                    match = PLAIN.fullmatch(line)
                    assert match, line
                    symbol, market, _, price = match.groups()[:4]
                    assert market == ("KR" if symbol == "005930" else "US")
                    assert float(price) > 0

                # Commands on stdin: once MSFT comes, AAPL does not any more.
                await process.stdin.send_all(b"-AAPL\n+msft\n")
                mark = len(out)
                await read_until(
                    process.stdout, out, lambda text: text[mark:].count(b" MSFT ") >= 10, "MSFT"
                )
                later = bytes(out[mark:]).decode()
                assert " AAPL " not in later[later.index(" MSFT ") :]

                # A reader that has had enough (``| head``) ends the watch, quietly.
                await process.stdout.aclose()
                assert await process.wait() == 0
                errors = (await read_all(process.stderr)).decode()
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
    assert "watch: connected to ws://127.0.0.1" in errors
    assert "Traceback" not in errors and "BrokenPipe" not in errors


def plain_symbols(text: bytes | bytearray) -> list[str]:
    return [m.group(1) for line in complete_lines(text) if (m := PLAIN.fullmatch(line))]


def complete_lines(text: bytes | bytearray) -> list[str]:
    return bytes(text).decode().split("\n")[:-1]


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


def _controlling_terminal() -> None:
    """In the child: the pseudo-terminal on stdin becomes its controlling terminal, so the
    terminal's Ctrl-C reaches it as SIGINT (it leads a new session: ``start_new_session``)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def read_to_end(terminal: trio.abc.ReceiveStream, seen: bytearray) -> None:
    """Read a pseudo-terminal until its other side is closed (Linux says EIO)."""
    try:
        while chunk := await terminal.receive_some():
            seen += chunk
    except trio.BrokenResourceError as exc:
        if not (isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EIO):
            raise


async def test_the_table_on_a_terminal_takes_typed_symbols_and_ends_on_ctrl_c(
    tmp_path: Any,
) -> None:
    async with gateway_process("--sim-ticks-per-second", "20", cwd=str(tmp_path)) as (_, port):
        main, side = pty.openpty()
        fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        try:
            process = await trio.lowlevel.open_process(
                watch_command(port, "005930", "AAPL"),
                stdin=side,
                stdout=side,
                stderr=side,
                cwd=tmp_path,
                env={**env, "TERM": "xterm-256color"},
                start_new_session=True,
                preexec_fn=_controlling_terminal,
            )
        finally:
            os.close(side)  # the child holds it now; its exit ends our reads
        terminal = trio.lowlevel.FdStream(main)
        seen = bytearray()

        def screen() -> str:
            return ANSI.sub("", seen.decode(errors="replace"))

        try:
            with trio.fail_after(30):

                def drawn(*patterns: str) -> Any:
                    return lambda _: all(re.search(p, screen()) for p in patterns)

                table = (
                    r"Symbol",
                    r"Last trade",
                    r"005930[^\n]*₩\d[\d,]*",
                    r"AAPL[^\n]*\$\d+\.\d\d",
                )
                await read_until(terminal, seen, drawn(*table), "the table")
                await terminal.send_all(b"+MS")
                await read_until(terminal, seen, drawn(r"> \+MS"), "the line being typed")
                await terminal.send_all(b"FT\r")  # Enter; the terminal turns CR into a newline
                await read_until(terminal, seen, drawn(r"MSFT[^\n]*\$\d+\.\d\d"), "MSFT's price")
                await terminal.send_all(b"\x03")  # Ctrl-C
                await read_to_end(terminal, seen)
                assert await process.wait() == 0
                restored = termios.tcgetattr(main)[3]
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            await terminal.aclose()
    assert restored & termios.ECHO and restored & termios.ICANON  # the terminal as it was
    assert "Traceback" not in screen() and "KeyboardInterrupt" not in screen()


async def test_a_token_opens_the_stream_a_refused_one_exits_1_and_neither_is_shown(
    tmp_path: Any,
) -> None:
    secret = "a development secret of 32 bytes+"
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, secret, "HS256")
    (tmp_path / "token").write_text(token + "\n")
    env = {"TRIO_STOCK_AUTH": "jwt", "TRIO_STOCK_JWT_SECRET": secret}
    async with gateway_process(cwd=str(tmp_path), env=env) as (_, port):
        accepted = await trio.lowlevel.open_process(
            watch_command(port, "AAPL", "--token-file", str(tmp_path / "token")),
            preexec_fn=functools.partial(os.close, 0),  # stdin closed: no commands, no harm
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert accepted.stdout and accepted.stderr
        out = bytearray()
        try:
            with trio.fail_after(30):
                await read_until(accepted.stdout, out, plain_symbols, "a price")
                accepted.send_signal(signal.SIGTERM)
                assert await accepted.wait() == 0
                errors = await read_all(accepted.stderr)
        finally:
            if accepted.returncode is None:
                accepted.kill()
            await accepted.wait()
        with trio.fail_after(30):
            refused = await trio.run_process(
                watch_command(port, "AAPL", "--token", "not-a-token"),
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert token.encode() not in out + errors
    assert refused.returncode == 1, refused.stderr
    assert b"not-a-token" not in refused.stdout + refused.stderr
    assert refused.stderr.startswith(b"trio_stock watch: ") and b"Traceback" not in refused.stderr
