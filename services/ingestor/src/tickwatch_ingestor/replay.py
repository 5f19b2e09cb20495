"""The replay source: the bundled session of recorded-like trades, played in a loop as if live.

Every tick says ``source: "replay"`` and carries ``ts_event`` rewritten to now; 1-minute
candles are aggregated from the replayed trades (:class:`~tickwatch_ingestor.candles.CandleBuilder`)
and published when they close. Configured symbols the session lacks are reported once.

The session's header also carries the trading rules of its symbols (``instruments``), the
snapshot published on ``market.instruments.v1`` when no exchange gives real ones
(:func:`replay_instruments`; the publishing is ``instruments.py``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path

import structlog
from tickwatch_common.events import Instrument, Tick
from tickwatch_common.events.base import now_ms

from tickwatch_ingestor.candles import CandleBuilder
from tickwatch_ingestor.normalise import split_symbol
from tickwatch_ingestor.sink import EventSink

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayTrade:
    offset_ms: int
    symbol: str
    price: Decimal
    quantity: Decimal
    volume_24h: Decimal
    change_24h_pct: Decimal


@dataclass(frozen=True)
class ReplaySession:
    duration_ms: int
    trades: list[ReplayTrade]

    @property
    def symbols(self) -> list[str]:
        return sorted({t.symbol for t in self.trades})


def bundled_session_path() -> Path:
    return Path(str(resources.files("tickwatch_ingestor") / "data" / "replay_session.jsonl.gz"))


def load_session(path: Path | None = None, symbols: Iterable[str] | None = None) -> ReplaySession:
    wanted = set(symbols) if symbols is not None else None
    trades: list[ReplayTrade] = []
    with gzip.open(path or bundled_session_path(), "rt", encoding="utf-8") as f:
        header = json.loads(f.readline())["session"]
        for line in f:
            r = json.loads(line)
            if wanted is not None and r["s"] not in wanted:
                continue
            trades.append(
                ReplayTrade(
                    r["t"],
                    r["s"],
                    Decimal(r["p"]),
                    Decimal(r["q"]),
                    Decimal(r["v24"]),
                    Decimal(r["c24"]),
                )
            )
    return ReplaySession(int(header["duration_ms"]), trades)


@dataclass(frozen=True, slots=True)
class InstrumentRules:
    """One symbol's rules in the session's snapshot (Binance's, for its USDT markets)."""

    step_size: Decimal
    tick_size: Decimal
    min_notional: Decimal


def load_instrument_rules(path: Path | None = None) -> dict[str, InstrumentRules]:
    """The snapshot of trading rules in the session's header (its first line only)."""
    with gzip.open(path or bundled_session_path(), "rt", encoding="utf-8") as f:
        header = json.loads(f.readline())["session"]
    return {
        symbol: InstrumentRules(
            Decimal(r["step_size"]), Decimal(r["tick_size"]), Decimal(r["min_notional"])
        )
        for symbol, r in header.get("instruments", {}).items()
    }


def borrowed_level(symbol: str) -> tuple[Decimal, Decimal]:
    """The made-up but stable price level of a symbol the session lacks, and its price step."""
    level = Decimal(1 + zlib.crc32(symbol.encode()) % 1000)
    return level, Decimal("0.0001") if level < 10 else Decimal("0.01")


# What a symbol neither recorded nor sharing a recorded base gets: Binance-like rules at the
# price step its borrowed movement is quoted in (borrowed_level), 5 in the quote as a minimum.
DEFAULT_STEP_SIZE = Decimal("0.001")
DEFAULT_MIN_NOTIONAL = Decimal("5")


def replay_instruments(
    rules: dict[str, InstrumentRules], symbols: Iterable[str]
) -> list[Instrument]:
    """Rules for every one of ``symbols``, ``source: "replay"``, status ``TRADING``: the
    snapshot's own; else a snapshot symbol's of the same base (``BTC-USD`` as ``BTC-USDT``);
    else the defaults above. Pure."""
    by_base: dict[str, InstrumentRules] = {}
    for symbol in sorted(rules):
        by_base.setdefault(split_symbol(symbol)[0], rules[symbol])
    out: list[Instrument] = []
    for symbol in dict.fromkeys(symbols):
        base, quote = split_symbol(symbol)
        rule = rules.get(symbol) or by_base.get(base)
        if rule is None:
            rule = InstrumentRules(
                DEFAULT_STEP_SIZE, borrowed_level(symbol)[1], DEFAULT_MIN_NOTIONAL
            )
        out.append(
            Instrument(
                symbol=symbol,
                base=base,
                quote=quote,
                source="replay",
                step_size=rule.step_size,
                tick_size=rule.tick_size,
                min_notional=rule.min_notional,
                status="TRADING",
            )
        )
    return out


def for_symbols(session: ReplaySession, symbols: Iterable[str]) -> ReplaySession:
    """The session restricted to ``symbols``; a symbol it lacks borrows a recorded symbol's
    movement (round robin), scaled to a made-up but stable price level, so any configured
    market shows a plausible live price offline. Pure."""
    wanted = list(dict.fromkeys(symbols))
    have = session.symbols
    if not have:
        return ReplaySession(session.duration_ms, [])
    borrowed = {s: have[i % len(have)] for i, s in enumerate(x for x in wanted if x not in have)}
    by_symbol: dict[str, list[ReplayTrade]] = {}
    for t in session.trades:
        by_symbol.setdefault(t.symbol, []).append(t)
    trades = [t for t in session.trades if t.symbol in wanted]
    for symbol, source in borrowed.items():
        level, quantum = borrowed_level(symbol)
        first = by_symbol[source][0].price
        for t in by_symbol[source]:
            scale = level / first
            trades.append(
                ReplayTrade(
                    t.offset_ms,
                    symbol,
                    (t.price * scale).quantize(quantum),
                    t.quantity,
                    (t.volume_24h * scale).quantize(Decimal("0.01")),
                    t.change_24h_pct,
                )
            )
    trades.sort(key=lambda t: t.offset_ms)
    return ReplaySession(session.duration_ms, trades)


class ReplaySource:
    name = "replay"

    def __init__(
        self,
        sink: EventSink,
        symbols: list[str],
        *,
        speed: float = 1.0,
        session: ReplaySession | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.sink = sink
        self.symbols = symbols
        self.speed = speed
        self._session = session
        self._clock_ms = clock_ms
        self.candles = CandleBuilder("replay", "1m")
        self.ticks_published = 0
        self.laps = 0
        # Set at the first trade: the session played (for_symbols) and the time the first
        # lap's offset 0 stands for, where the replay history (replay_history.py) ends.
        self.started = asyncio.Event()
        self.session: ReplaySession | None = None
        self.started_ms: int | None = None

    async def run(self) -> None:
        session = self._session
        if session is None:
            session = await asyncio.to_thread(load_session)
        recorded = set(session.symbols)
        missing = [s for s in self.symbols if s not in recorded]
        if missing:
            log.warning(
                "replay_symbols_borrowed",
                symbols=missing,
                detail="not in the recorded session; replaying a recorded symbol's movement",
            )
        session = for_symbols(session, self.symbols)
        have = set(session.symbols)
        if not session.trades:
            log.error("replay_session_empty", symbols=self.symbols)
            return
        parts = {s: split_symbol(s) for s in have}
        log.info(
            "replay_started", symbols=sorted(have), trades=len(session.trades), speed=self.speed
        )
        trade_seq = 0
        self.session = session
        while True:
            lap_start = time.monotonic()
            next_close_check = 0.0
            for trade in session.trades:
                due = lap_start + trade.offset_ms / 1000 / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = self._clock_ms()
                if not self.started.is_set():  # the time offset 0 of the first lap stands for
                    self.started_ms = now - int(trade.offset_ms / self.speed)
                    self.started.set()
                trade_seq += 1
                base, quote = parts[trade.symbol]
                await self.sink.put_tick(
                    Tick(
                        symbol=trade.symbol,
                        base=base,
                        quote=quote,
                        source="replay",
                        price=trade.price,
                        volume_24h=trade.volume_24h,
                        change_24h_pct=trade.change_24h_pct,
                        ts_event=now,
                        ts_ingest=now,
                        trade_id=trade_seq,
                    )
                )
                self.ticks_published += 1
                for candle in self.candles.add(trade.symbol, trade.price, trade.quantity, now):
                    await self.sink.put_candle(candle)
                if time.monotonic() >= next_close_check:
                    next_close_check = time.monotonic() + 1
                    for candle in self.candles.close_until(now):
                        await self.sink.put_candle(candle)
            # The session ends where it began (see scripts/make_replay_session.py): loop on.
            remaining = lap_start + session.duration_ms / 1000 / self.speed - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
            self.laps += 1
