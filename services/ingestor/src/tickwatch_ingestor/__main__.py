"""The ingestor's composition root.

``python -m tickwatch_ingestor`` runs the service: settings -> logging -> Kafka producer -> ops
server (/health, /ready, /metrics) -> probe the live sources -> run them (or the replay fallback)
and the start-up backfill, until SIGTERM.

``python -m tickwatch_ingestor backfill --symbols BTC-USDT,ETH-USDT --interval 1m --days 7``
publishes Binance candle history with a progress bar, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import cast

import aiohttp
import structlog
from tickwatch_common.backoff import Backoff
from tickwatch_common.checks import kafka_check, publishing_check
from tickwatch_common.events.base import Interval
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.logging import configure_logging
from tickwatch_common.ops import Check, ops_server
from tickwatch_common.runtime import run
from tickwatch_common.settings import load_settings
from tickwatch_common.topics import CANDLES, TICKS

from tickwatch_ingestor.backfill import (
    backfill_binance,
    backfill_coingecko,
    expected_rows,
)
from tickwatch_ingestor.binance_rest import BinanceRest, BinanceRestError
from tickwatch_ingestor.binance_stream import BinanceSource
from tickwatch_ingestor.coingecko import CoinGeckoClient, CoinGeckoPoller, coingecko_ids
from tickwatch_ingestor.normalise import (
    exchange_symbol_guess,
    markets_from_exchange_info,
    split_symbol,
)
from tickwatch_ingestor.replay import ReplaySource
from tickwatch_ingestor.settings import Settings
from tickwatch_ingestor.sink import EventSink
from tickwatch_ingestor.sources import FALLBACK_MESSAGE, MarketStatus, Source, probe

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


async def choose_sources(
    settings: Settings, http: aiohttp.ClientSession, sink: EventSink, status: MarketStatus
) -> list[Source]:
    names = settings.source_list
    symbols = settings.symbol_list
    if "replay" in names:
        status.mode, status.reason = "replay", "forced by MARKET_SOURCES=replay"
        log.info("market_sources", mode="replay", reason=status.reason)
        return [ReplaySource(sink, symbols, speed=settings.replay_speed)]

    gecko = (
        CoinGeckoClient(
            http,
            settings.coingecko_api_url,
            api_key=settings.coingecko_api_key,
            timeout_s=settings.coingecko_timeout_s,
        )
        if "coingecko" in names
        else None
    )
    binance_symbols = [s for s in symbols if split_symbol(s)[1] != "USD"]
    found = await probe(
        http,
        settings.binance_rest_url,
        gecko,
        binance_symbols,
        want_binance="binance" in names and bool(binance_symbols),
        timeout_s=settings.market_probe_timeout_s,
    )
    if not found.any_live:
        if settings.market_fallback == "replay":
            print(f"tickwatch-ingestor: {FALLBACK_MESSAGE}", file=sys.stderr, flush=True)
            log.warning(
                "market_fallback",
                message=FALLBACK_MESSAGE,
                binance_error=found.binance_error,
                coingecko_error=found.coingecko_error,
            )
            status.mode, status.reason = "replay", "fallback: neither exchange reachable"
            return [ReplaySource(sink, symbols, speed=settings.replay_speed)]
        log.error(
            "market_sources_unreachable",
            message="neither Binance nor CoinGecko is reachable; MARKET_FALLBACK=none, retrying",
            binance_error=found.binance_error,
            coingecko_error=found.coingecko_error,
        )

    live: list[Source] = []
    if "binance" in names and binance_symbols:
        live.append(
            BinanceSource(
                settings,
                http,
                binance_rest(settings, http),
                sink,
                binance_symbols,
                exchange_info=found.binance_info,
            )
        )
    if gecko is not None:
        ids = coingecko_ids(symbols, settings.coingecko_id_overrides)
        # One /simple/price call per poll (all ids at once), never faster than the plan allows.
        interval = max(settings.coingecko_poll_interval_s, 60 / settings.coingecko_calls_per_min)
        live.append(CoinGeckoPoller(gecko, sink, ids, interval_s=interval))
    status.mode, status.sources = "live", live
    log.info("market_sources", mode="live", sources=[s.name for s in live])
    return live


async def startup_backfill(settings: Settings, sources: list[Source], sink: EventSink) -> None:
    """Default history for every live source, in the background; failures are logged, not fatal."""
    for source in sources:
        try:
            if isinstance(source, BinanceSource):
                await source.resolved.wait()
                markets = list(source.markets.values())
                plan: list[tuple[Interval, int]] = [
                    ("1m", settings.backfill_days_1m),
                    ("1h", settings.backfill_days_1h),
                    ("1d", settings.backfill_days_1d),
                ]
                for interval, days in plan:
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
        except BinanceRestError as exc:
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


async def main(settings: Settings) -> None:
    configure_logging(SERVICE, settings.log_level)
    try:
        settings.source_list  # noqa: B018 - validate early, naming the setting
    except ValueError as exc:
        log.error("invalid_setting", error=str(exc))
        raise SystemExit(2) from None
    status = MarketStatus()
    async with AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(
            kafka_producer(settings, topics=[TICKS, CANDLES])
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
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(sink.run())
            sources = await choose_sources(settings, http, sink, status)
            for source in sources:
                tasks.create_task(supervised(source.name, source.run))
            if settings.backfill_on_start and status.mode == "live":
                tasks.create_task(
                    supervised("backfill", lambda: startup_backfill(settings, sources, sink))
                )


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
    settings = load_settings(Settings)
    if args.command == "backfill":
        symbols = (
            [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
            if args.symbols
            else settings.symbol_list
        )
        code = 0

        async def job() -> None:
            nonlocal code
            interval = cast(Interval, args.interval)  # argparse choices: 1m, 1h, 1d
            code = await backfill_command(settings, symbols, interval, args.days)

        run(job)
        raise SystemExit(code)
    run(lambda: main(settings))


if __name__ == "__main__":
    cli()
