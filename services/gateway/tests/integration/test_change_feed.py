"""The replicas' change feed: revoked logins and alert-list versions copied in process, so a
cached authenticated read costs no Redis round trip, yet every change made on one replica is
honoured on another, and a lost feed falls back to asking Redis."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from tickwatch_devstack.infra import Stack
from tickwatch_devstack.testing import wait_until
from tickwatch_gateway.runtime.keys import FEED

from .conftest import MakeClient, signup
from .test_revocation import login, logout, me_status

Client = TestClient[Any, Any]


async def calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def live(client: Client) -> None:
    feed = client.server.app[FEED]
    await wait_until(lambda: feed.live, 10, "the change feed is live")


async def two_replicas(make_client: MakeClient) -> tuple[Client, Client]:
    """Two gateways sharing Redis (one prefix) and PostgreSQL, their change feeds live."""
    prefix = f"t-feed-{time.time_ns()}:"
    one = await make_client(redis_prefix=prefix)
    two = await make_client(redis_prefix=prefix)
    await live(one)
    await live(two)
    return one, two


async def test_a_logout_elsewhere_is_honoured_without_a_round_trip_per_request(
    stack: Stack, make_client: MakeClient
) -> None:
    one, two = await two_replicas(make_client)
    user = await signup(one)
    other = await login(one, user["email"])
    redis = Redis.from_url(stack.redis_url)
    try:
        await wait_until(lambda: two.server.app[FEED].generation >= 1, 10, "replica two subscribed")
        assert await me_status(two, user) == 200
        before = await calls(redis, "mget")
        for _ in range(5):
            assert await me_status(two, user) == 200
        assert await calls(redis, "mget") == before  # answered from the copy

        await logout(one, user)

        async def refused() -> bool:
            return await me_status(two, user) == 401

        await wait_until(refused, 5, "replica two refuses the token logged out on one")
        assert await me_status(two, other) == 200

        # The feed's connection is killed: replica two asks Redis again until it resubscribes
        # (and rebuilds its copy from PostgreSQL), never forgetting the revocation.
        generation = two.server.app[FEED].generation
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert await me_status(two, user) == 401
        await wait_until(
            lambda: two.server.app[FEED].generation > generation and two.server.app[FEED].live,
            15,
            "replica two resubscribed",
        )
        assert await me_status(two, user) == 401
        assert await me_status(two, other) == 200
    finally:
        await redis.aclose()


async def test_an_alert_written_on_one_replica_shows_in_the_cached_list_of_another(
    stack: Stack, make_client: MakeClient
) -> None:
    one, two = await two_replicas(make_client)
    user = await signup(one)
    headers = user["headers"]
    body = {"symbol": "BTC-USDT", "condition": "above", "target_price": "70000"}
    assert (await one.post("/api/v1/alerts", json=body, headers=headers)).status == 201

    async def total(client: Client) -> int:
        resp = await client.get("/api/v1/alerts", headers=headers)
        assert resp.status == 200
        return int((await resp.json())["total"])

    assert await total(two) == 1
    redis = Redis.from_url(stack.redis_url)
    try:
        before = await calls(redis, "get")
        for _ in range(5):
            assert await total(two) == 1
        assert await calls(redis, "get") == before  # version and answer from the copies
    finally:
        await redis.aclose()

    assert (await one.post("/api/v1/alerts", json=body, headers=headers)).status == 201

    async def two_alerts() -> bool:
        return await total(two) == 2

    await wait_until(two_alerts, 5, "replica two lists the alert created on one")
    assert await total(one) == 2  # and the writer reads its own write at once
