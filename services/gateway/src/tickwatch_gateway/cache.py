"""Redis as a cache the gateway can live without.

:class:`RedisGuard` runs each Redis call; when one fails it remembers Redis as down for a short
cool-down, so a dead Redis costs one failed call per cool-down instead of a timeout per request,
and callers get their fallback value. The latest prices are written through to a hash; history
and indicator answers are cached under keys that carry a per-symbol version, bumped when
candles of that symbol are stored, so a new candle invalidates every cached answer about it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar, cast

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tickwatch_common.events import Tick

from tickwatch_gateway.pricebook import PriceView

log = structlog.get_logger(__name__)
T = TypeVar("T")

REDIS_FAILURES = Counter("tickwatch_gateway_redis_failures_total", "Redis calls that failed")
CACHE_LOOKUPS = Counter("tickwatch_gateway_cache_lookups_total", "Response cache", ["result"])


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


class LatestPrices:
    """The write-through copy of the price book in Redis (one hash, ``symbol|source`` fields)."""

    def __init__(self, guard: RedisGuard) -> None:
        self.guard = guard
        self.key = guard.prefix + "prices"

    async def write(self, views: Iterable[PriceView]) -> bool:
        mapping = {f"{v.tick.symbol}|{v.tick.source}": v.tick.to_bytes() for v in views}
        if not mapping:
            return True

        async def hset(r: Redis) -> bool:
            await r.hset(self.key, mapping=mapping)  # type: ignore[arg-type]
            return True

        return await self.guard.call(hset, False)

    async def load(self) -> list[Tick]:
        async def hgetall(r: Redis) -> dict[bytes, bytes]:
            return cast(dict[bytes, bytes], await r.hgetall(self.key))

        empty: dict[bytes, bytes] = {}
        ticks = []
        for raw in (await self.guard.call(hgetall, empty)).values():
            try:
                ticks.append(Tick.model_validate_json(raw))
            except ValueError:
                continue
        return ticks


class ResponseCache:
    """Short-TTL answers keyed by the query and the symbol's candle version."""

    def __init__(self, guard: RedisGuard, ttl_s: int) -> None:
        self.guard = guard
        self.ttl_s = ttl_s

    def _version_key(self, symbol: str) -> str:
        return f"{self.guard.prefix}candles-version:{symbol}"

    async def version(self, symbol: str) -> int | None:
        """The symbol's candle version, or ``None`` when Redis cannot be asked (skip the cache)."""

        async def get(r: Redis) -> int | None:
            raw = await r.get(self._version_key(symbol))
            return int(raw) if raw is not None else 0

        return await self.guard.call(get, None)

    async def bump(self, symbols: Iterable[str]) -> None:
        async def incr(r: Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for symbol in symbols:
                    pipe.incr(self._version_key(symbol))
                await pipe.execute()

        await self.guard.call(incr, None)

    async def get(self, key: str) -> bytes | None:
        async def get(r: Redis) -> bytes | None:
            return cast(bytes | None, await r.get(self.guard.prefix + "cache:" + key))

        found = await self.guard.call(get, None)
        CACHE_LOOKUPS.labels("hit" if found is not None else "miss").inc()
        return found

    async def set(self, key: str, value: bytes) -> None:
        async def setex(r: Redis) -> None:
            await r.set(self.guard.prefix + "cache:" + key, value, ex=self.ttl_s)

        await self.guard.call(setex, None)

    async def read_through(
        self, kind: str, symbol: str, query: str, compute: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """The cached answer for ``query`` at the symbol's current candle version, or the
        computed one (stored for next time). A new candle bumps the version, so stale answers
        are never read; without Redis every call computes."""
        version = await self.version(symbol)
        key = f"{kind}:{symbol}:{query}:v{version}"
        body = await self.get(key) if version is not None else None
        if body is None:
            body = await compute()
            if version is not None:
                await self.set(key, body)
        return body
