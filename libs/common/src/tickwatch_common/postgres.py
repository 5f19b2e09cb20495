"""PostgreSQL: a pool as an async context manager, and per-service schema migrations.

Migrations are plain ``NNN_name.sql`` files shipped inside each service's package and applied in
order by :func:`migrate`, under an advisory lock so several replicas can boot at once. We use this
small runner instead of Alembic or yoyo because both drive a synchronous driver (SQLAlchemy or
psycopg) that the services otherwise never need, while every service already speaks asyncpg;
the runner is forty lines, records each applied file in ``<schema>.schema_migrations`` and
refuses a file whose content changed after it was applied.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import structlog

from tickwatch_common.settings import PostgresSettings

log = structlog.get_logger(__name__)


async def reset_if_in_transaction(conn: asyncpg.Connection) -> None:
    """A cheaper ``reset`` for a pool whose users set no session state, listen to nothing,
    keep no cursor and take no advisory lock: asyncpg's own (RESET ALL, UNLISTEN *, CLOSE ALL,
    advisory unlocks) costs a round trip per release; this one only rolls back a connection
    that comes back mid-transaction."""
    if conn.is_in_transaction():
        await conn.reset()


@asynccontextmanager
async def postgres_pool(
    settings: PostgresSettings,
    schema: str,
    *,
    reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> AsyncIterator[asyncpg.Pool]:
    """The service's pool (its schema first on the search path, UTC); ``reset`` replaces
    asyncpg's reset on release (see :func:`reset_if_in_transaction`)."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        command_timeout=settings.database_command_timeout_s,
        timeout=10,
        server_settings={"search_path": f"{schema},public", "timezone": "UTC"},
        reset=reset,
    )
    try:
        yield pool
    finally:
        await pool.close()


async def migrate(dsn: str, schema: str, directory: Path) -> list[str]:
    """Apply every migration file of ``directory`` not yet recorded in ``schema``."""
    files = sorted(p for p in directory.glob("*.sql"))
    conn = await asyncpg.connect(dsn, timeout=10)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrate:{schema}")
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                " name text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                r["name"]: r["checksum"]
                for r in await conn.fetch(
                    f'SELECT name, checksum FROM "{schema}".schema_migrations'
                )
            }
            for path in files:
                sql = path.read_text()
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if path.name in done:
                    if done[path.name] != checksum:
                        raise RuntimeError(
                            f"migration {schema}/{path.name} changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                    await conn.execute(sql)
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (name, checksum) VALUES ($1, $2)',
                        path.name,
                        checksum,
                    )
                applied_now.append(path.name)
                log.info("migration_applied", schema=schema, migration=path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"migrate:{schema}")
    finally:
        await conn.close()
    return applied_now
