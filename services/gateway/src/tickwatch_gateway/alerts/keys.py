"""The typed keys of the alerts feature."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tickwatch_gateway.alerts.changes_log import ChangesLogWatch, Reconciler
from tickwatch_gateway.alerts.list_cache import AlertListCache
from tickwatch_gateway.alerts.outbox import OutboxRelay
from tickwatch_gateway.alerts.settings import AlertSettings
from tickwatch_gateway.alerts.store import AlertStore

ALERT_SETTINGS = web.AppKey("alert_settings", AlertSettings)
ALERT_STORE = web.AppKey("alert_store", AlertStore)
ALERT_CACHE = web.AppKey("alert_cache", AlertListCache)
ALERT_RELAY = web.AppKey("alert_relay", OutboxRelay)
ALERT_PUSH_POSITIONED = web.AppKey("alert_push_positioned", asyncio.Event)
RECONCILER = web.AppKey("reconciler", Reconciler)
CHANGES_WATCH = web.AppKey("changes_watch", ChangesLogWatch)
