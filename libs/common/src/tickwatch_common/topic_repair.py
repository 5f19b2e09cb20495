"""What a topic lacks against the contract: the plan :func:`tickwatch_common.kafka.ensure_topics`
carries out. Plain data in, plain data out, so the rules are tested without a broker.

A topic is never shrunk (Kafka cannot) and never dropped: a missing topic is created, one with
fewer partitions than the contract is grown, and a contract config (``cleanup.policy=compact``
on ``alerts.changes.v1``) that differs is set, keeping the topic's other dynamic configs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    """The contract's word on one topic."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicState:
    """What the broker has: partition count and the topic's own (dynamic) configs."""

    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicPlan:
    """One topic's repairs; ``create`` excludes the others (a new topic is made right)."""

    spec: TopicSpec
    create: bool = False
    grow_from: int | None = None
    configs: Mapping[str, str] | None = None  # the full dynamic set to write, when it differs

    @property
    def changes(self) -> list[str]:
        """Human words for the log line of each repair."""
        words = []
        if self.grow_from is not None:
            words.append(f"partitions {self.grow_from} -> {self.spec.partitions}")
        if self.configs is not None:
            words.extend(f"{k}={v}" for k, v in self.spec.configs.items())
        return words


def plan_topics(specs: Iterable[TopicSpec], existing: Mapping[str, TopicState]) -> list[TopicPlan]:
    """The repairs each topic of ``specs`` needs; topics already right are left out."""
    plans = []
    for spec in specs:
        state = existing.get(spec.name)
        if state is None:
            plans.append(TopicPlan(spec, create=True))
            continue
        grow_from = state.partitions if state.partitions < spec.partitions else None
        differs = any(state.configs.get(k) != v for k, v in spec.configs.items())
        configs = {**state.configs, **spec.configs} if differs else None
        if grow_from is not None or configs is not None:
            plans.append(TopicPlan(spec, grow_from=grow_from, configs=configs))
    return plans
