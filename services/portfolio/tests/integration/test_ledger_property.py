"""A property of the whole service: random rounds of concurrent operations (deposits,
withdrawals, market buys and sells, limit orders placed, cancelled and filled by ticks at moving
prices, Idempotency-Key replays, requests that must be refused) for a few users over two symbols,
fired at once against the real service; afterwards the ledger adds up to the last digit.

Checked from the API's answers, ``GET /internal/portfolio``, ``/trades`` and ``/orders`` (and
the holdings' reserved quantity from PostgreSQL, which the API does not show):

- cash + reserved == starting cash + deposits - withdrawals - Σ(buy notional + fee)
  + Σ(sell notional - fee), exactly in Decimal, from the 201 answers and the trades;
- reserved cash == Σ open buys' reservations; each holding's quantity == Σ bought - Σ sold,
  its reserved quantity == Σ open sells; nothing negative, nothing reserved beyond what is held;
- every fill is one trade (its order filled, a limit at its limit price with its 0.1 % fee), an
  Idempotency-Key replay answers the first answer and books nothing again;
- realised P&L and each average buy price are the average-cost replay of the trades;
- a refused request (409) books nothing: refusals are left out of the sums above, and at the
  end each kind of refusal is sent alone and the account compared before and after.

One service for the module (examples use their own users and symbols), a few examples only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_devstack.infra import Stack, create_database, free_port
from tickwatch_devstack.testing import wait_until
from tickwatch_portfolio.__main__ import Portfolio, running_portfolio
from tickwatch_portfolio.settings import Settings

from .conftest import SECRET, Gateway, Market, Reply

pytestmark = pytest.mark.integration

D = Decimal
START = D("10000")
FEE_RATE = D("0.001")
COST_QUANTUM = D("1e-20")
"""A partial sell's cost share is rounded half-even to this (the accounting core's rule)."""
SHARE = Context(prec=40, rounding=ROUND_HALF_EVEN)
USERS = 3


@dataclass
class Service:
    portfolio: Portfolio
    gateway: Gateway
    market: Market
    database_url: str


@pytest.fixture(scope="module")
async def service(stack: Stack) -> AsyncIterator[Service]:
    server = stack.database_url.rsplit("/", 1)[0] + "/postgres"
    database = await create_database(server, f"t_{uuid.uuid4().hex[:12]}")
    port = free_port()
    config = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        database_url=database,
        internal_api_secret=SECRET,
        portfolio_port=port,
        database_pool_max=20,
    )
    kafka = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with (
        running_portfolio(config) as running,
        aiohttp.ClientSession() as session,
        kafka_producer(kafka, linger_ms=0) as publisher,
    ):
        yield Service(running, Gateway(session, port), Market(publisher, running), database)


# ---------------------------------------------------------------- the operations


@dataclass(frozen=True)
class Op:
    """One request: ``ref`` names an earlier limit order (a cancel), ``replay`` sends it twice
    under one Idempotency-Key (at once, or the copy in the next round)."""

    user: int
    kind: str
    symbol: int = 0
    side: str = "buy"
    quantity: str = "0"
    price_offset: int = 0
    amount: str = "0"
    ref: int = 0
    replay: str = "none"


cents = st.integers(min_value=1, max_value=50_000).map(lambda c: str(D(c) / 100))
lots = st.integers(min_value=2, max_value=300).map(lambda c: str(D(c) / 100))
users = st.integers(min_value=0, max_value=USERS - 1)
replays = st.sampled_from(["none", "none", "together", "later"])

refused = st.one_of(
    st.builds(Op, user=users, kind=st.just("withdrawal"), amount=st.just("1000000000")),
    st.builds(
        Op,
        user=users,
        kind=st.just("market"),
        symbol=st.integers(0, 1),
        side=st.just("sell"),
        quantity=st.just("100000"),
    ),
    st.builds(
        Op,
        user=users,
        kind=st.just("limit"),
        symbol=st.integers(0, 1),
        side=st.just("buy"),
        quantity=st.just("100000"),
    ),
)
"""Always refused (409), whatever runs beside them."""
ops = st.one_of(
    st.builds(Op, user=users, kind=st.just("deposit"), amount=cents, replay=replays),
    st.builds(Op, user=users, kind=st.just("withdrawal"), amount=cents, replay=replays),
    st.builds(
        Op,
        user=users,
        kind=st.just("market"),
        symbol=st.integers(0, 1),
        side=st.sampled_from(["buy", "buy", "sell"]),
        quantity=lots,
        replay=replays,
    ),
    st.builds(
        Op,
        user=users,
        kind=st.just("limit"),
        symbol=st.integers(0, 1),
        side=st.sampled_from(["buy", "sell"]),
        quantity=lots,
        price_offset=st.integers(-300, 300),
        replay=replays,
    ),
    st.builds(Op, user=users, kind=st.just("cancel"), ref=st.integers(0, 30)),
    refused,
)
moves = st.tuples(st.integers(0, 1), st.integers(-500, 500))
"""After a round, one symbol's price moves by this many ticks of 0.01 (from 100.00)."""
rounds = st.lists(st.tuples(st.lists(ops, min_size=1, max_size=12), moves), min_size=2, max_size=4)


@dataclass
class Run:
    """One example's users, symbols, prices and every answer it got."""

    users: list[str]
    symbols: list[str]
    prices: list[D]
    last_tick_ms: dict[str, int] = field(default_factory=dict)
    answers: list[tuple[Op, Reply]] = field(default_factory=list)
    limits: list[tuple[str, str]] = field(default_factory=list)
    """(user, order id) of every limit order placed, for cancels to name."""
    keyed: dict[str, list[Reply]] = field(default_factory=dict)
    later: list[tuple[Op, dict[str, Any], str]] = field(default_factory=list)


def _request(run: Run, op: Op) -> tuple[str, str, dict[str, Any] | None]:
    if op.kind in ("deposit", "withdrawal"):
        return "POST", f"/internal/{op.kind}s", {"amount": op.amount}
    symbol = run.symbols[op.symbol]
    order: dict[str, Any] = {"symbol": symbol, "side": op.side, "quantity": op.quantity}
    if op.kind == "limit":
        price = run.prices[op.symbol] + D(op.price_offset) / 100
        order |= {"type": "limit", "limit_price": str(max(price, D("1")))}
    return "POST", "/internal/orders", order


async def _send(service: Service, run: Run, op: Op, body: Any, key: str | None) -> Reply:
    user = run.users[op.user]
    headers = {"Idempotency-Key": key} if key else None
    reply = await service.gateway.call("POST", _request(run, op)[1], user, body, headers=headers)
    assert reply.status in (201, 409), (op, reply.body)
    if key:
        run.keyed.setdefault(f"{user} {key}", []).append(reply)
    return reply


async def _one(service: Service, run: Run, op: Op) -> list[tuple[Op, Reply]]:
    if op.kind == "cancel":
        if not run.limits:
            return []
        user, order_id = run.limits[op.ref % len(run.limits)]
        reply = await service.gateway.call("DELETE", f"/internal/orders/{order_id}", user)
        assert reply.status in (200, 409), reply.body
        return [(op, reply)]
    _, _, body = _request(run, op)
    if op.replay == "none":
        return [(op, await _send(service, run, op, body, None))]
    key = uuid.uuid4().hex
    if op.replay == "later":
        run.later.append((op, body or {}, key))
        return [(op, await _send(service, run, op, body, key))]
    both = await asyncio.gather(*(_send(service, run, op, body, key) for _ in range(2)))
    return [(op, both[0])]  # the copy is the same answer (checked), not a second request


async def _round(service: Service, run: Run, batch: list[Op], move: tuple[int, int]) -> None:
    later, run.later = run.later, []
    copies = [_send(service, run, op, body, key) for op, body, key in later]
    results = await asyncio.gather(*(_one(service, run, op) for op in batch), *copies)
    for result in results[: len(batch)]:
        for op, reply in result:
            run.answers.append((op, reply))
            if op.kind == "limit" and reply.status == 201:
                run.limits.append((run.users[op.user], reply.body["id"]))
    index, ticks = move
    symbol = run.symbols[index]
    run.prices[index] = max(D("1"), run.prices[index] + D(ticks) / 100)
    await service.market.tick(symbol, str(run.prices[index]))
    quote = service.market.book.quotes[symbol]
    run.last_tick_ms[symbol] = quote.ts_ms


# ---------------------------------------------------------------- reading the outcome


@dataclass
class Account:
    view: dict[str, Any]
    trades: list[dict[str, Any]]
    orders: list[dict[str, Any]]


async def _pages(service: Service, path: str, user: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        reply = await service.gateway.call("GET", f"{path}?per_page=500&page={page}", user)
        assert reply.status == 200, reply.body
        items += reply.body["items"]
        if len(items) >= reply.body["total"]:
            return items
        page += 1


async def _account(service: Service, user: str) -> Account:
    view = (await service.gateway.call("GET", "/internal/portfolio", user)).body
    return Account(
        view,
        await _pages(service, "/internal/trades", user),
        await _pages(service, "/internal/orders", user),
    )


def _ledger(view: dict[str, Any]) -> tuple[Any, ...]:
    """What a booking changes (not the prices a holding is marked at)."""
    return (
        view["cash"],
        view["reserved"],
        view["realized_pnl"],
        view["fees_paid"],
        tuple((h["symbol"], h["quantity"], h["avg_buy_price"]) for h in view["holdings"]),
    )


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def _settled(service: Service, run: Run, user: str) -> Account | None:
    """The account once no fill is due or under way: every open order either out of reach of
    its symbol's last price or placed after that tick, and two reads around the lists agree."""
    first = await _account(service, user)
    for order in first.orders:
        if order["status"] != "open" or order["symbol"] not in run.last_tick_ms:
            continue
        price = service.market.book.quotes[order["symbol"]].price
        limit = D(order["limit_price"])
        reachable = price <= limit if order["side"] == "buy" else price >= limit
        if reachable and _ms(order["created_at"]) <= run.last_tick_ms[order["symbol"]]:
            return None
    again = await _account(service, user)
    if _ledger(again.view) != _ledger(first.view) or len(again.trades) != len(first.trades):
        return None
    return again


async def _reserved_quantities(database_url: str, user: str) -> dict[str, D]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "portfolio"})
    try:
        rows = await conn.fetch(
            "SELECT symbol, quantity, reserved FROM holdings WHERE user_id = $1", user
        )
    finally:
        await conn.close()
    for row in rows:
        assert D(0) <= row["reserved"] <= row["quantity"], dict(row)
    return {r["symbol"]: r["reserved"] for r in rows if r["quantity"] > 0}


def _replay_average_cost(
    trades: list[dict[str, Any]],
) -> tuple[D, dict[str, tuple[D, D]]]:
    """Realised P&L and (quantity, cost) per symbol, replaying the fills in booking order."""
    realised = D(0)
    held: dict[str, tuple[D, D]] = {}
    for t in sorted(trades, key=lambda t: int(t["id"])):
        quantity, price, fee = D(t["quantity"]), D(t["price"]), D(t["fee"])
        q, cost = held.get(t["symbol"], (D(0), D(0)))
        if t["side"] == "buy":
            held[t["symbol"]] = (q + quantity, cost + quantity * price)
            continue
        assert quantity <= q, f"sold {quantity} of {q} held: {t}"
        out = cost if quantity == q else SHARE.divide(cost * quantity, q).quantize(COST_QUANTUM)
        realised += quantity * price - fee - out
        held[t["symbol"]] = (q - quantity, cost - out)
    return realised, {s: v for s, v in held.items() if v[0] != 0}


def _check(run: Run, user: str, account: Account, reserved_qty: dict[str, D]) -> None:
    view, trades, orders = account.view, account.trades, account.orders
    mine = [(op, r) for op, r in run.answers if run.users[op.user] == user]
    by_id = {o["id"]: o for o in orders}

    # Every fill is one trade of a filled order; a limit's at its limit price.
    assert len({t["id"] for t in trades}) == len(trades)
    order_ids = [t["order_id"] for t in trades]
    assert len(set(order_ids)) == len(order_ids), "an order filled twice"
    assert sorted(order_ids) == sorted(o["id"] for o in orders if o["status"] == "filled")
    for t in trades:
        order = by_id[t["order_id"]]
        assert (t["symbol"], t["side"], D(t["quantity"])) == (
            order["symbol"],
            order["side"],
            D(order["quantity"]),
        )
        assert D(t["fee"]) == D(t["quantity"]) * D(t["price"]) * FEE_RATE
        if order["type"] == "limit":
            assert D(t["price"]) == D(order["limit_price"])
    trade_of = {t["id"]: t for t in trades}
    for op, reply in mine:
        if op.kind == "market" and reply.status == 201:
            trade = trade_of[reply.body["trade_id"]]
            assert (D(trade["price"]), D(trade["fee"])) == (
                D(reply.body["fill_price"]),
                D(reply.body["fee"]),
            )
        if op.kind in ("market", "limit") and reply.status == 409 and "order_id" in reply.body:
            refused = by_id[reply.body["order_id"]]
            assert (refused["status"], D(refused["reserved"])) == ("rejected", D(0))

    # Each request that booked an order booked one (a replay none), each market fill one trade.
    booked = [
        r.body.get("id", r.body.get("order_id")) for op, r in mine if op.kind in ("market", "limit")
    ]
    booked = [b for b in booked if b is not None]
    assert sorted(booked) == sorted(by_id), "orders booked other than the answers say"
    market_fills = [o for o in orders if o["type"] == "market" and o["status"] == "filled"]
    assert len(market_fills) == sum(1 for op, r in mine if op.kind == "market" and r.status == 201)

    # Cash conservation, exactly.
    flows = D(0)
    for op, reply in mine:
        if op.kind in ("deposit", "withdrawal") and reply.status == 201:
            assert D(reply.body["cash"]) >= 0
            flows += D(reply.body["amount"]) * (1 if op.kind == "deposit" else -1)
    for key, replies in run.keyed.items():
        if key.startswith(f"{user} "):  # a replay answers the first answer, books nothing
            assert len(replies) == 2
            assert all((r.status, r.body) == (replies[0].status, replies[0].body) for r in replies)
    traded = D(0)
    for t in trades:
        notional = D(t["quantity"]) * D(t["price"])
        traded += -(notional + D(t["fee"])) if t["side"] == "buy" else notional - D(t["fee"])
    cash, reserved = D(view["cash"]), D(view["reserved"])
    assert cash >= 0 and reserved >= 0
    assert cash + reserved == START + flows + traded, (cash, reserved, flows, traded)
    open_ = [o for o in orders if o["status"] == "open"]
    assert reserved == sum((D(o["reserved"]) for o in open_ if o["side"] == "buy"), D(0))
    assert D(view["fees_paid"]) == sum((D(t["fee"]) for t in trades), D(0))

    # Quantities, reserved quantities, average cost and realised P&L.
    realised, held = _replay_average_cost(trades)
    shown = {h["symbol"]: h for h in view["holdings"]}
    assert shown.keys() == held.keys()
    for symbol, (quantity, cost) in held.items():
        assert quantity > 0
        assert D(shown[symbol]["quantity"]) == quantity
        assert D(shown[symbol]["avg_buy_price"]) == cost / quantity
        resting = sum(
            (D(o["quantity"]) for o in open_ if o["side"] == "sell" and o["symbol"] == symbol),
            D(0),
        )
        assert reserved_qty.get(symbol, D(0)) == resting
    assert not any(o["side"] == "sell" and o["symbol"] not in held for o in open_)
    assert D(view["realized_pnl"]) == realised


async def _refusals_change_nothing(service: Service, run: Run, user: str) -> None:
    """Each kind of refusal, alone: the account before and after is the same."""
    gateway = service.gateway
    before = await _account(service, user)
    symbol = run.symbols[0]
    cash = D(before.view["cash"])
    refused = [
        ("POST", "/internal/withdrawals", {"amount": str(cash + D("0.01"))}),
        ("POST", "/internal/orders", {"symbol": symbol, "side": "sell", "quantity": "100000"}),
        (
            "POST",
            "/internal/orders",
            {
                "symbol": symbol,
                "side": "buy",
                "quantity": "100000",
                "type": "limit",
                "limit_price": "1",
            },
        ),
    ]
    closed = [o["id"] for o in before.orders if o["status"] in ("filled", "cancelled")][:1]
    for method, path, body in refused:
        reply = await gateway.call(method, path, user, body)
        assert reply.status == 409, (path, body, reply.body)
    for order_id in closed:
        reply = await gateway.call("DELETE", f"/internal/orders/{order_id}", user)
        assert reply.status == 409, reply.body
    after = await _account(service, user)
    assert _ledger(after.view) == _ledger(before.view)
    assert after.trades == before.trades
    added = [o for o in after.orders if o["id"] not in {b["id"] for b in before.orders}]
    assert sorted(o["status"] for o in added) == ["rejected", "rejected"]
    assert [o for o in after.orders if o not in added] == before.orders


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=rounds)
async def test_concurrent_operations_keep_the_ledger_exact(
    service: Service, plan: list[tuple[list[Op], tuple[int, int]]]
) -> None:
    market = service.market
    tag = uuid.uuid4().hex[:8]
    run = Run(
        users=[f"prop-{tag}-{i}" for i in range(USERS)],
        symbols=[market.new_symbol(), market.new_symbol()],
        prices=[D("100.00"), D("100.00")],
    )
    for symbol in run.symbols:
        await market.instrument(symbol, step="0.01", tick="0.01", min_notional="1")
        await market.tick(symbol, "100.00")
        run.last_tick_ms[symbol] = market.book.quotes[symbol].ts_ms
    opening = [  # something to sell from the start
        Op(user, "market", symbol, "buy", "2") for user in range(USERS) for symbol in (0, 1)
    ]
    for batch, move in [(opening, (0, 0)), *plan]:
        await _round(service, run, batch, move)
    if run.later:  # the last round's later copies
        await _round(service, run, [], (0, 0))

    for user in run.users:
        settled: list[Account] = []

        async def done(user: str = user, out: list[Account] = settled) -> bool:
            account = await _settled(service, run, user)
            if account is not None:
                out.append(account)
            return account is not None

        await wait_until(done, 20, f"{user}'s fills settled")
        reserved_qty = await _reserved_quantities(service.database_url, user)
        _check(run, user, settled[-1], reserved_qty)
        await _refusals_change_nothing(service, run, user)
