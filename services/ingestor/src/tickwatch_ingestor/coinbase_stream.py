"""Coinbase live market data over the Advanced Trade market-data WebSocket.

One :class:`CoinbaseSource` keeps one connection to ``wss://advanced-trade-ws.coinbase.com``
(public channels, no key) for the configured products, and:

- subscribes within Coinbase's 5 s, one message per channel: ``market_trades`` (a tick per
  trade), ``ticker`` (bid, ask and 24 h change, unless ``COINBASE_TICKER=false``) and
  ``heartbeats`` (a message a second, which keeps quiet subscriptions open);
- replaces a connection that has delivered nothing for ``silence_timeout_s`` (the watchdog of
  :mod:`~tickwatch_ingestor.ws_connection`, shared with Binance);
- on a ``sequence_num`` jump (messages dropped) logs, counts and resubscribes on a fresh
  connection: the ``market_trades`` snapshot it opens with brings the trades missed, and the
  :class:`~tickwatch_ingestor.coinbase_feed.CoinbaseFeed` drops those already published, so a
  reconnect neither loses nor repeats a trade the snapshot still holds;
- on an ``error`` message (a refused subscription) logs it with Coinbase's words, counts it and
  resubscribes on a fresh connection after a backoff (never at once, never a tight loop);
- reconnects after any loss with capped exponential backoff and jitter, forever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog
from tickwatch_common.cancellation import raise_if_cancelling
from tickwatch_common.events.base import now_ms

from tickwatch_ingestor.coinbase_feed import CoinbaseFeed
from tickwatch_ingestor.coinbase_rest import CoinbaseRest
from tickwatch_ingestor.metrics import (
    DUPLICATES_DROPPED,
    GAPS_DETECTED,
    GAPS_FILLED,
    MESSAGES_REJECTED,
    SUBSCRIPTION_ERRORS,
)
from tickwatch_ingestor.normalise import Rejected
from tickwatch_ingestor.settings import Settings
from tickwatch_ingestor.sink import EventSink
from tickwatch_ingestor.ws_connection import (
    FeedConnection,
    LossBackoff,
    open_with_backoff,
    record_loss,
)

log = structlog.get_logger(__name__)

SEQUENCE_GAP = "sequence_gap"
SUBSCRIPTION_ERROR = "subscription_error"


class CoinbaseSource:
    name = "coinbase"

    def __init__(
        self,
        settings: Settings,
        http: aiohttp.ClientSession,
        sink: EventSink,
        products: Sequence[str],
        rest: CoinbaseRest | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.sink = sink
        self.rest = rest  # for the start-up candle history
        self.products = list(products)
        self.feed = CoinbaseFeed(self.products)
        self.current: FeedConnection | None = None
        self.connected = False
        self.reconnects = 0
        self.rejected = 0
        self.sequence_gaps = 0
        self.errors: list[str] = []  # what Coinbase said each time it refused a request
        self.subscribed: dict[str, list[str]] = {}

    @property
    def healthy(self) -> bool:
        return self.connected

    def describe(self) -> str:
        state = "connected" if self.connected else "reconnecting"
        refused = f", last refusal: {self.errors[-1]}" if self.errors else ""
        return f"coinbase ({state}, {len(self.products)} products{refused})"

    def subscriptions(self) -> list[dict[str, Any]]:
        """The subscribe messages, one per channel as Coinbase requires."""
        channels = ["market_trades"] + (["ticker"] if self.settings.coinbase_ticker else [])
        messages: list[dict[str, Any]] = [
            {"type": "subscribe", "product_ids": self.products, "channel": c} for c in channels
        ]
        messages.append({"type": "subscribe", "channel": "heartbeats"})
        return messages

    async def _open(self) -> FeedConnection:
        s = self.settings
        # asyncio.timeout, not wait_for (see BinanceSource: a cancellation must not be lost).
        async with asyncio.timeout(s.coinbase_connect_timeout_s):
            ws = await self.http.ws_connect(
                s.coinbase_ws_url, autoping=True, heartbeat=None, max_msg_size=4 * 1024 * 1024
            )
        try:
            for message in self.subscriptions():
                await ws.send_str(json.dumps(message))
        except BaseException:
            await ws.close()
            raise
        self.feed.new_connection()
        return FeedConnection(
            ws,
            source="coinbase",
            silence_timeout_s=s.coinbase_silence_timeout_s,
            on_frame=self.on_frame,
        )

    async def run(self) -> None:
        s = self.settings
        failures = LossBackoff(s.coinbase_reconnect_initial_s, s.coinbase_reconnect_cap_s)
        why = "start"
        try:
            while True:
                raise_if_cancelling()
                conn = await open_with_backoff(
                    self._open,
                    source="coinbase",
                    initial_s=s.coinbase_reconnect_initial_s,
                    cap_s=s.coinbase_reconnect_cap_s,
                )
                self.current, self.connected = conn, True
                log.info("coinbase_connected", conn=conn.id, products=self.products, why=why)
                await asyncio.wait({conn.task})
                self.current, self.connected = None, False
                self.reconnects += 1
                cause = record_loss(conn)
                await failures.pause(conn.lived_s, at_once=cause != SUBSCRIPTION_ERROR)
                why = cause
        finally:
            if self.current is not None:
                await self.current.stop("shutdown")

    async def on_frame(self, raw: str) -> str | None:
        """One frame: its ticks to the sink; answers the cause when the connection must go."""
        try:
            out = self.feed.handle(raw, now_ms())
        except Rejected as exc:
            self.rejected += 1
            MESSAGES_REJECTED.labels("coinbase", exc.reason).inc()
            return None
        for reason in out.rejected:
            self.rejected += 1
            MESSAGES_REJECTED.labels("coinbase", reason).inc()
        sink = self.sink
        for tick in out.ticks:
            sink.add_tick(tick)
        if sink.full:
            await sink.pause()
        if out.duplicates:
            DUPLICATES_DROPPED.labels("coinbase").inc(out.duplicates)
        if out.trade_gap:
            GAPS_DETECTED.labels("coinbase", "trade").inc()
        if out.trade_filled:
            GAPS_FILLED.labels("coinbase", "trade").inc(out.trade_filled)
        if out.subscriptions is not None:
            self.subscribed = out.subscriptions
            log.info("coinbase_subscribed", subscriptions=out.subscriptions)
        if out.error is not None:
            self.errors = [*self.errors[-9:], out.error]
            SUBSCRIPTION_ERRORS.labels("coinbase").inc()
            log.error(
                "coinbase_subscription_refused",
                error=out.error,
                products=self.products,
                retry="on a new connection, after a backoff",
            )
            return SUBSCRIPTION_ERROR
        if out.sequence_gap:
            self.sequence_gaps += 1
            GAPS_DETECTED.labels("coinbase", "sequence").inc()
            log.warning("coinbase_sequence_gap", missed=out.sequence_gap, action="resubscribe")
            return SEQUENCE_GAP
        return None
