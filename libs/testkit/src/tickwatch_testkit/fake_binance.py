"""A Binance-protocol server on loopback: combined streams over WebSocket and the REST routes.

WebSocket ``/stream?streams=a/b/c`` (plus ``SUBSCRIBE`` requests) with the combined framing
``{"stream": …, "data": …}``; server pings with a payload (pongs are recorded); a connection
lifetime after which the server cuts the connection (Binance's 24 h, shortened); forced
disconnects; silence; malformed frames; aggregate-trade id gaps. REST ``/api/v3/exchangeInfo``
(Binance's payload: rate limits, and per symbol its status, assets, precisions, order types and
filters — PRICE_FILTER, LOT_SIZE, NOTIONAL by default, any set per symbol with ``filters``),
``/api/v3/klines`` (synthetic, deterministic, paged like Binance) and ``/api/v3/ping``, every
answer with ``X-MBX-USED-WEIGHT-1M``; queued failures (429, 418 with ``Retry-After``, 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from tickwatch_testkit.loopback_ws import LoopbackConnections

MINUTE_MS = 60_000
INTERVALS = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}


@dataclass
class WsConn:
    id: int
    ws: web.WebSocketResponse
    streams: set[str]
    opened: float = field(default_factory=time.monotonic)
    pongs: list[bytes] = field(default_factory=list)
    received: list[tuple[float, str]] = field(default_factory=list)
    closed: bool = False


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def default_filters() -> list[dict[str, Any]]:
    """What Binance answers for BTCUSDT (the shared fixture's PRICE_FILTER and LOT_SIZE, and
    the NOTIONAL filter that replaced MIN_NOTIONAL)."""
    return [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.01000000",
            "maxPrice": "1000000.00000000",
            "tickSize": "0.01000000",
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": "0.00001000",
            "maxQty": "9000.00000000",
            "stepSize": "0.00001000",
        },
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {
            "filterType": "MARKET_LOT_SIZE",
            "minQty": "0.00000000",
            "maxQty": "120.50000000",
            "stepSize": "0.00000000",
        },
        {
            "filterType": "NOTIONAL",
            "minNotional": "5.00000000",
            "applyMinToMarket": True,
            "maxNotional": "9000000.00000000",
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
    ]


RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]


def synthetic_kline(symbol: str, interval: str, open_time: int) -> list[Any]:
    """A deterministic kline row for any (symbol, interval, open time)."""
    step = INTERVALS[interval]
    base = Decimal(1000 + (sum(map(ord, symbol)) % 97) * 10)
    wiggle = Decimal((open_time // step) % 50) / 10
    o = base + wiggle
    c = o + Decimal("0.25")
    return [
        open_time,
        f"{o:.8f}",
        f"{c + 1:.8f}",
        f"{o - 1:.8f}",
        f"{c:.8f}",
        "12.34500000",
        open_time + step - 1,
        "1066700.12345000",
        42,
        "6.10000000",
        "527100.00000000",
        "0",
    ]


class FakeBinance(LoopbackConnections[WsConn]):
    def __init__(
        self,
        markets: dict[str, tuple[str, str]] | None = None,
        *,
        ping_interval_s: float | None = 20.0,
        ping_payload: bytes = b"tickwatch-ping",
        lifetime_s: float | None = None,
    ) -> None:
        super().__init__()
        # exchange symbol -> (base, quote)
        self.markets: dict[str, tuple[str, str]] = markets or {"BTCUSDT": ("BTC", "USDT")}
        # exchangeInfo per exchange symbol: its filters (default_filters() where unset) and
        # status ("TRADING" where unset); change them to have Binance change its rules.
        self.filters: dict[str, list[dict[str, Any]]] = {}
        self.statuses: dict[str, str] = {}
        self.ping_interval_s = ping_interval_s
        self.ping_payload = ping_payload
        self.lifetime_s = lifetime_s
        self.connects = 0
        self.agg_ids: dict[str, int] = {}
        self.rest_failures: list[tuple[int, dict[str, str]]] = []
        self.rest_requests: list[tuple[str, dict[str, str], float]] = []
        self.used_weight = 0
        self.silent = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -------------------------------------------------------------- lifecycle

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/api/v3/ping", self._ping)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._cancel_tasks()
        await self.drop_all()
        if self._runner is not None:
            await self._runner.cleanup()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeBinance]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    # -------------------------------------------------------------- WebSocket

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        names = request.query.get("streams", "")
        self.connects += 1
        conn = WsConn(self.connects, ws, {s for s in names.split("/") if s})
        self.conns.append(conn)
        tasks = [self._spawn(self._pinger(conn))]
        if self.lifetime_s is not None:
            tasks.append(self._spawn(self._cut_after(conn, self.lifetime_s)))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.PONG:
                    conn.pongs.append(bytes(msg.data))
                elif msg.type is WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    conn.received.append((time.monotonic(), msg.data))
                    await self._on_request(conn, msg.data)
        finally:
            conn.closed = True
            for t in tasks:
                t.cancel()
        return ws

    async def _on_request(self, conn: WsConn, text: str) -> None:
        try:
            req = json.loads(text)
        except ValueError:
            return
        if req.get("method") == "SUBSCRIBE":
            conn.streams.update(req.get("params", []))
        elif req.get("method") == "UNSUBSCRIBE":
            conn.streams.difference_update(req.get("params", []))
        await conn.ws.send_str(json.dumps({"result": None, "id": req.get("id")}))

    async def _pinger(self, conn: WsConn) -> None:
        if not self.ping_interval_s:
            return
        while not conn.closed:
            await asyncio.sleep(self.ping_interval_s)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.ping(self.ping_payload)

    async def _cut_after(self, conn: WsConn, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._close(conn)

    async def _send(self, stream: str, data: dict[str, Any]) -> int:
        if self.silent:
            return 0
        frame = json.dumps({"stream": stream, "data": data}, separators=(",", ":"))
        sent = 0
        for conn in self.open_conns:
            if stream in conn.streams:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.send_str(frame)
                    sent += 1
        return sent

    async def send_raw(self, text: str) -> None:
        for conn in self.open_conns:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_str(text)

    # -------------------------------------------------------------- market events

    def skip_agg_ids(self, symbol: str, n: int) -> None:
        self.agg_ids[symbol] = self.agg_ids.get(symbol, 1000) + n

    async def agg_trade(self, symbol: str, price: str, quantity: str = "0.01000000") -> int:
        """Publish the next aggregate trade of ``symbol`` (e.g. ``BTCUSDT``); returns its id."""
        agg_id = self.agg_ids.get(symbol, 1000) + 1
        self.agg_ids[symbol] = agg_id
        t = now_ms()
        await self._send(
            f"{symbol.lower()}@aggTrade",
            {
                "e": "aggTrade",
                "E": t,
                "s": symbol,
                "a": agg_id,
                "p": price,
                "q": quantity,
                "f": agg_id * 3,
                "l": agg_id * 3 + 2,
                "T": t,
                "m": False,
                "M": True,
            },
        )
        return agg_id

    async def kline(self, symbol: str, open_time: int, *, closed: bool = True) -> list[Any]:
        row = synthetic_kline(symbol, "1m", open_time)
        await self._send(
            f"{symbol.lower()}@kline_1m",
            {
                "e": "kline",
                "E": open_time + (MINUTE_MS if closed else MINUTE_MS // 2),
                "s": symbol,
                "k": {
                    "t": open_time,
                    "T": open_time + MINUTE_MS - 1,
                    "s": symbol,
                    "i": "1m",
                    "f": 1,
                    "L": 42,
                    "o": row[1],
                    "c": row[4],
                    "h": row[2],
                    "l": row[3],
                    "v": row[5],
                    "n": row[8],
                    "x": closed,
                    "q": row[7],
                    "V": row[9],
                    "Q": row[10],
                    "B": "0",
                },
            },
        )
        return row

    async def mini_ticker(self, symbol: str, open_: str, close: str, quote_volume: str) -> None:
        await self._send(
            f"{symbol.lower()}@miniTicker",
            {
                "e": "24hrMiniTicker",
                "E": now_ms(),
                "s": symbol,
                "c": close,
                "o": open_,
                "h": close,
                "l": open_,
                "v": "18234.12000000",
                "q": quote_volume,
            },
        )

    # -------------------------------------------------------------- REST

    def _rest_preamble(self, request: web.Request, weight: int) -> web.Response | None:
        self.rest_requests.append((request.path, dict(request.query), time.monotonic()))
        self.used_weight += weight
        if self.rest_failures:
            status, headers = self.rest_failures.pop(0)
            body = {"code": -1003, "msg": "Too many requests; queued failure of the fake."}
            return web.json_response(
                body, status=status, headers={**headers, **self._weight_header()}
            )
        return None

    def _weight_header(self) -> dict[str, str]:
        return {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}

    async def _ping(self, request: web.Request) -> web.Response:
        failed = self._rest_preamble(request, 1)
        return failed or web.json_response({}, headers=self._weight_header())

    async def _exchange_info(self, request: web.Request) -> web.Response:
        failed = self._rest_preamble(request, 20)
        if failed:
            return failed
        wanted = list(self.markets)
        if "symbols" in request.query:
            wanted = json.loads(request.query["symbols"])
            unknown = [s for s in wanted if s not in self.markets]
            if unknown:
                return web.json_response(
                    {"code": -1121, "msg": "Invalid symbol."},
                    status=400,
                    headers=self._weight_header(),
                )
        symbols = [self.symbol_info(s) for s in wanted]
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": now_ms(),
                "rateLimits": RATE_LIMITS,
                "exchangeFilters": [],
                "symbols": symbols,
            },
            headers=self._weight_header(),
        )

    def symbol_info(self, symbol: str) -> dict[str, Any]:
        """One ``symbols[]`` item of exchangeInfo, in Binance's format."""
        base, quote = self.markets[symbol]
        return {
            "symbol": symbol,
            "status": self.statuses.get(symbol, "TRADING"),
            "baseAsset": base,
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": self.filters.get(symbol, default_filters()),
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    async def _klines(self, request: web.Request) -> web.Response:
        failed = self._rest_preamble(request, 2)
        if failed:
            return failed
        q = request.query
        symbol, interval = q["symbol"], q["interval"]
        if symbol not in self.markets or interval not in INTERVALS:
            return web.json_response(
                {"code": -1121, "msg": "Invalid symbol."}, status=400, headers=self._weight_header()
            )
        step = INTERVALS[interval]
        limit = min(int(q.get("limit", "500")), 1000)
        now = now_ms()
        end = min(int(q.get("endTime", now)), now)
        start = int(q.get("startTime", end - step * limit))
        first = start + (-start % step)
        rows: list[list[Any]] = []
        t = first
        while t <= end and len(rows) < limit:
            rows.append(synthetic_kline(symbol, interval, t))
            t += step
        return web.json_response(rows, headers=self._weight_header())
