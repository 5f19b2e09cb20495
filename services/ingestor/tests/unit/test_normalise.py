"""Normalisation is exact: the decimal strings the exchange sent are the strings we publish."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tickwatch_common.events import Tick
from tickwatch_ingestor.normalise import (
    Market,
    Rejected,
    Stats24h,
    TickFactory,
    agg_trade_tick,
    change_pct,
    coingecko_ohlc_candle,
    coingecko_tick,
    kline_candle,
    markets_from_exchange_info,
    mini_ticker_stats,
    rest_kline_candle,
    streams_for,
)

# The team's documented wire-format samples, copied into the repo so every checkout has them.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BTC = Market("BTC-USDT", "BTC", "USDT", "BTCUSDT")


def fixture(name: str) -> object:
    return json.loads((FIXTURES / name).read_text(), parse_float=Decimal)


decimal_strings = st.builds(
    lambda whole, frac, digits: (
        f"{whole}.{str(frac).zfill(digits)[:digits]}" if digits else str(whole)
    ),
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**8),
    st.integers(min_value=0, max_value=8),
)


def test_fixture_agg_trade_becomes_a_tick_with_the_exact_price_string() -> None:
    frame = fixture("binance/combined_aggtrade.json")
    tick = agg_trade_tick(frame["data"], BTC, None, ts_ingest=1763884800200)  # type: ignore[index]
    body = json.loads(tick.to_bytes())
    assert body["price"] == "86412.57000000"
    assert body["symbol"] == "BTC-USDT" and body["source"] == "binance"
    assert body["ts_event"] == 1763884800120 and body["ts_ingest"] == 1763884800200
    assert body["trade_id"] == 3141592653


def test_fixture_kline_becomes_a_closed_candle() -> None:
    frame = fixture("binance/combined_kline_1m.json")
    candle = kline_candle(frame["data"]["k"], BTC)  # type: ignore[index]
    body = json.loads(candle.to_bytes())
    assert body["closed"] is True and body["interval"] == "1m"
    assert (body["open"], body["high"], body["low"], body["close"]) == (
        "86400.00000000",
        "86450.10000000",
        "86390.00000000",
        "86412.57000000",
    )
    assert body["open_time"] == 1763884800000 and body["close_time"] == 1763884859999
    assert body["trades"] == 1201


def test_fixture_rest_klines_become_closed_candles() -> None:
    rows = fixture("binance/klines_rest.json")
    candles = [rest_kline_candle(r, BTC, "1m", now_ms=1763884860000) for r in rows]  # type: ignore[union-attr]
    assert [c.closed for c in candles] == [True, True]
    assert str(candles[1].close) == "86412.57000000"
    open_one = rest_kline_candle(rows[1], BTC, "1m", now_ms=1763884850000)  # type: ignore[index]
    assert open_one.closed is False


def test_fixture_mini_ticker_gives_quote_volume_and_change() -> None:
    frame = fixture("binance/combined_miniticker.json")
    stats = mini_ticker_stats(frame["data"])  # type: ignore[index]
    assert stats.volume_24h == Decimal("1571234567.89000000")
    assert stats.change_24h_pct == Decimal("1.6858")  # (86412.57 - 84980) / 84980 * 100


def test_exchange_info_maps_both_ways_and_reports_what_is_not_traded() -> None:
    info = fixture("binance/exchange_info_excerpt.json")
    markets, missing = markets_from_exchange_info(info, ["BTC-USDT", "NOPE-USDT"])  # type: ignore[arg-type]
    assert markets == {"BTC-USDT": BTC}
    assert missing == ["NOPE-USDT"]
    assert streams_for(BTC) == ["btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@miniTicker"]


def test_coingecko_numbers_parsed_as_decimal_keep_their_digits() -> None:
    body = fixture("coingecko/simple_price.json")
    tick = coingecko_tick("BTC", body["bitcoin"], ts_ingest=1763884800000)  # type: ignore[index]
    out = json.loads(tick.to_bytes())
    assert out["symbol"] == "BTC-USD" and out["source"] == "coingecko"
    assert out["price"] == "86401.12"
    assert out["volume_24h"] == "41234567890.12"
    assert out["change_24h_pct"] == "1.6821"
    assert out["ts_event"] == 1763884790000


def test_coingecko_ohlc_rows_become_4h_candles() -> None:
    rows = fixture("coingecko/coins_ohlc.json")
    c = coingecko_ohlc_candle(rows[1], "BTC", "4h", now_ms=1763884800000)  # type: ignore[index]
    assert c.open_time == 1763884800000 - 4 * 3_600_000 and c.closed
    assert str(c.close) == "86401.12"


@given(
    price=decimal_strings, qty=decimal_strings, agg=st.integers(0, 2**53), ts=st.integers(0, 2**42)
)
@example(price="86412.57000000", qty="0.01250000", agg=1, ts=1)
@example(price="0.00001000", qty="1", agg=1, ts=1)
def test_any_agg_trade_price_string_survives_to_the_wire(
    price: str, qty: str, agg: int, ts: int
) -> None:
    data = {"e": "aggTrade", "s": "BTCUSDT", "a": agg, "p": price, "q": qty, "T": ts}
    body = json.loads(agg_trade_tick(data, BTC, None, ts_ingest=ts + 5).to_bytes())
    assert Decimal(body["price"]) == Decimal(price)
    assert body["price"] == price
    assert body["trade_id"] == agg and body["ts_event"] == ts


def test_a_price_below_a_millionth_keeps_its_plain_string() -> None:
    data = {"e": "aggTrade", "s": "BTCUSDT", "a": 1, "p": "0.00000045", "q": "1", "T": 1}
    body = json.loads(agg_trade_tick(data, BTC, None, ts_ingest=2).to_bytes())
    assert body["price"] == "0.00000045"


json_values = st.one_of(
    decimal_strings,
    st.text(max_size=12),
    st.integers(-(2**63), 2**63),
    st.floats(),
    st.none(),
    st.booleans(),
)


@given(
    price=json_values,
    ts=st.one_of(st.integers(-5, 2**42), json_values),
    agg=st.one_of(st.integers(0, 2**60), json_values),
    with_stats=st.booleans(),
)
@example(price="86412.57000000", ts=1763884800120, agg=3141592653, with_stats=True)
@example(price="1e5", ts=1, agg=1, with_stats=False)
@example(price="NaN", ts=1, agg=1, with_stats=False)
@example(price="1.5", ts=-1, agg=1, with_stats=False)
@example(price="1.5", ts=True, agg=1, with_stats=False)
def test_the_fast_tick_path_equals_the_validating_constructor(
    price: object, ts: object, agg: object, with_stats: bool
) -> None:
    stats = Stats24h(Decimal("1571234567.89000000"), Decimal("1.6858")) if with_stats else None
    data = {"e": "aggTrade", "s": "BTCUSDT", "a": agg, "p": price, "q": "1", "T": ts}
    try:
        slow = agg_trade_tick(data, BTC, stats, ts_ingest=7)
    except Rejected as exc:
        with pytest.raises(Rejected) as err:
            TickFactory(BTC).make(data, stats, ts_ingest=7)
        assert err.value.reason == exc.reason
        return
    fast = TickFactory(BTC).make(data, stats, ts_ingest=7)
    assert fast == slow
    assert fast.to_bytes() == slow.to_bytes()
    assert fast.model_fields_set == slow.model_fields_set
    assert Tick.model_validate_json(fast.to_bytes()) == slow


@given(price=st.floats(allow_nan=True, allow_infinity=True))
def test_a_float_price_is_rejected_never_published(price: float) -> None:
    data = {"e": "aggTrade", "s": "BTCUSDT", "a": 1, "p": price, "q": "1", "T": 1}
    with pytest.raises(Rejected):
        agg_trade_tick(data, BTC, None, ts_ingest=2)


@given(garbage=st.one_of(st.text(max_size=20), st.none(), st.integers(), st.lists(st.integers())))
def test_garbage_prices_are_rejected_or_exact(garbage: object) -> None:
    data = {"e": "aggTrade", "s": "BTCUSDT", "a": 1, "p": garbage, "q": "1", "T": 1}
    try:
        tick = agg_trade_tick(data, BTC, None, ts_ingest=2)
    except Rejected:
        return
    assert Decimal(str(tick.price)) == Decimal(str(garbage))


@given(
    o=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10**9), places=4),
    c=st.decimals(min_value=Decimal(0), max_value=Decimal(10**9), places=4),
)
def test_change_pct_has_the_sign_of_the_move(o: Decimal, c: Decimal) -> None:
    pct = change_pct(o, c)
    assert pct is not None
    assert (pct > 0) <= (c > o) and (pct < 0) <= (c < o)


@given(usd=decimal_strings, updated=st.integers(0, 2**33))
def test_coingecko_prices_from_raw_json_text_are_exact(usd: str, updated: int) -> None:
    raw = f'{{"usd": {usd}, "usd_24h_vol": 1.5, "usd_24h_change": -0.25, "last_updated_at": {updated}}}'
    entry = json.loads(raw, parse_float=Decimal)
    tick = coingecko_tick("ETH", entry, ts_ingest=0)
    assert Decimal(json.loads(tick.to_bytes())["price"]) == Decimal(usd)
