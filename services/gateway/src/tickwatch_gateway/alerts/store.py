"""The PostgreSQL adapter for alerts, their trigger history and the change outbox.

Every change of an alert (create, update, delete, and a trigger counted) writes the alert's new
state, with a version one higher, as a row of ``alert_outbox`` in the same transaction, and
notifies the relay (:mod:`tickwatch_gateway.outbox`), which publishes it to
``alerts.changes.v1``. The owner is part of every user-facing query, so another user's alert
is simply not found.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
from tickwatch_common.events import AlertState, NotificationStatus, Trigger
from tickwatch_common.events.alerts import AlertStatus, ChannelName, Condition, Frequency
from tickwatch_common.events.base import now_ms

from tickwatch_gateway.alerts.domain import (
    EXPIRING,
    AlertSpec,
    effective_status,
    new_webhook_secret,
)
from tickwatch_gateway.alerts.reconcile import TableEntry
from tickwatch_gateway.runtime.clock import EPOCH, ms_from_datetime

OUTBOX_CHANNEL = "alert_outbox"
# An alert (``a``) with a change still waiting for the relay.
_PENDING = "EXISTS (SELECT 1 FROM alert_outbox o WHERE o.alert_id = a.id AND o.sent_at IS NULL)"

# domain.effective_status, in SQL (for filters and the cap): the same statuses expire.
EFFECTIVE_STATUS = (
    f"CASE WHEN status IN ({', '.join(repr(s) for s in EXPIRING)}) AND expires_at IS NOT NULL"
    " AND expires_at <= now() THEN 'expired' ELSE status END"
)


@dataclass(frozen=True)
class Alert:
    id: str
    user_id: str
    symbol: str
    condition: Condition
    target_price: Decimal | None
    pct: Decimal | None
    window_seconds: int | None
    frequency: Frequency
    cooldown_seconds: int
    expires_at_ms: int | None
    status: AlertStatus
    channels: tuple[ChannelName, ...]
    webhook_url: str | None
    webhook_secret: str | None
    note: str | None
    version: int
    trigger_count: int
    triggered_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int

    def spec(self) -> AlertSpec:
        return AlertSpec(
            symbol=self.symbol,
            condition=self.condition,
            target_price=self.target_price,
            pct=self.pct,
            window_seconds=self.window_seconds,
            frequency=self.frequency,
            cooldown_seconds=self.cooldown_seconds,
            expires_at_ms=self.expires_at_ms,
            channels=self.channels,
            webhook_url=self.webhook_url,
            note=self.note,
            status=self.status,
        )

    def effective_status(self, now: int | None = None) -> AlertStatus:
        return effective_status(self.status, self.expires_at_ms, now_ms() if now is None else now)


@dataclass(frozen=True)
class Delivery:
    channel: str
    status: str
    attempts: int
    detail: str
    ts_ms: int | None


@dataclass(frozen=True)
class AlertEvent:
    event_id: str
    sequence: int
    symbol: str
    condition: str
    threshold: Decimal
    price: Decimal
    ts_event_ms: int
    triggered_at_ms: int
    deliveries: list[Delivery]


class ActiveCapReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} active alerts")
        self.limit = limit


def _ms(value: datetime | None) -> int | None:
    return None if value is None else ms_from_datetime(value)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else EPOCH + timedelta(milliseconds=ms)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def _alert(row: asyncpg.Record) -> Alert:
    return Alert(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        symbol=row["symbol"],
        condition=row["condition"],
        target_price=row["target_price"],
        pct=row["pct"],
        window_seconds=row["window_seconds"],
        frequency=row["frequency"],
        cooldown_seconds=row["cooldown_seconds"],
        expires_at_ms=_ms(row["expires_at"]),
        status=row["status"],
        channels=tuple(row["channels"]),
        webhook_url=row["webhook_url"],
        webhook_secret=row["webhook_secret"],
        note=row["note"],
        version=row["version"],
        trigger_count=row["trigger_count"],
        triggered_at_ms=_ms(row["triggered_at"]),
        created_at_ms=ms_from_datetime(row["created_at"]),
        updated_at_ms=ms_from_datetime(row["updated_at"]),
    )


def alert_state(alert: Alert, email: str | None) -> AlertState:
    """The alert as the engine sees it on ``alerts.changes.v1``."""
    return AlertState(
        alert_id=alert.id,
        user_id=alert.user_id,
        version=alert.version,
        symbol=alert.symbol,
        condition=alert.condition,
        target_price=alert.target_price,
        pct=alert.pct,
        window_seconds=alert.window_seconds,
        frequency=alert.frequency,
        cooldown_seconds=alert.cooldown_seconds,
        expires_at=alert.expires_at_ms,
        status=alert.status,
        channels=list(alert.channels),
        email=email,
        webhook_url=alert.webhook_url,
        webhook_secret=alert.webhook_secret,
        note=alert.note,
        trigger_count=alert.trigger_count,
        updated_at=alert.updated_at_ms,
    )


_WRITE_COLUMNS = (
    "symbol, condition, target_price, pct, window_seconds, frequency, cooldown_seconds,"
    " expires_at, status, channels, webhook_url, webhook_secret, note"
)


def _write_values(spec: AlertSpec, secret: str | None) -> tuple[object, ...]:
    return (
        spec.symbol,
        spec.condition,
        spec.target_price,
        spec.pct,
        spec.window_seconds,
        spec.frequency,
        spec.cooldown_seconds,
        _dt(spec.expires_at_ms),
        spec.status,
        list(spec.channels),
        spec.webhook_url if "webhook" in spec.channels else None,
        secret,
        spec.note,
    )


class AlertStore:
    def __init__(self, pool: asyncpg.Pool, max_active_per_user: int) -> None:
        self.pool = pool
        self.max_active = max_active_per_user

    # ------------------------------------------------------------ user-facing

    async def create(self, user_id: str, spec: AlertSpec) -> Alert:
        secret = new_webhook_secret() if "webhook" in spec.channels else None
        uid = uuid.UUID(user_id)
        async with self.pool.acquire() as conn, conn.transaction():
            await self._lock_user(conn, uid)
            if spec.status == "active":
                await self._check_cap(conn, uid)
            row = await conn.fetchrow(
                f"INSERT INTO alerts (id, user_id, version, {_WRITE_COLUMNS})"
                " VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                " RETURNING *",
                uuid.uuid4(),
                uid,
                *_write_values(spec, secret),
            )
            assert row is not None
            alert = _alert(row)
            await self._enqueue(conn, alert)
        return alert

    async def get(self, user_id: str, alert_id: str) -> Alert | None:
        aid = _uuid(alert_id)
        if aid is None:
            return None
        row = await self.pool.fetchrow(
            "SELECT * FROM alerts WHERE id = $1 AND user_id = $2", aid, uuid.UUID(user_id)
        )
        return None if row is None else _alert(row)

    async def search(
        self,
        user_id: str,
        *,
        page: int,
        per_page: int,
        status: str | None = None,
        symbol: str | None = None,
    ) -> tuple[list[Alert], int]:
        where: list[str] = ["user_id = $1"]
        args: list[object] = [uuid.UUID(user_id)]
        if status is not None:
            args.append(status)
            where.append(f"{EFFECTIVE_STATUS} = ${len(args)}")
        if symbol is not None:
            args.append(symbol)
            where.append(f"symbol = ${len(args)}")
        clause = " AND ".join(where)
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            total = await conn.fetchval(f"SELECT count(*) FROM alerts WHERE {clause}", *args)
            rows = await conn.fetch(
                f"SELECT * FROM alerts WHERE {clause} ORDER BY created_at DESC, id DESC"
                f" LIMIT {int(per_page)} OFFSET {int((page - 1) * per_page)}",
                *args,
            )
        return [_alert(r) for r in rows], int(total)

    async def update(
        self, user_id: str, alert_id: str, merge: Callable[[Alert], AlertSpec]
    ) -> tuple[Alert, str | None] | None:
        """Apply ``merge`` (which may raise) to the locked alert. Returns the new alert and, when
        this change gave it a webhook secret, that secret; ``None`` when there is no such alert."""
        aid = _uuid(alert_id)
        if aid is None:
            return None
        uid = uuid.UUID(user_id)
        async with self.pool.acquire() as conn, conn.transaction():
            await self._lock_user(conn, uid)
            row = await conn.fetchrow(
                "SELECT * FROM alerts WHERE id = $1 AND user_id = $2 FOR UPDATE", aid, uid
            )
            if row is None:
                return None
            current = _alert(row)
            spec = merge(current)
            if spec.status == "active" and current.effective_status() != "active":
                await self._check_cap(conn, uid)
            secret = current.webhook_secret
            fresh = None
            if "webhook" in spec.channels and secret is None:
                secret = fresh = new_webhook_secret()
            row = await conn.fetchrow(
                f"UPDATE alerts SET ({_WRITE_COLUMNS}, version, updated_at) ="
                " ($3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
                " version + 1, now()) WHERE id = $1 AND user_id = $2 RETURNING *",
                aid,
                uid,
                *_write_values(spec, secret),
            )
            assert row is not None
            alert = _alert(row)
            await self._enqueue(conn, alert)
        return alert, fresh

    async def delete(self, user_id: str, alert_id: str) -> bool:
        aid = _uuid(alert_id)
        if aid is None:
            return False
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM alerts WHERE id = $1 AND user_id = $2 RETURNING symbol, version",
                aid,
                uuid.UUID(user_id),
            )
            if row is None:
                return False
            version = row["version"] + 1
            await conn.execute(
                "INSERT INTO alert_deletions (alert_id, symbol, version) VALUES ($1, $2, $3)"
                " ON CONFLICT (alert_id) DO NOTHING",
                aid,
                row["symbol"],
                version,
            )
            await self._enqueue_raw(conn, aid, row["symbol"], version, None)
        return True

    async def events(
        self, alert_id: str, *, page: int, per_page: int
    ) -> tuple[list[AlertEvent], int]:
        """The triggers of an alert (the caller has checked its owner), newest first."""
        aid = uuid.UUID(alert_id)
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            total = await conn.fetchval(
                "SELECT count(*) FROM alert_events WHERE alert_id = $1", aid
            )
            rows = await conn.fetch(
                "SELECT * FROM alert_events WHERE alert_id = $1"
                " ORDER BY triggered_at DESC, sequence DESC"
                f" LIMIT {int(per_page)} OFFSET {int((page - 1) * per_page)}",
                aid,
            )
            found = await conn.fetch(
                "SELECT * FROM alert_deliveries WHERE event_id = ANY($1::text[])",
                [r["event_id"] for r in rows],
            )
        by_event: dict[str, dict[str, Delivery]] = {}
        for d in found:
            by_event.setdefault(d["event_id"], {})[d["channel"]] = Delivery(
                d["channel"], d["status"], d["attempts"], d["detail"], d["ts"]
            )
        events = []
        for r in rows:
            known = by_event.get(r["event_id"], {})
            deliveries = [
                known.get(ch) or Delivery(ch, "pending", 0, "", None) for ch in r["channels"]
            ]
            deliveries += [d for ch, d in known.items() if ch not in r["channels"]]
            events.append(
                AlertEvent(
                    r["event_id"],
                    r["sequence"],
                    r["symbol"],
                    r["condition"],
                    r["threshold"],
                    r["price"],
                    r["ts_event"],
                    r["triggered_at"],
                    deliveries,
                )
            )
        return events, int(total)

    # ------------------------------------------------------------ from the topics

    async def record_trigger(self, trigger: Trigger) -> str | None:
        """Record a trigger once (by ``event_id``) and count it on its alert; a ``once`` alert
        becomes ``triggered``. Returns the owner when this call recorded it."""
        aid = _uuid(trigger.alert_id)
        if aid is None:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO alert_events (event_id, alert_id, sequence, symbol, condition,"
                " threshold, price, ts_event, triggered_at, channels)"
                " SELECT $1, id, $3, $4, $5, $6, $7, $8, $9, $10 FROM alerts WHERE id = $2"
                " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                trigger.event_id,
                aid,
                trigger.sequence,
                trigger.symbol,
                trigger.condition,
                trigger.threshold,
                trigger.price,
                trigger.ts_event,
                trigger.triggered_at,
                list(dict.fromkeys(c.type for c in trigger.channels)),
            )
            if inserted is None:
                return None
            row = await conn.fetchrow(
                "UPDATE alerts SET trigger_count = GREATEST(trigger_count, $2),"
                " triggered_at = GREATEST(triggered_at, $3),"
                " status = CASE WHEN frequency = 'once' AND status = 'active'"
                " THEN 'triggered' ELSE status END,"
                " version = version + 1, updated_at = now()"
                " WHERE id = $1 RETURNING *",
                aid,
                trigger.sequence,
                _dt(trigger.triggered_at),
            )
            assert row is not None
            alert = _alert(row)
            await self._enqueue(conn, alert)
        return alert.user_id

    async def record_status(self, status: NotificationStatus) -> None:
        """Keep the latest outcome per (event, channel): a final one is never undone by a late
        ``retrying``; otherwise more attempts, then a later time, win."""
        aid = _uuid(status.alert_id)
        if aid is None:
            return
        await self.pool.execute(
            "INSERT INTO alert_deliveries (event_id, channel, alert_id, status, attempts, detail,"
            " ts) SELECT $1, $2, id, $4, $5, $6, $7 FROM alerts WHERE id = $3"
            " ON CONFLICT (event_id, channel) DO UPDATE SET status = EXCLUDED.status,"
            " attempts = EXCLUDED.attempts, detail = EXCLUDED.detail, ts = EXCLUDED.ts"
            " WHERE NOT (alert_deliveries.status <> 'retrying' AND EXCLUDED.status = 'retrying')"
            " AND (EXCLUDED.attempts, EXCLUDED.ts) >= (alert_deliveries.attempts,"
            " alert_deliveries.ts)",
            status.event_id,
            status.channel,
            aid,
            status.status,
            status.attempts,
            status.detail[:2000],
            status.ts,
        )

    # ------------------------------------------------------------ the reconcile

    async def versions_of_record(self) -> dict[str, TableEntry]:
        """Every alert's current version, and every recorded deletion (for the reconcile)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            alive = await conn.fetch("SELECT id, version FROM alerts")
            deleted = await conn.fetch("SELECT alert_id, version FROM alert_deletions")
        tables = {str(r["alert_id"]): TableEntry(r["version"], deleted=True) for r in deleted}
        tables.update({str(r["id"]): TableEntry(r["version"]) for r in alive})
        return tables

    async def republish(self, alert_ids: Sequence[str], chunk: int = 500) -> int:
        """Queue the current state of each alert on the outbox again, unless a change of it is
        still waiting there (that one carries its latest state already). Each alert is read
        under its row lock, so a change made since the plan is what goes out. Returns how many
        were queued."""
        queued = 0
        for start in range(0, len(alert_ids), chunk):
            ids = [uuid.UUID(a) for a in alert_ids[start : start + chunk]]
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT a.*, u.email FROM alerts a JOIN users u ON u.id = a.user_id"
                    f" WHERE a.id = ANY($1::uuid[]) AND NOT {_PENDING} FOR UPDATE OF a",
                    ids,
                )
                outbox: list[tuple[uuid.UUID, str, int, str | None]] = []
                for row in rows:
                    alert = _alert(row)
                    payload = alert_state(alert, row["email"]).model_dump_json()
                    outbox.append((row["id"], alert.symbol, alert.version, payload))
                queued += await self._enqueue_many(conn, outbox)
        return queued

    async def tombstone(self, alert_ids: Sequence[str]) -> int:
        """Queue a tombstone again for each deleted alert, unless one is still waiting."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT a.id, a.symbol, a.version FROM"
                " (SELECT alert_id AS id, symbol, version FROM alert_deletions) a"
                f" WHERE a.id = ANY($1::uuid[]) AND NOT {_PENDING}",
                [uuid.UUID(a) for a in alert_ids],
            )
            return await self._enqueue_many(
                conn, [(r["id"], r["symbol"], r["version"], None) for r in rows]
            )

    async def _enqueue_many(
        self, conn: asyncpg.Connection, rows: list[tuple[uuid.UUID, str, int, str | None]]
    ) -> int:
        if rows:
            await conn.executemany(
                "INSERT INTO alert_outbox (alert_id, symbol, version, payload)"
                " VALUES ($1, $2, $3, $4)",
                rows,
            )
            await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
        return len(rows)

    # ------------------------------------------------------------ internals

    async def _lock_user(self, conn: asyncpg.Connection, uid: uuid.UUID) -> None:
        """Serialise a user's changes, so the active-alert cap holds under concurrency."""
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", uid)

    async def _check_cap(self, conn: asyncpg.Connection, uid: uuid.UUID) -> None:
        active = await conn.fetchval(
            f"SELECT count(*) FROM alerts WHERE user_id = $1 AND {EFFECTIVE_STATUS} = 'active'",
            uid,
        )
        if active >= self.max_active:
            raise ActiveCapReached(self.max_active)

    async def _enqueue(self, conn: asyncpg.Connection, alert: Alert) -> None:
        email = await conn.fetchval(
            "SELECT email FROM users WHERE id = $1", uuid.UUID(alert.user_id)
        )
        state = alert_state(alert, email)
        await self._enqueue_raw(
            conn, uuid.UUID(alert.id), alert.symbol, alert.version, state.model_dump_json()
        )

    async def _enqueue_raw(
        self,
        conn: asyncpg.Connection,
        aid: uuid.UUID,
        symbol: str,
        version: int,
        payload: str | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO alert_outbox (alert_id, symbol, version, payload) VALUES ($1, $2, $3, $4)",
            aid,
            symbol,
            version,
            payload,
        )
        await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
