"""Analytics' resources: the ``analytics:movers`` push (a group-less candle consumer) and the
routes. After the market (uses its hub, symbols and candle store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from tickwatch_common.kafka import kafka_consumer
from tickwatch_common.ops import Check, CheckResult
from tickwatch_common.topics import CANDLES as CANDLES_TOPIC

from tickwatch_gateway.analytics import routes
from tickwatch_gateway.analytics.push import MoversPush
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.market import CANDLES, HUB, SYMBOLS
from tickwatch_gateway.runtime.keys import CHECKS, TASKS
from tickwatch_gateway.runtime.settings import RuntimeSettings
from tickwatch_gateway.runtime.shutdown import stop_tasks


def install_analytics(app: web.Application, settings: RuntimeSettings) -> None:
    async def movers_push(app: web.Application) -> AsyncIterator[None]:
        push = MoversPush(app[HUB], app[CANDLES], app[SYMBOLS].known)

        async def positioned() -> CheckResult:
            if not push.positioned.is_set():
                return CheckResult(False, "analytics feed not positioned yet")
            return CheckResult(True)

        async with kafka_consumer(
            settings, group=None, topics=[CANDLES_TOPIC], auto_offset_reset="latest"
        ) as consumer:
            app[CHECKS].append(Check("analytics-feed", positioned))
            task = asyncio.create_task(push.run(consumer), name="analytics-movers-push")
            app[TASKS].append(task)
            try:
                yield
            finally:
                await stop_tasks([task], settings.shutdown_timeout_s)

    app.cleanup_ctx.append(movers_push)


def register_analytics(api: Api) -> None:
    """``/analytics/…`` in the OpenAPI document."""
    routes.register(api)
