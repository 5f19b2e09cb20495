"""``GET /alerts`` answers, cached per user under a version that every change of theirs bumps.

The truth of the version is a Redis counter (``alerts-version:<user>``, bumped by every write and
by a trigger recorded), and the answers live in Redis for ``ALERTS_LIST_CACHE_TTL_S`` under
``(user, version, page)``; without Redis they are simply not cached. Two copies in process save
the round trips of a cached read:

- answers, by ``(user, version, page)``: an answer under a version never changes, so a copy is
  good until its TTL, whatever the feed does (bounded to ``LOCAL_ANSWERS`` entries);
- versions, only while the change feed (:mod:`tickwatch_gateway.runtime.change_feed`) is live
  and was since the copy was reset: every bump is published in the pipeline that makes it, and
  each replica drops the user's copied version when it hears it. A version read from Redis is
  copied only if no bump was heard while the read was in flight (a bump heard before its answer
  could otherwise be undone by it). This replica's own bumps drop the copy at once, so a user
  reads their own writes here at once, and elsewhere as soon as the message arrives.
"""

from __future__ import annotations

import time
from typing import cast

from redis.asyncio import Redis

from tickwatch_gateway.runtime.change_feed import ChangeFeed, Listener
from tickwatch_gateway.runtime.redis_guard import RedisGuard

LOCAL_ANSWERS = 10_000
LOCAL_VERSIONS = 100_000


class AlertListCache:
    def __init__(self, guard: RedisGuard, ttl_s: int, feed: ChangeFeed | None = None) -> None:
        self.guard = guard
        self.ttl_s = ttl_s
        self.feed = feed
        self._answers: dict[tuple[str, int, str], tuple[float, bytes]] = {}
        self._versions: dict[str, int] = {}
        self._bumps_heard = 0
        self._copy_generation = -1
        if feed is not None:
            feed.listen(Listener("alerts", self._heard, self._reset))

    @staticmethod
    def page_key(page: int, per_page: int, status: str | None, symbol: str | None) -> str:
        """One cached answer per page of the list, filter and canonical symbol."""
        return f"{page}:{per_page}:{status}:{symbol}"

    def _version_key(self, user_id: str) -> str:
        return f"{self.guard.prefix}alerts-version:{user_id}"

    def _key(self, user_id: str, version: int, query: str) -> str:
        return f"{self.guard.prefix}cache:alerts:{user_id}:v{version}:{query}"

    def _copy_usable(self) -> bool:
        feed = self.feed
        return feed is not None and self._copy_generation == feed.generation and feed.live

    async def version(self, user_id: str) -> int | None:
        """The user's list version, or ``None`` when Redis cannot be asked (skip the cache)."""
        if self._copy_usable():
            copied = self._versions.get(user_id)
            if copied is not None:
                return copied
        heard, generation = self._bumps_heard, self._copy_generation

        async def get(r: Redis) -> int | None:
            raw = await r.get(self._version_key(user_id))
            return int(raw) if raw is not None else 0

        version = await self.guard.call(get, None)
        if (
            version is not None
            and self._copy_usable()
            and heard == self._bumps_heard
            and generation == self._copy_generation
        ):
            if len(self._versions) >= LOCAL_VERSIONS:
                self._versions.clear()
            self._versions[user_id] = version
        return version

    async def get(self, user_id: str, version: int, query: str) -> bytes | None:
        key = (user_id, version, query)
        copied = self._answers.get(key)
        if copied is not None and copied[0] > time.monotonic():
            return copied[1]

        async def get(r: Redis) -> bytes | None:
            return cast(bytes | None, await r.get(self._key(user_id, version, query)))

        body = await self.guard.call(get, None)
        if body is not None:
            self._copy(key, body)
        return body

    async def set(self, user_id: str, version: int, query: str, body: bytes) -> None:
        self._copy((user_id, version, query), body)

        async def setex(r: Redis) -> None:
            await r.set(self._key(user_id, version, query), body, ex=self.ttl_s)

        await self.guard.call(setex, None)

    async def invalidate(self, user_id: str) -> None:
        """Every cached list of the user is unreachable from now on (they expire on their own)."""
        self._heard(user_id)

        async def bump(r: Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                pipe.incr(self._version_key(user_id))
                if self.feed is not None:
                    pipe.publish(*self.feed.message("alerts", user_id))
                await pipe.execute()

        await self.guard.call(bump, None)

    def _copy(self, key: tuple[str, int, str], body: bytes) -> None:
        answers = self._answers
        if len(answers) >= LOCAL_ANSWERS:
            del answers[next(iter(answers))]  # the oldest
        answers[key] = (time.monotonic() + self.ttl_s, body)

    def _heard(self, user_id: str) -> None:
        self._bumps_heard += 1
        self._versions.pop(user_id, None)

    def _reset(self) -> None:
        """A new subscription: bumps may have been missed, so forget every copied version."""
        assert self.feed is not None
        self._versions.clear()
        self._bumps_heard += 1
        self._copy_generation = self.feed.generation
