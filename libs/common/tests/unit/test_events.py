"""Events keep decimal strings exact, refuse floats and ignore fields added later."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from tickwatch_common.events import Candle, Instrument, Tick
from tickwatch_common.kafka import partition_for
from tickwatch_common.topics import (
    ALERT_CHANGES,
    ALL_TOPICS,
    INSTRUMENTS,
    TICKS,
    all_topic_specs,
)

TICK = {
    "v": 1,
    "symbol": "BTC-USDT",
    "base": "BTC",
    "quote": "USDT",
    "source": "binance",
    "price": "86412.57000000",
    "ts_event": 1763884800120,
    "ts_ingest": 1763884800125,
}


def test_price_string_survives_a_round_trip_digit_for_digit() -> None:
    tick = Tick.model_validate(TICK)
    assert tick.price == Decimal("86412.57000000")
    again = Tick.model_validate_json(tick.to_bytes())
    assert '"price":"86412.57000000"' in tick.to_bytes().decode()
    assert again == tick


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=0, max_value=10**9))
def test_any_decimal_string_round_trips_exactly(value: Decimal) -> None:
    tick = Tick.model_validate({**TICK, "price": str(value)})
    assert str(Tick.model_validate_json(tick.to_bytes()).price) == str(value)


@pytest.mark.parametrize("price", ["0.00000045", "1000", "1E+3", "0.10"])
def test_prices_go_out_as_plain_strings_never_in_exponent_form(price: str) -> None:
    body = Tick.model_validate({**TICK, "price": price}).to_bytes().decode()
    assert f'"price":"{format(Decimal(price), "f")}"' in body
    assert "E" not in body.split('"price":')[1].split(",")[0]


@pytest.mark.parametrize("bad", [86412.57, True, "NaN", "Infinity", "abc"])
def test_float_and_non_numbers_are_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Tick.model_validate({**TICK, "price": bad})
    assert exc.value.errors()[0]["loc"] == ("price",)


@pytest.mark.parametrize("symbol", ["btc-usdt", "BTCUSDT", "BTC_USDT", ""])
def test_symbols_must_be_canonical(symbol: str) -> None:
    with pytest.raises(ValidationError):
        Tick.model_validate({**TICK, "symbol": symbol})


def test_unknown_fields_are_ignored_so_additive_changes_keep_v1() -> None:
    assert Tick.model_validate({**TICK, "new_optional_field": 1}).price == Decimal("86412.57000000")


def test_other_versions_are_refused() -> None:
    with pytest.raises(ValidationError):
        Tick.model_validate({**TICK, "v": 2})


def test_candle_requires_closed_flag() -> None:
    with pytest.raises(ValidationError) as exc:
        Candle.model_validate(
            {
                "symbol": "BTC-USDT",
                "source": "binance",
                "interval": "1m",
                "open_time": 0,
                "close_time": 59999,
                "open": "1",
                "high": "1",
                "low": "1",
                "close": "1",
                "volume": "0",
            }
        )
    assert ("closed",) in [e["loc"] for e in exc.value.errors()]


def test_ticks_and_alert_changes_are_co_partitioned() -> None:
    assert TICKS.partitions == ALERT_CHANGES.partitions
    for symbol in ["BTC-USDT", "ETH-USDT", "SOL-USDT"]:
        assert partition_for(symbol, TICKS.partitions) == partition_for(
            symbol, ALERT_CHANGES.partitions
        )


def test_partitioning_matches_kafkas_default_partitioner() -> None:
    # Java's murmur2 for b"BTC-USDT" taken positive, modulo 6; stable across clients.
    from aiokafka.partitioner import DefaultPartitioner

    for key in ["BTC-USDT", "ETH-USDT", "alert-1"]:
        assert partition_for(key, 6) == DefaultPartitioner()(key.encode(), list(range(6)), [])


def test_every_topic_has_a_dead_letter_topic() -> None:
    names = {name for name, _, _ in all_topic_specs()}
    for topic in ALL_TOPICS:
        assert topic.dlq in names
    assert dict((n, p) for n, p, _ in all_topic_specs())["market.ticks.v1"] >= 6


INSTRUMENT = {
    "v": 1,
    "symbol": "BTC-USDT",
    "base": "BTC",
    "quote": "USDT",
    "source": "binance",
    "step_size": "0.00001000",
    "tick_size": "0.01000000",
    "min_notional": "5.00000000",
    "status": "TRADING",
}


def test_an_instrument_keeps_its_rules_digit_for_digit() -> None:
    instrument = Instrument.model_validate(INSTRUMENT)
    assert instrument.step_size == Decimal("0.00001")
    wire = instrument.to_bytes().decode()
    assert '"step_size":"0.00001000"' in wire and '"min_notional":"5.00000000"' in wire
    assert Instrument.model_validate_json(wire) == instrument


def test_an_instrument_refuses_float_rules_and_unknown_statuses() -> None:
    with pytest.raises(ValidationError):
        Instrument.model_validate({**INSTRUMENT, "tick_size": 0.01})
    with pytest.raises(ValidationError):
        Instrument.model_validate({**INSTRUMENT, "status": "OPEN"})
    assert Instrument.model_validate({**INSTRUMENT, "status": "HALT"}).status == "HALT"


def test_instruments_are_a_compacted_topic_keyed_by_symbol_like_ticks() -> None:
    specs = {name: (parts, configs) for name, parts, configs in all_topic_specs()}
    parts, configs = specs["market.instruments.v1"]
    assert configs["cleanup.policy"] == "compact"
    assert INSTRUMENTS.key == "symbol" and parts == TICKS.partitions
    assert "market.instruments.v1.dlq" in specs
