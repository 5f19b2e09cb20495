"""Limit orders against the real PostgreSQL and Kafka: a resting buy's cash and a resting sell's
quantity reserved, filled by a published tick at the limit price, cancelled (reservation
released), another user's order 404, a fill that happens once, prices flowing while a fill waits
on PostgreSQL, the book rebuilt at restart."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from functools import partial
from typing import Any

import aiohttp
import asyncpg
import pytest
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import TICKS
from tickwatch_devstack.infra import free_port
from tickwatch_devstack.testing import replay_tick, wait_until
from tickwatch_portfolio.__main__ import Portfolio, running_portfolio
from tickwatch_portfolio.settings import Settings

from .conftest import SECRET, Gateway, Market

pytestmark = pytest.mark.integration

D = Decimal


async def _status(gateway: Gateway, user: str, order_id: str) -> str | None:
    listed = (await gateway.call("GET", "/internal/orders?per_page=500", user)).body
    return next((o["status"] for o in listed["items"] if o["id"] == order_id), None)


async def test_a_limit_buy_reserves_its_cash_and_a_tick_fills_it_at_its_limit(
    gateway: Gateway, market: Market
) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol)
    await market.tick(symbol, "100.00", age_s=60)  # a limit order needs no fresh price
    order = {"symbol": symbol, "side": "buy", "quantity": "1", "type": "limit"}
    off_tick = await gateway.call(
        "POST", "/internal/orders", "lb", {**order, "limit_price": "95.001"}
    )
    assert (off_tick.status, off_tick.body["field"]) == (422, "limit_price")
    assert "tick_size" in off_tick.body["detail"]

    placed = await gateway.call("POST", "/internal/orders", "lb", {**order, "limit_price": "95.00"})
    assert placed.status == 201, placed.body
    assert placed.body["status"] == "open"
    assert D(placed.body["reserved"]) == D("95.095")  # 95 + its 0.1 % fee
    view = (await gateway.call("GET", "/internal/portfolio", "lb")).body
    assert (D(view["cash"]), D(view["reserved"])) == (D("9904.905"), D("95.095"))
    open_ = (await gateway.call("GET", "/internal/orders?status=open", "lb")).body
    assert [o["id"] for o in open_["items"]] == [placed.body["id"]]

    await market.tick(symbol, "94.00", age_s=5)  # reaches it, but is older than the order
    await market.tick(symbol, "96.00")  # not reached; handled after the tick before it
    assert await _status(gateway, "lb", placed.body["id"]) == "open"
    await market.tick(symbol, "94.50")
    await wait_until(
        lambda: _is(gateway, "lb", placed.body["id"], "filled"), what="the limit buy filled"
    )

    view = (await gateway.call("GET", "/internal/portfolio", "lb")).body
    assert (D(view["cash"]), D(view["reserved"])) == (D("9904.905"), D("0"))
    [holding] = view["holdings"]
    assert (D(holding["quantity"]), D(holding["avg_buy_price"])) == (D("1"), D("95"))
    assert D(view["fees_paid"]) == D("0.095")
    [trade] = (await gateway.call("GET", "/internal/trades", "lb")).body["items"]
    assert (D(trade["price"]), D(trade["fee"]), trade["order_id"]) == (
        D("95"),
        D("0.095"),
        placed.body["id"],
    )
    filled = (await gateway.call("GET", "/internal/orders?status=filled", "lb")).body
    [row] = filled["items"]
    assert (D(row["fill_price"]), D(row["fee"])) == (D("95"), D("0.095"))
    again = await gateway.call("DELETE", f"/internal/orders/{placed.body['id']}", "lb")
    assert again.status == 409  # filled


async def _is(gateway: Gateway, user: str, order_id: str, status: str) -> bool:
    return await _status(gateway, user, order_id) == status


async def test_a_limit_sell_reserves_its_quantity_and_cancel_releases_it(
    gateway: Gateway, market: Market
) -> None:
    symbol = await market.listed()
    buy = {"symbol": symbol, "side": "buy", "quantity": "1"}
    assert (await gateway.call("POST", "/internal/orders", "ls", buy)).status == 201
    sell = {"symbol": symbol, "side": "sell", "quantity": "1", "type": "limit"}
    placed = await gateway.call("POST", "/internal/orders", "ls", {**sell, "limit_price": "120"})
    assert placed.status == 201 and placed.body["status"] == "open"

    market_sell = {"symbol": symbol, "side": "sell", "quantity": "1"}
    refused = await gateway.call("POST", "/internal/orders", "ls", market_sell)
    assert refused.status == 409
    assert (D(refused.body["required"]), D(refused.body["available"])) == (D("1"), D("0"))
    second = await gateway.call("POST", "/internal/orders", "ls", {**sell, "limit_price": "130"})
    assert second.status == 409  # the quantity is reserved once
    rejected = (await gateway.call("GET", "/internal/orders?status=rejected", "ls")).body
    assert rejected["total"] == 2

    theirs = await gateway.call("DELETE", f"/internal/orders/{placed.body['id']}", "intruder")
    assert theirs.status == 404
    unknown = await gateway.call("DELETE", "/internal/orders/not-a-number", "ls")
    assert unknown.status == 404
    cancelled = await gateway.call("DELETE", f"/internal/orders/{placed.body['id']}", "ls")
    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled"
    assert (
        await gateway.call("DELETE", f"/internal/orders/{placed.body['id']}", "ls")
    ).status == 409

    await market.tick(symbol, "125.00")  # would have filled it; it is no longer resting
    sold = await gateway.call("POST", "/internal/orders", "ls", market_sell)
    assert sold.status == 201, sold.body
    assert D(sold.body["fill_price"]) == D("125")
    bad = await gateway.call("GET", "/internal/orders?status=closed", "ls")
    assert (bad.status, bad.body["field"]) == (422, "status")


async def test_a_limit_buy_cancelled_gives_its_cash_back(gateway: Gateway, market: Market) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol)
    order = {"symbol": symbol, "side": "buy", "quantity": "2", "type": "limit", "limit_price": "10"}
    placed = await gateway.call("POST", "/internal/orders", "lc", order)
    assert placed.status == 201
    assert D((await gateway.call("GET", "/internal/portfolio", "lc")).body["cash"]) == D("9979.98")
    cancelled = await gateway.call("DELETE", f"/internal/orders/{placed.body['id']}", "lc")
    assert cancelled.status == 200
    view = (await gateway.call("GET", "/internal/portfolio", "lc")).body
    assert (D(view["cash"]), D(view["reserved"])) == (D("10000"), D("0"))
    broke = await gateway.call("POST", "/internal/orders", "lc", {**order, "quantity": "1000"})
    assert broke.status == 409 and D(broke.body["required"]) == D("10010")


async def test_a_resting_order_fills_once_however_often_it_is_filled(
    portfolio: tuple[Portfolio, int], gateway: Gateway, market: Market
) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol)
    order = {"symbol": symbol, "side": "buy", "quantity": "1", "type": "limit", "limit_price": "10"}
    placed = await gateway.call("POST", "/internal/orders", "lo", order)
    operations = portfolio[0].operations
    resting = operations.limits.cancel(placed.body["id"])  # taken out as a tick would
    assert resting is not None
    results = await asyncio.gather(*(operations.fill_resting(resting) for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    trades = (await gateway.call("GET", "/internal/trades", "lo")).body
    assert trades["total"] == 1
    view = (await gateway.call("GET", "/internal/portfolio", "lo")).body
    assert (D(view["cash"]), D(view["reserved"])) == (D("9989.99"), D("0"))


async def test_prices_keep_flowing_while_a_fill_waits_on_the_accounts_lock(
    portfolio: tuple[Portfolio, int], gateway: Gateway, market: Market, fresh_database: str
) -> None:
    running = portfolio[0]
    symbol = await market.listed()
    buy = {"symbol": symbol, "side": "buy", "quantity": "1"}
    assert (await gateway.call("POST", "/internal/orders", "lk", buy)).status == 201
    order = {**buy, "type": "limit", "limit_price": "95"}
    placed = await gateway.call("POST", "/internal/orders", "lk", order)
    assert placed.status == 201

    def valued_at(price: str) -> bool:
        [holding] = running.live.valuer.valuation("lk").holdings
        return holding.price == D(price)

    held = await asyncpg.connect(fresh_database)
    try:
        lock = held.transaction()
        await lock.start()
        await held.execute("SELECT 1 FROM portfolio.accounts WHERE user_id = 'lk' FOR UPDATE")
        await market.tick(symbol, "94.50")  # reaches the order: its fill queues for the lock

        async def fill_waits_on_the_lock() -> bool:
            waiting = await held.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                " AND query LIKE '%lock_account%'"
            )
            return bool(waiting)

        await wait_until(fill_waits_on_the_lock, what="the fill blocked on the account's lock")
        for price in ("94.00", "97.25", "101.50"):
            await market.tick(symbol, price)  # waits until the book holds it
            await wait_until(partial(valued_at, price), what=f"the holding valued at {price}")
        assert await fill_waits_on_the_lock()
        assert await _status(gateway, "lk", placed.body["id"]) == "open"
        await lock.rollback()
    finally:
        await held.close()
    await wait_until(
        lambda: _is(gateway, "lk", placed.body["id"], "filled"), what="the fill after the lock"
    )
    view = (await gateway.call("GET", "/internal/portfolio", "lk")).body
    assert D(view["holdings"][0]["quantity"]) == D("2")
    assert (D(view["reserved"]), D(view["fees_paid"])) == (D("0"), D("0.1") + D("0.095"))


async def test_a_restart_rebuilds_the_book_from_postgresql(stack: Any, fresh_database: str) -> None:
    port = free_port()
    settings = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        database_url=fresh_database,
        internal_api_secret=SECRET,  # type: ignore[arg-type]
        portfolio_port=port,
    )
    kafka = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    symbol = Market.new_symbol()
    async with (
        aiohttp.ClientSession() as session,
        kafka_producer(kafka, linger_ms=0) as publisher,
    ):
        gateway = Gateway(session, port)
        async with running_portfolio(settings) as first:
            await Market(publisher, first).instrument(symbol)
            order = {
                "symbol": symbol,
                "side": "buy",
                "quantity": "1",
                "type": "limit",
                "limit_price": "50",
            }
            placed = await gateway.call("POST", "/internal/orders", "lr", order)
            assert placed.status == 201
        async with running_portfolio(settings) as second:
            assert placed.body["id"] in second.operations.limits
            await wait_until(lambda: symbol in second.book.rules, what="rules again")
            tick = replay_tick(symbol, "49.99", int(time.time() * 1000))
            await publisher.publish(TICKS, tick, key=symbol)
            await wait_until(
                lambda: _is(gateway, "lr", placed.body["id"], "filled"), what="filled after restart"
            )
            view = (await gateway.call("GET", "/internal/portfolio", "lr")).body
            assert D(view["holdings"][0]["quantity"]) == D("1")
            assert D(view["cash"]) == D("10000") - D("50.05")
