"""Trading rules onto ``market.instruments.v1``: the exchange's own, or the replay snapshot's.

Which symbols get which is decided on plain data (:func:`plan_instruments`): the symbols the
Binance source runs get Binance's rules (``GET /api/v3/exchangeInfo``, parsed by
``normalise.instruments_from_exchange_info``); when Binance does not run (``MARKET_SOURCES=replay``,
the replay fallback, or CoinGecko alone) the configured symbols, and CoinGecko's ``BASE-USD``
ones, get the rules in the replay session's snapshot (``replay.replay_instruments``), so the
portfolio can check orders on any machine.

Each is published at start and again every ``INSTRUMENTS_REFRESH_S`` (latest wins on the
compacted topic, so a changed rule or a replaced log heals within one period). A round is
bounded; one that fails (the exchange unreachable, the broker refusing) is logged, counted and
tried again with backoff (capped at the refresh period): it never stops the ingestor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiokafka.errors import KafkaError
from tickwatch_common.backoff import Backoff
from tickwatch_common.events import Instrument
from tickwatch_common.events.base import Source as SourceName
from tickwatch_common.kafka import Publisher
from tickwatch_common.topics import INSTRUMENTS

from tickwatch_ingestor.binance_rest import BinanceRest, BinanceRestError
from tickwatch_ingestor.binance_stream import BinanceSource
from tickwatch_ingestor.coingecko import CoinGeckoPoller
from tickwatch_ingestor.metrics import (
    INSTRUMENT_REFRESH_FAILURES,
    INSTRUMENTS_PUBLISHED,
    MESSAGES_REJECTED,
)
from tickwatch_ingestor.normalise import (
    canonical,
    exchange_symbol_guess,
    instruments_from_exchange_info,
)
from tickwatch_ingestor.replay import InstrumentRules, load_instrument_rules, replay_instruments
from tickwatch_ingestor.sources import Source

log = structlog.get_logger(__name__)

ROUND_BOUND_S = 300.0  # one fetch-and-publish round at most (the REST client's retries inside)
RETRY_CAP_S = 300.0  # longest wait before a failed round is tried again

Fetch = Callable[[], Awaitable[list[Instrument]]]


@dataclass(frozen=True)
class InstrumentPlan:
    binance_symbols: tuple[str, ...] = ()  # rules from Binance's exchangeInfo
    snapshot_symbols: tuple[str, ...] = ()  # rules from the replay session's snapshot


def plan_instruments(
    mode: str,
    symbols: Sequence[str],
    *,
    binance_symbols: Sequence[str] = (),
    coingecko_symbols: Sequence[str] = (),
) -> InstrumentPlan:
    """Binance's rules where Binance runs; the snapshot's for everything when it does not."""
    if mode == "live" and binance_symbols:
        return InstrumentPlan(binance_symbols=tuple(dict.fromkeys(binance_symbols)))
    return InstrumentPlan(snapshot_symbols=tuple(dict.fromkeys([*symbols, *coingecko_symbols])))


def binance_fetch(rest: BinanceRest, symbols: Sequence[str]) -> Fetch:
    """exchangeInfo for ``symbols`` (the REST client's timeouts, backoff and weight budget)."""

    async def fetch() -> list[Instrument]:
        info = await rest.exchange_info([exchange_symbol_guess(s) for s in symbols])
        found = instruments_from_exchange_info(info, symbols)
        if found.missing:
            log.warning("instruments_not_on_binance", symbols=found.missing)
        for symbol, reason in found.rejected:
            MESSAGES_REJECTED.labels("binance", reason).inc()
            log.warning("instrument_rejected", symbol=symbol, reason=reason)
        return found.instruments

    return fetch


def snapshot_fetch(
    symbols: Sequence[str],
    load: Callable[[], dict[str, InstrumentRules]] = load_instrument_rules,
) -> Fetch:
    """The replay session's snapshot, for ``symbols``."""

    async def fetch() -> list[Instrument]:
        return replay_instruments(await asyncio.to_thread(load), symbols)

    return fetch


async def publish_instruments(
    publisher: Publisher,
    source: SourceName,
    fetch: Fetch,
    *,
    refresh_s: float,
    bound_s: float = ROUND_BOUND_S,
    retry_initial_s: float = 1.0,
) -> None:
    """Fetch and publish every ``refresh_s``, for ever; a failed round is retried with backoff."""
    backoff = Backoff(initial_s=retry_initial_s, cap_s=min(RETRY_CAP_S, refresh_s))
    while True:
        try:
            async with asyncio.timeout(bound_s):
                instruments = await fetch()
                acks = [await publisher.send(INSTRUMENTS, i, key=i.symbol) for i in instruments]
                await asyncio.gather(*acks)
        except (BinanceRestError, KafkaError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            delay = backoff.next_delay()
            INSTRUMENT_REFRESH_FAILURES.labels(source).inc()
            log.warning(
                "instruments_refresh_failed",
                source=source,
                error=str(exc) or type(exc).__name__,
                retry_in_s=round(delay, 1),
            )
        else:
            backoff.reset()
            delay = refresh_s
            INSTRUMENTS_PUBLISHED.labels(source).inc(len(instruments))
            log.info(
                "instruments_published", source=source, count=len(instruments), next_in_s=delay
            )
        await asyncio.sleep(delay)


async def run_instruments(
    publisher: Publisher,
    sources: Sequence[Source],
    mode: str,
    symbols: Sequence[str],
    *,
    refresh_s: float,
    load_rules: Callable[[], dict[str, InstrumentRules]] = load_instrument_rules,
) -> None:
    """The publishing the running ``sources`` call for (:func:`plan_instruments`), until cancelled."""
    binance = next((s for s in sources if isinstance(s, BinanceSource)), None)
    usd: list[str] = []
    for s in sources:
        if isinstance(s, CoinGeckoPoller):
            usd.extend(canonical(base, "USD") for base in s.ids.values())
    plan = plan_instruments(
        mode,
        symbols,
        binance_symbols=binance.symbols if binance is not None else (),
        coingecko_symbols=usd,
    )
    jobs: list[Coroutine[Any, Any, None]] = []
    if plan.binance_symbols and binance is not None:
        jobs.append(
            publish_instruments(
                publisher,
                "binance",
                binance_fetch(binance.rest, plan.binance_symbols),
                refresh_s=refresh_s,
            )
        )
    if plan.snapshot_symbols:
        jobs.append(
            publish_instruments(
                publisher,
                "replay",
                snapshot_fetch(plan.snapshot_symbols, load_rules),
                refresh_s=refresh_s,
            )
        )
    async with asyncio.TaskGroup() as tasks:
        for job in jobs:
            tasks.create_task(job)
