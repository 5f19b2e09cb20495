"""What ensure_topics repairs, decided on plain data: create, grow, set configs; never shrink."""

from __future__ import annotations

from tickwatch_common.topic_repair import TopicSpec, TopicState, plan_topics

CHANGES = TopicSpec("alerts.changes.v1", 6, {"cleanup.policy": "compact"})
TICKS = TopicSpec("market.ticks.v1", 6)


def test_a_missing_topic_is_created() -> None:
    [plan] = plan_topics([TICKS], {})
    assert plan.create and plan.spec == TICKS


def test_a_topic_with_fewer_partitions_is_grown_to_the_contract() -> None:
    [plan] = plan_topics([TICKS], {"market.ticks.v1": TopicState(4)})
    assert (plan.create, plan.grow_from, plan.configs) == (False, 4, None)
    assert plan.changes == ["partitions 4 -> 6"]


def test_more_partitions_than_the_contract_are_left_alone() -> None:
    assert plan_topics([TICKS], {"market.ticks.v1": TopicState(12)}) == []


def test_a_differing_contract_config_is_set_keeping_the_topics_other_configs() -> None:
    state = TopicState(6, {"cleanup.policy": "delete", "retention.ms": "1000"})
    [plan] = plan_topics([CHANGES], {"alerts.changes.v1": state})
    assert plan.grow_from is None
    assert plan.configs == {"cleanup.policy": "compact", "retention.ms": "1000"}
    assert plan.changes == ["cleanup.policy=compact"]


def test_a_config_missing_from_the_topic_counts_as_differing() -> None:
    [plan] = plan_topics([CHANGES], {"alerts.changes.v1": TopicState(4)})
    assert plan.grow_from == 4 and plan.configs == {"cleanup.policy": "compact"}


def test_a_topic_that_matches_the_contract_needs_nothing() -> None:
    existing = {
        "alerts.changes.v1": TopicState(6, {"cleanup.policy": "compact"}),
        "market.ticks.v1": TopicState(6, {"retention.ms": "5"}),
    }
    assert plan_topics([CHANGES, TICKS], existing) == []
