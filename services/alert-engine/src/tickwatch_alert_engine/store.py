"""The Postgres adapter for trigger state, last prices, window samples and tick offsets
(schema ``alert_engine``).

One statement per record writes the trigger states that changed, the last price and the
``pct_change`` window samples of every symbol the batch touched, and the next tick offset of the
partition, so they always agree: after a crash the engine resumes from exactly the state it had
after its last recorded batch. Every write is an upsert that never moves a sequence or an offset
backwards (idempotent), and a symbol's price and samples are replaced only by a record at the
same or a later offset of its partition: a replica that lost the partition without noticing yet
cannot pair a stale price with the newer owner's position.

Every position, price and sample row also carries the identity of the tick log its offset
belongs to (``tickwatch_common.log_identity``), and those guards compare offsets only within
one log: PostgreSQL outlives the broker's log, and a new log's offsets start again at 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import asyncpg
from tickwatch_common.kafka import partition_for
from tickwatch_common.log_identity import StoredPosition

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

    async def positions(self, topic: str, partitions: Iterable[int]) -> dict[int, StoredPosition]:
        """The recorded next offset of each partition that has one, with the log it belongs to."""
        rows = await self.pool.fetch(
            "SELECT partition, next_offset, log FROM tick_offset"
            " WHERE topic = $1 AND partition = ANY($2::int[])",
            topic,
            list(partitions),
        )
        return {r["partition"]: StoredPosition(r["next_offset"], r["log"]) for r in rows}

    async def set_positions(self, topic: str, offsets: dict[int, int], log: str) -> None:
        """Record where partitions start on ``log``, replacing what was there: first sight, a
        void position (another log, or out of the log's bounds), or a row from before log
        identities were kept. Only the partitions' owner calls it, during its rebuild."""
        await self.pool.executemany(
            "INSERT INTO tick_offset (topic, partition, next_offset, log) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset,"
            " log = excluded.log, updated_at = now()",
            [(topic, p, o, log) for p, o in offsets.items()],
        )

    async def save_batch(
        self,
        states: Iterable[StateRow],
        prices: dict[str, tuple[Decimal, int]],
        topic: str,
        partition: int,
        next_offset: int,
        windows: dict[str, list[tuple[int, Decimal]]] | None = None,
        *,
        log: str,
    ) -> None:
        """One statement (so one transaction and one round trip) for the whole record.

        ``log`` is the identity of the tick log the offset belongs to. The offset guards (a
        price, samples or position never replaced by an older record) hold between records of
        the same log only: a record of another log replaces the row, since its offsets count
        from another beginning and would otherwise be refused for ever."""
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
                INSERT INTO symbol_price (symbol, price, ts_ms, next_offset, log)
                SELECT *, $11::bigint, $14::text
                FROM unnest($6::text[], $7::numeric[], $8::bigint[])
                ON CONFLICT (symbol) DO UPDATE SET price = excluded.price,
                    ts_ms = excluded.ts_ms, next_offset = excluded.next_offset,
                    log = excluded.log, updated_at = now()
                WHERE symbol_price.log IS DISTINCT FROM excluded.log
                    OR symbol_price.next_offset <= excluded.next_offset
            ), windows AS (
                INSERT INTO window_samples (symbol, samples, next_offset, log)
                SELECT *, $11::bigint, $14::text FROM unnest($12::text[], $13::jsonb[])
                ON CONFLICT (symbol) DO UPDATE SET samples = excluded.samples,
                    next_offset = excluded.next_offset, log = excluded.log, updated_at = now()
                WHERE window_samples.log IS DISTINCT FROM excluded.log
                    OR window_samples.next_offset <= excluded.next_offset
            )
            INSERT INTO tick_offset (topic, partition, next_offset, log) VALUES ($9, $10, $11, $14)
            ON CONFLICT (topic, partition) DO UPDATE SET
                next_offset = CASE WHEN tick_offset.log IS DISTINCT FROM excluded.log
                    THEN excluded.next_offset
                    ELSE GREATEST(tick_offset.next_offset, excluded.next_offset) END,
                log = excluded.log, updated_at = now()
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
            log,
        )
