"""What every feature runs on, one cleanup context per resource (aiohttp runs them in the order
:func:`install_runtime` appends them, and closes them in reverse), each adding its readiness
check. Every stop on the way out is bounded by ``SHUTDOWN_TIMEOUT_S`` (:mod:`.shutdown`); each
feature stops its own background tasks in its own context, before these close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from tickwatch_common.checks import kafka_check, postgres_check, publishing_check, redis_check
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.ops import Check, CheckResult
from tickwatch_common.postgres import migrate, postgres_pool
from tickwatch_common.redis import redis_client
from tickwatch_common.topics import Topic

from tickwatch_gateway.runtime.change_feed import ChangeFeed
from tickwatch_gateway.runtime.keys import (
    CHECKS,
    FEED,
    POOL,
    PUBLISHER,
    REDIS,
    RUNTIME_SETTINGS,
    TASKS,
)
from tickwatch_gateway.runtime.redis_guard import RedisGuard
from tickwatch_gateway.runtime.settings import RuntimeSettings
from tickwatch_gateway.runtime.shutdown import bounded_exit

SCHEMA = "gateway"
MIGRATIONS = Path(__file__).parent.parent / "migrations"


def install_runtime(app: web.Application, settings: RuntimeSettings, produced: list[Topic]) -> None:
    """The shared resources and ``/ready``'s list; ``produced`` are the topics the publisher
    sends to (features' own, and the topics their consumer groups dead-letter from)."""
    app[RUNTIME_SETTINGS] = settings
    app[CHECKS] = [Check("tasks", _tasks_alive(app))]
    app[TASKS] = []

    async def postgres(app: web.Application) -> AsyncIterator[None]:
        await migrate(settings.database_url, SCHEMA, MIGRATIONS)
        pool_cm = postgres_pool(settings, SCHEMA)
        async with bounded_exit("postgres pool", pool_cm, settings.shutdown_timeout_s) as pool:
            app[POOL] = pool
            app[CHECKS].append(postgres_check(pool))
            yield

    async def redis(app: web.Application) -> AsyncIterator[None]:
        client_cm = redis_client(settings)
        async with bounded_exit("redis", client_cm, settings.shutdown_timeout_s) as client:
            app[REDIS] = RedisGuard(client, settings.redis_prefix)
            # The gateway serves prices without Redis (the guard falls back), so not critical.
            app[CHECKS].append(redis_check(client, critical=False))
            feed = app[FEED] = ChangeFeed(client, settings.redis_prefix)
            task = asyncio.create_task(feed.run(), name="change-feed")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def publisher(app: web.Application) -> AsyncIterator[None]:
        async with kafka_producer(settings, topics=produced) as publisher:
            app[PUBLISHER] = publisher
            app[CHECKS].extend(
                [kafka_check(publisher.producer), publishing_check(publisher.outcomes)]
            )
            yield

    app.cleanup_ctx.extend([postgres, redis, publisher])


def _tasks_alive(app: web.Application) -> Callable[[], Awaitable[CheckResult]]:
    """Fails once a feature's background task (a consumer, the relay) has stopped."""

    async def probe() -> CheckResult:
        for task in app[TASKS]:
            if task.done():
                return CheckResult(False, f"{task.get_name()} stopped")
        return CheckResult(True)

    return probe
