"""``make seed`` (issue 13 item 3) against running processes: the gateway and the portfolio
service on the session's servers, the session's mail catcher as the webhook catcher, ticks and
instruments of the replay symbols published as the replay ingestor would (the ingestor itself
is not started: its replay would move the session's shared prices under other tests).

The seed runs as ``python -m tickwatch_devstack seed`` twice: the first run creates the demo
users, an alert of every condition (a webhook one among them) and the portfolios' deposits,
fills and resting limit order; the second changes nothing (the same alerts, orders, trades and
cash) and says "already seeded" for each item. Before the first run, the demo user is
registered and its deposit posted under the seed's key, as a seed that crashed right after it
would have left them: the first run deposits nothing more. Without a gateway it fails in one
line.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import INSTRUMENTS, TICKS
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.seed import DEMO_USERS, DemoUser, Deposit, step_keys, symbols
from tickwatch_devstack.testing import (
    ApiClient,
    log_tail,
    replay_tick,
    service_running_off_loop,
    wait_until,
)
from tickwatch_ingestor.replay import load_instrument_rules, replay_instruments

pytestmark = pytest.mark.e2e

PRICES = {
    "BTC-USDT": "86419.61",
    "ETH-USDT": "2874.51",
    "SOL-USDT": "137.41",
    "BNB-USDT": "845.07",
    "XRP-USDT": "2.0506",
}
CONDITIONS = {"above", "below", "crosses_up", "crosses_down", "pct_change"}


async def seed(base: str, webhook_url: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickwatch_devstack",
        "seed",
        "--url",
        base,
        "--webhook-url",
        webhook_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def state_of(http: aiohttp.ClientSession, base: str, user: DemoUser) -> dict[str, Any]:
    """What a user owns, as the API shows it: alerts, orders, trades, cash."""
    api = ApiClient(http, base)
    creds = {"email": user.email, "password": user.password}
    api.token = (await api.call("POST", "/auth/login", creds))["access_token"]
    alerts = (await api.call("GET", "/alerts?per_page=100"))["items"]
    orders = (await api.call("GET", "/portfolio/orders?per_page=200"))["items"]
    trades = (await api.call("GET", "/portfolio/trades?per_page=200"))["items"]
    portfolio = await api.call("GET", "/portfolio")
    return {
        "alerts": sorted(
            (a["id"], a["condition"], a["target_price"], a["note"], a["created_at"]) for a in alerts
        ),
        "alert_bodies": alerts,
        "orders": sorted((o["id"], o["status"], o["updated_at"]) for o in orders),
        "trades": sorted(t["id"] for t in trades),
        "trade_bodies": trades,
        "cash": portfolio["cash"],
        "reserved": portfolio["reserved"],
    }


async def test_seed_twice_creates_once_every_condition(
    stack: Stack, stack_env: dict[str, str], fresh_database: str, tmp_path: Path
) -> None:
    assert stack.mail_http_url is not None, "the session's mail catcher is the webhook catcher"
    tag = uuid.uuid4().hex[:8]
    ports = {"gateway": free_port(), "portfolio": free_port()}
    env = {
        **stack_env,
        "DATABASE_URL": fresh_database,
        "JWT_SECRET": secrets.token_urlsafe(48),  # random: the services refuse a placeholder
        "INTERNAL_API_SECRET": secrets.token_urlsafe(48),
        "PORTFOLIO_URL": f"http://127.0.0.1:{ports['portfolio']}",
        "REDIS_PREFIX": f"e2e-{tag}:",
        "GATEWAY_HOST": "127.0.0.1",
        "RATE_LIMIT_DEFAULT": "1000000/minute",
        "RATE_LIMIT_AUTH": "1000/minute",
        "ALERTS_ALLOW_PRIVATE_WEBHOOKS": "true",  # as `make run` on loopback: the catcher
        "ALERTS_CONSUMER_GROUP": f"gateway-alerts-{tag}",
        "CANDLE_CONSUMER_GROUP": f"gateway-candles-{tag}",
        "SYMBOLS": ",".join(PRICES),
    }
    logs = {name: tmp_path / f"{name}.log" for name in ports}

    def diagnostics() -> str:
        return "\n".join(f"--- {name}.log\n{log_tail(path)}" for name, path in logs.items())

    assert set(symbols(DEMO_USERS)) <= set(PRICES)
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    base = f"http://127.0.0.1:{ports['gateway']}"
    webhook_url = f"{stack.mail_http_url}webhooks/seed-{tag}"
    async with contextlib.AsyncExitStack() as services:
        await asyncio.gather(
            *(
                services.enter_async_context(service_running_off_loop(n, env, p, logs[n]))
                for n, p in ports.items()
            )
        )
        http = await services.enter_async_context(aiohttp.ClientSession())
        publisher = await services.enter_async_context(kafka_producer(settings, linger_ms=0))
        rules = load_instrument_rules()
        for instrument in replay_instruments(rules, PRICES):
            await publisher.publish(INSTRUMENTS, instrument, key=instrument.symbol)
        await publish_ticks(publisher)

        async def priced() -> bool:
            async with http.get(f"{base}/api/v1/prices?symbols={','.join(PRICES)}") as resp:
                return len((await resp.json())["items"]) == len(PRICES)

        await wait_until(priced, 30, "the gateway to serve every seeded symbol's price")

        demo_user = DEMO_USERS[0]
        deposit = next(step for step in demo_user.portfolio if isinstance(step, Deposit))
        crashed = ApiClient(http, base)  # what a seed that died after the deposit left
        creds = {"email": demo_user.email, "password": demo_user.password}
        await crashed.call("POST", "/auth/register", creds, expect=201)
        crashed.token = (await crashed.call("POST", "/auth/login", creds))["access_token"]
        async with http.post(
            f"{base}/api/v1/portfolio/deposits",
            json={"amount": deposit.amount},
            headers={
                "Authorization": f"Bearer {crashed.token}",
                "Idempotency-Key": step_keys(demo_user, deposit)[0],
            },
        ) as resp:
            assert resp.status == 201, await resp.text()

        code, first, err = await seed(base, webhook_url)
        assert code == 0, f"{first}\n{err}\n{diagnostics()}"
        before = {u.email: await state_of(http, base, u) for u in DEMO_USERS}

        await publish_ticks(publisher)  # still fresh for the second run
        code, second, err = await seed(base, webhook_url)
        assert code == 0, f"{second}\n{err}\n{diagnostics()}"
        after = {u.email: await state_of(http, base, u) for u in DEMO_USERS}

    assert after == before, f"the second run changed something:\n{second}"
    for forbidden in ("registered", "created", "deposited", "filled at", "open at"):
        assert forbidden not in second, second
    items = sum(len(u.alerts) + len(u.portfolio) + 1 for u in DEMO_USERS)
    assert second.count("already seeded") == items, second
    assert f"user {demo_user.email}: already seeded" in first, first
    assert f"deposit {deposit.amount} USDT: already seeded" in first, first
    assert "registered" in first and "created" in first and "filled at" in first, first
    for user in DEMO_USERS:
        assert user.email in first and user.password in first  # the credentials, printed

    demo = before[DEMO_USERS[0].email]
    alerts = demo["alert_bodies"]
    assert {a["condition"] for a in alerts} == CONDITIONS
    assert {a["frequency"] for a in alerts} == {"once", "recurring"}
    assert any(a["expires_at"] for a in alerts) and all(a["note"] for a in alerts)
    assert all(a["cooldown_seconds"] > 0 for a in alerts if a["frequency"] == "recurring")
    [hooked] = [a for a in alerts if "webhook" in a["channels"]]
    assert hooked["webhook_url"] == webhook_url
    above = next(a for a in alerts if a["condition"] == "above" and not a["expires_at"])
    assert Decimal(above["target_price"]) > Decimal(PRICES[above["symbol"]])  # near the price
    assert Decimal(above["target_price"]) < Decimal(PRICES[above["symbol"]]) * Decimal("1.01")
    statuses = sorted(status for _, status, _ in demo["orders"])
    assert statuses.count("open") == 1 and statuses.count("filled") == 4, demo["orders"]
    assert len(demo["trades"]) == 4
    # The deposit once: the starting cash and one deposit, less the fills and the reserve.
    moved = sum(
        (
            -(Decimal(t["quantity"]) * Decimal(t["price"]) + Decimal(t["fee"]))
            if t["side"] == "buy"
            else Decimal(t["quantity"]) * Decimal(t["price"]) - Decimal(t["fee"])
            for t in demo["trade_bodies"]
        ),
        Decimal(0),
    )
    expected = Decimal("10000") + Decimal(deposit.amount) + moved - Decimal(demo["reserved"])
    assert Decimal(demo["cash"]) == expected, (demo["cash"], expected)


async def publish_ticks(publisher: Publisher) -> None:
    now = int(time.time() * 1000)
    for symbol, price in PRICES.items():
        await publisher.publish(TICKS, replay_tick(symbol, price, now), key=symbol)


async def test_the_webhook_catcher_keeps_a_call_and_the_seed_fails_in_one_line(
    stack: Stack,
) -> None:
    """The catcher behind the demo webhook alert records what reaches it; and without a
    running gateway the seed exits 1 with one line saying so."""
    assert stack.mail_http_url is not None
    name = f"probe-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        headers = {"X-Tickwatch-Signature": "sha256=00", "X-Other": "dropped"}
        url = f"{stack.mail_http_url}webhooks/{name}"
        async with http.post(url, data=b'{"alert_id": "a"}', headers=headers) as resp:
            assert resp.status == 200
        async with http.get(f"{stack.mail_http_url}api/webhooks") as resp:
            [call] = [c for c in await resp.json() if c["name"] == name]
        async with http.get(f"{stack.mail_http_url}webhooks") as resp:
            assert name in await resp.text()
    assert call["body"] == '{"alert_id": "a"}'
    assert call["headers"]["X-Tickwatch-Signature"] == "sha256=00"
    assert "X-Other" not in call["headers"]

    code, out, err = await seed(f"http://127.0.0.1:{free_port()}", url)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "make run" in err, err
