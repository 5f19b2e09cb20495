"""Coinbase candle history against a local Coinbase-protocol server, onto the real candle topic."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES
from tickwatch_ingestor.backfill import backfill_coinbase
from tickwatch_ingestor.coinbase_rest import CANDLES_PAGE, CoinbaseRest, CoinbaseRestError
from tickwatch_ingestor.sink import EventSink
from tickwatch_testkit import FakeCoinbase
from tickwatch_testkit.topic_reader import reading

pytestmark = pytest.mark.integration

NOW = 1_764_806_400_000 + 30_000  # 2025-12-04 00:00:30 UTC: the minute 00:00 is still open


async def test_a_days_minutes_are_paged_retried_and_published_closed_once(stack: Any) -> None:
    product = "C" + uuid.uuid4().hex[:7].upper() + "-USD"
    fake = FakeCoinbase([product])
    fake.rest_failures = [(429, {"Retry-After": "0"}), (503, {})]
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with (
        fake.running(),
        aiohttp.ClientSession() as http,
        kafka_producer(settings) as publisher,
        reading(stack.kafka_bootstrap_servers, CANDLES, {product}) as candles,
    ):
        rest = CoinbaseRest(http, fake.rest_url, backoff_initial_s=0.01, requests_per_s=100)
        published = await backfill_coinbase(rest, EventSink(publisher), [product], "1m", 1, now=NOW)
        seen = await candles.wait_for(lambda r: len(r) >= 1440)
        assert published == 1440
        opens = [r["open_time"] for r in seen]
        day_start = NOW - 30_000 - 86_400_000
        assert opens == list(range(day_start, NOW - 30_000, 60_000)), "each closed minute once"
        assert all(r["closed"] and r["source"] == "coinbase" for r in seen)
        first = fake.synthetic_candle(product, day_start // 1000)
        assert (seen[0]["open"], seen[0]["close"]) == (first["open"], first["close"])
        asked = [q for _, q in fake.rest_requests]
        assert len(asked) == 2 + -(-1440 // CANDLES_PAGE)  # two failures retried, then the pages
        assert {q["granularity"] for q in asked} == {"ONE_MINUTE"}

        with pytest.raises(CoinbaseRestError) as refused:
            async for _ in rest.candles("NOPE-USD", "1m", day_start, NOW, NOW):
                pass
        assert refused.value.status == 404
        with pytest.raises(ValueError, match="no 4h candles"):
            async for _ in rest.candles(product, "4h", day_start, NOW, NOW):
                pass
