"""The log-identity rule with plain data, and the wire format of the Metadata v10+ request."""

from __future__ import annotations

from io import BytesIO

import pytest
from aiokafka.protocol.types import TaggedFields
from tickwatch_common.log_identity import (
    LogIdentity,
    MetadataRequest_v12,
    MetadataResponse_v12,
    MetadataWithIdsRequest,
    StoredPosition,
    Uuid,
    judge_position,
)

LOG = LogIdentity("cluster-a", "8b1e2c4e-0000-4000-8000-000000000001")
RECREATED = LogIdentity("cluster-a", "8b1e2c4e-0000-4000-8000-000000000002")
NEW_CLUSTER = LogIdentity("cluster-b", LOG.topic_id)


def at(offset: int, log: LogIdentity | None = LOG) -> StoredPosition:
    return StoredPosition(offset, None if log is None else str(log))


def test_a_position_inside_the_same_log_is_valid() -> None:
    assert judge_position(at(40), LOG, start=0, end=100).valid
    assert judge_position(at(100), LOG, start=0, end=100).valid  # caught up: nothing new
    assert judge_position(at(10), LOG, start=10, end=100).valid


def test_a_position_from_a_recreated_topic_is_void_even_inside_the_bounds() -> None:
    verdict = judge_position(at(40), RECREATED, start=0, end=100)
    assert not verdict.valid and verdict.reason == "new_log" and verdict.voided


def test_a_position_from_another_cluster_is_void() -> None:
    assert judge_position(at(0), NEW_CLUSTER, start=0, end=0).reason == "new_log"


def test_a_position_past_the_end_is_void() -> None:
    # The reported failure: offsets like 2538 restored against a log that restarted at 0.
    assert judge_position(at(2538), LOG, start=0, end=0).reason == "past_end"


def test_a_position_before_the_start_is_void() -> None:
    assert judge_position(at(5), LOG, start=6, end=100).reason == "before_start"


def test_a_position_recorded_before_identities_is_judged_by_its_bounds() -> None:
    assert judge_position(at(40, log=None), LOG, start=0, end=100).valid
    assert judge_position(at(2538, log=None), LOG, start=0, end=3).reason == "past_end"


def test_no_position_is_first_sight_not_a_void() -> None:
    verdict = judge_position(None, LOG, start=0, end=100)
    assert not verdict.valid and verdict.reason == "no_position" and not verdict.voided


def test_the_stored_form_round_trips() -> None:
    assert str(LOG) == "cluster-a/8b1e2c4e-0000-4000-8000-000000000001"
    assert LogIdentity.parse(str(LOG)) == LOG
    with pytest.raises(ValueError):
        LogIdentity.parse("no-slash")


def test_the_request_is_flexible_and_carries_a_zero_topic_id() -> None:
    request = MetadataWithIdsRequest(["market.ticks.v1"]).prepare({3: (0, 12)})
    assert isinstance(request, MetadataRequest_v12) and request.FLEXIBLE_VERSION
    body = request.encode()
    # topics: compact array of 1 (varint 2), a 16-byte zero UUID, compact string "market.ticks.v1"
    assert body[:17] == b"\x02" + bytes(16)
    assert body[17:33] == bytes([16]) + b"market.ticks.v1"
    # tags, allow_auto_topic_creation false, include_topic_authorized_operations false, tags
    assert body[33:] == b"\x00\x00\x00\x00"


def test_a_v10_broker_gets_the_v10_request() -> None:
    request = MetadataWithIdsRequest(["t"]).prepare({3: (0, 10)})
    assert request.API_VERSION == 10


def test_a_v12_response_decodes_the_topic_id() -> None:
    topic_id = "0f0e0d0c-0b0a-4908-8706-050403020100"
    raw = (
        b"\x00\x00\x00\x00"  # throttle
        + b"\x02"  # one broker
        + b"\x00\x00\x00\x01"
        + b"\x0alocalhost"
        + b"\x00\x00\x23\x84"
        + b"\x00"
        + b"\x00"
        + b"\x0acluster-a"
        + b"\x00\x00\x00\x01"  # controller
        + b"\x02"  # one topic
        + b"\x00\x00"
        + b"\x02t"
        + Uuid.encode(topic_id)
        + b"\x00"
        + b"\x01"  # no partitions
        + b"\x80\x00\x00\x00"
        + TaggedFields.encode({})
        + TaggedFields.encode({})
    )
    response = MetadataResponse_v12.decode(BytesIO(raw))
    assert response.cluster_id == "cluster-a"
    assert response.topics[0][:3] == (0, "t", topic_id)
