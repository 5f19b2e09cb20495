"""Who may do what on the bus: each service's Kafka principal, the topics it writes and reads,
its consumer groups and the topics it may create; once, as data, and the ACLs that follow.

Anyone who can write ``alerts.triggered.v1`` can have the notifier mail anyone, and anyone who
can write ``alerts.changes.v1`` can plant an alert: so each service authenticates as its own
principal (SASL/SCRAM, :func:`tickwatch_common.kafka.client_options`), and the broker lets it
write only its own topics and read only what it consumes. From this map come the prod overlay's
``kafka-acls.sh`` (``python -m tickwatch_common.bus_access``, checked against the file by a
test) and the ACLs of the test broker (:mod:`tickwatch_common.kafka_acls`).

What the map says, and why:

- ``produces``: the topics a service writes, its dead-letter topics included (a consumer group
  writes ``<topic>.dlq`` for the malformed records of the topics it dead-letters).
- ``consumes``: the topics it reads, with or without a group, and the ``.dlq`` topics it writes
  (:class:`~tickwatch_common.dead_letters.DeadLetters` reads them so as not to write a record
  twice).
- ``groups``: prefixes of its consumer group ids (the defaults of its ``*_GROUP`` settings).
- ``ensures``: what its producer checks at start (``kafka_producer(topics=...)``: each topic
  and its ``.dlq``, as the service's composition root lists them).
- ``creates``: those of ``ensures`` it may create, grow and reconfigure: only its own topics
  and the ``.dlq`` topics of what it writes or dead-letters. The rest it may only describe
  (``DESCRIBE_CONFIGS``): a service never changes the retention of a topic it does not own.
  The init Job creates every topic before the services start.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Literal

from tickwatch_common.topics import (
    ALERT_CHANGES,
    ALERTS_TRIGGERED,
    CANDLES,
    INSTRUMENTS,
    NOTIFICATIONS_DLQ,
    NOTIFICATIONS_STATUS,
    PORTFOLIO_VALUATIONS,
    TICKS,
    Topic,
    all_topic_specs,
)

PRINCIPAL_PREFIX = "tickwatch-"
SCRIPT_PATH = "deploy/k8s/overlays/prod/kafka-acls.sh"


@dataclass(frozen=True)
class BusAccess:
    """One principal's rights on the bus (see the module's docstring)."""

    produces: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    creates: tuple[str, ...] = ()


def _with_dlq(*topics: Topic) -> tuple[str, ...]:
    return tuple(name for t in topics for name in (t.name, t.dlq))


def _names(*topics: Topic) -> tuple[str, ...]:
    return tuple(t.name for t in topics)


def _dlqs(*topics: Topic) -> tuple[str, ...]:
    return tuple(t.dlq for t in topics)


ACCESS: dict[str, BusAccess] = {
    # Publishes prices and instruments; reads back only its own candles, without a group (in
    # replay mode, the history it already published before it publishes more).
    "ingestor": BusAccess(
        produces=_names(TICKS, CANDLES, INSTRUMENTS),
        consumes=_names(CANDLES),
        ensures=_with_dlq(TICKS, CANDLES, INSTRUMENTS),
        creates=_with_dlq(TICKS, CANDLES, INSTRUMENTS),
    ),
    # Publishes alert changes (the outbox); reads the market, triggers, delivery outcomes,
    # valuations and its own alert changes (the changes log); its groups dead-letter candles
    # (gateway-candle-store) and delivery outcomes (gateway-alerts; the notifier's group
    # dead-letters triggers).
    "gateway": BusAccess(
        produces=(ALERT_CHANGES.name, *_dlqs(CANDLES, NOTIFICATIONS_STATUS)),
        consumes=(
            *_names(TICKS, CANDLES, ALERTS_TRIGGERED, NOTIFICATIONS_STATUS),
            *_names(PORTFOLIO_VALUATIONS, ALERT_CHANGES),
            *_dlqs(CANDLES, NOTIFICATIONS_STATUS),
        ),
        groups=("gateway-",),
        ensures=_with_dlq(CANDLES, ALERT_CHANGES, ALERTS_TRIGGERED, NOTIFICATIONS_STATUS),
        creates=(*_with_dlq(ALERT_CHANGES), *_dlqs(CANDLES, NOTIFICATIONS_STATUS)),
    ),
    # The only writer of triggers; reads ticks and alert changes (its group dead-letters both).
    "alert-engine": BusAccess(
        produces=(ALERTS_TRIGGERED.name, *_dlqs(TICKS, ALERT_CHANGES)),
        consumes=(*_names(TICKS, ALERT_CHANGES), *_dlqs(TICKS, ALERT_CHANGES)),
        groups=("alert-engine",),
        ensures=_with_dlq(ALERTS_TRIGGERED, TICKS, ALERT_CHANGES),
        creates=(*_with_dlq(ALERTS_TRIGGERED), *_dlqs(TICKS, ALERT_CHANGES)),
    ),
    # Reads triggers (its group dead-letters them); publishes delivery outcomes and dead letters.
    "notifier": BusAccess(
        produces=(*_names(NOTIFICATIONS_STATUS, NOTIFICATIONS_DLQ), ALERTS_TRIGGERED.dlq),
        consumes=(ALERTS_TRIGGERED.name, ALERTS_TRIGGERED.dlq),
        groups=("notifier",),
        ensures=_with_dlq(NOTIFICATIONS_STATUS, NOTIFICATIONS_DLQ, ALERTS_TRIGGERED),
        creates=(*_with_dlq(NOTIFICATIONS_STATUS, NOTIFICATIONS_DLQ), ALERTS_TRIGGERED.dlq),
    ),
    # Reads ticks and instruments without a group; publishes valuations.
    "portfolio": BusAccess(
        produces=_names(PORTFOLIO_VALUATIONS),
        consumes=_names(TICKS, INSTRUMENTS),
        ensures=_with_dlq(PORTFOLIO_VALUATIONS),
        creates=_with_dlq(PORTFOLIO_VALUATIONS),
    ),
    # The init Job (python -m tickwatch_devstack init): creates and repairs every topic.
    "init": BusAccess(
        ensures=tuple(name for name, _, _ in all_topic_specs()),
        creates=tuple(name for name, _, _ in all_topic_specs()),
    ),
}


def principal(service: str) -> str:
    """The Kafka user a service authenticates as (``KAFKA_SASL_USERNAME``)."""
    return f"{PRINCIPAL_PREFIX}{service}"


Resource = Literal["Topic", "Group"]
Pattern = Literal["LITERAL", "PREFIXED"]
Operation = Literal[
    "Read", "Write", "Describe", "Create", "Alter", "DescribeConfigs", "AlterConfigs"
]


MANAGE: tuple[Operation, ...] = ("Create", "Alter", "AlterConfigs", "DescribeConfigs")


@dataclass(frozen=True)
class AclBinding:
    """One ALLOW rule, from any host, named as ``kafka-acls`` names it."""

    principal: str  # "User:tickwatch-gateway"
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


def acl_bindings(access: dict[str, BusAccess] | None = None) -> list[AclBinding]:
    """Every ALLOW rule of ``access`` (default :data:`ACCESS`), in a stable order. Write implies
    Describe, Read implies Describe; a group needs Read (join, commit)."""
    bindings: list[AclBinding] = []
    for service, rights in (ACCESS if access is None else access).items():
        user = f"User:{principal(service)}"
        rules: list[tuple[Resource, str, Pattern, tuple[Operation, ...]]] = [
            *(("Topic", t, "LITERAL", ("Write",)) for t in rights.produces),
            *(("Topic", t, "LITERAL", ("Read",)) for t in rights.consumes),
            *(("Group", g, "PREFIXED", ("Read",)) for g in rights.groups),
            *(("Topic", t, "LITERAL", MANAGE) for t in rights.creates),
            *(
                ("Topic", t, "LITERAL", ("Describe", "DescribeConfigs"))
                for t in rights.ensures
                if t not in rights.creates
            ),
        ]
        for resource, name, pattern, ops in rules:
            bindings.extend(AclBinding(user, resource, name, pattern, op) for op in ops)
    return bindings


def acl_script(bindings: list[AclBinding] | None = None) -> str:
    """A POSIX shell script adding ``bindings`` with Apache Kafka's own ``kafka-acls`` tool; one
    command per principal and resource, its operations together (``--add`` is idempotent)."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for b in acl_bindings() if bindings is None else bindings:
        grouped.setdefault((b.principal, b.resource, b.name, b.pattern), []).append(b.operation)
    lines = [
        "#!/bin/sh",
        "# GENERATED by `python -m tickwatch_common.bus_access` from"
        " libs/common/src/tickwatch_common/bus_access.py:",
        "# do not edit (a test checks this file equals the generator's output).",
        "#",
        "# The ACLs of Tickwatch's principals on an Apache Kafka cluster whose authorizer denies",
        "# what no ACL allows (allow.everyone.if.no.acl.found=false). Each service writes only its",
        "# own topics and reads only what it consumes (deploy/k8s/README.md, Authenticated bus).",
        "#   KAFKA_BOOTSTRAP=kafka-0:9092 KAFKA_ADMIN_CONFIG=admin.properties sh kafka-acls.sh",
        "# KAFKA_ADMIN_CONFIG: client properties of a principal allowed to alter ACLs;",
        "# KAFKA_ACLS: the tool (default kafka-acls.sh, as in Apache Kafka's bin/).",
        "set -eu",
        ': "${KAFKA_BOOTSTRAP:?the brokers, host:port[,host:port]}"',
        ': "${KAFKA_ADMIN_CONFIG:?a client properties file of a principal allowed to alter ACLs}"',
        "acl() {",
        '  "${KAFKA_ACLS:-kafka-acls.sh}" --bootstrap-server "$KAFKA_BOOTSTRAP" \\',
        '    --command-config "$KAFKA_ADMIN_CONFIG" --add "$@"',
        "}",
    ]
    current = ""
    for (user, resource, name, pattern), ops in grouped.items():
        if user != current:
            lines += ["", f"# {user}"]
            current = user
        words = ["acl", "--allow-principal", user]
        for op in ops:
            words += ["--operation", op]
        words += [f"--{resource.lower()}", name, "--resource-pattern-type", pattern.lower()]
        lines.append(" ".join(shlex.quote(w) for w in words))
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print the ACL script (``> deploy/k8s/overlays/prod/kafka-acls.sh``)."""
    sys.stdout.write(acl_script())


if __name__ == "__main__":
    main()
