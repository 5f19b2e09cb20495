"""The dashboard in a real browser against a real gateway: live prices, the chart, deep links,
alerts, the portfolio (its trades as CSV), API keys and logging out. Each test waits for the
page's state (Playwright's expect, wait_for_function), never a fixed time; each step leaves a
screenshot in the artefacts folder."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Locator, Page, expect
from tickwatch_devstack.testing import wait_until
from tickwatch_gateway.runtime.clock import iso_from_ms

from ..integration.conftest import signup
from .conftest import Gateway, Tab, open_tab

MINUTE_MS = 60_000


async def open_dashboard(page: Page, gateway: Gateway, path: str = "/") -> None:
    await page.goto(gateway.url + path)
    # Subscribed to the WebSocket's channels, so a tick published from now on reaches the page.
    await expect(page.locator("body")).to_have_attribute("data-ws", "subscribed")
    await expect(page.locator("#chart")).not_to_have_attribute("data-interval", "")


async def last_bar(page: Page) -> dict[str, Any]:
    bar: dict[str, Any] = await page.evaluate("window.tickwatch.chart.lastBar()")
    return bar


async def test_a_tick_moves_the_price_table_and_the_chart_alike(gateway: Gateway, tab: Tab) -> None:
    page = tab.page
    await open_dashboard(page, gateway)
    await expect(page.locator("#chart")).to_have_attribute("data-symbol", "BTC-USDT")
    await tab.shot("1-opened")

    price_cell = page.locator('#prices tr[data-symbol="BTC-USDT"] td.price')
    for price in ("64001.25", "64010.5", "63990.75"):
        await gateway.tick("BTC-USDT", price)
        await expect(price_cell).to_have_text(price)
        # The same tick moved the chart's last candle: its close is the table's price, exactly.
        await expect(page.locator("#chart")).to_have_attribute("data-last-close", price)
        bar = await last_bar(page)
        assert bar["close"] == price
        assert Decimal(str(bar["drawn_close"])) == Decimal(price)
    # The ticks widened the candle they fell in, never narrowed it.
    bar = await last_bar(page)
    assert Decimal(bar["low"]) <= Decimal("63990.75") <= Decimal(bar["high"])
    await tab.shot("2-after-ticks")


async def test_switching_the_interval_loads_its_candles(gateway: Gateway, tab: Tab) -> None:
    now = int(time.time() * 1000)
    start = (now // (15 * MINUTE_MS) - 2) * 15 * MINUTE_MS  # three 15 m buckets of 1 m candles
    for k in range(30):
        base = 3000 + k
        await gateway.candle(
            "ETH-USDT",
            start + k * MINUTE_MS,
            f"{base}",
            f"{base + 2}",
            f"{base - 1}",
            f"{base + 1}",
        )

    async def stored() -> bool:
        resp = await gateway.client.get("/api/v1/prices/ETH-USDT/history?interval=1m&limit=1000")
        items = (await resp.json())["items"]
        return sum(1 for c in items if c["open_time"] >= iso_from_ms(start)) >= 30

    await wait_until(stored, what="the 30 candles stored")
    page = tab.page
    await open_dashboard(page, gateway, "/markets/ETH-USDT")
    chart = page.locator("#chart")
    await expect(chart).to_have_attribute("data-symbol", "ETH-USDT")
    one_minute = int(await chart.get_attribute("data-bars") or 0)
    assert one_minute >= 30
    await tab.shot("1-1m")

    for interval, bucket in (("5m", 5), ("15m", 15), ("1h", 60), ("1d", 1440)):
        await page.get_by_role("button", name=interval, exact=True).click()
        await expect(chart).to_have_attribute("data-interval", interval)
        await expect(page.get_by_role("button", name=interval, exact=True)).to_have_attribute(
            "aria-pressed", "true"
        )
        resp = await gateway.client.get(
            f"/api/v1/prices/ETH-USDT/history?interval={interval}&limit=500"
        )
        served = (await resp.json())["items"]
        assert served, interval
        shown = int(await chart.get_attribute("data-bars") or 0)
        assert shown in (len(served), len(served) + 1), (interval, shown, len(served))
        bar = await last_bar(page)
        opened = _ms(bar["time"])
        assert opened % (bucket * MINUTE_MS) == 0, (interval, bar)
    await tab.shot("2-1d")

    # Indicators from /indicators: an overlay and an oscillator pane.
    await page.get_by_role("button", name="1m", exact=True).click()
    await expect(chart).to_have_attribute("data-interval", "1m")
    await page.get_by_label("SMA 20").check()
    await page.get_by_label("RSI 14").check()
    await expect(chart).to_have_attribute("data-studies", "sma:20 rsi:14")
    await expect(page.locator("#chart-wrap")).to_have_class("panes-1")
    await tab.shot("3-indicators")


async def test_a_market_link_opens_on_that_market(gateway: Gateway, tab: Tab) -> None:
    page = tab.page
    await open_dashboard(page, gateway, "/markets/ETH-USDT")
    await expect(page.locator("#chart-title")).to_have_text("ETH-USDT")
    await expect(page.locator('#prices tr[data-symbol="ETH-USDT"]')).to_have_class("selected")
    await tab.shot("1-eth")
    # Choosing another market puts its link in the address bar.
    await page.locator('#prices tr[data-symbol="BTC-USDT"]').click()
    await expect(page.locator("#chart")).to_have_attribute("data-symbol", "BTC-USDT")
    assert page.url == gateway.url + "/markets/BTC-USDT"


async def test_an_alert_link_asks_to_log_in_then_shows_the_alert(
    gateway: Gateway, tab: Tab
) -> None:
    user = await signup(gateway.client)
    resp = await gateway.client.post(
        "/api/v1/alerts",
        json={"symbol": "ETH-USDT", "condition": "below", "target_price": "2500", "note": "buy"},
        headers=user["headers"],
    )
    assert resp.status == 201, await resp.text()
    alert = await resp.json()
    await gateway.tick("ETH-USDT", "3010.5")  # a candle to draw, whichever test ran before

    page = tab.page
    await open_dashboard(page, gateway, f"/alerts/{alert['id']}")
    await expect(page.locator("#deep-note")).to_contain_text("Log in to see alert")
    await expect(page.locator("#auth-email")).to_be_focused()
    await tab.shot("1-asked-to-log-in")

    await page.locator("#auth-email").fill(user["email"])
    await page.locator("#auth-password").fill("s3cret-pass")
    await page.get_by_role("button", name="Log in").click()
    detail = page.locator("#alert-detail")
    await expect(detail).to_be_visible()
    await expect(detail).to_have_attribute("data-alert-id", alert["id"])
    await expect(detail.locator('dd[data-field="note"]')).to_have_text("buy")
    await expect(detail.locator('dd[data-field="condition"]')).to_have_text("below 2500")
    await expect(page.locator(f'#alerts tr[data-alert-id="{alert["id"]}"]')).to_have_class(
        "focused"
    )
    await expect(page.locator("#chart")).to_have_attribute("data-symbol", "ETH-USDT")
    await expect(page.locator("#chart")).to_have_attribute("data-alert-lines", "2500")
    # The opened alert's line is on screen, though far from the candles (about 3000).
    await page.wait_for_function("window.tickwatch.chart.priceLines()[0].on_screen")
    await tab.shot("2-alert-shown")

    # Someone else's id, or none at all: said so, never a blank panel.
    tab.expected.append("status of 404")
    await page.goto(gateway.url + f"/alerts/{uuid.uuid4()}")
    await expect(page.locator("#alert-detail-error")).to_contain_text("No alert")


async def test_register_create_an_alert_and_see_its_line(gateway: Gateway, tab: Tab) -> None:
    page = tab.page
    await open_dashboard(page, gateway)
    await page.locator("#auth-email").fill(f"b{uuid.uuid4().hex[:8]}@example.com")
    await page.locator("#auth-password").fill("s3cret-pass")
    await page.get_by_role("button", name="Register").click()
    await expect(page.locator("#signed-in")).to_be_visible()
    await gateway.tick("BTC-USDT", "68000.5")
    await expect(page.locator("#chart")).to_have_attribute("data-last-close", "68000.5")
    await tab.shot("1-registered")

    await page.locator("#alert-symbol").select_option("BTC-USDT")
    await page.locator("#alert-condition").select_option("above")
    await page.locator("#alert-target").fill("70123.5")
    await page.get_by_role("button", name="Create alert").click()
    await expect(page.locator("#alerts tbody tr")).to_have_count(1)
    await expect(page.locator("#alerts tbody td.price")).to_have_text("70123.5")
    await expect(page.locator("#chart")).to_have_attribute("data-alert-lines", "70123.5")
    lines = await page.evaluate("window.tickwatch.chart.priceLines()")
    assert [(line["price"], line["drawn"]) for line in lines] == [("70123.5", 70123.5)]
    # Within 10 % of the candles: the price scale takes it in.
    await page.wait_for_function("window.tickwatch.chart.priceLines()[0].on_screen")
    await tab.shot("2-alert-line")


async def tab_to(page: Page, selector: str, presses: int = 250) -> None:
    """Press Tab until the element matching ``selector`` has the focus, as a keyboard user
    moves through the page; fails when it is never reached (not focusable, or hidden)."""
    for _ in range(presses):
        if await page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            # And the focus can be seen where it is.
            outline = await page.evaluate(
                "() => getComputedStyle(document.activeElement).outlineStyle"
            )
            assert outline != "none", f"{selector} has the focus but shows no outline"
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{selector} was not reached within {presses} presses of Tab")


async def test_the_page_works_from_the_keyboard(gateway: Gateway, tab: Tab) -> None:
    """No mouse: Tab reaches a market and Enter picks it, an interval button switches on
    Enter, the log-in form is filled and sent, then the alert form and the order form."""
    user = await signup(gateway.client)
    page = tab.page
    await open_dashboard(page, gateway, "/markets/BTC-USDT")
    chart = page.locator("#chart")

    await tab_to(page, f'#prices tr[data-symbol="{gateway.symbol}"]')
    await page.keyboard.press("Enter")
    await expect(chart).to_have_attribute("data-symbol", gateway.symbol)
    assert page.url == gateway.url + "/markets/" + gateway.symbol

    await tab_to(page, '#intervals button[data-interval="5m"]')
    await page.keyboard.press("Enter")
    await expect(chart).to_have_attribute("data-interval", "5m")
    await tab.shot("1-keyboard-market-and-interval")

    await tab_to(page, "#auth-email")
    await page.keyboard.type(user["email"])
    await page.keyboard.press("Tab")
    await expect(page.locator("#auth-password")).to_be_focused()
    await page.keyboard.type("s3cret-pass")
    await page.keyboard.press("Enter")  # submits the form
    await expect(page.locator("#signed-in")).to_be_visible()
    await expect(page.locator("#user-email")).to_have_text(user["email"])

    await tab_to(page, "#alert-target")
    await tab_to(page, "#order-quantity")
    await tab.shot("2-keyboard-signed-in")


async def test_usable_at_390_px(gateway: Gateway, narrow_tab: Tab) -> None:
    page = narrow_tab.page
    await open_dashboard(page, gateway)
    await gateway.tick("BTC-USDT", "64100.5")
    await expect(page.locator('#prices tr[data-symbol="BTC-USDT"] td.price')).to_have_text(
        "64100.5"
    )
    # Nothing wider than the screen: no column cut off, no sideways scrolling.
    widths = await page.evaluate(
        """() => ({
          page: document.documentElement.scrollWidth,
          table: document.getElementById("prices").getBoundingClientRect().right,
          chart: document.getElementById("chart").getBoundingClientRect().right,
          volume: document.querySelector("#prices th:nth-child(4)").getBoundingClientRect().right,
        })"""
    )
    assert max(widths.values()) <= 390, widths
    await narrow_tab.shot("1-390px")

    # Signed in, with an alert: its table fits too.
    await page.locator("#auth-email").fill(f"n{uuid.uuid4().hex[:8]}@example.com")
    await page.locator("#auth-password").fill("s3cret-pass")
    await page.get_by_role("button", name="Register").click()
    await page.locator("#alert-target").fill("65000")
    await page.get_by_role("button", name="Create alert").click()
    await expect(page.locator("#alerts tbody tr")).to_have_count(1)
    right = await page.evaluate(
        """() => Math.max(document.documentElement.scrollWidth,
             document.getElementById("alerts").getBoundingClientRect().right)"""
    )
    assert right <= 390, right
    await page.locator("#alerts-panel").scroll_into_view_if_needed()
    await narrow_tab.shot("2-390px-signed-in")
    await expect(page.locator("#portfolio-panel")).to_be_visible()
    right = await page.evaluate(
        """() => Math.max(...[...document.querySelectorAll(
             "#portfolio-panel table, #portfolio-panel form, #value-chart, #alert-form *, " +
             "#api-keys-panel form, #api-keys")]
             .map((e) => e.getBoundingClientRect().right))"""
    )
    assert right <= 390, right
    await page.locator("#portfolio-panel").scroll_into_view_if_needed()
    await narrow_tab.shot("3-390px-portfolio")


async def test_static_files_and_unknown_paths(gateway: Gateway) -> None:
    client = gateway.client
    script = await client.get("/static/lightweight-charts-5.2.1.standalone.production.js")
    assert script.status == 200
    assert script.content_type == "text/javascript"
    assert "max-age=" in script.headers["Cache-Control"]
    again = await client.get(
        "/static/lightweight-charts-5.2.1.standalone.production.js",
        headers={"If-None-Match": script.headers["ETag"]},
    )
    assert again.status == 304
    icon = await client.get("/favicon.ico")
    assert (icon.status, icon.content_type) == (200, "image/svg+xml")
    licence = await client.get("/static/lightweight-charts-LICENSE.txt")
    assert "Apache License" in await licence.text()
    for path in (
        "/static/dashboard.html",
        "/static/README.md",
        "/static/..%2Froutes.py",
        "/static/nope.js",
        "/nope",
        "/markets/BTC-USDT/more",
        "/alerts/",
    ):
        assert (await client.get(path)).status == 404, path
    page = await client.get("/markets/BTC-USDT")
    root = await client.get("/")
    assert page.status == 200 and await page.text() == await root.text()
    assert page.headers["Content-Security-Policy"] == root.headers["Content-Security-Policy"]
    document = await (await client.get("/openapi.json")).json()
    assert not any(p.startswith(("/markets", "/alerts", "/static")) for p in document["paths"])


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


# ---------------------------------------------------------------- alerts and the portfolio


async def register(page: Page) -> dict[str, str]:
    """Register and log in from the page; its bearer header, for reading the API alongside."""
    await page.locator("#auth-email").fill(f"t{uuid.uuid4().hex[:8]}@example.com")
    await page.locator("#auth-password").fill("s3cret-pass")
    await page.get_by_role("button", name="Register").click()
    await expect(page.locator("#signed-in")).to_be_visible()
    token = await page.evaluate("sessionStorage.getItem('tw.access')")
    return {"Authorization": f"Bearer {token}"}


async def open_market(page: Page, gateway: Gateway, price: str) -> None:
    """The module's own market, on the chart, at ``price``."""
    await gateway.tick(gateway.symbol, price)
    row = page.locator(f'#prices tr[data-symbol="{gateway.symbol}"]')
    await expect(row.locator("td.price")).to_have_text(price)
    await row.click()
    await expect(page.locator("#chart")).to_have_attribute("data-symbol", gateway.symbol)
    await expect(page.locator("#chart")).to_have_attribute("data-last-close", price)


async def shows_amount(locator: Locator, amount: Decimal) -> None:
    """Waits until the element shows ``amount`` (however many zeros it writes)."""

    async def shown() -> bool:
        text = (await locator.text_content() or "").strip().lstrip("+")
        try:
            return Decimal(text) == amount
        except ArithmeticError:
            return False

    await wait_until(shown, 15, f"{amount} shown", interval_s=0.05)


async def problem_detail(gateway: Gateway, method: str, path: str, body: Any, headers: Any) -> str:
    resp = await gateway.client.request(method, "/api/v1" + path, json=body, headers=headers)
    assert 400 <= resp.status < 500, await resp.text()
    detail: str = (await resp.json())["detail"]
    return detail


async def test_alerts_from_the_form_and_the_chart_fire_pause_and_edit(
    gateway: Gateway, tab: Tab, browser: Browser, request: pytest.FixtureRequest
) -> None:
    page, symbol = tab.page, gateway.symbol
    await open_dashboard(page, gateway)
    headers = await register(page)
    await open_market(page, gateway, "100")

    # crosses_up from the form.
    await page.locator("#alert-symbol").select_option(symbol)
    await page.locator("#alert-condition").select_option("crosses_up")
    await page.locator("#alert-target").fill("101")
    await page.locator("#alert-note").fill("breakout")
    await page.get_by_role("button", name="Create alert").click()
    rows = page.locator("#alerts tbody tr")
    await expect(rows).to_have_count(1)
    form_id = await rows.first.get_attribute("data-alert-id")
    form_alert = page.locator(f'#alerts tbody tr[data-alert-id="{form_id}"]')
    await expect(form_alert).to_have_attribute("data-status", "active")
    await expect(form_alert.locator("td.cond")).to_contain_text("crosses up")
    await expect(form_alert.locator(".alert-note")).to_have_text("breakout")
    await tab.shot("1-form-alert")

    # One from a click on the chart: the form prefilled with that level, then created.
    box = await page.locator("#chart").bounding_box()
    assert box is not None
    y = box["height"] * 0.2
    await page.locator("#chart").click(position={"x": box["width"] * 0.4, "y": y})
    expected = await page.evaluate(f"window.tickwatch.chart.priceAt({y}).toFixed(2)")
    await expect(page.locator("#alert-target")).to_have_value(expected)
    assert Decimal(expected) > Decimal("100")
    await expect(page.locator("#alert-condition")).to_have_value("crosses_up")
    await expect(page.locator("#alert-target")).to_be_focused()
    await tab.shot("2-chart-click-prefilled")
    await page.get_by_role("button", name="Create alert").click()
    await expect(rows).to_have_count(2)
    chart_alert = page.locator(f'#alerts tbody tr:has(td.price:text-is("{expected}"))')
    await expect(chart_alert).to_have_count(1)
    lines = (await page.locator("#chart").get_attribute("data-alert-lines") or "").split()
    assert sorted(lines) == sorted(["101", expected])

    # Pause and resume it; edit its note (PATCH).
    await chart_alert.get_by_role("button", name="Pause").click()
    await expect(chart_alert).to_have_attribute("data-status", "paused")
    await tab.shot("3-paused")
    await chart_alert.get_by_role("button", name="Resume").click()
    await expect(chart_alert).to_have_attribute("data-status", "active")
    await chart_alert.get_by_role("button", name="Edit").click()
    await expect(page.locator("#alert-form")).to_have_attribute("data-mode", "edit")
    await page.locator("#alert-note").fill("from the chart")
    await page.get_by_role("button", name="Save changes").click()
    await expect(chart_alert.locator(".alert-note")).to_have_text("from the chart")
    await expect(page.locator("#alert-form")).to_have_attribute("data-mode", "create")

    # A tick crossing it: the trigger arrives live and the alert's status changes.
    trigger = page.locator(f'#triggers li[data-alert-id="{form_id}"]')

    async def fired() -> bool:
        if await trigger.count():
            return True
        await gateway.tick(symbol, "99.5")
        await gateway.tick(symbol, "102")
        return False

    await wait_until(fired, 20, "the crosses_up trigger on the page", interval_s=0.3)
    await expect(trigger).to_contain_text("crosses up 101")
    await expect(form_alert).to_have_attribute("data-status", "triggered")
    await expect(form_alert.locator("td.status")).to_have_text("triggered")
    await tab.shot("4-triggered")

    # Its history: the trigger at its price, with its delivery state.
    await form_alert.locator("td.sym button").click()
    detail = page.locator("#alert-detail")
    await expect(detail).to_have_attribute("data-alert-id", form_id or "")
    await expect(detail.locator('dd[data-field="note"]')).to_have_text("breakout")
    await expect(page.locator("#alert-events li[data-event-id]")).to_have_count(1)
    await expect(page.locator("#alert-events li").first).to_contain_text("102")
    await tab.shot("5-history")

    # pct_change with its window, recurring with a cooldown, an expiry: all as sent.
    await page.locator("#alert-condition").select_option("pct_change")
    await page.locator("#alert-pct").fill("5")
    await page.locator("#alert-window").fill("600")
    await page.locator("#alert-frequency").select_option("recurring")
    await page.locator("#alert-cooldown").fill("120")
    await page.locator("#alert-expires").fill("2099-01-02T03:04")
    await page.get_by_role("button", name="Create alert").click()
    await expect(rows).to_have_count(3)
    listed = await (await gateway.client.get("/api/v1/alerts", headers=headers)).json()
    pct = next(a for a in listed["items"] if a["condition"] == "pct_change")
    assert (pct["pct"], pct["window_seconds"], pct["frequency"], pct["cooldown_seconds"]) == (
        "5",
        600,
        "recurring",
        120,
    )
    assert pct["expires_at"].startswith("2099-01-02T03:04:00")
    await expect(page.locator(f'#alerts tr[data-alert-id="{pct["id"]}"] td.cond')).to_contain_text(
        "moves 5 %"
    )

    # A webhook: its signing secret shown once, on creation.
    await page.locator("#alert-condition").select_option("above")
    await page.locator("#alert-target").fill("150")
    await page.locator("#alert-frequency").select_option("once")
    await page.locator("#alert-ch-webhook").check()
    await page.locator("#alert-webhook").fill("http://127.0.0.1:9/hook")
    await page.get_by_role("button", name="Create alert").click()
    await expect(rows).to_have_count(4)
    secret = page.locator("#webhook-secret-value")
    await expect(page.locator("#webhook-secret")).to_be_visible()
    assert len(await secret.text_content() or "") >= 16
    await tab.shot("6-webhook-secret")
    await page.get_by_role("button", name="Done").click()
    await expect(page.locator("#webhook-secret")).to_be_hidden()
    await expect(secret).to_have_text("")

    # An error from the API is shown as the problem's detail: an expiry already past.
    await page.locator("#alert-ch-webhook").uncheck()
    await page.locator("#alert-expires").fill("2001-01-01T00:00")
    tab.expected.append("status of 422")
    body = {
        "symbol": symbol,
        "condition": "above",
        "target_price": "150",
        "expires_at": "2001-01-01T00:00:00.000Z",
    }
    detail_text = await problem_detail(gateway, "POST", "/alerts", body, headers)
    assert "expires_at" in detail_text
    await page.get_by_role("button", name="Create alert").click()
    await expect(page.locator("#alert-error")).to_contain_text(detail_text)
    await expect(rows).to_have_count(4)
    await tab.shot("7-api-error")

    # Delete.
    await chart_alert.get_by_role("button", name="Delete").click()
    await expect(rows).to_have_count(3)

    # The trigger's e-mail (the notifier's, to the user): its link opens the alert in a fresh
    # browser, after logging in, with that e-mail's delivery in its history.
    me = await (await gateway.client.get("/api/v1/auth/me", headers=headers)).json()
    mail = await the_alerts_email(gateway, me["email"], form_id or "")
    (event,) = await events_once_sent(gateway, form_id or "", headers)
    assert mail["X-Tickwatch-Event-Id"] == event["event_id"]
    link = f"{gateway.url}/alerts/{form_id}"
    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert re.findall(r"See the alert: (\S+)", text.get_content()) == [link]
    assert re.findall(r'<a href="([^"]+)">See the alert</a>', html.get_content()) == [link]
    async for fresh in open_tab(browser, request):
        await open_the_emails_link(fresh, html.get_content(), link, me["email"])
        detail = fresh.page.locator("#alert-detail")
        await expect(detail).to_have_attribute("data-alert-id", form_id or "")
        await expect(detail.locator('dd[data-field="note"]')).to_have_text("breakout")
        await expect(detail.locator('dd[data-field="status"]')).to_have_text("triggered")
        delivery = fresh.page.locator(f'#alert-events li[data-event-id="{event["event_id"]}"]')
        await expect(delivery).to_contain_text("email sent")
        await expect(delivery.locator(".price")).to_have_text(event["price"])
        await fresh.shot("10-emailed-alert-shown")


async def the_alerts_email(gateway: Gateway, address: str, alert_id: str) -> EmailMessage:
    """The one e-mail to ``address`` about ``alert_id``, once the mail catcher holds it."""

    def about_it() -> list[EmailMessage]:
        return [m for m in gateway.mails_to(address) if m["X-Tickwatch-Alert-Id"] == alert_id]

    await wait_until(about_it, 15, f"the e-mail of alert {alert_id}", interval_s=0.05)
    (mail,) = about_it()
    return mail


async def events_once_sent(
    gateway: Gateway, alert_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """The alert's history once every delivery is recorded as sent (the page reads it once)."""
    events: list[dict[str, Any]] = []

    async def sent() -> bool:
        resp = await gateway.client.get(f"/api/v1/alerts/{alert_id}/events", headers=headers)
        events[:] = (await resp.json())["items"]
        deliveries = [d for e in events for d in e["deliveries"]]
        return bool(deliveries) and all(d["status"] == "sent" for d in deliveries)

    await wait_until(sent, 15, f"alert {alert_id}'s deliveries recorded as sent", interval_s=0.05)
    return events


async def open_the_emails_link(tab: Tab, html: str, link: str, address: str) -> None:
    """The e-mail's HTML shown in the browser, its link clicked: asked to log in, logged in."""
    page = tab.page
    await page.set_content(html)
    await tab.shot("8-the-email")
    await page.get_by_role("link", name="See the alert").click()
    await page.wait_for_url(link)
    await expect(page.locator("body")).to_have_attribute("data-ws", "subscribed")
    await expect(page.locator("#deep-note")).to_contain_text("Log in to see alert")
    await expect(page.locator("#auth-email")).to_be_focused()
    assert await page.evaluate("sessionStorage.getItem('tw.access')") is None
    await tab.shot("9-email-link-asks-to-log-in")
    await page.locator("#auth-email").fill(address)
    await page.locator("#auth-password").fill("s3cret-pass")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#alert-detail")).to_be_visible()


async def test_buy_at_market_see_the_pnl_move_and_a_limit_order_rest(
    gateway: Gateway, tab: Tab
) -> None:
    page, symbol = tab.page, gateway.symbol
    await open_dashboard(page, gateway)
    headers = await register(page)
    await open_market(page, gateway, "100")
    panel = page.locator("#portfolio-panel")
    await expect(panel).to_be_visible()
    start = await (await gateway.client.get("/api/v1/portfolio", headers=headers)).json()
    await expect(page.locator("#pf-cash")).to_have_text(start["cash"])
    await expect(page.locator("#holdings-empty")).to_be_visible()

    # Fund.
    await page.locator("#cash-amount").fill("500")
    await page.get_by_role("button", name="Deposit").click()
    funded = Decimal(start["cash"]) + 500
    await shows_amount(page.locator("#pf-cash"), funded)
    await tab.shot("1-funded")

    # Buy at market: the holding at the tick's price.
    await page.locator("#order-symbol").select_option(symbol)
    await page.locator("#order-side").select_option("buy")
    await page.locator("#order-type").select_option("market")
    await page.locator("#order-quantity").fill("2")
    await gateway.tick(symbol, "100")
    await page.get_by_role("button", name="Place order").click()
    await expect(page.locator("#order-result")).to_have_attribute("data-status", "filled")
    holding = page.locator(f'#holdings tr[data-symbol="{symbol}"]')
    await expect(holding.locator("td.qty")).to_have_text("2")
    await expect(page.locator(f'#trades tbody tr:has(td.sym:text-is("{symbol}"))')).to_have_count(1)
    await tab.shot("2-bought")

    # The trades as the API's CSV, saved from the page (a Blob fetched with the bearer token).
    async with page.expect_download() as saving:
        await page.get_by_role("button", name="Download CSV").click()
    download = await saving.value
    assert download.suggested_filename.startswith("tickwatch-trades-")
    saved = Path(await download.path()).read_bytes().decode()  # CRLF as sent
    served = await gateway.client.get(
        "/api/v1/portfolio/trades?per_page=200", headers={**headers, "Accept": "text/csv"}
    )
    assert served.content_type == "text/csv"
    assert saved == await served.text()
    assert len(saved.splitlines()) == 2, saved  # the header and the one fill

    # A tick moves its price and P&L, from the portfolio channel.
    await gateway.tick(symbol, "110")
    await expect(holding.locator("td.price")).to_have_text("110")
    view = await (await gateway.client.get("/api/v1/portfolio", headers=headers)).json()
    (held,) = [h for h in view["holdings"] if h["symbol"] == symbol]
    assert Decimal(held["unrealized_pnl"]) > 0
    await shows_amount(holding.locator("td.pnl"), Decimal(held["unrealized_pnl"]))
    await expect(holding.locator("td.pnl")).to_have_class("num pnl up")
    await expect(page.locator("#value-chart")).not_to_have_attribute("data-points", "0")
    await expect(page.locator("#performance")).to_have_attribute("data-range", "30d")
    await tab.shot("3-pnl-moved")

    # A limit order far below rests; cancelled, it is gone.
    await page.locator("#order-type").select_option("limit")
    await page.locator("#order-limit").fill("50")
    await page.locator("#order-quantity").fill("1")
    await page.get_by_role("button", name="Place order").click()
    await expect(page.locator("#order-result")).to_have_attribute("data-status", "open")
    resting = page.locator(f'#open-orders tbody tr:has(td.sym:text-is("{symbol}"))')
    await expect(resting).to_have_count(1)
    await expect(resting.locator("td.price")).to_have_text("50")
    await tab.shot("4-resting")
    await resting.get_by_role("button", name="Cancel").click()
    await expect(resting).to_have_count(0)
    await expect(page.locator("#open-orders-empty")).to_be_visible()
    orders = await (
        await gateway.client.get("/api/v1/portfolio/orders?status=cancelled", headers=headers)
    ).json()
    assert len(orders["items"]) == 1

    # Selling more than held: the API's detail on the page, nothing booked.
    tab.expected.append("status of 4")
    body = {"symbol": symbol, "side": "sell", "quantity": "100", "type": "market"}
    detail_text = await problem_detail(gateway, "POST", "/portfolio/orders", body, headers)
    await page.locator("#order-type").select_option("market")
    await page.locator("#order-side").select_option("sell")
    await page.locator("#order-quantity").fill("100")
    await page.get_by_role("button", name="Place order").click()
    await expect(page.locator("#order-error")).to_contain_text(detail_text)
    await expect(holding.locator("td.qty")).to_have_text("2")
    await tab.shot("5-order-refused")


# ---------------------------------------------------------------- API keys and logging out


async def test_an_api_key_from_the_page_reads_not_writes_until_revoked_then_log_out(
    gateway: Gateway, tab: Tab
) -> None:
    page, client = tab.page, gateway.client
    await open_dashboard(page, gateway)
    headers = await register(page)
    panel = page.locator("#api-keys-panel")
    await expect(panel).to_be_visible()
    await expect(page.locator("#api-keys-empty")).to_be_visible()

    # No scope at all: the API's detail on the page, no key made.
    tab.expected.append("status of 422")
    body = {"name": "nothing", "scopes": []}
    detail_text = await problem_detail(gateway, "POST", "/api-keys", body, headers)
    await page.locator("#key-name").fill("nothing")
    await page.get_by_label("read", exact=True).uncheck()
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#key-error")).to_contain_text(detail_text)
    await expect(page.locator("#new-key")).to_be_hidden()
    await tab.shot("1-no-scope-refused")

    # A read-only key: shown once, listed with its scope.
    await page.get_by_label("read", exact=True).check()
    await page.locator("#key-name").fill("reporting script")
    await page.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-key-value")
    await expect(page.locator("#new-key")).to_be_visible()
    await expect(page.locator("#key-error")).to_have_text("")
    key = await shown.text_content() or ""
    assert key.startswith("tw_"), key
    row = page.locator("#api-keys tbody tr")
    await expect(row).to_have_count(1)
    await expect(row.locator("td.name")).to_contain_text("reporting script")
    await expect(row.locator("td.scopes")).to_have_text("read")
    await expect(row.locator("td.used")).to_have_text("never")
    fits = await page.evaluate(
        """() => document.querySelector("#api-keys button.revoke").getBoundingClientRect().right
             <= document.getElementById("api-keys-panel").getBoundingClientRect().right"""
    )
    assert fits, "the Revoke button is cut off"
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway.url)
    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator("#new-key-copied")).to_have_text("Copied.")
    assert await page.evaluate("navigator.clipboard.readText()") == key
    await tab.shot("2-key-shown")
    await page.locator("#new-key-dismiss").click()
    await expect(page.locator("#new-key")).to_be_hidden()
    await expect(shown).to_have_text("")

    # The key reads, but may not write; the listing has no secret in it.
    as_key = {"X-API-Key": key}
    assert (await client.get("/api/v1/alerts", headers=as_key)).status == 200
    alert = {"symbol": "BTC-USDT", "condition": "above", "target_price": "90000"}
    refused = await client.post("/api/v1/alerts", json=alert, headers=as_key)
    assert refused.status == 403, await refused.text()
    assert key not in await page.content()

    # Revoked from the page (a second click confirms): the same key is refused.
    revoke = row.locator("button.revoke")
    await revoke.click()
    await expect(revoke).to_have_text("Confirm revoke")
    await revoke.click()
    await expect(row).to_have_count(0)
    await expect(page.locator("#api-keys-empty")).to_be_visible()
    await tab.shot("3-revoked")
    assert (await client.get("/api/v1/alerts", headers=as_key)).status == 401

    # Log out: the signed-out view, the session gone and its token refused.
    await page.get_by_role("button", name="Log out").click()
    await expect(page.locator("#auth-form")).to_be_visible()
    for hidden in ("#signed-in", "#api-keys-panel", "#alerts-panel", "#portfolio-panel"):
        await expect(page.locator(hidden)).to_be_hidden()
    await expect(page.locator("#api-keys tbody tr")).to_have_count(0)
    assert await page.evaluate("sessionStorage.getItem('tw.access')") is None

    async def token_refused() -> bool:
        return (await client.get("/api/v1/auth/me", headers=headers)).status == 401

    await wait_until(token_refused, 5, "the logged-out token refused", interval_s=0.05)
    await tab.shot("4-logged-out")
