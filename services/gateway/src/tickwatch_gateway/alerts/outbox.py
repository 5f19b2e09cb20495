"""The outbox relay: publishes alert changes written by :mod:`alerts_store` to ``alerts.changes.v1``.

One round locks a batch of unsent rows with ``FOR UPDATE SKIP LOCKED``, publishes them (the
state keyed by alert id, in the partition of its symbol; a tombstone for a delete), waits for
the broker's acknowledgement and marks them sent, all in one transaction. Several replicas can
run it at once: a row locked by one is skipped by the others, and a crash before the commit
leaves the row to be published again (at least once; the engine ignores versions it has seen).
Only the oldest unsent row of each alert is eligible, so one alert's changes reach the topic in
version order even with several relays (a compacted topic keeps the last one it receives).

The relay wakes on ``NOTIFY alert_outbox`` from the writing transaction, and polls as well in
case a notification is lost (a reconnect, another process writing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter
from tickwatch_common.backoff import Backoff
from tickwatch_common.cancellation import raise_if_cancelling
from tickwatch_common.events import AlertState
from tickwatch_common.kafka import Publisher
from tickwatch_common.topics import ALERT_CHANGES

from tickwatch_gateway.alerts.store import OUTBOX_CHANNEL

log = structlog.get_logger(__name__)

OUTBOX_PUBLISHED = Counter(
    "tickwatch_gateway_outbox_published_total", "Alert changes relayed to alerts.changes.v1"
)
OUTBOX_FAILURES = Counter(
    "tickwatch_gateway_outbox_failures_total", "Relay rounds that failed and will be retried"
)

_CLAIM = """
SELECT o.id, o.alert_id, o.symbol, o.version, o.payload
FROM alert_outbox o
WHERE o.sent_at IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM alert_outbox p
    WHERE p.alert_id = o.alert_id AND p.sent_at IS NULL AND p.id < o.id)
ORDER BY o.id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        batch_size: int = 200,
        poll_interval_s: float = 1.0,
        keep_sent_s: int = 24 * 3600,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.keep_sent_s = keep_sent_s
        self.on_failure = on_failure
        """Told of each failed round: the topic's log may have been replaced (changes_log)."""
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows it sent."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self.batch_size)
            if not rows:
                return 0
            futures = []
            for row in rows:
                event = (
                    AlertState.model_validate_json(row["payload"])
                    if row["payload"] is not None
                    else None
                )
                futures.append(
                    await self.publisher.send(
                        ALERT_CHANGES,
                        event,
                        key=str(row["alert_id"]),
                        partition_key=row["symbol"],
                    )
                )
            await asyncio.gather(*futures)
            await conn.execute(
                "UPDATE alert_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
        OUTBOX_PUBLISHED.inc(len(rows))
        return len(rows)

    async def drain(self) -> int:
        """Relay until nothing is pending (tests and shutdown use it)."""
        total = 0
        while sent := await self.relay_once():
            total += sent
        return total

    async def purge_sent(self) -> None:
        await self.pool.execute(
            "DELETE FROM alert_outbox WHERE sent_at < now() - make_interval(secs => $1)",
            float(self.keep_sent_s),
        )

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled; failures are logged and retried with backoff."""
        backoff = Backoff(initial_s=0.2, cap_s=10.0)
        listener: asyncpg.pool.PoolConnectionProxy | None = None
        last_purge = 0.0
        try:
            while True:
                raise_if_cancelling()  # one swallowed by a client library on the way
                try:
                    if listener is None or listener.is_closed():
                        listener = await self._listen()
                        self.listening.set()
                    self._wake.clear()
                    sent = await self.relay_once()
                    if time.monotonic() - last_purge > 600:
                        await self.purge_sent()
                        last_purge = time.monotonic()
                    backoff.reset()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    OUTBOX_FAILURES.inc()
                    if self.on_failure is not None:
                        self.on_failure()
                    delay = backoff.next_delay()
                    log.warning("outbox_relay_failed", error=str(exc)[:300], retry_in_s=delay)
                    self.listening.clear()
                    await self._unlisten(listener)
                    listener = None
                    await asyncio.sleep(delay)
                    continue
                if sent < self.batch_size:
                    # Not asyncio.wait_for: on Python 3.11 it returns the wake-up and drops a
                    # cancellation that lands in the same loop iteration as a NOTIFY, and the
                    # relay then polled on while the app's shutdown waited for it (the rare
                    # hang in the gateway's cleanup).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_interval_s):
                            await self._wake.wait()
        finally:
            await self._unlisten(listener)

    async def _listen(self) -> asyncpg.pool.PoolConnectionProxy:
        conn = await self.pool.acquire()
        try:
            await conn.add_listener(OUTBOX_CHANNEL, self._notified)
        except BaseException:
            await self.pool.release(conn)
            raise
        return conn

    async def _unlisten(self, conn: asyncpg.pool.PoolConnectionProxy | None) -> None:
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.remove_listener(OUTBOX_CHANNEL, self._notified)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)
