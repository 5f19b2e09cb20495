"""Rate limits in Redis with their headers, and a gateway that outlives its Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from tickwatch_common.events import Tick
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import TICKS
from tickwatch_devstack.infra import Stack, free_port

from .conftest import MakeClient, signup


@pytest.fixture(autouse=True)
async def _a_window_with_time_left() -> None:
    """The budgets are epoch-aligned fixed windows: a test whose hits straddle a window's end
    sees its count start over (a minute window did). Hourly budgets, and a test never
    begins in an hour's last 15 s."""
    left_s = 3600 - time.time() % 3600
    if left_s < 15:
        await asyncio.sleep(left_s + 0.1)  # until the next hour begins


async def test_rate_limit_headers_and_429_with_retry_after(make_client: MakeClient) -> None:
    client = await make_client(rate_limit_default="3/hour")
    for remaining in (2, 1, 0):
        resp = await client.get("/api/v1/markets")
        assert resp.status == 200
        assert resp.headers["RateLimit-Limit"] == "3"
        assert resp.headers["RateLimit-Remaining"] == str(remaining)
        assert 0 < int(resp.headers["RateLimit-Reset"]) <= 3600
    resp = await client.get("/api/v1/markets")
    assert resp.status == 429
    assert resp.content_type == "application/problem+json"
    assert 1 <= int(resp.headers["Retry-After"]) <= 3600
    # Ops routes are not limited.
    assert (await client.get("/health")).status == 200


async def test_login_has_a_stricter_budget_per_ip(make_client: MakeClient) -> None:
    client = await make_client(rate_limit_auth="2/hour")
    body = {"email": "guess@example.com", "password": "password-guess"}
    statuses = [(await client.post("/api/v1/auth/login", json=body)).status for _ in range(3)]
    assert statuses == [401, 401, 429]
    # Other routes keep their own budget.
    assert (await client.get("/api/v1/markets")).status == 200


async def test_users_are_limited_separately_from_anonymous_callers(make_client: MakeClient) -> None:
    client = await make_client(rate_limit_default="2/hour")
    user = await signup(client)
    for _ in range(2):
        await client.get("/api/v1/markets")
    assert (await client.get("/api/v1/markets")).status == 429
    resp = await client.get("/api/v1/markets", headers=user["headers"])
    assert resp.status == 200
    assert resp.headers["RateLimit-Remaining"] == "1"


async def test_without_redis_prices_are_served_ready_is_degraded_and_no_500(
    stack: Stack, make_client: MakeClient
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = await make_client(redis_url=dead, rate_limit_default="100/minute")
    deadline = time.monotonic() + 30
    while (ready := await client.get("/ready")).status != 200:  # the feed positions itself
        assert time.monotonic() < deadline, await ready.text()
        await asyncio.sleep(0.05)
    body = await ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["ok"] is False

    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    now = int(time.time() * 1000)
    async with kafka_producer(settings) as publisher:
        await publisher.publish(
            TICKS,
            Tick(
                symbol="BTC-USDT",
                base="BTC",
                quote="USDT",
                source="replay",
                price="70123.45",
                ts_event=now + 10_000_000,
                ts_ingest=now,
            ),
            key="BTC-USDT",
        )
    deadline = time.monotonic() + 30
    while True:
        resp = await client.get("/api/v1/prices/BTC-USDT")
        assert resp.status < 500
        if resp.status == 200 and (await resp.json())["price"] == "70123.45":
            break
        assert time.monotonic() < deadline, "price never served without Redis"
        await asyncio.sleep(0.05)
    # Limits still apply (in process), history falls back to PostgreSQL, auth still works.
    assert "RateLimit-Remaining" in resp.headers
    history = await client.get("/api/v1/prices/BTC-USDT/history")
    assert history.status == 200
    user = await signup(client)
    assert (await client.get("/api/v1/auth/me", headers=user["headers"])).status == 200


async def test_replicas_share_one_budget_through_redis(
    stack: Stack, make_client: MakeClient
) -> None:
    prefix = f"shared-{time.time_ns()}:"
    one = await make_client(rate_limit_default="4/hour", redis_prefix=prefix)
    two = await make_client(rate_limit_default="4/hour", redis_prefix=prefix)
    for _ in range(4):
        assert (await one.get("/api/v1/markets")).status == 200
    redis = Redis.from_url(stack.redis_url)
    try:
        deadline = time.monotonic() + 10
        while True:  # replica one flushes its hits within its flush interval
            keys = await redis.keys(f"{prefix}rl:default:*")
            if keys and int(await redis.get(keys[0]) or 0) >= 4:
                break
            assert time.monotonic() < deadline, "replica one never flushed its count"
            await asyncio.sleep(0.02)
    finally:
        await redis.aclose()
    resp = await two.get("/api/v1/markets")
    assert resp.status == 429
    assert resp.headers["RateLimit-Remaining"] == "0"
