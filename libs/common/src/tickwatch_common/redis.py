"""Redis client as an async context manager. Connects lazily: nothing happens until first use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from tickwatch_common.settings import RedisSettings


@asynccontextmanager
async def redis_client(settings: RedisSettings) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=15,
        decode_responses=False,
    )
    try:
        yield client
    finally:
        await client.aclose()
