"""Decode -> handle -> produce -> record -> commit, and the rebuild on every assignment.

Ticks and alert changes are co-partitioned by symbol and consumed with the range assignor, so a
replica that owns partition ``p`` of ``market.ticks.v1`` also owns partition ``p`` of
``alerts.changes.v1``: it holds exactly the alerts its ticks can fire.

On every (re)assignment the replica starts from nothing: trigger state, last prices and
``pct_change`` window samples of the assigned partitions come from Postgres, the alerts from
``alerts.changes.v1`` read from the beginning to its end offset, and each tick partition is
positioned at the next offset recorded in Postgres (on first sight, the partition's current end).
Kafka's committed offsets are only informational (lag); Postgres holds the position that agrees
with the state.

Per tick batch: match, send the triggers, and take a snapshot of what the partition's record
will hold (the fired alerts' states, the last prices and window samples of the symbols it moved,
its next offset). At the end of the fetch's round (one batch per partition), wait once for the
broker's acknowledgements of every trigger sent, then write each partition's record in one
transaction, and only then commit and fetch again: a tick on the last partition of a fetch is not
held up by the round trips of the others. A batch that fires nothing is recorded at most every
``checkpoint_s`` (and on revocation and shutdown). A crash replays from the last record, which holds exactly the state
that went with that offset, so the replay fires the same alerts with the same sequences (same
event ids: the notifier delivers each once) and the last price before the crash is the one the
replay computes: no crossing is missed or doubled.

``pct_change`` windows follow the same rule: the samples recorded with an offset are the windows
as they stood at that offset and the replay adds the ticks after it, so a move that spans a
restart or a rebalance is seen whole. A kill -9 costs only the replay (at most ``checkpoint_s``
of ticks), never a sample; and no write is added per tick: each record carries the samples of
the symbols it moved (a window's monotonic deques, usually far fewer entries than its ticks).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from tickwatch_common.backoff import Backoff
from tickwatch_common.dead_letters import DeadLetters
from tickwatch_common.events import AlertState, Tick
from tickwatch_common.kafka import (
    Delivered,
    Publisher,
    dead_letter,
    decode,
    malformed_reason,
)
from tickwatch_common.log_identity import judge_position, read_log_identities
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, TICKS

from tickwatch_alert_engine.engine import Engine, StateRow
from tickwatch_alert_engine.matching import TriggerState
from tickwatch_alert_engine.metrics import (
    ALERTS_INDEXED,
    PARTITIONS_OWNED,
    POSITIONS_VOIDED,
    REBUILD_SECONDS,
    TICK_TO_TRIGGER_SECONDS,
    TRIGGERS_FIRED,
)
from tickwatch_alert_engine.store import TriggerStore

log = structlog.get_logger(__name__)

# A group-less consumer for one rebuild's read of alerts.changes.v1, started on entry and
# stopped (bounded) on exit: ``tickwatch_common.kafka.kafka_consumer`` with ``group=None``.
ReaderFactory = Callable[[], AbstractAsyncContextManager[AIOKafkaConsumer]]
REPLAY_BOUND_S = 120.0  # longest read of alerts.changes.v1 to its ends at a rebuild


class Progress(Protocol):
    """Where readiness learns the engine's real position (``tickwatch_common.consumer_progress``):
    the engine keeps its own positions, so it reports what it recorded, not what it fetched."""

    def handled(self, topic: str, partition: int, next_offset: int) -> None: ...


class AlertEngineWorker:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        publisher: Publisher,
        store: TriggerStore,
        change_reader: ReaderFactory,
        dead_letters: DeadLetters,
        checkpoint_s: float = 1.0,
        progress: Progress | None = None,
    ) -> None:
        self.consumer = consumer
        self.publisher = publisher
        self.store = store
        self.change_reader = change_reader
        self.dead_letters = dead_letters  # the malformed changes a rebuild reads go there once
        self.engine = Engine()
        self.owned: set[int] = set()
        self.next_offsets: dict[int, int] = {}
        self.tick_log = ""  # the identity of the tick log next_offsets count in (at the rebuild)
        self.progress = progress
        self.checkpoint_s = checkpoint_s
        self._dirty: dict[int, set[str]] = {}  # symbols moved since the partition's checkpoint
        self._saved_at: dict[int, float] = {}
        self.assigned = asyncio.Event()
        # aiokafka runs the rebalance callbacks beside the fetch loop, not inside getmany():
        # the lock keeps a rebuild and a batch from interleaving.
        self._lock = asyncio.Lock()
        self._assignment: set[TopicPartition] = set()
        # Set when a batch failed half-way: the in-memory state may hold effects that were never
        # recorded, so it is rebuilt from Postgres and the change log before the next batch.
        self._stale = False
        self._round = _Round()  # what the batches handled since the last fetch left to do
        self._uncommitted: dict[TopicPartition, int] = {}  # see _commit_informational
        self._committed_at = 0.0
        self.task: asyncio.Task[None] | None = None  # the consume loop, once started
        self.co_partitioned = True  # as of the last rebuild (readiness)
        self._rebuilds = 0
        self._metadata_task: asyncio.Task[None] | None = None

    def listener(self) -> ConsumerRebalanceListener:
        worker = self

        class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                worker.assigned.clear()
                await worker.flush()

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await worker.on_assigned(set(assigned))

        return Rebalance()

    # ------------------------------------------------------------------ assignment

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            self._assignment = assigned
            try:
                await self._rebuild(assigned)
            except Exception:
                # Postgres or the broker is away: the next batch retries the rebuild (and the
                # consume loop backs off) rather than running on a half-built state.
                log.exception("rebuild_failed")
                self._stale = True
                self.owned = {tp.partition for tp in assigned}
                self.assigned.set()

    async def _rebuild(self, assigned: set[TopicPartition]) -> None:
        started = time.perf_counter()
        owned = {tp.partition for tp in assigned if tp.topic == ALERT_CHANGES.name}
        tick_parts = {tp.partition for tp in assigned if tp.topic == TICKS.name}
        self.co_partitioned = owned == tick_parts
        self._rebuilds += 1
        if not self.co_partitioned:
            # Typically a topic just (re)created that the group's metadata did not hold yet:
            # refresh it until the group sees it and rebalances, or the engine has no alerts
            # for some of its ticks.
            log.warning("not_co_partitioned", changes=sorted(owned), ticks=sorted(tick_parts))
            if self._metadata_task is None or self._metadata_task.done():
                self._metadata_task = asyncio.create_task(self._refresh_until_rebuilt())
        engine = Engine()
        engine.preload(await self.store.load_states(owned))
        for symbol, (price, ts) in (await self.store.load_prices(owned)).items():
            engine.index.restore_price(symbol, price, ts)
        windows = await self.store.load_windows(owned)
        change_ends = await self._replay_changes(engine, owned)
        for symbol, samples in windows.items():  # the windows exist once their alerts do
            engine.index.restore_windows(symbol, samples)
        tick_tps = [TopicPartition(TICKS.name, p) for p in sorted(tick_parts)]
        offsets, tick_log = await self._tick_positions(tick_tps)
        for tp in tick_tps:
            self.consumer.seek(tp, offsets[tp.partition])
        for tp, end in change_ends.items():
            self.consumer.seek(tp, end)
        self.engine, self.owned, self.next_offsets = engine, owned, offsets
        self.tick_log = tick_log
        self._report(
            {
                TICKS.name: offsets,
                ALERT_CHANGES.name: {tp.partition: end for tp, end in change_ends.items()},
            }
        )
        settle_heap()
        self._dirty, self._saved_at = {}, {}
        self._round = _Round()
        self._uncommitted = {}
        self._stale = False
        ALERTS_INDEXED.set(len(engine.index))
        PARTITIONS_OWNED.set(len(owned))
        REBUILD_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "partitions_assigned",
            partitions=sorted(owned),
            change_ends={tp.partition: end for tp, end in change_ends.items()},
            alerts=len(engine.index),
            tick_offsets=offsets,
            seconds=round(time.perf_counter() - started, 3),
        )
        self.assigned.set()

    async def _refresh_until_rebuilt(self, bound_s: float = 300.0) -> None:
        """Refresh the consumer's metadata with backoff until the next rebuild (the group
        rebalances once the metadata shows partitions it lacked), for at most ``bound_s``."""
        rebuilds, deadline = self._rebuilds, time.monotonic() + bound_s
        backoff = Backoff(initial_s=0.2, cap_s=5.0)
        while self._rebuilds == rebuilds and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await self.consumer._client.force_metadata_update()
            await asyncio.sleep(backoff.next_delay())

    async def _tick_positions(self, tps: list[TopicPartition]) -> tuple[dict[int, int], str]:
        """Where each tick partition starts, judged against the log the broker has now.

        A recorded position is used only on the log it was recorded against and within the
        partition's bounds (:func:`judge_position`); otherwise it is void, said in one warning
        and a metric, and the partition starts at its end: ticks are live prices, and replaying
        a log the engine never saw would fire on prices long gone. First sight also starts at
        the end. Every start that is not the recorded position is recorded (with the log), so
        the fencing in ``save_batch`` never compares offsets of two logs."""
        identity = (await read_log_identities(self.consumer._client, [TICKS.name]))[TICKS.name]
        current = str(identity)
        if not tps:
            return {}, current
        ends = await self.consumer.end_offsets(tps)
        starts = await self.consumer.beginning_offsets(tps)
        stored = await self.store.positions(TICKS.name, [tp.partition for tp in tps])
        offsets: dict[int, int] = {}
        resets: dict[int, int] = {}
        for tp in tps:
            position = stored.get(tp.partition)
            verdict = judge_position(position, identity, starts[tp], ends[tp])
            if verdict.valid and position is not None:
                offsets[tp.partition] = position.offset
                if position.log != current:  # recorded before log identities: stamp it
                    resets[tp.partition] = position.offset
                continue
            offsets[tp.partition] = resets[tp.partition] = ends[tp]
            if position is not None and verdict.reason is not None:
                POSITIONS_VOIDED.labels(tp.topic, verdict.reason).inc()
                log.warning(
                    "position_void",
                    topic=tp.topic,
                    partition=tp.partition,
                    stored=position.offset,
                    stored_log=position.log,
                    current=ends[tp],
                    current_log=current,
                    start=starts[tp],
                    reason=verdict.reason,
                )
        if resets:
            await self.store.set_positions(TICKS.name, resets, current)
        return offsets, current

    async def _replay_changes(self, engine: Engine, owned: set[int]) -> dict[TopicPartition, int]:
        """Read the owned partitions of alerts.changes.v1 from the beginning to their end.

        The main consumer is then positioned at exactly these ends, so nothing falls between the
        two even where the end is under-reported (Tansu 0.6 answers the base offset of the last
        batch + 1): the rest is applied as live changes.
        """
        tps = [TopicPartition(ALERT_CHANGES.name, p) for p in sorted(owned)]
        if not tps:
            return {}
        async with self.change_reader() as reader:
            reader.assign(tps)
            ends: dict[TopicPartition, int] = await reader.end_offsets(tps)
            # Offset 0, not seek_to_beginning(): under load Tansu has answered the earliest
            # offset with the latest. Where the log starts later (compaction on Apache Kafka),
            # the reader's auto_offset_reset=earliest moves it to the real beginning.
            for tp in tps:
                reader.seek(tp, 0)
            remaining = {tp for tp in tps if ends[tp] > 0}
            deadline = time.monotonic() + REPLAY_BOUND_S
            while remaining:
                if time.monotonic() > deadline:  # the rebuild fails and is retried
                    raise TimeoutError(f"alert changes not read to their ends: {remaining}")
                batches = await reader.getmany(*remaining, timeout_ms=500, max_records=5000)
                for tp, records in batches.items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            break
                        try:
                            item = decode(record)
                        except (ValidationError, ValueError, KeyError) as exc:
                            # Into the DLQ here: the live consumer starts past it. Once, though
                            # every rebuild reads it: self.dead_letters remembers what this
                            # process sent, and reads what earlier ones left in the DLQ.
                            await dead_letter(
                                self.publisher,
                                record,
                                malformed_reason(exc),
                                str(exc),
                                known=self.dead_letters,
                            )
                            continue
                        if item.key is not None:
                            engine.apply_change(item.key, _alert(item))
                for tp in list(remaining):
                    if await reader.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            return ends

    # ------------------------------------------------------------------ batches

    async def handle(self, batch: list[Delivered]) -> None:
        while True:
            await self.assigned.wait()
            async with self._lock:
                if not self.assigned.is_set():
                    continue  # revoked while we waited: wait for the next assignment
                if self._stale:
                    await self._rebuild(self._assignment)  # seeks back to the recorded offsets
                if batch[0].partition not in self.owned:
                    return  # fetched before a rebalance; the new owner reads it from its offset
                tp = TopicPartition(batch[0].topic, batch[0].partition)
                try:
                    position = await self.consumer.position(tp)
                except Exception:
                    return  # no longer assigned
                if position <= batch[0].offset:
                    return  # fetched before a seek (rebuild): the consumer reads it again
                try:
                    await self._handle(batch)
                except BaseException:
                    # Cancelled too (SIGTERM cancels the consume task, whatever it is doing):
                    # triggers may be out without their record, so the flush on the way out
                    # must not record this state's offset without those fired states.
                    self._stale = True
                    raise
                return

    async def _handle(self, batch: list[Delivered]) -> None:
        if batch[0].topic == ALERT_CHANGES.name:
            for item in batch:
                if item.key is not None:
                    self.engine.apply_change(item.key, _alert(item))
            ALERTS_INDEXED.set(len(self.engine.index))
            tp = TopicPartition(batch[-1].topic, batch[-1].partition)
            self._round.commits[tp] = batch[-1].offset + 1
            self._report({tp.topic: {tp.partition: batch[-1].offset + 1}})
            return
        await self._handle_ticks(batch)

    async def _handle_ticks(self, batch: list[Delivered]) -> None:
        """Match and send the triggers; their acknowledgements and the record wait for the end
        of the round (:meth:`finish_round`), once for every partition of the fetch."""
        partition = batch[0].partition
        start = self.next_offsets.get(partition, 0)
        if batch[-1].offset < start and await self._log_replaced(partition, start):
            # Records behind the handled position, on a log that is not the one the position
            # counts in (or that ends before it): the consumer reset its position (offset out
            # of range) because the log was replaced or truncated under us. The rebuild judges
            # the positions against the log as it is now. (Behind on the same log is a batch
            # fetched before the rebuild's seek: dropped below, as before.)
            log.warning(
                "tick_log_went_back", partition=partition, offset=batch[-1].offset, handled=start
            )
            await self._rebuild(self._assignment)
            return
        fresh = [item for item in batch if item.offset >= start]
        if not fresh:
            return
        engine = self.engine
        triggers = []
        dirty = self._dirty.setdefault(partition, set())
        for item in fresh:
            tick = item.event
            assert isinstance(tick, Tick)
            triggers.extend(engine.on_tick(tick))
            dirty.add(tick.symbol)
        self.next_offsets[partition] = fresh[-1].offset + 1
        round_ = self._round
        if triggers:
            for t in triggers:
                round_.acks.append(await self.publisher.send(ALERTS_TRIGGERED, t, key=t.alert_id))
                TRIGGERS_FIRED.labels(t.condition).inc()
            last = fresh[-1].event
            assert isinstance(last, Tick)
            round_.newest_tick_ms = max(round_.newest_tick_ms, last.ts_ingest)
            states = {  # an alert that fired twice in the batch: its state after the second
                t.alert_id: StateRow(t.alert_id, t.symbol, _copy(state))
                for t in triggers
                if (state := engine.index.state(t.alert_id)) is not None
            }
            round_.records[partition] = self._snapshot(partition, list(states.values()))
            log.info("triggers_published", count=len(triggers), partition=partition)
        elif time.monotonic() - self._saved_at.get(partition, 0.0) >= self.checkpoint_s:
            round_.records[partition] = self._snapshot(partition, [])

    async def finish_round(self) -> None:
        """The end of a fetch's round: wait for the broker to hold every trigger sent, then
        record each partition that fired or is due, then commit (informational)."""
        async with self._lock:
            await self._finish_round()

    async def _finish_round(self) -> None:
        round_, self._round = self._round, _Round()
        if self._stale:
            return  # the rebuild replays from the last record; the same triggers go out again
        await self._advance_past_skipped(round_)
        try:
            if round_.acks:
                await asyncio.gather(*round_.acks)
                TICK_TO_TRIGGER_SECONDS.observe(
                    max(0.0, time.time() - round_.newest_tick_ms / 1000)
                )
            for record in round_.records.values():
                await self._save(record)
                round_.commits[TopicPartition(TICKS.name, record.partition)] = record.next_offset
        except BaseException:
            # Triggers may be out without their record: replay from the last record.
            self._stale = True
            raise
        self._uncommitted.update(round_.commits)
        if time.monotonic() - self._committed_at >= self.checkpoint_s:
            await self._commit_informational()

    async def _log_replaced(self, partition: int, handled: int) -> bool:
        """Whether the tick log is no longer the one ``handled`` counts in, or ends before it."""
        try:
            async with asyncio.timeout(10):
                identities = await read_log_identities(self.consumer._client, [TICKS.name])
                if str(identities[TICKS.name]) != self.tick_log:
                    return True
                tp = TopicPartition(TICKS.name, partition)
                end: int = (await self.consumer.end_offsets([tp]))[tp]
        except Exception:
            log.warning("log_identity_unknown", topic=TICKS.name, exc_info=True)
            return False
        return end < handled

    async def _advance_past_skipped(self, round_: _Round) -> None:
        """Move each owned tick partition's position past the records the consume loop
        dead-lettered instead of handing over: a batch of only malformed ticks never reaches
        :meth:`handle`, and without this its records would be read (and dead-lettered) again
        after every restart. At the end of a round every record before the consumer's position
        was either handled or dead-lettered (a failed batch makes the state stale instead)."""
        for partition in sorted(self.owned):
            handled = self.next_offsets.get(partition)
            if handled is None:
                continue
            try:
                async with asyncio.timeout(1.0):
                    position = await self.consumer.position(TopicPartition(TICKS.name, partition))
            except Exception:
                continue  # unassigned meanwhile or no valid position: the rebuild decides
            if position <= handled:
                continue
            self.next_offsets[partition] = position
            record = round_.records.get(partition)
            if record is not None:
                record.next_offset = position
            elif time.monotonic() - self._saved_at.get(partition, 0.0) >= self.checkpoint_s:
                round_.records[partition] = self._snapshot(partition, [])
            else:
                self._dirty.setdefault(partition, set())  # recorded at the next checkpoint

    def _report(self, positions: dict[str, dict[int, int]]) -> None:
        if self.progress is not None:
            for topic, offsets in positions.items():
                for partition, offset in offsets.items():
                    self.progress.handled(topic, partition, offset)

    async def _commit_informational(self) -> None:
        """Kafka's committed offsets only show lag (Postgres holds the real position), so they
        go out at most every ``checkpoint_s``: a commit per round would be a broker request per
        round, load that the tick-to-trigger latency pays for. A rebalance may refuse it."""
        commits, self._uncommitted = self._uncommitted, {}
        self._committed_at = time.monotonic()
        if commits:
            with contextlib.suppress(KafkaError, AssertionError):
                await self.consumer.commit(commits)

    def _snapshot(self, partition: int, states: list[StateRow]) -> _Record:
        """What a record of ``partition`` holds, taken now: the position of its next tick with
        the last prices and window samples of the symbols it moved since its last record."""
        index = self.engine.index
        prices: dict[str, tuple[Decimal, int]] = {}
        windows: dict[str, list[tuple[int, Decimal]]] = {}
        for symbol in self._dirty.pop(partition, ()):
            last_price = index.last_price(symbol)
            if last_price is not None:
                prices[symbol] = last_price
            if samples := index.window_samples(symbol):
                windows[symbol] = samples
        return _Record(
            partition, self.next_offsets[partition], self.tick_log, states, prices, windows
        )

    async def _save(self, record: _Record) -> None:
        """Record a snapshot: always for a batch that fired (with the fired alerts' states),
        otherwise at most every ``checkpoint_s``. After a crash the engine replays from the last
        record, and since the replay starts from exactly the state recorded with that offset,
        it fires the same alerts with the same sequences: nothing is lost, and nothing fired
        twice in effect."""
        await self.store.save_batch(
            record.states,
            record.prices,
            TICKS.name,
            record.partition,
            record.next_offset,
            record.windows,
            log=record.log,
        )
        self._saved_at[record.partition] = time.monotonic()
        self._report({TICKS.name: {record.partition: record.next_offset}})

    async def flush(self) -> None:
        """Finish the round in hand, then record every partition with unrecorded progress (on
        revocation and shutdown)."""
        if self._metadata_task is not None:
            self._metadata_task.cancel()
        async with self._lock:
            await self._finish_round()
            if self._stale:
                return  # never record a state that may hold unrecorded effects
            for partition in list(self._dirty):
                if partition in self.next_offsets:
                    record = self._snapshot(partition, [])
                    await self._save(record)
                    self._uncommitted[TopicPartition(TICKS.name, partition)] = record.next_offset
            await self._commit_informational()


@dataclass
class _Record:
    """One partition's record, as it stood when its batch was handled."""

    partition: int
    next_offset: int
    log: str  # the identity of the tick log next_offset counts in
    states: list[StateRow]
    prices: dict[str, tuple[Decimal, int]]
    windows: dict[str, list[tuple[int, Decimal]]]


@dataclass
class _Round:
    """What the batches of one fetch left to do once they are all handled."""

    acks: list[asyncio.Future[Any]] = field(default_factory=list)
    records: dict[int, _Record] = field(default_factory=dict)
    commits: dict[TopicPartition, int] = field(default_factory=dict)
    newest_tick_ms: int = 0


def settle_heap() -> None:
    """Collect what the previous index left, then move the new one out of the cyclic garbage
    collector's reach. A full collection walks every tracked object: with 1,000,000 alerts
    indexed that is about 1 s (``bench/bench_alerts.py`` prints it), and CPython starts one on
    its own whenever enough new objects outlive their youth, so without this the engine would
    stall a second at a time under load. Frozen objects are still freed by reference counting
    when an alert goes; only cycles among them would wait for the next rebuild."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _alert(item: Delivered) -> AlertState | None:
    event = item.event
    if event is None or isinstance(event, AlertState):
        return event
    raise TypeError(f"unexpected event on {item.topic}: {type(event).__name__}")


def _copy(state: TriggerState) -> TriggerState:
    return TriggerState(state.sequence, state.last_fired_ms, state.armed)
