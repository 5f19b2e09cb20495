"""The replay history: the session's laps played back into the past, folded into closed minutes."""

from __future__ import annotations

import asyncio
import itertools
import math
from decimal import Decimal

import pytest
from tickwatch_common.events import Candle, Tick
from tickwatch_ingestor.replay import (
    ReplaySession,
    ReplaySource,
    ReplayTrade,
    for_symbols,
    load_session,
)
from tickwatch_ingestor.replay_history import (
    LastCandle,
    lap_levels,
    level_at,
    realised_volatility,
    replay_history,
    shifted,
)

MIN = 60_000
HOUR = 60 * MIN
LIVE_START = 1_764_000_000_000 + 25_000  # 25 s into a minute: minutes straddle lap boundaries


def trade(offset: int, symbol: str, price: str, qty: str = "1") -> ReplayTrade:
    return ReplayTrade(offset, symbol, Decimal(price), Decimal(qty), Decimal(0), Decimal(0))


def session(duration_ms: int) -> ReplaySession:
    """A trade every 7 s of each symbol, ending where it began (as the bundled session does)."""
    prices = {"BTC-USDT": ["100.00", "101.50", "99.25", "100.75"], "XRP-USDT": ["2.0512", "2.0611"]}
    trades = []
    for symbol, ps in prices.items():
        for i, offset in enumerate(range(3_000, duration_ms, 7_000)):
            trades.append(trade(offset, symbol, ps[i % len(ps)], f"0.{i + 1}"))
        trades.append(trade(duration_ms - 1, symbol, ps[0]))
    return ReplaySession(duration_ms, sorted(trades, key=lambda t: t.offset_ms))


def folded_by_hand(s: ReplaySession, symbol: str, start: int, end: int) -> dict[int, list[object]]:
    """The definition: lap j's trade at offset o happens at LIVE_START - j * D + o, priced at the
    session's price shifted by the level at its minute's open; trades folded per minute."""
    own = [t for t in s.trades if t.symbol == symbol]
    laps = -(-(LIVE_START - start) // s.duration_ms)
    levels = lap_levels(symbol, realised_volatility(own), laps)
    timed = sorted(
        (
            (LIVE_START - j * s.duration_ms + t.offset_ms, t)
            for j in range(1, laps + 1)
            for t in own
        ),
        key=lambda x: x[0],
    )
    minutes: dict[int, list[tuple[Decimal, Decimal]]] = {}
    for ts, t in timed:
        if start <= ts < end:
            m = ts - ts % MIN
            price = shifted(t.price, level_at(levels, LIVE_START, s.duration_ms, m))
            minutes.setdefault(m, []).append((price, t.quantity))
    return {
        m: [
            ps[0][0],
            max(p for p, _ in ps),
            min(p for p, _ in ps),
            ps[-1][0],
            sum(q for _, q in ps),
            len(ps),
        ]
        for m, ps in minutes.items()
    }


@pytest.mark.parametrize("duration_ms", [3 * MIN, 150_000], ids=["whole-minutes", "2.5-min-laps"])
def test_candles_are_the_laps_trades_folded_into_closed_minutes(duration_ms: int) -> None:
    s = session(duration_ms)
    candles = replay_history(s, LIVE_START, 1)
    end = LIVE_START - LIVE_START % MIN
    for symbol in ("BTC-USDT", "XRP-USDT"):
        mine = [c for c in candles if c.symbol == symbol]
        expected = folded_by_hand(s, symbol, end - HOUR, end)
        assert [c.open_time for c in mine] == sorted(expected) == list(range(end - HOUR, end, MIN))
        for c in mine:
            assert [c.open, c.high, c.low, c.close, c.volume, c.trades] == expected[c.open_time]
            assert (c.source, c.interval, c.closed) == ("replay", "1m", True)
            assert c.close_time == c.open_time + MIN - 1
    assert [c.open_time for c in candles] == sorted(c.open_time for c in candles)


def test_the_history_is_deterministic_and_wanders_instead_of_repeating_one_lap() -> None:
    s = session(3 * MIN)
    assert replay_history(s, LIVE_START, 2) == replay_history(s, LIVE_START, 2)
    btc = [c for c in replay_history(s, LIVE_START, 2) if c.symbol == "BTC-USDT"]
    laps_apart = [(a.close, b.close) for a, b in zip(btc, btc[3:], strict=False)]
    assert sum(x != y for x, y in laps_apart) > len(laps_apart) // 2


def test_no_jump_at_lap_boundaries_nor_at_the_seam_with_the_live_replay() -> None:
    """On the bundled session: a minute opens about where the previous one closed (within a few
    trades' moves), and the last minute closes about where the live replay's first trade is."""
    s = for_symbols(load_session(), ["BTC-USDT", "ETH-USDT", "SOL-USDT", "BNB-USDT", "XRP-USDT"])
    candles = replay_history(s, LIVE_START, 24)
    assert len(candles) == 24 * 60 * 5
    for symbol in s.symbols:
        mine = [c for c in candles if c.symbol == symbol]
        own = [t for t in s.trades if t.symbol == symbol]
        step = max(abs(math.log(b.price / a.price)) for a, b in itertools.pairwise(own))
        gaps = [abs(math.log(b.open / a.close)) for a, b in itertools.pairwise(mine)]
        assert max(gaps) < 3 * step, symbol
        assert abs(math.log(own[0].price / mine[-1].close)) < 3 * step, symbol
        lap_moves = [abs(math.log(mine[i + 30].close / mine[i].close)) for i in range(0, 1380, 30)]
        assert max(lap_moves) > 10 * step, f"{symbol}: each half hour repeats the last"


def test_a_symbol_already_on_the_topic_continues_from_its_newest_candle() -> None:
    s = session(3 * MIN)
    end = LIVE_START - LIVE_START % MIN
    fresh = replay_history(s, LIVE_START, 1)
    after = LastCandle(end - 20 * MIN, Decimal("123.45"))
    candles = replay_history(
        s, LIVE_START, 1, {"BTC-USDT": after, "XRP-USDT": LastCandle(end - MIN, Decimal(2))}
    )
    assert not [c for c in candles if c.symbol == "XRP-USDT"], "nothing missing: nothing sent"
    btc = [c for c in candles if c.symbol == "BTC-USDT"]
    assert [c.open_time for c in btc] == list(range(end - 19 * MIN, end, MIN))
    assert btc[0].open == Decimal("123.45"), "bent to open at the close already shown"
    fresh_btc = {c.open_time: c for c in fresh if c.symbol == "BTC-USDT"}
    assert btc[-1].close == fresh_btc[end - MIN].close, "the live seam is where it was"
    older = replay_history(s, LIVE_START, 1, {"BTC-USDT": LastCandle(end - 5 * HOUR, Decimal(1))})
    assert next(c.open_time for c in older if c.symbol == "BTC-USDT") == end - HOUR


def test_no_hours_no_history() -> None:
    assert replay_history(session(3 * MIN), LIVE_START, 0) == []


class Sink:
    async def put_tick(self, tick: Tick) -> None:
        pass

    async def put_candle(self, candle: Candle) -> None:
        pass


async def test_the_replay_source_says_when_and_what_it_started_playing() -> None:
    s = session(3 * MIN)
    source = ReplaySource(
        Sink(),
        ["BTC-USDT"],
        speed=1000,
        session=s,
        clock_ms=lambda: LIVE_START,
    )
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.started.wait(), 5)
    finally:
        task.cancel()
    assert source.started_ms == LIVE_START - 3_000 // 1000, "its first trade is 3 s in"
    assert source.session is not None and source.session.symbols == ["BTC-USDT"]
