"""The dashboard at ``/`` in a real headless Chromium (Debian's), driven by Playwright.

Each test starts its own gateway subprocess on a free port (simulated market, fast ticks) and
opens the page in a fresh browser context (fresh localStorage). These are real-time tests of
a real browser against a real server process, so the MockClock rule cannot apply: every wait
is on a page condition (Playwright's ``expect`` / ``wait_for_function``) bounded by a
timeout, never a fixed sleep. If Chromium or Playwright is missing the tests fail, naming
``.ci/install-browser.sh``; they never skip.

The simulated market keeps exchange hours, so a test that needs prices to move runs it
``--sim-always-open``; the market-hours test runs it on the real clock, whatever the hour.
Where a test needs the server to say something it cannot be made to say on demand (a
provider down while data flows, a market closed at noon), Playwright's routing rewrites that
one field of the server's real answer; everything else is the real gateway.

The README's screenshot comes from ``test_phone_layout_colours_and_the_readme_screenshot``:
``make test`` writes it to ``build/dashboard.png`` (ignored by git); ``make screenshot`` runs
that test alone with ``DASHBOARD_SCREENSHOT=docs/dashboard.png`` and
``DASHBOARD_CHART_MINUTES`` (it waits until every chart holds that many one-minute bars).
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from trio_stock.config import KisAccount, Secret

from .browser import CHROMIUM, CHROMIUM_ARGS, ROOT, Gateway, TrioThread, missing_browser
from .fakes.fake_kis import FakeKis, trade_record
from .test_kis_pool import KEYS, SECRETS, accounts_json

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Route

OPEN = ("--sim-always-open", "true")  # prices move at any hour
HOURS = ("--sim-always-open", "false")  # the exchanges' hours on the real clock
FAST = ("--sim-ticks-per-second", "20", *OPEN)
DEFAULTS = ["005930", "000660", "AAPL", "MSFT"]
SHOWCASE = ["005930", "000660", "035420", "051910", "AAPL", "MSFT", "NVDA", "TSLA"]
NAMES = {"005930": "삼성전자", "000660": "SK하이닉스", "AAPL": "Apple", "MSFT": "Microsoft"}
WON = re.compile(r"^₩\d{1,3}(,\d{3})*$")
DOLLARS = re.compile(r"^\$\d{1,3}(,\d{3})*\.\d{2}$")
SHARES = re.compile(r"^\d{1,3}(,\d{3})*$")
CLOCK = re.compile(r"^\d\d:\d\d:\d\d (KST|ET)$")
AS_OF = r"as of \d\d:\d\d:\d\d (KST|ET)"
HEALTH = "**/api/v2/realtime/health"
PHASE_TEXT = {
    "pre_open": "pre-open",
    "open": "open",
    "closing": "closing auction",
    "closed": "closed",
}
ZONES = {"KR": (ZoneInfo("Asia/Seoul"), "KST"), "US": (ZoneInfo("America/New_York"), "ET")}
MUTED = "rgb(157, 167, 179)"  # --muted: the colour of stale prices
# Each market's up/down colours (app.css): Korean codes red up / blue down (seed 000), US
# tickers green up / red down (seed 003).
CONVENTION = {
    ("KR", "up"): (255, 123, 114),
    ("KR", "down"): (121, 192, 255),
    ("US", "up"): (86, 211, 100),
    ("US", "down"): (255, 123, 114),
}
SCREENSHOT = Path(os.environ.get("DASHBOARD_SCREENSHOT") or ROOT / "build" / "dashboard.png")
CHART_MINUTES = int(os.environ.get("DASHBOARD_CHART_MINUTES") or 0)
TIMEOUT_MS = 10_000  # generous for a loaded CI machine; conditions normally hold in < 1 s


def pattern(symbol: str) -> re.Pattern[str]:
    """How a price of ``symbol``'s market reads."""
    return WON if symbol.isdigit() else DOLLARS


def amount(text: str) -> float:
    """The number in a displayed price ("₩71,500", "$189.24")."""
    return float(re.sub(r"[^\d.]", "", text))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = missing_browser()
    if reason is not None:
        pytest.fail(f"browser tests cannot run: {reason}", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_chromium_and_playwright_are_installed() -> None:
    """A machine without the browser fails here (and in every fixture below), never skips."""
    reason = missing_browser()
    assert reason is None, f"browser tests cannot run: {reason}"


class Console:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def open_dashboard(page: Page, gateway: Gateway, watchlist: list[str] | None = None) -> None:
    """Open ``/``; with ``watchlist``, the first load finds it in localStorage (not on reloads)."""
    if watchlist is not None:
        stored = json.dumps(json.dumps(watchlist))  # a JS string literal holding the JSON
        page.add_init_script(
            "if (!sessionStorage.getItem('seeded')) {"
            " sessionStorage.setItem('seeded', '1');"
            f" localStorage.setItem('trio_stock.watchlist', {stored}); }}"
        )
    page.goto(gateway.url + "/")


def expect_connected(page: Page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#connection-text")).to_have_text("connected")


def card(page: Page, symbol: str) -> Locator:
    return page.locator(f'.card[data-symbol="{symbol}"]')


def rewrite_health(page: Page, change: Any) -> None:
    """Serve the gateway's real /health with ``change(body)`` applied to it."""

    def handle(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        change(body)
        route.fulfill(response=response, json=body)

    page.route(HEALTH, handle)


def order(page: Page) -> list[str]:
    symbols = page.eval_on_selector_all(".card", "(cards) => cards.map((c) => c.dataset.symbol)")
    return [str(symbol) for symbol in symbols]


def test_first_visit_loads_clean_connects_and_shows_both_markets(page: Page) -> None:
    from playwright.sync_api import expect

    console = Console(page)
    with Gateway(*FAST) as gateway:
        open_dashboard(page, gateway)
        expect_connected(page)
        expect(page.locator(".card")).to_have_count(len(DEFAULTS))
        for symbol in DEFAULTS:
            price = pattern(symbol)
            c = card(page, symbol)
            expect(c.locator(".price")).to_have_text(price)
            expect(c.locator(".bid")).to_have_text(price)
            expect(c.locator(".time")).to_have_text(CLOCK)
            expect(c.locator(".stale-note")).to_be_hidden()
            # Names beside codes, the day's volume and range, the sizes beside bid and ask.
            expect(c.locator(".name")).to_have_text(NAMES[symbol])
            for field in ("open", "high", "low", "prev"):
                expect(c.locator(f".{field}")).to_have_text(price)
            expect(c.locator("dd.volume")).to_have_text(SHARES)
            expect(c.locator(".bid-size")).to_have_text(re.compile(r"^× \d{1,3}(,\d{3})*$"))
            expect(c.locator(".ask-size")).to_have_text(re.compile(r"^× \d{1,3}(,\d{3})*$"))
            # One render shows one state: low <= price <= high, and the range marker agrees.
            low, last, high, mark = c.evaluate(
                """(el) => [
                    ...['.low', '.price', '.high'].map((s) => el.querySelector(s).textContent),
                    parseFloat(el.querySelector('.range-mark').style.left)]"""
            )
            assert amount(low) <= amount(last) <= amount(high), (low, last, high)
            assert 0 <= mark <= 100
        # The quota and the provider health come from the server's REST endpoints.
        expect(page.locator("#quota-kr")).to_have_text("2 / 40 Korean symbols in use")
        expect(page.locator("#quota-us")).to_have_text("2 / 500 US symbols in use")
        expect(page.locator("#health li")).to_have_text(
            ["KR · simulated · connected", "US · simulated · connected"]
        )
        expect(page.locator("#markets li")).to_have_count(2)
        assert json.loads(page.evaluate("localStorage.getItem('trio_stock.watchlist')")) == DEFAULTS
    assert console.errors == []


def test_the_chart_is_drawn_on_first_load_from_history(page: Page) -> None:
    from playwright.sync_api import expect

    console = Console(page)
    with Gateway(*FAST) as gateway:
        # The gateway's own history: the chart's first bar is the server's first bar.
        open_dashboard(page, gateway, watchlist=["AAPL", "005930"])
        expect_connected(page)
        for symbol in ("AAPL", "005930"):
            chart = card(page, symbol).locator(".chart")
            expect(chart).to_have_attribute("data-source", "history")
            expect(chart).to_have_attribute("data-bars", re.compile(r"^[1-9]\d*$"))
            server = page.request.get(f"{gateway.url}/api/v2/realtime/history/{symbol}").json()
            assert server["symbol"] == symbol and server["interval"] == 60, server
            first = page.evaluate(f"cards.get('{symbol}').bars[0].time")
            assert first == server["bars"][0]["time"]
            expect(chart.locator(".line")).to_have_attribute("points", re.compile(r"\d,\d"))
            expect(chart).to_have_attribute("aria-label", re.compile(r"^\d+-minute chart from "))

        # A full hour at once: served the gateway's answer with 60 bars in it, the page draws
        # all 60 on first load, before a single minute of live data.
        now = datetime.now(UTC).replace(second=0, microsecond=0)

        def hour_of_bars(route: Route) -> None:
            response = route.fetch()
            body = response.json()
            close = body["bars"][-1]["close"]
            body["bars"] = [
                {
                    "time": int((now - timedelta(minutes=59 - i)).timestamp() * 1000),
                    "open": close,
                    "high": close * 1.001,
                    "low": close * 0.999,
                    "close": round(close * (1 + (i - 30) / 3000), 2),
                    "volume": 1000 + i,
                }
                for i in range(60)
            ]
            route.fulfill(response=response, json=body)

        page.route("**/api/v2/realtime/history/**", hour_of_bars)
        page.reload()
        chart = card(page, "AAPL").locator(".chart")
        expect(chart).to_have_attribute("data-source", "history")
        expect(chart).to_have_attribute("data-bars", "60")
        points = chart.locator(".line").get_attribute("points") or ""
        assert len(points.split()) == 60 and points.startswith("0.00,"), points
        expect(chart).to_have_attribute("aria-label", re.compile(r"^60-minute chart from "))
        expect(card(page, "AAPL").locator(".axis-start")).to_have_text(re.compile(r"\d\d:\d\d ET$"))
    assert console.errors == []


def test_add_by_keyboard_shows_a_changing_price_and_remove_clears_it(page: Page) -> None:
    from playwright.sync_api import expect

    with Gateway(*FAST, "--linger", "0") as gateway:
        open_dashboard(page, gateway, watchlist=[])
        expect_connected(page)
        expect(page.locator("#empty")).to_be_visible()
        page.keyboard.press("Tab")  # the input is the first control on the page
        expect(page.locator("#symbol-input")).to_be_focused()
        page.keyboard.type("005930")
        page.keyboard.press("Enter")

        price = card(page, "005930").locator(".price")
        expect(price).to_have_text(WON, timeout=5_000)
        first = price.inner_text()
        expect(price).not_to_have_text(first, timeout=5_000)
        expect(page.locator("#quota-kr")).to_have_text("1 / 40 Korean symbols in use")

        page.reload()  # the watchlist survives a reload
        expect(price).to_have_text(WON)

        page.keyboard.press("Tab")  # input
        page.keyboard.press("Tab")  # Add
        page.keyboard.press("Tab")  # the sort order
        expect(page.locator("#sort-select")).to_be_focused()
        page.keyboard.press("Tab")  # the card's remove button
        remove = card(page, "005930").locator(".remove")
        expect(remove).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator(".card")).to_have_count(0)
        expect(page.locator("#empty")).to_be_visible()
        # The server let go too (linger 0): the page sent the unsubscribe.
        expect(page.locator("#quota-kr")).to_have_text("0 / 40 Korean symbols in use")
        assert page.evaluate("localStorage.getItem('trio_stock.watchlist')") == "[]"


def test_sorting_by_keyboard_follows_the_prices_and_is_kept(page: Page) -> None:
    from playwright.sync_api import expect

    watchlist = ["MSFT", "005930", "AAPL", "000660"]
    console = Console(page)
    # One tick a second per symbol: the order can be checked between re-sorts.
    with Gateway("--sim-ticks-per-second", "1", *OPEN) as gateway:
        open_dashboard(page, gateway, watchlist=watchlist)
        expect_connected(page)
        for symbol in watchlist:
            expect(card(page, symbol).locator("dd.volume")).to_have_text(SHARES)
        assert order(page) == watchlist  # the order added
        select = page.locator("#sort-select")
        select.focus()
        page.keyboard.press("ArrowDown")  # symbol
        expect(select).to_have_value("symbol")
        assert order(page) == ["000660", "005930", "AAPL", "MSFT"]
        page.keyboard.press("ArrowDown")  # name
        page.keyboard.press("ArrowDown")  # change %
        expect(select).to_have_value("change")
        expect(select).to_be_focused()  # moving cards never takes the keyboard's place

        # The cards follow the change %, highest first, as the prices move (re-sorted once a
        # second; a tick may land between two re-sorts, so wait for a moment they agree).
        page.wait_for_function(
            """() => {
                const shown = [...document.querySelectorAll('.card .change')].map((el) => {
                    const m = el.textContent.match(/\\(([+−]?)([\\d.]+)%\\)/);
                    return m ? (m[1] === '−' ? -1 : 1) * parseFloat(m[2]) : null;
                });
                return shown.every((v) => v !== null)
                    && shown.every((v, i) => i === 0 || shown[i - 1] >= v);
            }""",
            polling=100,
        )
        page.keyboard.press("ArrowDown")  # volume
        expect(select).to_have_value("volume")
        page.wait_for_function(
            """() => {
                const shown = [...document.querySelectorAll('.card dd.volume')]
                    .map((el) => Number(el.textContent.replaceAll(',', '')));
                return shown.every((v, i) => i === 0 || shown[i - 1] >= v);
            }""",
            polling=100,
        )

        # Kept like the watchlist; the watchlist itself keeps the order added.
        assert page.evaluate("localStorage.getItem('trio_stock.sort')") == "volume"
        assert (
            json.loads(page.evaluate("localStorage.getItem('trio_stock.watchlist')")) == watchlist
        )
        page.reload()
        expect(page.locator("#sort-select")).to_have_value("volume")
        select.select_option("added")
        expect(page.locator(".card")).to_have_count(4)
        assert order(page) == watchlist
    assert console.errors == []


def test_an_invalid_code_shows_the_warning_and_adds_nothing(page: Page) -> None:
    from playwright.sync_api import expect

    with Gateway(*FAST) as gateway:
        open_dashboard(page, gateway, watchlist=["AAPL"])
        expect_connected(page)
        page.fill("#symbol-input", "12345")
        page.press("#symbol-input", "Enter")
        warning = page.locator('.message[data-kind="warning"]')
        expect(warning).to_contain_text("“12345” is not a 6-digit Korean code or a US ticker.")
        expect(warning).to_contain_text("유효하지 않은 종목 코드: ['12345']")  # seed 000's warning
        expect(page.locator("#symbol-input")).to_have_attribute("aria-invalid", "true")
        expect(page.locator(".card")).to_have_count(1)


def test_the_quota_message_appears_when_the_korean_limit_is_hit(page: Page) -> None:
    from playwright.sync_api import expect

    with Gateway(*FAST, "--kis-max-subscriptions", "3") as gateway:
        open_dashboard(page, gateway)
        expect_connected(page)
        quota = page.locator("#quota-kr")
        expect(quota).to_have_text("2 / 3 Korean symbols in use")
        page.fill("#symbol-input", "035420")
        page.press("#symbol-input", "Enter")
        expect(card(page, "035420").locator(".price")).to_have_text(WON)
        expect(quota).to_have_text("3 / 3 Korean symbols in use")

        page.fill("#symbol-input", "051910")
        page.press("#symbol-input", "Enter")
        error = page.locator('.message[data-kind="error"]')
        expect(error).to_contain_text("the Korean subscription quota is full (3 symbols)")
        expect(error).to_contain_text("3개 종목 구독 실패")  # seed 000's quota error
        expect(card(page, "051910").locator(".change")).to_have_text(
            "Not subscribed: Korean quota full"
        )
        expect(card(page, "051910").locator(".price")).to_have_text("—")


def test_a_server_restart_shows_stale_prices_then_reconnects_and_resubscribes(
    page: Page,
) -> None:
    from playwright.sync_api import expect

    first = Gateway(*FAST)
    try:
        open_dashboard(page, first)
        expect_connected(page)
        for symbol in DEFAULTS:
            expect(card(page, symbol).locator(".price")).to_have_text(pattern(symbol))
        for symbol in DEFAULTS:
            expect(card(page, symbol)).not_to_have_attribute("data-stale", re.compile(".*"))
        port = first.port
    finally:
        first.stop()
    connection = page.locator("#connection-text")
    # Stale at once: every card dims and says how old its prices are.
    for symbol in DEFAULTS:
        c = card(page, symbol)
        expect(c).to_have_attribute("data-stale", "connection lost")
        note = c.locator(".stale-note")
        expect(note).to_be_visible()
        expect(note).to_have_text(re.compile(rf"^{AS_OF} · connection lost$"))
        expect(c.locator(".price")).to_have_css("color", MUTED)
        expect(c.locator(".price")).to_have_text(pattern(symbol))  # the last price stays
    # The "as of" time is the last update's, and it stands still while nothing arrives.
    notes = page.locator(".stale-note").all_inner_texts()
    # Backoff: the first retry fails while the server is down, so the attempt count grows.
    expect(connection).to_have_text(re.compile(r"^reconnecting \(attempt 2\)"))
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    assert page.locator(".stale-note").all_inner_texts() == notes

    with Gateway(*FAST, port=port) as second:
        assert second.port == port
        expect_connected(page)
        # The new server knows nothing of the page, so prices flow again on every card only
        # if the page subscribed again by itself; then the server holds exactly the watchlist.
        for symbol in DEFAULTS:
            price = card(page, symbol).locator(".price")
            expect(price).not_to_have_text(price.inner_text())
            # Data flows again: the stale state clears.
            expect(card(page, symbol)).not_to_have_attribute("data-stale", re.compile(".*"))
            expect(card(page, symbol).locator(".stale-note")).to_be_hidden()
            expect(price).not_to_have_css("color", MUTED)
        status = page.request.get(second.url + "/api/v2/realtime/status").json()
        assert sorted(status["connection_status"]["subscribed_symbols"]) == sorted(DEFAULTS)


def test_a_card_is_stale_while_its_market_provider_is_down(page: Page) -> None:
    from playwright.sync_api import expect

    console = Console(page)
    with Gateway(*FAST) as gateway:
        open_dashboard(page, gateway, watchlist=["005930", "AAPL"])
        expect_connected(page)
        expect(card(page, "005930").locator(".price")).to_have_text(WON)
        expect(card(page, "AAPL").locator(".price")).to_have_text(DOLLARS)

        def kr_down(body: dict[str, Any]) -> None:
            for provider in body["providers"]:
                if provider["market"] == "KR":
                    provider["state"] = "backing_off"

        rewrite_health(page, kr_down)  # the gateway says its Korean provider is reconnecting
        kr = card(page, "005930")
        expect(kr).to_have_attribute("data-stale", "KR provider reconnecting")
        expect(kr.locator(".stale-note")).to_have_text(
            re.compile(rf"^{AS_OF} · KR provider reconnecting$")
        )
        expect(kr.locator(".price")).to_have_css("color", MUTED)
        # The other market's card stays live.
        expect(card(page, "AAPL")).not_to_have_attribute("data-stale", re.compile(".*"))
        expect(card(page, "AAPL").locator(".stale-note")).to_be_hidden()

        page.unroute(HEALTH)  # the provider is back: the next health clears it
        expect(kr).not_to_have_attribute("data-stale", re.compile(".*"))
        expect(kr.locator(".stale-note")).to_be_hidden()
    assert console.errors == []


def test_health_shows_a_live_provider_that_cannot_reach_its_upstream(page: Page) -> None:
    from playwright.sync_api import expect

    with socket.socket() as probe:  # a port nothing listens on: the upstream is unreachable
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    upstream = f"127.0.0.1:{closed}"
    with Gateway(
        *OPEN,
        "--kis-rest-url",
        f"http://{upstream}",
        "--kis-ws-url",
        f"ws://{upstream}",
        env={"KIS_APP_KEY": "test-key", "KIS_APP_SECRET": "test-secret"},
    ) as gateway:
        open_dashboard(page, gateway, watchlist=["005930", "AAPL"])
        expect_connected(page)
        kr = page.locator('#health li[data-state="backing_off"]')
        expect(kr).to_contain_text("KR · live KIS · reconnecting (")
        expect(kr).to_contain_text("approval request failed")
        expect(page.locator('#health li[data-state="connected"]')).to_have_text(
            "US · simulated · connected"
        )
        expect(card(page, "AAPL").locator(".price")).to_have_text(DOLLARS)
        # The Korean card never had a price, and says why it has none.
        expect(card(page, "005930")).to_have_attribute("data-stale", "KR provider reconnecting")
        expect(card(page, "005930").locator(".stale-note")).to_have_text(
            "no price yet · KR provider reconnecting"
        )
        expect(card(page, "AAPL")).not_to_have_attribute("data-stale", re.compile(".*"))


def test_a_kis_pool_shows_each_session_and_its_total_and_never_a_key(page: Page) -> None:
    """KIS_ACCOUNTS of three keys against the fake KIS, which refuses the third at approval:
    a row per session (label, state, used / quota, retries, connects, failed, why) and the
    pool's total, in the page as on a phone, and no key or secret anywhere in it."""
    from playwright.sync_api import expect

    console = Console(page)
    fake = FakeKis(accounts={KEYS[n]: SECRETS[n] for n in range(2)})
    labels = [KisAccount(Secret(KEYS[n]), Secret(SECRETS[n])).label(n + 1) for n in range(3)]
    with TrioThread(fake.serve) as kis:
        env = {
            "KIS_ACCOUNTS": accounts_json(3),
            "KIS_WS_URL": fake.ws_url,
            "KIS_REST_URL": fake.rest_url,
            "KIS_REGISTER_INTERVAL": "0",
        }
        with Gateway(*OPEN, env=env) as gateway:
            open_dashboard(page, gateway, watchlist=[])
            expect_connected(page)
            pool = page.locator('#pools table.pool[data-provider="kis"]')
            rows = pool.locator("tbody tr.session")
            expect(pool.locator("caption")).to_have_text("KR · KIS pool")
            expect(rows.locator("th")).to_have_text(labels)
            # The pool settles: two sessions up, the refused key failed with its reason.
            states = ["connected", "connected", "auth_failed"]
            for row, state in zip(rows.all(), states, strict=True):
                expect(row).to_have_attribute("data-state", state)
            expect(rows.locator(".state")).to_have_text(["connected", "connected", "auth failed"])
            expect(rows.nth(2)).to_have_attribute("data-failed", "")
            why = pool.locator("tbody tr.why")  # the line beneath kis-3 only
            expect(why).to_have_count(1)
            expect(rows.nth(2).locator("xpath=following-sibling::tr[1]")).to_have_class("why")
            expect(why.locator(".flag")).to_have_text("failed")
            expect(why.locator(".reason")).to_have_text("approval refused (HTTP 403)")
            expect(rows.locator(".used")).to_have_text(["0 / 40"] * 3)
            expect(rows.locator(".retries")).to_have_text(["0"] * 3)
            expect(rows.locator(".connects")).to_have_text(["1", "1", "0"])
            total = pool.locator("tfoot tr.total")
            expect(total.locator("th")).to_have_text("Total")
            expect(total.locator(".state")).to_have_text("2 of 3 usable")
            expect(total.locator(".used")).to_have_text("0 / 80")  # the usable sessions' quota
            expect(page.locator("#quota-kr")).to_have_text("0 / 80 Korean symbols in use")

            # Two codes from the page: one on each session up, the total and the quota follow.
            for code in ("005930", "000660"):
                page.fill("#symbol-input", code)
                page.press("#symbol-input", "Enter")
            expect(rows.locator(".used")).to_have_text(["1 / 40", "1 / 40", "0 / 40"])
            expect(total.locator(".used")).to_have_text("2 / 80")
            expect(total.locator(".connects")).to_have_text("2")
            expect(page.locator("#quota-kr")).to_have_text("2 / 80 Korean symbols in use")
            by_key = kis.call(fake.registered_by_key)
            assert by_key == {KEYS[0]: {"005930"}, KEYS[1]: {"000660"}}, by_key
            # Prices flow through the pool's sessions to the cards.
            assert kis.run(fake.send_trades, [trade_record("000660", 201_500)]) == 1
            expect(card(page, "000660").locator(".price")).to_have_text("₩201,500")

            # On a phone the table fits the panel, and the page does not scroll sideways.
            page.set_viewport_size({"width": 375, "height": 740})
            expect(pool).to_be_visible()
            widths = page.evaluate(
                """() => {
                    const panel = document.querySelector('.panel').getBoundingClientRect();
                    const table = document.querySelector('#pools table').getBoundingClientRect();
                    return [document.documentElement.scrollWidth - window.innerWidth,
                            table.right - panel.right];
                }"""
            )
            assert widths[0] <= 0 and widths[1] <= 0, widths

            # No key, secret or approval key anywhere in the page (text, attributes, storage).
            page_text = page.content() + page.evaluate("JSON.stringify({...localStorage})")
            approvals = kis.call(lambda: list(fake.approvals))
            assert len(approvals) == 2
            for secret in (*KEYS, *SECRETS, *approvals):
                assert secret not in page_text
                assert secret not in gateway.output
    assert console.errors == []


def test_market_badges_follow_health_and_a_closed_market_shows_its_last_close(
    page: Page,
) -> None:
    from playwright.sync_api import expect

    console = Console(page)
    # Exchange hours on the real clock: whatever the hour, the badges say what health says.
    with Gateway("--sim-ticks-per-second", "20", *HOURS) as gateway:
        open_dashboard(page, gateway, watchlist=["005930", "AAPL"])
        expect_connected(page)
        health = page.request.get(gateway.url + "/api/v2/realtime/health").json()
        for market, symbol in (("KR", "005930"), ("US", "AAPL")):
            phase = health["markets"][market]["phase"]
            badge = page.locator(f'#markets li[data-market="{market}"]')
            expect(badge).to_have_attribute("data-phase", phase)
            expect(badge).to_contain_text(f"{market} {PHASE_TEXT[phase]} · until ")
            tag = market if phase == "open" else f"{market} · {PHASE_TEXT[phase]}"
            expect(card(page, symbol).locator(".market")).to_have_text(tag)
            # Open or not, the card shows the day's last trade (when closed: the last close).
            expect(card(page, symbol).locator(".price")).to_have_text(pattern(symbol))
            expect(card(page, symbol).locator(".name")).to_have_text(NAMES[symbol])

        # A closed Korean market beside an open US one, as at 02:00 in Seoul.
        kr_opens = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=5)

        def kr_closed(body: dict[str, Any]) -> None:
            body["markets"]["KR"] = {"phase": "closed", "next_change": kr_opens.isoformat()}
            body["markets"]["US"] = {"phase": "open", "next_change": kr_opens.isoformat()}

        rewrite_health(page, kr_closed)
        zone, label = ZONES["KR"]
        local = kr_opens.astimezone(zone)
        day = "" if local.date() == datetime.now(zone).date() else local.strftime("%a ")
        badge = page.locator('#markets li[data-market="KR"]')
        expect(badge).to_have_text(f"KR closed · until {day}{local:%H:%M} {label}")
        expect(badge).to_have_attribute("data-phase", "closed")
        expect(page.locator('#markets li[data-market="US"]')).to_have_attribute(
            "data-phase", "open"
        )
        expect(card(page, "005930").locator(".market")).to_have_text("KR · closed")
        expect(card(page, "AAPL").locator(".market")).to_have_text("US")
        # Closed is not stale: the provider is connected, the last close is the price.
        expect(card(page, "005930")).not_to_have_attribute("data-stale", re.compile(".*"))
    assert console.errors == []


def test_phone_layout_colours_and_the_readme_screenshot(page: Page) -> None:
    from playwright.sync_api import expect

    # make screenshot (DASHBOARD_CHART_MINUTES > 0) runs the market at its normal pace and
    # waits until every chart has that many minutes of bars; make test takes a quick one.
    pace = () if CHART_MINUTES else ("--sim-ticks-per-second", "20")
    with Gateway(*pace, *OPEN) as gateway:
        page.set_viewport_size({"width": 1280, "height": 640})
        open_dashboard(page, gateway, watchlist=SHOWCASE)
        expect_connected(page)
        page.wait_for_function(
            f"""[...document.querySelectorAll('.card .chart')]
                .every((c) => Number(c.dataset.bars) >= {max(CHART_MINUTES, 1)})
             && [...document.querySelectorAll('.card .name')].every((n) => n.textContent)""",
            polling=500,
            timeout=(CHART_MINUTES + 1) * 60_000 + TIMEOUT_MS,
        )
        expect(page.locator("#quota-kr")).to_have_text("4 / 40 Korean symbols in use")
        expect(page.locator("#health li")).to_have_count(2)
        expect(page.locator("#markets li")).to_have_count(2)

        # Up/down colours follow each market's convention: red up / blue down for Korean
        # codes, green up / red down for US tickers (the CSS custom properties) -- the same
        # for the change, the price and the chart's line.
        page.wait_for_function(
            "[...document.querySelectorAll('.card')].some((c) => c.dataset.direction !== 'flat')"
        )
        colours = page.evaluate(
            """() => [...document.querySelectorAll('.card')].map((c) => ({
                market: c.dataset.market, direction: c.dataset.direction,
                change: getComputedStyle(c.querySelector('.change')).color,
                price: getComputedStyle(c.querySelector('.price')).color,
                line: getComputedStyle(c.querySelector('.chart .line')).stroke}))"""
        )
        coloured = [c for c in colours if c["direction"] != "flat"]
        assert coloured, colours
        for c in coloured:
            want = "rgb({}, {}, {})".format(*CONVENTION[c["market"], c["direction"]])
            assert c["change"] == c["price"] == c["line"] == want, c

        # The flash on a price change follows the same rule: caught at its first frame, its
        # background is the market's up (or down) colour at 35 %, read back as a pixel.
        for market in ("KR", "US"):
            flash = page.wait_for_function(
                f"""() => {{
                    for (const c of document.querySelectorAll('.card[data-market="{market}"]')) {{
                        const price = c.querySelector('.price');
                        const [animation] = price.getAnimations();
                        if (!animation) continue;
                        animation.pause();
                        animation.currentTime = 0;
                        const paint = document.createElement('canvas').getContext('2d');
                        paint.fillStyle = getComputedStyle(price).backgroundColor;
                        animation.play();
                        paint.fillRect(0, 0, 1, 1);
                        return {{
                            up: price.classList.contains('flash-up'),
                            rgba: [...paint.getImageData(0, 0, 1, 1).data],
                        }};
                    }}
                    return null;
                }}""",
                polling=50,
            ).json_value()
            rgba = [*CONVENTION[market, "up" if flash["up"] else "down"], round(0.35 * 255)]
            assert all(abs(a - b) <= 3 for a, b in zip(flash["rgba"], rgba, strict=True)), flash

        # The picture goes to build/ (ignored by git); make screenshot writes docs/ instead.
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.mouse.move(0, 0)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size > 10_000

        # A phone-sized screen: one column and nothing wider than the screen.
        page.set_viewport_size({"width": 375, "height": 740})
        expect(page.locator(".card").first).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        lefts = page.evaluate(
            "[...document.querySelectorAll('.card')].map((c) => c.getBoundingClientRect().left)"
        )
        assert len(set(lefts)) == 1, lefts


def test_with_auth_on_the_dashboard_asks_for_a_token_once_and_keeps_it(page: Page) -> None:
    import time

    import jwt
    from playwright.sync_api import expect

    secret = "a-dashboard-test-secret-of-40-characters"
    token = jwt.encode({"sub": "ops", "exp": time.time() + 3600}, secret, "HS256")
    env = {"TRIO_STOCK_AUTH": "jwt", "TRIO_STOCK_JWT_SECRET": secret}
    console = Console(page)
    with Gateway(*FAST, env=env) as gateway:
        open_dashboard(page, gateway, watchlist=["005930", "AAPL"])
        expect(page.locator("#token-form")).to_be_visible()  # refused with 4001: ask
        expect(page.locator("#token-note")).to_contain_text("authentication required")
        page.locator("#token-input").fill(token)
        page.keyboard.press("Enter")
        expect_connected(page)
        expect(page.locator("#token-form")).to_be_hidden()
        expect(card(page, "005930").locator(".price")).to_have_text(WON)
        expect(card(page, "AAPL").locator(".price")).to_have_text(DOLLARS)
        # REST polling carries the token as a bearer header: the quota, and the chart's history.
        expect(page.locator("#quota-kr")).to_have_text("1 / 40 Korean symbols in use")
        expect(card(page, "AAPL").locator(".chart")).to_have_attribute("data-source", "history")
        page.reload()  # kept in the tab's session storage: no second prompt
        expect_connected(page)
        expect(card(page, "AAPL").locator(".price")).to_have_text(DOLLARS)
        expect(page.locator("#token-form")).to_be_hidden()
        # A link with the token in its fragment works in a fresh tab, and the fragment goes.
        fresh = page.context.browser.new_context().new_page()  # type: ignore[union-attr]
        fresh.goto(f"{gateway.url}/#access_token={token}")
        expect(fresh.locator("#connection-text")).to_have_text("connected")
        assert fresh.evaluate("location.hash") == ""
        fresh.context.close()
    assert token not in gateway.output and secret not in gateway.output
    assert [e for e in console.errors if "401" not in e] == []  # the first poll may be refused


def test_the_quota_line_drops_when_the_last_card_goes_though_the_code_lingers(
    page: Page,
) -> None:
    from playwright.sync_api import expect

    with Gateway(*FAST, "--linger", "600") as gateway:
        open_dashboard(page, gateway, watchlist=["005930"])
        expect_connected(page)
        expect(page.locator("#quota-kr")).to_have_text("1 / 40 Korean symbols in use")
        card(page, "005930").locator(".remove").click()
        expect(page.locator(".card")).to_have_count(0)
        # Nobody holds it any more: free capacity, though it stays registered for 600 s.
        expect(page.locator("#quota-kr")).to_have_text("0 / 40 Korean symbols in use")
        status = page.evaluate("fetch('/api/v2/realtime/status').then((r) => r.json())")
        kr = next(u for u in status["upstream"] if u["market"] == "KR")
        assert (kr["used"], kr["lingering"]) == (0, 1)
