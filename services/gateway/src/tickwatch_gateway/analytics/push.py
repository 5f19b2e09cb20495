"""``analytics:movers`` on the WebSocket: the 1h movers, pushed when closed 1-minute candles
arrive, at most once per :data:`PUSH_EVERY_S` (the candles of that interval conflate into one
push).

The trigger is a group-less consumer of ``market.candles.v1`` (every replica pushes to its own
clients); the figures are read from the candle store, which the market's consumer group fills
from the same records, so a push first waits (at most :data:`STORED_WAIT_S`) until the candles
that triggered it are stored. It computes without the response cache: a push must not answer
what was cached before its candles were stored. Nothing is computed while nobody subscribes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer
from tickwatch_common.events import Candle
from tickwatch_common.kafka import Delivered, consume

from tickwatch_gateway.analytics.routes import movers_answer
from tickwatch_gateway.market import CandleStore, Hub
from tickwatch_gateway.runtime.consumers import start_at_end

log = structlog.get_logger(__name__)

CHANNEL = "analytics:movers"
WINDOW = "1h"
LIMIT = 5
PUSH_EVERY_S = 10.0
STORED_WAIT_S = 5.0
STORED_POLL_S = 0.1


class MoversPush:
    def __init__(
        self,
        hub: Hub,
        store: CandleStore,
        symbols: Callable[[], list[str]],
        every_s: float = PUSH_EVERY_S,
    ) -> None:
        self.hub, self.store, self.symbols, self.every_s = hub, store, symbols, every_s
        self.positioned = asyncio.Event()
        self._seen: dict[tuple[str, str], int] = {}
        self._wake = asyncio.Event()
        hub.declare(CHANNEL)

    async def handle(self, batch: list[Delivered]) -> None:
        for item in batch:
            candle = item.event
            if isinstance(candle, Candle) and candle.closed and candle.interval == "1m":
                key = (candle.symbol, candle.source)
                self._seen[key] = max(self._seen.get(key, candle.open_time), candle.open_time)
        if self._seen:
            self._wake.set()

    async def run(self, consumer: AIOKafkaConsumer) -> None:
        await start_at_end(consumer)
        self.positioned.set()
        await asyncio.gather(consume(consumer, self.handle, dlq=None, commit=False), self.pushes())

    async def pushes(self) -> None:
        """Push after each wake-up, then rest ``every_s``; a failed push (the database away) is
        logged and the next candle tries again."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            seen, self._seen = self._seen, {}
            if not self.hub.subscribers(CHANNEL):
                continue
            try:
                await self._stored(seen)
                answer = await movers_answer(self.store, self.symbols(), WINDOW, LIMIT)
            except Exception as exc:  # a push is best effort; the route still answers
                log.warning("analytics_movers_push_failed", error=repr(exc))
                continue
            self.hub.publish(CHANNEL, json.dumps({"channel": CHANNEL, "data": answer}))
            await asyncio.sleep(self.every_s)  # conflation: what arrives meanwhile waits

    async def _stored(self, seen: dict[tuple[str, str], int]) -> None:
        """Until every candle in ``seen`` is in the store, or :data:`STORED_WAIT_S` passed."""
        deadline = time.monotonic() + STORED_WAIT_S
        waiting = dict(seen)
        while waiting and time.monotonic() < deadline:
            for (symbol, source), open_time in list(waiting.items()):
                latest = await self.store.latest_open_time(symbol, source)
                if latest is not None and latest >= open_time:
                    del waiting[(symbol, source)]
            if waiting:
                await asyncio.sleep(STORED_POLL_S)
