"""Consumer progress: handled positions against the log end, exported as lag; a stall fails /ready.

A consumer that is "joined" is not a consumer that works: after a replaced log or a stuck
handler it can sit in its group for ever while its input grows (issue 9: sixteen minutes, no
alert, every ``/ready`` ready). :class:`ConsumerProgress` keeps, per assigned partition, the
position handled last (told by :func:`tickwatch_common.kafka.consume`, or by a service that
keeps its own positions) and the log end, exports the difference as
``tickwatch_consumer_lag{consumer,topic,partition}``, and its check fails when some partition
has lag, its handled position has not moved for longer than ``stall_s``, and the end has moved
since (input grows, the consumer makes no progress). A consumer that is merely behind but moving,
or idle on a quiet log, stays ready.

The decision is :func:`stalled`, a plain function of samples.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from tickwatch_common.metrics import CONSUMER_LAG
from tickwatch_common.ops import Check, CheckResult

END_OFFSETS_EVERY_S = 5.0  # an end_offsets() round trip at most this often (else highwater)
BROKER_CALL_TIMEOUT_S = 1.0  # each call of a check; /ready bounds the whole check at 2 s


@dataclass(frozen=True)
class Sample:
    """One look at a partition: when, the log end known then (``None``: not yet), the handled
    position (the next offset to handle)."""

    at: float
    end: int | None
    handled: int


def stalled(samples: Sequence[Sample], stall_s: float) -> bool:
    """Whether the partition sampled (oldest first) is stalled at the last sample: lag there,
    the handled position unchanged for longer than ``stall_s``, and the end grown meanwhile."""
    if not samples:
        return False
    latest = samples[-1]
    if latest.end is None or latest.end <= latest.handled:
        return False
    since = latest
    for sample in reversed(samples):
        if sample.handled != latest.handled:
            break
        since = sample
    if latest.at - since.at <= stall_s or since.end is None:
        return False
    return latest.end > since.end


@dataclass
class _Track:
    since: Sample  # the first sample at the current handled position
    latest: Sample


class ConsumerProgress:
    """Per consumer: handled positions vs the log end, exported as lag; a stall fails /ready."""

    def __init__(
        self,
        name: str,
        consumer: AIOKafkaConsumer,
        *,
        stall_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.stall_s = stall_s
        self.clock = clock
        self._tracks: dict[TopicPartition, _Track] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._ends_at = -END_OFFSETS_EVERY_S

    def handled(self, topic: str, partition: int, next_offset: int) -> None:
        """Records up to ``next_offset`` (exclusive) of the partition are handled."""
        tp = TopicPartition(topic, partition)
        end = self._end(tp)
        sample = Sample(self.clock(), end, next_offset)
        track = self._tracks.get(tp)
        if track is None or track.since.handled != next_offset:
            self._tracks[tp] = _Track(sample, sample)
        else:
            track.latest = sample
        if end is not None:
            self._export(tp, end - next_offset)

    def check(self) -> Check:
        return Check(f"consumer:{self.name}", self.probe, critical=True)

    async def probe(self) -> CheckResult:
        """Sample every assigned partition, export lag, and fail naming the stalled ones."""
        assigned = set(self.consumer.assignment())
        for tp in [tp for tp in self._tracks if tp not in assigned]:
            del self._tracks[tp]
            with suppress(KeyError):
                CONSUMER_LAG.remove(self.name, tp.topic, str(tp.partition))
        await self._refresh_ends(assigned)
        now = self.clock()
        stuck: list[str] = []
        total = 0
        for tp in sorted(assigned):
            track = self._tracks.get(tp)
            if track is None:
                start = await self._start_position(tp)
                if start is None:
                    continue
                sample = Sample(now, self._end(tp), start)
                track = self._tracks[tp] = _Track(sample, sample)
            end = self._end(tp)
            if track.since.end is None and end is not None:
                track.since = replace(track.since, end=end)  # first end seen at this position
            track.latest = Sample(now, end, track.latest.handled)
            if end is None:
                continue
            lag = max(0, end - track.latest.handled)
            total += lag
            self._export(tp, lag)
            if stalled([track.since, track.latest], self.stall_s):
                idle = now - track.since.at
                stuck.append(f"{tp.topic}[{tp.partition}] lag {lag}, no progress for {idle:.0f} s")
        if stuck:
            return CheckResult(False, f"{self.name} stalled: " + "; ".join(stuck))
        return CheckResult(True, f"lag {total} over {len(assigned)} partition(s)")

    def lag(self) -> dict[TopicPartition, int]:
        """The lag of every partition whose end is known (tests, logs)."""
        result = {}
        for tp, track in self._tracks.items():
            end = self._end(tp)
            if end is not None:
                result[tp] = max(0, end - track.latest.handled)
        return result

    def _end(self, tp: TopicPartition) -> int | None:
        """The newest end known: the last fetch's high watermark or the last end_offsets()."""
        try:
            highwater = self.consumer.highwater(tp)
        except (AssertionError, IllegalStateError):  # revoked meanwhile: aiokafka asserts
            highwater = None
        ends = [e for e in (highwater, self._ends.get(tp)) if e is not None]
        return max(ends) if ends else None

    async def _refresh_ends(self, assigned: set[TopicPartition]) -> None:
        """``end_offsets()`` at most every ``END_OFFSETS_EVERY_S``: a consumer that stopped
        fetching (its handler stuck) has a high watermark that no longer moves."""
        if not assigned or self.clock() - self._ends_at < END_OFFSETS_EVERY_S:
            return
        self._ends_at = self.clock()
        with suppress(Exception):
            async with asyncio.timeout(BROKER_CALL_TIMEOUT_S):
                self._ends.update(await self.consumer.end_offsets(list(assigned)))

    async def _start_position(self, tp: TopicPartition) -> int | None:
        """Where an assigned partition not handled yet starts: its position, else committed."""
        with suppress(Exception):
            async with asyncio.timeout(BROKER_CALL_TIMEOUT_S / 2):
                position: int = await self.consumer.position(tp)
                return position
        with suppress(Exception):
            async with asyncio.timeout(BROKER_CALL_TIMEOUT_S / 2):
                committed = await self.consumer.committed(tp)
                return committed if isinstance(committed, int) else None
        return None

    def _export(self, tp: TopicPartition, lag: int) -> None:
        CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(max(0, lag))
