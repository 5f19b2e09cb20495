"""Prices from several sources, published to the real broker: ``?source=`` picks one, the
freshest wins without it, and ``/markets`` shows each source's price and the spread."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from tickwatch_common.events import Tick
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import TICKS
from tickwatch_devstack.infra import Stack
from tickwatch_devstack.testing import receive_json_until, wait_until

from .conftest import MakeClient

Client = TestClient[Any, Any]


def tick(symbol: str, source: str, price: str, ts: int) -> Tick:
    base, quote = symbol.split("-")
    return Tick(
        symbol=symbol,
        base=base,
        quote=quote,
        source=source,  # type: ignore[arg-type]
        price=price,  # type: ignore[arg-type]
        ts_event=ts,
        ts_ingest=ts,
    )


async def publish(stack: Stack, *ticks: Tick) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings) as publisher:
        for t in ticks:
            await publisher.publish(TICKS, t, key=t.symbol)


async def market(client: Client, symbol: str) -> dict[str, Any]:
    resp = await client.get("/api/v1/markets")
    assert resp.status == 200
    (row,) = [m for m in (await resp.json())["items"] if m["symbol"] == symbol]
    return row  # type: ignore[no-any-return]


async def price(client: Client, symbol: str, source: str = "") -> tuple[int, dict[str, Any]]:
    query = f"?source={source}" if source else ""
    resp = await client.get(f"/api/v1/prices/{symbol}{query}")
    return resp.status, await resp.json()


async def test_source_choice_freshest_rule_and_spread(
    stack: Stack, make_client: MakeClient
) -> None:
    symbol = f"T{uuid.uuid4().hex[:8].upper()}-USD"
    client = await make_client(market_sources="binance,coinbase", coinbase_symbols=symbol)
    # A Coinbase market is served before its first tick: listed, and "no price yet".
    row = await market(client, symbol)
    assert (row["price"], row["source_prices"], row["spread"]) == (None, [], None)
    status, body = await price(client, symbol)
    assert status == 404 and "no price received yet" in body["detail"]
    await wait_until(lambda: ready(client), what="the market feed positioned")
    ws = await client.ws_connect("/ws")
    await ws.send_json({"op": "subscribe", "channels": [f"prices:{symbol}"]})
    await receive_json_until(ws, lambda b: b.get("op") == "subscribed")

    now = int(time.time() * 1000)
    await publish(
        stack,
        tick(symbol, "binance", "100.10", now - 1_000),
        tick(symbol, "coinbase", "100.00", now - 500),
        tick(symbol, "coingecko", "90", now - 600_000),  # stale: not in the spread
    )

    async def all_three() -> bool:
        return len((await market(client, symbol))["source_prices"]) == 3

    await wait_until(all_three, what="three sources in /markets")
    status, body = await price(client, symbol)
    assert (status, body["source"], body["price"]) == (200, "coinbase", "100.00")
    status, body = await price(client, symbol.lower().replace("-", ""), "binance")
    assert (status, body["source"], body["price"]) == (200, "binance", "100.10")
    status, body = await price(client, symbol, "replay")
    assert status == 404 and "'replay'" in body["detail"], body
    status, body = await price(client, symbol, "kraken")
    assert status == 422 and [e["field"] for e in body["errors"]] == ["source"]

    row = await market(client, symbol)
    assert (row["price"], row["sources"]) == ("100.00", ["binance", "coinbase", "coingecko"])
    assert [(s["source"], s["price"], s["fresh"]) for s in row["source_prices"]] == [
        ("binance", "100.10", True),
        ("coinbase", "100.00", True),
        ("coingecko", "90", False),
    ]
    assert row["spread"] == {
        "absolute": "0.1",
        "pct": "0.1",
        "low_source": "coinbase",
        "high_source": "binance",
        "sources": 2,
    }
    listed = (await (await client.get(f"/api/v1/prices?symbols={symbol}")).json())["items"]
    assert [(p["source"], p["price"]) for p in listed] == [("coinbase", "100.00")]

    # A tie on event time goes to the source whose name sorts first: binance before coinbase.
    await publish(stack, tick(symbol, "binance", "100.02", now - 500))

    async def binance_tied() -> bool:
        return (await price(client, symbol, "binance"))[1].get("price") == "100.02"

    await wait_until(binance_tied, what="binance's tied tick")
    status, body = await price(client, symbol)
    assert (status, body["source"], body["price"]) == (200, "binance", "100.02")

    # /ws sends a tick only when it is the freshest: never the stale CoinGecko price.
    live: list[tuple[str, str]] = []

    def heard(body: dict[str, Any]) -> bool:
        live.append((body["data"]["source"], body["data"]["price"]))
        return bool(body["data"]["price"] == "100.02")

    await receive_json_until(ws, heard)
    assert live == [("binance", "100.10"), ("coinbase", "100.00"), ("binance", "100.02")]
    await ws.close()


async def ready(client: Client) -> bool:
    return (await client.get("/ready")).status == 200
