"""What changed elsewhere, heard at once: one Redis pub/sub channel shared by every replica.

A feature that keeps a copy of shared state in process (revoked logins, the versions of users'
alert lists) publishes each change on :data:`CHANNEL` together with the write that makes it,
and every replica's :class:`ChangeFeed` hands the change to the feature's listener. The copy is
only as good as the feed, so the feed says when it can be trusted:

- :attr:`ChangeFeed.live` is true only while the subscription is open and something (at least
  the feed's own heartbeat, published every ``HEARTBEAT_S``) was heard within ``STALE_S``. A
  dropped or silently stalled connection, or an event loop too busy to read it, therefore stops
  the copies being used within ``STALE_S``; callers then ask Redis (or PostgreSQL) per request
  as they would without a feed. A heartbeat unanswered for ``RESUBSCRIBE_S`` resubscribes.
- :attr:`ChangeFeed.generation` grows at each new subscription. Changes published while no
  subscription was open are lost to this replica, so a listener's ``on_live`` rebuilds its copy
  for the new generation (after the subscription is open: nothing falls in between) and a copy
  is used only once it was rebuilt for the current generation.

A change is a short text ``<kind> <value>``, e.g. ``revoked 1b4e…`` or ``alerts <user id>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

CHANNEL = "changes"
HEARTBEAT_S = 0.1
STALE_S = 0.5
"""Heard nothing for this long: the copies are not used (the feed may be behind)."""
RESUBSCRIBE_S = 3.0
"""A heartbeat unanswered for this long: the subscription is replaced."""
RETRY_MAX_S = 5.0


@dataclass(frozen=True)
class Listener:
    """A feature's copy: ``on_change(value)`` for each change of its ``kind``, ``on_live()``
    when a new subscription opens (rebuild for :attr:`ChangeFeed.generation`)."""

    kind: str
    on_change: Callable[[str], None]
    on_live: Callable[[], None]


class ChangeFeed:
    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.channel = f"{prefix}{CHANNEL}"
        self.generation = 0
        self._listeners: dict[str, Listener] = {}
        self._subscribed = False
        self._last_heard = 0.0
        self._beat = f"beat {uuid.uuid4().hex}"

    @property
    def live(self) -> bool:
        return self._subscribed and time.monotonic() - self._last_heard < STALE_S

    def listen(self, listener: Listener) -> None:
        """From now on; a listener added while subscribed rebuilds its copy at once."""
        self._listeners[listener.kind] = listener
        if self._subscribed:
            listener.on_live()

    def message(self, kind: str, value: str) -> tuple[str, str]:
        """The channel and payload to ``PUBLISH`` (in the pipeline of the write itself)."""
        return self.channel, f"{kind} {value}"

    async def run(self) -> None:
        """Subscribe, hand out changes, resubscribe after a failure (backoff up to
        ``RETRY_MAX_S``); until cancelled."""
        delay = 0.2
        while True:
            try:
                async with self._subscription() as pubsub:
                    delay = 0.2
                    await self._pump(pubsub)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("change_feed_lost", error=str(exc)[:200], retry_s=delay)
            finally:
                self._subscribed = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    @contextlib.asynccontextmanager
    async def _subscription(self) -> AsyncIterator[PubSub]:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await asyncio.wait_for(pubsub.subscribe(self.channel), RESUBSCRIBE_S)
            self.generation += 1
            self._subscribed = True
            self._last_heard = time.monotonic()
            for listener in self._listeners.values():
                listener.on_live()
            yield pubsub
        finally:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]

    async def _pump(self, pubsub: PubSub) -> None:
        next_beat = 0.0
        unanswered: float | None = None  # when the oldest beat not yet heard back was sent
        while True:
            now = time.monotonic()
            if unanswered is not None and now - unanswered >= RESUBSCRIBE_S:
                raise TimeoutError(f"a heartbeat unanswered for {now - unanswered:.1f}s")
            if now >= next_beat:
                await asyncio.wait_for(self.client.publish(self.channel, self._beat), RESUBSCRIBE_S)
                unanswered = now if unanswered is None else unanswered
                next_beat = now + HEARTBEAT_S
            message = await pubsub.get_message(timeout=HEARTBEAT_S)
            if message is None or message.get("type") != "message":
                continue
            self._last_heard = time.monotonic()
            data = message["data"]
            text = data.decode() if isinstance(data, bytes) else str(data)
            if text == self._beat:
                unanswered = None
                continue
            kind, _, value = text.partition(" ")
            listener = self._listeners.get(kind)
            if listener is not None:
                listener.on_change(value)
