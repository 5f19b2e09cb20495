"""Valuation snapshots in PostgreSQL, and the history and performance answers built on them
with :mod:`tickwatch_portfolio.performance.domain`.

Snapshots: every ``PORTFOLIO_SNAPSHOT_INTERVAL_S`` (60) a task values each account holding
anything (a holding, or cash reserved for a resting buy) at the price book's prices and writes
one row stamped with the UTC minute; the key ``(user_id, ts)`` keeps it to at most one per user
per minute, however many replicas or rounds write. Each row also keeps the BTC-USDT price of
that minute.

A range's series: the latest snapshot at or before the range's start (else the account's
opening: value 0 just before its opening deposit, so the range starts when the account did),
the snapshots in the range, and the account's value now (from the ledger at the price book's
latest prices). The cash flows are the ledger's deposits and withdrawals with the value booked
just before each (a row from before that was recorded takes the latest point before it).

The benchmark (our choice): holding BTC-USDT from the series' first snapshot that has a BTC-USDT
price (at or before the range's start where there is one) to the price book's latest BTC-USDT
price now; None when either is missing.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from tickwatch_common.background import background

from tickwatch_portfolio.accounting.domain import value_account
from tickwatch_portfolio.ledger.store import LedgerStore, load_account
from tickwatch_portfolio.market.book import PriceBook
from tickwatch_portfolio.performance.domain import (
    MINUTE_MS,
    CashFlow,
    Range,
    ValuePoint,
    history,
    hold_return,
    performance,
    range_start,
)
from tickwatch_portfolio.problems import dec

log = structlog.get_logger(__name__)

BENCHMARK = "BTC-USDT"
Clock = Callable[[], int]


def _dt(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _iso(ts_ms: int) -> str:
    return _dt(ts_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Snapshot:
    ts_ms: int
    value: Decimal
    btc_price: Decimal | None


@dataclass(frozen=True, slots=True)
class Series:
    """One user's range: its value points, cash flows and benchmark prices (first, now)."""

    points: list[ValuePoint]
    snapshots: list[ValuePoint]
    flows: list[CashFlow]
    benchmark: list[ValuePoint]


class Reports:
    """Writes the snapshots and answers ``/internal/history`` and ``/internal/performance``."""

    def __init__(self, store: LedgerStore, book: PriceBook, clock: Clock) -> None:
        self.store = store
        self.book = book
        self.clock = clock

    async def snapshot_once(self) -> int:
        """Value every account holding anything and write this minute's snapshot (once)."""
        now = self.clock()
        ts = _dt(now - now % MINUTE_MS)
        prices = self.book.prices()
        btc = prices.get(BENCHMARK)
        async with self.store.pool.acquire() as conn:
            users = await conn.fetch(
                "SELECT user_id FROM accounts WHERE reserved > 0 OR EXISTS (SELECT 1 FROM"
                " holdings h WHERE h.user_id = accounts.user_id AND h.quantity > 0)"
            )
            rows = []
            for user in users:
                account = await load_account(conn, user["user_id"])
                total = value_account(account, prices).total_value
                rows.append((user["user_id"], ts, total, account.cash + account.reserved, btc))
            await conn.executemany(
                "INSERT INTO valuation_snapshots (user_id, ts, total_value, cash, btc_price)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, ts) DO NOTHING",
                rows,
            )
        return len(rows)

    async def series(self, user_id: str, range_: Range) -> Series:
        now = self.clock()
        start = range_start(range_, now)
        account = await self.store.account(user_id)  # opened on first use, as elsewhere
        live = value_account(account, self.book.prices()).total_value
        async with self.store.pool.acquire() as conn:
            opened = _ms(
                await conn.fetchval("SELECT created_at FROM accounts WHERE user_id = $1", user_id)
            )
            before = None
            if start is not None:
                before = await conn.fetchrow(
                    "SELECT ts, total_value, btc_price FROM valuation_snapshots"
                    " WHERE user_id = $1 AND ts <= $2 ORDER BY ts DESC LIMIT 1",
                    user_id,
                    _dt(start),
                )
            inside = await conn.fetch(
                "SELECT ts, total_value, btc_price FROM valuation_snapshots WHERE user_id = $1"
                " AND ($2::timestamptz IS NULL OR ts > $2) ORDER BY ts",
                user_id,
                None if start is None else _dt(start),
            )
            flow_rows = await conn.fetch(
                "SELECT created_at, amount, kind, value_before FROM deposits WHERE user_id = $1"
                " ORDER BY created_at, id",
                user_id,
            )
        snaps = [
            Snapshot(_ms(r["ts"]), r["total_value"], r["btc_price"])
            for r in ([before] if before is not None else []) + list(inside)
        ]
        first = (
            ValuePoint(snaps[0].ts_ms, snaps[0].value)
            if before is not None
            else ValuePoint(opened - 1, Decimal(0))
        )
        points = [first] + [ValuePoint(s.ts_ms, s.value) for s in snaps if s.ts_ms > first.ts_ms]
        if now > points[-1].ts_ms:
            points.append(ValuePoint(now, live))
        times = [p.ts_ms for p in points]
        flows = []
        for r in flow_rows:
            ts = _ms(r["created_at"])
            amount = r["amount"] if r["kind"] == "deposit" else -r["amount"]
            value_before = r["value_before"]
            if value_before is None:
                value_before = points[max(0, bisect.bisect_right(times, ts) - 1)].value
            flows.append(CashFlow(ts, amount, value_before))
        benchmark = []
        start_btc = next((s for s in snaps if s.btc_price is not None), None)
        quote = self.book.quotes.get(BENCHMARK)
        if start_btc is not None and start_btc.btc_price is not None and quote is not None:
            benchmark = [
                ValuePoint(start_btc.ts_ms, start_btc.btc_price),
                ValuePoint(max(now, start_btc.ts_ms + 1), quote.price),
            ]
        snapshot_points = [ValuePoint(s.ts_ms, s.value) for s in snaps if s.ts_ms >= (start or 0)]
        return Series(points, [*snapshot_points, ValuePoint(now, live)], flows, benchmark)

    async def history(self, user_id: str, range_: Range) -> dict[str, Any]:
        """The range's snapshots and the value now, downsampled (minute, hour, day buckets)."""
        series = await self.series(user_id, range_)
        shown = history(series.snapshots, range_, self.clock())
        return {
            "range": range_,
            "points": [{"ts": _iso(p.ts_ms), "total_value": dec(p.value)} for p in shown],
        }

    async def performance(self, user_id: str, range_: Range) -> dict[str, Any]:
        series = await self.series(user_id, range_)
        figures = performance(series.points, series.flows, series.benchmark)
        return {
            "range": range_,
            "start": _iso(max(series.points[0].ts_ms, 0)),
            "end": _iso(series.points[-1].ts_ms),
            "twr": _ratio(figures.twr),
            "mwr": _ratio(figures.mwr),
            "max_drawdown": _ratio(figures.max_drawdown),
            "benchmark_return": _ratio(hold_return(series.benchmark)),
            "benchmark": BENCHMARK,
        }


RATIO = Decimal("1e-12")


def _ratio(value: Decimal | None) -> str | None:
    """A return as a decimal string, to 12 places (reports, not ledger amounts)."""
    return None if value is None else dec(value.quantize(RATIO).normalize())


def snapshotting(
    reports: Reports, interval_s: float
) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    """The snapshot task, every ``interval_s``; a failed round is logged and the next one runs."""

    async def loop() -> None:
        while True:
            try:
                await reports.snapshot_once()
            except Exception:
                log.exception("snapshot_failed")
            await asyncio.sleep(interval_s)

    return background(loop())
