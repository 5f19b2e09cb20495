"""Dead letters: what goes to ``<topic>.dlq`` for a malformed record, and which are there already.

A malformed record is copied whole, with its reason in ``dlq_*`` headers, when the copy stays
well under what a producer may send (``COPY_MAX_BYTES``); a bigger one (a record of just under
1 MB fits the broker but not the copy with its headers: the producer refused it, and the
consumer died on it after every restart) becomes a bounded **reference**: a small JSON value
naming the source topic, partition and offset, its size, the reason, the error (truncated) and
a prefix of the value. :func:`letter_for` and :func:`reference_letter` decide, on plain data.

One record is dead-lettered once, however often its consumer restarts or replays (the alert
engine keeps its positions in PostgreSQL and re-reads from there, so Kafka commits cannot tell):
each entry carries its source ``topic/partition/offset`` in the ``dlq_source`` header, and
:class:`DeadLetters` reads the tail of the DLQ on first use (bounded in entries and time), then
catches up before each check, so entries written by an earlier run or another replica count.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

log = structlog.get_logger(__name__)

COPY_MAX_BYTES = 512 * 1024
"""Largest key + value + headers copied whole: half the producer's default 1 MiB request (and
the broker's default ``message.max.bytes``), leaving room for the ``dlq_*`` headers and the
batch overhead; above it, a reference."""
PREFIX_BYTES = 512  # of the value (and of an oversized key) kept in a reference
ERROR_CHARS = 2000  # of the error text, in the header and in a reference
KEY_MAX_BYTES = 1024  # a longer key is not kept as the reference's key
TAIL_ENTRIES = 10_000  # per DLQ partition, read on first use
TAIL_TIMEOUT_S = 10.0  # longest read of a DLQ's tail (first use) or catch-up (then)

SOURCE_HEADER = "dlq_source"

Form = Literal["copy", "reference"]


@dataclass(frozen=True)
class Letter:
    """One DLQ entry, ready to send."""

    form: Form
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def source_of(record: ConsumerRecord[bytes, bytes]) -> str:
    """The entry's identity: where the malformed record is, ``topic/partition/offset``."""
    return f"{record.topic}/{record.partition}/{record.offset}"


def record_bytes(record: ConsumerRecord[bytes, bytes]) -> int:
    """Key, value and headers, as the producer counts them towards a request (roughly)."""
    headers = sum(len(k.encode()) + len(v) for k, v in record.headers or ())
    return len(record.key or b"") + len(record.value or b"") + headers


def _dlq_headers(
    record: ConsumerRecord[bytes, bytes], reason: str, error: str, form: Form
) -> list[tuple[str, bytes]]:
    return [
        ("dlq_reason", reason.encode()),
        ("dlq_error", error[:ERROR_CHARS].encode()),
        (SOURCE_HEADER, source_of(record).encode()),
        ("dlq_form", form.encode()),
    ]


def letter_for(
    record: ConsumerRecord[bytes, bytes],
    reason: str,
    error: str,
    copy_max_bytes: int = COPY_MAX_BYTES,
) -> Letter:
    """The whole record with its original headers and the ``dlq_*`` ones, or, when that would
    pass ``copy_max_bytes``, its :func:`reference_letter`."""
    headers = [*list(record.headers or ()), *_dlq_headers(record, reason, error, "copy")]
    size = record_bytes(record) + sum(len(k.encode()) + len(v) for k, v in headers)
    if size > copy_max_bytes:
        return reference_letter(record, reason, error)
    return Letter("copy", record.key, record.value, headers)


def reference_letter(record: ConsumerRecord[bytes, bytes], reason: str, error: str) -> Letter:
    """A bounded stand-in for a record too big to copy: a few KB whatever the record's size."""
    key, value = record.key or b"", record.value
    body: dict[str, Any] = {
        "dlq": "reference",
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
        "size_bytes": record_bytes(record),
        "value_bytes": None if value is None else len(value),
        "reason": reason,
        "error": error[:ERROR_CHARS],
        # Escaped text: readable, and every byte that is not UTF-8 stays visible as \\xNN.
        "value_prefix": None if value is None else _escaped(value[:PREFIX_BYTES]),
    }
    if len(key) > KEY_MAX_BYTES:
        body["key_prefix"] = _escaped(key[:PREFIX_BYTES])
    encoded = json.dumps(body, separators=(",", ":")).encode()
    keep_key = record.key if len(key) <= KEY_MAX_BYTES else None
    return Letter("reference", keep_key, encoded, _dlq_headers(record, reason, error, "reference"))


def _escaped(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


class DeadLetters:
    """The sources already in each ``<topic>.dlq`` this consumer writes to, read from the DLQ
    itself (its last ``tail_entries`` per partition on first use, then what was added since)
    and from what this consumer adds. Best effort within ``timeout_s``: a DLQ that cannot be
    read in time is logged and counts as holding only what was read, since a duplicate entry
    is better than a consumer stuck on a record it cannot get rid of."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        connection: Mapping[str, Any],
        *,
        tail_entries: int = TAIL_ENTRIES,
        timeout_s: float = TAIL_TIMEOUT_S,
    ) -> None:
        self.producer = producer
        self.connection = connection  # tickwatch_common.kafka.client_options of the producer
        self.tail_entries = tail_entries
        self.timeout_s = timeout_s
        self._sources: set[str] = set()
        self._read_to: dict[TopicPartition, int] = {}
        self._reader: AIOKafkaConsumer | None = None

    async def holds(self, dlq: str, source: str) -> bool:
        """Whether ``dlq`` has an entry for ``source`` (read up to its current end first)."""
        if source in self._sources:
            return True
        try:
            await self._catch_up(dlq)
        except Exception as exc:
            log.warning("dead_letters_unread", dlq=dlq, error=repr(exc))
        return source in self._sources

    def add(self, source: str) -> None:
        self._sources.add(source)

    def discard(self, source: str) -> None:
        """Forget a claim whose entry was not sent after all (the send failed)."""
        self._sources.discard(source)

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with suppress(Exception):
                async with asyncio.timeout(5.0):
                    await reader.stop()

    async def _catch_up(self, dlq: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        async with asyncio.timeout(self.timeout_s):
            partitions = await self.producer.partitions_for(dlq)
        tps = [TopicPartition(dlq, p) for p in sorted(partitions)]
        reader = await self._started_reader()
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            ends: dict[TopicPartition, int] = await reader.end_offsets(tps)
            fresh = [tp for tp in tps if tp not in self._read_to]
            if fresh:
                starts: dict[TopicPartition, int] = await reader.beginning_offsets(fresh)
                for tp in fresh:
                    self._read_to[tp] = max(starts[tp], ends[tp] - self.tail_entries)
        behind = [tp for tp in tps if self._read_to[tp] < ends[tp]]
        if not behind:
            return
        reader.assign(behind)  # replaces the assignment: every position is set again below
        for tp in behind:
            reader.seek(tp, self._read_to[tp])
        remaining = set(behind)
        while remaining:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                log.warning("dead_letters_tail_incomplete", dlq=dlq, timeout_s=self.timeout_s)
                return
            batches = await reader.getmany(
                *remaining, timeout_ms=int(min(left_s, 0.5) * 1000), max_records=1000
            )
            for records in batches.values():
                for record in records:
                    for name, value in record.headers or ():
                        if name == SOURCE_HEADER:
                            self._sources.add(value.decode(errors="replace"))
            for tp in list(remaining):
                self._read_to[tp] = position = await reader.position(tp)
                if position >= ends[tp]:
                    remaining.discard(tp)

    async def _started_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                **self.connection,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            try:
                async with asyncio.timeout(self.timeout_s):
                    await reader.start()
            except BaseException:
                with suppress(Exception):
                    await reader.stop()
                raise
            self._reader = reader
        return self._reader
