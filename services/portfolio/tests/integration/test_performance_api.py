"""History and performance against the real PostgreSQL and Kafka: the snapshot writer (once per
user per minute), the shapes, the downsampling, and a worked example of every figure."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from tickwatch_portfolio.__main__ import Portfolio
from tickwatch_portfolio.performance.domain import YEAR_MS
from tickwatch_portfolio.performance.reports import Reports

from .conftest import Gateway, Market

pytestmark = pytest.mark.integration

D = Decimal
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _dt(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


async def test_snapshots_once_a_minute_and_the_history_downsampled(
    portfolio: tuple[Portfolio, int], gateway: Gateway, market: Market
) -> None:
    running = portfolio[0]
    symbol = await market.listed()
    buy = {"symbol": symbol, "side": "buy", "quantity": "1"}
    assert (await gateway.call("POST", "/internal/orders", "hist", buy)).status == 201
    await gateway.call("GET", "/internal/portfolio", "cash-only")  # holds nothing: no snapshot

    now = int(time.time() * 1000)
    fixed = Reports(running.reports.store, running.book, lambda: now)
    await fixed.snapshot_once()
    await fixed.snapshot_once()  # the same minute: written once
    rows = await running.pool.fetch(
        "SELECT user_id, total_value FROM valuation_snapshots WHERE user_id IN ('hist', 'cash-only')"
    )
    assert [(r["user_id"], D(r["total_value"])) for r in rows] == [("hist", D("9999.9"))]

    # Twelve snapshots 10 s apart two hours ago: two minutes, so two points (the last of each).
    base = now - 2 * HOUR_MS
    base -= base % 60_000
    await running.pool.executemany(
        "INSERT INTO valuation_snapshots (user_id, ts, total_value, cash) VALUES ('hist', $1, $2, 0)",
        [(_dt(base + k * 10_000), D(9000 + k)) for k in range(12)],
    )
    reply = await gateway.call("GET", "/internal/history?range=1d", "hist")
    assert reply.status == 200
    assert reply.body["range"] == "1d"
    values = [D(p["total_value"]) for p in reply.body["points"]]
    assert values[:2] == [D("9005"), D("9011")]
    assert values[2] == D("9999.9")  # this minute's snapshot
    assert values[-1] == D("9999.9")  # and the value now
    assert all(p["ts"].endswith("Z") for p in reply.body["points"])

    bad = await gateway.call("GET", "/internal/history?range=2d", "hist")
    assert (bad.status, bad.body["field"]) == (422, "range")
    bad = await gateway.call("GET", "/internal/performance?range=week", "hist")
    assert (bad.status, bad.body["field"]) == (422, "range")


def _grown(amount: Decimal, at_ms: int, end_ms: int, rate: Decimal) -> Decimal:
    """``amount`` paid at ``at_ms`` grown to ``end_ms`` at the annual ``rate``."""
    years = D(end_ms - at_ms) / YEAR_MS
    return amount * (years * (1 + rate).ln()).exp()


async def test_performance_worked_by_hand_with_a_deposit_mid_range(
    portfolio: tuple[Portfolio, int], gateway: Gateway, market: Market
) -> None:
    """Opened 20 days ago with 10000; valued 10000 (19 days ago, BTC 100), 9000 (15 days),
    11000 (12 days); 1000 deposited 10 days ago when worth 11000; worth 12100 now, BTC 120 now.

    TWR: (11000 / 10000) x (12100 / 12000) - 1 = 1.1 x 1.0083333... - 1 = 0.109166666667.
    Max drawdown: the TWR index falls from 1 to 0.9: 0.1. Benchmark: 120 / 100 - 1 = 0.2.
    MWR: the annual rate r at which -10000 (20 days ago) - 1000 (10 days ago) + 12100 (now) is
    worth 0 (a day's few percent annualise past the XIRR's bound, so days, not hours).
    """
    running = portfolio[0]
    user = "perf"
    await gateway.call("GET", "/internal/portfolio", user)  # opened with its 10000
    now = int(time.time() * 1000)
    opened = now - 20 * DAY_MS
    async with running.pool.acquire() as conn:
        await conn.execute(
            "UPDATE accounts SET created_at = $2, cash = 12100, net_deposits = 11000,"
            " realized_pnl = 1100 WHERE user_id = $1",
            user,
            _dt(opened),
        )
        await conn.execute(
            "UPDATE deposits SET created_at = $2 WHERE user_id = $1", user, _dt(opened)
        )
        await conn.execute(
            "INSERT INTO deposits (user_id, amount, kind, value_before, created_at)"
            " VALUES ($1, 1000, 'deposit', 11000, $2)",
            user,
            _dt(now - 10 * DAY_MS),
        )
        await conn.executemany(
            "INSERT INTO valuation_snapshots (user_id, ts, total_value, cash, btc_price)"
            " VALUES ($1, $2, $3, 0, $4)",
            [
                (user, _dt(now - 19 * DAY_MS), D(10000), D(100)),
                (user, _dt(now - 15 * DAY_MS), D(9000), D(90)),
                (user, _dt(now - 12 * DAY_MS), D(11000), D(110)),
            ],
        )
    await market.tick("BTC-USDT", "120")

    for range_ in ("30d", "all"):
        reply = await gateway.call("GET", f"/internal/performance?range={range_}", user)
        assert reply.status == 200, reply.body
        body = reply.body
        assert set(body) >= {"twr", "mwr", "max_drawdown", "benchmark_return"}
        assert D(body["twr"]) == D("0.109166666667")
        assert D(body["max_drawdown"]) == D("0.1")
        assert D(body["benchmark_return"]) == D("0.2")
        rate = D(body["mwr"])
        assert rate > 0
        end = int(datetime.fromisoformat(body["end"].replace("Z", "+00:00")).timestamp() * 1000)

        paid = [(D(10000), opened), (D(1000), now - 10 * DAY_MS)]
        npv = D(12100) - sum(_grown(a, at, end, rate) for a, at in paid)
        assert abs(npv) < D("0.01"), npv

    history = (await gateway.call("GET", "/internal/history?range=all", user)).body
    assert [D(p["total_value"]) for p in history["points"]] == [
        D(10000),
        D(9000),
        D(11000),
        D(12100),
    ]
