"""The delivery log in Postgres (schema ``notifier``), keyed by (event_id, channel).

A delivery is claimed by one atomic UPDATE (pending/retrying and due, or a ``sending`` whose
lease ran out), so across replicas and redeliveries only one sender holds it at a time, and a
``sent`` or ``failed`` row is never claimed again.

An outcome (``sent``, ``retrying``, ``failed``) is one UPDATE of its own row, made as soon as the
server has answered, on connections of its own (``outcomes``): on the shared pool it queued
behind the claims and intake of the other sends (up to 2.6 s after the SMTP server had accepted
the mail, in a burst), and every mail accepted but not yet recorded is one a crash sends twice.
Which status was last *published* is bookkeeping, not an outcome: those marks are written
together, one statement for all the marks that arrive while the previous one runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from tickwatch_common.events import Trigger

SCHEMA = "notifier"
MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class Claim:
    attempts: int
    trigger: Trigger


@dataclass(frozen=True)
class Row:
    event_id: str
    channel: str
    status: str
    attempts: int
    detail: str
    trigger: Trigger


@dataclass
class _Marks:
    """Published marks waiting for one statement, and the future of that statement."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DeliveryLog:
    def __init__(self, pool: asyncpg.Pool, outcomes: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        self.outcomes = outcomes or pool
        self._marks: _Marks | None = None  # filling, not yet written
        self._marking = asyncio.Lock()  # one marks statement at a time
        self._writers: set[asyncio.Task[None]] = set()

    async def record(self, items: list[tuple[Trigger, str]]) -> None:
        """Record new deliveries as pending; ones already known are left as they are."""
        await self.pool.executemany(
            "INSERT INTO delivery (event_id, channel, alert_id, user_id, trigger)"
            " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING",
            [(t.event_id, ch, t.alert_id, t.user_id, t.model_dump_json()) for t, ch in items],
        )

    async def claim(self, event_id: str, channel: str, lease_s: float) -> Claim | None:
        row = await self.pool.fetchrow(
            "UPDATE delivery SET status = 'sending', attempts = attempts + 1,"
            " lease_until = now() + make_interval(secs => $3), updated_at = now()"
            " WHERE event_id = $1 AND channel = $2 AND ("
            "  (status IN ('pending', 'retrying') AND next_attempt_at <= now())"
            "  OR (status = 'sending' AND lease_until < now()))"
            " RETURNING attempts, trigger::text",
            event_id,
            channel,
            lease_s,
        )
        if row is None:
            return None
        return Claim(row["attempts"], Trigger.model_validate_json(row["trigger"]))

    async def finish(self, event_id: str, channel: str, status: str, detail: str) -> None:
        """``sent`` or ``failed``: final."""
        await self.outcomes.execute(
            "UPDATE delivery SET status = $3, detail = $4, lease_until = NULL, updated_at = now()"
            " WHERE event_id = $1 AND channel = $2 AND status = 'sending'",
            event_id,
            channel,
            status,
            detail,
        )

    async def retry_later(self, event_id: str, channel: str, delay_s: float, detail: str) -> None:
        await self.outcomes.execute(
            "UPDATE delivery SET status = 'retrying', detail = $4, lease_until = NULL,"
            " next_attempt_at = now() + make_interval(secs => $3), updated_at = now()"
            " WHERE event_id = $1 AND channel = $2 AND status = 'sending'",
            event_id,
            channel,
            delay_s,
            detail,
        )

    async def mark_published(self, event_id: str, channel: str, status: str) -> None:
        """Record that ``status`` was published; returns once written (with the other marks that
        came in meanwhile). Lost in a crash, it only makes the sweep publish the status again."""
        marks = self._marks
        if marks is None:
            marks = self._marks = _Marks()
            writer = asyncio.create_task(self._write_marks(marks))
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        marks.rows.append((event_id, channel, status))
        await asyncio.shield(marks.done)

    async def _write_marks(self, marks: _Marks) -> None:
        async with self._marking:  # while the previous statement runs, this batch fills up
            if self._marks is marks:
                self._marks = None
            event_ids = [row[0] for row in marks.rows]
            channels = [row[1] for row in marks.rows]
            statuses = [row[2] for row in marks.rows]
            try:
                await self.pool.execute(
                    "UPDATE delivery d SET published = m.status"
                    " FROM unnest($1::text[], $2::text[], $3::text[]) AS m(event_id, channel, status)"
                    " WHERE d.event_id = m.event_id AND d.channel = m.channel"
                    " AND d.status = m.status",
                    event_ids,
                    channels,
                    statuses,
                )
            except asyncio.CancelledError:
                marks.done.cancel()
                raise
            except Exception as exc:
                marks.done.set_exception(exc)
            else:
                marks.done.set_result(None)

    async def due(self, limit: int = 200) -> list[tuple[Trigger, str]]:
        rows = await self.pool.fetch(
            "SELECT channel, trigger::text FROM delivery"
            " WHERE (status IN ('pending', 'retrying') AND next_attempt_at <= now())"
            "  OR (status = 'sending' AND lease_until < now())"
            " ORDER BY next_attempt_at LIMIT $1",
            limit,
        )
        return [(Trigger.model_validate_json(r["trigger"]), r["channel"]) for r in rows]

    async def unpublished(self, limit: int = 200) -> list[Row]:
        rows = await self.pool.fetch(
            "SELECT event_id, channel, status, attempts, detail, trigger::text FROM delivery"
            " WHERE status IN ('retrying', 'sent', 'failed') AND published IS DISTINCT FROM status"
            " AND updated_at < now() - interval '2 seconds'"
            " ORDER BY updated_at LIMIT $1",
            limit,
        )
        return [
            Row(
                r["event_id"],
                r["channel"],
                r["status"],
                r["attempts"],
                r["detail"],
                Trigger.model_validate_json(r["trigger"]),
            )
            for r in rows
        ]

    async def get(self, event_id: str, channel: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT * FROM delivery WHERE event_id = $1 AND channel = $2", event_id, channel
        )
