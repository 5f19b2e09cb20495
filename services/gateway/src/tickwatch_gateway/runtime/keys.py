"""The typed keys of what every feature runs on: the readiness checks, background tasks, the
PostgreSQL pool, Redis and the Kafka publisher (opened by :mod:`.resources`)."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web
from tickwatch_common.kafka import Publisher
from tickwatch_common.ops import Check

from tickwatch_gateway.runtime.change_feed import ChangeFeed
from tickwatch_gateway.runtime.redis_guard import RedisGuard
from tickwatch_gateway.runtime.settings import RuntimeSettings

RUNTIME_SETTINGS = web.AppKey("runtime_settings", RuntimeSettings)
# The readiness checks: resources started later (the publisher, consumer groups) add theirs,
# and /ready reads the list at each request.
CHECKS = web.AppKey("readiness_checks", list[Check])
TASKS = web.AppKey("tasks", list[asyncio.Task[None]])
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", RedisGuard)
PUBLISHER = web.AppKey("publisher", Publisher)
FEED = web.AppKey("change_feed", ChangeFeed)
