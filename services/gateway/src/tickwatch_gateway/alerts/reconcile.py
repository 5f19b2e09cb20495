"""What ``alerts.changes.v1`` must be sent so that it matches the gateway's tables. No I/O.

PostgreSQL is the state of record for alerts; the topic is a copy the engine rebuilds from. A
new log (a topic recreated, a cluster rebuilt) or a loss in between leaves the copy short. The
plan compares the latest version per alert on the topic with the tables and names what to send
again: the latest state of each alert the topic lacks or holds at an older version, and a
tombstone for each alert the topic still has that the tables record as deleted. An alert the
tables never knew is left alone and only counted: another writer may share the topic (tests,
a second deployment), and deleting what it owns is not the gateway's to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TableEntry:
    """An alert as the tables know it: its current version, or that it was deleted."""

    version: int
    deleted: bool = False


@dataclass(frozen=True)
class ReconcilePlan:
    republish: list[str] = field(default_factory=list)
    """Alerts whose latest state the topic lacks (absent, a tombstone, or an older version)."""
    tombstone: list[str] = field(default_factory=list)
    """Deleted alerts the topic still holds a state of."""
    unknown: list[str] = field(default_factory=list)
    """Alerts on the topic that the tables never knew: left alone."""
    ahead: list[str] = field(default_factory=list)
    """Alerts the topic holds at a newer version than the tables (a restored database?)."""


def plan_reconcile(
    topic: Mapping[str, int | None], tables: Mapping[str, TableEntry]
) -> ReconcilePlan:
    """``topic``: the latest version per alert id on the log, ``None`` for a tombstone.
    ``tables``: every alert the tables hold or record as deleted."""
    plan = ReconcilePlan()
    for alert_id, entry in sorted(tables.items()):
        on_topic = topic.get(alert_id)
        if entry.deleted:
            if on_topic is not None:
                plan.tombstone.append(alert_id)
        elif on_topic is None or on_topic < entry.version:
            plan.republish.append(alert_id)
        elif on_topic > entry.version:
            plan.ahead.append(alert_id)
    plan.unknown.extend(sorted(a for a, v in topic.items() if v is not None and a not in tables))
    return plan
