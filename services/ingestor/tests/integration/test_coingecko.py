"""The CoinGecko poller against a local CoinGecko-protocol server, asserting on the real topic."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES, TICKS
from tickwatch_devstack.testing import wait_until
from tickwatch_ingestor.backfill import backfill_coingecko
from tickwatch_ingestor.coingecko import CoinGeckoClient, CoinGeckoPoller
from tickwatch_ingestor.sink import EventSink
from tickwatch_testkit import FakeCoinGecko
from tickwatch_testkit.topic_reader import reading

pytestmark = pytest.mark.integration


def rejected(reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "tickwatch_ingestor_messages_rejected_total", {"source": "coingecko", "reason": reason}
        )
        or 0.0
    )


@contextlib.asynccontextmanager
async def gecko(stack: Any) -> AsyncIterator[tuple[FakeCoinGecko, CoinGeckoClient, EventSink]]:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    fake = FakeCoinGecko()
    async with (
        fake.running(),
        kafka_producer(settings) as publisher,
        aiohttp.ClientSession() as http,
    ):
        sink = EventSink(publisher)
        flusher = asyncio.create_task(sink.run())
        try:
            yield fake, CoinGeckoClient(http, fake.url, api_key="demo-key"), sink
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)


async def test_usd_ticks_are_published_only_when_last_updated_moves(stack: Any) -> None:
    base = "T" + uuid.uuid4().hex[:7].upper()
    cg_id = base.lower() + "-coin"
    async with gecko(stack) as (fake, client, sink):
        fake.set_price(cg_id, "86401.12", "41234567890.12", "1.6821", 1763884790)
        poller = CoinGeckoPoller(client, sink, {cg_id: base}, interval_s=0.02)
        async with reading(stack.kafka_bootstrap_servers, TICKS, {f"{base}-USD"}) as ticks:
            task = asyncio.create_task(poller.run())
            try:
                await ticks.wait_for(lambda r: len(r) == 1)
                polls = poller.ok_polls
                await wait_until(lambda: poller.ok_polls >= polls + 3, 5, "more polls")
                fake.set_price(cg_id, "86402.000000001", "41234567891", "-0.5", 1763884800)
                seen = await ticks.wait_for(lambda r: len(r) == 2)
                await wait_until(lambda: poller.ok_polls >= polls + 6, 5, "more polls")
                await sink.flush()
            finally:
                task.cancel()
        assert len(ticks.records) == 2, "unchanged last_updated_at publishes nothing"
        assert [r["price"] for r in seen] == ["86401.12", "86402.000000001"]
        assert seen[0]["volume_24h"] == "41234567890.12" and seen[0]["change_24h_pct"] == "1.6821"
        assert seen[1]["ts_event"] == 1763884800000
        assert {r["source"] for r in seen} == {"coingecko"}
        assert fake.requests[0][2].get("x-cg-demo-api-key") == "demo-key"
        query = fake.requests[0][1]
        assert query["vs_currencies"] == "usd" and query["include_last_updated_at"] == "true"


async def test_rate_limits_malformed_answers_and_unknown_ids_back_off_and_carry_on(
    stack: Any,
) -> None:
    base = "T" + uuid.uuid4().hex[:7].upper()
    cg_id = base.lower() + "-coin"
    unknown_before = rejected("unknown_id")
    malformed_before = rejected("malformed_json")
    async with gecko(stack) as (fake, client, sink):
        fake.set_price(cg_id, "1.5", "10", "0", 1763884790)
        fake.failures = [(429, {"Retry-After": "1"}), ("malformed", {}), (503, {})]
        poller = CoinGeckoPoller(
            client,
            sink,
            {cg_id: base, "no-such-coin": "NOSUCH"},
            interval_s=0.02,
            backoff_initial_s=0.05,
        )
        async with reading(stack.kafka_bootstrap_servers, TICKS, {f"{base}-USD"}) as ticks:
            task = asyncio.create_task(poller.run())
            try:
                seen = await ticks.wait_for(lambda r: len(r) == 1, 10)
            finally:
                task.cancel()
        assert seen[0]["price"] == "1.5"
        times = [t for path, _, _, t in fake.requests if path.endswith("/simple/price")]
        assert times[1] - times[0] >= 0.95, "Retry-After honoured after the 429"
        assert rejected("unknown_id") == unknown_before + 1
        assert rejected("malformed_json") == malformed_before + 1


async def test_ohlc_history_becomes_closed_4h_usd_candles(stack: Any) -> None:
    base = "T" + uuid.uuid4().hex[:7].upper()
    cg_id = base.lower() + "-coin"
    async with gecko(stack) as (fake, client, sink):
        fake.set_price(cg_id, "1.5", "10", "0", 1)
        async with reading(stack.kafka_bootstrap_servers, CANDLES, {f"{base}-USD"}) as candles:
            n = await backfill_coingecko(
                client, sink, {cg_id: base, "no-such-coin": "NOSUCH"}, days=30
            )
            seen = await candles.wait_for(lambda r: len(r) >= n)
        assert n >= 30 * 6
        assert {(r["interval"], r["source"], r["closed"]) for r in seen} == {
            ("4h", "coingecko", True)
        }
        assert seen[0]["close"] == "86380.125" and seen[0]["volume"] == "0"
