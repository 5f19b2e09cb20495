"""Redis as a dependency the gateway can live without.

:class:`RedisGuard` runs each Redis call; when one fails it remembers Redis as down for a short
cool-down, so a dead Redis costs one failed call per cool-down instead of a timeout per request,
and callers get their fallback value.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)
T = TypeVar("T")

REDIS_FAILURES = Counter("tickwatch_gateway_redis_failures_total", "Redis calls that failed")


class RedisGuard:
    def __init__(self, client: Redis, prefix: str, cooldown_s: float = 2.0) -> None:
        self.client = client
        self.prefix = prefix
        self.cooldown_s = cooldown_s
        self._down_until = 0.0

    @property
    def up(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self, error: BaseException) -> None:
        if self.up:
            log.warning("redis_unavailable", error=str(error)[:200], cooldown_s=self.cooldown_s)
        REDIS_FAILURES.inc()
        self._down_until = time.monotonic() + self.cooldown_s

    async def call(self, fn: Callable[[Redis], Awaitable[T]], default: T) -> T:
        if not self.up:
            return default
        try:
            return await fn(self.client)
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return default
