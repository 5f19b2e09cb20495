"""CoinGecko: ``/simple/price`` polled into ``BASE-USD`` ticks, ``/coins/{id}/ohlc`` for history.

JSON numbers are parsed from the raw text with ``parse_float=Decimal`` (never a float). A tick is
published only when an id's ``last_updated_at`` moves. 429 waits for ``Retry-After``; 5xx,
network errors and malformed answers back off with jitter (capped), and the poller never stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import aiohttp
import structlog
from tickwatch_common.backoff import Backoff, retry_after_seconds
from tickwatch_common.events.base import now_ms

from tickwatch_ingestor.metrics import MESSAGES_REJECTED, REST_RETRIES
from tickwatch_ingestor.normalise import Rejected, coingecko_tick, split_symbol
from tickwatch_ingestor.sink import EventSink

log = structlog.get_logger(__name__)

DEFAULT_IDS: dict[str, str] = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "SOL": "solana",
    "BNB": "binancecoin",
    "XRP": "ripple",
    "ADA": "cardano",
    "DOGE": "dogecoin",
    "AVAX": "avalanche-2",
    "DOT": "polkadot",
    "LINK": "chainlink",
    "LTC": "litecoin",
    "TRX": "tron",
    "BCH": "bitcoin-cash",
    "XLM": "stellar",
    "ATOM": "cosmos",
    "NEAR": "near",
    "UNI": "uniswap",
    "ARB": "arbitrum",
    "OP": "optimism",
    "APT": "aptos",
    "SUI": "sui",
    "TON": "the-open-network",
    "SHIB": "shiba-inu",
    "PEPE": "pepe",
    "USDT": "tether",
    "USDC": "usd-coin",
}


def coingecko_ids(symbols: Sequence[str], overrides: Mapping[str, str]) -> dict[str, str]:
    """CoinGecko id -> base asset, for every configured symbol whose base has a known id."""
    ids: dict[str, str] = {}
    for sym in symbols:
        base, _ = split_symbol(sym)
        cg = overrides.get(base) or DEFAULT_IDS.get(base)
        if cg:
            ids[cg] = base
    return ids


class CoinGeckoError(RuntimeError):
    def __init__(
        self, message: str, *, retry_after_s: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status = status  # the HTTP status when CoinGecko answered at all


class CoinGeckoClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.headers = {"accept": "application/json"}
        if api_key:
            self.headers["x-cg-demo-api-key"] = api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """One call; raises :class:`CoinGeckoError` (with Retry-After when given) on failure."""
        try:
            async with self.http.get(
                self.base_url + path, params=params, headers=self.headers, timeout=self.timeout
            ) as resp:
                text = await resp.text()
                if resp.status == 429:
                    raise CoinGeckoError(
                        "rate limited (429)",
                        retry_after_s=retry_after_seconds(resp.headers, 60.0),
                        status=429,
                    )
                if resp.status >= 500:
                    raise CoinGeckoError(
                        f"HTTP {resp.status}",
                        retry_after_s=retry_after_seconds(resp.headers, None),
                        status=resp.status,
                    )
                if resp.status >= 400:
                    raise CoinGeckoError(f"HTTP {resp.status}: {text[:200]}", status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CoinGeckoError(f"{type(exc).__name__}: {exc}") from exc
        try:
            return json.loads(text, parse_float=Decimal)
        except ValueError:
            raise CoinGeckoError("malformed JSON", status=200) from None

    async def ping(self) -> Any:
        return await self.get_json("/ping")

    async def simple_price(self, ids: Sequence[str]) -> Any:
        return await self.get_json(
            "/simple/price",
            {
                "ids": ",".join(ids),
                "vs_currencies": "usd",
                "include_24hr_vol": "true",
                "include_24hr_change": "true",
                "include_last_updated_at": "true",
            },
        )

    async def ohlc(self, coin_id: str, days: int) -> Any:
        return await self.get_json(
            f"/coins/{coin_id}/ohlc", {"vs_currency": "usd", "days": str(days)}
        )


class CoinGeckoPoller:
    name = "coingecko"

    def __init__(
        self,
        client: CoinGeckoClient,
        sink: EventSink,
        ids: Mapping[str, str],
        *,
        interval_s: float = 10.0,
        backoff_initial_s: float | None = None,
        backoff_cap_s: float = 300.0,
    ) -> None:
        self.client = client
        self.sink = sink
        self.ids = dict(ids)  # coingecko id -> base
        self.interval_s = interval_s
        self.backoff = Backoff(
            initial_s=backoff_initial_s or max(interval_s, 1.0), cap_s=backoff_cap_s
        )
        self._last_updated: dict[str, int] = {}
        self._unknown_logged: set[str] = set()
        self.polls = 0
        self.ok_polls = 0
        self.last_ok: float | None = None
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.last_ok is not None and self.last_error is None

    def describe(self) -> str:
        state = "ok" if self.healthy else (self.last_error or "starting")
        return f"coingecko ({len(self.ids)} ids, {state})"

    async def poll_once(self) -> int:
        """One poll; returns how many ticks it published. Raises CoinGeckoError on failure."""
        self.polls += 1
        body = await self.client.simple_price(list(self.ids))
        if not isinstance(body, dict):
            MESSAGES_REJECTED.labels("coingecko", "not_an_object").inc()
            raise CoinGeckoError("answer is not an object")
        published = 0
        ts_ingest = now_ms()
        for cg_id, base in self.ids.items():
            entry = body.get(cg_id)
            if not isinstance(entry, dict) or not entry:
                if cg_id not in self._unknown_logged:
                    self._unknown_logged.add(cg_id)
                    MESSAGES_REJECTED.labels("coingecko", "unknown_id").inc()
                    log.warning("coingecko_id_unknown", id=cg_id, base=base)
                continue
            updated = entry.get("last_updated_at")
            if isinstance(updated, int) and self._last_updated.get(cg_id) == updated:
                continue
            try:
                tick = coingecko_tick(base, entry, ts_ingest)
            except Rejected as exc:
                MESSAGES_REJECTED.labels("coingecko", exc.reason).inc()
                continue
            self._last_updated[cg_id] = tick.ts_event // 1000
            await self.sink.put_tick(tick)
            published += 1
        self.ok_polls += 1
        return published

    async def run(self) -> None:
        log.info("coingecko_polling", ids=sorted(self.ids), interval_s=self.interval_s)
        while True:
            started = time.monotonic()
            try:
                await self.poll_once()
            except CoinGeckoError as exc:
                reason = str(exc)
                if "malformed" in reason:
                    MESSAGES_REJECTED.labels("coingecko", "malformed_json").inc()
                REST_RETRIES.labels("coingecko", reason.split(":")[0][:40]).inc()
                delay = self.backoff.next_delay()
                if exc.retry_after_s is not None:
                    delay = max(delay, exc.retry_after_s)
                if self.last_error != reason:
                    log.warning("coingecko_poll_failed", error=reason, retry_in_s=round(delay, 2))
                self.last_error = reason
                await asyncio.sleep(delay)
                continue
            if self.last_error is not None:
                log.info("coingecko_recovered")
            self.last_error = None
            self.last_ok = time.monotonic()
            self.backoff.reset()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
