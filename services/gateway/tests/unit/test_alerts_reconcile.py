"""The reconcile plan: what alerts.changes.v1 must be sent to match the tables, from data alone."""

from __future__ import annotations

from tickwatch_gateway.alerts.reconcile import TableEntry, plan_reconcile


def test_a_new_empty_log_gets_every_alert_and_no_tombstone() -> None:
    tables = {"a": TableEntry(1), "b": TableEntry(4), "gone": TableEntry(3, deleted=True)}
    plan = plan_reconcile({}, tables)
    assert plan.republish == ["a", "b"]
    assert plan.tombstone == []


def test_a_topic_that_is_up_to_date_gets_nothing() -> None:
    tables = {"a": TableEntry(2), "gone": TableEntry(3, deleted=True)}
    plan = plan_reconcile({"a": 2, "gone": None}, tables)
    assert (plan.republish, plan.tombstone, plan.unknown, plan.ahead) == ([], [], [], [])


def test_an_older_version_or_a_tombstone_of_a_live_alert_is_replaced() -> None:
    plan = plan_reconcile({"a": 1, "b": None}, {"a": TableEntry(2), "b": TableEntry(1)})
    assert plan.republish == ["a", "b"]


def test_a_deleted_alert_the_topic_still_holds_gets_a_tombstone() -> None:
    plan = plan_reconcile(
        {"gone": 3, "old": 0},
        {"gone": TableEntry(4, deleted=True), "old": TableEntry(2, deleted=True)},
    )
    assert plan.tombstone == ["gone", "old"]
    assert plan.republish == []


def test_alerts_the_tables_never_knew_are_left_alone_and_counted() -> None:
    plan = plan_reconcile({"foreign": 7, "foreign-deleted": None}, {"a": TableEntry(1)})
    assert plan.unknown == ["foreign"]
    assert plan.tombstone == []
    assert plan.republish == ["a"]


def test_a_topic_ahead_of_the_tables_is_reported_not_rewound() -> None:
    plan = plan_reconcile({"a": 5}, {"a": TableEntry(3)})
    assert plan.ahead == ["a"]
    assert plan.republish == []
