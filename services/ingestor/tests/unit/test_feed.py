"""The Binance feed drops duplicates, sees gaps, and merges 24 h statistics into ticks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tickwatch_ingestor.feed import BinanceFeed
from tickwatch_ingestor.normalise import Market, Rejected

BTC = Market("BTC-USDT", "BTC", "USDT", "BTCUSDT")


def feed() -> BinanceFeed:
    return BinanceFeed({BTC.symbol: BTC})


def agg(a: int, price: str = "100.5") -> str:
    return json.dumps(
        {
            "stream": "btcusdt@aggTrade",
            "data": {"e": "aggTrade", "E": a, "s": "BTCUSDT", "a": a, "p": price, "q": "1", "T": a},
        }
    )


def kline(open_time: int, closed: bool = True, event_time: int | None = None) -> str:
    k = {
        "t": open_time,
        "T": open_time + 59_999,
        "s": "BTCUSDT",
        "i": "1m",
        "o": "1",
        "h": "2",
        "l": "0.5",
        "c": "1.5",
        "v": "10",
        "n": 3,
        "x": closed,
    }
    return json.dumps(
        {
            "stream": "btcusdt@kline_1m",
            "data": {"e": "kline", "E": event_time or open_time + 60_000, "s": "BTCUSDT", "k": k},
        }
    )


def test_an_aggregate_trade_seen_twice_is_published_once() -> None:
    f = feed()
    assert f.handle(agg(1), 0).tick is not None
    again = f.handle(agg(1), 0)
    assert again.tick is None and again.duplicate


def test_an_aggregate_trade_id_jump_is_a_gap_that_a_second_connection_may_still_fill() -> None:
    f = feed()
    f.handle(agg(10), 0)
    jumped = f.handle(agg(13), 0)
    assert jumped.agg_gap == 2 and jumped.tick is not None
    late = f.handle(agg(11), 0)
    assert late.tick is not None and late.agg_filled == 1
    assert f.handle(agg(11), 0).duplicate


@given(st.lists(st.integers(1, 60), min_size=1, max_size=80))
def test_two_overlapping_connections_publish_every_trade_exactly_once(ids: list[int]) -> None:
    """Connection A delivers 1..n, B delivers k..n (interleaved): the union, each once."""
    n = max(ids)
    k = min(ids)
    f = feed()
    a_frames = list(range(1, n + 1))
    b_frames = list(range(k, n + 1))
    published = []
    while a_frames or b_frames:
        for frames in (a_frames, b_frames):
            if frames:
                out = f.handle(agg(frames.pop(0)), 0)
                if out.tick is not None:
                    published.append(out.tick.trade_id)
    assert sorted(published) == list(range(1, n + 1))  # each once (B may run ahead of A)


def test_a_missing_kline_minute_is_reported_as_a_gap() -> None:
    f = feed()
    assert f.handle(kline(0), 0).kline_gap is None
    out = f.handle(kline(3 * 60_000), 0)
    assert out.candle is not None and out.kline_gap is not None
    assert (out.kline_gap.start_ms, out.kline_gap.end_ms, out.kline_gap.minutes) == (
        60_000,
        120_000,
        2,
    )
    assert f.handle(kline(3 * 60_000), 0).duplicate


def test_open_kline_updates_are_published_in_order_and_stale_ones_dropped() -> None:
    f = feed()
    assert f.handle(kline(0, closed=False, event_time=10), 0).candle is not None
    assert f.handle(kline(0, closed=False, event_time=10), 0).duplicate
    assert f.handle(kline(0, closed=False, event_time=20), 0).candle is not None


def test_mini_ticker_statistics_are_carried_by_later_ticks() -> None:
    f = feed()
    mini = {
        "stream": "btcusdt@miniTicker",
        "data": {
            "e": "24hrMiniTicker",
            "E": 1,
            "s": "BTCUSDT",
            "c": "110",
            "o": "100",
            "h": "1",
            "l": "1",
            "v": "5",
            "q": "550.25",
        },
    }
    assert f.handle(json.dumps(mini), 0).stats_updated
    tick = f.handle(agg(1), 0).tick
    assert tick is not None
    assert str(tick.volume_24h) == "550.25" and str(tick.change_24h_pct) == "10.0000"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "malformed_json"),
        ("[1, 2]", "not_an_object"),
        ('{"stream": "x"}', "no_data"),
        ('{"stream": "x", "data": {"e": "aggTrade", "s": "ETHUSDT"}}', "unknown_symbol"),
        ('{"stream": "x", "data": {"e": "bookTicker", "s": "BTCUSDT"}}', "unknown_event"),
        (
            '{"stream": "x", "data": {"e": "aggTrade", "s": "BTCUSDT", "a": 1, "p": "abc", "T": 1}}',
            "invalid",
        ),
        (
            '{"stream": "x", "data": {"e": "aggTrade", "s": "BTCUSDT", "a": 1, "p": 1.5, "T": 1}}',
            "invalid",
        ),
        ('{"stream": "x", "data": {"e": "aggTrade", "s": "BTCUSDT", "p": "1"}}', "missing_field"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(Rejected) as err:
        feed().handle(raw, 0)
    assert err.value.reason == reason


def test_subscribe_replies_are_accepted_silently() -> None:
    out = feed().handle('{"result": null, "id": 1}', 0)
    assert out.tick is None and out.candle is None
