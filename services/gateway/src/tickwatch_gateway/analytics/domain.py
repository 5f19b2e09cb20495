"""The pure core of analytics: figures over a window of 1-minute candles, movers and spikes.

Definitions (the contract, docs/DESIGN.md §3):

- A window (``1h``, ``24h``) ends at a symbol's newest stored 1-minute candle and holds the
  candles with ``end - window < open_time <= end``, so a paused feed still reports its last hour.
- Change % is ``(last close - first open) / first open * 100`` over the window's candles.
- VWAP uses the typical price: ``Σ((high + low + close) / 3 * volume) / Σ volume``.
- Realised volatility is the sample standard deviation (``n - 1``) of the log returns
  ``ln(close_i / close_(i-1))`` of consecutive candles' closes, per 1-minute step and not
  annualised (* √525600 for a yearly figure); it needs at least three closes.
- The volume spike ratio is the window's volume over the average volume of the ``lookback``
  windows before it; a previous window with no stored candle is left out of the average (a gap
  in the feed is not a quiet market).

Arithmetic is :class:`~decimal.Decimal` in :data:`CONTEXT` (28 significant digits, half-even),
so a figure does not depend on the process's decimal context; answers round to
:data:`DIGITS` decimal places.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from itertools import pairwise

from tickwatch_gateway.market import Bar

CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
DIGITS = 12
HOUR_MS = 3_600_000
WINDOW_MS = {"1h": HOUR_MS, "24h": 24 * HOUR_MS}
THREE = Decimal(3)
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Summary:
    """One symbol's figures over a window."""

    candles: int
    first_open_time: int
    last_open_time: int
    open: Decimal
    close: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal
    change_pct: Decimal | None
    """``None`` when the first open is zero."""
    vwap: Decimal | None
    """``None`` when nothing traded in the window."""
    volatility: Decimal | None
    """``None`` with fewer than three closes (two log returns)."""


@dataclass(frozen=True)
class Move:
    symbol: str
    change_pct: Decimal
    open: Decimal
    close: Decimal
    as_of: int
    """The open time of the window's last candle."""


@dataclass(frozen=True)
class Spike:
    symbol: str
    volume: Decimal
    average: Decimal
    ratio: Decimal
    windows: int
    """How many previous windows the average is over."""


def change_pct(first_open: Decimal, last_close: Decimal) -> Decimal | None:
    if first_open == 0:
        return None
    return CONTEXT.multiply(CONTEXT.divide(last_close - first_open, first_open), HUNDRED)


def vwap(bars: Sequence[Bar]) -> Decimal | None:
    volume = sum((b.volume for b in bars), Decimal(0))
    if volume == 0:
        return None
    weighted = sum(
        (CONTEXT.multiply(CONTEXT.divide(b.high + b.low + b.close, THREE), b.volume) for b in bars),
        Decimal(0),
    )
    return CONTEXT.divide(weighted, volume)


def log_returns(closes: Sequence[Decimal]) -> list[Decimal]:
    """``ln(close_i / close_(i-1))``; a return next to a non-positive close (a broken feed)
    is left out."""
    return [CONTEXT.divide(b, a).ln(CONTEXT) for a, b in pairwise(closes) if a > 0 and b > 0]


def realised_volatility(closes: Sequence[Decimal]) -> Decimal | None:
    returns = log_returns(closes)
    if len(returns) < 2:
        return None
    mean = CONTEXT.divide(sum(returns, Decimal(0)), Decimal(len(returns)))
    squares = sum((CONTEXT.multiply(r - mean, r - mean) for r in returns), Decimal(0))
    return CONTEXT.divide(squares, Decimal(len(returns) - 1)).sqrt(CONTEXT)


def window_bars(bars: Iterable[Bar], window: str) -> list[Bar]:
    """The bars (oldest first) inside ``window`` ending at the newest one's open time."""
    held = list(bars)
    if not held:
        return []
    end = held[-1].open_time
    return [b for b in held if end - WINDOW_MS[window] < b.open_time <= end]


def summarise(bars: Sequence[Bar]) -> Summary | None:
    """The figures over ``bars`` (one window's candles, oldest first); ``None`` when empty."""
    if not bars:
        return None
    first, last = bars[0], bars[-1]
    return Summary(
        candles=len(bars),
        first_open_time=first.open_time,
        last_open_time=last.open_time,
        open=first.open,
        close=last.close,
        high=max(b.high for b in bars),
        low=min(b.low for b in bars),
        volume=sum((b.volume for b in bars), Decimal(0)),
        change_pct=change_pct(first.open, last.close),
        vwap=vwap(bars),
        volatility=realised_volatility([b.close for b in bars]),
    )


def move_of(symbol: str, summary: Summary) -> Move | None:
    if summary.change_pct is None:
        return None
    return Move(symbol, summary.change_pct, summary.open, summary.close, summary.last_open_time)


def rank_movers(moves: Iterable[Move], limit: int) -> tuple[list[Move], list[Move]]:
    """The ``limit`` biggest rises and falls; a tie goes to the symbol first in order, and a
    symbol that did not move is in neither list."""
    held = list(moves)
    gainers = sorted((m for m in held if m.change_pct > 0), key=lambda m: (-m.change_pct, m.symbol))
    losers = sorted((m for m in held if m.change_pct < 0), key=lambda m: (m.change_pct, m.symbol))
    return gainers[:limit], losers[:limit]


def volume_spike(symbol: str, by_window: Mapping[int, Decimal], lookback: int) -> Spike | None:
    """``by_window[k]`` is the volume of the ``k``-th window back (0 the current one), present
    only for windows with a stored candle. ``None`` when no previous window has a candle or they
    traded nothing (no average to compare with)."""
    trailing = [by_window[k] for k in range(1, lookback + 1) if k in by_window]
    if not trailing:
        return None
    average = CONTEXT.divide(sum(trailing, Decimal(0)), Decimal(len(trailing)))
    if average == 0:
        return None
    volume = by_window.get(0, Decimal(0))
    return Spike(symbol, volume, average, CONTEXT.divide(volume, average), len(trailing))


def spikes_over(spikes: Iterable[Spike], threshold: Decimal) -> list[Spike]:
    """Spikes with ``ratio >= threshold``, biggest first (ties by symbol)."""
    return sorted((s for s in spikes if s.ratio >= threshold), key=lambda s: (-s.ratio, s.symbol))


def figure(value: Decimal | None) -> str | None:
    """A figure as the API answers it: :data:`DIGITS` places, no trailing zeros, no exponent."""
    if value is None:
        return None
    text = format(round(value, DIGITS).normalize(), "f")
    return "0" if text in ("-0", "0") else text
