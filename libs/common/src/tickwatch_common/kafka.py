"""Kafka wiring: producer and consumer as async context managers, and the consume loop.

The consume loop decodes each record with its topic's model, hands valid events to the
handler, sends malformed records to ``<topic>.dlq`` once each, whole or, when too big to copy,
as a bounded reference (see :mod:`tickwatch_common.dead_letters`; a group-less consumer only
counts and logs them), and commits offsets only after the batch is handled. A batch that fails
sends its partition and every later one of the same fetch back to their first unhandled record,
retried after a backoff: nothing is skipped, so handlers must be idempotent.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from prometheus_client import Counter
from pydantic import ValidationError

from tickwatch_common.backoff import Backoff
from tickwatch_common.cancellation import raise_if_cancelling
from tickwatch_common.consumer_progress import ConsumerProgress
from tickwatch_common.dead_letters import DeadLetters, letter_for, reference_letter, source_of
from tickwatch_common.events import Event
from tickwatch_common.metrics import (
    HANDLE_SECONDS,
    HANDLER_FAILURES,
    MESSAGES_CONSUMED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_MALFORMED_SKIPPED,
    MESSAGES_PUBLISHED,
)
from tickwatch_common.publish_outcomes import PublishOutcomes
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topic_repair import TopicPlan, TopicSpec, TopicState, plan_topics
from tickwatch_common.topics import BY_NAME, Topic, all_topic_specs

log = structlog.get_logger(__name__)

CORRELATION_HEADER = "correlation_id"
STOP_TIMEOUT_S = 3.0  # a producer's or consumer's graceful stop, before it is abandoned


def client_options(kafka: KafkaSettings | str) -> dict[str, Any]:
    """The connection keyword arguments of every aiokafka client (producer, consumer, admin):
    the bootstrap servers and, from the settings, the security protocol, the SASL principal
    and the TLS context (the CA verified, the broker's host name checked). A plain string is
    the bootstrap servers of a PLAINTEXT broker (the tests' and ``make run``'s)."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    protocol = kafka.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = kafka.kafka_sasl_mechanism
        options["sasl_plain_username"] = kafka.kafka_sasl_username
        options["sasl_plain_password"] = kafka.kafka_sasl_password.get_secret_value()
    if protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=kafka.kafka_ssl_cafile or None,
            certfile=kafka.kafka_ssl_certfile or None,
            keyfile=kafka.kafka_ssl_keyfile or None,
        )
    return options


class KafkaLoginRefused(AuthenticationFailedError):  # type: ignore[misc]
    """The broker refused this service's SASL login: a wrong password or an unknown user. Not
    retried (it would only be refused again), unlike an unreachable broker."""


class KafkaCertificateRefused(KafkaConnectionError):  # type: ignore[misc]
    """The broker's TLS certificate did not verify: signed by another CA than
    ``KAFKA_SSL_CAFILE`` (or the system's), or not for the host name dialled. Not retried."""


async def connect_refusal(connection: dict[str, Any], timeout_s: float = 10.0) -> Exception | None:
    """Why a client with ``connection`` (:func:`client_options`) could not start, when the
    reason is one that retrying cannot fix: the broker refused the login, or its certificate
    did not verify. aiokafka's bootstrap logs those and raises only "Unable to bootstrap"; one
    connection to the first bootstrap server tells. ``None`` for anything else."""
    if connection.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
        return None
    first = str(connection["bootstrap_servers"]).split(",")[0].strip()
    host, _, port = first.rpartition(":")
    keys = ("security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username")
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host or first,
                int(port or 9092),
                request_timeout_ms=int(timeout_s * 1000),
                sasl_plain_password=connection.get("sasl_plain_password"),
                **{k: connection[k] for k in keys if k in connection},
            )
    except (
        SaslAuthenticationFailed,
        AuthenticationFailedError,
        ssl.SSLCertVerificationError,
    ) as exc:
        refused: Exception = exc  # aiokafka's errors are untyped
        return refused
    except Exception:
        return None  # unreachable, or slow: not a refusal
    conn.close()
    return None


def _refused(connection: dict[str, Any], refusal: Exception) -> KafkaError:
    """The error to stop with, naming the settings to check (never the password)."""
    servers = connection["bootstrap_servers"]
    if isinstance(refusal, ssl.SSLCertVerificationError):
        return KafkaCertificateRefused(
            f"the TLS certificate of Kafka at {servers} did not verify: check KAFKA_SSL_CAFILE"
            f" (empty: the system's CAs) and that the certificate names the host dialled in"
            f" KAFKA_BOOTSTRAP_SERVERS ({refusal.verify_message})"
        )
    return KafkaLoginRefused(
        f"Kafka at {servers} refused the {connection['sasl_mechanism']} login of"
        f" KAFKA_SASL_USERNAME={connection['sasl_plain_username']}: check KAFKA_SASL_PASSWORD"
        f" and that the user has a SCRAM credential ({refusal})"
    )


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


# A send that may succeed once the topic is (re)made as the contract says: the topic unknown,
# its metadata never arriving, or a partition the producer's metadata lacks (aiokafka asserts
# "Unrecognized partition" when a topic has fewer partitions than the contract).
REPAIRABLE = (UnknownTopicOrPartitionError, KafkaTimeoutError, AssertionError)
# The broker's ACLs refuse this principal: retrying cannot help (tickwatch_common.bus_access).
REFUSED = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
)
PUBLISH_TIMEOUT_S = 60.0  # longest publish(), repairs and retries included
REPAIR_AFTER_S = 5.0  # an acknowledgement this late: check the topic (the idempotent producer
# retries a deleted topic's batch forever, so the send itself never fails)


class TopicRepairer:
    """Runs :func:`ensure_topics` for a topic that a send found missing or short of partitions,
    at most once per ``interval_s`` per topic, then refreshes the producer's metadata (it is
    otherwise refreshed only every five minutes, and sends to a grown partition fail until then)."""

    def __init__(
        self,
        kafka: KafkaSettings | str,
        *,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kafka = kafka
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.runs = 0

    async def repair(self, producer: AIOKafkaProducer, topic: str) -> None:
        async with self._lock:
            if self.clock() - self._last.get(topic, -math.inf) < self.interval_s:
                return
            self._last[topic] = self.clock()
            self.runs += 1
            try:
                await ensure_topics(self.kafka, timeout_s=15, names={topic})
            except Exception as exc:
                log.warning("topic_repair_failed", topic=topic, error=repr(exc))
            with suppress(Exception):
                await asyncio.wait_for(producer.client.force_metadata_update(), 10)


class Publisher:
    """Serialises events and sends them to their topic, keyed and partitioned as the contract says.

    Every send's outcome is recorded in ``outcomes`` (the ``publishing`` readiness check). A send
    refused because its topic or partition is unknown has the topic repaired (``repairer``) and
    is tried again, with a backoff, within ``PUBLISH_TIMEOUT_S``. ``connection`` is the
    :func:`client_options` the producer was made with (the dead letters' reader uses them)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        repairer: TopicRepairer | None = None,
        outcomes: PublishOutcomes | None = None,
        connection: dict[str, Any] | None = None,
    ) -> None:
        self.producer = producer
        self.connection = connection
        self.repairer = repairer
        self.outcomes = outcomes or PublishOutcomes()

    async def publish(
        self,
        topic: Topic,
        event: Event | None,
        *,
        key: str,
        partition_key: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Send and wait until the broker has it; repaired and resent within ``PUBLISH_TIMEOUT_S``
        (a resend after a lost acknowledgement may duplicate: consumers are idempotent)."""
        record = _record(event, key, partition_key, correlation_id, topic.partitions)
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        backoff = Backoff(initial_s=0.2, cap_s=5.0)
        while True:
            fut = await self._queue(topic.name, record, deadline)
            try:
                await self._acknowledged(topic.name, fut, deadline)
                return
            except REPAIRABLE as exc:
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("publish_retry", topic=topic.name, error=repr(exc), retry_in_s=delay)
                await self.repair(topic.name)
                await asyncio.sleep(delay)

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
        record = _record(event, key, partition_key, correlation_id, topic.partitions)
        return await self._queue(topic.name, record, time.monotonic() + PUBLISH_TIMEOUT_S)

    async def send_raw(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        record = {"value": value, "key": key, "headers": headers}
        fut = await self._queue(topic, record, time.monotonic() + PUBLISH_TIMEOUT_S)
        await self._acknowledged(topic, fut, time.monotonic() + PUBLISH_TIMEOUT_S)

    async def repair(self, topic: str) -> None:
        if self.repairer is not None:
            await self.repairer.repair(self.producer, topic)

    def watch(self, topic: str, fut: asyncio.Future[Any]) -> None:
        """Record the broker's answer to ``fut`` (a send or a batch) in ``outcomes``."""
        outcomes = self.outcomes
        token = outcomes.sent(topic)

        def answered(f: asyncio.Future[Any]) -> None:
            if f.cancelled():  # the producer was abandoned: no answer to record
                outcomes.dropped(topic, token)
            else:
                outcomes.answered(topic, token, f.exception())

        fut.add_done_callback(answered)

    async def _queue(
        self, topic: str, record: dict[str, Any], deadline: float
    ) -> asyncio.Future[Any]:
        """``producer.send``; a send refused for an unknown topic or partition is repaired and
        tried again until ``deadline``."""
        backoff = Backoff(initial_s=0.2, cap_s=5.0)
        while True:
            try:
                fut: asyncio.Future[Any] = await self.producer.send(topic, **record)
            except REPAIRABLE as exc:
                self.outcomes.record(topic, exc)
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("publish_retry", topic=topic, error=repr(exc), retry_in_s=delay)
                await self.repair(topic)
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                self.outcomes.record(topic, exc)
                raise
            self.watch(topic, fut)
            MESSAGES_PUBLISHED.labels(topic).inc()
            return fut

    async def _acknowledged(self, topic: str, fut: asyncio.Future[Any], deadline: float) -> None:
        """Wait for ``fut``; every ``REPAIR_AFTER_S`` without an answer, check the topic."""
        while True:
            done, _ = await asyncio.wait({fut}, timeout=REPAIR_AFTER_S)
            if done:
                fut.result()
                return
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"no acknowledgement from the broker for {topic}")
            await self.repair(topic)


def _record(
    event: Event | None,
    key: str,
    partition_key: str | None,
    correlation_id: str | None,
    partitions: int,
) -> dict[str, Any]:
    return {
        "value": event.to_bytes() if event is not None else None,
        "key": key.encode(),
        "partition": partition_for(partition_key or key, partitions),
        "headers": [(CORRELATION_HEADER, (correlation_id or uuid.uuid4().hex).encode())],
    }


@asynccontextmanager
async def kafka_producer(
    settings: KafkaSettings, *, topics: Sequence[Topic] = (), **overrides: Any
) -> AsyncIterator[Publisher]:
    """A started producer. ``topics`` (those the service produces to or dead-letters from) are
    made as the contract says, with their ``.dlq``, before it starts."""
    if topics:
        names = {name for t in topics for name in (t.name, t.dlq)}
        await ensure_topics(settings, names=names)
    connection = client_options(settings)
    options: dict[str, Any] = {
        **connection,
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "linger_ms": 2,
    }
    options.update(overrides)
    producer = AIOKafkaProducer(**options)
    try:
        await _start_with_retry(producer.start, "producer", connection)
    except BaseException:
        await _abandon_producer(producer)()  # its client's connections closed, nothing leaked
        raise
    overdue_s = max(30.0, 2 * settings.kafka_request_timeout_ms / 1000)
    try:
        yield Publisher(
            producer,
            repairer=TopicRepairer(settings),
            outcomes=PublishOutcomes(overdue_s=overdue_s),
            connection=connection,
        )
    finally:
        await _stop_within("producer", producer.stop, STOP_TIMEOUT_S, _abandon_producer(producer))


@asynccontextmanager
async def kafka_consumer(
    settings: KafkaSettings,
    *,
    group: str | None,
    topics: Sequence[Topic] = (),
    **overrides: Any,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer with manual commits. ``group=None`` gives a group-less consumer (fan-out).

    Leaving is bounded: a consumer that started is stopped gracefully (the group step in flight
    finished, the group left) for at most ``STOP_TIMEOUT_S``, and abandoned past that or when
    cancelled meanwhile; one whose start never finished (with a group, start waits for the
    join, which takes seconds) is abandoned at once. See :func:`_abandon_consumer`."""
    connection = client_options(settings)
    options: dict[str, Any] = {
        **connection,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "request_timeout_ms": max(settings.kafka_request_timeout_ms, 40000),
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        # How often aiokafka's fetcher wakes when nothing happens (its default 200 ms: five
        # wake-ups a second per idle consumer); data, consumption and a rebalance wake it at once.
        "consumer_timeout_ms": 1000,
    }
    options.update(overrides)
    consumer = AIOKafkaConsumer(*[t.name for t in topics], **options)
    abandon = _abandon_consumer(consumer)
    try:
        await _start_with_retry(consumer.start, "consumer", connection)
    except BaseException:
        await abandon()
        raise
    try:
        yield consumer
    finally:
        await _stop_within(f"consumer of group {group}", consumer.stop, STOP_TIMEOUT_S, abandon)


async def _stop_within(
    what: str,
    stop: Callable[[], Awaitable[None]],
    timeout_s: float,
    abandon: Callable[[], Awaitable[None]],
) -> None:
    """``stop()`` for at most ``timeout_s``, else (or when cancelled meanwhile) ``abandon()``."""
    stopping = asyncio.ensure_future(stop())
    try:
        done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
    except asyncio.CancelledError:
        stopping.cancel()
        await abandon()
        raise
    if done and stopping.exception() is None:
        return
    if done:
        log.warning("kafka_stop_failed", what=what, error=repr(stopping.exception()))
    else:
        log.warning("kafka_stop_overran", what=what, timeout_s=timeout_s)
        stopping.cancel()
    await abandon()


def _abandon_consumer(consumer: AIOKafkaConsumer) -> Callable[[], Awaitable[None]]:
    """Close ``consumer`` at once: its background tasks cancelled, its connections closed, no
    goodbyes to the group (the broker drops the member when its session times out).

    aiokafka has no public way to do this: ``stop()`` first waits for the group step in flight
    (a JoinGroup the broker may hold for a whole rebalance; each request up to the request
    timeout), then sends LeaveGroup, also up to the request timeout. So this reaches into
    aiokafka 0.14's coordinator, fetcher and client, defensively (``getattr``)."""

    async def abandon() -> None:
        consumer._closed = True  # what stop() sets first; also silences "Unclosed consumer"
        tasks: list[Any] = []
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is not None:
            closing = getattr(coordinator, "_closing", None)
            if isinstance(closing, asyncio.Future) and not closing.done():
                closing.set_result(None)
            for name in ("_coordination_task", "_heartbeat_task", "_commit_refresh_task"):
                tasks.append(getattr(coordinator, name, None))
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            tasks.append(getattr(fetcher, "_fetch_task", None))
            tasks.extend(getattr(fetcher, "_pending_tasks", ()))
        await _cancel_and_close([t for t in tasks if t is not None], consumer._client.close)

    return abandon


def _abandon_producer(producer: AIOKafkaProducer) -> Callable[[], Awaitable[None]]:
    """Close ``producer`` at once, dropping what it has not sent (aiokafka 0.14 internals, as
    for consumers: ``stop()`` waits until every pending batch is delivered or expires)."""

    async def abandon() -> None:
        producer._closed = True
        sender = getattr(producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        await _cancel_and_close([task] if task is not None else [], producer.client.close)

    return abandon


async def _cancel_and_close(
    tasks: list[asyncio.Future[Any]], close: Callable[[], Awaitable[None]]
) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=1.0)
    with suppress(Exception):
        async with asyncio.timeout(1.0):
            await close()


async def _start_with_retry(
    start: Callable[[], Awaitable[None]], what: str, connection: dict[str, Any] | None = None
) -> None:
    """``start()``, retried for a minute (the broker may come up after the service), except
    when the broker refuses the login (:class:`KafkaLoginRefused`), its certificate does not
    verify (:class:`KafkaCertificateRefused`) or its ACLs refuse the principal (``REFUSED``):
    those are raised at once."""
    backoff = Backoff(initial_s=0.2, cap_s=5.0)
    deadline = time.monotonic() + 60
    while True:
        try:
            await start()
            return
        except REFUSED:
            raise
        except Exception as exc:
            if connection is not None and isinstance(exc, KafkaConnectionError):
                refusal = await connect_refusal(connection)
                if refusal is not None:
                    raise _refused(connection, refusal) from refusal
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
    publisher: Publisher,
    record: ConsumerRecord[bytes, bytes],
    reason: str,
    error: str,
    *,
    known: DeadLetters | None = None,
) -> bool:
    """Send ``record`` to ``<topic>.dlq`` once: whole, or as a bounded reference when it is
    too big to copy (decided up front, and again if the producer still refuses the copy).
    With ``known``, a record already in the DLQ (an earlier run, a replay) is not sent again.
    Returns whether an entry was sent."""
    dlq, source = f"{record.topic}.dlq", source_of(record)
    if known is not None:
        if await known.holds(dlq, source):
            log.info("dead_letter_known", topic=record.topic, source=source)
            return False
        # Claimed before the send, with no await in between: a concurrent caller with the same
        # ``known`` (a consume loop and a replay of the same record) finds it and sends nothing.
        known.add(source)
    try:
        await _send_letter(publisher, dlq, record, reason, error)
    except BaseException:
        if known is not None:
            known.discard(source)  # not sent: the retry must send it
        raise
    _count_malformed(MESSAGES_DEAD_LETTERED, "message_dead_lettered", record, reason, error)
    return True


async def _send_letter(
    publisher: Publisher, dlq: str, record: ConsumerRecord[bytes, bytes], reason: str, error: str
) -> None:
    """The entry whole, or as a bounded reference when the producer refuses the copy."""
    letter = letter_for(record, reason, error)
    try:
        await publisher.send_raw(dlq, letter.value, letter.key, letter.headers)
    except (MessageSizeTooLargeError, RecordListTooLargeError) as exc:
        if letter.form == "reference":
            raise
        log.warning("dead_letter_copy_refused", source=source_of(record), error=repr(exc))
        letter = reference_letter(record, reason, error)
        await publisher.send_raw(dlq, letter.value, letter.key, letter.headers)


def _count_malformed(
    counter: Counter, event: str, record: ConsumerRecord[bytes, bytes], reason: str, error: str
) -> None:
    counter.labels(record.topic, reason).inc()
    log.warning(
        event,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
        error=error[:500],
    )


COMMIT_TIMEOUT_S = 15.0  # one commit of a round; a late or refused one is retried next round


async def consume(
    consumer: AIOKafkaConsumer,
    handle_batch: BatchHandler,
    *,
    dlq: Publisher | None,
    commit: bool = True,
    max_records: int = 500,
    stop: asyncio.Event | None = None,
    after_round: Callable[[], Awaitable[None]] | None = None,
    progress: ConsumerProgress | None = None,
    dead_letter_topics: Collection[str] | None = None,
    dead_letters: DeadLetters | None = None,
) -> None:
    """Decode, hand over, dead-letter the malformed, commit; until cancelled or ``stop`` is set.

    One fetch brings a batch per partition. A batch that fails (its handler, or sending its
    malformed records to the DLQ) ends the round: that partition and every later one of the
    fetch go back to their first record of the fetch, the batches handled before it are
    committed, and the round is fetched again after a backoff. Nothing is committed past a
    record that was not handled, and no partition of a fetch is skipped (aiokafka has already
    moved every position past its batch). A partition the handler moved back itself (a seek of
    its own) is left where it put it; one revoked meanwhile is left to its new owner.

    ``after_round`` runs once the batches of one fetch are handled: a handler that must wait
    for something per batch (broker acknowledgements, a database write) can wait once for them
    all there, so the last partition's batch is not held up by the round trips of the others.
    Commits wait for it; if it raises, every batch of the round is fetched again after a
    backoff, as a failed batch is.

    ``progress`` is told each partition's next offset once its batch (and its round) is handled,
    malformed-only batches included. With ``commit=False`` (a handler that commits for itself)
    a batch of malformed records only, which the handler never sees, is still committed here.

    ``dlq=None`` only counts and logs malformed records: for a group-less consumer, which every
    replica runs, so that one record is not dead-lettered once per replica (the consumer
    groups reading the topic dead-letter it once). With a DLQ, each record is dead-lettered
    once across restarts and replays (:class:`~tickwatch_common.dead_letters.DeadLetters`).
    Where two groups read one topic, one of them dead-letters it (the other names the topics it
    does dead-letter in ``dead_letter_topics`` and only counts the rest): two groups checking
    the DLQ at the same moment would both send. A handler that dead-letters records of its own
    passes the ``dead_letters`` it uses (its owner closes it), so the two never both send one.
    """
    backoff = Backoff(initial_s=0.2, cap_s=10.0)
    own = dead_letters is None and dlq is not None
    known = dead_letters_of(dlq) if own and dlq is not None else dead_letters
    grouped = getattr(consumer, "_group_id", None) is not None  # aiokafka keeps no public one
    try:
        while stop is None or not stop.is_set():
            raise_if_cancelling()
            batches = await consumer.getmany(timeout_ms=500, max_records=max_records)
            if not batches:
                continue
            handled, unseen = await _handle_round(
                batches, handle_batch, dlq, known, dead_letter_topics
            )
            failed = len(handled) < len(batches)
            if after_round is not None and handled:
                try:
                    await after_round()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("round_failed", partitions=len(handled))
                    handled, failed = {}, True
            await _rewind(consumer, {tp: rs for tp, rs in batches.items() if tp not in handled})
            if commit and handled:
                await _commit(consumer, handled)
            elif grouped and (only_malformed := {t: handled[t] for t in unseen if t in handled}):
                # A handler that commits for itself never sees a batch that held only
                # malformed records: commit it here, or a restart reads the poison again.
                await _commit(consumer, only_malformed)
            if progress is not None:
                for tp, next_offset in handled.items():
                    progress.handled(tp.topic, tp.partition, next_offset)
            if not failed:
                backoff.reset()
                continue
            delay = backoff.next_delay()
            log.warning("consume_retry", retry_in_s=round(delay, 2))
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
    finally:
        if own and known is not None:
            await known.close()


Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


async def _handle_round(
    batches: Fetched,
    handle_batch: BatchHandler,
    dlq: Publisher | None,
    known: DeadLetters | None,
    dead_letter_topics: Collection[str] | None = None,
) -> tuple[dict[TopicPartition, int], set[TopicPartition]]:
    """Each partition's batch in turn, until one fails: the next offset of each handled one,
    and the partitions whose batch held nothing valid (the handler never saw them)."""
    handled: dict[TopicPartition, int] = {}
    unseen: set[TopicPartition] = set()
    for tp, records in batches.items():
        started = time.perf_counter()
        try:
            letters = dlq if dead_letter_topics is None or tp.topic in dead_letter_topics else None
            good = await _decoded(records, letters, known)
            if good:
                await _bind_and_handle(handle_batch, good)
        except asyncio.CancelledError:
            raise
        except Exception:
            HANDLER_FAILURES.labels(tp.topic).inc()
            log.exception(
                "handler_failed", topic=tp.topic, partition=tp.partition, offset=records[0].offset
            )
            break
        if good:
            HANDLE_SECONDS.labels(tp.topic).observe(time.perf_counter() - started)
            MESSAGES_CONSUMED.labels(tp.topic).inc(len(good))
        else:
            unseen.add(tp)
        handled[tp] = records[-1].offset + 1
    return handled, unseen


async def _decoded(
    records: list[ConsumerRecord[bytes, bytes]],
    dlq: Publisher | None,
    known: DeadLetters | None,
) -> list[Delivered]:
    """The valid events of a batch; the malformed are dead-lettered (or, without a DLQ,
    counted and logged)."""
    good: list[Delivered] = []
    for record in records:
        try:
            good.append(decode(record))
        except (ValidationError, ValueError, KeyError) as exc:
            reason = malformed_reason(exc)
            if dlq is None:
                _count_malformed(
                    MESSAGES_MALFORMED_SKIPPED,
                    "malformed_message_skipped",
                    record,
                    reason,
                    str(exc),
                )
            else:
                await dead_letter(dlq, record, reason, str(exc), known=known)
    return good


async def _rewind(consumer: AIOKafkaConsumer, unhandled: Fetched) -> None:
    """Each unhandled partition back to its first record of the fetch, unless it is already at
    or before it (the handler sought it back itself) or no longer assigned."""
    assigned = consumer.assignment()
    for tp, records in unhandled.items():
        if tp not in assigned:
            continue
        try:
            position = await consumer.position(tp)
        except KafkaError:  # revoked meanwhile
            continue
        if position > records[0].offset:
            consumer.seek(tp, records[0].offset)


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """Commit the partitions still assigned; a refused or late commit (a rebalance, the
    coordinator away) is logged: the next round commits further, or the next owner re-reads
    from the last commit (handlers are idempotent)."""
    assigned = consumer.assignment()
    mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
    if not mine:
        return
    try:
        async with asyncio.timeout(COMMIT_TIMEOUT_S):
            await consumer.commit(mine)
    except (KafkaError, TimeoutError) as exc:
        log.warning("commit_failed", partitions=len(mine), error=repr(exc))


def malformed_reason(exc: Exception) -> str:
    """The DLQ entry's reason for a record :func:`decode` refused."""
    return "validation" if isinstance(exc, ValidationError) else "decode"


def dead_letters_of(publisher: Publisher) -> DeadLetters:
    """What ``publisher``'s DLQs already hold, for :func:`dead_letter`'s ``known`` (close it
    after use). The DLQ reader connects as the producer does; a Publisher made around a bare producer
    (tests, the chaos run) has only its client's bootstrap servers, on PLAINTEXT."""
    if publisher.connection is not None:
        return DeadLetters(publisher.producer, publisher.connection)
    servers = getattr(publisher.producer.client, "_bootstrap_servers", "localhost")
    return DeadLetters(publisher.producer, client_options(servers))


async def stop_consuming(
    task: asyncio.Task[None], stop: asyncio.Event, grace_s: float = 10.0
) -> None:
    """Let :func:`consume` finish the batch in hand (so it is committed, not replayed), then
    cancel it if it has not stopped within ``grace_s``; the task's own failure is raised here.

    ``asyncio.wait`` rather than ``wait_for(shield(...))``: it never cancels the task itself,
    and a cancellation of the caller goes on to the caller (after the task is stopped) instead
    of being taken for a timeout and swallowed."""
    stop.set()
    try:
        await asyncio.wait({task}, timeout=grace_s)
    finally:
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()


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


async def ensure_topics(
    kafka: KafkaSettings | str, timeout_s: float = 60, *, names: Collection[str] | None = None
) -> list[str]:
    """Make every contract topic (and its ``.dlq``) as the contract says, or only ``names``:
    create the missing, grow those with fewer partitions, set contract configs that differ
    (a warning for each repair). Returns the created names. Never relies on auto-creation.
    ``kafka``: the settings, or a PLAINTEXT broker's bootstrap servers (:func:`client_options`)."""
    specs = [
        TopicSpec(name, parts, configs)
        for name, parts, configs in all_topic_specs()
        if names is None or name in names
    ]
    connection = client_options(kafka)
    admin = AIOKafkaAdminClient(**connection, request_timeout_ms=15000)
    await _start_with_retry(admin.start, "admin", connection)
    try:
        async with asyncio.timeout(timeout_s):
            existing = await _topic_states(admin, [s.name for s in specs])
            plans = plan_topics(specs, existing)
            created = [p.spec for p in plans if p.create]
            if created:
                new = [
                    NewTopic(t.name, t.partitions, 1, topic_configs=dict(t.configs))
                    for t in created
                ]
                with suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
            await _repair_topics(admin, [p for p in plans if not p.create])
        return [t.name for t in created]
    finally:
        await admin.close()


async def _topic_states(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, TopicState]:
    """Partition counts and dynamic configs of those of ``names`` that exist."""
    present = set(await admin.list_topics()) & set(names)
    if not present:
        return {}
    counts = {
        d["topic"]: len(d["partitions"])
        for d in await admin.describe_topics(sorted(present))
        if d["error_code"] == 0
    }
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(counts)]
    configs: dict[str, dict[str, str]] = {name: {} for name in counts}
    for response in await admin.describe_configs(resources):
        for error_code, _, _, name, entries in response.resources:
            if error_code == 0 and name in configs:
                # (name, value, read_only, source, sensitive, synonyms); source 1: the topic's own
                configs[name] = {e[0]: e[1] for e in entries if e[3] == 1 and e[1] is not None}
    return {name: TopicState(count, configs[name]) for name, count in counts.items()}


async def _repair_topics(admin: AIOKafkaAdminClient, plans: list[TopicPlan]) -> None:
    for plan in plans:
        log.warning("topic_repaired", topic=plan.spec.name, changes=plan.changes)
    grow = {p.spec.name: NewPartitions(p.spec.partitions) for p in plans if p.grow_from}
    if grow:
        response = await admin.create_partitions(grow)
        for name, error_code, message in response.topic_errors:
            if error_code != 0:
                log.error("topic_grow_refused", topic=name, code=error_code, error=message)
    alter = [
        ConfigResource(ConfigResourceType.TOPIC, p.spec.name, configs=dict(p.configs))
        for p in plans
        if p.configs is not None
    ]
    if alter:
        for response in await admin.alter_configs(alter):
            for error_code, message, _, name in response.resources:
                if error_code != 0:
                    log.error("topic_config_refused", topic=name, code=error_code, error=message)
