"""The delivery log against the real PostgreSQL: outcomes on their own connections, published
marks written together, and a finished row never claimed again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from tickwatch_common.events import Trigger
from tickwatch_common.postgres import migrate
from tickwatch_notifier.deliveries import MIGRATIONS, SCHEMA, DeliveryLog

pytestmark = pytest.mark.integration


@pytest.fixture
def trigger(email_trigger: Callable[[str, str], Trigger]) -> Callable[[int], Trigger]:
    """``trigger(i)``: this test's i-th e-mail trigger."""
    run = uuid.uuid4().hex[:8]
    return lambda i: email_trigger(f"log-{run}-{i}", f"t{i}@example.com")


@pytest.fixture
async def pools(fresh_database: str) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    await migrate(fresh_database, SCHEMA, MIGRATIONS)
    settings = {"server_settings": {"search_path": SCHEMA}}
    async with (
        asyncpg.create_pool(fresh_database, min_size=1, max_size=4, **settings) as pool,
        asyncpg.create_pool(fresh_database, min_size=1, max_size=1, **settings) as outcomes,
    ):
        yield pool, outcomes


async def test_outcomes_use_their_own_connections_while_the_shared_pool_is_busy(
    pools: tuple[asyncpg.Pool, asyncpg.Pool], trigger: Callable[[int], Trigger]
) -> None:
    pool, outcomes = pools

    log = DeliveryLog(pool, outcomes=outcomes)
    t = trigger(0)
    await log.record([(t, "email")])
    assert await log.claim(t.event_id, "email", lease_s=60) is not None
    held = [await pool.acquire() for _ in range(4)]  # every shared connection busy
    try:
        await asyncio.wait_for(log.finish(t.event_id, "email", "sent", "ok"), timeout=5)
    finally:
        for conn in held:
            await pool.release(conn)
    row = await log.get(t.event_id, "email")
    assert row is not None and row["status"] == "sent"
    assert await log.claim(t.event_id, "email", lease_s=0) is None  # final: never claimed again


async def test_marks_that_arrive_together_are_all_written_and_only_for_the_current_status(
    pools: tuple[asyncpg.Pool, asyncpg.Pool], trigger: Callable[[int], Trigger]
) -> None:
    pool, outcomes = pools

    log = DeliveryLog(pool, outcomes=outcomes)
    triggers = [trigger(i) for i in range(60)]
    await log.record([(t, "email") for t in triggers])
    for t in triggers:
        await log.claim(t.event_id, "email", lease_s=60)
        await log.finish(t.event_id, "email", "sent", "ok")
    stale = trigger(99)  # published as retrying, but it has been sent since: not marked
    await log.record([(stale, "email")])
    await log.claim(stale.event_id, "email", lease_s=60)
    await log.finish(stale.event_id, "email", "sent", "ok")
    await asyncio.gather(
        *(log.mark_published(t.event_id, "email", "sent") for t in triggers),
        log.mark_published(stale.event_id, "email", "retrying"),
    )
    published = {
        r["event_id"]: r["published"]
        for r in await pool.fetch("SELECT event_id, published FROM delivery")
    }
    assert all(published[t.event_id] == "sent" for t in triggers)
    assert published[stale.event_id] is None  # the sweep will publish its "sent"
