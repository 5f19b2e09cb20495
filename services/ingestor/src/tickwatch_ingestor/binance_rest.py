"""Binance REST: exchangeInfo and klines, inside the IP's request-weight budget.

Every call has a timeout and a bounded number of attempts. ``X-MBX-USED-WEIGHT-1M`` is read
from every answer: when the next call would pass ``weight_headroom`` of the budget, the client
waits for the next minute. 429 (rate limited) and 418 (IP banned) make every caller wait for
``Retry-After``; 5xx and network errors back off with jitter.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import aiohttp
import structlog
from tickwatch_common.backoff import Backoff, retry_after_seconds
from tickwatch_common.events.base import INTERVAL_MS

from tickwatch_ingestor.metrics import REST_RETRIES, REST_USED_WEIGHT

log = structlog.get_logger(__name__)

KLINES_PAGE = 1000
WEIGHT_EXCHANGE_INFO = 20
WEIGHT_KLINES = 2


class BinanceRestError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BinanceRest:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        weight_limit: int = 6000,
        weight_headroom: float = 0.8,
        max_attempts: int = 6,
        max_wait_s: float = 120.0,
        backoff_initial_s: float = 0.2,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.weight_limit = weight_limit
        self.weight_headroom = weight_headroom
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.backoff_initial_s = backoff_initial_s
        self.used_weight = 0
        self._used_at = 0.0
        self._blocked_until = 0.0

    async def _respect_budget(self, weight: int) -> None:
        now = time.monotonic()
        if self._blocked_until > now:
            await asyncio.sleep(self._blocked_until - now)
        # The weight counter resets each wall-clock minute.
        if int(time.time() // 60) != int(self._used_at // 60):
            self.used_weight = 0
        if self.used_weight + weight > self.weight_limit * self.weight_headroom:
            wait = 60 - time.time() % 60 + 0.05
            log.warning("binance_weight_wait", used_weight=self.used_weight, wait_s=round(wait, 2))
            REST_RETRIES.labels("binance", "weight").inc()
            await asyncio.sleep(wait)
            self.used_weight = 0

    def _note_weight(self, headers: Any) -> None:
        value = headers.get("X-MBX-USED-WEIGHT-1M")
        if value is not None:
            try:
                self.used_weight = int(value)
            except ValueError:
                return
            self._used_at = time.time()
            REST_USED_WEIGHT.set(self.used_weight)

    async def get(self, path: str, params: dict[str, str] | None = None, *, weight: int = 1) -> Any:
        backoff = Backoff(initial_s=self.backoff_initial_s, cap_s=10.0)
        last_error = ""
        last_status: int | None = None  # the last HTTP status Binance answered with, if any
        for attempt in range(1, self.max_attempts + 1):
            await self._respect_budget(weight)
            try:
                async with self.http.get(
                    self.base_url + path, params=params, timeout=self.timeout
                ) as resp:
                    self._note_weight(resp.headers)
                    last_status = resp.status
                    if resp.status in (429, 418):
                        wait = retry_after_seconds(
                            resp.headers, 60.0 if resp.status == 418 else 1.0
                        )
                        REST_RETRIES.labels("binance", str(resp.status)).inc()
                        log.warning(
                            "binance_rate_limited",
                            status=resp.status,
                            retry_after_s=wait,
                            path=path,
                        )
                        if wait > self.max_wait_s:
                            raise BinanceRestError(
                                f"{path}: {resp.status}, Retry-After {wait}s exceeds our bound",
                                resp.status,
                            )
                        self._blocked_until = max(self._blocked_until, time.monotonic() + wait)
                        last_error = f"HTTP {resp.status}"
                        continue
                    if resp.status >= 500:
                        last_error = f"HTTP {resp.status}"
                        REST_RETRIES.labels("binance", "5xx").inc()
                    elif resp.status >= 400:
                        body = (await resp.text())[:300]
                        raise BinanceRestError(f"{path}: HTTP {resp.status}: {body}", resp.status)
                    else:
                        text = await resp.text()
                        try:
                            return json.loads(text, parse_float=Decimal)
                        except ValueError:
                            last_error = "malformed JSON"
                            REST_RETRIES.labels("binance", "malformed").inc()
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                REST_RETRIES.labels("binance", "network").inc()
            if attempt < self.max_attempts:
                await asyncio.sleep(backoff.next_delay())
        raise BinanceRestError(
            f"{path}: gave up after {self.max_attempts} attempts ({last_error})", last_status
        )

    async def exchange_info(self, exchange_symbols: Sequence[str]) -> dict[str, Any]:
        """``GET /api/v3/exchangeInfo`` for these symbols; the full list if one is unknown."""
        params = {"symbols": json.dumps(list(exchange_symbols), separators=(",", ":"))}
        try:
            info = await self.get("/api/v3/exchangeInfo", params, weight=WEIGHT_EXCHANGE_INFO)
        except BinanceRestError as exc:
            if exc.status != 400:
                raise
            # One unknown symbol fails the whole filtered call: ask for everything instead.
            info = await self.get("/api/v3/exchangeInfo", None, weight=WEIGHT_EXCHANGE_INFO)
        if not isinstance(info, dict):
            raise BinanceRestError("exchangeInfo: not an object")
        return info

    async def klines(
        self, exchange_symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> AsyncIterator[list[Any]]:
        """Pages of kline rows with open time in ``[start_ms, end_ms]``, 1000 rows a page."""
        step = INTERVAL_MS[interval]
        cursor = start_ms
        while cursor <= end_ms:
            rows = await self.get(
                "/api/v3/klines",
                {
                    "symbol": exchange_symbol,
                    "interval": interval,
                    "startTime": str(cursor),
                    "endTime": str(end_ms),
                    "limit": str(KLINES_PAGE),
                },
                weight=WEIGHT_KLINES,
            )
            if not isinstance(rows, list):
                raise BinanceRestError("klines: not a list")
            if not rows:
                return
            yield rows
            try:
                last_open = int(rows[-1][0])
            except (TypeError, ValueError, IndexError):
                raise BinanceRestError("klines: malformed row") from None
            if len(rows) < KLINES_PAGE:
                return
            cursor = last_open + step
