"""The gateway app against the real servers: one fresh database and Redis prefix per test."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tickwatch_devstack.infra import Stack
from tickwatch_gateway.app import build_app
from tickwatch_gateway.settings import Settings

JWT_SECRET = "integration-secret-0123456789-abcdefghij"

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
    for client in clients:
        # Bounded: a gateway shutdown that hangs (seen rarely, cause open) must fail loudly
        # here instead of stalling the whole suite.
        try:
            await asyncio.wait_for(client.close(), 30)
        except TimeoutError:
            warnings.warn("gateway app cleanup did not finish within 30 s", stacklevel=1)


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
