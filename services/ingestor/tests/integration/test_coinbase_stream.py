"""The Coinbase connector against a local Coinbase-protocol server, asserting on the real topic."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.topics import CANDLES, TICKS
from tickwatch_devstack.infra import free_port
from tickwatch_devstack.testing import wait_until
from tickwatch_ingestor.__main__ import running_ingestor
from tickwatch_ingestor.coinbase_stream import CoinbaseSource
from tickwatch_ingestor.settings import Settings
from tickwatch_ingestor.sink import EventSink
from tickwatch_testkit import FakeCoinbase
from tickwatch_testkit.topic_reader import reading

pytestmark = pytest.mark.integration


@dataclass
class Running:
    fake: FakeCoinbase
    source: CoinbaseSource
    products: list[str]


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def coinbase(
    stack: Any, fake_kwargs: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Running]:
    base = "C" + uuid.uuid4().hex[:7].upper()
    products = [f"{base}-USD", f"{base}-USDC"]
    fake = FakeCoinbase(products, **{"heartbeat_interval_s": 0.1, **(fake_kwargs or {})})
    settings = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        coinbase_symbols=",".join(products),
        **{"coinbase_reconnect_initial_s": 0.05, **overrides},
    )
    async with (
        fake.running(),
        kafka_producer(settings) as publisher,
        aiohttp.ClientSession() as http,
    ):
        settings.coinbase_ws_url = fake.ws_url
        sink = EventSink(publisher)
        source = CoinbaseSource(settings, http, sink, settings.coinbase_symbol_list)
        tasks = [asyncio.create_task(sink.run()), asyncio.create_task(source.run())]
        try:
            await wait_until(fake.subscribed, 5, "coinbase subscribed")
            await wait_until(lambda: source.subscribed, 5, "subscriptions confirmed")
            yield Running(fake, source, products)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_trades_reach_the_tick_topic_as_coinbase_ticks_with_the_ticker_quote(
    stack: Any,
) -> None:
    async with coinbase(stack) as c:
        usd, usdc = c.products
        conn = c.fake.open_conns[0]
        assert [(r["channel"], r.get("product_ids")) for r in conn.received] == [
            ("market_trades", c.products),
            ("ticker", c.products),
            ("heartbeats", None),
        ]
        async with reading(stack.kafka_bootstrap_servers, TICKS, set(c.products)) as ticks:
            await c.fake.ticker(usd, "21932.98", "21931.98", "21933.98", "-4.15775596190603")
            await c.fake.trade(usd, "21932.98000001")
            await c.fake.trade(usdc, "21930.5")
            seen = await ticks.wait_for(lambda r: len(r) >= 2)
        by_symbol = {r["symbol"]: r for r in seen}
        assert by_symbol[usd]["price"] == "21932.98000001"
        assert (by_symbol[usd]["bid"], by_symbol[usd]["ask"]) == ("21931.98", "21933.98")
        assert by_symbol[usd]["change_24h_pct"] == "-4.1578"
        assert by_symbol[usdc]["quote"] == "USDC" and by_symbol[usdc]["bid"] is None
        assert {r["source"] for r in seen} == {"coinbase"}
        assert all(r["ts_ingest"] >= r["ts_event"] for r in seen)
        assert c.source.healthy


async def test_a_forced_disconnect_reconnects_and_loses_or_repeats_no_trade(stack: Any) -> None:
    async with coinbase(stack) as c:
        usd = c.products[0]
        async with reading(stack.kafka_bootstrap_servers, TICKS, {usd}) as ticks:
            sent = [await c.fake.trade(usd, f"{100 + i}.5") for i in range(3)]
            await ticks.wait_for(lambda r: len(r) >= 3)
            await c.fake.drop_all()
            # Trades made while we were away: only the next subscription's snapshot has them.
            sent += [await c.fake.trade(usd, f"{200 + i}.5", publish=False) for i in range(3)]
            await wait_until(lambda: c.fake.connects >= 2 and c.fake.subscribed(), 3, "back")
            sent += [await c.fake.trade(usd, f"{300 + i}.5") for i in range(2)]
            seen = await ticks.wait_for(lambda r: r and r[-1]["trade_id"] == sent[-1])
        assert [r["trade_id"] for r in seen] == sent, "every trade once, in order"
        assert c.source.reconnects == 1
        assert counted("tickwatch_ingestor_duplicates_dropped_total", source="coinbase") >= 3


async def test_a_silent_connection_is_replaced_by_the_watchdog(stack: Any) -> None:
    async with coinbase(stack, coinbase_silence_timeout_s=0.5) as c:
        c.fake.silent = True  # not even heartbeats
        await wait_until(lambda: c.fake.connects >= 2, 3, "watchdog reconnect")
        c.fake.silent = False
        await wait_until(lambda: c.source.healthy and c.fake.subscribed(), 3, "resubscribed")
    assert counted("tickwatch_ingestor_reconnects_total", source="coinbase", cause="silence") >= 1


async def test_a_sequence_gap_is_detected_counted_and_resubscribed(stack: Any) -> None:
    async with coinbase(stack) as c:
        usd = c.products[0]
        before = counted(
            "tickwatch_ingestor_gaps_detected_total", source="coinbase", kind="sequence"
        )
        async with reading(stack.kafka_bootstrap_servers, TICKS, {usd}) as ticks:
            first = await c.fake.trade(usd, "1.5")
            await ticks.wait_for(lambda r: len(r) == 1)
            c.fake.skip_next_sequence = 3  # three messages "lost"
            gapped = await c.fake.trade(usd, "2.5")
            await wait_until(lambda: c.fake.connects >= 2 and c.fake.subscribed(), 3, "resub")
            after = await c.fake.trade(usd, "3.5")
            seen = await ticks.wait_for(lambda r: r and r[-1]["trade_id"] == after)
        assert [r["trade_id"] for r in seen] == [first, gapped, after]
        assert c.source.sequence_gaps == 1
        gaps = counted("tickwatch_ingestor_gaps_detected_total", source="coinbase", kind="sequence")
        assert gaps == before + 1


async def test_a_refused_subscription_is_reported_and_retried_with_backoff(stack: Any) -> None:
    async with coinbase(stack, coinbase_reconnect_initial_s=0.2) as c:
        before = counted("tickwatch_ingestor_subscription_errors_total", source="coinbase")
        c.fake.refusals = ["rate limit exceeded", "rate limit exceeded"]
        await c.fake.drop_all()
        await wait_until(lambda: c.fake.connects >= 4 and c.fake.subscribed(), 5, "accepted")
        assert c.source.errors == ["Failed to subscribe: rate limit exceeded"] * 2
        assert "last refusal: Failed to subscribe: rate limit exceeded" in c.source.describe()
        errors = counted("tickwatch_ingestor_subscription_errors_total", source="coinbase")
        assert errors == before + 2
        # Never at once after a refusal, and longer each time (0.2 s initial, doubling).
        refused, again, accepted = c.fake.conns[1:4]
        assert again.opened - refused.opened >= 0.2
        assert accepted.opened - again.opened >= 0.4
        assert c.source.healthy


async def test_malformed_frames_are_counted_and_skipped(stack: Any) -> None:
    async with coinbase(stack) as c:
        usd = c.products[0]
        async with reading(stack.kafka_bootstrap_servers, TICKS, {usd}) as ticks:
            for raw in (
                "{not json",
                "[]",
                '{"channel": "market_trades", "events": []}',
                '{"channel": "market_trades", "sequence_num": -1, "events": []}',
            ):
                await c.fake.send_raw(raw)
            bad = {"trade_id": "1", "product_id": usd, "price": 1.5, "time": "2026-01-01T00:00:00Z"}
            await c.fake.send_events("market_trades", [{"type": "update", "trades": [bad]}])
            trade_id = await c.fake.trade(usd, "42.00")
            seen = await ticks.wait_for(lambda r: any(x["trade_id"] == trade_id for x in r))
        assert [r["price"] for r in seen] == ["42.00"]
        assert c.source.rejected == 5
        assert c.source.healthy and c.fake.connects == 1


async def test_the_service_probes_runs_and_backfills_coinbase_when_market_sources_names_it(
    stack: Any,
) -> None:
    base = "C" + uuid.uuid4().hex[:7].upper()
    products = [f"{base}-USD", f"{base}-USDC"]
    port = free_port()
    settings = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        market_sources="coinbase",
        market_fallback="none",
        coinbase_symbols=",".join(products),
        backfill_days_1m=1,
        backfill_days_1h=0,
        backfill_days_1d=0,
        ingestor_port=port,
    )
    fake = FakeCoinbase(products, heartbeat_interval_s=0.1)
    async with fake.running(), aiohttp.ClientSession() as http:
        settings.coinbase_ws_url, settings.coinbase_rest_url = fake.ws_url, fake.rest_url
        async with (
            reading(stack.kafka_bootstrap_servers, TICKS, {products[0]}) as ticks,
            reading(stack.kafka_bootstrap_servers, CANDLES, set(products)) as candles,
            running_ingestor(settings),
        ):
            await wait_until(fake.subscribed, 10, "the service subscribed")

            async def ready() -> bool:
                async with http.get(f"http://127.0.0.1:{port}/ready") as resp:
                    return resp.status == 200 and "coinbase (connected" in await resp.text()

            await wait_until(ready, 5, "/ready names coinbase")
            trade_id = await fake.trade(products[0], "64000.01")
            seen = await ticks.wait_for(lambda r: any(x["trade_id"] == trade_id for x in r))
            # The start-up history: a day of closed minutes for each product.
            history = await candles.wait_for(lambda r: len(r) >= 2 * 1440)
        assert seen[-1]["source"] == "coinbase" and seen[-1]["price"] == "64000.01"
        for product in products:
            mine = [r for r in history if r["symbol"] == product]
            assert len({r["open_time"] for r in mine}) == 1440
            assert all(r["closed"] and r["interval"] == "1m" for r in mine)
        assert fake.connects == 2  # the probe's handshake, then the source's connection
