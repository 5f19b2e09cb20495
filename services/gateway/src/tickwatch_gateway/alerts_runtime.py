"""Wiring of the alerts into the gateway app: their store, cache, relay, the reconcile of
``alerts.changes.v1`` with the tables, and consumers.

:func:`install_alerts` adds :func:`alerts_resources` to the app's cleanup context after the
gateway's own resources (it uses their pool, Redis guard, publisher and hub), and the routes
are :mod:`tickwatch_gateway.routes.alerts`, listed in ``ROUTE_MODULES``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from tickwatch_common.consumer_progress import ConsumerProgress
from tickwatch_common.kafka import consume, kafka_consumer
from tickwatch_common.topics import ALERTS_TRIGGERED, NOTIFICATIONS_STATUS

from tickwatch_gateway.alerts_feed import AlertListCache, AlertPush, AlertRecorder
from tickwatch_gateway.alerts_store import AlertStore
from tickwatch_gateway.changes_log import ChangesLogWatch, Reconciler
from tickwatch_gateway.feed import start_at_end
from tickwatch_gateway.outbox import OutboxRelay
from tickwatch_gateway.settings import Settings
from tickwatch_gateway.shutdown import stop_tasks
from tickwatch_gateway.state import CHECKS, HUB, POOL, PUBLISHER, REDIS, SETTINGS, TASKS

ALERT_STORE = web.AppKey("alert_store", AlertStore)
ALERT_CACHE = web.AppKey("alert_cache", AlertListCache)
ALERT_RELAY = web.AppKey("alert_relay", OutboxRelay)
ALERT_PUSH_POSITIONED = web.AppKey("alert_push_positioned", asyncio.Event)
RECONCILER = web.AppKey("reconciler", Reconciler)
CHANGES_WATCH = web.AppKey("changes_watch", ChangesLogWatch)


def install_alerts(app: web.Application) -> None:
    """Call in ``build_app`` after ``app.cleanup_ctx.append(resources)``."""
    app.cleanup_ctx.append(alerts_resources)


async def alerts_resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    publisher = app[PUBLISHER]
    store = app[ALERT_STORE] = AlertStore(app[POOL], settings.alerts_max_active_per_user)
    cache = app[ALERT_CACHE] = AlertListCache(app[REDIS], settings.alerts_list_cache_ttl_s)
    relay = app[ALERT_RELAY] = OutboxRelay(
        app[POOL],
        publisher,
        batch_size=settings.outbox_batch_size,
        poll_interval_s=settings.outbox_poll_interval_s,
    )
    reconciler = app[RECONCILER] = Reconciler(
        app[POOL], store, settings, settings.reconcile_timeout_s
    )
    watch = app[CHANGES_WATCH] = ChangesLogWatch(
        app[POOL],
        reconciler,
        lambda: publisher.producer.client,
        interval_s=settings.changes_log_check_interval_s,
    )
    relay.on_failure = watch.poke
    positioned = app[ALERT_PUSH_POSITIONED] = asyncio.Event()
    tasks = [
        asyncio.create_task(relay.run(), name="alert-outbox-relay"),
        # In the background: the start-up reconcile (bounded by RECONCILE_TIMEOUT_S) must not
        # hold up readiness; the relay publishes what it queues as it comes.
        asyncio.create_task(watch.run(), name="alert-changes-log-watch"),
        asyncio.create_task(
            record_alert_events(settings, AlertRecorder(store, cache), app), name="alert-events"
        ),
        asyncio.create_task(
            push_triggers(settings, AlertPush(app[HUB]), positioned), name="alert-push"
        ),
    ]
    app[TASKS].extend(tasks)
    try:
        yield
    finally:
        await stop_tasks(tasks, settings.shutdown_timeout_s)


async def record_alert_events(
    settings: Settings, recorder: AlertRecorder, app: web.Application
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
        app[CHECKS].append(check := progress.check())
        try:
            await consume(
                consumer,
                recorder.handle,
                dlq=app[PUBLISHER],
                progress=progress,
                # The notifier's group dead-letters alerts.triggered.v1; this one only the
                # delivery statuses, which it alone reads (one entry per malformed record).
                dead_letter_topics=[NOTIFICATIONS_STATUS.name],
            )
        finally:
            app[CHECKS].remove(check)


async def push_triggers(settings: Settings, push: AlertPush, positioned: asyncio.Event) -> None:
    """Every trigger, on every replica, to its owner's WebSocket connections here. Malformed
    records are only logged: :func:`record_alert_events`' group dead-letters them once."""
    async with kafka_consumer(
        settings, group=None, topics=[ALERTS_TRIGGERED], auto_offset_reset="latest"
    ) as consumer:
        await start_at_end(consumer)
        positioned.set()
        await consume(consumer, push.handle, dlq=None, commit=False)
