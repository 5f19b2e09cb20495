"""Which log a stored position belongs to, and whether it still holds there.

A position kept outside the broker (an offset in PostgreSQL) means something only against the
log it was read from. PostgreSQL outlives the broker's log whenever a topic is deleted and
recreated, a cluster is rebuilt or restored, or retention drops the oldest records; an offset
from the old log then points past the new log's end (nothing is ever read again) or at
unrelated records. The identity of a topic's log is (the cluster id, the topic id): both are
minted by the broker when the cluster or the topic is created, so a recreated topic of the same
name, or the same name on a new cluster, has another identity.

aiokafka 0.14 speaks Metadata only up to v5 (the cluster id, no topic ids), so this module
defines Metadata v10-v12 (the versions that carry ``topic_id``; v9+ are "flexible": compact
strings and arrays, tagged fields, request header v2, response header v1) with aiokafka's own
protocol building blocks. The client negotiates the highest version both sides speak.

:func:`judge_position` is the pure rule, with no I/O.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Literal, TypeAlias

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from tickwatch_common.backoff import Backoff
from tickwatch_common.kafka import client_options

# ----------------------------------------------------------------------------- the rule

Reason = Literal["new_log", "past_end", "before_start", "no_position"]
VOID_REASONS: tuple[Reason, ...] = ("new_log", "past_end", "before_start")


@dataclass(frozen=True)
class LogIdentity:
    """The identity of one topic's log: stable while the topic lives, new when it is recreated."""

    cluster_id: str
    topic_id: str  # the topic's UUID as text

    def __str__(self) -> str:
        """The form stored beside positions."""
        return f"{self.cluster_id}/{self.topic_id}"

    @classmethod
    def parse(cls, text: str) -> LogIdentity:
        cluster_id, sep, topic_id = text.rpartition("/")
        if not sep or not cluster_id or not topic_id:
            raise ValueError(f"not a log identity: {text!r}")
        return cls(cluster_id, topic_id)


@dataclass(frozen=True)
class StoredPosition:
    """A recorded next offset and the log it was recorded against (``None``: recorded before
    log identities were kept, so only the partition's bounds can judge it)."""

    offset: int
    log: str | None


@dataclass(frozen=True)
class Verdict:
    """Whether a stored position may be used; ``reason`` says why not."""

    valid: bool
    reason: Reason | None = None

    @property
    def voided(self) -> bool:
        """A position was recorded but does not hold here (worth a warning, unlike first sight)."""
        return self.reason in VOID_REASONS


def judge_position(
    stored: StoredPosition | None, current: LogIdentity, start: int, end: int
) -> Verdict:
    """Judge ``stored`` against the partition as the broker has it now: its log's identity and
    its first (``start``) and next-to-be-written (``end``) offsets.

    A position from another log is void even when its offset happens to fall inside the new
    log's bounds: those offsets name other records. On the same log, a position past the end
    (the log lost records) or before the start (retention or deletion passed it) is void too.
    A position equal to ``end`` is valid: nothing new has arrived since."""
    if stored is None:
        return Verdict(False, "no_position")
    if stored.log is not None and stored.log != str(current):
        return Verdict(False, "new_log")
    if stored.offset > end:
        return Verdict(False, "past_end")
    if stored.offset < start:
        return Verdict(False, "before_start")
    return Verdict(True)


# ----------------------------------------------------------------------------- the protocol


class Uuid(AbstractType[str]):  # type: ignore[misc]  # aiokafka is untyped here
    """Kafka's UUID: 16 bytes on the wire, text here; all zeroes is "none"."""

    @classmethod
    def encode(cls, value: str) -> bytes:
        return uuid.UUID(value).bytes

    @classmethod
    def decode(cls, data: BytesIO) -> str:
        raw = data.read(16)
        if len(raw) != 16:
            raise ValueError("Buffer underrun decoding UUID")
        return str(uuid.UUID(bytes=raw))


ZERO_UUID = str(uuid.UUID(int=0))

_BROKERS = (
    "brokers",
    CompactArray(
        ("node_id", Int32),
        ("host", CompactString("utf-8")),
        ("port", Int32),
        ("rack", CompactString("utf-8")),
        ("tags", TaggedFields),
    ),
)
_TOPICS = (
    "topics",
    CompactArray(
        ("error_code", Int16),
        ("name", CompactString("utf-8")),
        ("topic_id", Uuid),
        ("is_internal", Boolean),
        (
            "partitions",
            CompactArray(
                ("error_code", Int16),
                ("partition_index", Int32),
                ("leader_id", Int32),
                ("leader_epoch", Int32),
                ("replica_nodes", CompactArray(Int32)),
                ("isr_nodes", CompactArray(Int32)),
                ("offline_replicas", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("topic_authorized_operations", Int32),
        ("tags", TaggedFields),
    ),
)
_REQUEST_TOPICS = (
    "topics",
    CompactArray(("topic_id", Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)),
)


def _response_schema(*cluster_fields: tuple[str, type[Int32]]) -> Schema:
    return Schema(
        ("throttle_time_ms", Int32),
        _BROKERS,
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        _TOPICS,
        *cluster_fields,
        ("tags", TaggedFields),
    )


def _request_schema(*flags: str) -> Schema:
    return Schema(_REQUEST_TOPICS, *[(flag, Boolean) for flag in flags], ("tags", TaggedFields))


class MetadataResponse_v10(Response):  # type: ignore[misc]  # aiokafka is untyped here
    API_KEY = 3
    API_VERSION = 10
    SCHEMA = _response_schema(("cluster_authorized_operations", Int32))


class MetadataResponse_v11(MetadataResponse_v10):
    """v11 drops the cluster's authorized operations; v12 only makes topic names nullable."""

    API_VERSION = 11
    SCHEMA = _response_schema()


class MetadataResponse_v12(MetadataResponse_v11):
    API_VERSION = 12


class MetadataRequest_v10(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped here
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 10
    RESPONSE_TYPE = MetadataResponse_v10
    SCHEMA = _request_schema(
        "allow_auto_topic_creation",
        "include_cluster_authorized_operations",
        "include_topic_authorized_operations",
    )


class MetadataRequest_v11(MetadataRequest_v10):
    API_VERSION = 11
    RESPONSE_TYPE = MetadataResponse_v11
    SCHEMA = _request_schema("allow_auto_topic_creation", "include_topic_authorized_operations")


class MetadataRequest_v12(MetadataRequest_v11):
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12


MetadataWithIdsStruct: TypeAlias = MetadataRequest_v10 | MetadataRequest_v11 | MetadataRequest_v12


class MetadataWithIdsRequest(Request[MetadataWithIdsStruct]):  # type: ignore[misc]
    """Metadata of named topics, with their ids; never creates a topic."""

    API_KEY = 3

    def __init__(self, topics: Sequence[str]) -> None:
        self._topics: list[tuple[str, str, dict[int, bytes]]] = [
            (ZERO_UUID, name, {}) for name in topics
        ]

    def build(self, request_struct_class: type[MetadataWithIdsStruct]) -> MetadataWithIdsStruct:
        if request_struct_class.API_VERSION == 10:
            return request_struct_class(self._topics, False, False, False, {})
        return request_struct_class(self._topics, False, False, {})


# ----------------------------------------------------------------------------- the reader

UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5


class LogIdentityError(KafkaError):  # type: ignore[misc]
    """The broker could not tell a topic's log identity (unknown topic, no topic ids)."""


async def read_log_identities(
    client_or_bootstrap: AIOKafkaClient | str,
    topics: Sequence[str],
    *,
    timeout_s: float = 15.0,
) -> dict[str, LogIdentity]:
    """The current log identity of each of ``topics``, asked of the broker.

    ``client_or_bootstrap`` is a started aiokafka client (a consumer's or producer's, whose
    connections are reused) or bootstrap servers, for which a client is started and closed
    here. Transient answers (no node ready yet, a just-created topic without a leader) are
    retried with backoff until ``timeout_s``; an unknown topic, or a broker that cannot give
    topic ids, raises :class:`LogIdentityError` at once."""
    if isinstance(client_or_bootstrap, str):
        # A PLAINTEXT broker's address (tests); services pass their own client, which logs in.
        client = AIOKafkaClient(
            **client_options(client_or_bootstrap), request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            async with asyncio.timeout(timeout_s):
                await client.bootstrap()
            return await _read(client, topics, timeout_s)
        finally:
            await client.close()
    return await _read(client_or_bootstrap, topics, timeout_s)


async def _read(
    client: AIOKafkaClient, topics: Sequence[str], timeout_s: float
) -> dict[str, LogIdentity]:
    if not topics:
        return {}
    backoff = Backoff(initial_s=0.1, cap_s=2.0)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                return _identities(await _ask(client, topics), topics)
        except LogIdentityError:
            raise
        except (KafkaError, OSError, TimeoutError) as exc:
            delay = backoff.next_delay()
            if time.monotonic() + delay > deadline:
                raise LogIdentityError(f"log identities of {list(topics)}: {exc!r}") from exc
            await asyncio.sleep(delay)


async def _ask(client: AIOKafkaClient, topics: Sequence[str]) -> Response:
    node_id = client.get_random_node()
    if node_id is None:
        await client.force_metadata_update()
        raise _Transient("no broker known")
    try:
        response: Response = await client.send(node_id, MetadataWithIdsRequest(topics))
    except NotImplementedError as exc:  # the broker speaks no Metadata version with topic ids
        raise LogIdentityError(f"the broker gives no topic ids: {exc}") from exc
    return response


class _Transient(KafkaError):  # type: ignore[misc]
    retriable = True


def _identities(response: Response, topics: Sequence[str]) -> dict[str, LogIdentity]:
    cluster_id = response.cluster_id
    if not cluster_id:
        raise LogIdentityError("the broker gives no cluster id")
    found: dict[str, LogIdentity] = {}
    for error_code, name, topic_id, *_ in response.topics:
        if error_code == LEADER_NOT_AVAILABLE:
            raise _Transient(f"{name}: no leader yet")
        if error_code == UNKNOWN_TOPIC_OR_PARTITION:
            raise LogIdentityError(f"unknown topic {name}")
        if error_code:
            raise for_code(error_code)(f"metadata of {name}")
        if topic_id == ZERO_UUID:
            raise LogIdentityError(f"the broker gives no topic id for {name}")
        found[name] = LogIdentity(cluster_id, topic_id)
    missing = [t for t in topics if t not in found]
    if missing:
        raise LogIdentityError(f"no metadata for {missing}")
    return found
