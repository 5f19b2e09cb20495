"""Helpers the alert tests share: a client per test with its own consumer group, bodies, waits."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient

from .conftest import MakeClient

Client = TestClient[Any, Any]
T = TypeVar("T")


async def alerts_client(make_client: MakeClient, **overrides: Any) -> Client:
    values: dict[str, Any] = {
        "alerts_consumer_group": f"t-alerts-{uuid.uuid4().hex[:10]}",
        "outbox_poll_interval_s": 0.2,
    }
    values.update(overrides)
    return await make_client(**values)


def above(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": "BTC-USDT",
        "condition": "above",
        "target_price": "70000",
        "channels": ["email"],
        "note": "take profit",
    }
    body.update(changes)
    return body


async def create(client: Client, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/alerts", json=above(**changes), headers=headers)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 20
) -> T:
    """Poll ``probe`` until it answers something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s")
        await asyncio.sleep(0.05)
