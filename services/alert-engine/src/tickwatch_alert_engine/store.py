"""The Postgres adapter for trigger state, last prices, window samples and tick offsets
(schema ``alert_engine``).

One statement per record writes the trigger states that changed, the last price and the
``pct_change`` window samples of every symbol the batch touched, and the next tick offset of the
partition, so they always agree: after a crash the engine resumes from exactly the state it had
after its last recorded batch. Every write is an upsert that never moves a sequence or an offset
backwards (idempotent), and a symbol's price and samples are replaced only by a record at the
same or a later offset of its partition: a replica that lost the partition without noticing yet
cannot pair a stale price with the newer owner's position.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import asyncpg
from tickwatch_common.kafka import partition_for

from tickwatch_alert_engine.engine import StateRow
from tickwatch_alert_engine.matching import TriggerState

SCHEMA = "alert_engine"
MIGRATIONS = Path(__file__).parent / "migrations"


class TriggerStore:
    def __init__(self, pool: asyncpg.Pool, partitions: int) -> None:
        self.pool = pool
        self.partitions = partitions

    def _owned(self, symbol: str, owned: set[int]) -> bool:
        return partition_for(symbol, self.partitions) in owned

    async def load_states(self, owned: set[int]) -> list[StateRow]:
        rows = await self.pool.fetch(
            "SELECT alert_id, symbol, sequence, last_fired_ms, armed FROM trigger_state"
        )
        return [
            StateRow(
                r["alert_id"],
                r["symbol"],
                TriggerState(r["sequence"], r["last_fired_ms"], r["armed"]),
            )
            for r in rows
            if self._owned(r["symbol"], owned)
        ]

    async def load_prices(self, owned: set[int]) -> dict[str, tuple[Decimal, int]]:
        rows = await self.pool.fetch("SELECT symbol, price, ts_ms FROM symbol_price")
        return {
            r["symbol"]: (r["price"], r["ts_ms"]) for r in rows if self._owned(r["symbol"], owned)
        }

    async def load_windows(self, owned: set[int]) -> dict[str, list[tuple[int, Decimal]]]:
        rows = await self.pool.fetch("SELECT symbol, samples::text FROM window_samples")
        return {
            r["symbol"]: [(sec, Decimal(price)) for sec, price in json.loads(r["samples"])]
            for r in rows
            if self._owned(r["symbol"], owned)
        }

    async def tick_offsets(self, topic: str, defaults: dict[int, int]) -> dict[int, int]:
        """The next offset to process per partition; first sight records ``defaults`` (the end)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO tick_offset (topic, partition, next_offset) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                [(topic, p, o) for p, o in defaults.items()],
            )
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM tick_offset"
                " WHERE topic = $1 AND partition = ANY($2::int[])",
                topic,
                list(defaults),
            )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def save_batch(
        self,
        states: Iterable[StateRow],
        prices: dict[str, tuple[Decimal, int]],
        topic: str,
        partition: int,
        next_offset: int,
        windows: dict[str, list[tuple[int, Decimal]]] | None = None,
    ) -> None:
        """One statement (so one transaction and one round trip) for the whole record."""
        rows = list(states)
        windows = windows or {}
        await self.pool.execute(
            """
            WITH states AS (
                INSERT INTO trigger_state (alert_id, symbol, sequence, last_fired_ms, armed)
                SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bool[])
                ON CONFLICT (alert_id) DO UPDATE SET symbol = excluded.symbol,
                    sequence = excluded.sequence, last_fired_ms = excluded.last_fired_ms,
                    armed = excluded.armed, updated_at = now()
                WHERE trigger_state.sequence <= excluded.sequence
            ), prices AS (
                INSERT INTO symbol_price (symbol, price, ts_ms, next_offset)
                SELECT *, $11::bigint FROM unnest($6::text[], $7::numeric[], $8::bigint[])
                ON CONFLICT (symbol) DO UPDATE SET price = excluded.price,
                    ts_ms = excluded.ts_ms, next_offset = excluded.next_offset, updated_at = now()
                WHERE symbol_price.next_offset <= excluded.next_offset
            ), windows AS (
                INSERT INTO window_samples (symbol, samples, next_offset)
                SELECT *, $11::bigint FROM unnest($12::text[], $13::jsonb[])
                ON CONFLICT (symbol) DO UPDATE SET samples = excluded.samples,
                    next_offset = excluded.next_offset, updated_at = now()
                WHERE window_samples.next_offset <= excluded.next_offset
            )
            INSERT INTO tick_offset (topic, partition, next_offset) VALUES ($9, $10, $11)
            ON CONFLICT (topic, partition) DO UPDATE SET
                next_offset = GREATEST(tick_offset.next_offset, excluded.next_offset),
                updated_at = now()
            """,
            [r.alert_id for r in rows],
            [r.symbol for r in rows],
            [r.state.sequence for r in rows],
            [r.state.last_fired_ms for r in rows],
            [r.state.armed for r in rows],
            list(prices),
            [price for price, _ in prices.values()],
            [ts for _, ts in prices.values()],
            topic,
            partition,
            next_offset,
            list(windows),
            [json.dumps([[sec, str(price)] for sec, price in w]) for w in windows.values()],
        )
