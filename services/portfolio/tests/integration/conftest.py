"""The portfolio in-process against the real broker and database, and a gateway-like client
that signs its calls."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from tickwatch_common.events import Instrument
from tickwatch_common.internal_auth import sign
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import INSTRUMENTS, TICKS
from tickwatch_devstack.infra import free_port
from tickwatch_devstack.testing import replay_tick, wait_until
from tickwatch_portfolio.__main__ import Portfolio, running_portfolio
from tickwatch_portfolio.settings import Settings

SECRET = "USAyJ1PY84cj2tTD8wQ5ZwOLSGk0xUJ5lDVjUEsc8M3pdAKx"


@dataclass
class Reply:
    status: int
    content_type: str
    body: Any


class Gateway:
    """Calls the internal API as the gateway does: signed for a user, or not at all."""

    def __init__(self, session: aiohttp.ClientSession, port: int, secret: str = SECRET) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"
        self.secret = secret

    async def call(
        self,
        method: str,
        path: str,
        user: str | None,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        secret: str | None = None,
    ) -> Reply:
        raw = b"" if body is None else json.dumps(body).encode()
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/json"
        if user is not None:
            sent.update(sign(secret or self.secret, method, path, user, raw))
        async with self.session.request(method, self.base + path, data=raw, headers=sent) as r:
            text = await r.text()
            return Reply(r.status, r.content_type, json.loads(text) if text else None)


class Market:
    """Publishes instruments and ticks as the ingestor does; ``book`` is the service's."""

    def __init__(self, publisher: Publisher, portfolio: Portfolio) -> None:
        self.publisher = publisher
        self.book = portfolio.book

    @staticmethod
    def new_symbol() -> str:
        return f"T{uuid.uuid4().hex[:8].upper()}-USDT"

    async def instrument(
        self, symbol: str, step: str = "0.0001", tick: str = "0.01", min_notional: str = "5"
    ) -> None:
        base, quote = symbol.split("-")
        event = Instrument(
            symbol=symbol,
            base=base,
            quote=quote,
            source="binance",
            step_size=step,  # type: ignore[arg-type]
            tick_size=tick,  # type: ignore[arg-type]
            min_notional=min_notional,  # type: ignore[arg-type]
            status="TRADING",
        )
        await self.publisher.publish(INSTRUMENTS, event, key=symbol)
        await wait_until(lambda: symbol in self.book.rules, what=f"rules of {symbol}")

    async def listed(self, price: str = "100.00") -> str:
        """A new symbol with the default rules and a fresh tick at ``price``, in the book."""
        symbol = self.new_symbol()
        await self.instrument(symbol)
        await self.tick(symbol, price)
        return symbol

    async def tick(self, symbol: str, price: str, *, age_s: float = 0) -> None:
        ts = int((time.time() - age_s) * 1000)
        await self.publisher.publish(TICKS, replay_tick(symbol, price, ts), key=symbol)
        await wait_until(
            lambda: (q := self.book.quotes.get(symbol)) is not None and q.ts_ms == ts,
            what=f"tick of {symbol}",
        )


@pytest.fixture
async def portfolio(stack: Any, fresh_database: str) -> AsyncIterator[tuple[Portfolio, int]]:
    port = free_port()
    settings = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        database_url=fresh_database,
        internal_api_secret=SECRET,  # type: ignore[arg-type]
        portfolio_port=port,
        database_pool_max=20,
    )
    async with running_portfolio(settings) as running:
        yield running, port


@pytest.fixture
async def gateway(portfolio: tuple[Portfolio, int]) -> AsyncIterator[Gateway]:
    async with aiohttp.ClientSession() as session:
        yield Gateway(session, portfolio[1])


@pytest.fixture
async def market(stack: Any, portfolio: tuple[Portfolio, int]) -> AsyncIterator[Market]:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings, linger_ms=0) as publisher:
        yield Market(publisher, portfolio[0])
