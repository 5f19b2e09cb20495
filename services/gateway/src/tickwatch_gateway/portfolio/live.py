"""The WebSocket ``portfolio`` channel: each valuation of ``portfolio.valuations.v1`` pushed to
its owner's connections on this replica (after ``auth``), the latest value only.

Every replica reads the topic without a group, from its end (a valuation is a state, not an
event to catch up on). A slow connection keeps one pending valuation and is handed the newest
(conflated), never a backlog. Malformed records are only logged: nothing else reads this topic
that could have its dead letters.
"""

from __future__ import annotations

import asyncio
import json

from tickwatch_common.events import Valuation
from tickwatch_common.kafka import Delivered, consume, kafka_consumer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import PORTFOLIO_VALUATIONS

from tickwatch_gateway.market import Hub, Outgoing
from tickwatch_gateway.runtime.consumers import start_at_end

PORTFOLIO_CHANNEL = "portfolio"


class ValuationPush:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def push(self, valuation: Valuation) -> int:
        owners = [
            s for s in self.hub.subscribers(PORTFOLIO_CHANNEL) if s.user_id == valuation.user_id
        ]
        if not owners:
            return 0
        data = valuation.model_dump(mode="json")
        message = Outgoing(json.dumps({"channel": PORTFOLIO_CHANNEL, "data": data}))
        for sub in owners:
            sub.offer(PORTFOLIO_CHANNEL, message)  # one slot: the latest valuation wins
        return len(owners)

    async def handle(self, batch: list[Delivered]) -> None:
        for item in batch:
            if isinstance(item.event, Valuation):
                self.push(item.event)


async def push_valuations(
    settings: KafkaSettings, push: ValuationPush, positioned: asyncio.Event
) -> None:
    async with kafka_consumer(
        settings, group=None, topics=[PORTFOLIO_VALUATIONS], auto_offset_reset="latest"
    ) as consumer:
        await start_at_end(consumer)
        positioned.set()
        await consume(consumer, push.handle, dlq=None, commit=False)
