"""Returns over a range from value snapshots and cash flows, and the history resolution rule.

Inputs (plain data, epoch ms, UTC):

- ``points``: :class:`ValuePoint` snapshots of the account's total value over the range, the
  first at the range's start (the latest snapshot at or before it). A snapshot at the same
  instant as a cash flow is read as taken *after* it.
- ``flows``: :class:`CashFlow` deposits (positive) and withdrawals (negative), each with the
  account's value immediately *before* it (the valuer knows it exactly when the flow is booked).
  Flows at or before the first point are already in its value and are ignored; flows after the
  last point are outside the range.

Definitions (all fractions: 0.1 is +10 %):

- **TWR** (true time-weighted return): the range is cut at every cash flow; each sub-period's
  growth is ``value at its end (before the flow) / value at its start (after the previous flow)``
  and the TWR is the product of the growths minus 1, so the size and timing of deposits do not
  count as performance. A sub-period that starts at value 0 (nothing invested) is skipped.
  None when no sub-period had anything invested.
- **TWR index**: the same chain at every snapshot (1 at the start): the curve deposits do not move.
- **Max drawdown**: the deepest fall of the TWR index from its running peak, ``1 - index / peak``,
  as a positive fraction (0.25 is a 25 % fall; 0 when it never fell).
- **MWR** (money-weighted return): the XIRR of the flows from the investor's side (the starting
  value and each deposit paid in, each withdrawal and the final value received), annualised
  over 365-day years as spreadsheets' XIRR is, found by bisection in Decimal to
  :data:`XIRR_TOLERANCE`. None when it is undefined: a range of no duration, flows that are all
  one sign (or all zero), or no rate in (-100 %, :data:`XIRR_MAX_RATE`] that prices them at 0.
  If several rates do (flows changing sign more than once), the bisection finds one of them.
- **Benchmark**: simply holding BTC over the range, ``last price / first price - 1``.

Divisions, powers and logarithms round in :data:`RETURNS` (34 digits); these are reports, not
ledger amounts.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Literal

ZERO = Decimal(0)
ONE = Decimal(1)

RETURNS = Context(prec=34, rounding=ROUND_HALF_EVEN)
XIRR_TOLERANCE = Decimal("1e-12")
"""The bisection stops once the bracket is narrower than this (a rate, as a fraction)."""
XIRR_MAX_RATE = Decimal("1e9")
"""The highest annualised rate searched (a day's +6 % annualises past 1e9)."""
YEAR_MS = 365 * 86_400_000

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
THIRTY_DAYS_MS = 30 * DAY_MS

Range = Literal["1d", "7d", "30d", "ytd", "all"]
RANGES: tuple[Range, ...] = ("1d", "7d", "30d", "ytd", "all")


@dataclass(frozen=True, slots=True)
class ValuePoint:
    """The account's total value at ``ts_ms``."""

    ts_ms: int
    value: Decimal


@dataclass(frozen=True, slots=True)
class CashFlow:
    """A deposit (``amount`` > 0) or withdrawal (< 0) at ``ts_ms``, and the value just before it."""

    ts_ms: int
    amount: Decimal
    value_before: Decimal


@dataclass(frozen=True, slots=True)
class Performance:
    """What ``GET /portfolio/performance`` answers; None where a figure is undefined."""

    twr: Decimal | None
    mwr: Decimal | None
    max_drawdown: Decimal
    benchmark_return: Decimal | None


def _flows_in(points: Sequence[ValuePoint], flows: Iterable[CashFlow]) -> list[CashFlow]:
    start, end = points[0].ts_ms, points[-1].ts_ms
    return sorted((f for f in flows if start < f.ts_ms <= end), key=lambda f: f.ts_ms)


def twr_index(points: Sequence[ValuePoint], flows: Iterable[CashFlow]) -> list[ValuePoint]:
    """The TWR index at every snapshot and at every flow (just before it), in time order."""
    if not points:
        return []
    points = sorted(points, key=lambda p: p.ts_ms)
    pending = _flows_in(points, flows)
    out: list[ValuePoint] = []
    with localcontext(RETURNS):
        linked = ONE  # growth of the sub-periods already closed
        base = points[0].value  # the current sub-period's starting value
        i = 0
        for point in points:
            while i < len(pending) and pending[i].ts_ms <= point.ts_ms:
                flow = pending[i]
                if base > 0:
                    linked *= flow.value_before / base
                out.append(ValuePoint(flow.ts_ms, linked))
                base = flow.value_before + flow.amount
                i += 1
            out.append(ValuePoint(point.ts_ms, linked * point.value / base if base > 0 else linked))
    return out


def twr(points: Sequence[ValuePoint], flows: Iterable[CashFlow]) -> Decimal | None:
    """The true time-weighted return over ``points``' span (see the module docstring)."""
    if not points:
        return None
    points = sorted(points, key=lambda p: p.ts_ms)
    pending = _flows_in(points, flows)
    starts = [points[0].value] + [f.value_before + f.amount for f in pending]
    if all(s <= 0 for s in starts):
        return None
    with localcontext(RETURNS):
        return twr_index(points, pending)[-1].value - ONE


def max_drawdown(index: Iterable[ValuePoint]) -> Decimal:
    """The deepest ``1 - value / running peak`` of a series (0 if it never fell)."""
    peak: Decimal | None = None
    worst = ZERO
    with localcontext(RETURNS):
        for point in index:
            if peak is None or point.value > peak:
                peak = point.value
            elif peak > 0:
                worst = max(worst, ONE - point.value / peak)
    return worst


def _npv(rate: Decimal, flows: Sequence[tuple[Decimal, Decimal]]) -> Decimal:
    """Σ amount / (1 + rate) ** years, through one logarithm (years ≥ 0)."""
    log_growth = (ONE + rate).ln()
    return sum((amount * (-years * log_growth).exp() for years, amount in flows), ZERO)


def xirr(cashflows: Iterable[tuple[int, Decimal]]) -> Decimal | None:
    """The annualised rate at which ``(ts_ms, amount)`` flows (paid in < 0, received > 0) have a
    net present value of 0, to :data:`XIRR_TOLERANCE`; None when undefined (module docstring)."""
    ordered = sorted(cashflows)
    if len(ordered) < 2:
        return None
    t0 = ordered[0][0]
    if ordered[-1][0] == t0:
        return None
    if not any(a > 0 for _, a in ordered) or not any(a < 0 for _, a in ordered):
        return None
    with localcontext(RETURNS):
        flows = [(Decimal(ts - t0) / YEAR_MS, amount) for ts, amount in ordered]
        lo, hi = Decimal("-0.999999999"), ONE
        npv_lo = _npv(lo, flows)
        npv_hi = _npv(hi, flows)
        while (npv_lo > 0) == (npv_hi > 0) and hi < XIRR_MAX_RATE:
            lo, npv_lo = hi, npv_hi
            hi *= 10
            npv_hi = _npv(hi, flows)
        if npv_hi == 0:
            return hi
        if (npv_lo > 0) == (npv_hi > 0):
            return None
        while hi - lo > XIRR_TOLERANCE * max(ONE, abs(lo)):
            mid = (lo + hi) / 2
            npv_mid = _npv(mid, flows)
            if npv_mid == 0:
                return mid
            if (npv_mid > 0) == (npv_lo > 0):
                lo, npv_lo = mid, npv_mid
            else:
                hi = mid
        return ((lo + hi) / 2).quantize(Decimal("1e-10"))


def mwr(points: Sequence[ValuePoint], flows: Iterable[CashFlow]) -> Decimal | None:
    """XIRR of the range: the starting value and deposits paid in, withdrawals and the final
    value received."""
    if not points:
        return None
    points = sorted(points, key=lambda p: p.ts_ms)
    cash = [(points[0].ts_ms, -points[0].value)]
    cash += [(f.ts_ms, -f.amount) for f in _flows_in(points, flows)]
    cash.append((points[-1].ts_ms, points[-1].value))
    return xirr(cash)


def hold_return(prices: Sequence[ValuePoint]) -> Decimal | None:
    """Holding the asset over the series: ``last / first - 1`` (None with no usable start)."""
    if not prices:
        return None
    ordered = sorted(prices, key=lambda p: p.ts_ms)
    if ordered[0].value <= 0:
        return None
    with localcontext(RETURNS):
        return ordered[-1].value / ordered[0].value - ONE


def performance(
    points: Sequence[ValuePoint],
    flows: Iterable[CashFlow],
    benchmark_prices: Sequence[ValuePoint],
) -> Performance:
    """Every figure for one range: pass the range's snapshots, flows and BTC prices."""
    flows = list(flows)
    return Performance(
        twr=twr(points, flows),
        mwr=mwr(points, flows),
        max_drawdown=max_drawdown(twr_index(points, flows)),
        benchmark_return=hold_return(benchmark_prices),
    )


# ---------------------------------------------------------------- history


def range_start(range_: Range, now_ms: int) -> int | None:
    """The first instant of a range ending now (UTC): 1d, 7d and 30d back from now, ``ytd`` at
    1 January 00:00 UTC of now's year, ``all`` None (since the account began)."""
    if range_ == "1d":
        return now_ms - DAY_MS
    if range_ == "7d":
        return now_ms - 7 * DAY_MS
    if range_ == "30d":
        return now_ms - THIRTY_DAYS_MS
    if range_ == "ytd":
        year = datetime.fromtimestamp(now_ms / 1000, tz=UTC).year
        return calendar.timegm((year, 1, 1, 0, 0, 0)) * 1000
    if range_ == "all":
        return None
    raise ValueError(f"range must be one of {', '.join(RANGES)}, got {range_!r}")


def resolution_ms(ts_ms: int, now_ms: int) -> int:
    """How finely a snapshot this old is kept: a minute within the last day, an hour within the
    last 30 days, a day beyond."""
    age = now_ms - ts_ms
    if age <= DAY_MS:
        return MINUTE_MS
    if age <= THIRTY_DAYS_MS:
        return HOUR_MS
    return DAY_MS


def downsample(points: Iterable[ValuePoint], now_ms: int) -> list[ValuePoint]:
    """The snapshots to keep (and to show): per UTC bucket of :func:`resolution_ms` (minutes,
    hours, days since the epoch, so days start at 00:00 UTC), the last snapshot in it; in time
    order. Idempotent, so the store can thin its rows with the same rule it answers with."""
    last: dict[tuple[int, int], ValuePoint] = {}
    for point in sorted(points, key=lambda p: p.ts_ms):
        step = resolution_ms(point.ts_ms, now_ms)
        last[(step, point.ts_ms // step)] = point
    return sorted(last.values(), key=lambda p: p.ts_ms)


def history(points: Iterable[ValuePoint], range_: Range, now_ms: int) -> list[ValuePoint]:
    """The series ``GET /portfolio/history?range=`` answers: the range's snapshots, downsampled."""
    start = range_start(range_, now_ms)
    return downsample((p for p in points if start is None or p.ts_ms >= start), now_ms)
