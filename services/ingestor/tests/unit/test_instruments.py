"""Trading rules from Binance's exchangeInfo and from the replay snapshot, on plain data."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from tickwatch_common.settings import DEFAULT_SYMBOLS
from tickwatch_ingestor.instruments import InstrumentPlan, plan_instruments
from tickwatch_ingestor.normalise import instruments_from_exchange_info
from tickwatch_ingestor.replay import (
    InstrumentRules,
    borrowed_level,
    load_instrument_rules,
    replay_instruments,
)

FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "binance" / "exchange_info_excerpt.json"
)


def symbol_info(
    symbol: str = "ETHUSDT",
    base: str = "ETH",
    quote: str = "USDT",
    *filters: dict[str, Any],
    status: str = "TRADING",
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "quoteAsset": quote,
        "filters": list(filters),
    }


LOT = {"filterType": "LOT_SIZE", "minQty": "0.0001", "maxQty": "9000", "stepSize": "0.00010000"}
PRICE = {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1e6", "tickSize": "0.01"}
NOTIONAL = {"filterType": "NOTIONAL", "minNotional": "5.00000000", "maxNotional": "9000000"}
OLD_NOTIONAL = {"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000", "applyToMarket": True}


def test_the_fixture_gives_btc_usdt_rules_with_the_exchanges_exact_strings() -> None:
    info = json.loads(FIXTURE.read_text())
    found = instruments_from_exchange_info(info, ["BTC-USDT"])
    [btc] = found.instruments
    assert (btc.symbol, btc.base, btc.quote, btc.source, btc.status) == (
        "BTC-USDT",
        "BTC",
        "USDT",
        "binance",
        "TRADING",
    )
    wire = json.loads(btc.to_bytes())
    assert wire["step_size"] == "0.00001000" and wire["tick_size"] == "0.01000000"
    # The trimmed excerpt has no notional filter: no minimum, as 0 disables a Binance rule.
    assert btc.min_notional == 0
    assert found.missing == [] and found.rejected == []


def test_notional_is_taken_from_notional_or_else_the_older_min_notional() -> None:
    info = {
        "symbols": [
            symbol_info("ETHUSDT", "ETH", "USDT", PRICE, LOT, NOTIONAL),
            symbol_info("SOLUSDT", "SOL", "USDT", PRICE, LOT, OLD_NOTIONAL),
            symbol_info("BNBUSDT", "BNB", "USDT", OLD_NOTIONAL, NOTIONAL, LOT, PRICE),
        ]
    }
    found = instruments_from_exchange_info(info, ["ETH-USDT", "SOL-USDT", "BNB-USDT"])
    assert {i.symbol: i.min_notional for i in found.instruments} == {
        "ETH-USDT": Decimal("5"),
        "SOL-USDT": Decimal("10"),
        "BNB-USDT": Decimal("5"),
    }


def test_missing_filters_disable_their_rule() -> None:
    no_filters = symbol_info("SOLUSDT", "SOL", "USDT")
    del no_filters["filters"]
    info = {"symbols": [symbol_info("ETHUSDT", "ETH", "USDT"), no_filters]}
    found = instruments_from_exchange_info(info, ["ETH-USDT", "SOL-USDT"])
    for i in found.instruments:
        assert (i.step_size, i.tick_size, i.min_notional) == (0, 0, 0)
    assert len(found.instruments) == 2


def test_a_halted_market_is_published_with_its_status() -> None:
    info = {"symbols": [symbol_info("ETHUSDT", "ETH", "USDT", LOT, status="HALT")]}
    [eth] = instruments_from_exchange_info(info, ["ETH-USDT"]).instruments
    assert eth.status == "HALT" and eth.step_size == Decimal("0.0001")


def test_unwanted_missing_and_unusable_symbols_are_told_apart() -> None:
    info = {
        "symbols": [
            symbol_info("ETHUSDT", "ETH", "USDT", LOT),
            symbol_info("SOLUSDT", "SOL", "USDT", {**LOT, "stepSize": "-1"}),
            symbol_info("BNBUSDT", "BNB", "USDT", {**PRICE, "tickSize": 0.01}),
            symbol_info("XRPUSDT", "XRP", "USDT", LOT, status="DELISTED"),
            symbol_info("ADAUSDT", "ADA", "USDT", LOT),  # the full list: not wanted
            {"symbol": "BROKEN"},
        ]
    }
    wanted = ["ETH-USDT", "SOL-USDT", "BNB-USDT", "XRP-USDT", "DOGE-USDT"]
    found = instruments_from_exchange_info(info, wanted)
    assert [i.symbol for i in found.instruments] == ["ETH-USDT"]
    assert found.missing == ["DOGE-USDT"]
    assert found.rejected == [
        ("SOL-USDT", "bad_decimal"),
        ("BNB-USDT", "bad_decimal"),
        ("XRP-USDT", "unknown_status"),
    ]


def test_symbols_take_the_canonical_base_quote_form() -> None:
    info = {"symbols": [symbol_info("ethbtc", "eth", "btc", LOT)]}
    [i] = instruments_from_exchange_info(info, ["ETH-BTC"]).instruments
    assert (i.symbol, i.base, i.quote) == ("ETH-BTC", "ETH", "BTC")


def test_an_answer_without_symbols_gives_nothing_and_misses_everything() -> None:
    found = instruments_from_exchange_info({"code": -1121}, ["BTC-USDT"])
    assert found.instruments == [] and found.missing == ["BTC-USDT"]


# ------------------------------------------------------------------ the replay snapshot


def test_the_bundled_snapshot_has_binance_like_rules_for_every_default_symbol() -> None:
    rules = load_instrument_rules()
    defaults = DEFAULT_SYMBOLS.split(",")
    assert set(rules) >= set(defaults)
    assert rules["BTC-USDT"] == InstrumentRules(Decimal("0.00001"), Decimal("0.01"), Decimal(5))
    assert rules["XRP-USDT"].step_size == Decimal("0.1")
    assert rules["XRP-USDT"].tick_size == Decimal("0.0001")
    instruments = replay_instruments(rules, defaults)
    assert [i.symbol for i in instruments] == defaults
    assert all(i.source == "replay" and i.status == "TRADING" for i in instruments)


def test_replayed_prices_respect_the_snapshots_tick_size() -> None:
    from tickwatch_ingestor.replay import load_session

    rules = load_instrument_rules()
    for trade in load_session().trades:
        assert trade.price % rules[trade.symbol].tick_size == 0


def test_symbols_outside_the_snapshot_still_get_rules() -> None:
    rules = {"BTC-USDT": InstrumentRules(Decimal("0.00001"), Decimal("0.01"), Decimal("5"))}
    by_symbol = {i.symbol: i for i in replay_instruments(rules, ["BTC-USD", "PEPE-USDT"])}
    # The same base: CoinGecko's BTC-USD trades like Binance's BTC-USDT.
    assert by_symbol["BTC-USD"].step_size == Decimal("0.00001")
    assert (by_symbol["BTC-USD"].base, by_symbol["BTC-USD"].quote) == ("BTC", "USD")
    # Unknown: the price step its borrowed replay movement is quoted in.
    pepe = by_symbol["PEPE-USDT"]
    assert pepe.tick_size == borrowed_level("PEPE-USDT")[1]
    assert pepe.step_size > 0 and pepe.min_notional > 0


# ------------------------------------------------------------------ which rules run


def test_binance_gives_the_rules_of_the_symbols_it_runs() -> None:
    plan = plan_instruments(
        "live",
        ["BTC-USDT", "ETH-USDT"],
        binance_symbols=["BTC-USDT", "ETH-USDT"],
        coingecko_symbols=["BTC-USD"],
    )
    assert plan == InstrumentPlan(binance_symbols=("BTC-USDT", "ETH-USDT"))


def test_without_binance_the_snapshot_covers_configured_and_coingecko_symbols() -> None:
    assert plan_instruments("replay", ["BTC-USDT", "ETH-USDT"]) == InstrumentPlan(
        snapshot_symbols=("BTC-USDT", "ETH-USDT")
    )
    plan = plan_instruments("live", ["BTC-USDT"], coingecko_symbols=["BTC-USD"])
    assert plan == InstrumentPlan(snapshot_symbols=("BTC-USDT", "BTC-USD"))
