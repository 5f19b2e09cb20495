"""The internal API against the real PostgreSQL and Kafka: the signature, market orders at the
published tick's price, the refusals, idempotency and concurrent sells."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from tickwatch_common.internal_auth import sign

from .conftest import Gateway, Market

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def _market_counts() -> tuple[float, ...]:
    """Market orders accepted and refused, and market fills, counted so far (the service runs in
    this process, so its metrics are this registry's)."""
    return tuple(
        REGISTRY.get_sample_value(name, labels) or 0.0
        for name, labels in (
            ("portfolio_orders_total", {"type": "market", "outcome": "accepted"}),
            ("portfolio_orders_total", {"type": "market", "outcome": "refused"}),
            ("portfolio_fills_total", {"type": "market"}),
        )
    )


async def test_a_call_without_or_with_a_forged_credential_is_refused(gateway: Gateway) -> None:
    unsigned = await gateway.call("GET", "/internal/portfolio", None)
    assert (unsigned.status, unsigned.content_type) == (401, PROBLEM)
    assert "missing" in unsigned.body["detail"]

    forged = await gateway.call(
        "GET", "/internal/portfolio", "u1", secret="not-the-secret-but-just-as-long-0123456789"
    )
    assert (forged.status, forged.content_type) == (401, PROBLEM)

    stale = sign(gateway.secret, "GET", "/internal/portfolio", "u1", now=time.time() - 120)
    replayed = await gateway.call("GET", "/internal/portfolio", None, headers=stale)
    assert replayed.status == 401

    # Signed for one path, sent to another.
    aimed = sign(gateway.secret, "GET", "/internal/portfolio", "u1")
    moved = await gateway.call("GET", "/internal/trades", None, headers=aimed)
    assert moved.status == 401

    ops = await gateway.session.get(gateway.base + "/health")
    assert ops.status == 200  # the ops routes need no credential


async def test_a_new_account_starts_with_the_paper_cash(gateway: Gateway) -> None:
    reply = await gateway.call("GET", "/internal/portfolio", "new-user")
    assert reply.status == 200
    assert Decimal(reply.body["cash"]) == Decimal("10000")
    assert reply.body["holdings"] == []
    assert Decimal(reply.body["total_value"]) == Decimal("10000")


async def test_a_market_buy_fills_at_the_published_tick(gateway: Gateway, market: Market) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol)
    await market.tick(symbol, "50000.00")
    order = {"symbol": symbol, "side": "buy", "quantity": "0.01", "type": "market"}
    before = _market_counts()
    reply = await gateway.call("POST", "/internal/orders", "buyer", order)
    assert reply.status == 201, reply.body
    assert reply.body["status"] == "filled"
    assert [a - b for a, b in zip(_market_counts(), before, strict=True)] == [1, 0, 1]
    assert Decimal(reply.body["fill_price"]) == Decimal("50000")
    assert Decimal(reply.body["fee"]) == Decimal("0.5")

    await market.tick(symbol, "51000.00")
    view = (await gateway.call("GET", "/internal/portfolio", "buyer")).body
    assert Decimal(view["cash"]) == Decimal("9499.5")
    [holding] = view["holdings"]
    assert holding["symbol"] == symbol
    assert Decimal(holding["quantity"]) == Decimal("0.01")
    assert Decimal(holding["avg_buy_price"]) == Decimal("50000")
    assert Decimal(holding["current_price"]) == Decimal("51000")
    assert Decimal(holding["market_value"]) == Decimal("510")
    assert Decimal(holding["unrealized_pnl"]) == Decimal("10")
    assert Decimal(holding["unrealized_pnl_pct"]) == Decimal("2")
    assert Decimal(view["fees_paid"]) == Decimal("0.5")
    assert Decimal(view["total_value"]) == Decimal("10009.5")

    trades = (await gateway.call("GET", "/internal/trades?page=1&per_page=10", "buyer")).body
    assert trades["total"] == 1
    assert Decimal(trades["items"][0]["price"]) == Decimal("50000")


async def test_a_stale_or_missing_price_answers_409_with_its_age(
    gateway: Gateway, market: Market
) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol)
    order = {"symbol": symbol, "side": "buy", "quantity": "0.01"}
    before = _market_counts()
    none = await gateway.call("POST", "/internal/orders", "u-stale", order)
    assert (none.status, none.content_type) == (409, PROBLEM)
    assert none.body["price_age_s"] is None

    await market.tick(symbol, "100.00", age_s=90)
    stale = await gateway.call("POST", "/internal/orders", "u-stale", order)
    assert stale.status == 409
    assert Decimal(stale.body["price_age_s"]) >= 90
    assert "s old" in stale.body["detail"]
    assert [a - b for a, b in zip(_market_counts(), before, strict=True)] == [0, 2, 0]


async def test_a_client_price_and_rule_breaks_answer_422_naming_the_field(
    gateway: Gateway, market: Market
) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol, step="0.001", min_notional="10")
    await market.tick(symbol, "100.00")
    priced = {"symbol": symbol, "side": "buy", "quantity": "1", "price": "1"}
    reply = await gateway.call("POST", "/internal/orders", "u-422", priced)
    assert (reply.status, reply.content_type, reply.body["field"]) == (422, PROBLEM, "price")

    off_step = {"symbol": symbol, "side": "buy", "quantity": "0.0005"}
    reply = await gateway.call("POST", "/internal/orders", "u-422", off_step)
    assert (reply.status, reply.body["field"]) == (422, "quantity")
    assert "step_size" in reply.body["detail"]

    tiny = {"symbol": symbol, "side": "buy", "quantity": "0.05"}
    reply = await gateway.call("POST", "/internal/orders", "u-422", tiny)
    assert reply.status == 422 and "min_notional" in reply.body["detail"]

    broke = {"symbol": symbol, "side": "buy", "quantity": "1000"}
    reply = await gateway.call("POST", "/internal/orders", "u-422", broke)
    assert reply.status == 409
    assert Decimal(reply.body["required"]) == Decimal("100100")
    assert Decimal(reply.body["available"]) == Decimal("10000")
    assert "available 10000" in reply.body["detail"]  # plain digits, never 1E+4


async def test_an_idempotency_key_replays_the_first_answer(
    gateway: Gateway, market: Market
) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol)
    await market.tick(symbol, "10.00")
    order = {"symbol": symbol, "side": "buy", "quantity": "2"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await gateway.call("POST", "/internal/orders", "u-idem", order, headers=key)
    await market.tick(symbol, "11.00")
    again = await gateway.call("POST", "/internal/orders", "u-idem", order, headers=key)
    assert first.status == again.status == 201
    assert again.body == first.body
    trades = (await gateway.call("GET", "/internal/trades", "u-idem")).body
    assert trades["total"] == 1

    other = {**order, "quantity": "3"}
    reused = await gateway.call("POST", "/internal/orders", "u-idem", other, headers=key)
    assert (reused.status, reused.body["field"]) == (422, "Idempotency-Key")

    # Another user's same key is their own.
    theirs = await gateway.call("POST", "/internal/orders", "u-other", order, headers=key)
    assert theirs.status == 201 and theirs.body["id"] != first.body["id"]


async def test_deposits_and_withdrawals_move_free_cash(gateway: Gateway) -> None:
    reply = await gateway.call("POST", "/internal/deposits", "u-cash", {"amount": "250.5"})
    assert reply.status == 201 and Decimal(reply.body["cash"]) == Decimal("10250.5")
    reply = await gateway.call("POST", "/internal/withdrawals", "u-cash", {"amount": "50000"})
    assert reply.status == 409 and Decimal(reply.body["available"]) == Decimal("10250.5")
    reply = await gateway.call("POST", "/internal/withdrawals", "u-cash", {"amount": "0.5"})
    assert reply.status == 201 and Decimal(reply.body["cash"]) == Decimal("10250")
    reply = await gateway.call("POST", "/internal/deposits", "u-cash", {"amount": "-1"})
    assert (reply.status, reply.body["field"]) == (422, "amount")


async def test_fifty_concurrent_sells_never_oversell(gateway: Gateway, market: Market) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol, step="0.01", min_notional="1")
    await market.tick(symbol, "100.00")
    buy = {"symbol": symbol, "side": "buy", "quantity": "1"}
    assert (await gateway.call("POST", "/internal/orders", "u-race", buy)).status == 201

    sell = {"symbol": symbol, "side": "sell", "quantity": "0.04"}
    replies = await asyncio.gather(
        *(gateway.call("POST", "/internal/orders", "u-race", sell) for _ in range(50))
    )
    statuses = sorted(r.status for r in replies)
    assert statuses == [201] * 25 + [409] * 25
    assert all(Decimal(r.body["available"]) < Decimal("0.04") for r in replies if r.status == 409)

    view = (await gateway.call("GET", "/internal/portfolio", "u-race")).body
    assert view["holdings"] == []
    # 1 bought at 100 (fee 0.1), sold in 25 lots of 0.04 at 100 (fee 0.004 each).
    assert Decimal(view["cash"]) == Decimal("10000") - Decimal("100.1") + 25 * Decimal("3.996")
    trades = (await gateway.call("GET", "/internal/trades?per_page=100", "u-race")).body
    assert trades["total"] == 26


async def test_the_trades_page_as_csv(gateway: Gateway, market: Market) -> None:
    symbol = market.new_symbol()
    await market.instrument(symbol)
    await market.tick(symbol, "123.45")
    for quantity in ("0.1", "0.25"):
        order = {"symbol": symbol, "side": "buy", "quantity": quantity, "type": "market"}
        assert (await gateway.call("POST", "/internal/orders", "csv-user", order)).status == 201
    page = "/internal/trades?page=1&per_page=1"
    as_json = (await gateway.call("GET", page, "csv-user")).body
    headers = sign(gateway.secret, "GET", page, "csv-user") | {"Accept": "text/csv"}
    async with gateway.session.get(gateway.base + page, headers=headers) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert r.headers["X-Total-Count"] == "2"
        text = await r.text()
    (item,) = as_json["items"]
    lines = text.split("\r\n")
    assert lines[0] == "id,order_id,symbol,side,quantity,price,fee,executed_at"
    assert lines[1:] == [
        ",".join(
            (
                item["id"],
                item["order_id"],
                symbol,
                "buy",
                "0.25",
                "123.45",
                item["fee"],
                item["executed_at"],
            )
        ),
        "",
    ]
    assert Decimal(item["fee"]) == Decimal("0.030862500")  # 0.25 x 123.45 x 0.001, exact
    assert item["executed_at"].endswith("Z")
