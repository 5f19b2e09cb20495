"""The bundled replay session is realistic enough and loops without a jump."""

from __future__ import annotations

from decimal import Decimal

from tickwatch_common.settings import DEFAULT_SYMBOLS
from tickwatch_ingestor.replay import load_session


def test_the_bundled_session_covers_every_default_symbol_with_thousands_of_trades() -> None:
    session = load_session()
    assert set(session.symbols) >= set(DEFAULT_SYMBOLS.split(","))
    for symbol in session.symbols:
        trades = [t for t in session.trades if t.symbol == symbol]
        assert len(trades) >= 2000
        prices = [t.price for t in trades]
        assert all(isinstance(p, Decimal) and p > 0 for p in prices)
        # A random walk: it moves, but not absurdly (under 5 % either way in the session).
        assert len(set(prices)) > 100
        assert max(prices) / min(prices) < Decimal("1.05")
        # It ends within 0.1 % of where it started, so the loop has no visible jump.
        assert abs(prices[-1] / prices[0] - 1) < Decimal("0.001")
    offsets = [t.offset_ms for t in session.trades]
    assert offsets == sorted(offsets) and offsets[-1] <= session.duration_ms


def test_loading_a_subset_keeps_only_those_symbols() -> None:
    assert load_session(symbols=["BTC-USDT"]).symbols == ["BTC-USDT"]
