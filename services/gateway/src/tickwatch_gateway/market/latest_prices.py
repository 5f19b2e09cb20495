"""The write-through copy of the price book in Redis, which a starting replica warms up from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from redis.asyncio import Redis
from tickwatch_common.events import Tick

from tickwatch_gateway.market.pricebook import PriceView
from tickwatch_gateway.runtime.redis_guard import RedisGuard


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
