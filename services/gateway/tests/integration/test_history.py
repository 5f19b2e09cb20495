"""Candles published to the real broker are stored once, rolled up, cached and invalidated."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import talib
from aiohttp.test_utils import TestClient
from tickwatch_common.events import Candle
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES
from tickwatch_devstack.infra import Stack

from .conftest import MakeClient

Client = TestClient[Any, Any]
T0 = 1_700_000_400_000  # on a 5-minute boundary
MIN = 60_000


def candle(symbol: str, i: int, close: str, *, closed: bool = True, volume: str = "1") -> Candle:
    t = T0 + i * MIN
    c = Decimal(close)
    return Candle(
        symbol=symbol,
        source="replay",
        interval="1m",
        open_time=t,
        close_time=t + MIN - 1,
        open=str(c - 1),
        high=str(c + 2),
        low=str(c - 2),
        close=close,
        volume=volume,
        closed=closed,
    )


async def publish(stack: Stack, candles: list[Candle]) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings) as publisher:
        for c in candles:
            await publisher.publish(CANDLES, c, key=c.symbol)


async def until(client: Client, path: str, check: Any, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        resp = await client.get(path)
        body = await resp.json()
        if resp.status == 200 and check(body):
            return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the check; last answer {body}")


async def test_candles_are_stored_rolled_up_and_cache_invalidated(
    stack: Stack, client: Client
) -> None:
    symbol = "BTC-USDT"
    closes = [str(100 + i) for i in range(10)]
    batch = [candle(symbol, i, c) for i, c in enumerate(closes)]
    # A duplicate and an open version after the closed one must not change anything.
    batch += [candle(symbol, 3, "103"), candle(symbol, 4, "999", closed=False)]
    await publish(stack, batch)

    path = f"/api/v1/prices/{symbol}/history?interval=1m"
    body = await until(client, path, lambda b: len(b["items"]) == 10)
    assert body["items"][0]["open_time"] == "2023-11-14T22:20:00.000Z"
    assert [i["close"] for i in body["items"]] == closes
    assert body["items"][4]["closed"] is True

    five = await (await client.get(f"/api/v1/prices/{symbol}/history?interval=5m")).json()
    assert [
        (i["open"], i["high"], i["low"], i["close"], i["volume"], i["closed"])
        for i in five["items"]
    ] == [
        ("99", "106", "98", "104", "5", True),
        ("104", "111", "103", "109", "5", True),
    ]
    window = await (
        await client.get(
            f"/api/v1/prices/{symbol}/history?interval=1m&start=2023-11-14T22:22:00Z&limit=3"
        )
    ).json()
    assert [i["close"] for i in window["items"]] == ["102", "103", "104"]

    # ETag round trip.
    resp = await client.get(path)
    etag = resp.headers["ETag"]
    assert (await client.get(path, headers={"If-None-Match": etag})).status == 304

    # A new candle invalidates the cached answer at once.
    await publish(stack, [candle(symbol, 10, "110")])
    body = await until(client, path, lambda b: len(b["items"]) == 11, timeout_s=20)
    assert body["items"][-1]["close"] == "110"


async def test_indicators_over_stored_candles_match_talib(
    stack: Stack, make_client: MakeClient
) -> None:
    # Its own symbol: the candle topic is shared by the whole session (the browser tests
    # publish recent ETH-USDT candles, and the indicators are over the latest ones).
    symbol = f"T{uuid.uuid4().hex[:6].upper()}-USDT"
    client = await make_client(symbols=f"BTC-USDT,ETH-USDT,{symbol}")
    closes = [str(2000 + (i * 37) % 23 - i / 4) for i in range(60)]
    await publish(stack, [candle(symbol, i, c) for i, c in enumerate(closes)])
    path = (
        f"/api/v1/indicators/{symbol}?interval=1m&indicators=sma:10,rsi:14,macd:12:26:9&series=true"
    )
    body = await until(client, path, lambda b: b["candles"] == 60)
    by_name = {i["name"]: i for i in body["indicators"]}
    arr = np.array([float(c) for c in closes])
    assert (
        abs(float(by_name["sma:10"]["latest"]["values"]["value"]) - talib.SMA(arr, 10)[-1]) < 1e-8
    )
    assert (
        abs(float(by_name["rsi:14"]["latest"]["values"]["value"]) - talib.RSI(arr, 14)[-1]) < 1e-8
    )
    _, signal, _ = talib.MACD(arr, 12, 26, 9)
    assert abs(float(by_name["macd:12:26:9"]["latest"]["values"]["signal"]) - signal[-1]) < 1e-8
    assert len(by_name["sma:10"]["series"]) == 51

    bad = await client.get(f"/api/v1/indicators/{symbol}?indicators=sma:0")
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "indicators"
