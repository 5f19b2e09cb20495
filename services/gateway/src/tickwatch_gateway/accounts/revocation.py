"""Revoked logins: the access tokens of a login stop working the moment the login is revoked.

**What is revoked.** Every access token carries ``sid``, the id of the login it belongs to (its
refresh-token family). Logout revokes the caller's own login and the one its refresh token names
(without one, every login of the user), and a reused refresh token revokes its family; the
deny-list records those login ids, not token ids (``jti``) nor a per-user "issued before"
watermark. One entry covers every access token the login was ever given (those of earlier
refreshes stay live for up to ``ACCESS_TOKEN_TTL_S``); reuse detection has no token id to record
at all (the access tokens a thief got from the stolen refresh token are unknown, their login is
not); and a watermark would end the user's other logins too, and with ``iat`` in whole seconds
also a login made in the same second. Tokens issued before ``sid`` existed have none and simply
expire.

**Where it lives.** PostgreSQL holds the truth, written by the same statement that revokes the
refresh tokens (``refresh_tokens.revoked_at`` of the family), so nothing revoked is forgotten.
Redis holds a copy for the hot path: ``revoked-login:<sid>`` with a TTL of the access-token
lifetime (no token of the login can outlive it), read with one MGET per request that carries a
bearer token; requests without one never ask. A copy can miss entries, so this replica trusts
Redis's "not revoked" only while it knows the copy complete: a marker key, set after the copy was
filled from PostgreSQL, must be present (Redis restarted or flushed: it is gone), and this
replica must not have failed to read or write Redis since its last fill. Otherwise it asks
PostgreSQL (one indexed query per request) and refills the copy (the families revoked within one
token lifetime) as soon as Redis answers again. A Redis outage thus costs a query per
authenticated request, never a revoked token accepted; with PostgreSQL down as well the check
fails closed (503). Revocations made here are also kept in process until they expire.

**In process, when the change feed is live.** Each revocation is also published on the
replicas' change feed (:mod:`tickwatch_gateway.runtime.change_feed`) in the pipeline that
writes it, and every replica adds it to its own copy; when a feed subscription opens, the copy
is rebuilt from PostgreSQL (the families revoked within one token lifetime). While the feed is
live and the copy was rebuilt for its current subscription, "not in the copy" is the answer and
a request pays no Redis round trip; otherwise the Redis path above is taken. A revocation reaches
another replica as fast as Redis relays the message (well under a millisecond here), the same
order as a request racing the logout itself; a replica that has heard nothing on the feed for
``STALE_S`` (0.5 s: its heartbeat is every 0.1 s) stops trusting its copy, which bounds how long
a revoked token can still pass elsewhere when the feed is stuck or the replica is far behind.

One gap remains, and it is narrow: a replica that revokes while Redis is down and dies before
Redis is back leaves the entry missing for replicas that saw no Redis failure themselves, until
the next fill (a Redis restart) or the token's expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Collection
from typing import cast

import asyncpg
import structlog
from redis.asyncio import Redis

from tickwatch_gateway.runtime.change_feed import ChangeFeed, Listener
from tickwatch_gateway.runtime.redis_guard import RedisGuard

log = structlog.get_logger(__name__)

REFILL_RETRY_S = 2.0
LOCAL_PRUNE_AT = 10_000

_FAMILY_REVOKED = (
    "SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NOT NULL)"
)
_RECENTLY_REVOKED = (
    "SELECT DISTINCT family_id FROM refresh_tokens"
    " WHERE revoked_at > now() - make_interval(secs => $1)"
)


class RevocationUnknown(Exception):
    """Neither Redis (trusted) nor PostgreSQL could say whether the login is revoked."""


class LoginRevocations:
    def __init__(
        self, guard: RedisGuard, pool: asyncpg.Pool, ttl_s: int, feed: ChangeFeed | None = None
    ) -> None:
        self.guard = guard
        self.pool = pool
        self.ttl_s = ttl_s  # the access tokens' lifetime plus the verification leeway
        self.marker = f"{guard.prefix}revoked-login:complete"
        self.feed = feed
        self._here: dict[str, float] = {}  # login id -> monotonic time its entry expires
        self._copy_generation = -1  # the feed subscription the copy in _here is complete for
        self._rebuild: asyncio.Task[None] | None = None
        if feed is not None:
            feed.listen(Listener("revoked", self._heard, self._rebuild_copy))
        self._trusted = False  # the Redis copy is known complete (first check fills it)
        self._next_fill = 0.0
        self._fill_lock = asyncio.Lock()
        self.on_revoke: Callable[[], None] = lambda: None  # the session watch checks at once

    def _key(self, sid: str) -> str:
        return f"{self.guard.prefix}revoked-login:{sid}"

    async def revoke(self, sids: Collection[str]) -> None:
        """Record logins revoked in PostgreSQL (call after that commit)."""
        if not sids:
            return
        expires = time.monotonic() + self.ttl_s
        for sid in sids:
            self._here[sid] = expires
        self._prune()
        self.on_revoke()

        async def setex(r: Redis) -> bool:
            async with r.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.set(self._key(sid), b"1", ex=self.ttl_s)
                    if self.feed is not None:
                        pipe.publish(*self.feed.message("revoked", sid))
                await pipe.execute()
            return True

        if not await self.guard.call(setex, False):
            self._trusted = False  # the copy lacks these until the next fill

    async def is_revoked(self, sid: str) -> bool:
        """Raises :class:`RevocationUnknown` when nothing can answer (fail closed)."""
        expires = self._here.get(sid)
        if expires is not None and expires > time.monotonic():
            return True
        feed = self.feed
        if feed is not None and self._copy_generation == feed.generation and feed.live:
            return False
        if self._trusted:

            async def mget(r: Redis) -> list[bytes | None]:
                return cast(list[bytes | None], await r.mget([self.marker, self._key(sid)]))

            found = await self.guard.call(mget, None)
            if found is not None and found[0] is not None:
                return found[1] is not None
            log.warning("revocations_untrusted", reason="redis down" if found is None else "lost")
            self._trusted = False
        revoked = await self._ask_postgres(sid)
        await self._refill()
        return revoked

    async def _ask_postgres(self, sid: str) -> bool:
        try:
            family = uuid.UUID(sid)
        except ValueError:
            return True  # not a login id this gateway issued
        try:
            return bool(await self.pool.fetchval(_FAMILY_REVOKED, family))
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            raise RevocationUnknown(str(exc)) from exc

    async def _refill(self) -> None:
        """Copy the logins revoked within one token lifetime into Redis, then mark the copy
        complete; after a failed attempt, the next waits ``REFILL_RETRY_S``."""
        if self._fill_lock.locked() or time.monotonic() < self._next_fill or not self.guard.up:
            return
        async with self._fill_lock:
            try:
                rows = await self.pool.fetch(_RECENTLY_REVOKED, float(self.ttl_s))
            except (asyncpg.PostgresError, OSError, TimeoutError):
                rows = None
            sids = [str(r["family_id"]) for r in rows or ()]

            async def fill(r: Redis) -> bool:
                async with r.pipeline(transaction=False) as pipe:
                    for sid in sids:
                        pipe.set(self._key(sid), b"1", ex=self.ttl_s)
                    pipe.set(self.marker, b"1")
                    await pipe.execute()
                return True

            if rows is not None and await self.guard.call(fill, False):
                self._trusted = True
                log.info("revocations_refilled", logins=len(sids))
            else:
                self._next_fill = time.monotonic() + REFILL_RETRY_S

    def _heard(self, sid: str) -> None:
        """Another replica (or this one) revoked ``sid``."""
        self._here[sid] = time.monotonic() + self.ttl_s
        self._prune()
        self.on_revoke()

    def _rebuild_copy(self) -> None:
        assert self.feed is not None
        if self._rebuild is not None:
            self._rebuild.cancel()
        self._rebuild = asyncio.create_task(self._load(self.feed.generation), name="revocations")

    async def _load(self, generation: int) -> None:
        """Fill the copy from PostgreSQL for one subscription; retried until it succeeds or the
        subscription is replaced (each attempt bounded by the pool's command timeout)."""
        delay = 0.2
        while self.feed is not None and self.feed.generation == generation:
            try:
                rows = await self.pool.fetch(_RECENTLY_REVOKED, float(self.ttl_s))
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                log.warning("revocations_copy_failed", error=str(exc)[:200], retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            expires = time.monotonic() + self.ttl_s
            for row in rows:
                self._here[str(row["family_id"])] = expires
            self._prune()
            self._copy_generation = generation
            log.info("revocations_copied", logins=len(rows), generation=generation)
            return

    async def close(self) -> None:
        if self._rebuild is not None:
            self._rebuild.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rebuild

    def _prune(self) -> None:
        if len(self._here) > LOCAL_PRUNE_AT:
            now = time.monotonic()
            self._here = {sid: t for sid, t in self._here.items() if t > now}
