"""Migrations against the real PostgreSQL: applied once, in order, concurrently safe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from tickwatch_common.postgres import migrate


async def test_migrations_apply_once_in_order_even_when_run_concurrently(
    fresh_database: str, tmp_path: Path
) -> None:
    (tmp_path / "001_create.sql").write_text("CREATE TABLE things (id int PRIMARY KEY, n numeric);")
    (tmp_path / "002_seed.sql").write_text("INSERT INTO things VALUES (1, 0.10);")
    results = await asyncio.gather(*(migrate(fresh_database, "svc", tmp_path) for _ in range(3)))
    assert sorted(len(r) for r in results) == [0, 0, 2]
    conn = await asyncpg.connect(fresh_database)
    try:
        assert str(await conn.fetchval("SELECT n FROM svc.things WHERE id = 1")) == "0.10"
    finally:
        await conn.close()
    assert await migrate(fresh_database, "svc", tmp_path) == []


async def test_a_changed_migration_is_refused(fresh_database: str, tmp_path: Path) -> None:
    (tmp_path / "001_create.sql").write_text("CREATE TABLE t (id int);")
    await migrate(fresh_database, "svc", tmp_path)
    (tmp_path / "001_create.sql").write_text("CREATE TABLE t (id bigint);")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        await migrate(fresh_database, "svc", tmp_path)
