"""What goes to a DLQ for a malformed record: a copy when it is small, a bounded reference else."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaTimeoutError
from tickwatch_common.dead_letters import (
    COPY_MAX_BYTES,
    ERROR_CHARS,
    PREFIX_BYTES,
    DeadLetters,
    letter_for,
    reference_letter,
    source_of,
)
from tickwatch_common.kafka import dead_letter


def record(
    value: bytes | None,
    key: bytes | None = b"BTC-USDT",
    headers: tuple[tuple[str, bytes], ...] = (("correlation_id", b"c1"),),
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="market.ticks.v1",
        partition=3,
        offset=41,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=headers,
    )


def test_a_small_record_is_copied_whole_with_its_headers_and_the_reason() -> None:
    letter = letter_for(record(b"not json"), "decode", "Expecting value")
    assert letter.form == "copy"
    assert (letter.key, letter.value) == (b"BTC-USDT", b"not json")
    assert letter.headers == [
        ("correlation_id", b"c1"),
        ("dlq_reason", b"decode"),
        ("dlq_error", b"Expecting value"),
        ("dlq_source", b"market.ticks.v1/3/41"),
        ("dlq_form", b"copy"),
    ]


def test_a_record_over_the_copy_bound_becomes_a_reference_of_a_few_kilobytes() -> None:
    big = b'{"symbol": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    letter = letter_for(record(big), "validation", "e" * 10_000)
    assert letter.form == "reference"
    assert letter.key == b"BTC-USDT"
    assert letter.value is not None and len(letter.value) < 2 * ERROR_CHARS + 2 * PREFIX_BYTES
    body = json.loads(letter.value)
    assert body == {
        "dlq": "reference",
        "topic": "market.ticks.v1",
        "partition": 3,
        "offset": 41,
        "timestamp_ms": 1_700_000_000_000,
        "size_bytes": len(big) + len(b"BTC-USDT") + len(b"correlation_id") + len(b"c1"),
        "value_bytes": len(big),
        "reason": "validation",
        "error": "e" * ERROR_CHARS,
        "value_prefix": big[:PREFIX_BYTES].decode(),
    }
    assert dict(letter.headers)["dlq_form"] == b"reference"
    assert dict(letter.headers)["dlq_source"] == b"market.ticks.v1/3/41"
    assert "correlation_id" not in dict(letter.headers)  # the original headers may be the bulk


def test_the_bound_counts_key_headers_and_the_dlq_headers_too() -> None:
    just_under = COPY_MAX_BYTES - 1000
    assert letter_for(record(b"x" * just_under), "decode", "e").form == "copy"
    heavy = (("h", b"y" * 2000),)
    assert letter_for(record(b"x" * just_under, headers=heavy), "decode", "e").form == "reference"


def test_a_prefix_that_is_not_utf8_stays_visible_as_escapes() -> None:
    letter = reference_letter(record(b"\xff\xfeok" + b"z" * 2000), "decode", "bad utf-8")
    assert json.loads(letter.value or b"")["value_prefix"].startswith("\\xff\\xfeokzz")


def test_an_oversized_key_is_not_kept_as_the_reference_key() -> None:
    letter = reference_letter(record(b"v", key=b"k" * 100_000), "decode", "e")
    body = json.loads(letter.value or b"")
    assert letter.key is None
    assert body["key_prefix"] == "k" * PREFIX_BYTES


def test_a_tombstone_is_copied_as_a_tombstone() -> None:
    letter = letter_for(record(None), "decode", "tombstone on a topic that has none")
    assert (letter.form, letter.value) == ("copy", None)
    assert (
        json.loads(reference_letter(record(None), "decode", "e").value or b"")["value_prefix"]
        is None
    )


def test_the_source_names_topic_partition_and_offset() -> None:
    assert source_of(record(b"v")) == "market.ticks.v1/3/41"


class KnownDLQ(DeadLetters):
    """A DLQ that holds nothing yet; each look at it takes a turn of the event loop, as the
    real read does, so two callers can be inside ``holds`` at once."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None), {})

    async def _catch_up(self, dlq: str) -> None:
        await asyncio.sleep(0)


class CapturingPublisher:
    """``send_raw`` as the DLQ path calls it; fails the first ``failures`` sends."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None]] = []
        self.failures = failures

    async def send_raw(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError("not acknowledged")
        self.sent.append((topic, value))


async def test_two_callers_sharing_what_the_dlq_holds_send_one_entry() -> None:
    """A consume loop and a rebuild's replay meeting the same record at once."""
    known, publisher = KnownDLQ(), CapturingPublisher()
    bad = record(b"not json")
    sent = await asyncio.gather(
        *(dead_letter(cast(Any, publisher), bad, "decode", "x", known=known) for _ in range(2))
    )
    assert sorted(sent) == [False, True]
    assert publisher.sent == [("market.ticks.v1.dlq", b"not json")]


async def test_a_send_that_failed_is_sent_by_the_retry() -> None:
    known, publisher = KnownDLQ(), CapturingPublisher(failures=1)
    bad = record(b"not json")
    with pytest.raises(KafkaTimeoutError):
        await dead_letter(cast(Any, publisher), bad, "decode", "x", known=known)
    assert await dead_letter(cast(Any, publisher), bad, "decode", "x", known=known)
    assert not await dead_letter(cast(Any, publisher), bad, "decode", "x", known=known)
    assert len(publisher.sent) == 1
