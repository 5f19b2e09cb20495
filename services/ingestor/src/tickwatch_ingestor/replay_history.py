"""Replay history: the hours before the live replay began, as closed 1-minute candles.

Offline the live replay only produces candles from the moment it starts, so a newcomer's chart
(5 m .. 1 d, RSI, MACD, Bollinger) would be nearly empty. At start the replay-mode ingestor
therefore publishes ``REPLAY_HISTORY_HOURS`` of closed 1-minute candles, ``source: "replay"``,
ending at the minute the live replay starts (that minute is the live replay's own). Only 1 m:
the gateway rolls every other interval up from the stored 1-minute candles.

The history is the session played back to back into the past, lap ``j`` (1, 2, ...) starting
``j`` session lengths before the live replay, each lap tilted by a drift in log price so the
hours wander instead of repeating one half-hour: lap ``j`` goes from level ``c[j]`` to
``c[j - 1]`` (``c[0] = 0``, the live replay's own prices), the drifts ``c[j - 1] - c[j]``
drawn from a generator seeded by the symbol, each about one lap's realised volatility. The
session ends where it began, so nothing jumps at a lap's boundary nor at the seam with the live
replay. Every trade of a minute is shifted by the level at the minute's open, so a lap's trades
are folded into minutes once and each minute only scaled: 48 h of five symbols in about 0.1 s.
Deterministic: the same session, symbol and start give the same candles.

A history is published only where the candle topic has none: the newest replay 1-minute candle
of each symbol produced within the window (:func:`newest_replay_minutes`) starts the history
the minute after it, and the history is bent (linearly in log price, none of it at the last
minute, the live seam's) to open at that candle's close, so a restart fills the gap since the last run instead of
re-publishing (and overwriting) what was shown.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import structlog
from aiokafka import TopicPartition
from tickwatch_common.events import Candle
from tickwatch_common.events.base import MINUTE_MS
from tickwatch_common.kafka import kafka_consumer, partition_for
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES

from tickwatch_ingestor.metrics import CANDLES_BACKFILLED
from tickwatch_ingestor.replay import ReplaySession, ReplaySource, ReplayTrade
from tickwatch_ingestor.sink import EventSink

log = structlog.get_logger(__name__)

HOUR_MS = 60 * MINUTE_MS


@dataclass(frozen=True, slots=True)
class LastCandle:
    """The newest replay 1-minute candle of a symbol already on the topic."""

    open_time: int
    close: Decimal


@dataclass(frozen=True, slots=True)
class _Minute:
    """Raw session trades folded into one minute: prices not yet shifted."""

    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int

    def then(self, later: _Minute) -> _Minute:
        return _Minute(
            self.open,
            max(self.high, later.high),
            min(self.low, later.low),
            later.close,
            self.volume + later.volume,
            self.trades + later.trades,
        )


def realised_volatility(trades: Sequence[ReplayTrade]) -> float:
    """The square root of the summed squared log returns: how far one lap moves. Pure."""
    prices = [float(t.price) for t in trades]
    return math.sqrt(sum(math.log(b / a) ** 2 for a, b in itertools.pairwise(prices)))


def lap_levels(symbol: str, sigma: float, laps: int) -> list[float]:
    """``c[0..laps]``: lap ``j`` starts at log-price level ``c[j]`` and ends at ``c[j - 1]``;
    ``c[0] = 0`` is the live replay. Seeded by the symbol: deterministic."""
    rng = random.Random(f"tickwatch-replay-history:{symbol}")
    levels = [0.0]
    for _ in range(laps):
        levels.append(levels[-1] - rng.gauss(0.0, sigma))
    return levels


def level_at(levels: Sequence[float], live_start_ms: int, duration_ms: int, ts_ms: int) -> float:
    """The log-price shift at ``ts_ms`` (before ``live_start_ms``): linear within each lap."""
    j = -(-(live_start_ms - ts_ms) // duration_ms)
    into = ts_ms - (live_start_ms - j * duration_ms)
    return levels[j] + (levels[j - 1] - levels[j]) * into / duration_ms


def shifted(price: Decimal, log_shift: float) -> Decimal:
    """``price`` times ``e ** log_shift``, in the price's own decimal places."""
    return (price * Decimal(math.exp(log_shift))).quantize(price)


def _fold(trades: Sequence[ReplayTrade], phase_ms: int) -> dict[int, _Minute]:
    """A lap's trades by the minute they fall in, ``phase_ms`` into a minute at offset 0."""
    out: dict[int, _Minute] = {}
    for t in trades:
        m = (phase_ms + t.offset_ms) // MINUTE_MS
        one = _Minute(t.price, t.price, t.price, t.price, t.quantity, 1)
        held = out.get(m)
        out[m] = one if held is None else held.then(one)
    return out


def _raw_minutes(
    trades: Sequence[ReplayTrade], duration_ms: int, live_start_ms: int, start_ms: int, end_ms: int
) -> dict[int, _Minute]:
    """Open time -> the raw trades of the laps before ``live_start_ms`` in that minute, for
    the minutes in ``[start_ms, end_ms)``; a minute across a lap boundary holds both laps'."""
    laps = -(-(live_start_ms - start_ms) // duration_ms)
    folds: dict[int, dict[int, _Minute]] = {}  # by phase: one fold when laps are whole minutes
    out: dict[int, _Minute] = {}
    for j in range(laps, 0, -1):  # oldest lap first
        begin = live_start_ms - j * duration_ms
        phase = begin % MINUTE_MS
        fold = folds.get(phase)
        if fold is None:
            fold = folds[phase] = _fold(trades, phase)
        for m, part in fold.items():
            open_time = begin - phase + m * MINUTE_MS
            if start_ms <= open_time < end_ms:
                held = out.get(open_time)
                out[open_time] = part if held is None else held.then(part)
    return out


def symbol_history(
    session: ReplaySession,
    symbol: str,
    live_start_ms: int,
    start_ms: int,
    after: LastCandle | None = None,
) -> list[Candle]:
    """``symbol``'s closed history candles from ``start_ms`` (a minute) to the minute
    ``live_start_ms`` falls in, oldest first. Every trade of a minute is shifted by the level
    at the minute's open (:func:`level_at`), bent to open at ``after.close`` when given. Pure."""
    own = [t for t in session.trades if t.symbol == symbol]
    duration = session.duration_ms
    end = live_start_ms - live_start_ms % MINUTE_MS
    if not own or duration <= 0 or start_ms >= end:
        return []
    minutes = _raw_minutes(own, duration, live_start_ms, start_ms, end)
    if not minutes:
        return []
    laps = -(-(live_start_ms - start_ms) // duration)
    levels = lap_levels(symbol, realised_volatility(own), laps)
    first = min(minutes)
    bend = 0.0
    if after is not None:
        first_level = level_at(levels, live_start_ms, duration, first)
        bend = math.log(float(after.close) / float(minutes[first].open)) - first_level
    out: list[Candle] = []
    for open_time in sorted(minutes):
        raw = minutes[open_time]
        shift = level_at(levels, live_start_ms, duration, open_time)
        if bend:  # all of it at the first minute, none at the last (the live seam's)
            last = end - MINUTE_MS
            shift += bend * ((last - open_time) / (last - first) if last > first else 1.0)
        out.append(
            Candle(
                symbol=symbol,
                source="replay",
                interval="1m",
                open_time=open_time,
                close_time=open_time + MINUTE_MS - 1,
                open=shifted(raw.open, shift),
                high=shifted(raw.high, shift),
                low=shifted(raw.low, shift),
                close=shifted(raw.close, shift),
                volume=raw.volume,
                trades=raw.trades,
                closed=True,
            )
        )
    return out


def replay_history(
    session: ReplaySession,
    live_start_ms: int,
    hours: float,
    published: Mapping[str, LastCandle] | None = None,
) -> list[Candle]:
    """The closed 1-minute replay candles of the ``hours`` before the minute ``live_start_ms``
    falls in, for every symbol of ``session`` (already
    :func:`~tickwatch_ingestor.replay.for_symbols`), oldest first; a symbol in ``published``
    only after its candle there. Pure."""
    end = live_start_ms - live_start_ms % MINUTE_MS
    window_start = end - int(hours * HOUR_MS) // MINUTE_MS * MINUTE_MS
    out: list[Candle] = []
    for symbol in session.symbols:
        after = (published or {}).get(symbol)
        start = window_start if after is None else max(window_start, after.open_time + MINUTE_MS)
        out.extend(symbol_history(session, symbol, live_start_ms, start, after))
    out.sort(key=lambda c: (c.open_time, c.symbol))
    return out


async def newest_replay_minutes(
    settings: KafkaSettings, symbols: Sequence[str], since_ms: int
) -> dict[str, LastCandle]:
    """The newest replay 1-minute candle of each of ``symbols`` produced on the candle topic
    since ``since_ms``: read from the offset of that time to the end of the symbols' partitions.
    Every candle opening after ``since_ms`` was produced after it, so none is missed."""
    wanted = {s.encode() for s in symbols}
    parts = sorted({partition_for(s, CANDLES.partitions) for s in symbols})
    tps = [TopicPartition(CANDLES.name, p) for p in parts]
    newest: dict[str, LastCandle] = {}
    async with kafka_consumer(settings, group=None) as consumer:
        consumer.assign(tps)
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        remaining = set()
        for tp in tps:
            at = found.get(tp)
            if at is not None and at.offset < ends[tp]:
                consumer.seek(tp, at.offset)
                remaining.add(tp)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.key not in wanted or record.value is None:
                        continue
                    candle = Candle.model_validate_json(record.value)
                    held = newest.get(candle.symbol)
                    if (
                        candle.source == "replay"
                        and candle.interval == "1m"
                        and candle.closed
                        and (held is None or candle.open_time > held.open_time)
                    ):
                        newest[candle.symbol] = LastCandle(candle.open_time, candle.close)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    return newest


async def publish_replay_history(
    settings: KafkaSettings, source: ReplaySource, sink: EventSink, hours: float
) -> None:
    """Once the live replay started: the history where the topic lacks it, published."""
    await source.started.wait()
    session, live_start_ms = source.session, source.started_ms
    assert session is not None and live_start_ms is not None
    began = time.monotonic()
    published = await newest_replay_minutes(
        settings, session.symbols, live_start_ms - int(hours * HOUR_MS) - MINUTE_MS
    )
    candles = await asyncio.to_thread(replay_history, session, live_start_ms, hours, published)
    for candle in candles:
        await sink.put_candle(candle)
    await sink.drain()
    CANDLES_BACKFILLED.labels("replay").inc(len(candles))
    log.info(
        "replay_history_published",
        hours=hours,
        candles=len(candles),
        ends_at=live_start_ms - live_start_ms % MINUTE_MS,
        continued_from_topic=sorted(published),
        seconds=round(time.monotonic() - began, 2),
    )
