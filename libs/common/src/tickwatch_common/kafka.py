"""Kafka wiring: producer and consumer as async context managers, and the consume loop.

The consume loop decodes each record with its topic's model, hands valid events to the
handler, sends malformed records to ``<topic>.dlq`` (with the reason in headers and a metric)
and commits offsets only after the batch is handled. A handler that raises is retried from the
same offset after a backoff: nothing is skipped, so handlers must be idempotent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from tickwatch_common.backoff import Backoff
from tickwatch_common.events import Event
from tickwatch_common.metrics import (
    HANDLE_SECONDS,
    HANDLER_FAILURES,
    MESSAGES_CONSUMED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_PUBLISHED,
)
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import BY_NAME, Topic, all_topic_specs

log = structlog.get_logger(__name__)

CORRELATION_HEADER = "correlation_id"


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, positive)."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Delivered:
    """A decoded record; ``event`` is ``None`` for a tombstone."""

    topic: str
    partition: int
    offset: int
    key: str | None
    event: Event | None
    timestamp_ms: int
    headers: dict[str, str]


class Publisher:
    """Serialises events and sends them to their topic, keyed and partitioned as the contract says."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def publish(
        self,
        topic: Topic,
        event: Event | None,
        *,
        key: str,
        partition_key: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Send and wait until the broker has it."""
        fut = await self.send(
            topic, event, key=key, partition_key=partition_key, correlation_id=correlation_id
        )
        await fut

    async def send(
        self,
        topic: Topic,
        event: Event | None,
        *,
        key: str,
        partition_key: str | None = None,
        correlation_id: str | None = None,
    ) -> asyncio.Future[Any]:
        """Queue for sending; await the returned future for the broker's acknowledgement."""
        value = event.to_bytes() if event is not None else None
        partition = partition_for(partition_key or key, topic.partitions)
        headers = [(CORRELATION_HEADER, (correlation_id or uuid.uuid4().hex).encode())]
        fut = await self.producer.send(
            topic.name, value=value, key=key.encode(), partition=partition, headers=headers
        )
        MESSAGES_PUBLISHED.labels(topic.name).inc()
        return fut  # type: ignore[no-any-return]

    async def send_raw(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await (await self.producer.send(topic, value=value, key=key, headers=headers))


@asynccontextmanager
async def kafka_producer(settings: KafkaSettings, **overrides: Any) -> AsyncIterator[Publisher]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "linger_ms": 2,
    }
    options.update(overrides)
    producer = AIOKafkaProducer(**options)
    await _start_with_retry(producer.start, "producer")
    try:
        yield Publisher(producer)
    finally:
        await producer.stop()


@asynccontextmanager
async def kafka_consumer(
    settings: KafkaSettings,
    *,
    group: str | None,
    topics: Sequence[Topic] = (),
    **overrides: Any,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer with manual commits. ``group=None`` gives a group-less consumer (fan-out)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "request_timeout_ms": max(settings.kafka_request_timeout_ms, 40000),
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
    }
    options.update(overrides)
    consumer = AIOKafkaConsumer(*[t.name for t in topics], **options)
    await _start_with_retry(consumer.start, "consumer")
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _start_with_retry(start: Callable[[], Awaitable[None]], what: str) -> None:
    backoff = Backoff(initial_s=0.2, cap_s=5.0)
    deadline = time.monotonic() + 60
    while True:
        try:
            await start()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            delay = backoff.next_delay()
            log.warning(
                "kafka_connect_retry", what=what, error=str(exc), retry_in_s=round(delay, 2)
            )
            await asyncio.sleep(delay)


def decode(record: ConsumerRecord[bytes, bytes]) -> Delivered:
    """Decode one record with its topic's model; raises ValueError/ValidationError when malformed."""
    topic = BY_NAME[record.topic]
    key = record.key.decode() if record.key is not None else None
    headers = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
    if record.value is None:
        if not topic.tombstones:
            raise ValueError("tombstone on a topic that has none")
        event = None
    else:
        event = topic.model.model_validate_json(record.value)
    return Delivered(
        record.topic, record.partition, record.offset, key, event, record.timestamp, headers
    )


BatchHandler = Callable[[list[Delivered]], Awaitable[None]]


async def dead_letter(
    publisher: Publisher, record: ConsumerRecord[bytes, bytes], reason: str, error: str
) -> None:
    MESSAGES_DEAD_LETTERED.labels(record.topic, reason).inc()
    log.warning(
        "message_dead_lettered",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
        error=error[:500],
    )
    headers = [
        *list(record.headers or ()),
        ("dlq_reason", reason.encode()),
        ("dlq_error", error[:2000].encode()),
        ("dlq_source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    await publisher.send_raw(f"{record.topic}.dlq", record.value, record.key, headers)


async def consume(
    consumer: AIOKafkaConsumer,
    handle_batch: BatchHandler,
    *,
    dlq: Publisher,
    commit: bool = True,
    max_records: int = 500,
    stop: asyncio.Event | None = None,
) -> None:
    """Decode, hand over, dead-letter the malformed, commit; until cancelled or ``stop`` is set."""
    backoff = Backoff(initial_s=0.2, cap_s=10.0)
    while stop is None or not stop.is_set():
        batches = await consumer.getmany(timeout_ms=500, max_records=max_records)
        for tp, records in batches.items():
            good: list[Delivered] = []
            for record in records:
                try:
                    good.append(decode(record))
                except (ValidationError, ValueError, KeyError) as exc:
                    reason = "validation" if isinstance(exc, ValidationError) else "decode"
                    await dead_letter(dlq, record, reason, str(exc))
            if good:
                started = time.perf_counter()
                try:
                    await _bind_and_handle(handle_batch, good)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    HANDLER_FAILURES.labels(tp.topic).inc()
                    delay = backoff.next_delay()
                    log.exception("handler_failed", topic=tp.topic, retry_in_s=round(delay, 2))
                    consumer.seek(tp, records[0].offset)
                    await asyncio.sleep(delay)
                    break
                backoff.reset()
                HANDLE_SECONDS.labels(tp.topic).observe(time.perf_counter() - started)
                MESSAGES_CONSUMED.labels(tp.topic).inc(len(good))
            if commit:
                await consumer.commit({tp: records[-1].offset + 1})


async def stop_consuming(
    task: asyncio.Task[None], stop: asyncio.Event, grace_s: float = 10.0
) -> None:
    """Let :func:`consume` finish the batch in hand (so it is committed, not replayed), then
    cancel it if it has not stopped within ``grace_s``."""
    stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _bind_and_handle(handle_batch: BatchHandler, batch: list[Delivered]) -> None:
    cid = batch[-1].headers.get(CORRELATION_HEADER)
    with structlog.contextvars.bound_contextvars(correlation_id=cid):
        await handle_batch(batch)


def per_message(handle: Callable[[Delivered], Awaitable[None]]) -> BatchHandler:
    """Adapt a one-message handler to the batch loop."""

    async def handle_batch(batch: list[Delivered]) -> None:
        for item in batch:
            await handle(item)

    return handle_batch


async def ensure_topics(bootstrap_servers: str, timeout_s: float = 60) -> list[str]:
    """Create every contract topic (and its ``.dlq``) that is missing. Returns the created names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15000)
    await _start_with_retry(admin.start, "admin")
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=parts, replication_factor=1, topic_configs=configs)
            for name, parts, configs in all_topic_specs()
            if name not in existing
        ]
        if wanted:
            with suppress(TopicAlreadyExistsError):
                await asyncio.wait_for(admin.create_topics(wanted), timeout_s)
        return [t.name for t in wanted]
    finally:
        await admin.close()
