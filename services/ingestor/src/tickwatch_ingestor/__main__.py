"""The ingestor's composition root.

``python -m tickwatch_ingestor`` runs the service: settings -> logging -> Kafka producer -> ops
server (/health, /ready, /metrics) -> probe the live sources -> run them (or the replay fallback,
chosen in ``source_choice``), the start-up backfill (live) or the replay history
(``replay_history``) and the trading rules (``instruments``), until SIGTERM.

``python -m tickwatch_ingestor backfill --symbols BTC-USDT,ETH-USDT --interval 1m --days 7``
publishes Binance candle history with a progress bar, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import aiohttp
import structlog
from tickwatch_common.backoff import Backoff
from tickwatch_common.checks import kafka_check, publishing_check
from tickwatch_common.events.base import Interval
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.logging import configure_logging
from tickwatch_common.ops import Check, ops_server
from tickwatch_common.runtime import run
from tickwatch_common.settings import load_settings
from tickwatch_common.topics import CANDLES, INSTRUMENTS, TICKS

from tickwatch_ingestor.backfill import (
    backfill_binance,
    backfill_coinbase,
    backfill_coingecko,
    expected_rows,
)
from tickwatch_ingestor.binance_rest import BinanceRest, BinanceRestError
from tickwatch_ingestor.binance_stream import BinanceSource
from tickwatch_ingestor.coinbase_rest import CoinbaseRest, CoinbaseRestError
from tickwatch_ingestor.coinbase_stream import CoinbaseSource
from tickwatch_ingestor.coingecko import CoinGeckoClient, CoinGeckoPoller, coingecko_ids
from tickwatch_ingestor.instruments import run_instruments
from tickwatch_ingestor.normalise import exchange_symbol_guess, markets_from_exchange_info
from tickwatch_ingestor.replay import ReplaySource
from tickwatch_ingestor.replay_history import publish_replay_history
from tickwatch_ingestor.settings import Settings
from tickwatch_ingestor.sink import EventSink
from tickwatch_ingestor.source_choice import FALLBACK_MESSAGE, choose_sources, wanted_sources
from tickwatch_ingestor.sources import MarketStatus, ProbeResult, Source, probe

log = structlog.get_logger("tickwatch_ingestor")

SERVICE = "ingestor"
USER_AGENT = "tickwatch-ingestor/0.1"


def http_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})


def binance_rest(settings: Settings, http: aiohttp.ClientSession) -> BinanceRest:
    return BinanceRest(
        http,
        settings.binance_rest_url,
        timeout_s=settings.binance_rest_timeout_s,
        weight_limit=settings.binance_weight_limit_1m,
    )


def source_names(settings: Settings) -> list[str]:
    """MARKET_SOURCES, checked before anything connects: an unknown name stops the service."""
    try:
        return settings.source_list
    except ValueError as exc:
        log.error("invalid_setting", error=str(exc))
        raise SystemExit(2) from None


async def market_sources(
    settings: Settings,
    names: list[str],
    http: aiohttp.ClientSession,
    sink: EventSink,
    status: MarketStatus,
) -> list[Source]:
    """Probe the live sources the settings want, choose (``source_choice``), build what runs."""
    symbols = settings.symbol_list
    wanted = wanted_sources(names, symbols, settings.coinbase_symbol_list)
    gecko = (
        CoinGeckoClient(
            http,
            settings.coingecko_api_url,
            api_key=settings.coingecko_api_key,
            timeout_s=settings.coingecko_timeout_s,
        )
        if wanted.coingecko
        else None
    )
    found = ProbeResult()
    if not wanted.replay:
        found = await probe(
            http,
            settings.binance_rest_url,
            gecko,
            list(wanted.binance_symbols),
            want_binance=bool(wanted.binance_symbols),
            timeout_s=settings.market_probe_timeout_s,
            coinbase_ws_url=settings.coinbase_ws_url if wanted.coinbase_symbols else None,
        )
    choice = choose_sources(
        wanted,
        binance_reachable=found.binance_reachable,
        coingecko_reachable=found.coingecko_reachable,
        coinbase_reachable=found.coinbase_reachable,
        fallback=settings.market_fallback,
    )
    if choice.mode == "replay":
        if choice.unreachable:
            print(f"tickwatch-ingestor: {FALLBACK_MESSAGE}", file=sys.stderr, flush=True)
            log.warning(
                "market_fallback",
                message=FALLBACK_MESSAGE,
                binance_error=found.binance_error,
                coingecko_error=found.coingecko_error,
                coinbase_error=found.coinbase_error,
            )
        else:
            log.info("market_sources", mode="replay", reason=choice.reason)
        status.mode, status.reason = "replay", choice.reason
        return [ReplaySource(sink, symbols, speed=settings.replay_speed)]
    if choice.unreachable:
        log.error(
            "market_sources_unreachable",
            message="neither Binance nor CoinGecko is reachable; MARKET_FALLBACK=none, retrying",
            binance_error=found.binance_error,
            coingecko_error=found.coingecko_error,
            coinbase_error=found.coinbase_error,
        )

    live: list[Source] = []
    if choice.binance_symbols:
        live.append(
            BinanceSource(
                settings,
                http,
                binance_rest(settings, http),
                sink,
                list(choice.binance_symbols),
                exchange_info=found.binance_info,
            )
        )
    if choice.coingecko and gecko is not None:
        ids = coingecko_ids(symbols, settings.coingecko_id_overrides)
        # One /simple/price call per poll (all ids at once), never faster than the plan allows.
        interval = max(settings.coingecko_poll_interval_s, 60 / settings.coingecko_calls_per_min)
        live.append(CoinGeckoPoller(gecko, sink, ids, interval_s=interval))
    if choice.coinbase_symbols:
        rest = CoinbaseRest(
            http, settings.coinbase_rest_url, timeout_s=settings.coinbase_rest_timeout_s
        )
        live.append(CoinbaseSource(settings, http, sink, list(choice.coinbase_symbols), rest))
    status.mode, status.sources = "live", live
    log.info("market_sources", mode="live", sources=[s.name for s in live])
    return live


def history_plan(settings: Settings) -> list[tuple[Interval, int]]:
    """How many days of each interval the start-up backfill publishes (Binance and Coinbase)."""
    return [
        ("1m", settings.backfill_days_1m),
        ("1h", settings.backfill_days_1h),
        ("1d", settings.backfill_days_1d),
    ]


async def startup_backfill(settings: Settings, sources: list[Source], sink: EventSink) -> None:
    """Default history for every live source, in the background; failures are logged, not fatal."""
    for source in sources:
        try:
            if isinstance(source, BinanceSource):
                await source.resolved.wait()
                markets = list(source.markets.values())
                for interval, days in history_plan(settings):
                    if days <= 0 or not markets:
                        continue
                    feed = source.feed
                    n = await backfill_binance(
                        source.rest,
                        sink,
                        markets,
                        interval,
                        days,
                        on_closed=feed.note_closed_kline if feed and interval == "1m" else None,
                    )
                    log.info(
                        "backfill_done", source="binance", interval=interval, days=days, candles=n
                    )
            elif isinstance(source, CoinGeckoPoller):
                n = await backfill_coingecko(source.client, sink, source.ids)
                log.info("backfill_done", source="coingecko", interval="4h", candles=n)
            elif isinstance(source, CoinbaseSource) and source.rest is not None:
                for interval, days in history_plan(settings):
                    if days > 0:
                        n = await backfill_coinbase(
                            source.rest, sink, source.products, interval, days
                        )
                        log.info(
                            "backfill_done",
                            source="coinbase",
                            interval=interval,
                            days=days,
                            candles=n,
                        )
        except (BinanceRestError, CoinbaseRestError) as exc:
            log.warning("backfill_failed", source=source.name, error=str(exc))


async def supervised(name: str, job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job``; if it ever fails, log it and start it again after a backoff. Never gives up."""
    backoff = Backoff(initial_s=1.0, cap_s=60.0)
    while True:
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = backoff.next_delay()
            log.exception("task_failed", task=name, restart_in_s=round(delay, 1))
            await asyncio.sleep(delay)


async def ingesting(
    settings: Settings,
    names: list[str],
    http: aiohttp.ClientSession,
    publisher: Publisher,
    sink: EventSink,
    status: MarketStatus,
) -> None:
    """The publishing loop, the chosen sources, the start-up backfill and the trading rules,
    until cancelled; a source, the backfill or the rules that fail are restarted, the
    publishing loop failing ends it."""
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(sink.run())
        sources = await market_sources(settings, names, http, sink, status)
        for source in sources:
            tasks.create_task(supervised(source.name, source.run))
        if settings.backfill_on_start and status.mode == "live":
            tasks.create_task(
                supervised("backfill", lambda: startup_backfill(settings, sources, sink))
            )
        replays = [s for s in sources if isinstance(s, ReplaySource)]
        if replays and settings.replay_history_hours > 0:  # replay mode only, never live
            hours = settings.replay_history_hours
            tasks.create_task(
                supervised(
                    "replay_history",
                    lambda: publish_replay_history(settings, replays[0], sink, hours),
                )
            )
        tasks.create_task(
            supervised(
                "instruments",
                lambda: run_instruments(
                    publisher,
                    sources,
                    status.mode,
                    settings.symbol_list,
                    refresh_s=settings.instruments_refresh_s,
                ),
            )
        )


@asynccontextmanager
async def background(job: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """``job`` as a task while the block runs; cancelled and awaited when it is left."""
    task = asyncio.create_task(job)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task})


@asynccontextmanager
async def running_ingestor(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """The whole service, started: producer, HTTP session, ops server, then (in the task it
    answers) the probe, the sources, the backfill and the trading rules; leaving the block
    stops it."""
    names = source_names(settings)
    status = MarketStatus()
    async with AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(
            kafka_producer(settings, topics=[TICKS, CANDLES, INSTRUMENTS])
        )
        sink = EventSink(publisher)
        http = await stack.enter_async_context(http_session())
        await stack.enter_async_context(
            ops_server(
                SERVICE,
                settings.ops_host,
                settings.ingestor_port,
                [
                    kafka_check(publisher.producer),
                    publishing_check(publisher.outcomes),
                    Check("market", status.check),
                ],
            )
        )
        log.info("ingestor_listening", port=settings.ingestor_port)
        yield await stack.enter_async_context(
            background(ingesting(settings, names, http, publisher, sink, status))
        )


async def main() -> None:
    settings = load_settings(Settings)
    configure_logging(SERVICE, settings.log_level)
    async with running_ingestor(settings) as task:
        await task  # runs until SIGTERM cancels us; a crash ends the process


async def backfill_command(
    settings: Settings, symbols: list[str], interval: Interval, days: int
) -> int:
    from tqdm import tqdm

    configure_logging(SERVICE, "WARNING")
    async with kafka_producer(settings, topics=[CANDLES]) as publisher, http_session() as http:
        sink = EventSink(publisher)
        rest = binance_rest(settings, http)
        try:
            info = await rest.exchange_info([exchange_symbol_guess(s) for s in symbols])
        except BinanceRestError as exc:
            print(f"backfill: Binance exchangeInfo failed: {exc}", file=sys.stderr)
            return 1
        markets, missing = markets_from_exchange_info(info, symbols)
        if missing:
            print(
                f"backfill: not traded on Binance, skipped: {', '.join(missing)}", file=sys.stderr
            )
        total = expected_rows(interval, days) * len(markets)
        with tqdm(total=total, unit="candle", desc=f"backfill {interval} x{days}d") as bar:
            try:
                n = await backfill_binance(
                    rest, sink, list(markets.values()), interval, days, progress=bar.update
                )
            except BinanceRestError as exc:
                print(f"backfill: {exc}", file=sys.stderr)
                return 1
        await sink.drain()
    print(f"backfill: published {n} closed {interval} candles for {len(markets)} symbol(s)")
    return 0


def backfill(args: argparse.Namespace) -> int:
    """The ``backfill`` command: its own settings, logging and event loop; answers the exit code."""
    settings = load_settings(Settings)
    symbols = (
        [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
        if args.symbols
        else settings.symbol_list
    )
    interval = cast(Interval, args.interval)  # argparse choices: 1m, 1h, 1d
    code = 0

    async def job() -> None:
        nonlocal code
        code = await backfill_command(settings, symbols, interval, args.days)

    run(job)
    return code


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="tickwatch-ingestor", description="Tickwatch market-data ingestor."
    )
    sub = parser.add_subparsers(dest="command")
    bf = sub.add_parser("backfill", help="publish Binance candle history to market.candles.v1")
    bf.add_argument("--symbols", help="comma-separated, default: SYMBOLS")
    bf.add_argument("--interval", choices=("1m", "1h", "1d"), required=True)
    bf.add_argument("--days", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "backfill":
        raise SystemExit(backfill(args))
    run(main)


if __name__ == "__main__":
    cli()
