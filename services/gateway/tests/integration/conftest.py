"""The gateway app against the real servers: one fresh database and Redis prefix per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tickwatch_devstack.infra import Stack
from tickwatch_gateway.app import build_app
from tickwatch_gateway.settings import Settings

JWT_SECRET = "jk5z08c0xw-NbRmlYbPAHic28bzoHxpcYC7FRjLcL3AfxsZM"
CLOSE_BOUND_S = 20

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def gateway_settings(stack: Stack, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": stack.kafka_bootstrap_servers,
        "database_url": database_url,
        "redis_url": stack.redis_url,
        "jwt_secret": JWT_SECRET,
        "redis_prefix": f"t-{uuid.uuid4().hex[:10]}:",
        "rate_limit_auth": "1000/minute",
        "rate_limit_default": "10000/minute",
        "symbols": "BTC-USDT,ETH-USDT",
        "candle_consumer_group": f"t-candles-{uuid.uuid4().hex[:10]}",
        "alerts_consumer_group": f"t-alerts-{uuid.uuid4().hex[:10]}",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def make_client(stack: Stack, fresh_database: str) -> AsyncIterator[MakeClient]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        settings = gateway_settings(stack, fresh_database, **overrides)
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    # The app bounds each stop of its cleanup (SHUTDOWN_TIMEOUT_S), so a close that overruns
    # this is a regression: it fails the test instead of stalling the suite.
    closing = [asyncio.create_task(client.close()) for client in clients]
    if closing:
        _, overran = await asyncio.wait(closing, timeout=CLOSE_BOUND_S)
        for task in overran:
            task.cancel()
        if overran:
            pytest.fail(f"gateway app cleanup did not finish within {CLOSE_BOUND_S} s")
        for task in closing:
            task.result()


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client()


async def signup(client: TestClient[Any, Any], email: str | None = None) -> dict[str, Any]:
    """Register and log in a user; returns the login answer plus ``email`` and ``headers``."""
    email = email or f"u{uuid.uuid4().hex[:8]}@example.com"
    resp = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": "s3cret-pass"}
    )
    assert resp.status == 201, await resp.text()
    resp = await client.post("/api/v1/auth/login", json={"email": email, "password": "s3cret-pass"})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return {**body, "email": email, "headers": {"Authorization": f"Bearer {body['access_token']}"}}
