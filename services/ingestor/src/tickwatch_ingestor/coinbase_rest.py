"""Coinbase Advanced Trade public REST: product candles, for history (no key needed).

``GET /api/v3/brokerage/market/products/{product_id}/candles?start=&end=&granularity=``, start
and end in UNIX seconds, at most 350 candles an answer (newest first), so a window is asked in
pages of :data:`CANDLES_PAGE`. Calls are spaced under Coinbase's public rate limit; each has a
timeout and a bounded number of attempts: 429 waits ``Retry-After``, 5xx, network errors and
malformed answers back off with jitter, any other 4xx fails at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import structlog
from tickwatch_common.backoff import Backoff, retry_after_seconds
from tickwatch_common.events import Candle
from tickwatch_common.events.base import INTERVAL_MS, Interval

from tickwatch_ingestor.metrics import MESSAGES_REJECTED, REST_RETRIES
from tickwatch_ingestor.normalise import Rejected, coinbase_rest_candle
from tickwatch_ingestor.pacing import RateLimiter

log = structlog.get_logger(__name__)

CANDLES_PAGE = 300  # Coinbase refuses more than 350 a call
REQUESTS_PER_S = 8.0  # Coinbase's public endpoints allow 10 a second per IP
GRANULARITY: dict[str, str] = {
    "1m": "ONE_MINUTE",
    "5m": "FIVE_MINUTE",
    "15m": "FIFTEEN_MINUTE",
    "1h": "ONE_HOUR",
    "1d": "ONE_DAY",
}
"""Coinbase's granularity for each Tickwatch interval it has (it has no 4-hour candles)."""


class CoinbaseRestError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CoinbaseRest:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        max_wait_s: float = 120.0,
        backoff_initial_s: float = 0.2,
        requests_per_s: float = REQUESTS_PER_S,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.backoff_initial_s = backoff_initial_s
        self.pacing = RateLimiter(requests_per_s)

    async def get(self, path: str, params: dict[str, str]) -> Any:
        backoff = Backoff(initial_s=self.backoff_initial_s, cap_s=10.0)
        failure = ""
        status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            await self.pacing.acquire()
            delay: float | None = None
            try:
                async with self.http.get(
                    self.base_url + path, params=params, timeout=self.timeout
                ) as resp:
                    status = resp.status
                    body = await resp.read()
                    if status == 429:
                        delay = retry_after_seconds(resp.headers, 1.0)
                        if delay > self.max_wait_s:
                            raise CoinbaseRestError(f"{path}: 429, Retry-After {delay}s", status)
                        failure = "HTTP 429"
                        REST_RETRIES.labels("coinbase", "429").inc()
                    elif status >= 500:
                        failure = f"HTTP {status}"
                        REST_RETRIES.labels("coinbase", "5xx").inc()
                    elif status >= 400:
                        text = body[:300].decode(errors="replace")
                        raise CoinbaseRestError(f"{path}: HTTP {status}: {text}", status)
                    else:
                        try:
                            return orjson.loads(body)
                        except orjson.JSONDecodeError:
                            failure = "malformed JSON"
                            REST_RETRIES.labels("coinbase", "malformed").inc()
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                REST_RETRIES.labels("coinbase", "network").inc()
            log.warning("coinbase_rest_retry", path=path, attempt=attempt, failure=failure)
            if attempt < self.max_attempts:
                await asyncio.sleep(delay if delay is not None else backoff.next_delay())
        raise CoinbaseRestError(
            f"{path}: gave up after {self.max_attempts} attempts ({failure})", status
        )

    async def candles(
        self, product: str, interval: Interval, start_ms: int, end_ms: int, now_ms: int
    ) -> AsyncIterator[list[Candle]]:
        """Pages of the product's candles with open time in ``[start_ms, end_ms]``, oldest
        first; rows that do not parse are counted and skipped."""
        granularity = GRANULARITY.get(interval)
        if granularity is None:
            raise ValueError(f"Coinbase has no {interval} candles")
        step = INTERVAL_MS[interval]
        path = f"/api/v3/brokerage/market/products/{product}/candles"
        cursor = start_ms - start_ms % step
        while cursor <= end_ms:
            last = min(end_ms, cursor + (CANDLES_PAGE - 1) * step)
            params = {
                "start": str(cursor // 1000),
                "end": str(last // 1000),
                "granularity": granularity,
            }
            answer = await self.get(path, params)
            rows = answer.get("candles") if isinstance(answer, dict) else None
            if not isinstance(rows, list):
                raise CoinbaseRestError(f"{path}: no candles list")
            page: list[Candle] = []
            for row in rows:
                try:
                    candle = coinbase_rest_candle(row, product, interval, now_ms)
                except Rejected as exc:
                    MESSAGES_REJECTED.labels("coinbase", exc.reason).inc()
                    continue
                if cursor <= candle.open_time <= last:
                    page.append(candle)
            page.sort(key=lambda c: c.open_time)
            yield page
            cursor = last + step
