"""The portfolio service's composition root: settings -> resources -> the internal API, until
SIGTERM.

It owns cash balances, the ledger, orders and holdings (schema ``portfolio``), keeps the latest
prices and trading rules from the broker, and answers the gateway's signed ``/internal/...``
calls beside ``/health``, ``/ready`` and ``/metrics`` on PORTFOLIO_PORT (default 8084).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog
from tickwatch_common.checks import kafka_check, postgres_check
from tickwatch_common.events import Tick
from tickwatch_common.kafka import kafka_consumer, kafka_producer
from tickwatch_common.logging import configure_logging
from tickwatch_common.postgres import migrate, postgres_pool, reset_if_in_transaction
from tickwatch_common.runtime import run
from tickwatch_common.settings import load_settings
from tickwatch_common.topics import PORTFOLIO_VALUATIONS

from tickwatch_portfolio.api.routes import internal_app, serving
from tickwatch_portfolio.ledger.operations import Operations, filling, now_ms
from tickwatch_portfolio.ledger.store import LedgerStore
from tickwatch_portfolio.market.book import PriceBook
from tickwatch_portfolio.market.feed import MarketFeed, feeding
from tickwatch_portfolio.performance.reports import Reports, snapshotting
from tickwatch_portfolio.settings import Settings
from tickwatch_portfolio.valuation.live import LiveValuation, valuing

SERVICE = "portfolio"
SCHEMA = "portfolio"
MIGRATIONS = Path(__file__).parent / "migrations"

log = structlog.get_logger(SERVICE)


@dataclass(frozen=True)
class Portfolio:
    """The running service's parts, for tests that drive it in-process."""

    pool: asyncpg.Pool
    book: PriceBook
    feed: MarketFeed
    operations: Operations
    reports: Reports
    live: LiveValuation


@asynccontextmanager
async def running_portfolio(settings: Settings) -> AsyncIterator[Portfolio]:
    """The service, started (schema migrated, pool and producer open, the market feed running,
    the internal API and ops routes served); leaving the block stops it."""
    applied = await migrate(settings.database_url, SCHEMA, MIGRATIONS)
    max_price_age_ms = int(settings.portfolio_max_price_age_s * 1000)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            postgres_pool(settings, SCHEMA, reset=reset_if_in_transaction)
        )
        publisher = await stack.enter_async_context(
            kafka_producer(settings, topics=[PORTFOLIO_VALUATIONS])
        )
        consumer = await stack.enter_async_context(kafka_consumer(settings, group=None))
        book = PriceBook()
        store = LedgerStore(
            pool, settings.portfolio_starting_cash, settings.portfolio_quote_currency
        )
        operations = Operations(
            store, book, max_price_age_ms=max_price_age_ms, fee_rate=settings.portfolio_fee_rate
        )
        resting = await operations.rebuild()  # before the first tick can reach them
        live = LiveValuation(publisher)
        store.on_saved.append(live.on_committed)  # before the first load, so no change is lost
        valued = live.load(await store.accounts())
        await stack.enter_async_context(valuing(live))
        await stack.enter_async_context(filling(operations))

        async def on_ticks(ticks: list[Tick]) -> None:
            await live.on_ticks(ticks)  # prices first, so a fill is valued at them
            operations.on_ticks(ticks)  # queued for the filling task: never stalls the feed

        feed = await stack.enter_async_context(feeding(consumer, book, max_price_age_ms, on_ticks))
        reports = Reports(store, book, now_ms)
        await stack.enter_async_context(
            snapshotting(reports, settings.portfolio_snapshot_interval_s)
        )
        checks = [postgres_check(pool), kafka_check(publisher.producer), feed.check()]
        app = internal_app(SERVICE, checks, settings.internal_api_secret, operations, reports)
        await stack.enter_async_context(serving(app, settings.ops_host, settings.portfolio_port))
        log.info(
            "started",
            port=settings.portfolio_port,
            migrations_applied=applied,
            resting_orders=resting,
            accounts_valued=valued,
        )
        yield Portfolio(pool, book, feed, operations, reports, live)


async def main() -> None:
    settings = load_settings(Settings)
    configure_logging(SERVICE, settings.log_level)
    async with running_portfolio(settings):
        await asyncio.Event().wait()  # until SIGTERM / Ctrl-C cancels us


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
