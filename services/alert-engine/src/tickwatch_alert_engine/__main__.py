"""The alert engine's composition root: settings -> resources -> tasks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from tickwatch_common.checks import kafka_check, postgres_check, publishing_check
from tickwatch_common.consumer_progress import ConsumerProgress
from tickwatch_common.kafka import (
    Publisher,
    consume,
    dead_letters_of,
    kafka_consumer,
    kafka_producer,
    stop_consuming,
)
from tickwatch_common.logging import configure_logging
from tickwatch_common.ops import Check, CheckResult, ops_server
from tickwatch_common.postgres import migrate, postgres_pool
from tickwatch_common.runtime import run
from tickwatch_common.settings import load_settings
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, SYMBOL_PARTITIONS, TICKS

from tickwatch_alert_engine.consumer import AlertEngineWorker
from tickwatch_alert_engine.settings import Settings
from tickwatch_alert_engine.store import MIGRATIONS, SCHEMA, TriggerStore

SERVICE = "alert-engine"


@asynccontextmanager
async def consuming(
    worker: AlertEngineWorker, consumer: AIOKafkaConsumer, publisher: Publisher, settings: Settings
) -> AsyncIterator[asyncio.Task[None]]:
    """The consume loop, as ``worker.task``. On the way out it finishes the batch in hand (a
    cancelled batch is replayed, which is safe but republishes its triggers) and the worker
    records what it handled, before the consumer leaves the group."""
    stop = asyncio.Event()
    worker.task = asyncio.create_task(
        consume(
            consumer,
            worker.handle,
            dlq=publisher,
            commit=False,
            max_records=settings.alert_engine_max_batch,
            stop=stop,
            after_round=worker.finish_round,
            dead_letters=worker.dead_letters,  # the rebuilds dead-letter malformed changes too
        )
    )
    try:
        yield worker.task
    finally:
        await stop_consuming(worker.task, stop)
        with contextlib.suppress(Exception):
            await worker.flush()  # fewer ticks to replay at the next start


def readiness(
    worker: AlertEngineWorker, publisher: Publisher, pool: asyncpg.Pool, progress: ConsumerProgress
) -> list[Check]:
    async def assigned() -> CheckResult:
        ok = worker.assigned.is_set() and worker.task is not None and not worker.task.done()
        if ok and not worker.co_partitioned:
            return CheckResult(False, "tick and alert-change partitions differ")
        return CheckResult(ok, f"partitions {sorted(worker.owned)}" if ok else "joining group")

    return [
        kafka_check(publisher.producer),
        publishing_check(publisher.outcomes),
        postgres_check(pool),
        Check("partitions", assigned),
        progress.check(),
    ]


@asynccontextmanager
async def running_alert_engine(
    settings: Settings, *, serve_ops: bool = True
) -> AsyncIterator[AlertEngineWorker]:
    """The whole service, started; leaving the block stops it. Tests use it in-process."""
    await migrate(settings.database_url, SCHEMA, MIGRATIONS)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(postgres_pool(settings, SCHEMA))
        publisher = await stack.enter_async_context(
            kafka_producer(settings, topics=[ALERTS_TRIGGERED, TICKS, ALERT_CHANGES], linger_ms=0)
        )
        consumer = await stack.enter_async_context(
            kafka_consumer(
                settings,
                group=settings.alert_engine_group,
                partition_assignment_strategy=(RangePartitionAssignor,),
                fetch_max_wait_ms=settings.alert_engine_fetch_max_wait_ms,
            )
        )
        dead_letters = dead_letters_of(publisher)  # reads the DLQs only when first asked
        stack.push_async_callback(dead_letters.close)
        # Readiness follows the positions the engine records (it keeps its own, in Postgres),
        # not what the consumer fetched: a replaced log or a stuck record turns /ready 503.
        progress = ConsumerProgress(
            settings.alert_engine_group, consumer, stall_s=settings.consumer_stall_s
        )
        worker = AlertEngineWorker(
            consumer,
            publisher,
            TriggerStore(pool, SYMBOL_PARTITIONS),
            # Group-less: each rebuild reads alerts.changes.v1 from its beginning with its own.
            # It keeps aiokafka's short fetch wait (500 ms), not KAFKA_FETCH_MAX_WAIT_MS: the
            # rebuild runs inside the rebalance, and with 2 s waits two replicas' rebuilds ran
            # past the session timeout, again and again (test_two_replicas_split_partitions...).
            functools.partial(kafka_consumer, settings, group=None, fetch_max_wait_ms=500),
            dead_letters,
            checkpoint_s=settings.alert_engine_checkpoint_ms / 1000,
            progress=progress,
        )
        consumer.subscribe(topics=[TICKS.name, ALERT_CHANGES.name], listener=worker.listener())
        if serve_ops:
            await stack.enter_async_context(
                ops_server(
                    SERVICE,
                    settings.ops_host,
                    settings.alert_engine_port,
                    readiness(worker, publisher, pool, progress),
                )
            )
        await stack.enter_async_context(consuming(worker, consumer, publisher, settings))
        yield worker


async def main() -> None:
    settings = load_settings(Settings)
    configure_logging(SERVICE, settings.log_level)
    async with running_alert_engine(settings) as worker:
        assert worker.task is not None
        await worker.task  # runs until SIGTERM cancels us; a crash ends the process


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
