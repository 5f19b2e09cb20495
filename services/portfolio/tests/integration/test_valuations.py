"""portfolio.valuations.v1 on the real broker: a user's value moves with the ticks of what they
hold, published after their own fill, and at most once a second per user (latest wins)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from tickwatch_common.events import Valuation
from tickwatch_common.kafka import decode, kafka_consumer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import PORTFOLIO_VALUATIONS, TICKS
from tickwatch_devstack.testing import replay_tick, wait_until

from .conftest import Gateway, Market

pytestmark = pytest.mark.integration


class Valuations:
    """Every valuation published since the fixture started, per user."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.seen: list[Valuation] = []

    async def poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=100)
        for records in batches.values():
            for record in records:
                event = decode(record).event
                assert isinstance(event, Valuation)
                self.seen.append(event)

    def of(self, user: str) -> list[Valuation]:
        return [v for v in self.seen if v.user_id == user]

    async def until(self, user: str, what: str, check: Any) -> Valuation:
        found: list[Valuation] = []

        async def arrived() -> bool:
            await self.poll()
            found[:] = [v for v in self.of(user) if check(v)]
            return bool(found)

        await wait_until(arrived, what=what)
        return found[-1]


@pytest.fixture
async def valuations(stack: Any, market: Market) -> AsyncIterator[Valuations]:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_consumer(settings, group=None) as consumer:
        parts = [TopicPartition(PORTFOLIO_VALUATIONS.name, p) for p in range(3)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:
            await consumer.position(tp)
        yield Valuations(consumer)


async def _buy(gateway: Gateway, market: Market, user: str, symbol: str) -> None:
    await market.instrument(symbol)
    await market.tick(symbol, "100.00")
    order = {"symbol": symbol, "side": "buy", "quantity": "2", "type": "market"}
    reply = await gateway.call("POST", "/internal/orders", user, order)
    assert reply.status == 201, reply.body


async def test_a_tick_revalues_its_holder(
    gateway: Gateway, market: Market, valuations: Valuations
) -> None:
    symbol = market.new_symbol()
    await _buy(gateway, market, "valued", symbol)
    # Published right after the fill: 2 at 100 plus its fee of 0.2 out of the cash.
    after_fill = await valuations.until(
        "valued", "the fill's valuation", lambda v: len(v.holdings) == 1
    )
    assert after_fill.cash == Decimal("9799.8")
    assert after_fill.total_value == Decimal("9999.8")

    await market.tick(symbol, "110.00")
    moved = await valuations.until(
        "valued", "the tick's valuation", lambda v: v.holdings and v.holdings[0].price == 110
    )
    assert moved.total_value == Decimal("10019.8")
    (holding,) = moved.holdings
    assert (holding.symbol, holding.quantity, holding.value) == (symbol, 2, Decimal("220"))
    assert holding.unrealized_pnl == Decimal("20")  # against the cost of 200 (fee not included)


async def test_a_burst_of_ticks_gives_at_most_two_valuations(
    gateway: Gateway, market: Market, valuations: Valuations
) -> None:
    symbol = market.new_symbol()
    await _buy(gateway, market, "bursty", symbol)
    await valuations.until("bursty", "the fill's valuation", lambda v: len(v.holdings) == 1)
    before = len(valuations.of("bursty"))

    started = time.monotonic()
    base = int(time.time() * 1000)
    for i in range(20):
        tick = replay_tick(symbol, f"{101 + i}.00", base + i)
        await market.publisher.publish(TICKS, tick, key=symbol)
    assert time.monotonic() - started < 1  # the burst is within a second

    last = await valuations.until(
        "bursty", "the last price", lambda v: v.holdings and v.holdings[0].price == 120
    )
    assert last.total_value == Decimal("9799.8") + 2 * Decimal("120")
    burst = valuations.of("bursty")[before:]
    assert 1 <= len(burst) <= 2
    assert burst[-1] == last
