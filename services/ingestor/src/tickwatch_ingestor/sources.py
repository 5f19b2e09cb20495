"""The market sources at run time: the start-up probe (which ones answer) and what ``/ready`` says.

Which of them run, or the replay fallback, is decided from the probe in ``source_choice``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import structlog
from tickwatch_common.ops import CheckResult

from tickwatch_ingestor.binance_rest import BinanceRest, BinanceRestError
from tickwatch_ingestor.coingecko import CoinGeckoClient, CoinGeckoError
from tickwatch_ingestor.normalise import exchange_symbol_guess

log = structlog.get_logger(__name__)


class Source(Protocol):
    name: str

    async def run(self) -> None: ...


@dataclass
class ProbeResult:
    """Reachable means the source answered over HTTP at all (even 4xx/5xx): it is there."""

    binance_info: dict[str, Any] | None = None
    binance_reachable: bool = False
    binance_error: str | None = None
    coingecko_reachable: bool = False
    coingecko_error: str | None = None
    coinbase_reachable: bool = False
    coinbase_error: str | None = None

    @property
    def any_live(self) -> bool:
        return self.binance_reachable or self.coingecko_reachable or self.coinbase_reachable


async def probe(
    http: aiohttp.ClientSession,
    base_rest: str,
    coingecko: CoinGeckoClient | None,
    symbols: list[str],
    *,
    want_binance: bool,
    timeout_s: float,
    coinbase_ws_url: str | None = None,
) -> ProbeResult:
    """Ask the live sources at once, each bounded by ``timeout_s`` and tried once (Coinbase:
    the WebSocket handshake at ``coinbase_ws_url``, closed at once)."""
    result = ProbeResult()

    async def binance() -> None:
        rest = BinanceRest(http, base_rest, timeout_s=timeout_s, max_attempts=1)
        try:
            result.binance_info = await asyncio.wait_for(
                rest.exchange_info([exchange_symbol_guess(s) for s in symbols]), timeout_s
            )
            result.binance_reachable = True
        except (BinanceRestError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            result.binance_error = str(exc) or type(exc).__name__
            result.binance_reachable = getattr(exc, "status", None) is not None

    async def gecko() -> None:
        assert coingecko is not None
        try:
            await asyncio.wait_for(coingecko.ping(), timeout_s)
            result.coingecko_reachable = True
        except (CoinGeckoError, TimeoutError) as exc:
            result.coingecko_error = str(exc) or type(exc).__name__
            result.coingecko_reachable = getattr(exc, "status", None) is not None

    async def coinbase() -> None:
        assert coinbase_ws_url is not None
        try:
            async with asyncio.timeout(timeout_s):
                ws = await http.ws_connect(coinbase_ws_url)
                await ws.close()
            result.coinbase_reachable = True
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            result.coinbase_error = str(exc) or type(exc).__name__
            # A handshake answered with an HTTP status: the server is there.
            result.coinbase_reachable = getattr(exc, "status", None) is not None

    jobs = []
    if coinbase_ws_url is not None:
        jobs.append(coinbase())
    if want_binance:
        jobs.append(binance())
    if coingecko is not None:
        jobs.append(gecko())
    await asyncio.gather(*jobs)
    return result


@dataclass
class MarketStatus:
    """What the ingestor is doing, for ``/ready`` and the start-up log."""

    mode: str = "starting"  # starting | live | replay
    reason: str = ""
    sources: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        if self.mode == "replay":
            return f"replay ({self.reason})"
        if self.mode == "live":
            parts = [getattr(s, "describe", lambda s=s: s.name)() for s in self.sources]
            return "live: " + ", ".join(parts)
        return "starting: probing market sources"

    def healthy(self) -> bool:
        if self.mode == "replay":
            return True
        if self.mode == "live":
            return any(getattr(s, "healthy", True) for s in self.sources)
        return False

    async def check(self) -> CheckResult:
        return CheckResult(self.healthy(), self.describe())
