"""The paper portfolio as a client sees it, on real processes: the gateway and the portfolio
service against the session's real servers, instruments and ticks published to the broker as
the ingestor would. Register, read the starting cash, buy at market (at the tick's price, the
fee recorded), see the holding's P&L move with a tick, sell and read the realised P&L to the
last digit; and nothing can be bent: a client's price, another user, a read-only API key, a
call to the portfolio service that the gateway did not sign."""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tickwatch_common.events import Instrument
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import INSTRUMENTS, TICKS
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.testing import (
    ApiClient,
    log_tail,
    replay_tick,
    service_running_off_loop,
    wait_until,
)

pytestmark = pytest.mark.e2e

D = Decimal


async def test_fund_buy_watch_sell_through_the_gateway(
    stack: Stack, stack_env: dict[str, str], fresh_database: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    symbol = f"P{tag[:6].upper()}-USDT"  # unique: other tests share the broker
    ports = {"gateway": free_port(), "portfolio": free_port()}
    env = {
        **stack_env,
        "DATABASE_URL": fresh_database,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "INTERNAL_API_SECRET": secrets.token_urlsafe(48),
        "PORTFOLIO_URL": f"http://127.0.0.1:{ports['portfolio']}",
        "REDIS_PREFIX": f"e2e-{tag}:",
        "GATEWAY_HOST": "127.0.0.1",
        "RATE_LIMIT_DEFAULT": "1000000/minute",
        "RATE_LIMIT_AUTH": "1000/minute",
        "ALERTS_CONSUMER_GROUP": f"gateway-alerts-{tag}",
        "CANDLE_CONSUMER_GROUP": f"gateway-candles-{tag}",
        "SYMBOLS": f"BTC-USDT,{symbol}",
        "PORTFOLIO_STARTING_CASH": "10000",
        "PORTFOLIO_FEE_RATE": "0.001",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ports}

    def diagnostics() -> str:
        return "\n".join(f"--- {name}.log\n{log_tail(path)}" for name, path in logs.items())

    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with contextlib.AsyncExitStack() as services:
        for name, port in ports.items():
            await services.enter_async_context(
                service_running_off_loop(name, env, port, logs[name])
            )
        http = await services.enter_async_context(aiohttp.ClientSession())
        publisher = await services.enter_async_context(kafka_producer(settings, linger_ms=0))
        base = f"http://127.0.0.1:{ports['gateway']}"
        api = ApiClient(http, base)
        base_asset = symbol.split("-")[0]
        await publisher.publish(
            INSTRUMENTS,
            Instrument(
                symbol=symbol,
                base=base_asset,
                quote="USDT",
                source="binance",
                step_size=D("0.001"),  # type: ignore[arg-type]
                tick_size=D("0.01"),  # type: ignore[arg-type]
                min_notional=D("5"),  # type: ignore[arg-type]
                status="TRADING",
            ),
            key=symbol,
        )

        async def tick(price: str) -> None:
            await publisher.publish(
                TICKS, replay_tick(symbol, price, int(time.time() * 1000)), key=symbol
            )

        creds = {"email": f"trader-{tag}@example.com", "password": "s3cret-pass"}
        await api.call("POST", "/auth/register", creds, expect=201)
        api.token = (await api.call("POST", "/auth/login", creds))["access_token"]

        start = await api.call("GET", "/portfolio")
        assert D(start["cash"]) == D("10000") and start["holdings"] == []

        # The price is the market's: a client's is refused, and the body names the field.
        order = {"symbol": symbol, "side": "buy", "quantity": "2", "type": "market"}
        refused = await api.call("POST", "/portfolio/orders", {**order, "price": "1"}, expect=422)
        assert refused["errors"][0]["field"] == "price"
        await api.call("POST", "/portfolio/trades", {**order, "user_id": "someone"}, expect=422)

        await tick("100.00")

        async def bought() -> Any:
            async with http.post(
                f"{base}/api/v1/portfolio/orders",
                json=order,
                headers={"Authorization": f"Bearer {api.token}", "Idempotency-Key": tag},
            ) as resp:
                return (await resp.json()) if resp.status == 201 else None

        fill = await wait_until(bought, 30, "a market buy filled once the tick is in")
        assert fill is not None
        again = await http.post(
            f"{base}/api/v1/portfolio/orders",
            json=order,
            headers={"Authorization": f"Bearer {api.token}", "Idempotency-Key": tag},
        )
        assert again.status == 201  # the same answer again, and no second trade

        held = await api.call("GET", "/portfolio")
        assert D(held["cash"]) == D("10000") - D("200") - D("0.2")  # notional and 0.1 % fee
        [holding] = held["holdings"]
        assert holding["symbol"] == symbol and D(holding["quantity"]) == D("2")
        assert D(holding["avg_buy_price"]) == D("100")
        assert D(held["fees_paid"]) == D("0.2")

        await tick("110.00")

        async def revalued() -> bool:
            now = await api.call("GET", "/portfolio")
            return bool(now["holdings"]) and D(now["holdings"][0]["unrealized_pnl"]) == D("20")

        await wait_until(revalued, 30, "the holding's P&L moves with the tick")

        sell = {"symbol": symbol, "side": "sell", "quantity": "2"}
        await api.call("POST", "/portfolio/trades", sell, expect=201)
        done = await api.call("GET", "/portfolio")
        assert done["holdings"] == []
        # 2 * (110 - 100) - the fee of the sell, 0.22 = 19.78, to the last digit.
        assert D(done["realized_pnl"]) == D("19.78"), diagnostics()
        assert D(done["cash"]) == D("10000") - D("200.2") + D("220") - D("0.22")
        trades = await api.call("GET", "/portfolio/trades")
        assert trades["total"] == 2
        csv_headers = {"Authorization": f"Bearer {api.token}", "Accept": "text/csv"}
        async with http.get(f"{base}/api/v1/portfolio/trades", headers=csv_headers) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            assert len((await resp.text()).strip().splitlines()) == 3  # a header, two fills

        # Another user sees only their own (empty) portfolio.
        other = ApiClient(http, base)
        creds2 = {"email": f"other-{tag}@example.com", "password": "s3cret-pass"}
        await other.call("POST", "/auth/register", creds2, expect=201)
        other.token = (await other.call("POST", "/auth/login", creds2))["access_token"]
        assert (await other.call("GET", "/portfolio/trades"))["total"] == 0

        # A read-only API key reads but cannot trade.
        key = await api.call("POST", "/api-keys", {"name": "ro", "scopes": ["read"]}, expect=201)
        headers = {"X-API-Key": key["key"]}
        async with http.get(f"{base}/api/v1/portfolio", headers=headers) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/api/v1/portfolio/trades", json=sell, headers=headers) as r:
            assert r.status == 403

        # Start over: the starting cash back, nothing held.
        await api.call("POST", "/portfolio/reset")
        fresh = await api.call("GET", "/portfolio")
        assert D(fresh["cash"]) == D("10000") and fresh["holdings"] == []

        # The portfolio service itself answers only calls the gateway signed.
        direct = f"http://127.0.0.1:{ports['portfolio']}/internal/portfolio"
        async with http.get(direct, headers={"X-Tickwatch-User": "anyone"}) as resp:
            assert resp.status == 401
