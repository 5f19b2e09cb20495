"""A Coinbase Advanced Trade market-data WebSocket on loopback, in Coinbase's wire format.

Built from ``services/ingestor/tests/fixtures/coinbase``: every message the envelope
``{"channel", "client_id", "timestamp", "sequence_num", "events"}`` with ``sequence_num``
counting up by one per message of a connection across its channels; a ``subscribe`` per
channel (``market_trades``, ``ticker``, ``heartbeats``) answered with a ``subscriptions``
message, ``market_trades`` first sending a ``snapshot`` of the product's recent trades (newest
first), then an ``update`` per trade; ``{"type": "error", ...}`` for an unknown product or a
queued refusal; heartbeats every ``heartbeat_interval_s``; a connection closed when no
subscribe arrives within ``subscribe_deadline_s`` (Coinbase: 5 s). For tests: forced
disconnects, silence (nothing sent, heartbeats included), a skipped sequence number, raw frames.
REST ``/api/v3/brokerage/market/products/{product_id}/candles`` answers synthetic, deterministic
candles (newest first, at most 350 or a 400 as Coinbase does), with queued failures (429 with
``Retry-After``, 5xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tickwatch_testkit.loopback_ws import LoopbackConnections

SNAPSHOT_TRADES = 50
MAX_CANDLES = 350
GRANULARITY_S = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "ONE_HOUR": 3600,
    "ONE_DAY": 86400,
}


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class CoinbaseConn:
    id: int
    ws: web.WebSocketResponse
    channels: dict[str, set[str]] = field(default_factory=dict)  # channel -> product ids
    received: list[dict[str, Any]] = field(default_factory=list)
    sequence: int = 0
    refusal: str | None = None  # every subscribe on this connection is refused, saying this
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False


class FakeCoinbase(LoopbackConnections[CoinbaseConn]):
    def __init__(
        self,
        products: list[str] | None = None,
        *,
        heartbeat_interval_s: float = 1.0,
        subscribe_deadline_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.products = list(products or ["BTC-USD"])
        self.heartbeat_interval_s = heartbeat_interval_s
        self.subscribe_deadline_s = subscribe_deadline_s
        self.trades: dict[str, list[dict[str, Any]]] = {p: [] for p in self.products}
        self.next_trade_id = 1000
        self.connects = 0
        self.silent = False
        self.refusals: list[str] = []  # reasons: each refuses the subscriptions of a connection
        self.skip_next_sequence = 0
        self.rest_failures: list[tuple[int, dict[str, str]]] = []  # (status, headers), in order
        self.rest_requests: list[tuple[str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -------------------------------------------------------------- lifecycle

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeCoinbase]:
        app = web.Application()
        app.router.add_get("/", self._serve)
        app.router.add_get("/api/v3/brokerage/market/products/{product_id}/candles", self._candles)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield self
        finally:
            self._cancel_tasks()
            await self.drop_all()
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connects += 1
        conn = CoinbaseConn(self.connects, ws)
        if self.refusals:
            conn.refusal = self.refusals.pop(0)
        self.conns.append(conn)
        tasks = [self._spawn(self._heartbeats(conn)), self._spawn(self._deadline(conn))]
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_request(conn, msg.data)
        finally:
            conn.closed = True
            for t in tasks:
                t.cancel()
        return ws

    async def _deadline(self, conn: CoinbaseConn) -> None:
        await asyncio.sleep(self.subscribe_deadline_s)
        if not conn.channels:
            await self._close(conn)

    async def _heartbeats(self, conn: CoinbaseConn) -> None:
        counter = 0
        while not conn.closed:
            await asyncio.sleep(self.heartbeat_interval_s)
            if "heartbeats" in conn.channels:
                counter += 1
                event = {"current_time": rfc3339_now(), "heartbeat_counter": counter}
                await self._send(conn, "heartbeats", [event])

    async def _on_request(self, conn: CoinbaseConn, text: str) -> None:
        try:
            req = json.loads(text)
        except ValueError:
            await self._send_json(conn, {"type": "error", "message": "malformed request"})
            return
        conn.received.append(req)
        channel, ids = req.get("channel"), req.get("product_ids") or []
        if req.get("type") != "subscribe" or not isinstance(channel, str):
            return
        unknown = [p for p in ids if p not in self.trades]
        if conn.refusal or unknown:
            reason = conn.refusal or f"{unknown[0]} is not a valid product"
            await self._send_json(
                conn, {"type": "error", "message": "Failed to subscribe", "reason": reason}
            )
            return
        conn.channels.setdefault(channel, set()).update(ids or ["heartbeats"])
        if channel == "market_trades":
            recent = [t for p in ids for t in self.trades[p][-SNAPSHOT_TRADES:]]
            recent.sort(key=lambda t: int(t["trade_id"]), reverse=True)
            await self._send(conn, "market_trades", [{"type": "snapshot", "trades": recent}])
        subs = {c: sorted(p) for c, p in conn.channels.items()}
        await self._send(conn, "subscriptions", [{"subscriptions": subs}])

    async def _send(self, conn: CoinbaseConn, channel: str, events: list[Any]) -> None:
        if self.silent or conn.closed:
            return
        conn.sequence += self.skip_next_sequence
        self.skip_next_sequence = 0
        envelope = {
            "channel": channel,
            "client_id": "",
            "timestamp": rfc3339_now(),
            "sequence_num": conn.sequence,
            "events": events,
        }
        conn.sequence += 1
        await self._send_json(conn, envelope)

    async def _send_json(self, conn: CoinbaseConn, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await conn.ws.send_str(json.dumps(message, separators=(",", ":")))

    # -------------------------------------------------------------- for tests

    async def send_raw(self, text: str) -> None:
        for conn in self.open_conns:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_str(text)

    async def send_events(self, channel: str, events: list[Any]) -> None:
        """A message of ``channel`` in the envelope, in sequence, to every open connection."""
        for conn in self.open_conns:
            await self._send(conn, channel, events)

    async def trade(
        self, product: str, price: str, size: str = "0.01", *, publish: bool = True
    ) -> int:
        """A trade: kept for the next snapshots, sent to subscribers as an update unless
        ``publish`` is false (a trade made while the client was away)."""
        self.next_trade_id += 1
        row = {
            "trade_id": str(self.next_trade_id),
            "product_id": product,
            "price": price,
            "size": size,
            "side": "BUY",
            "time": rfc3339_now(),
        }
        self.trades[product].append(row)
        for conn in self.open_conns if publish else []:
            if product in conn.channels.get("market_trades", ()):
                await self._send(conn, "market_trades", [{"type": "update", "trades": [row]}])
        return self.next_trade_id

    async def ticker(self, product: str, price: str, bid: str, ask: str, change_pct: str) -> None:
        row = {
            "type": "ticker",
            "product_id": product,
            "price": price,
            "volume_24_h": "16038.28770938",
            "low_24_h": bid,
            "high_24_h": ask,
            "low_52_w": bid,
            "high_52_w": ask,
            "price_percent_chg_24_h": change_pct,
            "best_bid": bid,
            "best_bid_quantity": "1.5",
            "best_ask": ask,
            "best_ask_quantity": "2.5",
        }
        for conn in self.open_conns:
            if product in conn.channels.get("ticker", ()):
                await self._send(conn, "ticker", [{"type": "update", "tickers": [row]}])

    def subscribed(self) -> bool:
        """Some open connection has every channel it asked for."""
        return any(
            "market_trades" in c.channels and "heartbeats" in c.channels for c in self.open_conns
        )

    # -------------------------------------------------------------- REST

    @staticmethod
    def synthetic_candle(product: str, start_s: int) -> dict[str, str]:
        """A deterministic candle for any (product, start)."""
        base = 1000 + sum(map(ord, product)) % 97 * 10 + (start_s // 60) % 50 / 10
        return {
            "start": str(start_s),
            "low": f"{base - 1:.2f}",
            "high": f"{base + 1.25:.2f}",
            "open": f"{base:.2f}",
            "close": f"{base + 0.25:.2f}",
            "volume": "12.34500000",
        }

    async def _candles(self, request: web.Request) -> web.Response:
        product = request.match_info["product_id"]
        self.rest_requests.append((request.path, dict(request.query)))
        if self.rest_failures:
            status, headers = self.rest_failures.pop(0)
            return web.json_response({"error": "failure"}, status=status, headers=headers)
        step = GRANULARITY_S.get(request.query.get("granularity", ""))
        if product not in self.trades or step is None:
            return web.json_response(
                {"error": "INVALID_ARGUMENT", "message": "invalid product or granularity"},
                status=400 if step is None else 404,
            )
        start, end = int(request.query["start"]), int(request.query["end"])
        first = start - start % step + (step if start % step else 0)
        opens = range(first, end + 1, step)
        if len(opens) > MAX_CANDLES:
            return web.json_response(
                {
                    "error": "INVALID_ARGUMENT",
                    "message": f"number of candles requested should be less than {MAX_CANDLES}",
                },
                status=400,
            )
        rows = [self.synthetic_candle(product, t) for t in reversed(opens)]
        return web.json_response({"candles": rows})
