"""A CoinGecko-protocol server on loopback: ``/ping``, ``/simple/price``, ``/coins/{id}/ohlc``.

Prices are stored as decimal strings and written into the JSON as bare numbers (as CoinGecko
does), so a client that parses them through float would lose digits the tests can see. Queued
failures: ``(429, {"Retry-After": "1"})``, ``(500, {})``, ``("malformed", {})``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web

RATE_LIMITED_BODY = (
    '{"status":{"error_code":429,"error_message":"You\'ve exceeded the Rate Limit. Please visit '
    'https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate limits."}}'
)


class FakeCoinGecko:
    def __init__(self) -> None:
        # id -> (usd, usd_24h_vol, usd_24h_change, last_updated_at), numbers as decimal strings
        self.prices: dict[str, tuple[str, str, str, int]] = {}
        self.failures: list[tuple[int | str, dict[str, str]]] = []
        self.requests: list[tuple[str, dict[str, str], dict[str, str], float]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v3"

    def set_price(self, cg_id: str, usd: str, vol: str, change: str, updated: int) -> None:
        self.prices[cg_id] = (usd, vol, change, updated)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/simple/price", self._simple_price)
        app.router.add_get("/api/v3/coins/{id}/ohlc", self._ohlc)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeCoinGecko]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def _preamble(self, request: web.Request) -> web.Response | None:
        self.requests.append(
            (request.path, dict(request.query), dict(request.headers), time.monotonic())
        )
        if not self.failures:
            return None
        status, headers = self.failures.pop(0)
        if status == "malformed":
            return web.Response(
                text='{"bitcoin": {"usd": 86401.12,', content_type="application/json"
            )
        if status == 429:
            return web.Response(
                text=RATE_LIMITED_BODY, status=429, headers=headers, content_type="application/json"
            )
        assert isinstance(status, int)
        return web.Response(text="upstream error", status=status, headers=headers)

    async def _ping(self, request: web.Request) -> web.Response:
        return self._preamble(request) or web.json_response({"gecko_says": "(V3) To the Moon!"})

    async def _simple_price(self, request: web.Request) -> web.Response:
        failed = self._preamble(request)
        if failed:
            return failed
        ids = [i for i in request.query.get("ids", "").split(",") if i]
        parts = []
        for cg_id in ids:
            if cg_id not in self.prices:
                continue  # CoinGecko leaves unknown ids out
            usd, vol, chg, updated = self.prices[cg_id]
            parts.append(
                f'"{cg_id}":{{"usd":{usd},"usd_24h_vol":{vol},"usd_24h_change":{chg},'
                f'"last_updated_at":{updated}}}'
            )
        return web.Response(text="{" + ",".join(parts) + "}", content_type="application/json")

    async def _ohlc(self, request: web.Request) -> web.Response:
        failed = self._preamble(request)
        if failed:
            return failed
        cg_id = request.match_info["id"]
        if cg_id not in self.prices:
            return web.json_response({"error": "coin not found"}, status=404)
        days = int(request.query.get("days", "1"))
        step = 4 * 3_600_000
        now = time.time_ns() // 1_000_000
        end = now - now % step
        rows = []
        t = end - days * 86_400_000
        while t <= end:
            rows.append(f"[{t},86210.5,86420.25,86150.0,86380.125]")
            t += step
        return web.Response(text="[" + ",".join(rows) + "]", content_type="application/json")
