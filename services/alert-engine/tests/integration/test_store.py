"""The trigger store against the real PostgreSQL: records of one partition never go backwards."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tickwatch_alert_engine.settings import Settings
from tickwatch_alert_engine.store import MIGRATIONS, SCHEMA, TriggerStore
from tickwatch_common.kafka import partition_for
from tickwatch_common.postgres import migrate, postgres_pool
from tickwatch_common.topics import SYMBOL_PARTITIONS, TICKS

pytestmark = pytest.mark.integration

SYM = "BTC-USDT"


async def test_an_older_record_never_overwrites_a_newer_price_or_window(
    engine_settings: Settings,
) -> None:
    """A replica that lost the partition without noticing yet records behind the new owner: its
    stale price and samples must not be paired with the new owner's later offset."""
    await migrate(engine_settings.database_url, SCHEMA, MIGRATIONS)
    partition = partition_for(SYM, SYMBOL_PARTITIONS)
    async with postgres_pool(engine_settings, SCHEMA) as pool:
        store = TriggerStore(pool, SYMBOL_PARTITIONS)
        newer = {SYM: [(100, Decimal("100")), (160, Decimal("105.25"))]}
        older = {SYM: [(100, Decimal("100")), (130, Decimal("99.5"))]}
        await store.save_batch(
            [], {SYM: (Decimal("105.25"), 160_000)}, TICKS.name, partition, 20, newer
        )
        await store.save_batch(
            [], {SYM: (Decimal("99.5"), 130_000)}, TICKS.name, partition, 12, older
        )
        assert await store.load_prices({partition}) == {SYM: (Decimal("105.25"), 160_000)}
        assert await store.load_windows({partition}) == newer
        assert await store.tick_offsets(TICKS.name, {partition: 0}) == {partition: 20}
        assert await store.load_windows({partition + 1}) == {}  # not owned
