"""The gateway application: routes, middlewares, and the resources it runs on.

:func:`build_app` wires everything without connecting to anything; the connections are made by
the cleanup context :func:`resources` when the app starts, and closed in reverse when it stops.
Adding a resource's routes is one module under :mod:`tickwatch_gateway.routes` with a
``register(api)`` function, listed in ``ROUTE_MODULES``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import structlog
from aiohttp import web
from tickwatch_common.checks import publishing_check
from tickwatch_common.consumer_progress import ConsumerProgress
from tickwatch_common.kafka import Publisher, consume, kafka_consumer, kafka_producer
from tickwatch_common.ops import Check, CheckResult, add_ops_routes
from tickwatch_common.postgres import migrate, postgres_pool
from tickwatch_common.redis import redis_client
from tickwatch_common.topics import (
    ALERT_CHANGES,
    ALERTS_TRIGGERED,
    CANDLES,
    NOTIFICATIONS_STATUS,
    TICKS,
)

from tickwatch_gateway.accounts import AccountStore
from tickwatch_gateway.alerts_runtime import install_alerts
from tickwatch_gateway.auth import admit
from tickwatch_gateway.cache import LatestPrices, RedisGuard, ResponseCache
from tickwatch_gateway.candles import CandlePersister, CandleStore
from tickwatch_gateway.fanout import Hub
from tickwatch_gateway.feed import MarketFeed
from tickwatch_gateway.middleware import edge_middleware
from tickwatch_gateway.openapi import Api, add_docs_routes
from tickwatch_gateway.pricebook import PriceBook
from tickwatch_gateway.problems import MAX_BODY
from tickwatch_gateway.ratelimit import RateLimiter
from tickwatch_gateway.revocation import LoginRevocations
from tickwatch_gateway.routes import (
    alerts,
    api_keys,
    auth,
    dashboard,
    history,
    indicators,
    ops,
    prices,
    ws,
)
from tickwatch_gateway.settings import Settings
from tickwatch_gateway.shutdown import bounded, bounded_exit, stop_tasks
from tickwatch_gateway.state import (
    ACCOUNTS,
    BOOK,
    CACHE,
    CHECKS,
    FEED,
    HUB,
    LIMITER,
    POOL,
    PUBLISHER,
    REDIS,
    REVOCATIONS,
    SETTINGS,
    SYMBOLS,
    TASKS,
    TOKENS,
)
from tickwatch_gateway.state import (
    CANDLES as CANDLES_STORE,
)
from tickwatch_gateway.symbols import SymbolDirectory
from tickwatch_gateway.tokens import LEEWAY_S as TOKEN_LEEWAY_S
from tickwatch_gateway.tokens import TokenIssuer

log = structlog.get_logger(__name__)

SERVICE = "gateway"
SCHEMA = "gateway"
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
ROUTE_MODULES = (prices, history, indicators, auth, api_keys, alerts)


def build_api() -> Api:
    api = Api("/api/v1")
    for module in ROUTE_MODULES:
        module.register(api)
    return api


def build_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[edge_middleware(settings.cors_origin_list, admit)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[MAX_BODY] = settings.max_body_bytes
    app[SYMBOLS] = SymbolDirectory(settings.symbol_list)
    app[BOOK] = PriceBook(app[SYMBOLS])
    app[HUB] = Hub()
    app[TOKENS] = TokenIssuer(
        settings.jwt_secret.get_secret_value(),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.access_token_ttl_s,
    )
    api = build_api()
    api.mount(app)
    ws.add_routes(app)
    dashboard.add_routes(app)
    ops.add_routes(app)
    add_docs_routes(app, api, "Tickwatch", VERSION)
    app[CHECKS] = checks = readiness_checks(app)
    add_ops_routes(app, SERVICE, checks)
    app.cleanup_ctx.append(resources)
    install_alerts(app)
    return app


async def resources(app: web.Application) -> AsyncIterator[None]:
    """Every stop on the way out is bounded by ``SHUTDOWN_TIMEOUT_S`` (:mod:`shutdown`)."""
    settings = app[SETTINGS]
    limit = settings.shutdown_timeout_s
    async with AsyncExitStack() as stack:
        await migrate(settings.database_url, SCHEMA, MIGRATIONS)
        app[POOL] = await stack.enter_async_context(
            bounded_exit("postgres pool", postgres_pool(settings, SCHEMA), limit)
        )
        redis = await stack.enter_async_context(
            bounded_exit("redis", redis_client(settings), limit)
        )
        app[REDIS] = guard = RedisGuard(redis, settings.redis_prefix)
        app[CACHE] = ResponseCache(guard, settings.history_cache_ttl_s)
        app[ACCOUNTS] = AccountStore(
            app[POOL], settings.refresh_token_ttl_s, settings.api_key_touch_interval_s
        )
        app[REVOCATIONS] = LoginRevocations(
            guard, app[POOL], settings.access_token_ttl_s + TOKEN_LEEWAY_S
        )
        app[LIMITER] = RateLimiter(
            settings.redis_url,
            guard,
            settings.rate_limit_default,
            settings.rate_limit_auth,
            settings.redis_timeout_s,
        )
        # Produced to (alert changes) or dead-lettered from (the consumer groups' topics).
        produced = [ALERT_CHANGES, CANDLES, ALERTS_TRIGGERED, NOTIFICATIONS_STATUS]
        publisher = await stack.enter_async_context(kafka_producer(settings, topics=produced))
        app[PUBLISHER] = publisher
        app[CHECKS].append(publishing_check(publisher.outcomes))
        feed_consumer = await stack.enter_async_context(
            kafka_consumer(
                settings,
                group=None,
                topics=[TICKS, CANDLES],
                auto_offset_reset="latest",
            )
        )
        app[CANDLES_STORE] = store = CandleStore(app[POOL])
        persister = CandlePersister(store, app[CACHE])
        app[FEED] = feed = MarketFeed(app[BOOK], LatestPrices(guard), app[HUB])
        log.info("price_book_warmed", ticks=await feed.warm_up())
        tasks = [
            asyncio.create_task(feed.run(feed_consumer), name="market-feed"),
            asyncio.create_task(
                persist_candles(settings, persister, publisher, app[CHECKS]), name="candle-store"
            ),
            asyncio.create_task(app[LIMITER].run(), name="rate-limit-flush"),
        ]
        app[TASKS] = tasks
        stack.push_async_callback(bounded, "rate-limit flush", app[LIMITER].aclose, limit)
        stack.push_async_callback(stop_tasks, tasks, limit)
        yield


async def persist_candles(
    settings: Settings, persister: CandlePersister, publisher: Publisher, checks: list[Check]
) -> None:
    """The candle store's consumer group; joined in the background (a join takes seconds).

    The only consumer of market data here that dead-letters malformed records: it runs in a
    group, so one replica handles each record (the group-less feed would have every replica
    dead-letter the same one)."""
    group, topics = settings.candle_consumer_group, [CANDLES]
    async with kafka_consumer(settings, group=group, topics=topics) as consumer:
        progress = ConsumerProgress(group, consumer, stall_s=settings.consumer_stall_s)
        checks.append(check := progress.check())  # /ready reads the list at each request
        try:
            await consume(consumer, persister.handle, dlq=publisher, progress=progress)
        finally:
            checks.remove(check)


def readiness_checks(app: web.Application) -> list[Check]:
    async def postgres() -> CheckResult:
        await app[POOL].fetchval("SELECT 1")
        return CheckResult(True)

    async def redis() -> CheckResult:
        await app[REDIS].client.ping()
        return CheckResult(True)

    async def kafka() -> CheckResult:
        await app[PUBLISHER].producer.client.fetch_all_metadata()
        return CheckResult(True)

    async def tasks() -> CheckResult:
        for task in app[TASKS]:
            if task.done():
                return CheckResult(False, f"{task.get_name()} stopped")
        if not app[FEED].positioned.is_set():
            return CheckResult(False, "market feed not positioned yet")
        return CheckResult(True)

    return [
        Check("postgres", postgres),
        Check("redis", redis, critical=False),
        Check("kafka", kafka),
        Check("consumers", tasks),
    ]
