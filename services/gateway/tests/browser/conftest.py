"""One real gateway per module (real Kafka, PostgreSQL, Redis) and Debian's Chromium driving it.

Beside the gateway run a real portfolio service, a real alert engine and a real notifier
(processes, their logs in the module's temporary folder), so orders fill, alerts fire from the
ticks a test publishes and their e-mails reach the session's mail catcher (``Gateway.mails_to``),
linking to this gateway; the flows that need them use the module's own market
(``Gateway.symbol``, with instrument rules), out of the way of what other tests publish on the
shared broker.

Playwright's own browser download cannot work here, so it drives ``/usr/bin/chromium``
(``make install`` installs it when missing) with the flags a closed network needs. Each test gets
a fresh browser context (empty session storage); screenshots go to ``.artefacts/browser/``
(git-ignored), ``TICKWATCH_ARTEFACTS`` elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
from tickwatch_common.events import Candle, Instrument
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES, INSTRUMENTS, TICKS
from tickwatch_devstack.infra import Stack, create_database, free_port
from tickwatch_devstack.testing import replay_tick, service_running_off_loop, wait_until
from tickwatch_gateway.app import build_app

from ..integration.conftest import gateway_settings, signup

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTEFACTS = Path(
    os.environ.get("TICKWATCH_ARTEFACTS") or Path(__file__).parents[4] / ".artefacts" / "browser"
)
EXPECT_TIMEOUT_MS = 15_000


@dataclass
class Gateway:
    """The gateway under test: its base URL, an API client, and a publisher to the real broker."""

    url: str
    client: TestClient[Any, Any]
    publisher: Publisher
    symbol: str
    """The module's own market: instrument rules published, the portfolio trades it."""
    mail_dir: Path
    """Where the session's mail catcher saves each message (``.eml``, ``.eml.json`` sidecar)."""

    def mails_to(self, address: str) -> list[EmailMessage]:
        """The messages caught so far for ``address``, oldest first."""
        found = []
        for sidecar in sorted(self.mail_dir.glob("*.eml.json")):
            try:
                recipients = json.loads(sidecar.read_text())["rcpt_tos"]
            except json.JSONDecodeError:  # the catcher is writing it (the .eml is complete)
                continue
            if address in recipients:
                raw = (self.mail_dir / sidecar.name.removesuffix(".json")).read_bytes()
                message = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                found.append(message)
        return found

    async def tick(self, symbol: str, price: str, ts_ms: int | None = None) -> None:
        ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
        await self.publisher.publish(TICKS, replay_tick(symbol, price, ts_ms), key=symbol)

    async def candle(self, symbol: str, open_ms: int, o: str, h: str, lo: str, c: str) -> None:
        candle = Candle(
            symbol=symbol,
            source="replay",
            interval="1m",
            open_time=open_ms,
            close_time=open_ms + 59_999,
            open=Decimal(o),
            high=Decimal(h),
            low=Decimal(lo),
            close=Decimal(c),
            volume=Decimal("12.5"),
            closed=True,
        )
        await self.publisher.publish(CANDLES, candle, key=symbol)


def _rules(symbol: str) -> Instrument:
    base, quote = symbol.split("-")
    return Instrument(
        symbol=symbol,
        base=base,
        quote=quote,
        source="binance",
        step_size=Decimal("0.001"),
        tick_size=Decimal("0.01"),
        min_notional=Decimal("1"),
        status="TRADING",
    )


@pytest.fixture(scope="module")
async def gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    server = stack.database_url.rsplit("/", 1)[0] + "/postgres"
    database = await create_database(server, f"t_{uuid.uuid4().hex[:12]}")
    tag = uuid.uuid4().hex[:8]
    symbol = f"X{tag[:6].upper()}-USDT"  # its own: other tests share the broker
    secret = secrets.token_urlsafe(48)
    assert stack.mail_dir is not None
    ports = {"portfolio": free_port(), "alert-engine": free_port(), "notifier": free_port()}
    gateway_port = free_port()
    url = f"http://127.0.0.1:{gateway_port}"  # known before it starts: the e-mails link to it
    logs = Path(tmp_path_factory.mktemp("services"))
    env = {
        **stack.env(),  # with the mail catcher's SMTP host and port
        "DATABASE_URL": database,
        "INTERNAL_API_SECRET": secret,
        "ALERT_ENGINE_GROUP": f"alert-engine-{tag}",
        "NOTIFIER_GROUP": f"notifier-{tag}",
        "NOTIFIER_OFFSET_RESET": "latest",  # not the triggers other tests left on the topic
        "PUBLIC_BASE_URL": url,
    }
    settings = gateway_settings(
        stack,
        database,
        symbols=f"BTC-USDT,ETH-USDT,{symbol}",
        portfolio_url=f"http://127.0.0.1:{ports['portfolio']}",
        internal_api_secret=secret,
        alerts_allow_private_webhooks=True,  # a webhook on loopback (its alert never fires)
    )
    kafka = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    client: TestClient[Any, Any] = TestClient(
        TestServer(build_app(settings), host="127.0.0.1", port=gateway_port)
    )
    async with contextlib.AsyncExitStack() as services:

        async def gateway_ready() -> None:
            await client.start_server()
            services.push_async_callback(client.close)

            async def ready() -> bool:
                return (await client.get("/ready")).status == 200

            await wait_until(ready, what="the gateway ready")

        # The gateway and the three processes start at once (each process waits in its own thread).
        await asyncio.gather(
            gateway_ready(),
            *(
                services.enter_async_context(
                    service_running_off_loop(name, env, port, logs / f"{name}.log")
                )
                for name, port in ports.items()
            ),
        )
        publisher = await services.enter_async_context(kafka_producer(kafka, linger_ms=0))
        await publisher.publish(INSTRUMENTS, _rules(symbol), key=symbol)
        gateway = Gateway(url, client, publisher, symbol, stack.mail_dir)
        assert str(client.make_url("")).rstrip("/") == url
        await _until_the_portfolio_trades(gateway)
        yield gateway


async def _until_the_portfolio_trades(gateway: Gateway) -> None:
    """A probe user's market buy fills once the portfolio holds the rules and a fresh tick."""
    probe = await signup(gateway.client)
    order = {"symbol": gateway.symbol, "side": "buy", "quantity": "0.01"}

    async def bought() -> bool:
        await gateway.tick(gateway.symbol, "100")
        resp = await gateway.client.post(
            "/api/v1/portfolio/trades", json=order, headers=probe["headers"]
        )
        return resp.status == 201

    await wait_until(bought, 30, "the portfolio filling a market order", interval_s=0.2)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    """A page of a fresh context, the errors its console reported, and its screenshots."""

    page: Page
    name: str
    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    """Parts of console errors the test provokes (the browser logs every 404 a fetch gets)."""

    async def shot(self, step: str) -> None:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTEFACTS / f"{self.name}-{step}.png"), full_page=True)


async def open_tab(
    browser: Browser, request: pytest.FixtureRequest, width: int = 1440, height: int = 900
) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    page = await context.new_page()
    tab = Tab(page, request.node.name.removeprefix("test_"))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    try:
        yield tab
    finally:
        await context.close()
    # A script error or a blocked resource (CSP) is a failure of the page, whatever it showed.
    assert [e for e in tab.errors if not any(part in e for part in tab.expected)] == []


@pytest.fixture
async def tab(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Tab]:
    async for opened in open_tab(browser, request):
        yield opened


@pytest.fixture
async def narrow_tab(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Tab]:
    async for opened in open_tab(browser, request, width=390, height=844):
        yield opened
