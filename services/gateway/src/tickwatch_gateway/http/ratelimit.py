"""Rate limits per API key, per user and per client IP, counted atomically in Redis.

Two budgets, two ways of counting:

- ``auth`` (login, register, refresh; per client IP) is checked exactly on every request with
  the ``limits`` library (atomic INCR with expiry in Redis), because it guards against password
  guessing and those requests are rare.
- ``default`` (everything else) sits on the hot path of every market request, where ``limits``
  would cost two Redis round trips per request (INCR, then the window's TTL for the headers):
  measured, that was most of the time a cached price answer takes. So the default budget uses
  epoch-aligned fixed windows whose count lives in Redis (``INCRBY``, atomic across replicas),
  with each replica adding its local hits in one pipelined flush every ``FLUSH_S`` and learning
  the global count back. The first hit of an identity in a window asks Redis synchronously, so
  a replica starts from the true count; afterwards a replica can over-admit by at most what
  other replicas admitted since its last flush (50 ms). The reset time is known locally because
  windows are aligned, so no TTL query is needed.

When Redis is down both budgets fall back to counting in process: each replica still limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from prometheus_client import Counter
from redis.asyncio import Redis
from tickwatch_common.cancellation import raise_if_cancelling

from tickwatch_gateway.runtime.redis_guard import RedisGuard

log = structlog.get_logger(__name__)
RATE_LIMITED = Counter("tickwatch_gateway_rate_limited_total", "Requests answered 429", ["budget"])
FLUSH_S = 0.05


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        self.apply(headers)
        return headers

    def apply(self, headers: MutableMapping[str, str]) -> None:
        headers["RateLimit-Limit"] = str(self.limit)
        headers["RateLimit-Remaining"] = str(self.remaining)
        headers["RateLimit-Reset"] = str(self.reset_s)
        if not self.allowed:
            headers["Retry-After"] = str(max(self.reset_s, 1))


class _Window:
    __slots__ = ("known", "pending", "start")

    def __init__(self, start: int, known: int) -> None:
        self.start = start
        self.known = known  # the global count as of the last word from Redis
        self.pending = 0  # local hits not yet added to Redis


class FixedWindows:
    """The default budget: aligned fixed windows, counted locally and flushed to Redis."""

    def __init__(self, guard: RedisGuard, item: RateLimitItem) -> None:
        self.guard = guard
        self.limit = item.amount
        self.window_s = item.get_expiry()
        self.windows: dict[str, _Window] = {}
        # Set by a hit that left something to flush: an idle gateway does not wake 20 times a
        # second for nothing (issue 9's idle budget).
        self._hits = asyncio.Event()

    def _key(self, identity: str, start: int) -> str:
        return f"{self.guard.prefix}rl:default:{identity}:{start}"

    def hit_known(self, identity: str) -> Decision | None:
        """Count a hit without I/O when this window's count is already known here; else None."""
        now = time.time()
        window = self.windows.get(identity)
        if window is None or now >= window.start + self.window_s:
            return None
        window.pending += 1
        self._hits.set()
        used = window.known + window.pending
        return Decision(
            used <= self.limit,
            self.limit,
            max(0, self.limit - used),
            max(0, math.ceil(window.start + self.window_s - now)),
        )

    async def hit(self, identity: str) -> Decision:
        now = time.time()
        start = int(now // self.window_s) * self.window_s
        window = self.windows.get(identity)
        if window is None or window.start != start:
            window = self.windows[identity] = _Window(start, 0)

            async def incr(r: Redis) -> int:
                async with r.pipeline(transaction=True) as pipe:
                    pipe.incrby(self._key(identity, start), 1)
                    pipe.expire(self._key(identity, start), self.window_s * 2)
                    count, _ = await pipe.execute()
                return int(count)

            count = await self.guard.call(incr, -1)
            if count >= 0:
                window.known = count
            else:
                window.pending += 1
        else:
            window.pending += 1
        self._hits.set()
        used = window.known + window.pending
        return Decision(
            used <= self.limit,
            self.limit,
            max(0, self.limit - used),
            max(0, math.ceil(start + self.window_s - now)),
        )

    async def flush(self) -> None:
        now_start = int(time.time() // self.window_s) * self.window_s
        for identity in [i for i, w in self.windows.items() if w.start < now_start]:
            del self.windows[identity]  # past windows: nothing left to decide
        batch = [(i, w, w.pending) for i, w in self.windows.items() if w.pending]
        if not batch:
            return

        async def incr_all(r: Redis) -> list[int] | None:
            async with r.pipeline(transaction=False) as pipe:
                for identity, window, pending in batch:
                    pipe.incrby(self._key(identity, window.start), pending)
                    pipe.expire(self._key(identity, window.start), self.window_s * 2)
                results = await pipe.execute()
            return [int(c) for c in results[0::2]]

        counts = await self.guard.call(incr_all, None)
        if counts is None:
            return  # Redis is down: the pending hits keep counting locally
        for (_, window, pending), count in zip(batch, counts, strict=True):
            window.pending -= pending
            window.known = count

    async def run(self) -> None:
        while True:
            raise_if_cancelling()  # a cancelled flush can return normally (redis-py, 3.11)
            await self._hits.wait()
            await asyncio.sleep(FLUSH_S)  # the hits of the next 50 ms go in the same flush
            self._hits.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("rate_limit_flush_failed")
            if any(w.pending for w in self.windows.values()):
                self._hits.set()  # Redis away: try again in FLUSH_S


class RateLimiter:
    def __init__(
        self, redis_url: str, guard: RedisGuard, default: str, auth: str, timeout_s: float
    ) -> None:
        self.guard = guard
        self.default = FixedWindows(guard, parse(default))
        self.auth_item = parse(auth)
        self.redis: Storage = RedisStorage(
            "async+" + redis_url,
            implementation="redispy",
            key_prefix=guard.prefix + "ratelimit",
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.memory: Storage = MemoryStorage()

    def hit_known(self, budget: str, identity: str) -> Decision | None:
        """The hot path: a default-budget decision made in memory, or None to call :meth:`hit`."""
        if budget != "default":
            return None
        decision = self.default.hit_known(identity)
        if decision is not None and not decision.allowed:
            RATE_LIMITED.labels(budget).inc()
        return decision

    async def hit(self, budget: str, identity: str) -> Decision:
        if budget == "default":
            decision = await self.default.hit(identity)
        else:
            decision = await self._exact(self.auth_item, budget, identity)
        if not decision.allowed:
            RATE_LIMITED.labels(budget).inc()
        return decision

    async def _exact(self, item: RateLimitItem, budget: str, identity: str) -> Decision:
        key = item.key_for(budget, identity)
        storage = self.redis if self.guard.up else self.memory
        try:
            count = await storage.incr(key, item.get_expiry())
            reset_at = await storage.get_expiry(key)
        except Exception as exc:  # the storage wraps redis errors in its own types
            self.guard.mark_down(exc)
            count = await self.memory.incr(key, item.get_expiry())
            reset_at = await self.memory.get_expiry(key)
        return Decision(
            count <= item.amount,
            item.amount,
            max(0, item.amount - count),
            max(0, math.ceil(reset_at - time.time())),
        )

    async def run(self) -> None:
        await self.default.run()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.default.flush()
