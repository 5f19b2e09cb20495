"""The spread between sources, over fresh prices only, in exact decimals."""

from __future__ import annotations

from decimal import Decimal

from tickwatch_common.events import Tick
from tickwatch_gateway.market.pricebook import PriceView
from tickwatch_gateway.market.spread import Spread, source_rows, spread, spread_json

NOW = 1_800_000_000_000
MAX_AGE_MS = 120_000


def view(source: str, price: str, age_ms: int) -> PriceView:
    return PriceView.of(
        Tick(
            symbol="BTC-USD",
            base="BTC",
            quote="USD",
            source=source,  # type: ignore[arg-type]
            price=Decimal(price),
            ts_event=NOW - age_ms,
            ts_ingest=NOW,
        )
    )


def test_the_spread_is_max_minus_min_and_that_in_percent_of_the_min() -> None:
    # 67012.34 - 66950.00 = 62.34; 62.34 / 66950 * 100 = 0.09311426437640...% → 0.093114
    found = spread(
        [
            ("binance", Decimal("67012.34")),
            ("coinbase", Decimal("66950.00")),
            ("coingecko", Decimal("66990.5")),
        ]
    )
    assert found == Spread(Decimal("62.34"), Decimal("0.093114"), "coinbase", "binance")


def test_the_percentage_rounds_half_even_at_six_places() -> None:
    # 1 / 8,000,000 * 100 = 0.0000125 % exactly: half-even keeps 0.000012 (half-up: 0.000013)
    found = spread([("binance", Decimal("8000000")), ("coinbase", Decimal("8000001"))])
    assert found is not None
    assert (found.absolute, found.pct) == (Decimal("1"), Decimal("0.000012"))


def test_fewer_than_two_prices_have_no_spread_and_a_zero_low_no_percentage() -> None:
    assert spread([]) is None
    assert spread([("binance", Decimal("1"))]) is None
    found = spread([("binance", Decimal("0")), ("coinbase", Decimal("2"))])
    assert found is not None and found.pct is None
    same = spread([("coinbase", Decimal("5")), ("binance", Decimal("5"))])
    assert same == Spread(Decimal("0"), Decimal("0"), "binance", "coinbase")


def test_only_fresh_prices_are_compared_and_written_without_trailing_zeros() -> None:
    views = [
        view("binance", "100.10", 1_500),
        view("coinbase", "100.00", MAX_AGE_MS),  # exactly the bound: still fresh
        view("coingecko", "90", MAX_AGE_MS + 1),  # stale: would widen the spread to 10.10
        view("replay", "100.05", -5_000),  # stamped in the future: fresh, age 0
    ]
    assert spread_json(views, NOW, MAX_AGE_MS) == {
        "absolute": "0.1",
        "pct": "0.1",
        "low_source": "coinbase",
        "high_source": "binance",
        "sources": 3,
    }
    rows = source_rows(views, NOW, MAX_AGE_MS)
    assert [(r["source"], r["price"], r["age_s"], r["fresh"]) for r in rows] == [
        ("binance", "100.10", 1.5, True),
        ("coinbase", "100.00", 120.0, True),
        ("coingecko", "90", 120.001, False),
        ("replay", "100.05", 0.0, True),
    ]
    assert rows[0]["ts"] == "2027-01-15T07:59:58.500Z"
    assert spread_json(views[2:3] + views[:1], NOW, MAX_AGE_MS) is None
