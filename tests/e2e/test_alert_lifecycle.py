"""An alert's whole life, as a client sees it (issue 5's done-when), on real processes.

The gateway, the alert engine and the notifier run as processes against the session's real
servers; the test talks to them only as a client would: register and log in, read the live
price, create an ``above`` alert that emails and a ``crosses_down`` alert that calls a signed
webhook (a receiver on loopback), let ticks cross both, and read each alert and its history.
Each fires once: one email (to the user, naming the symbol and the price), one webhook whose
signature verifies with the secret answered at creation, ``triggered`` with ``trigger_count``
1, and one event whose delivery is ``sent``. Ticks past the targets afterwards send nothing
more: a third alert that fires on a later tick of the same symbol (same partition, so the
engine has seen every earlier tick) bounds the wait for a stray second notification.

Ticks are published to ``market.ticks.v1`` as the ingestor would (there is no public route to
set a price); the only other peek behind the API is the engine's ``alert_engine_alerts`` gauge,
to publish a crossing only once the engine holds the alert (a client would simply wait for the
market). Run with ``-s`` to see the measured latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import TICKS
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.testing import (
    ApiClient,
    log_tail,
    replay_tick,
    service_running_off_loop,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")
EMAIL_BUDGET_S = 5.0  # "within a blink" is far less; this only bounds a broken pipeline
WEBHOOK_BUDGET_S = 5.0


# ---------------------------------------------------------------- helpers


async def until(
    probe: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    timeout_s: float,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
    interval_s: float = 0.005,
) -> T:
    """Poll ``probe`` until it answers something truthy, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}\n" + diagnostics()
            )
        await asyncio.sleep(interval_s)


def mails_to(mail_dir: Path, address: str) -> list[tuple[Path, EmailMessage]]:
    """Every caught message addressed to ``address`` (the .eml appears whole, by a rename)."""
    found = []
    for path in sorted(mail_dir.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address in str(msg.get("To", "")):
            found.append((path, msg))  # type: ignore[arg-type]
    return found


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records every POST and answers 200."""

    calls: list[Hook] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append(Hook(dict(request.headers), body, time.perf_counter()))
        return web.Response(text="ok")


class Ticks:
    """Ticks of one symbol on ``market.ticks.v1``, as the ingestor publishes them."""

    def __init__(self, publisher: Publisher, symbol: str) -> None:
        self.publisher, self.symbol = publisher, symbol

    async def tick(self, price: str) -> tuple[float, float]:
        """Publish and wait for the broker's acknowledgement; answers when the publish began,
        as ``(time.time(), time.perf_counter())``."""
        wall, mono = time.time(), time.perf_counter()
        tick = replay_tick(self.symbol, price, int(wall * 1000))
        await self.publisher.publish(TICKS, tick, key=self.symbol)
        return wall, mono


def alerts_indexed(metrics: str) -> float:
    match = re.search(r"^alert_engine_alerts (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def verify_signature(secret: str, hook: Hook) -> bool:
    timestamp = hook.headers["X-Tickwatch-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + hook.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", hook.headers["X-Tickwatch-Signature"])


# ---------------------------------------------------------------- the test


async def test_alert_lifecycle_email_and_signed_webhook_fire_once_with_history(
    stack: Stack, stack_env: dict[str, str], fresh_database: str, tmp_path: Path
) -> None:
    started = time.perf_counter()
    assert stack.mail_dir is not None
    mail_dir = stack.mail_dir
    tag = uuid.uuid4().hex[:8]
    symbol = f"L{tag[:6].upper()}-USDT"  # unique: other tests share the broker
    user_email = f"lifecycle-{tag}@example.com"
    env = {
        **stack_env,
        "DATABASE_URL": fresh_database,
        # gateway
        "JWT_SECRET": secrets.token_urlsafe(48),
        "REDIS_PREFIX": f"e2e-{tag}:",
        "GATEWAY_HOST": "127.0.0.1",
        "RATE_LIMIT_DEFAULT": "1000000/minute",
        "RATE_LIMIT_AUTH": "1000/minute",
        "ALERTS_ALLOW_PRIVATE_WEBHOOKS": "true",  # the receiver is on loopback
        "ALERTS_CONSUMER_GROUP": f"gateway-alerts-{tag}",
        "CANDLE_CONSUMER_GROUP": f"gateway-candles-{tag}",
        "SYMBOLS": f"BTC-USDT,{symbol}",
        # alert engine
        "ALERT_ENGINE_GROUP": f"alert-engine-{tag}",
        # notifier
        "NOTIFIER_GROUP": f"notifier-{tag}",
        "NOTIFIER_ALLOW_PRIVATE_WEBHOOKS": "true",  # the webhook receiver listens on loopback
        "NOTIFIER_OFFSET_RESET": "latest",  # not the triggers other tests left on the topic
        "PUBLIC_BASE_URL": "https://tickwatch.test",
        "MAIL_FROM": "Tickwatch <alerts@tickwatch.test>",
    }
    ports = {"gateway": free_port(), "alert-engine": free_port(), "notifier": free_port()}
    logs = {name: tmp_path / f"{name}.log" for name in ports}

    def diagnostics() -> str:
        return "\n".join(f"--- {name}.log\n{log_tail(path)}" for name, path in logs.items())

    receiver = Receiver()
    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver.handle)
    hook_runner = web.AppRunner(hook_app)
    await hook_runner.setup()
    hook_port = free_port()
    await web.TCPSite(hook_runner, "127.0.0.1", hook_port).start()
    hook_url = f"http://127.0.0.1:{hook_port}/hook"

    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    try:
        async with contextlib.AsyncExitStack() as services:
            await asyncio.gather(
                *(
                    services.enter_async_context(
                        service_running_off_loop(name, env, port, logs[name])
                    )
                    for name, port in ports.items()
                )
            )
            http = await services.enter_async_context(aiohttp.ClientSession())
            publisher = await services.enter_async_context(kafka_producer(settings, linger_ms=0))
            ready_s = time.perf_counter() - started
            api = ApiClient(http, f"http://127.0.0.1:{ports['gateway']}")
            ticks = Ticks(publisher, symbol)

            async def engine_alerts() -> float:
                url = f"http://127.0.0.1:{ports['alert-engine']}/metrics"
                async with http.get(url) as resp:
                    return alerts_indexed(await resp.text())

            indexed_before = await engine_alerts()
            assert indexed_before >= 0, "the engine exports alert_engine_alerts"

            async def engine_holds(n: int) -> None:
                await until(
                    lambda: _at_least(engine_alerts, indexed_before + n),
                    15,
                    f"the engine to hold {n} new alert(s)",
                    diagnostics,
                    interval_s=0.02,
                )

            # 1. An account: register, log in, who am I.
            await api.call(
                "POST",
                "/auth/register",
                {"email": user_email, "password": "correct horse battery", "name": "E2E"},
                expect=201,
            )
            login = await api.call(
                "POST", "/auth/login", {"email": user_email, "password": "correct horse battery"}
            )
            assert login["token_type"] == "bearer"
            api.token = login["access_token"]
            me = await api.call("GET", "/auth/me")
            assert me["email"] == user_email

            # 2. The market is live: the client sees the price.
            await ticks.tick("100.00")

            async def price_is(expected: str) -> bool:
                async with http.get(f"{api.base}/api/v1/prices/{symbol}") as resp:
                    return resp.status == 200 and (await resp.json())["price"] == expected

            await until(lambda: price_is("100.00"), 10, "the first price served", diagnostics)

            # 3. Two alerts: above 110 by email, crosses down 95 by a signed webhook.
            above = await api.call(
                "POST",
                "/alerts",
                {
                    "symbol": symbol.lower().replace("-", ""),  # any spelling of the symbol
                    "condition": "above",
                    "target_price": "110",
                    "note": "take profit",
                },
                expect=201,
            )
            assert above["symbol"] == symbol
            assert above["status"] == "active" and above["trigger_count"] == 0
            assert above["channels"] == ["email"] and above["frequency"] == "once"
            assert above.get("webhook_secret") is None
            down = await api.call(
                "POST",
                "/alerts",
                {
                    "symbol": symbol,
                    "condition": "crosses_down",
                    "target_price": "95",
                    "channels": ["webhook"],
                    "webhook_url": hook_url,
                },
                expect=201,
            )
            secret = down["webhook_secret"]
            assert secret, "the signing secret is answered on creation"
            again = await api.call("GET", f"/alerts/{down['id']}")
            assert "webhook_secret" not in again, "the secret is shown once"
            listed = await api.call("GET", f"/alerts?symbol={symbol}")
            assert listed["total"] == 2
            assert {a["id"] for a in listed["items"]} == {above["id"], down["id"]}
            await engine_holds(2)

            # 4. A tick past 110 fires the email alert: exactly one email, to the user.
            sent_wall, _ = await ticks.tick("111.50")
            [(path, mail)] = await until(
                lambda: mails_to(mail_dir, user_email), EMAIL_BUDGET_S, "the email", diagnostics
            )
            # The catcher names each file by time.time_ns() when it accepted the message.
            email_latency = int(path.name.split("-", 1)[0]) / 1e9 - sent_wall
            assert symbol in str(mail["Subject"]) and "110" in str(mail["Subject"])
            assert str(mail["To"]) == user_email
            text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            assert symbol in text and "111.5" in text and "take profit" in text
            assert f"https://tickwatch.test/alerts/{above['id']}" in text
            assert not receiver.calls, "the email alert calls no webhook"

            # 5. A tick from 111.50 down to 94.25 crosses 95: exactly one signed webhook.
            _, sent = await ticks.tick("94.25")
            [hook] = await until(
                lambda: receiver.calls, WEBHOOK_BUDGET_S, "the webhook", diagnostics
            )
            webhook_latency = hook.at - sent
            assert verify_signature(secret, hook), "the signature verifies with the secret"
            assert not verify_signature("whsec_wrong", hook)
            assert abs(int(hook.headers["X-Tickwatch-Timestamp"]) - time.time()) < 60
            payload = json.loads(hook.body)
            assert payload["alert_id"] == down["id"] and payload["symbol"] == symbol
            assert payload["condition"] == "crosses_down" and payload["sequence"] == 1
            assert payload["threshold"] == "95" and payload["price"] == "94.25"
            assert hook.headers["X-Tickwatch-Event-Id"] == payload["event_id"]
            assert len(mails_to(mail_dir, user_email)) == 1, "the webhook alert sends no email"

            # 6. History: each alert triggered once, its delivery sent.
            async def settled(alert_id: str) -> dict[str, Any] | None:
                events = await api.call("GET", f"/alerts/{alert_id}/events")
                items = events["items"]
                if items and all(d["status"] == "sent" for d in items[0]["deliveries"]):
                    return events  # type: ignore[no-any-return]
                return None

            for alert, channel, price, threshold in (
                (above, "email", "111.5", "110"),
                (down, "webhook", "94.25", "95"),
            ):
                events = await until(
                    lambda a=alert: settled(a["id"]),  # type: ignore[misc]
                    10,
                    f"the {channel} alert's delivery recorded as sent",
                    diagnostics,
                    interval_s=0.05,
                )
                assert events["total"] == 1
                [event] = events["items"]
                assert event["sequence"] == 1 and event["symbol"] == symbol
                assert event["threshold"] == threshold
                assert event["price"].rstrip("0").rstrip(".") == price.rstrip("0").rstrip(".")
                [delivery] = event["deliveries"]
                assert delivery["channel"] == channel and delivery["attempts"] == 1
                got = await api.call("GET", f"/alerts/{alert['id']}")
                assert got["status"] == "triggered", got
                assert got["trigger_count"] == 1 and got["triggered_at"] is not None
            triggered = await api.call("GET", "/alerts?status=triggered")
            assert triggered["total"] == 2

            # 7. Ticks past both targets again send nothing more. A third alert, firing on a
            # later tick of the same symbol, bounds the wait for a stray notification.
            sentinel = await api.call(
                "POST",
                "/alerts",
                {"symbol": symbol, "condition": "above", "target_price": "500", "note": "sentinel"},
                expect=201,
            )
            await engine_holds(3)
            for price in ("112", "93", "113", "92.5", "120", "90"):
                await ticks.tick(price)
            await ticks.tick("501")
            await until(
                lambda: any(
                    "sentinel" in m.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
                    for _, m in mails_to(mail_dir, user_email)
                ),
                EMAIL_BUDGET_S,
                "the sentinel's email",
                diagnostics,
            )
            await until(
                lambda: settled(sentinel["id"]),
                10,
                "the sentinel's history",
                diagnostics,
                interval_s=0.05,
            )
            mails = mails_to(mail_dir, user_email)
            assert len(mails) == 2, [str(m["Subject"]) for _, m in mails]
            assert len(receiver.calls) == 1, [c.body for c in receiver.calls]
            for alert in (above, down):
                got = await api.call("GET", f"/alerts/{alert['id']}")
                assert got["status"] == "triggered" and got["trigger_count"] == 1, got
                assert (await api.call("GET", f"/alerts/{alert['id']}/events"))["total"] == 1
    finally:
        await hook_runner.cleanup()

    print(
        f"\nalert lifecycle: services ready in {ready_s:.1f} s; "
        f"tick publish -> email accepted by the catcher {email_latency * 1000:.1f} ms; "
        f"tick publish -> webhook received {webhook_latency * 1000:.1f} ms; "
        f"email file {path.name}; whole test {time.perf_counter() - started:.1f} s"
    )


async def _at_least(probe: Callable[[], Awaitable[float]], n: float) -> bool:
    return await probe() >= n
