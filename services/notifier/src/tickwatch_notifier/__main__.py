"""The notifier's composition root: settings -> resources -> tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer
from tickwatch_common.checks import kafka_check, postgres_check, publishing_check
from tickwatch_common.consumer_progress import ConsumerProgress
from tickwatch_common.kafka import (
    Publisher,
    consume,
    kafka_consumer,
    kafka_producer,
    stop_consuming,
)
from tickwatch_common.logging import configure_logging
from tickwatch_common.ops import Check, CheckResult, ops_server
from tickwatch_common.postgres import migrate, postgres_pool
from tickwatch_common.runtime import run
from tickwatch_common.settings import load_settings
from tickwatch_common.topics import ALERTS_TRIGGERED, NOTIFICATIONS_DLQ, NOTIFICATIONS_STATUS

from tickwatch_notifier.channels import (
    Channel,
    SendGridEmail,
    SmtpEmail,
    Webhook,
    guarded_connector,
)
from tickwatch_notifier.consumer import TriggerConsumer
from tickwatch_notifier.deliveries import MIGRATIONS, SCHEMA, DeliveryLog
from tickwatch_notifier.dispatcher import Dispatcher, Limits
from tickwatch_notifier.messages import Templates
from tickwatch_notifier.settings import Settings

SERVICE = "notifier"


@asynccontextmanager
async def email_channel(
    settings: Settings, templates: Templates, http: aiohttp.ClientSession
) -> AsyncIterator[Channel]:
    """SendGrid when SENDGRID_API_KEY is set, else SMTP; SMTP's pooled connections are closed
    (``QUIT``) on the way out, after the dispatcher's sends have finished."""
    if settings.sendgrid_api_key:
        yield SendGridEmail(
            templates,
            http,
            api_key=settings.sendgrid_api_key,
            api_url=settings.sendgrid_api_url,
            mail_from=settings.mail_from,
            timeout_s=settings.sendgrid_timeout_s,
        )
        return
    smtp = SmtpEmail(
        templates,
        mail_from=settings.mail_from,
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        tls=settings.smtp_tls,
        timeout_s=settings.smtp_timeout_s,
        pool_size=settings.smtp_pool_size,
        pool_max_messages=settings.smtp_pool_max_messages,
        pool_idle_s=settings.smtp_pool_idle_s,
    )
    try:
        yield smtp
    finally:
        await smtp.close()


def webhook_session(settings: Settings) -> aiohttp.ClientSession:
    """Webhooks' own session: unless private addresses are allowed, it connects only to public
    ones (checked at connect time, so DNS rebinding cannot reach inside)."""
    allow_private = settings.notifier_allow_private_webhooks
    return aiohttp.ClientSession(connector=None if allow_private else guarded_connector())


def limits(settings: Settings) -> Limits:
    return Limits(
        max_concurrent=settings.notifier_max_concurrent,
        max_per_destination=settings.notifier_max_per_destination,
        max_pending=settings.notifier_max_pending,
        max_attempts=settings.notifier_max_attempts,
        retry_base_s=settings.notifier_retry_base_s,
        retry_cap_s=settings.notifier_retry_cap_s,
        lease_s=settings.notifier_lease_s,
        sweep_interval_s=settings.notifier_sweep_interval_s,
    )


def outcome_pool_settings(settings: Settings) -> Settings:
    """The connections that record outcomes only, so none waits behind a claim (deliveries.py)."""
    size = settings.notifier_outcome_connections
    return settings.model_copy(update={"database_pool_min": size, "database_pool_max": size})


@asynccontextmanager
async def dispatching(
    deliveries: DeliveryLog, publisher: Publisher, channels: dict[str, Channel], limits: Limits
) -> AsyncIterator[Dispatcher]:
    """The dispatcher; on the way out, sends in flight finish (bounded) and the rest stop."""
    dispatcher = Dispatcher(deliveries, publisher, channels, limits)
    try:
        yield dispatcher
    finally:
        await dispatcher.close()


@asynccontextmanager
async def consuming(
    worker: TriggerConsumer,
    consumer: AIOKafkaConsumer,
    publisher: Publisher,
    dispatcher: Dispatcher,
    progress: ConsumerProgress,
) -> AsyncIterator[asyncio.Task[None]]:
    """The sweeper and the consume loop (``worker.task``). On the way out the sweeper stops and
    the batch in hand is finished, before the consumer leaves the group."""
    stop = asyncio.Event()
    sweeper = asyncio.create_task(dispatcher.run_sweeper())
    worker.task = asyncio.create_task(
        consume(consumer, worker.handle, dlq=publisher, commit=False, stop=stop, progress=progress)
    )
    try:
        yield worker.task
    finally:
        sweeper.cancel()
        await stop_consuming(worker.task, stop)
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


def readiness(
    worker: TriggerConsumer, publisher: Publisher, pool: asyncpg.Pool, progress: ConsumerProgress
) -> list[Check]:
    async def consumer_assigned() -> CheckResult:
        ok = worker.assigned.is_set() and worker.task is not None and not worker.task.done()
        return CheckResult(ok, "" if ok else "joining group")

    return [
        kafka_check(publisher.producer),
        publishing_check(publisher.outcomes),
        postgres_check(pool),
        Check("consumer", consumer_assigned),
        progress.check(),
    ]


@asynccontextmanager
async def running_notifier(
    settings: Settings, *, serve_ops: bool = True
) -> AsyncIterator[TriggerConsumer]:
    """The whole service, started; leaving the block stops it. Tests use it in-process."""
    await migrate(settings.database_url, SCHEMA, MIGRATIONS)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(postgres_pool(settings, SCHEMA))
        outcomes_pool = await stack.enter_async_context(
            postgres_pool(outcome_pool_settings(settings), SCHEMA)
        )
        publisher = await stack.enter_async_context(
            kafka_producer(
                settings, topics=[NOTIFICATIONS_STATUS, NOTIFICATIONS_DLQ, ALERTS_TRIGGERED]
            )
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        webhook_http = await stack.enter_async_context(webhook_session(settings))
        templates = Templates(settings.public_base_url)
        email = await stack.enter_async_context(email_channel(settings, templates, http))
        channels: dict[str, Channel] = {
            "email": email,
            "webhook": Webhook(
                webhook_http,
                timeout_s=settings.webhook_timeout_s,
                allow_private=settings.notifier_allow_private_webhooks,
            ),
        }
        deliveries = DeliveryLog(pool, outcomes=outcomes_pool)
        dispatcher = await stack.enter_async_context(
            dispatching(deliveries, publisher, channels, limits(settings))
        )
        consumer = await stack.enter_async_context(
            kafka_consumer(
                settings,
                group=settings.notifier_group,
                auto_offset_reset=settings.notifier_offset_reset,
                fetch_max_wait_ms=settings.notifier_fetch_max_wait_ms,
            )
        )
        worker = TriggerConsumer(consumer, dispatcher)
        consumer.subscribe(topics=[ALERTS_TRIGGERED.name], listener=worker.listener())
        progress = ConsumerProgress(
            settings.notifier_group, consumer, stall_s=settings.consumer_stall_s
        )
        if serve_ops:
            await stack.enter_async_context(
                ops_server(
                    SERVICE,
                    settings.ops_host,
                    settings.notifier_port,
                    readiness(worker, publisher, pool, progress),
                )
            )
        await stack.enter_async_context(
            consuming(worker, consumer, publisher, dispatcher, progress)
        )
        yield worker


async def main() -> None:
    settings = load_settings(Settings)
    configure_logging(SERVICE, settings.log_level)
    async with running_notifier(settings) as worker:
        assert worker.task is not None
        await worker.task  # runs until SIGTERM cancels us; a crash ends the process


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
