"""Wiring of the alerts: their store, list cache, the outbox relay, the reconcile of
``alerts.changes.v1`` with the tables, the history consumer group and the live push.

:func:`install_alerts` appends one cleanup context per resource after the market's (it uses
the runtime's pool, Redis and publisher, and the market's WebSocket hub).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from tickwatch_common.consumer_progress import ConsumerProgress
from tickwatch_common.kafka import Publisher, consume, kafka_consumer
from tickwatch_common.ops import Check
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, NOTIFICATIONS_STATUS

from tickwatch_gateway.alerts import ops_routes, routes
from tickwatch_gateway.alerts.changes_log import ChangesLogWatch, Reconciler
from tickwatch_gateway.alerts.events import AlertPush, AlertRecorder
from tickwatch_gateway.alerts.keys import (
    ALERT_CACHE,
    ALERT_PUSH_POSITIONED,
    ALERT_RELAY,
    ALERT_SETTINGS,
    ALERT_STORE,
    CHANGES_WATCH,
    RECONCILER,
)
from tickwatch_gateway.alerts.list_cache import AlertListCache
from tickwatch_gateway.alerts.outbox import OutboxRelay
from tickwatch_gateway.alerts.settings import AlertSettings
from tickwatch_gateway.alerts.store import AlertStore
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.market import HUB
from tickwatch_gateway.runtime.consumers import start_at_end
from tickwatch_gateway.runtime.keys import CHECKS, FEED, POOL, PUBLISHER, REDIS, TASKS
from tickwatch_gateway.runtime.shutdown import stop_tasks

# Produced to (alert changes) or dead-lettered from (the consumer groups' topics).
PRODUCED = [ALERT_CHANGES, ALERTS_TRIGGERED, NOTIFICATIONS_STATUS]


def install_alerts(app: web.Application, settings: AlertSettings) -> None:
    """After the market (uses its hub) and the runtime's resources."""
    app[ALERT_SETTINGS] = settings
    ops_routes.add_routes(app)

    async def stores(app: web.Application) -> AsyncIterator[None]:
        app[ALERT_STORE] = AlertStore(app[POOL], settings.alerts_max_active_per_user)
        app[ALERT_CACHE] = AlertListCache(app[REDIS], settings.alerts_list_cache_ttl_s, app[FEED])
        yield

    async def outbox_and_reconcile(app: web.Application) -> AsyncIterator[None]:
        publisher = app[PUBLISHER]
        relay = app[ALERT_RELAY] = OutboxRelay(
            app[POOL],
            publisher,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
        )
        reconciler = app[RECONCILER] = Reconciler(
            app[POOL], app[ALERT_STORE], settings, settings.reconcile_timeout_s
        )
        watch = app[CHANGES_WATCH] = ChangesLogWatch(
            app[POOL],
            reconciler,
            lambda: publisher.producer.client,
            interval_s=settings.changes_log_check_interval_s,
        )
        relay.on_failure = watch.poke
        tasks = [
            asyncio.create_task(relay.run(), name="alert-outbox-relay"),
            # In the background: the start-up reconcile (bounded by RECONCILE_TIMEOUT_S) must
            # not hold up readiness; the relay publishes what it queues as it comes.
            asyncio.create_task(watch.run(), name="alert-changes-log-watch"),
        ]
        app[TASKS].extend(tasks)
        try:
            yield
        finally:
            await stop_tasks(tasks, settings.shutdown_timeout_s)

    async def history_consumer(app: web.Application) -> AsyncIterator[None]:
        recorder = AlertRecorder(app[ALERT_STORE], app[ALERT_CACHE])
        task = asyncio.create_task(
            record_alert_events(settings, recorder, app[PUBLISHER], app[CHECKS]),
            name="alert-events",
        )
        app[TASKS].append(task)
        try:
            yield
        finally:
            await stop_tasks([task], settings.shutdown_timeout_s)

    async def live_push(app: web.Application) -> AsyncIterator[None]:
        positioned = app[ALERT_PUSH_POSITIONED] = asyncio.Event()
        task = asyncio.create_task(
            push_triggers(settings, AlertPush(app[HUB]), positioned), name="alert-push"
        )
        app[TASKS].append(task)
        try:
            yield
        finally:
            await stop_tasks([task], settings.shutdown_timeout_s)

    app.cleanup_ctx.extend([stores, outbox_and_reconcile, history_consumer, live_push])


def register_alerts(api: Api) -> None:
    """``/alerts`` in the OpenAPI document."""
    routes.register(api)


async def record_alert_events(
    settings: AlertSettings, recorder: AlertRecorder, publisher: Publisher, checks: list[Check]
) -> None:
    """Triggers and delivery outcomes into the alert history (a consumer group)."""
    topics = [ALERTS_TRIGGERED, NOTIFICATIONS_STATUS]
    async with kafka_consumer(
        settings,
        group=settings.alerts_consumer_group,
        topics=topics,
    ) as consumer:
        # A stalled history (a poison record, a replaced log) turns /ready 503 naming it.
        progress = ConsumerProgress(
            settings.alerts_consumer_group, consumer, stall_s=settings.consumer_stall_s
        )
        checks.append(check := progress.check())
        try:
            await consume(
                consumer,
                recorder.handle,
                dlq=publisher,
                progress=progress,
                # The notifier's group dead-letters alerts.triggered.v1; this one only the
                # delivery statuses, which it alone reads (one entry per malformed record).
                dead_letter_topics=[NOTIFICATIONS_STATUS.name],
            )
        finally:
            checks.remove(check)


async def push_triggers(
    settings: AlertSettings, push: AlertPush, positioned: asyncio.Event
) -> None:
    """Every trigger, on every replica, to its owner's WebSocket connections here. Malformed
    records are only logged: :func:`record_alert_events`' group dead-letters them once."""
    async with kafka_consumer(
        settings, group=None, topics=[ALERTS_TRIGGERED], auto_offset_reset="latest"
    ) as consumer:
        await start_at_end(consumer)
        positioned.set()
        await consume(consumer, push.handle, dlq=None, commit=False)
