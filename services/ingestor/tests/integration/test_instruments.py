"""The ingestor publishes trading rules on the real market.instruments.v1: Binance's from
exchangeInfo (refreshed, surviving failed rounds), or the replay snapshot's."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tickwatch_common.topics import INSTRUMENTS
from tickwatch_devstack.infra import free_port
from tickwatch_ingestor.__main__ import running_ingestor
from tickwatch_ingestor.settings import Settings
from tickwatch_testkit import FakeBinance
from tickwatch_testkit.topic_reader import reading

pytestmark = pytest.mark.integration

UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


def settings(stack: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": stack.kafka_bootstrap_servers,
        "ingestor_port": free_port(),
        "coingecko_api_url": UNREACHABLE,
        "market_sources": "binance",
        "backfill_on_start": False,
        "replay_history_hours": 0,  # no history of BTC-USDT and XRP-USDT on the shared topic
    }
    return Settings(**{**values, **overrides})


def failed_rounds() -> float:
    name = "tickwatch_ingestor_instrument_refresh_failures_total"
    return REGISTRY.get_sample_value(name, {"source": "binance"}) or 0.0


async def test_binance_rules_are_published_at_start_and_refreshed_through_failures(
    stack: Any,
) -> None:
    base = "T" + uuid.uuid4().hex[:7].upper()
    other = "U" + uuid.uuid4().hex[:7].upper()
    fake = FakeBinance({f"{base}USDT": (base, "USDT"), f"{other}USDT": (other, "USDT")})
    fake.filters[f"{other}USDT"] = [  # an older symbol: MIN_NOTIONAL, no LOT_SIZE
        {"filterType": "PRICE_FILTER", "minPrice": "0", "maxPrice": "0", "tickSize": "0.00010000"},
        {"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000", "applyToMarket": True},
    ]
    keys = {f"{base}-USDT", f"{other}-USDT"}
    async with (
        fake.running(),
        reading(stack.kafka_bootstrap_servers, INSTRUMENTS, keys) as instruments,
    ):
        config = settings(
            stack,
            symbols=",".join(sorted(keys)),
            binance_rest_url=fake.rest_url,
            binance_ws_url=fake.ws_url,
            instruments_refresh_s=0.5,
        )
        async with running_ingestor(config):
            seen = await instruments.wait_for(lambda r: {x["key"] for x in r} == keys, 20)
            first = {x["symbol"]: x for x in seen}
            assert first[f"{base}-USDT"] == {
                "key": f"{base}-USDT",
                "v": 1,
                "symbol": f"{base}-USDT",
                "base": base,
                "quote": "USDT",
                "source": "binance",
                "step_size": "0.00001000",
                "tick_size": "0.01000000",
                "min_notional": "5.00000000",
                "status": "TRADING",
            }
            older = first[f"{other}-USDT"]
            assert (older["step_size"], older["tick_size"], older["min_notional"]) == (
                "0",
                "0.00010000",
                "10.00000000",
            )

            # Binance fails a whole round (every attempt answers 500), then halts the market:
            # the failure is logged and retried, and the halt arrives.
            failures_before = failed_rounds()
            fake.rest_failures = [(500, {})] * 6
            fake.statuses[f"{base}USDT"] = "HALT"
            await instruments.wait_for(
                lambda r: any(x["key"] == f"{base}-USDT" and x["status"] == "HALT" for x in r), 30
            )
            assert failed_rounds() == failures_before + 1, "one round failed, and was retried"
    calls = [q for path, q, _ in fake.rest_requests if path == "/api/v3/exchangeInfo"]
    assert all(q.get("symbols") for q in calls), "only the configured symbols are asked for"


async def test_replay_publishes_the_snapshot_for_every_configured_symbol(stack: Any) -> None:
    unknown = "R" + uuid.uuid4().hex[:7].upper() + "-USDT"
    keys = {"BTC-USDT", "XRP-USDT", unknown}
    async with reading(stack.kafka_bootstrap_servers, INSTRUMENTS, keys) as instruments:
        config = settings(stack, symbols=",".join(sorted(keys)), market_sources="replay")
        async with running_ingestor(config):
            seen = await instruments.wait_for(lambda r: {x["key"] for x in r} == keys, 20)
    by_symbol = {x["symbol"]: x for x in seen}
    assert all(x["source"] == "replay" and x["status"] == "TRADING" for x in seen)
    assert (by_symbol["BTC-USDT"]["step_size"], by_symbol["BTC-USDT"]["tick_size"]) == (
        "0.00001",
        "0.01",
    )
    assert by_symbol["XRP-USDT"]["step_size"] == "0.1"
    assert by_symbol[unknown]["min_notional"] == "5"
