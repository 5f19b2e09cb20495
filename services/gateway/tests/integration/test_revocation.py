"""Access tokens die with their login: logout, reuse detection, other replicas, Redis outages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from tickwatch_devstack.infra import Stack, free_port, start_redis

from .conftest import MakeClient, signup

Client = TestClient[Any, Any]


async def login(client: Client, email: str) -> dict[str, Any]:
    """Another login of an existing user: its own refresh family and access token."""
    resp = await client.post("/api/v1/auth/login", json={"email": email, "password": "s3cret-pass"})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return {**body, "headers": {"Authorization": f"Bearer {body['access_token']}"}}


async def me_status(client: Client, session: dict[str, Any]) -> int:
    return (await client.get("/api/v1/auth/me", headers=session["headers"])).status


async def assert_revoked(client: Client, session: dict[str, Any]) -> None:
    resp = await client.get("/api/v1/auth/me", headers=session["headers"])
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    assert "revoked" in (await resp.json())["detail"]


async def logout(client: Client, session: dict[str, Any], *, everywhere: bool = False) -> None:
    body = None if everywhere else {"refresh_token": session["refresh_token"]}
    resp = await client.post("/api/v1/auth/logout", json=body, headers=session["headers"])
    assert resp.status == 204


async def test_logout_revokes_the_access_token_of_that_login_only(client: Client) -> None:
    phone = await signup(client)
    laptop = await login(client, phone["email"])
    await logout(client, phone)
    await assert_revoked(client, phone)
    # The user's other login goes on: its access token, and its refresh token.
    assert await me_status(client, laptop) == 200
    resp = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]}
    )
    assert resp.status == 200


async def test_logout_without_a_refresh_token_revokes_every_login(client: Client) -> None:
    phone = await signup(client)
    laptop = await login(client, phone["email"])
    await logout(client, phone, everywhere=True)
    await assert_revoked(client, phone)
    await assert_revoked(client, laptop)
    # Logging in again gives a working token.
    assert await me_status(client, await login(client, phone["email"])) == 200


async def test_a_reused_refresh_token_revokes_the_access_tokens_of_its_login(
    client: Client,
) -> None:
    victim = await signup(client)
    resp = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}
    )
    thief = {"headers": {"Authorization": f"Bearer {(await resp.json())['access_token']}"}}
    reused = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}
    )
    assert reused.status == 401
    await assert_revoked(client, thief)
    await assert_revoked(client, victim)


async def test_a_logout_on_one_replica_is_seen_by_another_even_after_redis_lost_it(
    stack: Stack, make_client: MakeClient
) -> None:
    prefix = f"t-shared-{time.time_ns()}:"
    one = await make_client(redis_prefix=prefix)
    two = await make_client(redis_prefix=prefix)
    user = await signup(one)
    assert await me_status(two, user) == 200
    await logout(one, user)
    await assert_revoked(two, user)

    redis = Redis.from_url(stack.redis_url)
    try:
        # Redis lost the entries: replica two still has its own copy (it heard the revocation on
        # the change feed), and a replica started now builds its copy from PostgreSQL.
        await redis.delete(*await redis.keys(f"{prefix}revoked-login:*"))
        await assert_revoked(two, user)
        three = await make_client(redis_prefix=prefix)
        await assert_revoked(three, user)
    finally:
        await redis.aclose()


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    """A Redis server of this test alone, so it can be stopped and started again."""
    port = free_port()
    servers = [start_redis(tmp_path / "redis", port)]

    def restart() -> None:
        servers[0].stop()
        servers[0] = start_redis(tmp_path / "redis", port)

    yield port, servers, restart
    servers[0].stop()


async def test_revoked_tokens_stay_revoked_through_a_redis_outage(
    make_client: MakeClient, own_redis: Any
) -> None:
    port, servers, restart = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    one = await make_client(redis_url=url, redis_timeout_s=0.5)
    two = await make_client(redis_url=url, redis_timeout_s=0.5)
    user, other = await signup(one), await signup(one)
    assert await me_status(two, user) == 200  # replica two now trusts the Redis copy

    redis = Redis.from_url(url)
    try:
        # Public routes without a token never ask whether anything is revoked.
        before = (await redis.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)
        for _ in range(3):
            assert (await one.get("/api/v1/markets")).status == 200
        after = (await redis.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)
        assert after == before
    finally:
        await redis.aclose()

    servers[0].stop()
    await logout(one, user)  # Redis is down: recorded in PostgreSQL (and in replica one)
    await assert_revoked(one, user)
    await assert_revoked(two, user)  # replica two asks PostgreSQL while Redis is away
    assert await me_status(two, other) == 200

    restart()  # back, and empty: the entry written during the outage never reached it
    await assert_revoked(two, user)
    await assert_revoked(one, user)
    assert await me_status(one, other) == 200
