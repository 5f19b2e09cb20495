"""Binance REST: weight headers watched, 429/418 with Retry-After honoured, klines paged by 1000,
and a backfill that publishes the same candle keys however often it runs."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import aiohttp
import pytest
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES
from tickwatch_ingestor.backfill import backfill_binance
from tickwatch_ingestor.binance_rest import BinanceRest, BinanceRestError
from tickwatch_ingestor.normalise import Market
from tickwatch_ingestor.sink import EventSink
from tickwatch_testkit import FakeBinance
from tickwatch_testkit.topic_reader import reading

pytestmark = pytest.mark.integration


async def test_429_and_418_wait_for_retry_after_and_the_weight_is_tracked() -> None:
    fake = FakeBinance()
    async with fake.running(), aiohttp.ClientSession() as http:
        rest = BinanceRest(http, fake.rest_url, backoff_initial_s=0.01)
        fake.rest_failures = [(429, {"Retry-After": "1"}), (418, {"Retry-After": "0"})]
        info = await rest.exchange_info(["BTCUSDT"])
        assert info["symbols"][0]["symbol"] == "BTCUSDT"
        times = [t for _, _, t in fake.rest_requests]
        assert len(times) == 3
        assert times[1] - times[0] >= 0.95, "waited Retry-After after the 429"
        assert rest.used_weight == fake.used_weight == 60

        fake.rest_failures = [(418, {"Retry-After": "7200"})]  # banned for two hours
        with pytest.raises(BinanceRestError) as err:
            await BinanceRest(http, fake.rest_url, max_wait_s=60).get("/api/v3/ping")
        assert err.value.status == 418


async def test_an_unknown_symbol_falls_back_to_the_full_exchange_info() -> None:
    fake = FakeBinance({"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")})
    async with fake.running(), aiohttp.ClientSession() as http:
        info = await BinanceRest(http, fake.rest_url).exchange_info(["BTCUSDT", "NOPEUSDT"])
        assert {s["symbol"] for s in info["symbols"]} == {"BTCUSDT", "ETHUSDT"}


async def test_5xx_and_network_errors_are_retried_a_bounded_number_of_times() -> None:
    fake = FakeBinance()
    async with fake.running(), aiohttp.ClientSession() as http:
        fake.rest_failures = [(500, {})] * 10
        rest = BinanceRest(http, fake.rest_url, max_attempts=3, backoff_initial_s=0.01)
        with pytest.raises(BinanceRestError, match="gave up after 3"):
            await rest.get("/api/v3/ping")
        assert len(fake.rest_requests) == 3


async def test_backfill_pages_by_1000_and_is_idempotent(stack: Any) -> None:
    base = "T" + uuid.uuid4().hex[:7].upper()
    market = Market(f"{base}-USDT", base, "USDT", f"{base}USDT")
    fake = FakeBinance({market.exchange_symbol: (base, "USDT")})
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with fake.running(), aiohttp.ClientSession() as http, kafka_producer(settings) as pub:
        sink = EventSink(pub)
        rest = BinanceRest(http, fake.rest_url)
        now = time.time_ns() // 1_000_000
        async with reading(stack.kafka_bootstrap_servers, CANDLES, {market.symbol}) as candles:
            first = await backfill_binance(rest, sink, [market], "1m", 2, now=now)
            second = await backfill_binance(rest, sink, [market], "1m", 2, now=now)
            await sink.drain()
            seen = await candles.wait_for(lambda r: len(r) >= first + second, 15)
        pages = [q for path, q, _ in fake.rest_requests if path == "/api/v3/klines"]
        assert len(pages) == 6  # 2 days of minutes = 2880 rows = 3 pages, twice
        assert all(q["limit"] == "1000" for q in pages)
        assert first == second == 2880
        keys = [(r["symbol"], r["source"], r["interval"], r["open_time"]) for r in seen]
        assert len(set(keys)) == first, "the second run published the same keys"
        assert all(r["closed"] for r in seen)
        step = 60_000
        opens = sorted({k[3] for k in keys})
        assert all(b - a == step for a, b in itertools.pairwise(opens))
        assert opens[-1] + step <= now


async def test_two_concurrent_callers_share_a_429_wait() -> None:
    fake = FakeBinance()
    async with fake.running(), aiohttp.ClientSession() as http:
        rest = BinanceRest(http, fake.rest_url, backoff_initial_s=0.01)
        fake.rest_failures = [(429, {"Retry-After": "1"})]
        started = time.monotonic()
        await asyncio.gather(rest.get("/api/v3/ping"), rest.get("/api/v3/ping"))
        assert time.monotonic() - started >= 0.95


async def test_the_probe_counts_any_http_answer_as_reachable_and_is_bounded() -> None:
    from tickwatch_ingestor.coingecko import CoinGeckoClient
    from tickwatch_ingestor.sources import probe

    fake = FakeBinance()
    async with fake.running(), aiohttp.ClientSession() as http:
        ok = await probe(http, fake.rest_url, None, ["BTC-USDT"], want_binance=True, timeout_s=1)
        assert ok.binance_reachable and ok.binance_info is not None

        fake.rest_failures = [(503, {})]
        busy = await probe(http, fake.rest_url, None, ["BTC-USDT"], want_binance=True, timeout_s=1)
        assert busy.binance_reachable and busy.binance_info is None and busy.any_live

        gecko = CoinGeckoClient(http, "http://127.0.0.1:9/api/v3", timeout_s=1)
        started = time.monotonic()
        down = await probe(
            http, "http://127.0.0.1:9", gecko, ["BTC-USDT"], want_binance=True, timeout_s=1
        )
        assert not down.any_live and down.binance_error and down.coingecko_error
        assert time.monotonic() - started < 1.5
