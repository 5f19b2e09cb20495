"""Each source's price of one market, and the spread between the sources (pure: data and now).

A source's price is *fresh* while its tick's event time is at most ``max_age_ms`` old; only
fresh prices are compared, so a source that stopped (a replica warmed from Redis keeps its last
tick) cannot widen the spread. A tick stamped in the future (clock skew) is fresh, age 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from tickwatch_gateway.http.api_types import decimal_str
from tickwatch_gateway.market.pricebook import PriceView
from tickwatch_gateway.runtime.clock import iso_from_ms

PCT_PLACES = Decimal("0.000001")
"""The spread's percentage is rounded half-even to 6 places (a millionth of a percent)."""


@dataclass(frozen=True)
class Spread:
    """The highest fresh price minus the lowest, and that in % of the lowest."""

    absolute: Decimal
    pct: Decimal | None  # None when the lowest price is 0 (no percentage of nothing)
    low_source: str
    high_source: str


def spread(prices: Sequence[tuple[str, Decimal]]) -> Spread | None:
    """The spread over ``(source, price)`` pairs; ``None`` with fewer than two.

    Equal prices order by source name, so the named low and high sources are deterministic."""
    if len(prices) < 2:
        return None
    ordered = sorted(prices, key=lambda sp: (sp[1], sp[0]))
    (low_source, low), (high_source, high) = ordered[0], ordered[-1]
    absolute = high - low
    pct = None if low <= 0 else (absolute * 100 / low).quantize(PCT_PLACES, ROUND_HALF_EVEN)
    return Spread(absolute, pct, low_source, high_source)


def plain(value: Decimal) -> str:
    """Exact digits without trailing zeros, never an exponent: ``0.0125``, ``100``, ``0``."""
    return decimal_str(value.normalize()) if value else "0"


def age_ms(view: PriceView, now_ms: int) -> int:
    return max(0, now_ms - view.tick.ts_event)


def source_rows(
    views: Sequence[PriceView], now_ms: int, max_age_ms: int
) -> list[dict[str, object]]:
    """One row per source: its price, event time, age in seconds and whether it is fresh."""
    rows: list[dict[str, object]] = []
    for view in views:
        age = age_ms(view, now_ms)
        rows.append(
            {
                "source": view.tick.source,
                "price": decimal_str(view.tick.price),
                "ts": iso_from_ms(view.tick.ts_event),
                "age_s": age / 1000,
                "fresh": age <= max_age_ms,
            }
        )
    return rows


def spread_json(
    views: Sequence[PriceView], now_ms: int, max_age_ms: int
) -> dict[str, object] | None:
    """The spread over the fresh ones of ``views``, as the API writes it (decimal strings)."""
    fresh = [(v.tick.source, v.tick.price) for v in views if age_ms(v, now_ms) <= max_age_ms]
    found = spread(fresh)
    if found is None:
        return None
    return {
        "absolute": plain(found.absolute),
        "pct": None if found.pct is None else plain(found.pct),
        "low_source": found.low_source,
        "high_source": found.high_source,
        "sources": len(fresh),
    }
