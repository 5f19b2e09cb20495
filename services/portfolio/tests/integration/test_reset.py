"""POST /internal/reset against the real database: the account starts over (orders, trades,
holdings and cash flows deleted, open orders out of the book, the paper cash as a new opening
deposit), once per Idempotency-Key."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tickwatch_portfolio.__main__ import Portfolio

from .conftest import Gateway, Market

pytestmark = pytest.mark.integration


async def test_a_reset_starts_the_account_over_once_per_key(
    gateway: Gateway, market: Market, portfolio: tuple[Portfolio, int]
) -> None:
    service = portfolio[0]
    user = "resetter"
    symbol = market.new_symbol()
    await market.instrument(symbol)
    await market.tick(symbol, "100.00")
    assert (await gateway.call("POST", "/internal/deposits", user, {"amount": "500"})).status == 201
    buy = {"symbol": symbol, "side": "buy", "quantity": "3", "type": "market"}
    assert (await gateway.call("POST", "/internal/orders", user, buy)).status == 201
    limit = {"symbol": symbol, "side": "buy", "quantity": "1", "type": "limit", "limit_price": "90"}
    resting = await gateway.call("POST", "/internal/orders", user, limit)
    assert resting.status == 201, resting.body
    other = await gateway.call("POST", "/internal/orders", "bystander", buy)
    assert other.status == 201

    key = {"Idempotency-Key": "reset-1"}
    reply = await gateway.call("POST", "/internal/reset", user, headers=key)
    assert reply.status == 200, reply.body
    assert reply.body == {
        "cash": "10000",
        "quote_currency": "USDT",
        "cancelled_orders": [resting.body["id"]],
    }
    assert resting.body["id"] not in service.operations.limits

    view = (await gateway.call("GET", "/internal/portfolio", user)).body
    assert (view["cash"], view["reserved"], view["holdings"]) == ("10000", "0", [])
    assert (view["realized_pnl"], view["fees_paid"], view["total_value"]) == ("0", "0", "10000")
    assert (await gateway.call("GET", "/internal/trades", user)).body["total"] == 0
    assert (await gateway.call("GET", "/internal/orders", user)).body["total"] == 0
    async with service.pool.acquire() as conn:
        flows = await conn.fetch("SELECT amount, kind FROM deposits WHERE user_id = $1", user)
    assert [(r["amount"], r["kind"]) for r in flows] == [(Decimal(10000), "deposit")]

    # The tick that would have filled the cancelled order leaves the account alone.
    await market.tick(symbol, "89.00")
    assert (await gateway.call("GET", "/internal/portfolio", user)).body["cash"] == "10000"

    # The same key again: the first answer, and no second reset.
    assert (await gateway.call("POST", "/internal/orders", user, buy)).status == 201
    again = await gateway.call("POST", "/internal/reset", user, headers=key)
    assert (again.status, again.body) == (200, reply.body)
    assert len((await gateway.call("GET", "/internal/portfolio", user)).body["holdings"]) == 1

    # Another user's account is untouched.
    theirs = (await gateway.call("GET", "/internal/portfolio", "bystander")).body
    assert len(theirs["holdings"]) == 1


async def test_a_reset_refuses_a_body_field(gateway: Gateway) -> None:
    reply = await gateway.call("POST", "/internal/reset", "u", {"cash": "5"})
    assert reply.status == 422
    assert "cash" in reply.body["detail"]
