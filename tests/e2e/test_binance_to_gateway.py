"""Binance protocol to the public API, end to end (issue 3's first two done-whens).

The ingestor's fake Binance server runs on loopback in the test's event loop; the ingestor and
the gateway run as real processes against the session's real servers. Aggregate trades sent by
the fake must come out of ``GET /api/v1/prices/{symbol}`` as the very same decimal strings,
within 100 ms (median), and a forced disconnect must be repaired with new prices served within
2 s. Run with ``-s`` to see the measured latencies.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.services import service_process
from tickwatch_devstack.testing import log_tail, service_running_off_loop
from tickwatch_testkit import FakeBinance

pytestmark = pytest.mark.e2e

TRADES = 20
MEDIAN_BUDGET_S = 0.100
RECONNECT_BUDGET_S = 2.0


@pytest.fixture(scope="module")
def gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {
        **os.environ,
        **stack.env(),
        "JWT_SECRET": secrets.token_urlsafe(48),
        "REDIS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}:",
        "GATEWAY_HOST": "127.0.0.1",
        # The test polls back to back (about a thousand requests a second): lift the per-IP
        # budget so polling measures the feed, not the rate limiter.
        "RATE_LIMIT_DEFAULT": "1000000/minute",
    }
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with service_process("gateway", env, port, log_path=log, timeout_s=30):
        yield f"http://127.0.0.1:{port}", log


@dataclass
class Feed:
    fake: FakeBinance
    symbols: list[str]  # canonical, BASE-USDT
    gateway: str
    http: aiohttp.ClientSession
    logs: list[Path]

    def diagnostics(self) -> str:
        return "\n".join(f"--- {p.name}\n{log_tail(p, chars=3000)}" for p in self.logs)

    async def served(self, symbol: str) -> dict[str, Any]:
        """The gateway's answer; a non-200 one as ``{"status": …, "body": …}``."""
        async with self.http.get(f"{self.gateway}/api/v1/prices/{symbol}") as resp:
            if resp.status != 200:
                return {"status": resp.status, "body": (await resp.text())[:300]}
            body: dict[str, Any] = await resp.json()
            return body

    async def until_served(self, symbol: str, price: str, timeout_s: float) -> dict[str, Any]:
        """Poll the gateway back to back until it serves ``price`` for ``symbol``."""
        deadline = time.perf_counter() + timeout_s
        last: dict[str, Any] | None = None
        while time.perf_counter() < deadline:
            last = await self.served(symbol)
            if last.get("price") == price:
                return last
        raise AssertionError(
            f"gateway never served {price} for {symbol} within {timeout_s}s; last answer {last}\n"
            + self.diagnostics()
        )


@pytest.fixture(scope="module")
async def feed(
    stack: Stack, gateway: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Feed]:
    tag = uuid.uuid4().hex[:5].upper()
    bases = [f"B{tag}{letter}" for letter in "XYZ"]  # unique: other tests share the broker
    fake = FakeBinance({f"{b}USDT": (b, "USDT") for b in bases}, ping_interval_s=1.0)
    symbols = [f"{b}-USDT" for b in bases]
    log = tmp_path_factory.mktemp("ingestor") / "ingestor.log"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "MARKET_SOURCES": "binance",
        "MARKET_FALLBACK": "none",
        "SYMBOLS": ",".join(symbols),
        "BACKFILL_ON_START": "false",
    }
    gateway_url, gateway_log = gateway
    async with fake.running():
        env["BINANCE_WS_URL"] = fake.ws_url
        env["BINANCE_REST_URL"] = fake.rest_url
        async with (
            service_running_off_loop("ingestor", env, free_port(), log),
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1, force_close=False)
            ) as http,
        ):
            yield Feed(fake, symbols, gateway_url, http, [log, gateway_log])


def exchange(symbol: str) -> str:
    return symbol.replace("-", "")


async def test_gateway_serves_the_last_aggregate_trade_price_within_100_ms(feed: Feed) -> None:
    fake = feed.fake
    assert len(fake.open_conns) == 1, "the ingestor is ready: its one connection is open"

    # Warm-up: one trade per symbol, which also waits out the first fetch of each partition.
    for i, symbol in enumerate(feed.symbols):
        price = f"{Decimal(1000 + i):.8f}"
        await fake.agg_trade(exchange(symbol), price)
        await feed.until_served(symbol, price, 10)

    latencies: list[float] = []
    last: dict[str, tuple[str, int]] = {}
    pacing = random.Random(3)
    for i in range(TRADES):
        # Trades arrive at random moments, not in lockstep with the gateway's fetch loop (a
        # trade sent the instant the previous one was served would always meet the consumer
        # at the same point of its fetch cycle). This is pacing, not waiting for a condition.
        await asyncio.sleep(pacing.uniform(0, 0.1))
        symbol = feed.symbols[i % len(feed.symbols)]
        price = f"{Decimal('86412.57') + Decimal(i) / 100:.8f}"  # e.g. "86412.57000000"
        sent = time.perf_counter()
        ts = time.time_ns() // 1_000_000
        await fake.agg_trade(exchange(symbol), price)
        body = await feed.until_served(symbol, price, 5)
        latencies.append(time.perf_counter() - sent)
        last[symbol] = (price, ts)
        assert body["symbol"] == symbol
        assert body["source"] == "binance"

    p50 = statistics.median(latencies)
    worst = max(latencies)
    print(
        f"\nbinance frame -> gateway GET /prices: {TRADES} trades, "
        f"p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms, "
        f"all: {[round(x * 1000, 1) for x in latencies]}"
    )
    assert p50 <= MEDIAN_BUDGET_S, f"median {p50 * 1000:.1f} ms > 100 ms\n" + feed.diagnostics()

    # Every symbol ends on the last price sent for it, the same string, with the trade's time.
    for symbol, (price, ts) in last.items():
        body = await feed.served(symbol)
        assert body["price"] == price
        assert body["symbol"] == symbol and body["source"] == "binance"
        served_ts = datetime.fromisoformat(body["ts"].replace("Z", "+00:00"))
        assert 0 <= served_ts.timestamp() * 1000 - ts < 1000, (body["ts"], ts)

    # A burst sent without waiting: the gateway settles on the last one, not an earlier one.
    symbol = feed.symbols[0]
    burst = [f"{Decimal('0.00012340') + Decimal(i) / 10**8:.8f}" for i in range(50)]
    for price in burst:
        await fake.agg_trade(exchange(symbol), price)
    await feed.until_served(symbol, burst[-1], 5)
    body = await feed.served(symbol)
    assert body["price"] == burst[-1] == "0.00012389"


async def test_a_forced_disconnect_is_repaired_and_new_prices_served_within_2_s(
    feed: Feed,
) -> None:
    fake = feed.fake
    symbol = feed.symbols[1]
    await fake.agg_trade(exchange(symbol), "2.00000000")
    await feed.until_served(symbol, "2.00000000", 10)
    before = {c.id for c in fake.conns}
    stream = f"{exchange(symbol).lower()}@aggTrade"

    dropped = time.perf_counter()
    await fake.drop_all()
    # Every connection open before the drop is closed; the ingestor may already have opened
    # its replacement while the close handshakes finished.
    assert not [c for c in fake.open_conns if c.id in before]

    # Wait (with a deadline) for the ingestor's replacement connection to the fake.
    deadline = dropped + RECONNECT_BUDGET_S
    while not any(c.id not in before and stream in c.streams for c in fake.open_conns):
        assert time.perf_counter() < deadline, (
            f"no reconnection within {RECONNECT_BUDGET_S}s\n" + feed.diagnostics()
        )
        await asyncio.sleep(0.005)
    reconnected = time.perf_counter() - dropped

    price = "2.12345678"
    await fake.agg_trade(exchange(symbol), price)
    await feed.until_served(symbol, price, max(0.0, deadline - time.perf_counter()))
    served = time.perf_counter() - dropped
    print(
        f"\nforced disconnect: reconnected after {reconnected * 1000:.0f} ms, "
        f"new price served after {served * 1000:.0f} ms"
    )
    assert served < RECONNECT_BUDGET_S
    assert len(fake.open_conns) == 1, "one live connection again, not a pile of them"
