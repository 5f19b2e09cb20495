"""The trigger store against the real PostgreSQL: records of one log never go backwards, and a
record of another log replaces what the old log left."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tickwatch_alert_engine.settings import Settings
from tickwatch_alert_engine.store import MIGRATIONS, SCHEMA, TriggerStore
from tickwatch_common.kafka import partition_for
from tickwatch_common.log_identity import StoredPosition
from tickwatch_common.postgres import migrate, postgres_pool
from tickwatch_common.topics import SYMBOL_PARTITIONS, TICKS

pytestmark = pytest.mark.integration

SYM = "BTC-USDT"
OLD_LOG = "cluster-a/00000000-0000-4000-8000-000000000001"
NEW_LOG = "cluster-a/00000000-0000-4000-8000-000000000002"


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
            [], {SYM: (Decimal("105.25"), 160_000)}, TICKS.name, partition, 20, newer, log=OLD_LOG
        )
        await store.save_batch(
            [], {SYM: (Decimal("99.5"), 130_000)}, TICKS.name, partition, 12, older, log=OLD_LOG
        )
        assert await store.load_prices({partition}) == {SYM: (Decimal("105.25"), 160_000)}
        assert await store.load_windows({partition}) == newer
        assert await store.positions(TICKS.name, [partition]) == {
            partition: StoredPosition(20, OLD_LOG)
        }
        assert await store.load_windows({partition + 1}) == {}  # not owned


async def test_a_record_of_a_new_log_replaces_the_old_logs_higher_offsets(
    engine_settings: Settings,
) -> None:
    """The failure of issue 9: offsets recorded against a log that was replaced are higher than
    anything the new log holds, and the offset fencing refused every new record for ever."""
    await migrate(engine_settings.database_url, SCHEMA, MIGRATIONS)
    partition = partition_for(SYM, SYMBOL_PARTITIONS)
    window = {SYM: [(200, Decimal("7"))]}
    async with postgres_pool(engine_settings, SCHEMA) as pool:
        store = TriggerStore(pool, SYMBOL_PARTITIONS)
        await store.save_batch(
            [], {SYM: (Decimal("5"), 100_000)}, TICKS.name, partition, 2538, log=OLD_LOG
        )
        await store.save_batch(
            [], {SYM: (Decimal("7"), 200_000)}, TICKS.name, partition, 3, window, log=NEW_LOG
        )
        assert await store.load_prices({partition}) == {SYM: (Decimal("7"), 200_000)}
        assert await store.load_windows({partition}) == window
        assert await store.positions(TICKS.name, [partition]) == {
            partition: StoredPosition(3, NEW_LOG)
        }
        # On the new log the guard holds again: an older record does not go back.
        await store.save_batch(
            [], {SYM: (Decimal("6"), 150_000)}, TICKS.name, partition, 2, log=NEW_LOG
        )
        assert await store.load_prices({partition}) == {SYM: (Decimal("7"), 200_000)}
        assert (await store.positions(TICKS.name, [partition]))[partition].offset == 3
        # A rebuild that voids the position records the new start, whatever was there.
        await store.set_positions(TICKS.name, {partition: 0}, OLD_LOG)
        assert await store.positions(TICKS.name, [partition]) == {
            partition: StoredPosition(0, OLD_LOG)
        }
