"""The dashboard at ``/`` in a real headless Chromium (Debian's), driven by Playwright.

Each test starts its own gateway subprocess on a free port (simulated market, fast ticks) and
opens the page in a fresh browser context (fresh localStorage). These are real-time tests of
a real browser against a real server process, so the MockClock rule cannot apply: every wait
is on a page condition (Playwright's ``expect`` / ``wait_for_function``) bounded by a
timeout, never a fixed sleep. If Chromium or Playwright is missing the tests fail, naming
``.ci/install-browser.sh``; they never skip.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .browser import CHROMIUM, CHROMIUM_ARGS, ROOT, Gateway, missing_browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

FAST = ("--sim-ticks-per-second", "20")
DEFAULTS = ["005930", "000660", "AAPL", "MSFT"]
SHOWCASE = ["005930", "000660", "035420", "051910", "AAPL", "MSFT", "NVDA", "TSLA"]
WON = re.compile(r"^₩\d{1,3}(,\d{3})*$")
DOLLARS = re.compile(r"^\$\d{1,3}(,\d{3})*\.\d{2}$")
SCREENSHOT = ROOT / "docs" / "dashboard.png"
TIMEOUT_MS = 10_000  # generous for a loaded CI machine; conditions normally hold in < 1 s


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


def test_first_visit_loads_clean_connects_and_shows_both_markets(page: Page) -> None:
    from playwright.sync_api import expect

    console = Console(page)
    with Gateway(*FAST) as gateway:
        open_dashboard(page, gateway)
        expect_connected(page)
        expect(page.locator(".card")).to_have_count(len(DEFAULTS))
        for symbol in DEFAULTS:
            pattern = WON if symbol.isdigit() else DOLLARS
            expect(card(page, symbol).locator(".price")).to_have_text(pattern)
            expect(card(page, symbol).locator(".bid")).to_have_text(pattern)
            expect(card(page, symbol).locator(".time")).to_have_text(
                re.compile(r"^\d\d:\d\d:\d\d (KST|ET)$")
            )
        # The quota and the provider health come from the server's REST endpoints.
        expect(page.locator("#quota-kr")).to_have_text("2 / 40 Korean symbols in use")
        expect(page.locator("#quota-us")).to_have_text("2 / 500 US symbols in use")
        expect(page.locator("#health li")).to_have_text(
            ["KR · simulated · connected", "US · simulated · connected"]
        )
        assert json.loads(page.evaluate("localStorage.getItem('trio_stock.watchlist')")) == DEFAULTS
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
        page.keyboard.press("Tab")  # the card's remove button
        remove = card(page, "005930").locator(".remove")
        expect(remove).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator(".card")).to_have_count(0)
        expect(page.locator("#empty")).to_be_visible()
        # The server let go too (linger 0): the page sent the unsubscribe.
        expect(page.locator("#quota-kr")).to_have_text("0 / 40 Korean symbols in use")
        assert page.evaluate("localStorage.getItem('trio_stock.watchlist')") == "[]"


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


def test_a_server_restart_reconnects_with_backoff_and_resubscribes(page: Page) -> None:
    from playwright.sync_api import expect

    first = Gateway(*FAST)
    try:
        open_dashboard(page, first)
        expect_connected(page)
        price = card(page, "005930").locator(".price")
        expect(price).to_have_text(WON)
        port = first.port
    finally:
        first.stop()
    connection = page.locator("#connection-text")
    # Backoff: the first retry fails while the server is down, so the attempt count grows.
    expect(connection).to_have_text(re.compile(r"^reconnecting \(attempt 2\)"))
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")

    with Gateway(*FAST, port=port) as second:
        assert second.port == port
        expect_connected(page)
        # The new server knows nothing of the page, so prices flow again on every card only
        # if the page subscribed again by itself; then the server holds exactly the watchlist.
        for symbol in DEFAULTS:
            price = card(page, symbol).locator(".price")
            expect(price).not_to_have_text(price.inner_text())
        status = page.request.get(second.url + "/api/v2/realtime/status").json()
        assert sorted(status["connection_status"]["subscribed_symbols"]) == sorted(DEFAULTS)


def test_health_shows_a_live_provider_that_cannot_reach_its_upstream(page: Page) -> None:
    from playwright.sync_api import expect

    with socket.socket() as probe:  # a port nothing listens on: the upstream is unreachable
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    upstream = f"127.0.0.1:{closed}"
    with Gateway(
        "--kis-rest-url",
        f"http://{upstream}",
        "--kis-ws-url",
        f"ws://{upstream}",
        env={"KIS_APP_KEY": "test-key", "KIS_APP_SECRET": "test-secret"},
    ) as gateway:
        open_dashboard(page, gateway, watchlist=["AAPL"])
        expect_connected(page)
        kr = page.locator('#health li[data-state="backing_off"]')
        expect(kr).to_contain_text("KR · live KIS · reconnecting (")
        expect(kr).to_contain_text("approval request failed")
        expect(page.locator('#health li[data-state="connected"]')).to_have_text(
            "US · simulated · connected"
        )
        expect(card(page, "AAPL").locator(".price")).to_have_text(DOLLARS)


def test_phone_layout_colours_and_the_readme_screenshot(page: Page) -> None:
    from playwright.sync_api import expect

    with Gateway(*FAST) as gateway:
        page.set_viewport_size({"width": 1280, "height": 640})
        open_dashboard(page, gateway, watchlist=SHOWCASE)
        expect_connected(page)
        # Let every sparkline fill up a little before the picture is taken.
        page.wait_for_function(
            "[...document.querySelectorAll('.card polyline')]"
            ".every((p) => p.points.numberOfItems >= 15)",
            polling=100,
            timeout=15_000,
        )
        expect(page.locator("#quota-kr")).to_have_text("4 / 40 Korean symbols in use")
        expect(page.locator("#health li")).to_have_count(2)

        # Up/down colours follow each market's convention: red up / blue down for Korean
        # codes, green up / red down for US tickers (the CSS custom properties).
        colours = page.evaluate(
            """() => [...document.querySelectorAll('.card')].map((c) => ({
                market: c.dataset.market, direction: c.dataset.direction,
                colour: getComputedStyle(c.querySelector('.change')).color}))"""
        )
        expected = {
            ("KR", "up"): "rgb(255, 123, 114)",
            ("KR", "down"): "rgb(121, 192, 255)",
            ("US", "up"): "rgb(86, 211, 100)",
            ("US", "down"): "rgb(255, 123, 114)",
        }
        coloured = [c for c in colours if c["direction"] != "flat"]
        assert coloured, colours
        for c in coloured:
            assert c["colour"] == expected[c["market"], c["direction"]], c

        SCREENSHOT.parent.mkdir(exist_ok=True)
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
        # REST polling carries the token as a bearer header.
        expect(page.locator("#quota-kr")).to_have_text("1 / 40 Korean symbols in use")
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
