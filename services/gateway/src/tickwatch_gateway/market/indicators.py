"""Technical indicators over closing prices: the pure core, in Decimal, aligned with TA-Lib.

Each function takes closes oldest first and answers a list of the same length with ``None``
where the indicator is not yet defined, following TA-Lib's conventions exactly:

- SMA(n): mean of the last n closes; first value at index n-1.
- EMA(n): k = 2/(n+1), seeded with the SMA of the first n closes at index n-1.
- RSI(n), Wilder: average gain and loss seeded with the simple mean of the first n changes,
  then smoothed as (previous·(n-1) + current)/n; first value at index n.
- MACD(fast, slow, signal): both EMAs seeded at index slow-1 (the fast one on the fast-period
  mean ending there, as TA-Lib does); signal is an EMA of the MACD line; all three start at
  index slow+signal-2.
- BBANDS(n, k): SMA(n) ± k·(population standard deviation of the same window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext

CONTEXT = Context(prec=34)
Series = list[Decimal | None]


def sma(values: Sequence[Decimal], n: int) -> Series:
    out: Series = [None] * len(values)
    with localcontext(CONTEXT):
        window = Decimal(0)
        for i, v in enumerate(values):
            window += v
            if i >= n:
                window -= values[i - n]
            if i >= n - 1:
                out[i] = window / n
    return out


def _ema_from(values: Sequence[Decimal], n: int, seed_index: int, seed: Decimal) -> Series:
    out: Series = [None] * len(values)
    with localcontext(CONTEXT):
        k = Decimal(2) / (n + 1)
        prev = seed
        out[seed_index] = prev
        for i in range(seed_index + 1, len(values)):
            prev = (values[i] - prev) * k + prev
            out[i] = prev
    return out


def ema(values: Sequence[Decimal], n: int) -> Series:
    if len(values) < n:
        return [None] * len(values)
    with localcontext(CONTEXT):
        seed = sum(values[:n], Decimal(0)) / n
    return _ema_from(values, n, n - 1, seed)


def rsi(values: Sequence[Decimal], n: int) -> Series:
    out: Series = [None] * len(values)
    if len(values) <= n:
        return out
    with localcontext(CONTEXT):
        gains = losses = Decimal(0)
        for i in range(1, n + 1):
            change = values[i] - values[i - 1]
            if change > 0:
                gains += change
            else:
                losses -= change
        avg_gain, avg_loss = gains / n, losses / n
        out[n] = _rsi(avg_gain, avg_loss)
        for i in range(n + 1, len(values)):
            change = values[i] - values[i - 1]
            gain = change if change > 0 else Decimal(0)
            loss = -change if change < 0 else Decimal(0)
            avg_gain = (avg_gain * (n - 1) + gain) / n
            avg_loss = (avg_loss * (n - 1) + loss) / n
            out[i] = _rsi(avg_gain, avg_loss)
    return out


def _rsi(gain: Decimal, loss: Decimal) -> Decimal:
    total = gain + loss
    return Decimal(0) if total == 0 else 100 * gain / total


@dataclass(frozen=True)
class Macd:
    macd: Series
    signal: Series
    hist: Series


def macd(values: Sequence[Decimal], fast: int, slow: int, signal: int) -> Macd:
    size = len(values)
    empty: Series = [None] * size
    if fast > slow:
        fast, slow = slow, fast
    start = slow + signal - 2
    if size <= start:
        return Macd(empty, list(empty), list(empty))
    with localcontext(CONTEXT):
        seed_fast = sum(values[slow - fast : slow], Decimal(0)) / fast
        seed_slow = sum(values[:slow], Decimal(0)) / slow
        fast_line = _ema_from(values, fast, slow - 1, seed_fast)
        slow_line = _ema_from(values, slow, slow - 1, seed_slow)
        line = [
            f - s if f is not None and s is not None else None
            for f, s in zip(fast_line, slow_line, strict=True)
        ]
        defined = [v for v in line if v is not None]
        signal_line = [None] * (slow - 1) + ema(defined, signal)
        out_macd: Series = [v if i >= start else None for i, v in enumerate(line)]
        out_signal: Series = [v if i >= start else None for i, v in enumerate(signal_line)]
        hist: Series = [
            m - s if m is not None and s is not None else None
            for m, s in zip(out_macd, out_signal, strict=True)
        ]
    return Macd(out_macd, out_signal, hist)


@dataclass(frozen=True)
class Bands:
    upper: Series
    middle: Series
    lower: Series


def bbands(values: Sequence[Decimal], n: int, k: Decimal) -> Bands:
    middle = sma(values, n)
    upper: Series = [None] * len(values)
    lower: Series = [None] * len(values)
    with localcontext(CONTEXT):
        for i in range(n - 1, len(values)):
            mean = middle[i]
            assert mean is not None
            variance = sum(((v - mean) ** 2 for v in values[i - n + 1 : i + 1]), Decimal(0)) / n
            width = k * variance.sqrt()
            upper[i], lower[i] = mean + width, mean - width
    return Bands(upper, middle, lower)


# ---------------------------------------------------------------- the query language


@dataclass(frozen=True)
class Spec:
    """One requested indicator, e.g. ``macd:12:26:9``."""

    name: str
    params: tuple[Decimal, ...]

    @property
    def label(self) -> str:
        return ":".join([self.name, *(format(p.normalize(), "f") for p in self.params)])


DEFAULTS: dict[str, tuple[Decimal, ...]] = {
    "sma": (Decimal(20),),
    "ema": (Decimal(20),),
    "rsi": (Decimal(14),),
    "macd": (Decimal(12), Decimal(26), Decimal(9)),
    "bbands": (Decimal(20), Decimal(2)),
}
MAX_PERIOD = 999


def parse_specs(text: str) -> list[Spec]:
    """``"sma:20,ema:50,macd:12:26:9"`` → specs; ValueError naming what is wrong."""
    specs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, *raw = part.lower().split(":")
        if name not in DEFAULTS:
            raise ValueError(f"unknown indicator {name!r}; known: {', '.join(DEFAULTS)}")
        defaults = DEFAULTS[name]
        if len(raw) > len(defaults):
            raise ValueError(f"{name} takes at most {len(defaults)} parameters")
        try:
            params = tuple(Decimal(r) for r in raw) + defaults[len(raw) :]
        except ArithmeticError:
            raise ValueError(f"bad parameter in {part!r}") from None
        periods = params if name != "bbands" else params[:1]
        if any(p != p.to_integral_value() or not 1 <= p <= MAX_PERIOD for p in periods):
            raise ValueError(f"periods of {part!r} must be whole numbers from 1 to {MAX_PERIOD}")
        if name == "bbands" and not (0 < params[1] <= 10):
            raise ValueError(f"band width of {part!r} must be in (0, 10]")
        specs.append(Spec(name, params))
    if not specs:
        raise ValueError("name at least one indicator, e.g. sma:20")
    if len(specs) > 10:
        raise ValueError("at most 10 indicators per request")
    return specs


def compute(spec: Spec, closes: Sequence[Decimal]) -> dict[str, Series]:
    """The named output series of one indicator."""
    p = [int(x) for x in spec.params] if spec.name != "bbands" else [int(spec.params[0])]
    if spec.name == "sma":
        return {"value": sma(closes, p[0])}
    if spec.name == "ema":
        return {"value": ema(closes, p[0])}
    if spec.name == "rsi":
        return {"value": rsi(closes, p[0])}
    if spec.name == "macd":
        m = macd(closes, p[0], p[1], p[2])
        return {"macd": m.macd, "signal": m.signal, "hist": m.hist}
    b = bbands(closes, p[0], spec.params[1])
    return {"upper": b.upper, "middle": b.middle, "lower": b.lower}
