"""The record behind the `publishing` readiness check, with a hand-driven clock."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
from tickwatch_common.checks import publishing_check
from tickwatch_common.ops import readiness
from tickwatch_common.publish_outcomes import PublishOutcomes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_send_fails_until_the_next_success_on_that_topic() -> None:
    outcomes = PublishOutcomes(clock=Clock())
    token = outcomes.sent("market.ticks.v1")
    outcomes.answered("market.ticks.v1", token, UnknownTopicOrPartitionError())
    failing = outcomes.failing()
    assert list(failing) == ["market.ticks.v1"]
    assert "UnknownTopicOrPartitionError" in failing["market.ticks.v1"]
    outcomes.answered("market.ticks.v1", outcomes.sent("market.ticks.v1"), None)
    assert outcomes.failing() == {}


def test_topics_are_judged_each_by_its_own_latest_outcome() -> None:
    outcomes = PublishOutcomes(clock=Clock())
    outcomes.record("alerts.triggered.v1", KafkaTimeoutError())
    outcomes.record("notifications.status.v1", None)
    assert list(outcomes.failing()) == ["alerts.triggered.v1"]


def test_a_send_unanswered_past_overdue_fails_then_its_answer_clears_it() -> None:
    clock = Clock()
    outcomes = PublishOutcomes(overdue_s=30, clock=clock)
    token = outcomes.sent("alerts.changes.v1")
    clock.now += 29
    assert outcomes.failing() == {}
    clock.now += 2
    assert "unanswered for 31 s" in outcomes.failing()["alerts.changes.v1"]
    outcomes.answered("alerts.changes.v1", token, None)
    assert outcomes.failing() == {}


def test_a_dropped_send_leaves_no_outcome() -> None:
    clock = Clock()
    outcomes = PublishOutcomes(overdue_s=1, clock=clock)
    outcomes.dropped("t", outcomes.sent("t"))
    clock.now += 10
    assert outcomes.failing() == {}


def test_the_check_answers_503_naming_the_topic_and_the_error() -> None:
    outcomes = PublishOutcomes(clock=Clock())
    outcomes.record("market.candles.v1", UnknownTopicOrPartitionError())
    code, body = asyncio.run(readiness([publishing_check(outcomes)]))
    checks = body["checks"]
    assert code == 503 and isinstance(checks, dict)
    assert "market.candles.v1: UnknownTopicOrPartitionError" in checks["publishing"]["detail"]
