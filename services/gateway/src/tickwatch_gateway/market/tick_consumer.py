"""The live market feed: a group-less consumer, so every replica sees every tick and candle.

Ticks update the in-memory price book and are written through to Redis; a tick that is now
its symbol's freshest (``pricebook.freshest``) is fanned out to WebSocket subscribers, so a
lagging source (CoinGecko's minute-old prices beside Binance's) never moves the live price
back. Candles are fanned out (their persistence is :mod:`candles`' job, in a consumer group).
Offsets are not committed: a replica starts from the end of each partition and fills its book
from Redis, which every replica writes through. A malformed record is counted and logged but
not dead-lettered: every replica sees it, and one copy in the DLQ is the job of the consumer
groups (the candle store here; the alert engine's for ticks).
"""

from __future__ import annotations

import asyncio
import json

import structlog
from aiokafka import AIOKafkaConsumer
from tickwatch_common.events import Candle, Tick
from tickwatch_common.kafka import Delivered, consume

from tickwatch_gateway.http.api_types import decimal_str
from tickwatch_gateway.market.fanout import Hub
from tickwatch_gateway.market.latest_prices import LatestPrices
from tickwatch_gateway.market.pricebook import PriceBook, PriceView
from tickwatch_gateway.runtime.clock import iso_from_ms
from tickwatch_gateway.runtime.consumers import start_at_end

log = structlog.get_logger(__name__)


def candle_json(candle: Candle) -> dict[str, object]:
    return {
        "open_time": iso_from_ms(candle.open_time),
        "close_time": iso_from_ms(candle.close_time),
        "open": decimal_str(candle.open),
        "high": decimal_str(candle.high),
        "low": decimal_str(candle.low),
        "close": decimal_str(candle.close),
        "volume": decimal_str(candle.volume),
        "closed": candle.closed,
    }


class MarketFeed:
    def __init__(self, book: PriceBook, latest: LatestPrices, hub: Hub) -> None:
        self.book = book
        self.latest = latest
        self.hub = hub
        self.positioned = asyncio.Event()

    async def warm_up(self) -> int:
        """Fill the book from the Redis copy (another replica's or our previous life's)."""
        ticks = await self.latest.load()
        for tick in ticks:
            self.book.update(tick)
        return len(ticks)

    async def handle(self, batch: list[Delivered]) -> None:
        changed: dict[tuple[str, str], PriceView] = {}
        for item in batch:
            event = item.event
            if isinstance(event, Tick):
                view = self.book.update(event)
                if view is not None:
                    changed[(event.symbol, event.source)] = view
                if view is not None and self.book.latest(event.symbol) is view:
                    channel = f"prices:{event.symbol}"
                    self.hub.publish(
                        channel, f'{{"channel":"{channel}","data":{view.body.decode()}}}'
                    )
            elif isinstance(event, Candle):
                channel = f"candles:{event.symbol}:{event.interval}"
                self.hub.publish(
                    channel, json.dumps({"channel": channel, "data": candle_json(event)})
                )
        await self.latest.write(changed.values())

    async def run(self, consumer: AIOKafkaConsumer) -> None:
        await start_at_end(consumer)
        self.positioned.set()
        await consume(consumer, self.handle, dlq=None, commit=False)
