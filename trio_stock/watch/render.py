"""How the watch command shows prices: a rich table for a terminal, plain lines for a pipe.

Pure functions of a :class:`~.board.Board` (or one update) and the time: no I/O, so the
formats and colours are tested without a terminal.

Conventions the table follows, the same as the dashboard's:

- a Korean code's prices in won, with thousands separators and no decimals (₩71,500); a
  US ticker's in dollars and cents ($189.45);
- the change against the previous close coloured by the market's own convention: red up
  and blue down in Korea, green up and red down in the US; unchanged is not coloured;
- the last trade's time in the market's own zone (KST, ET).

The plain format, one line per update, is a stable interface for scripts (README, "Watching
prices in the terminal")::

    TIME SYMBOL MARKET KIND PRICE CHANGE CHANGE_PERCENT BID ASK

separated by single spaces; TIME is the provider's time in UTC (ISO 8601, milliseconds,
``Z``), numbers are plain (no separators, no currency, ``-`` for a minus), and a field the
update does not carry is ``-``.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..access import redact
from ..client import (
    Connected,
    Disconnected,
    Gap,
    PriceUpdate,
    StreamEvent,
    SubscriptionFailed,
)
from ..market_hours import SCHEDULES
from ..model import Market
from .board import Board, Link, Row
from .commands import HELP

MISSING = "—"  # a value the gateway has not sent yet
PLAIN_MISSING = "-"

# Standard ANSI names rather than exact colours: a terminal's theme picks shades that are
# legible on its own background.
UP_DOWN_STYLES = {
    Market.KR: ("red", "blue"),  # KRX convention: red rises, blue falls
    Market.US: ("green", "red"),
}
LINK_STYLES = {Link.CONNECTING: "yellow", Link.CONNECTED: "green", Link.RECONNECTING: "red"}

COLUMNS = ("Symbol", "Name", "Price", "Change", "Change %", "Bid", "Ask", "Last trade", "Upd/s")


def market_of(text: str) -> Market:
    """The market an update's ``market`` field names (``KR`` or ``US``)."""
    return Market(text)


def format_amount(market: Market, value: float | None) -> str:
    """A price without its currency: ``71,500`` (won) or ``189.45`` (dollars and cents)."""
    if value is None:
        return MISSING
    return f"{value:,.0f}" if market is Market.KR else f"{value:,.2f}"


def format_price(market: Market, value: float | None) -> str:
    """A price with its currency: ``₩71,500`` or ``$189.45``."""
    if value is None:
        return MISSING
    return ("₩" if market is Market.KR else "$") + format_amount(market, value)


def format_change(market: Market, value: float | None) -> str:
    """A change with its sign, in the market's units: ``+1,200``, ``-0.35``; zero unsigned."""
    if value is None:
        return MISSING
    if value == 0:
        return format_amount(market, 0.0)
    return ("+" if value > 0 else "-") + format_amount(market, abs(value))


def format_percent(value: float | None) -> str:
    """A change in percent with its sign: ``+0.64%``; zero unsigned."""
    if value is None:
        return MISSING
    if value == 0:
        return "0.00%"
    return f"{'+' if value > 0 else '-'}{abs(value):.2f}%"


def change_style(market: Market, change: float | None) -> str:
    """The colour of a change by the market's convention; ``""`` when flat or unknown."""
    if not change:
        return ""
    up, down = UP_DOWN_STYLES[market]
    return up if change > 0 else down


def format_time(market: Market, epoch_ms: int | None) -> str:
    """A time of day in the market's own zone: ``14:30:52 KST``, ``09:31:02 EST``."""
    if epoch_ms is None:
        return MISSING
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, SCHEDULES[market].zone)
    return moment.strftime("%H:%M:%S %Z")


def shown_url(url: str) -> str:
    """The URL fit for the screen: a token in its query (``access_token``) is masked."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query=redact(parts.query)))


def board_view(board: Board, now: float) -> RenderableType:
    """The whole screen: the table, the connection line, a note and the input line."""
    parts: list[RenderableType] = [price_table(board, now), connection_line(board, now)]
    if board.note:
        parts.append(Text(board.note, style="yellow"))
    parts.append(input_line(board))
    return Group(*parts)


def price_table(board: Board, now: float) -> Table:
    """One row per watched symbol, in the order added."""
    table = Table(title="trio_stock watch", title_justify="left")
    for header in COLUMNS:
        left = header in ("Symbol", "Name")
        table.add_column(header, justify="left" if left else "right", no_wrap=True)
    # Prices that may be old are dimmed, so a lost connection cannot pass unnoticed.
    stale = "dim" if board.link is not Link.CONNECTED else None
    for row in board.rows.values():
        table.add_row(*_cells(row, now), style=stale)
    return table


def _cells(row: Row, now: float) -> list[Text]:
    update = row.latest
    market = row.market
    rate = Text(f"{row.rate.per_second(now):.1f}")
    if row.failure is not None:
        failed = Text(f"not subscribed: {row.failure}", style="red")
        return [Text(row.symbol), failed, *(Text(MISSING) for _ in range(6)), rate]
    if update is None:
        waiting = Text("waiting…", style="dim")
        return [Text(row.symbol), waiting, *(Text(MISSING) for _ in range(6)), rate]
    style = change_style(market, update.change)
    return [
        Text(row.symbol, style="bold"),
        Text(update.name or ""),
        Text(format_price(market, update.last_price), style=style),
        Text(format_change(market, update.change), style=style),
        Text(format_percent(update.change_percent), style=style),
        Text(format_amount(market, update.bid_price)),
        Text(format_amount(market, update.ask_price)),
        Text(format_time(market, row.last_trade_ms)),
        rate,
    ]


def connection_line(board: Board, now: float) -> Text:
    """The connection's state, the URL and the stream's counters."""
    line = Text()
    marker = "●" if board.link is Link.CONNECTED else "○"
    line.append(f"{marker} {board.link.value}", style=LINK_STYLES[board.link])
    if board.link is Link.RECONNECTING:
        wait = max(0.0, (board.retry_at or now) - now)
        line.append(f" in {wait:.1f} s (attempt {board.failed_tries + 1}")
        line.append(f": {board.close_reason})" if board.close_reason else ")")
    line.append(f"  {shown_url(board.url)}", style="dim")
    line.append(f"  {len(board.rows)} symbols  {board.rate.per_second(now):.1f} updates/s")
    stats = board.statistics
    if stats is not None:
        line.append(f"  reconnects {stats.reconnects}  gaps {stats.gaps}  skipped {stats.dropped}")
    return line


def input_line(board: Board) -> Text:
    """What the user is typing, or how to type a command."""
    line = Text("> ", style="bold")
    if board.typing:
        line.append(board.typing)
    else:
        line.append(f"{HELP}; Ctrl-C quits", style="dim")
    return line


def plain_line(update: PriceUpdate) -> str:
    """One update as a line of the plain format (module docstring)."""
    moment = dt.datetime.fromtimestamp(update.timestamp_ms // 1000, dt.UTC)
    time = f"{moment:%Y-%m-%dT%H:%M:%S}.{update.timestamp_ms % 1000:03d}Z"
    numbers = (
        update.last_price,
        update.change,
        update.change_percent,
        update.bid_price,
        update.ask_price,
    )
    fields = [time, update.symbol, update.market, update.kind, *map(plain_number, numbers)]
    return " ".join(fields)


def plain_number(value: float | None) -> str:
    """A number as scripts read it: ``71500``, ``189.45``, ``-0.14``; ``-`` when absent."""
    if value is None:
        return PLAIN_MISSING
    if value == 0:
        return "0"  # and never "-0"
    return f"{value:.12g}"  # shortest form: no ".0" on won, no float noise on cents


def plain_event(item: StreamEvent) -> str:
    """A stream event as a line for stderr (the plain format's stdout is updates only)."""
    if isinstance(item, Connected):
        return f"watch: connected to {shown_url(item.url)} (attempt {item.attempt})"
    if isinstance(item, Disconnected):
        code = f" ({item.code})" if item.code is not None else ""
        return f"watch: disconnected{code}: {item.reason}; retrying in {item.retry_in:.1f} s"
    assert isinstance(item, SubscriptionFailed)
    return f"watch: could not subscribe {', '.join(item.symbols)}: {item.message}"


def plain_gap(symbol: str, gap: Gap) -> str:
    """A note for stderr that updates of ``symbol`` were missed before this one."""
    missed = "an unknown number" if gap.missed is None else str(gap.missed)
    return f"watch: {symbol}: {missed} updates missed ({gap.reason})"
