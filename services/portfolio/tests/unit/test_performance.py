"""Returns against worked examples done by hand, and the history resolution rule."""

from __future__ import annotations

from decimal import Decimal

from tickwatch_portfolio.performance.domain import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    CashFlow,
    ValuePoint,
    downsample,
    history,
    hold_return,
    max_drawdown,
    mwr,
    performance,
    range_start,
    twr,
    twr_index,
    xirr,
)

D = Decimal
YEAR = 365 * DAY_MS


def points(*pairs: tuple[int, str]) -> list[ValuePoint]:
    return [ValuePoint(ts, D(value)) for ts, value in pairs]


# A month with a deposit and a withdrawal:
#   day  0: value 1000
#   day 10: value 1100 just before a deposit of 500 -> 1600 after
#   day 15: value 2000
#   day 20: value 1760 just before a withdrawal of 760 -> 1000 after
#   day 30: value 900
MONTH_POINTS = points(
    (0, "1000"),
    (10 * DAY_MS, "1600"),
    (15 * DAY_MS, "2000"),
    (20 * DAY_MS, "1000"),
    (30 * DAY_MS, "900"),
)
MONTH_FLOWS = [
    CashFlow(10 * DAY_MS, D("500"), value_before=D("1100")),
    CashFlow(20 * DAY_MS, D("-760"), value_before=D("1760")),
]


def test_twr_chain_links_the_sub_periods_between_cash_flows() -> None:
    # sub-periods: 1100/1000 = 1.1, 1760/1600 = 1.1, 900/1000 = 0.9
    # TWR = 1.1 x 1.1 x 0.9 - 1 = 1.089 - 1 = 0.089
    assert twr(MONTH_POINTS, MONTH_FLOWS) == D("0.089")


def test_the_twr_index_and_its_drawdown_ignore_deposits() -> None:
    index = twr_index(MONTH_POINTS, MONTH_FLOWS)
    # day 0: 1; day 10 before the flow: 1.1, after (1600/1600): 1.1;
    # day 15: 1.1 x 2000/1600 = 1.375; day 20 before: 1.1 x 1760/1600 = 1.21, after: 1.21;
    # day 30: 1.21 x 900/1000 = 1.089
    assert [p.value for p in index] == [
        D(v) for v in ("1", "1.1", "1.1", "1.375", "1.21", "1.21", "1.089")
    ]
    # peak 1.375; deepest 1.089: 1 - 1.089/1.375 = 1 - 0.792 = 0.208
    # (the raw values fall 2000 -> 900, 55 %, mostly the withdrawal)
    assert max_drawdown(index) == D("0.208")


def test_xirr_of_a_single_year_at_ten_percent() -> None:
    # pay 1000, receive 1100 a year (365 days) later: 1000 = 1100 / (1 + r) -> r = 0.1
    assert xirr([(0, D("-1000")), (YEAR, D("1100"))]) == D("0.1000000000")


def test_mwr_with_a_deposit_mid_range() -> None:
    # 1000 at t0, 1000 more after a year (value 1100 before it), 2310 after two years.
    # At r = 10 %: 1000 x 1.1^2 + 1000 x 1.1 = 1210 + 1100 = 2310, so XIRR = 0.1.
    # TWR: 1100/1000 x 2310/2100 = 1.1 x 1.1 = 1.21 -> 0.21.
    series = points((0, "1000"), (YEAR, "2100"), (2 * YEAR, "2310"))
    flows = [CashFlow(YEAR, D("1000"), value_before=D("1100"))]
    assert mwr(series, flows) == D("0.1000000000")
    assert twr(series, flows) == D("0.21")


def test_mwr_with_a_withdrawal_mid_range() -> None:
    # 1000 at t0; after a year value 1200, 500 withdrawn (700 left); after two years 840.
    # At r = 20 %: 500/1.2 + 840/1.44 = 416.67 + 583.33 = 1000, so XIRR = 0.2.
    # TWR: 1200/1000 x 840/700 = 1.2 x 1.2 = 1.44 -> 0.44.
    series = points((0, "1000"), (YEAR, "700"), (2 * YEAR, "840"))
    flows = [CashFlow(YEAR, D("-500"), value_before=D("1200"))]
    assert mwr(series, flows) == D("0.2000000000")
    assert twr(series, flows) == D("0.44")


def test_a_big_deposit_before_a_fall_sinks_the_mwr_not_the_twr() -> None:
    # 1000 doubles to 2000 in a year, then 10000 is deposited (12000) and it halves to 6000.
    # TWR: 2 x 0.5 - 1 = 0. MWR: -1000 - 10000 x + 6000 x^2 = 0 with x = 1/(1+r):
    # x = (10000 + sqrt(10000^2 + 4 x 6000 x 1000)) / 12000 = (10000 + 11135.5287...) / 12000
    #   = 1.76129406047167..., r = 1/x - 1 = -0.43223563716997...
    series = points((0, "1000"), (YEAR, "12000"), (2 * YEAR, "6000"))
    flows = [CashFlow(YEAR, D("10000"), value_before=D("2000"))]
    assert twr(series, flows) == 0
    result = mwr(series, flows)
    assert result is not None and abs(result - D("-0.43223563717")) < D("1e-9")


def test_xirr_is_none_when_undefined() -> None:
    assert xirr([]) is None
    assert xirr([(0, D("-1000"))]) is None
    assert xirr([(0, D("-1000")), (0, D("1100"))]) is None  # no time passes
    assert xirr([(0, D("-1000")), (YEAR, D("-5"))]) is None  # never paid back
    assert xirr([(0, D("1000")), (YEAR, D("5"))]) is None  # nothing paid in


def test_a_total_loss_has_no_xirr_in_range_and_an_empty_account_no_twr() -> None:
    assert xirr([(0, D("-1000")), (YEAR, D("0"))]) is None  # -100 % is outside (-1, max]
    assert twr(points((0, "0"), (DAY_MS, "0")), []) is None


def test_a_period_starting_from_nothing_is_skipped() -> None:
    # Value 0 at the start, 1000 deposited on day 1 (value before 0), 1100 on day 2: the first
    # sub-period has nothing invested; the second grows 1100/1000 -> TWR 0.1.
    series = points((0, "0"), (DAY_MS, "1000"), (2 * DAY_MS, "1100"))
    flows = [CashFlow(DAY_MS, D("1000"), value_before=D("0"))]
    assert twr(series, flows) == D("0.1")


def test_flows_outside_the_range_are_ignored() -> None:
    series = points((DAY_MS, "1000"), (2 * DAY_MS, "1100"))
    early = CashFlow(DAY_MS, D("1000"), value_before=D("0"))  # already in the first value
    late = CashFlow(3 * DAY_MS, D("5000"), value_before=D("1100"))
    assert twr(series, [early, late]) == D("0.1")


def test_the_benchmark_is_the_return_of_holding_btc() -> None:
    prices = points((0, "60000"), (DAY_MS, "58000"), (2 * DAY_MS, "66000"))
    assert hold_return(prices) == D("0.1")  # 66000 / 60000 - 1
    assert hold_return([]) is None


def test_performance_gathers_every_figure() -> None:
    result = performance(MONTH_POINTS, MONTH_FLOWS, points((0, "50000"), (30 * DAY_MS, "45000")))
    assert result.twr == D("0.089")
    assert result.max_drawdown == D("0.208")
    assert result.benchmark_return == D("-0.1")
    assert result.mwr is not None


# ---------------------------------------------------------------- history

NOW = 1_710_504_000_000  # 2024-03-15 12:00:00 UTC


def test_range_starts_in_utc() -> None:
    assert range_start("1d", NOW) == NOW - DAY_MS
    assert range_start("7d", NOW) == NOW - 7 * DAY_MS
    assert range_start("30d", NOW) == NOW - 30 * DAY_MS
    assert range_start("ytd", NOW) == 1_704_067_200_000  # 2024-01-01 00:00:00 UTC
    assert range_start("all", NOW) is None


def test_minutes_for_the_last_day_hours_to_thirty_days_days_beyond() -> None:
    base = NOW - NOW % MINUTE_MS
    recent = [ValuePoint(base - 2 * MINUTE_MS + s * 1000, D(s)) for s in range(0, 120, 30)]
    two_days = NOW - 2 * DAY_MS
    hour_start = two_days - two_days % HOUR_MS
    older = [ValuePoint(hour_start + m * MINUTE_MS, D(m)) for m in (1, 30, 59)]
    forty_days = NOW - 40 * DAY_MS
    day_start = forty_days - forty_days % DAY_MS
    oldest = [ValuePoint(day_start + h * HOUR_MS, D(h)) for h in (0, 12, 23)]
    kept = downsample(recent + older + oldest, NOW)
    # the last point of each bucket: one per day, one per hour, one per minute
    assert [p.value for p in kept] == [D(23), D(59), D(30), D(90)]
    assert downsample(kept, NOW) == kept


def test_history_filters_to_the_range_then_downsamples() -> None:
    series = [ValuePoint(NOW - m * MINUTE_MS, D(m)) for m in range(0, 3 * 24 * 60, 10)]
    day = history(series, "1d", NOW)
    assert len(day) == 24 * 6 + 1  # every 10 minutes, both ends included
    week = history(series, "7d", NOW)
    older = [p for p in week if p.ts_ms < NOW - DAY_MS]
    assert len({p.ts_ms // HOUR_MS for p in older}) == len(older)  # one per hour beyond a day
