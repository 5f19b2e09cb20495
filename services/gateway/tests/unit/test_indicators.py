"""Indicators equal TA-Lib's on the same closes to 1e-8, and the query language is strict."""

from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
import pytest
import talib
from tickwatch_gateway.market import indicators as ind


def random_walk(n: int, seed: int) -> list[Decimal]:
    rng = random.Random(seed)
    price = Decimal("67000.00")
    out = []
    for _ in range(n):
        price += Decimal(rng.randint(-25000, 25000)) / 100
        out.append(price)
    return out


CLOSES = [random_walk(300, seed) for seed in (1, 2, 3)]
FLAT = [Decimal("100")] * 60 + [Decimal("100.5"), Decimal("99.5")] * 20


def assert_close(ours: ind.Series, theirs: np.ndarray) -> None:
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if np.isnan(b):
            assert a is None, f"index {i}: we have {a}, TA-Lib has none"
        else:
            assert a is not None, f"index {i}: TA-Lib has {b}, we have none"
            assert abs(float(a) - b) <= 1e-8 * max(1.0, abs(b)), f"index {i}: {a} vs {b}"


def arr(values: list[Decimal]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=float)


@pytest.mark.parametrize("closes", [*CLOSES, FLAT])
@pytest.mark.parametrize("n", [2, 5, 14, 20, 50])
def test_sma_ema_rsi_match_talib(closes: list[Decimal], n: int) -> None:
    assert_close(ind.sma(closes, n), talib.SMA(arr(closes), n))
    assert_close(ind.ema(closes, n), talib.EMA(arr(closes), n))
    assert_close(ind.rsi(closes, n), talib.RSI(arr(closes), n))


@pytest.mark.parametrize("closes", [*CLOSES, FLAT])
@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5), (3, 10, 16)])
def test_macd_matches_talib(closes: list[Decimal], fast: int, slow: int, signal: int) -> None:
    ours = ind.macd(closes, fast, slow, signal)
    m, s, h = talib.MACD(arr(closes), fast, slow, signal)
    assert_close(ours.macd, m)
    assert_close(ours.signal, s)
    assert_close(ours.hist, h)


@pytest.mark.parametrize("closes", [*CLOSES, FLAT])
@pytest.mark.parametrize(("n", "k"), [(20, "2"), (10, "1.5"), (5, "3")])
def test_bbands_match_talib(closes: list[Decimal], n: int, k: str) -> None:
    ours = ind.bbands(closes, n, Decimal(k))
    upper, middle, lower = talib.BBANDS(arr(closes), n, float(k), float(k), 0)
    assert_close(ours.upper, upper)
    assert_close(ours.middle, middle)
    assert_close(ours.lower, lower)


def test_too_few_closes_give_no_values() -> None:
    short = CLOSES[0][:10]
    assert ind.sma(short, 20) == [None] * 10
    assert ind.rsi(short, 14) == [None] * 10
    assert ind.macd(short, 12, 26, 9).macd == [None] * 10


def test_specs_parse_with_defaults() -> None:
    specs = ind.parse_specs("sma:20, ema:50,rsi,macd:12:26:9,bbands:20:2")
    assert [s.label for s in specs] == ["sma:20", "ema:50", "rsi:14", "macd:12:26:9", "bbands:20:2"]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "foo:3",
        "sma:0",
        "sma:2.5",
        "sma:x",
        "macd:1:2:3:4",
        "bbands:20:0",
        "sma:1000",
    ],
)
def test_bad_specs_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        ind.parse_specs(bad)


def test_the_documented_pattern_admits_only_what_the_parser_accepts() -> None:
    import re

    from tickwatch_gateway.market.indicator_routes import SPEC_PATTERN

    for good in ["sma", "sma:20,ema:50,rsi:14,macd:12:26:9,bbands:20:2", "bbands:5:0.5", "rsi:1"]:
        assert re.fullmatch(SPEC_PATTERN, good)
        ind.parse_specs(good)
    for bad in ["sma:0", "sma:1:2", "bbands:20:0", "bbands:20:11", "foo", ""]:
        assert not re.fullmatch(SPEC_PATTERN, bad)
