"""The replay source publishes every trade as a replay tick stamped now, and closed candles."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tickwatch_common.events import Candle, Tick
from tickwatch_ingestor.replay import ReplaySession, ReplaySource, ReplayTrade, for_symbols


class RecordingSink:
    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self.candles: list[Candle] = []
        self.lap_done = asyncio.Event()

    async def put_tick(self, tick: Tick) -> None:
        self.ticks.append(tick)
        if len(self.ticks) >= 8:
            self.lap_done.set()

    async def put_candle(self, candle: Candle) -> None:
        self.candles.append(candle)


def trade(offset: int, symbol: str, price: str) -> ReplayTrade:
    return ReplayTrade(
        offset, symbol, Decimal(price), Decimal("1"), Decimal("1000"), Decimal("1.5")
    )


SESSION = ReplaySession(
    400,
    [
        trade(0, "BTC-USDT", "100.00"),
        trade(100, "ETH-USDT", "10.00"),
        trade(200, "BTC-USDT", "101.00"),
        trade(300, "ETH-USDT", "11.00"),
    ],
)


async def test_replayed_ticks_are_marked_replay_and_stamped_now_in_a_loop() -> None:
    clock = iter(range(60_000, 10**9, 20_000))  # each tick 20 s later: candles close
    sink = RecordingSink()
    source = ReplaySource(
        sink, ["BTC-USDT", "ETH-USDT"], speed=100, session=SESSION, clock_ms=lambda: next(clock)
    )
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(sink.lap_done.wait(), 5)
    finally:
        task.cancel()
    assert source.laps >= 1
    ticks = sink.ticks[:8]
    assert {t.source for t in ticks} == {"replay"}
    assert [str(t.price) for t in ticks[:4]] == ["100.00", "10.00", "101.00", "11.00"]
    assert [t.ts_event for t in ticks[:3]] == [60_000, 80_000, 100_000]
    assert all(t.ts_event == t.ts_ingest for t in ticks)
    assert [t.trade_id for t in ticks] == list(range(1, 9))  # monotonic across laps
    assert sink.candles and all(c.closed and c.source == "replay" for c in sink.candles)


def test_a_symbol_the_session_lacks_borrows_a_recorded_movement_at_its_own_level() -> None:
    out = for_symbols(SESSION, ["BTC-USDT", "ADA-USDT"])
    assert out.symbols == ["ADA-USDT", "BTC-USDT"]
    ada = [t.price for t in out.trades if t.symbol == "ADA-USDT"]
    btc = [t.price for t in out.trades if t.symbol == "BTC-USDT"]
    assert len(ada) == len(btc) == 2
    assert ada[1] / ada[0] == btc[1] / btc[0]  # the same relative move
    assert for_symbols(SESSION, ["BTC-USDT", "ADA-USDT"]) == out  # deterministic
