"""The price book keeps the latest tick per symbol and each instrument's rules."""

from __future__ import annotations

from decimal import Decimal

from tickwatch_common.events import Instrument
from tickwatch_devstack.testing import replay_tick
from tickwatch_portfolio.market.book import PriceBook


def instrument(symbol: str, status: str = "TRADING") -> Instrument:
    base, quote = symbol.split("-")
    return Instrument.model_validate(
        {
            "symbol": symbol,
            "base": base,
            "quote": quote,
            "source": "binance",
            "step_size": "0.00001",
            "tick_size": "0.01",
            "min_notional": "5",
            "status": status,
        }
    )


def test_the_latest_tick_wins_and_a_late_one_does_not_move_it_back() -> None:
    book = PriceBook()
    book.on_events([replay_tick("BTC-USDT", "100", 2000), replay_tick("BTC-USDT", "90", 1000)])
    quote = book.quotes["BTC-USDT"]
    assert (quote.price, quote.ts_ms) == (Decimal("100"), 2000)
    book.on_tick(replay_tick("BTC-USDT", "110", 3000))
    assert book.prices() == {"BTC-USDT": Decimal("110")}


def test_rules_follow_the_latest_instrument_record() -> None:
    book = PriceBook()
    book.on_events([instrument("ETH-USDT"), None])
    rules = book.rules["ETH-USDT"]
    assert (rules.step_size, rules.tick_size, rules.min_notional) == (
        Decimal("0.00001"),
        Decimal("0.01"),
        Decimal("5"),
    )
    assert book.trading["ETH-USDT"]
    book.on_instrument(instrument("ETH-USDT", "HALT"))
    assert not book.trading["ETH-USDT"]
