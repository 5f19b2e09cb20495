"""The portfolio service's composition root: settings -> resources -> ops server, until SIGTERM.

It owns cash balances, trades and holdings (schema ``portfolio``); no feature is built yet, so it
only prepares its schema, connects to PostgreSQL and Kafka, and answers ``/health``, ``/ready``
and ``/metrics`` on PORTFOLIO_PORT (default 8084).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import structlog
from tickwatch_common.checks import kafka_check, postgres_check
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.logging import configure_logging
from tickwatch_common.ops import ops_server
from tickwatch_common.postgres import migrate, postgres_pool
from tickwatch_common.runtime import run
from tickwatch_common.settings import load_settings

from tickwatch_portfolio.settings import Settings

SERVICE = "portfolio"
SCHEMA = "portfolio"
MIGRATIONS = Path(__file__).parent / "migrations"

log = structlog.get_logger(SERVICE)


@asynccontextmanager
async def running_portfolio(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The service, started (schema migrated, pool and producer open, ops routes served);
    leaving the block stops it. Answers the pool, the one resource features will build on."""
    applied = await migrate(settings.database_url, SCHEMA, MIGRATIONS)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(postgres_pool(settings, SCHEMA))
        publisher = await stack.enter_async_context(kafka_producer(settings))
        checks = [postgres_check(pool), kafka_check(publisher.producer)]
        await stack.enter_async_context(
            ops_server(SERVICE, settings.ops_host, settings.portfolio_port, checks)
        )
        log.info("started", port=settings.portfolio_port, migrations_applied=applied)
        yield pool


async def main() -> None:
    settings = load_settings(Settings)
    configure_logging(SERVICE, settings.log_level)
    async with running_portfolio(settings):
        await asyncio.Event().wait()  # until SIGTERM / Ctrl-C cancels us


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
