"""History and indicator answers cached in Redis under keys that carry a per-symbol version,
bumped when candles of that symbol are stored, so a new candle invalidates every cached answer
about it. Without Redis (:class:`RedisGuard` reports it down) every call computes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import cast

from prometheus_client import Counter
from redis.asyncio import Redis

from tickwatch_gateway.runtime.redis_guard import RedisGuard

CACHE_LOOKUPS = Counter("tickwatch_gateway_cache_lookups_total", "Response cache", ["result"])


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

    async def versions(self, symbols: Sequence[str]) -> list[int] | None:
        """:meth:`version` of each symbol, in one round trip."""

        async def mget(r: Redis) -> list[int]:
            raws = await r.mget([self._version_key(s) for s in symbols])
            return [int(raw) if raw is not None else 0 for raw in raws]

        return await self.guard.call(mget, None) if symbols else []

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
        self,
        kind: str,
        symbol: str | Sequence[str],
        query: str,
        compute: Callable[[], Awaitable[bytes]],
    ) -> bytes:
        """The cached answer for ``query`` at the current candle version of the symbol (or of
        each of several, for an answer about them all), or the computed one (stored for next
        time). A new candle bumps the version, so stale answers are never read; without Redis
        every call computes."""
        symbols = [symbol] if isinstance(symbol, str) else list(symbol)
        versions = await self.versions(symbols)
        key = f"{kind}:{','.join(symbols)}:{query}:v{'.'.join(map(str, versions or ()))}"
        body = await self.get(key) if versions is not None else None
        if body is None:
            body = await compute()
            if versions is not None:
                await self.set(key, body)
        return body
