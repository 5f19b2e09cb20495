"""Keeping ``alerts.changes.v1`` a full copy of the gateway's alert tables, the state of record.

The engine builds its index from that topic alone, so a topic that lacks alerts (recreated
empty, a cluster rebuilt, records lost between compactions) silently stops them from firing.

- :func:`read_latest_versions` reads the topic to its end without a group, bounded in time.
- :class:`Reconciler` compares it with the tables (the pure rule is
  :func:`~tickwatch_gateway.alerts_reconcile.plan_reconcile`) and queues on the outbox what the
  topic lacks, so the relay publishes it in order with the alerts' own changes. One replica at
  a time (an advisory lock); the others answer :class:`ReconcileBusy`.
- :class:`ChangesLogWatch` reconciles at start-up, and whenever the topic's log identity
  (cluster id, topic id) differs from the one recorded in ``changes_log`` after the last
  reconcile: checked every ``CHANGES_LOG_CHECK_INTERVAL_S`` and at once after a relay failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import asyncpg
import structlog
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from prometheus_client import Counter
from tickwatch_common.backoff import Backoff
from tickwatch_common.cancellation import raise_if_cancelling
from tickwatch_common.kafka import kafka_consumer
from tickwatch_common.log_identity import LogIdentity, read_log_identities
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERT_CHANGES

from tickwatch_gateway.alerts.reconcile import plan_reconcile
from tickwatch_gateway.alerts.store import AlertStore

log = structlog.get_logger(__name__)

RECONCILES = Counter(
    "tickwatch_gateway_reconciles_total",
    "Reconciles of alerts.changes.v1 with the alert tables, by cause and outcome",
    ["cause", "outcome"],
)
RECONCILE_QUEUED = Counter(
    "tickwatch_gateway_reconcile_queued_total",
    "Alert states and tombstones queued again on the outbox by reconciles",
    ["kind"],
)
LOG_REPLACED = Counter(
    "tickwatch_gateway_changes_log_replaced_total",
    "Times alerts.changes.v1 was found on another log than the one last reconciled",
)

# Any constant both replicas agree on: pg_try_advisory_lock(ADVISORY_KEY) serialises reconciles.
ADVISORY_KEY = 0x7477_6763  # "twgc"


class ReconcileBusy(Exception):
    """Another reconcile (this replica's or another's) is running; it covers this one."""


@dataclass(frozen=True)
class ReconcileReport:
    cause: str
    checked: int
    """Alerts the tables hold or record as deleted."""
    on_topic: int
    """Alert ids the topic holds a record of."""
    republished: int
    tombstoned: int
    unknown: int
    ahead: int
    seconds: float

    def as_json(self) -> dict[str, object]:
        return asdict(self)


async def read_latest_versions(settings: KafkaSettings, timeout_s: float) -> dict[str, int | None]:
    """The latest version per alert id on ``alerts.changes.v1``, ``None`` for a tombstone, read
    from each partition's first offset to the end it had when the read began. A record that is
    not an alert state counts as version 0 (older than any), so the tables' state replaces it.
    ``TimeoutError`` after ``timeout_s``."""
    latest: dict[str, int | None] = {}
    partitions = [TopicPartition(ALERT_CHANGES.name, p) for p in range(ALERT_CHANGES.partitions)]
    async with asyncio.timeout(timeout_s), kafka_consumer(settings, group=None) as consumer:
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > starts[tp]}
        for tp in remaining:
            consumer.seek(tp, starts[tp])
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.key is not None:
                        latest[record.key.decode(errors="replace")] = _version(record.value)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    return latest


def _version(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        version = json.loads(value)["version"]
    except (ValueError, KeyError, TypeError):
        return 0
    return version if isinstance(version, int) else 0


class Reconciler:
    def __init__(
        self, pool: asyncpg.Pool, store: AlertStore, settings: KafkaSettings, timeout_s: float
    ) -> None:
        self.pool = pool
        self.store = store
        self.settings = settings
        self.timeout_s = timeout_s

    async def run(self, cause: str) -> ReconcileReport:
        """Queue what the topic lacks; :class:`ReconcileBusy` when another reconcile runs."""
        started = time.monotonic()
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_KEY):
                RECONCILES.labels(cause, "busy").inc()
                raise ReconcileBusy("a reconcile of alerts.changes.v1 is running")
            try:
                report = await self._reconcile(cause, started)
            except BaseException:
                RECONCILES.labels(cause, "failed").inc()
                raise
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_KEY)
        RECONCILES.labels(cause, "done").inc()
        return report

    async def _reconcile(self, cause: str, started: float) -> ReconcileReport:
        # The topic first, then the tables: a change in between makes the plan send a state
        # the topic may already have (harmless: the engine ignores versions it has seen),
        # never skip one it lacks.
        topic = await read_latest_versions(self.settings, self.timeout_s)
        tables = await self.store.versions_of_record()
        plan = plan_reconcile(topic, tables)
        republished = await self.store.republish(plan.republish)
        tombstoned = await self.store.tombstone(plan.tombstone)
        RECONCILE_QUEUED.labels("state").inc(republished)
        RECONCILE_QUEUED.labels("tombstone").inc(tombstoned)
        report = ReconcileReport(
            cause=cause,
            checked=len(tables),
            on_topic=len(topic),
            republished=republished,
            tombstoned=tombstoned,
            unknown=len(plan.unknown),
            ahead=len(plan.ahead),
            seconds=round(time.monotonic() - started, 3),
        )
        if plan.ahead:
            log.warning(
                "changes_log_ahead_of_tables", alerts=plan.ahead[:20], count=len(plan.ahead)
            )
        log.info("changes_reconciled", **report.as_json())
        return report


class ChangesLogWatch:
    """Reconciles at start-up and whenever ``alerts.changes.v1`` is found on a new log."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        reconciler: Reconciler,
        kafka: Callable[[], AIOKafkaClient | str],
        *,
        interval_s: float = 15.0,
    ) -> None:
        self.pool = pool
        self.reconciler = reconciler
        self.kafka = kafka
        self.interval_s = interval_s
        self.started_up = asyncio.Event()
        """Set once the start-up reconcile has run (here or on another replica)."""
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Check soon (the relay failed to publish: the log may have gone)."""
        self._wake.set()

    async def check(self) -> ReconcileReport | None:
        """One look at the log; reconciles when it is new, or at start-up. The identity is
        recorded only after a reconcile, so a failed one is retried at the next check."""
        current = await self._current()
        stored = await self._stored()
        if self.started_up.is_set() and (current is None or current == stored):
            return None
        cause = "startup" if not self.started_up.is_set() else "new_log"
        if current is not None and stored is not None and current != stored:
            LOG_REPLACED.inc()
            log.warning(
                "changes_log_replaced",
                topic=ALERT_CHANGES.name,
                was=str(stored),
                now=str(current),
                action="republishing every alert the new log lacks from the tables",
            )
            cause = "new_log"
        try:
            report: ReconcileReport | None = await self.reconciler.run(cause)
        except ReconcileBusy:
            report = None  # another replica's reconcile records the log when it is done
        else:
            if current is not None:
                await self._record(current)
        self.started_up.set()
        return report

    async def run(self) -> None:
        backoff = Backoff(initial_s=1.0, cap_s=self.interval_s)
        while True:
            raise_if_cancelling()
            self._wake.clear()
            wait_s = self.interval_s
            try:
                await self.check()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait_s = backoff.next_delay()
                log.warning("changes_log_check_failed", error=repr(exc)[:300], retry_in_s=wait_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    async def _current(self) -> LogIdentity | None:
        """The topic's log now; ``None`` (logged) when the broker cannot say: the start-up
        reconcile runs regardless, and the identity is asked again at the next check."""
        try:
            found = await read_log_identities(self.kafka(), [ALERT_CHANGES.name], timeout_s=10)
        except Exception as exc:
            if self.started_up.is_set():
                raise
            log.warning("changes_log_identity_unknown", error=repr(exc)[:300])
            return None
        return found[ALERT_CHANGES.name]

    async def _stored(self) -> LogIdentity | None:
        row = await self.pool.fetchrow(
            "SELECT cluster_id, topic_id FROM changes_log WHERE topic = $1", ALERT_CHANGES.name
        )
        return None if row is None else LogIdentity(row["cluster_id"], row["topic_id"])

    async def _record(self, identity: LogIdentity) -> None:
        await self.pool.execute(
            "INSERT INTO changes_log (topic, cluster_id, topic_id) VALUES ($1, $2, $3)"
            " ON CONFLICT (topic) DO UPDATE SET cluster_id = EXCLUDED.cluster_id,"
            " topic_id = EXCLUDED.topic_id, reconciled_at = now()",
            ALERT_CHANGES.name,
            identity.cluster_id,
            identity.topic_id,
        )
