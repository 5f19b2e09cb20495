"""The reads analytics needs from the candle store: each symbol's window of 1-minute candles
(through the market's :func:`load_history`) and the volume of each window back, summed by
PostgreSQL so that 24 days of minutes never leave the database."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tickwatch_gateway.analytics import domain
from tickwatch_gateway.market import Bar, CandleStore, load_history

WINDOW_VOLUMES = """
SELECT ($3::bigint - open_time) / $4::bigint AS k, sum(volume) AS volume FROM candles
WHERE symbol = $1 AND source = $2 AND interval = '1m'
  AND open_time > $3::bigint - $4::bigint * $5::bigint AND open_time <= $3::bigint
GROUP BY k
"""


@dataclass(frozen=True)
class Window:
    symbol: str
    source: str | None
    """The source with the newest candle (as ``/history`` picks); ``None`` with no candles."""
    bars: list[Bar]


async def window_of(store: CandleStore, symbol: str, window: str) -> Window:
    source = await store.default_source(symbol)
    if source is None:
        return Window(symbol, None, [])
    minutes = domain.WINDOW_MS[window] // 60_000
    bars = await load_history(
        store, symbol, source, "1m", start_ms=None, end_ms=None, limit=minutes
    )
    return Window(symbol, source, domain.window_bars(bars, window))


async def window_volumes(
    store: CandleStore, symbol: str, window: str, windows: int
) -> dict[int, Decimal]:
    """``{k: volume}`` of the ``k``-th window back from the symbol's newest candle (0 the
    current one), for ``k < windows``; windows without a stored candle are absent."""
    source = await store.default_source(symbol)
    if source is None:
        return {}
    end = await store.latest_open_time(symbol, source)
    if end is None:
        return {}
    rows = await store.pool.fetch(
        WINDOW_VOLUMES, symbol, source, end, domain.WINDOW_MS[window], windows
    )
    return {int(r["k"]): r["volume"] for r in rows}
