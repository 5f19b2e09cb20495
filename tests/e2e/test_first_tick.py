"""The first tick end to end: ticks published to the real broker are served by the gateway
process as the same decimal strings, and a malformed tick goes to the DLQ without stopping it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
from tickwatch_common.events import Tick
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import TICKS
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.services import service_process
from tickwatch_devstack.testing import replay_tick

pytestmark = pytest.mark.e2e


def tick(symbol: str, price: str, ts: int) -> Tick:
    """A replay tick with the 24 h figures that the price route answers alongside the price."""
    return replay_tick(
        symbol, price, ts, ts_ingest=ts + 3, volume_24h="1234.5", change_24h_pct="-1.25"
    )


@pytest.fixture(scope="module")
def ops_port() -> int:
    """The gateway's ops listener (GATEWAY_OPS_PORT), where its /metrics are."""
    return free_port()


@pytest.fixture(scope="module")
def gateway(stack: Stack, ops_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        **stack.env(),
        "JWT_SECRET": secrets.token_urlsafe(48),
        "REDIS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}:",
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_OPS_PORT": str(ops_port),
    }
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with service_process("gateway", env, port, log_path=log):
        yield f"http://127.0.0.1:{port}"


async def poll_price(base: str, symbol: str, expected: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    last: object = None
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{base}/api/v1/prices/{symbol}") as resp:
                if resp.status == 200:
                    last = await resp.json()
                    if last["price"] == expected:
                        return last
                else:
                    last = (resp.status, await resp.text())
            await asyncio.sleep(0.05)
    raise AssertionError(f"price of {symbol} never became {expected}; last answer {last}")


async def test_gateway_serves_the_last_published_price_as_the_same_string(
    stack: Stack, gateway: str
) -> None:
    symbol = f"E{uuid.uuid4().hex[:5].upper()}-USDT"
    now = int(time.time() * 1000)
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings) as publisher:
        for i, price in enumerate(["67000.10", "67001.00", "67002.12345678"]):
            await publisher.publish(TICKS, tick(symbol, price, now + i), key=symbol)

    body = await poll_price(gateway, symbol, "67002.12345678")
    assert body == {
        "symbol": symbol,
        "price": "67002.12345678",
        "source": "replay",
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((now + 2) // 1000))
        + f".{(now + 2) % 1000:03d}Z",
        "change_24h_pct": "-1.25",
        "volume_24h": "1234.5",
    }
    # Other spellings of the symbol answer the same price.
    await poll_price(gateway, symbol.lower(), "67002.12345678")
    await poll_price(gateway, symbol.replace("-", ""), "67002.12345678")


async def test_a_malformed_tick_is_skipped_and_counted_and_the_gateway_keeps_serving(
    stack: Stack, gateway: str, ops_port: int
) -> None:
    """The gateway's live feed reads ticks without a group (every replica reads every tick), so
    it counts and logs a malformed one instead of dead-lettering it once per replica; the
    consumer groups on the topic (the alert engine) put it on the DLQ once."""
    symbol = f"M{uuid.uuid4().hex[:5].upper()}-USDT"
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    bad = json.dumps({"v": 1, "symbol": symbol, "price": 1.5}).encode()
    now = int(time.time() * 1000)
    async with kafka_producer(settings) as publisher:
        await publisher.publish(TICKS, tick(symbol, "10.5", now), key=symbol)
        await publisher.send_raw(TICKS.name, bad, symbol.encode(), [])
        await publisher.publish(TICKS, tick(symbol, "11.25", now + 1), key=symbol)

    await poll_price(gateway, symbol, "11.25")  # the tick after the bad one got through
    series = (
        'tickwatch_messages_malformed_skipped_total{reason="validation",topic="market.ticks.v1"}'
    )
    ops = f"http://127.0.0.1:{ops_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{ops}/metrics") as resp:
            metrics = await resp.text()
        counted = [line for line in metrics.splitlines() if line.startswith(series)]
        assert counted and float(counted[0].split()[-1]) >= 1, metrics[-2000:]
        for base in (gateway, ops):  # the probes on both listeners
            async with http.get(f"{base}/health") as resp:
                assert resp.status == 200
        async with http.get(f"{gateway}/metrics") as resp:  # never on the public port
            assert resp.status == 404
            assert resp.content_type == "application/problem+json"
