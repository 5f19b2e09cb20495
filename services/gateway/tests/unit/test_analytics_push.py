"""The movers push: waits for the candles to be stored, computes only for subscribers, and
survives a failed computation (the next candle pushes again)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any, cast

from tickwatch_common.events import Candle
from tickwatch_common.kafka import Delivered
from tickwatch_devstack.testing import wait_until
from tickwatch_gateway.analytics.push import CHANNEL, MoversPush
from tickwatch_gateway.market import Bar, CandleStore, Hub
from tickwatch_gateway.market.fanout import Subscriber

MIN = 60_000


class FakeCandles:
    """The candle store's reads the push makes; ``stored_up_to`` is the newest stored minute."""

    def __init__(self) -> None:
        self.stored_up_to: int | None = None
        self.fail_next = False
        self.reads = 0

    async def default_source(self, symbol: str, interval: str = "1m") -> str | None:
        return "replay"

    async def latest_open_time(self, symbol: str, source: str, interval: str = "1m") -> int | None:
        self.reads += 1
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("database away")
        return self.stored_up_to

    async def bars(
        self, symbol: str, source: str, lo: int, hi: int, interval: str = "1m"
    ) -> list[Bar]:
        assert self.stored_up_to is not None
        return [minute_bar(m) for m in range(self.stored_up_to // MIN + 1)]


def minute_bar(m: int) -> Bar:
    """Minute ``m`` opens at 100 and closes at 100 + m."""
    p = Decimal(100)
    return Bar(m * MIN, m * MIN + MIN - 1, p, p, p, p + m, Decimal(1), True)


def delivered(minute: int) -> Delivered:
    c = Candle(
        symbol="A-USDT",
        source="replay",
        interval="1m",
        open_time=minute * MIN,
        close_time=minute * MIN + MIN - 1,
        open="100",
        high="100",
        low="100",
        close=str(100 + minute),
        volume="1",
        closed=True,
    )
    return Delivered("market.candles.v1", 0, minute, "A-USDT", c, 0, {})


async def test_a_push_follows_the_stored_candle_and_survives_a_failure() -> None:
    hub, store = Hub(), FakeCandles()
    push = MoversPush(hub, cast(CandleStore, store), lambda: ["A-USDT"], every_s=0)
    assert CHANNEL in hub.named  # subscribable by name
    await push.handle([delivered(1)])  # nobody subscribes: nothing is read
    pushes = asyncio.create_task(push.pushes())
    await wait_until(lambda: not push._wake.is_set(), 5, "the wake-up taken")
    assert store.reads == 0

    got: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        got.append(json.loads(text))

    sub = Subscriber(send)
    pump = asyncio.create_task(sub.pump())
    hub.subscribe(sub, CHANNEL)
    store.fail_next = True
    await push.handle([delivered(2)])
    await wait_until(lambda: store.reads >= 1 and not push._wake.is_set(), 5, "the failed push")
    assert got == [] and not store.fail_next

    await push.handle([delivered(3)])
    await wait_until(lambda: store.reads >= 3, 5, "the push polling the store")
    assert got == []  # minute 3 is not stored yet: the push waits for it
    store.stored_up_to = 3 * MIN
    await wait_until(lambda: got, 5, "the movers pushed")
    assert got[0]["channel"] == CHANNEL
    [gainer] = got[0]["data"]["gainers"]
    assert (gainer["symbol"], gainer["open"], gainer["close"], gainer["change_pct"]) == (
        "A-USDT",
        "100",
        "103",
        "3",
    )
    pushes.cancel()
    pump.cancel()
