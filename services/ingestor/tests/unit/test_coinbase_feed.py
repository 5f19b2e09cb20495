"""The Coinbase feed: documented frames in, ticks out, each trade once, gaps and errors seen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tickwatch_ingestor.coinbase_feed import CoinbaseFeed, coinbase_time_ms
from tickwatch_ingestor.normalise import Rejected, coinbase_rest_candle

FIXTURES = Path(__file__).parents[1] / "fixtures" / "coinbase"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def frame(seq: int, channel: str, events: list[Any]) -> str:
    return json.dumps(
        {
            "channel": channel,
            "client_id": "",
            "timestamp": "2023-02-09T20:19:35.39625135Z",
            "sequence_num": seq,
            "events": events,
        }
    )


def trades(seq: int, ids: list[int], kind: str = "update", product: str = "BTC-USD") -> str:
    rows = [
        {
            "trade_id": str(i),
            "product_id": product,
            "price": f"{100 + i}.5",
            "size": "0.1",
            "side": "BUY",
            "time": "2023-02-09T20:19:35.309624Z",
        }
        for i in sorted(ids, reverse=True)  # newest first, as Coinbase lists them
    ]
    return frame(seq, "market_trades", [{"type": kind, "trades": rows}])


def test_the_documented_snapshot_then_update_give_the_latest_trade_then_each_new_one() -> None:
    f = CoinbaseFeed(["BTC-USD", "BTC-USDC"])
    first = f.handle(json.dumps(fixture("market_trades_snapshot.json")), 1_675_974_000_000)
    assert [(t.trade_id, str(t.price)) for t in first.ticks] == [(572003, "21921.74")]
    tick = first.ticks[0]
    assert (tick.symbol, tick.base, tick.quote, tick.source) == (
        "BTC-USD",
        "BTC",
        "USD",
        "coinbase",
    )
    assert tick.ts_event == 1_675_973_975_309
    later = f.handle(json.dumps(fixture("market_trades_update.json")), 1_675_974_000_000)
    assert [t.trade_id for t in later.ticks] == [572004, 572005]  # oldest first
    assert [str(t.price) for t in later.ticks] == ["21922.05", "21922.10"]
    assert later.sequence_gap == 3  # the fixture jumps from 0 to 4


def test_a_snapshot_after_a_reconnect_publishes_what_was_missed_and_drops_the_rest() -> None:
    f = CoinbaseFeed(["BTC-USD"])
    f.handle(trades(0, [1, 2, 3], "snapshot"), 0)
    f.handle(trades(1, [4]), 0)
    f.new_connection()
    again = f.handle(trades(0, [2, 3, 4, 5, 6], "snapshot"), 0)
    assert [t.trade_id for t in again.ticks] == [5, 6]
    assert again.duplicates == 3 and again.sequence_gap == 0


def test_a_trade_id_jump_is_a_gap_that_a_later_snapshot_fills() -> None:
    f = CoinbaseFeed(["BTC-USD"])
    f.handle(trades(0, [10], "snapshot"), 0)
    jumped = f.handle(trades(1, [13]), 0)
    assert jumped.trade_gap == 2
    f.new_connection()
    filled = f.handle(trades(0, [11, 12, 13], "snapshot"), 0)
    assert [t.trade_id for t in filled.ticks] == [11, 12]
    assert filled.trade_filled == 2 and filled.duplicates == 1


def test_sequence_numbers_jumping_are_a_gap_and_an_older_one_is_no_gap() -> None:
    f = CoinbaseFeed(["BTC-USD"])
    assert f.handle(fixture_text("heartbeats.json", 5), 0).heartbeat
    assert f.handle(fixture_text("heartbeats.json", 6), 0).sequence_gap == 0
    assert f.handle(fixture_text("heartbeats.json", 9), 0).sequence_gap == 2
    assert f.handle(fixture_text("heartbeats.json", 8), 0).sequence_gap == 0  # out of order
    assert f.handle(fixture_text("heartbeats.json", 10), 0).sequence_gap == 0
    f.new_connection()
    assert f.handle(fixture_text("heartbeats.json", 0), 0).sequence_gap == 0


def fixture_text(name: str, seq: int) -> str:
    data = fixture(name)
    data["sequence_num"] = seq
    return json.dumps(data)


def test_the_ticker_gives_the_following_ticks_bid_ask_and_24h_change() -> None:
    f = CoinbaseFeed(["BTC-USD"])
    assert f.handle(json.dumps(fixture("ticker.json")), 0).ticks == []
    tick = f.handle(trades(3, [7], "snapshot"), 0).ticks[0]
    assert (str(tick.bid), str(tick.ask)) == ("21931.98", "21933.98")
    assert str(tick.change_24h_pct) == "-4.1578"
    assert tick.volume_24h is None  # Coinbase's 24 h volume is in the base currency


def test_subscriptions_and_errors_are_reported() -> None:
    f = CoinbaseFeed(["BTC-USD", "BTC-USDC"])
    confirmed = f.handle(json.dumps(fixture("subscribe.json")["reply"]), 0)
    assert confirmed.subscriptions is not None
    assert confirmed.subscriptions["market_trades"] == ["BTC-USD", "BTC-USDC"]
    refused = f.handle(json.dumps(fixture("error.json")), 0)
    assert refused.error == "Failed to subscribe: GIBBERISH-USD is not a valid product"
    assert f.handle('{"type": "error"}', 0).error == "error"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "malformed_json"),
        ("[]", "not_an_object"),
        ('{"channel": "market_trades", "sequence_num": 1}', "no_envelope"),
        ('{"channel": "market_trades", "sequence_num": "1", "events": []}', "bad_sequence_num"),
        ('{"channel": "level3", "sequence_num": 1, "events": []}', "unknown_channel"),
    ],
)
def test_a_malformed_frame_is_rejected_with_its_reason(raw: str, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        CoinbaseFeed(["BTC-USD"]).handle(raw, 0)
    assert caught.value.reason == reason


def test_a_malformed_trade_is_skipped_and_the_others_in_its_frame_kept() -> None:
    good = {"product_id": "BTC-USD", "price": "1.5", "time": "2023-02-09T20:19:35Z"}
    rows = [
        {**good, "trade_id": "5"},
        {**good, "trade_id": "6", "price": 1.5},  # a JSON number, not a decimal string
        {**good, "trade_id": "7", "price": "NaN"},
        {**good, "trade_id": "8", "time": "yesterday"},
        {**good, "trade_id": "x9"},
        {**good, "trade_id": "10", "product_id": "DOGE-USD"},
        {**good, "trade_id": "11"},
    ]
    f = CoinbaseFeed(["BTC-USD"])
    f.handle(trades(0, [4], "snapshot"), 0)
    out = f.handle(frame(1, "market_trades", [{"type": "update", "trades": rows}]), 0)
    assert [t.trade_id for t in out.ticks] == [5, 11]
    assert sorted(out.rejected) == sorted(
        ["bad_decimal", "bad_decimal", "bad_timestamp", "bad_trade_id", "unknown_product"]
    )


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2019-08-14T20:42:27.265Z", 1_565_815_347_265),
        ("2023-02-09T20:19:35.39625135Z", 1_675_973_975_396),
        ("2023-02-09T20:19:35Z", 1_675_973_975_000),
        ("2023-02-09T21:19:35.5+01:00", 1_675_973_975_500),
    ],
)
def test_coinbase_times_to_epoch_ms(text: str, ms: int) -> None:
    assert coinbase_time_ms(text) == ms


def test_the_documented_rest_candles_become_closed_hourly_candles() -> None:
    rows = fixture("candles_rest.json")["candles"]
    now = 1_712_196_000_000  # the newest candle's hour has just ended
    candles = [coinbase_rest_candle(r, "BTC-USD", "1h", now) for r in rows]
    newest = candles[0]
    assert (newest.open_time, newest.close_time) == (1_712_192_400_000, 1_712_195_999_999)
    assert [str(newest.open), str(newest.high), str(newest.low), str(newest.close)] == [
        "66312.4",
        "66331.99",
        "66055.14",
        "66181.6",
    ]
    assert str(newest.volume) == "355.82896243" and newest.source == "coinbase"
    assert all(c.closed for c in candles)
    assert not coinbase_rest_candle(rows[0], "BTC-USD", "1h", now - 1).closed


@pytest.mark.parametrize(
    "row",
    [
        [],
        {"start": 1712192400, "low": "1", "high": "1", "open": "1", "close": "1", "volume": "1"},
        {"start": "1712192400", "low": 1.5, "high": "1", "open": "1", "close": "1", "volume": "1"},
        {"start": "1712192400", "high": "1", "open": "1", "close": "1", "volume": "1"},
    ],
)
def test_a_malformed_rest_candle_is_rejected(row: Any) -> None:
    with pytest.raises(Rejected):
        coinbase_rest_candle(row, "BTC-USD", "1h", 0)
