"""The market's resources: the symbol directory, price book and WebSocket hub (no I/O), then
the response cache, the candle store and its consumer group, and the live feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web
from tickwatch_common.consumer_progress import ConsumerProgress
from tickwatch_common.kafka import Publisher, consume, kafka_consumer
from tickwatch_common.ops import Check, CheckResult
from tickwatch_common.topics import CANDLES as CANDLES_TOPIC
from tickwatch_common.topics import TICKS

from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.market import history_routes, indicator_routes, price_routes, ws_routes
from tickwatch_gateway.market.candle_store import CandlePersister, CandleStore
from tickwatch_gateway.market.fanout import Hub
from tickwatch_gateway.market.keys import BOOK, CACHE, CANDLES, FEED, HUB, MARKET_SETTINGS, SYMBOLS
from tickwatch_gateway.market.latest_prices import LatestPrices
from tickwatch_gateway.market.pricebook import PriceBook
from tickwatch_gateway.market.response_cache import ResponseCache
from tickwatch_gateway.market.settings import MarketSettings
from tickwatch_gateway.market.symbols import SymbolDirectory
from tickwatch_gateway.market.tick_consumer import MarketFeed
from tickwatch_gateway.runtime.keys import CHECKS, POOL, PUBLISHER, REDIS, TASKS
from tickwatch_gateway.runtime.shutdown import stop_tasks

log = structlog.get_logger(__name__)

# What the market's consumer group may dead-letter from (the publisher makes these topics).
PRODUCED = [CANDLES_TOPIC]


def install_market(app: web.Application, settings: MarketSettings) -> None:
    """After the runtime's resources (uses their pool, Redis and publisher)."""
    app[MARKET_SETTINGS] = settings
    app[SYMBOLS] = SymbolDirectory(settings.market_list)
    app[BOOK] = PriceBook(app[SYMBOLS])
    app[HUB] = Hub()
    ws_routes.add_routes(app)

    async def cache(app: web.Application) -> AsyncIterator[None]:
        app[CACHE] = ResponseCache(app[REDIS], settings.history_cache_ttl_s)
        app[CANDLES] = CandleStore(app[POOL])
        yield

    async def live_feed(app: web.Application) -> AsyncIterator[None]:
        async with kafka_consumer(
            settings, group=None, topics=[TICKS, CANDLES_TOPIC], auto_offset_reset="latest"
        ) as consumer:
            app[FEED] = feed = MarketFeed(app[BOOK], LatestPrices(app[REDIS]), app[HUB])
            log.info("price_book_warmed", ticks=await feed.warm_up())
            app[CHECKS].append(Check("market-feed", _positioned(feed)))
            task = asyncio.create_task(feed.run(consumer), name="market-feed")
            app[TASKS].append(task)
            try:
                yield
            finally:
                await stop_tasks([task], settings.shutdown_timeout_s)

    async def candle_store(app: web.Application) -> AsyncIterator[None]:
        persister = CandlePersister(app[CANDLES], app[CACHE])
        task = asyncio.create_task(
            persist_candles(settings, persister, app[PUBLISHER], app[CHECKS]), name="candle-store"
        )
        app[TASKS].append(task)
        try:
            yield
        finally:
            await stop_tasks([task], settings.shutdown_timeout_s)

    app.cleanup_ctx.extend([cache, live_feed, candle_store])


def register_market(api: Api) -> None:
    """``/prices``, ``/markets``, ``/history`` and ``/indicators`` in the OpenAPI document."""
    price_routes.register(api)
    history_routes.register(api)
    indicator_routes.register(api)


def _positioned(feed: MarketFeed) -> Callable[[], Awaitable[CheckResult]]:
    async def probe() -> CheckResult:
        if not feed.positioned.is_set():
            return CheckResult(False, "market feed not positioned yet")
        return CheckResult(True)

    return probe


async def persist_candles(
    settings: MarketSettings, persister: CandlePersister, publisher: Publisher, checks: list[Check]
) -> None:
    """The candle store's consumer group; joined in the background (a join takes seconds).

    The only consumer of market data here that dead-letters malformed records: it runs in a
    group, so one replica handles each record (the group-less feed would have every replica
    dead-letter the same one)."""
    group, topics = settings.candle_consumer_group, [CANDLES_TOPIC]
    async with kafka_consumer(settings, group=group, topics=topics) as consumer:
        progress = ConsumerProgress(group, consumer, stall_s=settings.consumer_stall_s)
        checks.append(check := progress.check())  # /ready reads the list at each request
        try:
            await consume(consumer, persister.handle, dlq=publisher, progress=progress)
        finally:
            checks.remove(check)
